-- 13_bulk: an application imports and updates subscriptions in bulk.
--
-- One statement that inserts or updates many subscriptions fires the extension's row triggers
-- once per row. Whatever they lock must live in the rows themselves: a lock per row in the
-- shared lock table (an advisory lock per user, say) fills it after a few thousand rows, and
-- the import fails with "out of shared memory".
SET TimeZone = 'UTC';
CREATE DATABASE bulk;
\c bulk
SET client_min_messages = warning;
CREATE EXTENSION pg_entitlements;
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('free', 'Free');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, f.code, 10 FROM quota.subscription_plans p, quota.features f;

BEGIN;
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
SELECT g, p.id, now() - interval '1 day', now() + interval '1 month',
       jsonb_build_object('articles_per_month', g % 50)
  FROM generate_series(1, 20000) g, quota.subscription_plans p;
-- The locks the transaction holds beyond its relations: none per row.
SELECT count(*) FILTER (WHERE locktype NOT IN ('relation', 'virtualxid', 'transactionid'))
       AS locks_beyond_relations
  FROM pg_locks WHERE pid = pg_backend_pid();
UPDATE quota.user_subscriptions SET custom_quotas = custom_quotas || '{"publish_per_month": 7}';
SELECT count(*) FILTER (WHERE locktype NOT IN ('relation', 'virtualxid', 'transactionid'))
       AS locks_beyond_relations
  FROM pg_locks WHERE pid = pg_backend_pid();
COMMIT;

SELECT count(*) AS subscriptions, count(DISTINCT s.storage_quota_bytes) AS storage_values
  FROM quota.user_subscriptions u JOIN quota.user_storage_usage s USING (user_id);
SELECT * FROM quota.check_user_quota(20000, 'publish_per_month');

SET pg_entitlements.allow_drop_with_data = on;
DROP EXTENSION pg_entitlements;
\c pge_regress
DROP DATABASE bulk;
