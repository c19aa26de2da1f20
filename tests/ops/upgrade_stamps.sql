-- Two databases filled with the same statements at different moments differ in the stamps
-- now() wrote (created_at, updated_at, last_reset_at, ...) and in nothing else, once the
-- fixture's own dates are pinned (scripts/ops/upgrade.sh replaces its now() by one instant).
-- This sets every timestamp of every quota table that lies between :'since' (taken before the
-- first database was filled) and now() to :'stamp', so that tests/ops/snapshot.sql then
-- compares everything else byte for byte. Generic: every timestamp column of every table, no
-- list. Triggers do not fire (session_replication_role = replica): only the stamps change.
SET session_replication_role = replica;
SELECT format('UPDATE quota.%I SET %s', c.relname,
              string_agg(format('%1$I = CASE WHEN %1$I BETWEEN %2$L AND now() THEN %3$L ELSE %1$I END',
                                a.attname, :'since', :'stamp'), ', ' ORDER BY a.attnum))
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind IN ('r', 'p')
   AND a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype) AND a.attgenerated = ''
 GROUP BY c.relname
 ORDER BY c.relname
\gexec
RESET session_replication_role;
