-- 24_kinds: features that are not used up. A boolean feature is on or off (has_feature), a
-- config feature carries a JSON value (feature_value); both follow the precedence of every
-- limit: custom_quotas, then the plan, then the catalog. Users 24xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

INSERT INTO quota.features (code, name, kind, default_limit) VALUES
    ('sso', 'Single sign-on', 'boolean', 0),
    ('api_access', 'API access', 'boolean', NULL);
INSERT INTO quota.features (code, name, kind, default_value) VALUES
    ('ai_model', 'AI model', 'config', '"gpt-4o-mini"'),
    ('export_options', 'Export options', 'config', NULL);
-- The seed's 1 and 0 in plan_features: professional has single sign-on and API access, free neither.
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value) VALUES
    (plan_id('professional'), 'sso', 1), (plan_id('professional'), 'api_access', 1), (plan_id('free'), 'sso', 0);
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, config_value) VALUES
    (plan_id('professional'), 'ai_model', 1, '"gpt-4o"'),
    (plan_id('professional'), 'export_options', 1, '{"max_resolution": "4k", "formats": ["pdf", "png"]}');

INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date) VALUES
    (2401, plan_id('free'), now() - interval '10 days', now() + interval '20 days'),
    (2402, plan_id('professional'), now() - interval '10 days', now() + interval '20 days');

-- Plan, then catalog: free has sso off by its plan, no API access (no source at all), the
-- catalog's default model and no export options; professional has everything its plan gives.
SELECT u, f, has_feature(u, f), feature_value(u, f), limit_source(u, f)
  FROM unnest(ARRAY[2401, 2402]) u,
       unnest(ARRAY['sso', 'api_access', 'ai_model', 'export_options']) f
 ORDER BY u, f;

-- check_user_quota answers for a boolean or config feature as for a quota: on is an unlimited
-- quota with no usage, off no quota.
SELECT * FROM check_user_quota(2401, 'sso');
SELECT * FROM check_user_quota(2402, 'sso');
SELECT * FROM check_user_quota(2402, 'export_options');
SELECT * FROM check_user_quota(2401, 'export_options');

-- A custom override toggles a boolean feature, and overrides a config value per user.
UPDATE user_subscriptions
   SET custom_quotas = '{"sso": true, "api_access": 1, "ai_model": {"name": "o3", "max_tokens": 4096}}'
 WHERE user_id = 2401;
UPDATE user_subscriptions SET custom_quotas = '{"sso": false, "export_options": null}'
 WHERE user_id = 2402;
SELECT u, f, has_feature(u, f), feature_value(u, f), limit_source(u, f)
  FROM unnest(ARRAY[2401, 2402]) u,
       unnest(ARRAY['sso', 'api_access', 'ai_model', 'export_options']) f
 ORDER BY u, f;

-- Validation follows the kind, at write time: integers for metered and gauge, booleans (or
-- 1 and 0) for boolean, anything for config.
UPDATE user_subscriptions SET custom_quotas = '{"sso": "yes"}' WHERE user_id = 2401;
UPDATE user_subscriptions SET custom_quotas = '{"sso": 2}' WHERE user_id = 2401;
UPDATE user_subscriptions SET custom_quotas = '{"articles_per_month": true}' WHERE user_id = 2401;
UPDATE user_subscriptions SET custom_quotas = '{"ai_model": [1, "two", {"three": null}]}'
 WHERE user_id = 2401 RETURNING custom_quotas;

-- Nothing is used up: consume, grants and holds are refused with the reason; the limit
-- functions that audit (adjust_quota) toggle a boolean feature with 1 or 0.
SELECT * FROM consume(2402, 'sso', 1);
SELECT record_feature_usage(2402, 'ai_model');
SELECT * FROM reserve(2402, 'sso', 1);
SELECT grant_quota(2402, 'sso', 5);
SELECT * FROM adjust_quota(2402, 'sso', 1, 'sales call');
SELECT has_feature(2402, 'sso');
SELECT * FROM adjust_quota(2402, 'sso', 3, 'typo');
SELECT * FROM adjust_quota(2402, 'ai_model', 1, 'not a value');
SELECT feature_code, old_value, new_value, reason FROM quota_adjustments
 WHERE user_id = 2402 ORDER BY id;

