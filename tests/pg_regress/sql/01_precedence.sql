-- 01_precedence: which limit applies, and which subscription is the active one.
--
-- A limit comes from the first of these that has a value:
--   1. the active subscription's custom_quotas ->> feature_code (even when the plan lacks
--      the feature),
--   2. plan_features.feature_value of the subscription's plan,
--   3. quota.features.default_limit;
-- with none of them there is no quota. -1 means unlimited wherever it comes from.
-- Users 101..199.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- Fixtures of this file: a plan with one feature only, a feature without a catalog default
-- and a feature whose catalog default is unlimited.
INSERT INTO subscription_plans (plan_code, plan_name, price) VALUES ('starter', 'Starter', 9.00);
INSERT INTO plan_features (plan_id, feature_code, feature_value)
VALUES (plan_id('starter'), 'articles_per_month', 10);
INSERT INTO features (code, name, unit, default_limit)
VALUES ('image_generation', 'Image generation', 'images', NULL),
       ('api_calls',        'API calls',        'calls',  -1);

-- Every user of this file gets a subscription that started a day ago and runs for a month,
-- unless a case says otherwise.
CREATE PROCEDURE pg_temp.subscribe(u bigint, plan text, custom jsonb DEFAULT NULL)
    LANGUAGE sql AS $$
    INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
    VALUES (u, public.plan_id(plan), now() - interval '1 day', now() + interval '30 days', custom)
$$;

-- ---------------------------------------------------------------------------------------------
-- 1. The plan's value, when there is no override.
CALL pg_temp.subscribe(101, 'free');
SELECT * FROM check_user_quota(101, 'articles_per_month');
SELECT * FROM check_user_quota(101, 'storage_space');

-- 2. custom_quotas beats the plan, for that feature only.
CALL pg_temp.subscribe(102, 'free', '{"articles_per_month": 6}');
SELECT * FROM check_user_quota(102, 'articles_per_month');
SELECT * FROM check_user_quota(102, 'publish_per_month');

-- 3. custom_quotas alone: the plan has no row for image_generation and its catalog default is
--    NULL, so the override is the only source.
CALL pg_temp.subscribe(103, 'starter', '{"image_generation": 7}');
SELECT * FROM check_user_quota(103, 'image_generation');

-- 4. Catalog default alone: the starter plan lacks publish_per_month (default 200) and there
--    is no override.
CALL pg_temp.subscribe(104, 'starter');
SELECT * FROM check_user_quota(104, 'publish_per_month');
SELECT * FROM check_user_quota(104, 'keyword_distillation');

-- 5. custom_quotas for a feature the plan lacks beats the catalog default (15, not 200).
CALL pg_temp.subscribe(105, 'starter', '{"publish_per_month": 15}');
SELECT * FROM check_user_quota(105, 'publish_per_month');

-- 6. No source at all: the plan lacks image_generation, its default_limit is NULL and there is
--    no override. No quota: has_quota false, limit 0.
SELECT * FROM check_user_quota(104, 'image_generation');
-- Usage recorded anyway is reported, but gives no quota.
SELECT record_feature_usage(104, 'image_generation', amount => 2);
SELECT * FROM check_user_quota(104, 'image_generation');

-- 7. -1 (unlimited) from each source: remaining -1, percentage 0, usage still counted.
--    From custom_quotas, over the free plan's 10:
CALL pg_temp.subscribe(107, 'free', '{"articles_per_month": -1}');
SELECT record_feature_usage(107, 'articles_per_month', amount => 500);
SELECT * FROM check_user_quota(107, 'articles_per_month');
--    From the plan (enterprise):
CALL pg_temp.subscribe(108, 'enterprise');
SELECT * FROM check_user_quota(108, 'articles_per_month');
--    From the catalog default (api_calls, default -1, in no plan):
SELECT * FROM check_user_quota(108, 'api_calls');

-- 8. An override of 0 is a limit of zero, not "no override": it beats the plan's 10.
CALL pg_temp.subscribe(109, 'free', '{"articles_per_month": 0}');
SELECT * FROM check_user_quota(109, 'articles_per_month');

-- 9. An override can lower a limit below the usage already recorded: has_quota false,
--    remaining stays 0 (never negative), the percentage goes beyond 100.
CALL pg_temp.subscribe(110, 'free');
SELECT record_feature_usage(110, 'articles_per_month', amount => 6);
UPDATE user_subscriptions SET custom_quotas = '{"articles_per_month": 4}' WHERE user_id = 110;
SELECT * FROM check_user_quota(110, 'articles_per_month');

-- ---------------------------------------------------------------------------------------------
-- Which subscription counts: status 'active' and start_date <= now() < end_date, the latest
-- end_date first. Without one: (false, 0, 0, 0, 0), whatever the plan says.

-- 10. No subscription at all.
SELECT * FROM check_user_quota(120, 'articles_per_month');

-- 11. A paused subscription (dates cover now).
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, status, paused_at)
VALUES (121, plan_id('professional'), now() - interval '1 day', now() + interval '30 days',
        'paused', now());
