-- Run by tests/pg_regress/sql/12_catalog.sql. Users 1101..1199 and the seed application's.
CREATE DATABASE catalog_changes;
\c catalog_changes
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET client_min_messages = warning;
CREATE EXTENSION pg_entitlements;
SET search_path = quota, public;
CREATE FUNCTION public.plan_id(code text) RETURNS bigint LANGUAGE sql STABLE
    RETURN (SELECT id FROM quota.subscription_plans WHERE plan_code = code);
-- Each user's storage quota: the function (the truth) and the synchronised column.
CREATE FUNCTION public.storage(VARIADIC users bigint[])
    RETURNS TABLE (user_id bigint, quota_bytes bigint, row_quota_bytes bigint)
    LANGUAGE sql AS $$
    SELECT u, quota.get_user_storage_quota(u), s.storage_quota_bytes
      FROM unnest(users) AS u LEFT JOIN quota.user_storage_usage s ON s.user_id = u ORDER BY u
$$;

-- Plan small has 100 MB of storage, plan plain no storage row (the catalog default, 100 MB).
INSERT INTO subscription_plans (id, plan_code, plan_name)
VALUES (1, 'small', 'Small'), (2, 'plain', 'Plain');
INSERT INTO plan_features (plan_id, feature_code, feature_value)
VALUES (1, 'storage_space', 100), (1, 'articles_per_month', 10), (2, 'articles_per_month', 20);
-- 1101 and 1102 on small, 1103 on plain, 1104 on small with a custom 500 MB, 1105's
-- subscription to small is cancelled (no active subscription: quota 0).
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, status, custom_quotas)
VALUES (1101, 1, now() - interval '1 day', now() + interval '30 days', 'active', NULL),
       (1102, 1, now() - interval '1 day', now() + interval '30 days', 'active', NULL),
       (1103, 2, now() - interval '1 day', now() + interval '30 days', 'active', NULL),
       (1104, 1, now() - interval '1 day', now() + interval '30 days', 'active',
        '{"storage_space": 500}'),
       (1105, 1, now() - interval '1 day', now() + interval '30 days', 'cancelled', NULL);
SELECT * FROM storage(1101, 1102, 1103, 1104, 1105);

LISTEN quota_updated;
LISTEN storage_quota_changed;

-- =============================================================================================
-- Item 6: storage follows plan_features and features, and every change is announced.

-- A plan's storage row changes: one quota_updated for the plan (3 users are on it: 1105's
-- subscription is cancelled), one storage_quota_changed per user whose bytes moved (1104's
-- custom value decides, unchanged).
UPDATE plan_features SET feature_value = 200 WHERE plan_id = 1 AND feature_code = 'storage_space';
SELECT * FROM storage(1101, 1102, 1103, 1104, 1105);

-- Reads later in the same transaction see the change (the per-backend copy of the catalog is
-- bypassed once the transaction has written); a rollback announces nothing.
BEGIN;
UPDATE plan_features SET feature_value = 300 WHERE plan_id = 1 AND feature_code = 'storage_space';
SELECT * FROM storage(1101);
SELECT * FROM check_user_quota(1101, 'storage_space');
ROLLBACK;
SELECT * FROM storage(1101);

-- The storage row is deleted: the catalog default (100 MB) applies; inserted again in GB.
DELETE FROM plan_features WHERE plan_id = 1 AND feature_code = 'storage_space';
SELECT * FROM storage(1101, 1102, 1104);
INSERT INTO plan_features (plan_id, feature_code, feature_value, feature_unit)
VALUES (1, 'storage_space', 1, 'GB');
SELECT * FROM storage(1101, 1102, 1104);

-- Several plans in one statement: one quota_updated per plan, the features named.
UPDATE plan_features SET feature_value = feature_value + 1 WHERE feature_code = 'articles_per_month';
-- A statement that changes no value announces nothing.
UPDATE plan_features SET feature_value = feature_value WHERE plan_id = 1;