-- A booster pack grants what is used up only: its switch is left out.
INSERT INTO subscription_plans (plan_code, plan_name, plan_kind, duration_days)
VALUES ('kinds_pack', 'Pack', 'booster', 30);
INSERT INTO plan_features (plan_id, feature_code, feature_value)
VALUES (plan_id('kinds_pack'), 'sso', 1), (plan_id('kinds_pack'), 'articles_per_month', 5);
SELECT feature_code, amount, source FROM buy_booster(2402, 'kinds_pack', 'kinds-pack-1');

-- A metered feature has the feature while its limit is not 0, used up or not, and its value
-- is its limit.
SELECT has_feature(2401, 'articles_per_month'), feature_value(2401, 'articles_per_month'),
       has_feature(2402, 'articles_per_month'), feature_value(2402, 'articles_per_month');
-- Without an active subscription nothing is on and nothing has a value.
SELECT has_feature(2499, 'sso'), feature_value(2499, 'ai_model');
SELECT has_feature(2401, 'no_such_feature');
SELECT has_feature(NULL, 'sso');

-- One call for a "my plan" page: kind, value, and no window for what is not used up.
SELECT feature_code, kind, has_quota, quota_limit, cycle, next_reset IS NOT NULL AS resets,
       value
  FROM usage_overview(2401) ORDER BY feature_code;

-- A change of a custom value is announced with the old and new values of its kind (in a psql
-- of its own: a notification shows the sending backend's PID, which changes from run to run).
\! psql -X -q -d pge_regress -c 'LISTEN quota_updated' -c "UPDATE quota.user_subscriptions SET custom_quotas = '{\"sso\": false, \"ai_model\": \"o4\"}' WHERE user_id = 2401" 2>&1 | sed -E 's/server process with PID [0-9]+/server process with PID N/'

-- So is a change of a plan's or the catalog's value, to the users whose value it decides.
\! psql -X -q -d pge_regress -c 'LISTEN quota_updated' -c "UPDATE quota.plan_features SET config_value = '\"gpt-4.1\"' WHERE feature_code = 'ai_model'" -c "UPDATE quota.features SET default_value = '\"nano\"' WHERE code = 'ai_model'" -c "UPDATE quota.plan_features SET config_value = '\"gpt-4o\"' WHERE feature_code = 'ai_model'" 2>&1 | sed -E 's/server process with PID [0-9]+/server process with PID N/'

-- Both read paths give the same answers (07_read_paths compares the rest).
SET pg_entitlements.direct_reads = off;
SELECT u, f, has_feature(u, f), feature_value(u, f)
  FROM unnest(ARRAY[2401, 2402]) u, unnest(ARRAY['sso', 'ai_model', 'export_options']) f
 ORDER BY u, f;
RESET pg_entitlements.direct_reads;
SELECT u, f, has_feature(u, f), feature_value(u, f)
  FROM unnest(ARRAY[2401, 2402]) u, unnest(ARRAY['sso', 'ai_model', 'export_options']) f
 ORDER BY u, f;

-- Every role the README names may ask.
SET ROLE quota_reader;
SELECT has_feature(2402, 'api_access'), feature_value(2402, 'ai_model');
SET ROLE quota_app;
SELECT has_feature(2402, 'api_access'), feature_value(2402, 'ai_model');
RESET ROLE;

DELETE FROM quota.grants WHERE user_id = 2402;
DELETE FROM subscription_plans WHERE plan_code = 'kinds_pack';
DELETE FROM user_subscriptions WHERE user_id IN (2401, 2402);
DELETE FROM quota_adjustments WHERE user_id IN (2401, 2402);
DELETE FROM plan_features WHERE feature_code IN ('sso', 'api_access', 'ai_model', 'export_options');
DELETE FROM quota.features WHERE code IN ('sso', 'api_access', 'ai_model', 'export_options');
