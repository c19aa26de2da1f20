-- 27_citus: what the Citus layout changes on one server (docs/scaling.md). quota.distribute()
-- refuses without Citus, with 55000 and what to do; only its owner may call it. The restore of
-- a built-in feature, which now names the table its trigger fires on, still turns a dump's
-- INSERT of a built-in code into an update of that row, and leaves other inserts alone.
-- Users 26xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

CALL expect_error('SELECT quota.distribute()');

SET ROLE quota_admin;
CALL expect_error('SELECT quota.distribute()');
RESET ROLE;

BEGIN;
INSERT INTO quota.features (code, name, unit, reset_rule, default_limit)
VALUES ('keyword_distillation', 'Keyword distillation (restored)', 'keywords', 'billing_cycle', 7),
       ('citus_restore_probe', 'A new feature', 'count', 'billing_cycle', 3);
SELECT code, name, default_limit, builtin FROM quota.features
 WHERE code IN ('keyword_distillation', 'citus_restore_probe') ORDER BY code;
ROLLBACK;

-- The storage trigger's two statements: a new subscription creates the storage row, a limit
-- change moves it, a change that keeps the limit leaves updated_at alone.
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2601, (SELECT id FROM quota.subscription_plans WHERE plan_code = 'free'),
        now() - interval '1 day', now() + interval '30 days');
SELECT user_id, storage_quota_bytes FROM quota.user_storage_usage WHERE user_id = 2601;
SELECT quota.adjust_quota(2601, 'storage_space', 2048, 'more room', 'regress');
SELECT user_id, storage_quota_bytes FROM quota.user_storage_usage WHERE user_id = 2601;
UPDATE quota.user_storage_usage SET updated_at = '2000-01-01' WHERE user_id = 2601;
UPDATE quota.user_subscriptions SET custom_quotas = custom_quotas WHERE user_id = 2601;
SELECT storage_quota_bytes, updated_at FROM quota.user_storage_usage WHERE user_id = 2601;
