-- The benchmark data set, loaded by scripts/bench.sh into a fresh database where
-- CREATE EXTENSION pg_entitlements has just run.
--
--  * the seed's three plans (PRODUCT.md): free and professional monthly, enterprise yearly,
--    with the seed's five feature values;
--  * 100,000 users (user_id 1..100000), one active subscription each: 60% free, 30%
--    professional, 10% enterprise; start dates spread over the past year (so anchors fall on
--    every day of the month, the 29th-31st included); 10% with a quota_reset_anchor of their
--    own;
--  * a fifth of them (user_id % 5 = 2) with custom_quotas (articles always, publishing and
--    storage for some);
--  * usage counters in the current period (articles for 80% of users, publishing for 50%,
--    keyword distillation for 30%, platform accounts for 40%) and the previous period's
--    article counter, each with its ledger row in quota.usage_records, so that
--    quota.verify_ledger() holds; about 5% of the article counters are at their limit.
--
-- Deterministic: every value is a function of user_id. Rows go in through the extension's
-- own triggers (validate_custom_quotas, sync_storage_quota), which create user_storage_usage.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

INSERT INTO quota.subscription_plans (plan_code, plan_name, price, billing_cycle) VALUES
    ('free', 'Free', 0, 'monthly'),
    ('professional', 'Professional', 99, 'monthly'),
    ('enterprise', 'Enterprise', 999, 'yearly');

INSERT INTO quota.plan_features (plan_id, feature_code, feature_name, feature_value, feature_unit)
SELECT p.id, f.code, f.code, CASE p.plan_code WHEN 'free' THEN f.free
                                  WHEN 'professional' THEN f.professional ELSE f.enterprise END,
       f.unit
  FROM quota.subscription_plans p
 CROSS JOIN (VALUES
        ('articles_per_month',   10,  100, -1, NULL),
        ('publish_per_month',    20,  200, -1, NULL),
        ('keyword_distillation',  5,   50, -1, NULL),
        ('platform_accounts',     3,   10, -1, NULL),
        ('storage_space',       100, 1024, -1, 'MB'))
       AS f (code, free, professional, enterprise, unit);

-- One active subscription per user.
INSERT INTO quota.user_subscriptions
       (user_id, plan_id, start_date, end_date, status, custom_quotas, quota_reset_anchor)
SELECT u,
       (SELECT id FROM quota.subscription_plans
         WHERE plan_code = CASE WHEN u % 10 = 0 THEN 'enterprise'
                                WHEN u % 10 IN (1, 2, 3) THEN 'professional'
                                ELSE 'free' END),
       st, st + interval '13 months', 'active',
       CASE WHEN u % 5 = 2 THEN
            jsonb_build_object('articles_per_month', 6 + (u / 5) % 45)
            || CASE WHEN u % 3 = 0 THEN '{"publish_per_month": 50, "storage_space": 2048}'::jsonb
                    ELSE '{}'::jsonb END
       END,
       CASE WHEN u % 10 = 7 THEN st - make_interval(days => u % 40) END
  FROM generate_series(1, 100000) AS u,
       LATERAL (SELECT date_trunc('second', now())
                       - make_interval(days => (u * 7919) % 365, secs => (u * 31) % 86400)
                       - interval '1 minute') AS s (st);

-- Every subscription's current billing period, computed by the extension itself.
CREATE TEMP TABLE cur AS
SELECT s.user_id, s.start_date, s.end_date,
       coalesce(s.quota_reset_anchor, s.start_date) AS anchor,
       coalesce(s.quota_cycle_type, p.quota_cycle_type, p.billing_cycle) AS cycle,
       per.period_start, per.period_end,
       coalesce((s.custom_quotas ->> 'articles_per_month')::int, pf.feature_value) AS articles_limit
  FROM quota.user_subscriptions s
  JOIN quota.subscription_plans p ON p.id = s.plan_id
  JOIN quota.plan_features pf ON pf.plan_id = s.plan_id AND pf.feature_code = 'articles_per_month',
       LATERAL quota.get_quota_period(s.user_id, 'articles_per_month') per;

CREATE TEMP TABLE counters AS
-- Articles, current period, 80% of users; about 5% at their limit.
SELECT user_id, 'articles_per_month'::text AS feature_code, period_start, period_end,
       CASE WHEN articles_limit = -1 THEN 1 + user_id % 400
            WHEN user_id % 20 = 3 THEN articles_limit
            ELSE 1 + user_id % greatest(articles_limit / 2, 1) END AS usage_count
  FROM cur WHERE user_id % 5 <> 4
UNION ALL
-- Publishing, current period, 50% of users.
SELECT user_id, 'publish_per_month', period_start, period_end, 1 + user_id % 9
  FROM cur WHERE user_id % 2 = 0
UNION ALL
-- Keyword distillation, current period, 30% of users.
SELECT user_id, 'keyword_distillation', period_start, period_end, 1 + user_id % 3
  FROM cur WHERE user_id % 10 IN (1, 4, 8)
UNION ALL
-- Platform accounts count once per subscription.
SELECT user_id, 'platform_accounts', start_date, end_date, 1 + user_id % 3
  FROM cur WHERE user_id % 5 IN (0, 1)
UNION ALL
-- Articles, previous period, for every user whose subscription began before the current one.
SELECT c.user_id, 'articles_per_month', greatest(prev.period_start, c.start_date), c.period_start,
       1 + c.user_id % 7
  FROM cur c,
       LATERAL quota.anniversary_period(c.anchor, c.cycle, c.period_start - interval '1 microsecond') prev
 WHERE c.period_start > c.start_date;

INSERT INTO quota.user_usage
       (user_id, feature_code, period_start, period_end, usage_count, last_reset_at, updated_at)
SELECT user_id, feature_code, period_start, period_end, usage_count, period_start, now()
  FROM counters;

INSERT INTO quota.usage_records
       (user_id, feature_code, period_start, resource_type, resource_id, amount, metadata, created_at)
SELECT user_id, feature_code, period_start, 'bench_seed', user_id, usage_count,
       '{"source": "bench/data.sql"}', now()
  FROM counters;

DROP TABLE cur, counters;
VACUUM (ANALYZE) quota.subscription_plans, quota.plan_features, quota.user_subscriptions,
       quota.user_usage, quota.usage_records, quota.user_storage_usage, quota.features;
