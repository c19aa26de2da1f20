-- scripts/ops/differential.sh, database of the seed application (tests/fixtures/seed_app.sql,
-- loaded before): the random rows of tests/ops/differential_data.sql (hostile = true) written
-- into the application's own tables BEFORE attaching, as an application that never heard of
-- pg_entitlements wrote them (its columns check nothing, so pg_entitlements' validation trigger
-- never saw them); the rows of the named cases; then what a DBA does: the fixes of
-- quota.attach_problems('public'), an index on user_subscriptions (user_id) so that reads go
-- direct, and quota.attach('public').
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET TimeZone = 'UTC';

-- An application is free to leave its dates nullable and its plan ids without foreign keys:
-- then a subscription may name a plan that was deleted.
ALTER TABLE public.user_subscriptions ALTER COLUMN start_date DROP NOT NULL,
                                      ALTER COLUMN end_date DROP NOT NULL,
                                      DROP CONSTRAINT user_subscriptions_plan_id_fkey;
ALTER TABLE public.plan_features DROP CONSTRAINT plan_features_plan_id_fkey;

\set hostile true
\ir differential_data.sql

-- The seed's rows stay (users 1 to 4, plans 1 to 3): the random plans are 101 to 136.
INSERT INTO public.users (id, username)
SELECT u, 'user_' || u FROM generate_series(5, :users) u
UNION ALL VALUES (900001, 'case_1'), (900002, 'case_2'), (900003, 'case_3');

INSERT INTO public.subscription_plans (id, plan_code, plan_name, billing_cycle, quota_cycle_type)
SELECT 100 + id, plan_code, plan_code, billing_cycle, quota_cycle_type FROM gen_plans ORDER BY id;
INSERT INTO public.plan_features (plan_id, feature_code, feature_value, feature_unit)
SELECT 100 + plan_id, feature_code, feature_value, feature_unit FROM gen_plan_features;
-- Deleted plans leave their subscriptions and features behind.
DELETE FROM public.subscription_plans p USING gen_plans g WHERE p.id = 100 + g.id AND g.deleted;

INSERT INTO public.user_subscriptions (user_id, plan_id, start_date, end_date, status,
                                       custom_quotas, quota_reset_anchor, quota_cycle_type)
SELECT user_id, 100 + plan_id, start_date AT TIME ZONE 'UTC', end_date AT TIME ZONE 'UTC', status,
       custom_quotas, quota_reset_anchor AT TIME ZONE 'UTC', quota_cycle_type
  FROM gen_subscriptions ORDER BY id;

INSERT INTO public.user_usage (user_id, feature_code, usage_count, period_start, period_end)
SELECT user_id, feature_code, usage_count, period_start AT TIME ZONE 'UTC', period_end AT TIME ZONE 'UTC'
  FROM gen_usage
    ON CONFLICT DO NOTHING;

-- The named cases of issue 13 (see differential.sh):
--   900001: custom_quotas is a JSON array (the direct path took it for an object);
--   900002: the active subscription's start_date is NULL (nullable in this application);
--   900003: on plan case3_moved (articles 33), which another session moves to another id.
INSERT INTO public.subscription_plans (id, plan_code, plan_name, billing_cycle)
VALUES (800010, 'case3_moved', 'Case 3, moved', 'monthly');
INSERT INTO public.plan_features (plan_id, feature_code, feature_value)
VALUES (800010, 'articles_per_month', 33);
INSERT INTO public.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
VALUES (900001, 3, date_trunc('second', now()::timestamp) - interval '40 days',
                   date_trunc('second', now()::timestamp) + interval '325 days',
        '["a","xxxxxxxxxxxxarticl","es_per_month"]'),
       (900002, 1, NULL, date_trunc('second', now()::timestamp) + interval '30 days', NULL),
       (900003, 800010, date_trunc('second', now()::timestamp) - interval '3 days',
                        date_trunc('second', now()::timestamp) + interval '300 days', NULL);

-- The local times as timestamptz (a choice of this test, not a fix attach_problems proposes).
\i tests/fixtures/seed_app_timestamptz.sql
SELECT fix FROM quota.attach_problems('public') WHERE fix IS NOT NULL ORDER BY problem \gexec
CREATE INDEX ON public.user_subscriptions (user_id);
-- The hostile rows are the point: attach() is told to accept them.
SELECT quota.attach('public', accept_bad_rows => true);
ANALYZE;

-- The grants as rows, not through grant_quota(): the trigger that resyncs the storage quota of a
-- storage grant's user is off for them (the hostile rows of some users make that resync fail,
-- as they make any call for those users fail; the reading functions compute the quota anyway).
ALTER TABLE quota.grants DISABLE TRIGGER pg_entitlements_sync_granted_storage;
INSERT INTO quota.grants (user_id, feature_code, amount, remaining, priority, effective_from,
                          expires_at, source, voided_at, void_reason)
SELECT user_id, feature_code, amount, remaining, priority, effective_from, expires_at, 'admin',
       CASE WHEN voided THEN now() END, CASE WHEN voided THEN 'differential' END
  FROM gen_grants;
ALTER TABLE quota.grants ENABLE TRIGGER pg_entitlements_sync_granted_storage;
ANALYZE quota.grants;
INSERT INTO quota.window_usage (user_id, feature_code, window_name, window_start, window_end,
                                usage_count)
SELECT user_id, feature_code, window_name, window_start, window_end, usage_count
  FROM gen_windows;
