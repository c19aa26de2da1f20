-- Counters as 0.2.0 left them after two changes it did not follow, for scripts/ops/upgrade.sh
-- (g). The database is at 0.2.0 but runs the current library (ALTER EXTENSION UPDATE replaces
-- the library first), so the rows are written by hand, where 0.2.0 would have written them.
SET client_min_messages = warning;
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('cont', 'Continuity');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT id, 'articles_per_month', 10 FROM quota.subscription_plans WHERE plan_code = 'cont';

-- 9001: 6 used, then a renewal written as a new row that keeps the anchor approximately;
-- 0.2.0 named the next period by the new row's start (clamped) and counted the next 3 there.
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, status)
SELECT 9001, id, now() - interval '10 days', now() + interval '20 days', 'cancelled'
  FROM quota.subscription_plans WHERE plan_code = 'cont';
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor)
SELECT 9001, id, now(), now() + interval '1 month', now() - interval '10 days 1 second'
  FROM quota.subscription_plans WHERE plan_code = 'cont';
-- 9002: 7 used in UTC, then the time zone changed to America/Caracas, where the anniversary of
-- 2010-01-15 00:00 UTC falls half an hour earlier, and 0.2.0 counted the next 2 there.
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT 9002, id, '2010-01-15 00:00+00', now() + interval '1 year'
  FROM quota.subscription_plans WHERE plan_code = 'cont';

CREATE TEMP TABLE left_behind (user_id bigint, period_start timestamptz, period_end timestamptz,
                               amount int);
INSERT INTO left_behind
VALUES (9001, now() - interval '10 days', now() + interval '20 days', 6),
       (9001, now(), now() - interval '10 days 1 second' + interval '1 month', 3);
INSERT INTO left_behind
SELECT 9002, p.period_start, p.period_end, 7
  FROM quota.anniversary_period('2010-01-15 00:00+00', 'monthly', now(), 'UTC') p;
INSERT INTO left_behind
SELECT 9002, p.period_start, p.period_end, 2
  FROM quota.anniversary_period('2010-01-15 00:00+00', 'monthly', now(), 'America/Caracas') p;
INSERT INTO quota.user_usage (user_id, feature_code, period_start, period_end, usage_count,
                              last_reset_at, updated_at)
SELECT user_id, 'articles_per_month', period_start, period_end, amount, now(), now()
  FROM left_behind;
INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, created_at)
SELECT user_id, 'articles_per_month', period_start, amount, now() FROM left_behind;
INSERT INTO quota.settings (time_zone) VALUES ('America/Caracas')
    ON CONFLICT (singleton) DO UPDATE SET time_zone = EXCLUDED.time_zone;
