-- The seed application's quota story, end to end, in plain SQL.
-- Run by scripts/demo.sh against a throwaway cluster; every step prints what it shows.
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;

\echo '== 1. CREATE EXTENSION pg_entitlements (schema quota) and put quota on the search_path'
CREATE EXTENSION pg_entitlements;
SET search_path = quota, public;
SELECT code, unit, reset_rule, default_limit FROM features ORDER BY code;

\echo '== 2. The seed plans: free / professional / enterprise'
INSERT INTO subscription_plans (plan_code, plan_name, price, billing_cycle) VALUES
    ('free', 'Free', 0, 'monthly'),
    ('professional', 'Professional', 99, 'monthly'),
    ('enterprise', 'Enterprise', 999, 'yearly');
INSERT INTO plan_features (plan_id, feature_code, feature_value, feature_unit)
SELECT p.id, v.code, v.value, v.unit
  FROM subscription_plans p
  JOIN (VALUES
        ('articles_per_month',   10,  100,  -1, NULL),
        ('publish_per_month',    20,  200,  -1, NULL),
        ('keyword_distillation',  5,   50,  -1, NULL),
        ('platform_accounts',     3,   10,  -1, NULL),
        ('storage_space',       100, 1024,  -1, 'MB'))
       AS f (code, free, professional, enterprise, unit) ON true
  CROSS JOIN LATERAL (SELECT f.code, CASE p.plan_code WHEN 'free' THEN f.free
                             WHEN 'professional' THEN f.professional ELSE f.enterprise END, f.unit)
       AS v (code, value, unit);
SELECT p.plan_code, pf.feature_code, pf.feature_value, pf.feature_unit
  FROM plan_features pf JOIN subscription_plans p ON p.id = pf.plan_id
 WHERE pf.feature_code IN ('articles_per_month', 'storage_space') ORDER BY 1, 2;

\echo '== 3. User 1001 subscribes to the free plan; an admin gives them a custom article quota of 6'
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
SELECT 1001, id, now() - interval '12 days', now() + interval '353 days', '{"articles_per_month": 6}'
  FROM subscription_plans WHERE plan_code = 'free';
\echo '   ... and the storage sync trigger created their user_storage_usage row (100 MB):'
SELECT user_id, storage_quota_bytes, pg_size_pretty(storage_quota_bytes) FROM user_storage_usage;

\echo '== 4. They generate 2 articles (the seed call shape, unchanged)'
SELECT record_feature_usage(1001::INTEGER, 'articles_per_month'::VARCHAR, 'article'::VARCHAR,
                            501::INTEGER, 2::INTEGER, '{"title": "two articles"}'::JSONB);
\echo '   check_user_quota: limit 6, used 2, remaining 4'
SELECT * FROM check_user_quota(1001, 'articles_per_month');

\echo '== 5. The admin raises the custom quota from 6 to 10: no cache to clear, no sync service'
UPDATE user_subscriptions
   SET custom_quotas = jsonb_set(custom_quotas, '{articles_per_month}', '10')
 WHERE user_id = 1001;
\echo '   every page now sees limit 10, remaining 8'
SELECT * FROM check_user_quota(1001, 'articles_per_month');

\echo '== 6. A request to generate 3 articles is allowed, and recorded'
SELECT remaining >= 3 AS allowed_to_generate_3 FROM check_user_quota(1001, 'articles_per_month');
SELECT record_feature_usage(1001, 'articles_per_month', 'article', 502, 3, NULL);
SELECT * FROM check_user_quota(1001, 'articles_per_month');

\echo '== 7. Storage: a custom storage_space of 2048 MB reaches user_storage_usage at once'
UPDATE user_subscriptions SET custom_quotas = custom_quotas || '{"storage_space": 2048}'
 WHERE user_id = 1001;
SELECT get_user_storage_quota(1001) AS quota_bytes,
       (SELECT storage_quota_bytes FROM user_storage_usage WHERE user_id = 1001) AS stored_bytes;
\echo '   removing the override falls back to the plan (100 MB)'
UPDATE user_subscriptions SET custom_quotas = custom_quotas - 'storage_space' WHERE user_id = 1001;
SELECT get_user_storage_quota(1001) AS quota_bytes,
       (SELECT storage_quota_bytes FROM user_storage_usage WHERE user_id = 1001) AS stored_bytes;

\echo '== 8. A booster pack of 20 articles for 30 days: the allowance is used first, then the pack'
INSERT INTO subscription_plans (plan_code, plan_name, price, duration_days, plan_kind)
VALUES ('articles_boost', 'Article booster', 19.00, 30, 'booster');
INSERT INTO plan_features (plan_id, feature_code, feature_value)
SELECT id, 'articles_per_month', 20 FROM subscription_plans WHERE plan_code = 'articles_boost';
SELECT feature_code, amount, expires_at FROM buy_booster(1001, 'articles_boost', 'payment-1001-1');
\echo '   12 more articles: 5 from the allowance (10), 7 from the pack'
SELECT allowed, current_usage, quota_limit, remaining FROM consume(1001, 'articles_per_month', 12);
SELECT allowance, allowance_used, grants -> 0 ->> 'remaining' AS pack_left
  FROM usage_overview(1001) WHERE feature_code = 'articles_per_month';

\echo '== 9. A 10-minute hold before generating 5 articles, outside any transaction; 4 were made'
SELECT allowed, remaining, expires_at > now() AS held_until_later
  FROM reserve(1001, 'articles_per_month', 5, idempotency_key => 'job-1001-1');
\echo '   the hold counts on every page at once; settling records 4 and gives 1 back'
SELECT current_usage, remaining FROM check_user_quota(1001, 'articles_per_month');
SELECT settled, released_amount
  FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1001), 4, 'article', 77);
SELECT current_usage, remaining FROM check_user_quota(1001, 'articles_per_month');

\echo '== 10. Usage resets on the subscription anniversary, not the calendar month'
SELECT period_start::date, period_end::date, cycle FROM get_quota_period(1001, 'articles_per_month');
SELECT period_start::date, period_end::date FROM anniversary_period('2026-01-31', 'monthly', '2026-02-15');

\echo '== 11. Bad input is an error with a SQLSTATE, never a silent fallback'
\set ON_ERROR_STOP off
\set VERBOSITY verbose
UPDATE user_subscriptions SET custom_quotas = '{"articles_per_month": "abc"}' WHERE user_id = 1001;
SELECT * FROM check_user_quota(1001, 'articles_per_mnth');
\echo '== done'