-- The catalog default of storage_space moves only the users whose limit comes from it (1103:
-- no custom value, no plan row).
UPDATE features SET default_limit = 150 WHERE code = 'storage_space';
SELECT * FROM storage(1101, 1102, 1103, 1104);
-- The unit moves the users whose value is in the catalog's unit: 1103 (the default) and 1104
-- (custom values are in the catalog's unit), not plan small's users (its row says GB).
UPDATE features SET unit = 'KB' WHERE code = 'storage_space';
SELECT * FROM storage(1101, 1102, 1103, 1104);
UPDATE features SET unit = 'MB', default_limit = 100 WHERE code = 'storage_space';
SELECT * FROM storage(1101, 1102, 1103, 1104);

-- Another feature's default: announced with the users it decides (no plan row has
-- keyword_distillation: all four); no storage event.
UPDATE features SET default_limit = 3 WHERE code = 'keyword_distillation';
-- A change that decides no limit (the display name) announces nothing.
UPDATE features SET name = 'Keyword extraction' WHERE code = 'keyword_distillation';

-- =============================================================================================
-- Item 7: a rename keeps custom_quotas; a delete is refused while a key stays.

-- A new feature: announced with the users whose default it is (all four active ones).
INSERT INTO features (code, name, unit, default_limit) VALUES ('exports', 'Exports', 'count', 5);
INSERT INTO plan_features (plan_id, feature_code, feature_value) VALUES (1, 'exports', 5);
SELECT old_value, new_value FROM adjust_quota(1101, 'exports', 50, 'agency deal', 'sales');
-- 1105's cancelled subscription overrides it too.
UPDATE user_subscriptions SET custom_quotas = '{"exports": 7}' WHERE user_id = 1105;
SELECT quota_limit FROM check_user_quota(1101, 'exports');

-- The rename: the counters and plan rows follow by ON UPDATE CASCADE, the custom_quotas keys
-- by the trigger (one audit row per subscription), and one quota_updated announces it.
UPDATE features SET code = 'data_exports' WHERE code = 'exports';
SELECT quota_limit FROM check_user_quota(1101, 'data_exports');
SELECT user_id, custom_quotas FROM user_subscriptions WHERE user_id IN (1101, 1105) ORDER BY user_id;
SELECT user_id, feature_code, old_value, new_value, reason, actor = session_user AS by_session_user
  FROM quota_adjustments ORDER BY id;
SELECT plan_id, feature_code, feature_value FROM plan_features WHERE feature_code LIKE '%exports';

-- A delete while subscriptions override the feature is refused, with the count and the fix:
-- the key left behind would make every later change of those documents fail. 1101 and the
-- cancelled 1105 override data_exports. (Once cleared, the audit's foreign key would still
-- keep a feature with adjustments.)
DELETE FROM plan_features WHERE feature_code = 'data_exports';
\set VERBOSITY default
DELETE FROM features WHERE code = 'data_exports';
\set VERBOSITY terse
-- The whole cycle on a feature without adjustments: refused, cleared, deleted.
INSERT INTO features (code, name, default_limit) VALUES ('reports', 'Reports', 1);
UPDATE user_subscriptions SET custom_quotas = coalesce(custom_quotas, '{}') || '{"reports": 3}'
 WHERE user_id IN (1102, 1103);
\set VERBOSITY default
DELETE FROM features WHERE code = 'reports';
\set VERBOSITY terse
SELECT code FROM features WHERE code = 'reports';
UPDATE quota.user_subscriptions SET custom_quotas = custom_quotas - 'reports' WHERE custom_quotas ? 'reports';
DELETE FROM features WHERE code = 'reports';
-- adjust_quota of another feature for those users works.
SELECT old_value, new_value FROM adjust_quota(1102, 'articles_per_month', 40, 'bonus', 'sales');

