-- 12_catalog: catalog changes reach the users they decide (sql/catalog.sql).
--
-- The scenario listens on quota_updated and storage_quota_changed. psql prints every
-- notification with the PID of the backend that sent it, which changes from run to run, so the
-- scenario runs in a psql of its own whose output goes through sed; it creates and drops its
-- own database, so that the counts of affected users are its users' alone.
\! psql -X -a -q -d pge_regress -f tests/pg_regress/notify/12_catalog.sql 2>&1 | sed -E 's/server process with PID [0-9]+/server process with PID N/'
