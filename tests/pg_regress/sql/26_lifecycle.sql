-- 26_lifecycle: the time-driven lifecycle (quota.tick, pause, scheduled plan changes, trials,
-- grant warnings) through one story told at explicit instants. psql prints each
-- notification with the PID of the backend that sent it, and the payloads hold instants of
-- the run, so the story runs in a psql of its own whose output has both blanked.
\! psql -X -a -q -d pge_regress -f tests/pg_regress/notify/26_lifecycle.sql 2>&1 | sed -E -e 's/server process with PID [0-9]+/server process with PID N/' -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(\+00(:00)?)?/<time>/g' -e 's/"paused_for": "[^"]*"/"paused_for": "<interval>"/'
