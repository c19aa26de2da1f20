-- Everything a copy of a database must keep, printed in a fixed order so that two databases
-- can be compared with diff (scripts/ops/dump-restore.sh, scripts/ops/standby.sh): every
-- quota table's row count, md5 and rows, and the answers of every reading function for every
-- user and feature. Read-only (it runs on a hot standby too); run with PGTZ=UTC. Sequences are
-- compared by dump-restore.sh itself (a standby has no last_value to read).
\pset footer off
\pset null '<null>'

\echo '== tables: rows and md5 of the sorted rows'
SELECT format('SELECT %L AS "table", count(*) AS rows, '
              'md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) AS md5 FROM quota.%I t',
              c.relname, ',', '', c.relname)
  FROM pg_class c
 WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind IN ('r', 'p')
 ORDER BY c.relname
\gexec

\echo '== check_user_quota for every user and feature'
-- The users: every one with a subscription or a storage row, one without anything (7) and one
-- unknown (999). Plain queries, no temporary objects: this file also runs on a hot standby.
\set users '(SELECT user_id FROM quota.user_subscriptions UNION SELECT user_id FROM quota.user_storage_usage UNION VALUES (7::bigint), (999))'
SELECT u.user_id, f.code, c.*
  FROM :users u CROSS JOIN quota.features f
 CROSS JOIN LATERAL quota.check_user_quota(u.user_id, f.code) c
 ORDER BY 1, 2;

\echo '== get_user_storage_quota for every user'
SELECT u.user_id, quota.get_user_storage_quota(u.user_id) FROM :users u ORDER BY 1;

\echo '== usage_overview for every user'
SELECT u.user_id, o.*
  FROM :users u CROSS JOIN LATERAL quota.usage_overview(u.user_id) o
 ORDER BY 1, 2;

\echo '== get_quota_period for every user and feature (and without a feature)'
SELECT u.user_id, f.code, p.*
  FROM :users u
 CROSS JOIN (SELECT code FROM quota.features UNION ALL SELECT NULL) f
 CROSS JOIN LATERAL quota.get_quota_period(u.user_id, f.code) p
 ORDER BY 1, 2 NULLS FIRST;

\echo '== anniversary_period (pure arithmetic, in the settings time zone)'
SELECT a.anchor, c.cycle, p.*
  FROM (VALUES (timestamptz '2024-01-31 00:00+00'), ('2024-02-29 12:00+00')) a(anchor),
       (VALUES ('monthly'), ('yearly')) c(cycle),
       LATERAL quota.anniversary_period(a.anchor, c.cycle, '2026-03-08 12:00+00',
                                        coalesce((SELECT time_zone FROM quota.settings), 'UTC')) p
 ORDER BY 1, 2;

\echo '== verify_ledger (no row)'
SELECT * FROM quota.verify_ledger();

\echo '== rows of every table'
SELECT format('SELECT %L AS "table", t::text AS "row" FROM quota.%I t ORDER BY 2',
              c.relname, c.relname)
  FROM pg_class c
 WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind IN ('r', 'p')
 ORDER BY c.relname
\gexec