-- =============================================================================================
-- One statement for any number of users: 1,000 users on one plan, its storage row changed.
-- The trigger function runs once, holds no loop over users (its one loop goes over the places
-- of the users: on one server quota's tables, once; on a Citus node the shards it holds), and
-- calls get_user_storage_quota once per user; the listening session receives one
-- quota_updated and one storage_quota_changed per user (counted by a psql that listens, below).
INSERT INTO subscription_plans (id, plan_code, plan_name) VALUES (3, 'bulk', 'Bulk');
INSERT INTO plan_features (plan_id, feature_code, feature_value) VALUES (3, 'storage_space', 10);
UNLISTEN *;
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT 200000 + g, 3, now() - interval '1 day', now() + interval '30 days'
  FROM generate_series(1, 1000) AS g;
SELECT regexp_replace(prosrc, 'FOREACH here SLICE 1 IN ARRAY places LOOP|END LOOP', '', 'g')
           !~* '\m(loop|for|while)\M' AS no_loop_over_users
  FROM pg_proc WHERE oid = 'quota.plan_features_changed'::regproc;
SET track_functions = 'all';
BEGIN;
UPDATE plan_features SET feature_value = 20 WHERE plan_id = 3;
SELECT funcname, calls FROM pg_stat_xact_user_functions
 WHERE funcname IN ('plan_features_changed', 'get_user_storage_quota') ORDER BY funcname;
COMMIT;
RESET track_functions;
SELECT count(*) AS users_at_20_mb FROM user_storage_usage
 WHERE user_id > 200000 AND storage_quota_bytes = 20 * 1048576;
\! (echo 'LISTEN quota_updated; LISTEN storage_quota_changed;'; echo "UPDATE quota.plan_features SET feature_value = 30 WHERE plan_id = 3;") | psql -X -q -d catalog_changes 2>&1 | sed -E 's/ with payload .*//' | sort | uniq -c

-- =============================================================================================
-- The attached application's plan_features (the seed's schema in public).
\i tests/fixtures/seed_app.sql
\i tests/fixtures/seed_app_timestamptz.sql
SELECT fix FROM quota.attach_problems('public') WHERE fix IS NOT NULL ORDER BY problem \gexec
SELECT quota.attach('public');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.plan_features'::regclass
   AND tgname LIKE 'pg_entitlements%' ORDER BY tgname;
LISTEN quota_updated;
LISTEN storage_quota_changed;
-- Seed user 2 is on professional (1024 MB); user 1 on free has a storage row, 3 on enterprise
-- has none (created by no catalog change).
UPDATE public.plan_features SET feature_value = 2048
 WHERE plan_id = 2 AND feature_code = 'storage_space';
SELECT user_id, quota.get_user_storage_quota(user_id), storage_quota_bytes
  FROM public.user_storage_usage ORDER BY user_id;
-- quota's own plan_features decides nothing while attached: no event.
UPDATE quota.plan_features SET feature_value = 999 WHERE plan_id = 1 AND feature_code = 'storage_space';
-- A rename rewrites the keys of the application's subscriptions as well (user 1's
-- articles_per_month: 6, user 3's keyword_distillation: 500).
UPDATE quota.features SET code = 'keywords' WHERE code = 'keyword_distillation';
SELECT user_id, custom_quotas FROM public.user_subscriptions ORDER BY user_id;
SELECT user_id, feature_code, old_value, new_value, reason FROM quota.quota_adjustments
 WHERE reason = 'feature renamed' ORDER BY user_id, subscription_id;
-- A delete is refused while the application's subscriptions override the feature.
INSERT INTO quota.features (code, name, default_limit) VALUES ('reports', 'Reports', 1);
UPDATE public.user_subscriptions SET custom_quotas = '{"reports": 2}' WHERE user_id = 2;
\set VERBOSITY default
DELETE FROM quota.features WHERE code = 'reports';
\set VERBOSITY terse
SELECT quota.detach();
SELECT count(*) AS triggers_left FROM pg_trigger
 WHERE tgrelid = 'public.plan_features'::regclass AND tgname LIKE 'pg_entitlements%';

\c pge_regress
SET client_min_messages = warning;
DROP DATABASE catalog_changes;
