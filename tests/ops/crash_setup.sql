-- Fixtures for scripts/ops/crash.sh: 40 users on one monthly plan. articles_per_month and
-- keyword_distillation are only ever consumed (their limits are enforced: 100 and 40 per
-- period, 6 for every fifth user's articles through a custom quota), publish_per_month is
-- only recorded (not enforced). Some counters reach their limit during the load, most do not.
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('crash', 'Crash test');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, v.code, v.value
  FROM quota.subscription_plans p,
       (VALUES ('articles_per_month', 100), ('keyword_distillation', 40),
               ('publish_per_month', 50)) AS v(code, value)
 WHERE p.plan_code = 'crash';
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
SELECT u, p.id, now() - interval '5 days', now() + interval '1 year',
       CASE WHEN u % 5 = 0 THEN '{"articles_per_month": 6}'::jsonb END
  FROM generate_series(1, 40) AS u, quota.subscription_plans p
 WHERE p.plan_code = 'crash';