SELECT * FROM check_user_quota(121, 'articles_per_month');

-- 12. A subscription still marked 'active' whose end_date has passed.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (122, plan_id('professional'), now() - interval '60 days', now() - interval '30 days');
SELECT * FROM check_user_quota(122, 'articles_per_month');

-- 13. An 'active' subscription that starts tomorrow.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (123, plan_id('professional'), now() + interval '1 day', now() + interval '31 days');
SELECT * FROM check_user_quota(123, 'articles_per_month');

-- 14. end_date is exclusive: a subscription ending at this very instant is over.
--     (now() is the same within a transaction.)
BEGIN;
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (124, plan_id('professional'), now() - interval '30 days', now());
SELECT * FROM check_user_quota(124, 'articles_per_month');
--     ... while one starting at this very instant has begun.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (125, plan_id('professional'), now(), now() + interval '30 days');
SELECT * FROM check_user_quota(125, 'articles_per_month');
COMMIT;

-- 15. Two active subscriptions: the one with the latest end_date wins, even if it started
--     later and whatever order the rows were inserted in.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (126, plan_id('professional'), now() - interval '1 day', now() + interval '40 days'),
       (126, plan_id('free'),         now() - interval '9 days', now() + interval '10 days');
SELECT * FROM check_user_quota(126, 'articles_per_month');
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
VALUES (127, plan_id('free'),         now() - interval '1 day',  now() + interval '60 days', NULL),
       (127, plan_id('professional'), now() - interval '9 days', now() + interval '20 days',
        '{"articles_per_month": 1000}');
-- The free subscription ends last: its 10 applies, not the other one's override.
SELECT * FROM check_user_quota(127, 'articles_per_month');
-- Once it is paused, the professional one with its override is the active one.
UPDATE user_subscriptions SET status = 'paused', paused_at = now()
 WHERE user_id = 127 AND plan_id = plan_id('free');
SELECT * FROM check_user_quota(127, 'articles_per_month');

-- ---------------------------------------------------------------------------------------------
-- The seed application's exact call shapes work unchanged with `quota` on the search_path.
-- Drivers send untyped parameters; PREPARE without types lets PostgreSQL infer them the same
-- way.
CALL pg_temp.subscribe(140, 'free');
PREPARE seed_check AS SELECT * FROM check_user_quota($1, $2);
PREPARE seed_record AS
    SELECT record_feature_usage($1::INTEGER, $2::VARCHAR, $3::VARCHAR, $4::INTEGER, $5::INTEGER, $6::JSONB);
EXECUTE seed_check(140, 'articles_per_month');
EXECUTE seed_record(140, 'articles_per_month', 'article', 9001, 3, '{"title": "Hello"}');
EXECUTE seed_record(140, 'articles_per_month', NULL, NULL, 1, NULL);
EXECUTE seed_check(140, 'articles_per_month');
-- One counter for the period, one ledger row per call.
SELECT user_id, feature_code, usage_count FROM user_usage WHERE user_id = 140;
SELECT user_id, feature_code, resource_type, resource_id, amount, metadata
  FROM usage_records WHERE user_id = 140 ORDER BY id;
-- Every row of one call shares the counter's period_start.
SELECT count(DISTINCT r.period_start) AS periods, bool_and(r.period_start = u.period_start) AS same
  FROM usage_records r JOIN user_usage u USING (user_id, feature_code)
 WHERE r.user_id = 140;
DEALLOCATE seed_check;
DEALLOCATE seed_record;

-- ---------------------------------------------------------------------------------------------
-- The seed's bug report, end to end: an admin override of 6 with 2 used shows 4 remaining;
-- the admin raises it to 10 and the very next check sees 8 remaining, so a request for 3
-- articles is allowed (the seed's PL/pgSQL ignored custom_quotas here and said "exhausted").
CALL pg_temp.subscribe(150, 'free', '{"articles_per_month": 6}');
-- Two articles (resource ids 1 and 2), one unit each:
SELECT record_feature_usage(150, 'articles_per_month', 'article', 1);
SELECT record_feature_usage(150, 'articles_per_month', 'article', 2);
SELECT * FROM check_user_quota(150, 'articles_per_month');
UPDATE user_subscriptions
   SET custom_quotas = jsonb_set(custom_quotas, '{articles_per_month}', '10')
 WHERE user_id = 150 AND status = 'active';
SELECT * FROM check_user_quota(150, 'articles_per_month');
SELECT remaining >= 3 AS request_for_3_allowed FROM check_user_quota(150, 'articles_per_month');

-- Removing the override falls back to the plan (10 on free) again.
UPDATE user_subscriptions SET custom_quotas = custom_quotas - 'articles_per_month'
 WHERE user_id = 150;
SELECT custom_quotas FROM user_subscriptions WHERE user_id = 150;
SELECT * FROM check_user_quota(150, 'articles_per_month');

RESET search_path;
