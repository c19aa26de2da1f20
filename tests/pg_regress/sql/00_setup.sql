-- 00_setup: install pg_entitlements and create the fixtures the later files share.
--
-- Every file of this suite runs in the same database, in name order. This one creates the
-- seed application's three plans (free / professional / enterprise) with the seed's limits;
-- each later file creates its own users (user ids 1xx in 01, 2xx in 02, ...) so that the
-- files do not depend on one another beyond this setup.
--
-- pg_regress runs psql with PGTZ=PST8PDT and PGDATESTYLE="Postgres, MDY": every file sets
-- the session time zone and date style it prints with.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

CREATE EXTENSION pg_entitlements;

-- The extension lives in its own schema `quota`: tables and functions.
SELECT extname, extnamespace::regnamespace AS schema, extrelocatable
  FROM pg_extension WHERE extname = 'pg_entitlements';

-- The functions this suite exercises (the extension may have more): volatility (i immutable,
-- s stable, v volatile) and strictness. Only anniversary_period is STRICT; the others raise
-- an error for a NULL argument instead of returning NULL.
SELECT p.proname, p.provolatile, p.proisstrict
  FROM pg_proc p
 WHERE p.pronamespace = 'quota'::regnamespace
   AND p.proname IN ('check_user_quota', 'record_feature_usage', 'get_user_storage_quota',
                     'get_quota_period', 'anniversary_period', 'sync_storage_quota',
                     'validate_custom_quotas')
 ORDER BY p.proname;

-- The tables this suite uses.
SELECT c.relname
  FROM pg_class c
 WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind = 'r'
   AND c.relname IN ('settings', 'features', 'subscription_plans', 'plan_features',
                     'user_subscriptions', 'user_usage', 'usage_records', 'user_storage_usage')
 ORDER BY c.relname;

-- The built-in feature catalog: units, reset rules and the defaults that replace the seed's
-- hard-coded fallbacks (100/200/1/50/100).
SELECT code, name, unit, reset_rule, default_limit, builtin
  FROM quota.features ORDER BY code;

-- No settings row means the defaults (periods computed in UTC).
SELECT count(*) AS settings_rows FROM quota.settings;

-- The seed's plans. Schema-qualified names work without touching the search_path.
INSERT INTO quota.subscription_plans (plan_code, plan_name, price, duration_days, billing_cycle)
VALUES ('free',         'Free',           0.00, 30, 'monthly'),
       ('professional', 'Professional',  99.00, 30, 'monthly'),
       ('enterprise',   'Enterprise',   999.00, 365, 'yearly');

-- The later files find plans by code through this helper rather than by identity value.
CREATE FUNCTION public.plan_id(code text) RETURNS bigint
    LANGUAGE sql STABLE
    RETURN (SELECT id FROM quota.subscription_plans WHERE plan_code = code);

-- With `quota` on the search_path the seed's unqualified table and function names resolve.
SET search_path = quota, public;

-- The seed's limits: articles_per_month 10/100/-1, publish_per_month 20/200/-1,
-- keyword_distillation 5/50/-1, platform_accounts 3/10/-1, storage_space (MB) 100/1024/-1.
INSERT INTO plan_features (plan_id, feature_code, feature_name, feature_value, feature_unit)
VALUES (plan_id('free'), 'articles_per_month',   'Article generation',   10,   NULL),
       (plan_id('free'), 'publish_per_month',    'Article publishing',   20,   NULL),
       (plan_id('free'), 'keyword_distillation', 'Keyword distillation', 5,    NULL),
       (plan_id('free'), 'platform_accounts',    'Platform accounts',    3,    NULL),
       (plan_id('free'), 'storage_space',        'Storage space',        100,  'MB'),
       (plan_id('professional'), 'articles_per_month',   'Article generation',   100,  NULL),
       (plan_id('professional'), 'publish_per_month',    'Article publishing',   200,  NULL),
       (plan_id('professional'), 'keyword_distillation', 'Keyword distillation', 50,   NULL),
       (plan_id('professional'), 'platform_accounts',    'Platform accounts',    10,   NULL),
       (plan_id('professional'), 'storage_space',        'Storage space',        1024, 'MB'),
       (plan_id('enterprise'), 'articles_per_month',   'Article generation',   -1, NULL),
       (plan_id('enterprise'), 'publish_per_month',    'Article publishing',   -1, NULL),
       (plan_id('enterprise'), 'keyword_distillation', 'Keyword distillation', -1, NULL),
       (plan_id('enterprise'), 'platform_accounts',    'Platform accounts',    -1, NULL),
       (plan_id('enterprise'), 'storage_space',        'Storage space',        -1, 'MB');

SELECT sp.plan_code, sp.billing_cycle, pf.feature_code, pf.feature_value, pf.feature_unit
  FROM subscription_plans sp
  JOIN plan_features pf ON pf.plan_id = sp.id
 ORDER BY sp.price, pf.feature_code;

-- A first subscription, to show that both spellings of a call work: unqualified with `quota`
-- on the search_path, and schema-qualified with an empty search_path.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1, plan_id('free'), now() - interval '1 day', now() + interval '29 days');

SELECT * FROM check_user_quota(1, 'articles_per_month');

SET search_path = '';
SELECT * FROM quota.check_user_quota(1, 'articles_per_month');
SELECT quota.record_feature_usage(1, 'articles_per_month');
SELECT * FROM quota.check_user_quota(1, 'articles_per_month');
SELECT quota.get_user_storage_quota(1);
RESET search_path;

-- The subscription insert created the user's storage row (trigger sync_storage_quota).
SELECT user_id, storage_quota_bytes, total_storage_bytes
  FROM quota.user_storage_usage WHERE user_id = 1;

-- A helper for the error cases of the later files: runs one statement and reports the error it
-- raised as a NOTICE "SQLSTATE: message" (with the error's hint), so the golden files show
-- the SQLSTATE without psql's verbose LOCATION line, which names a Rust source line and would
-- change whenever the code moves. A statement that succeeds reports "no error". The statement
-- runs in a subtransaction: whatever it wrote before failing is rolled back, as it would be
-- for a client.
CREATE PROCEDURE public.expect_error(statement text)
    LANGUAGE plpgsql AS $$
DECLARE
    code text;
    message text;
    hint text;
BEGIN
    EXECUTE statement;
    RAISE NOTICE 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            hint = PG_EXCEPTION_HINT;
    IF hint <> '' THEN
        RAISE NOTICE '%: %', code, message USING HINT = hint;
    ELSE
        RAISE NOTICE '%: %', code, message;
    END IF;
END
$$;

CALL expect_error('SELECT 1');
CALL expect_error('SELECT 1/0');
