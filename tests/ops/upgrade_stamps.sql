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
-- The one other value an update cannot know: the limit an alert of 0.2.0 was judged against
-- (quota.user_usage.alerted_limit, new in 0.3.0). The update gives a counter of the current
-- period that alerted the limit in force at the update (sql/pg_entitlements--0.2.0--0.3.0.sql);
-- a fresh install remembered the limit in force at the alert, which differs where the limit
-- changed in between (user 6 of the fixture: 100 % of 10 announced, then raised to 25). The
-- same rule applied here to every database compares everything else.
UPDATE quota.user_usage u
   SET alerted_limit = (SELECT q.quota_limit FROM quota.check_user_quota(u.user_id, u.feature_code) q)
 WHERE u.alerted_percent > 0
   AND u.period_start = (SELECT p.period_start FROM quota.get_quota_period(u.user_id, u.feature_code) p);
RESET session_replication_role;
