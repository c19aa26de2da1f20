-- Roles and privileges: what an app server, an admin tool, a report and anybody else may do.
SET TimeZone = 'UTC';

-- The three roles the extension creates.
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'quota\_%' ORDER BY rolname;

-- What PUBLIC may execute: only functions that do not write (plus trigger functions, which
-- cannot be called directly). Every writer is SECURITY DEFINER with a pinned search_path.
SELECT p.proname, p.provolatile, p.prosecdef,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_can_execute,
       p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'quota'::regnamespace
 ORDER BY p.proname, pg_get_function_identity_arguments(p.oid);

-- Login roles for the three uses, one without any quota role, and a schema the app owns.
CREATE ROLE app_server LOGIN IN ROLE quota_app;
CREATE ROLE admin_tool LOGIN IN ROLE quota_admin;
CREATE ROLE reporter LOGIN IN ROLE quota_reader;
CREATE ROLE stranger LOGIN;
CREATE SCHEMA evil AUTHORIZATION app_server;

INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (501, plan_id('free'), now() - interval '1 day', now() + interval '29 days');

-- The app server checks, consumes, records and refunds ...
SET ROLE app_server;
SELECT * FROM quota.check_user_quota(501, 'articles_per_month');
SELECT * FROM quota.consume(501, 'articles_per_month', 2, 'priv-1');
SELECT quota.record_feature_usage(501, 'articles_per_month', 'article', 1, 1, NULL, 'priv-2');
SELECT refunded_amount, newly_refunded FROM quota.refund_usage(501, 'priv-2');
-- ... but cannot raise its own limits, touch plans or counters, or adjust quotas.
CALL expect_error($$UPDATE quota.user_subscriptions SET custom_quotas = '{"articles_per_month": 1000}' WHERE user_id = 501$$);
CALL expect_error($$INSERT INTO quota.plan_features (plan_id, feature_code, feature_value) VALUES (1, 'articles_per_month', 1)$$);
CALL expect_error($$UPDATE quota.user_usage SET usage_count = 0 WHERE user_id = 501$$);
CALL expect_error($$DELETE FROM quota.usage_records WHERE user_id = 501$$);
CALL expect_error($$SELECT quota.adjust_quota(501, 'articles_per_month', 1000, 'self-service')$$);
-- row_is_current() (which the writers ask about the subscription row they read) reads a row
-- version of a table its caller may read, and of no other.
SELECT quota.row_is_current('quota.user_subscriptions'::regclass, ctid) AS current
  FROM quota.user_subscriptions WHERE user_id = 501;
CALL expect_error($$SELECT quota.row_is_current('quota.quota_adjustments'::regclass, '(0,1)')$$);
-- A relation without rows of its own (a view) and a row version beyond the table: not current.
SELECT quota.row_is_current('pg_catalog.pg_roles'::regclass, '(0,1)') AS view_row,
       quota.row_is_current('quota.user_subscriptions'::regclass, '(999999,1)') AS beyond;

-- A hostile search_path with hostile objects in a schema the caller owns: an operator + that
-- always answers 0, a now() from the far future and a look-alike user_usage table. The
-- SECURITY DEFINER writers run with search_path = pg_catalog, pg_temp and qualified names, so
-- the use is counted exactly as before.
CREATE FUNCTION evil.zero(bigint, integer) RETURNS bigint LANGUAGE sql RETURN 0;
CREATE OPERATOR evil.+ (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = evil.zero);
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql RETURN 'infinity'::timestamptz;
CREATE TABLE evil.user_usage (user_id bigint, usage_count bigint);
SET search_path = evil, pg_catalog, quota;
SELECT * FROM quota.consume(501, 'articles_per_month', 3, 'priv-3');
SELECT * FROM quota.check_user_quota(501, 'articles_per_month');
SELECT count(*) AS hostile_rows FROM evil.user_usage;
RESET search_path;
RESET ROLE;

-- The admin tool adjusts quotas (audited under its own name) and manages subscriptions; the
-- storage trigger then writes user_storage_usage with the admin's rights.
SET ROLE admin_tool;
SELECT * FROM quota.adjust_quota(501, 'articles_per_month', 20, 'upgrade promised by sales');
UPDATE quota.user_subscriptions SET custom_quotas = custom_quotas || '{"storage_space": 300}'
 WHERE user_id = 501;
SELECT storage_quota_bytes FROM quota.user_storage_usage WHERE user_id = 501;
CALL expect_error($$SELECT * FROM quota.consume(501, 'articles_per_month')$$);
RESET ROLE;
SELECT feature_code, old_value, new_value, reason, actor
  FROM quota.quota_adjustments WHERE user_id = 501;

-- Reporting reads every table and writes nothing.
SET ROLE reporter;
SELECT count(*) AS usage_records FROM quota.usage_records WHERE user_id = 501;
SELECT count(*) AS ledger_mismatches FROM quota.verify_ledger(501);
CALL expect_error($$SELECT quota.record_feature_usage(501, 'articles_per_month')$$);
CALL expect_error($$UPDATE quota.features SET default_limit = 1$$);
RESET ROLE;

-- Anybody else cannot even reach the schema.
SET ROLE stranger;
CALL expect_error($$SELECT * FROM quota.check_user_quota(501, 'articles_per_month')$$);
CALL expect_error($$SELECT * FROM quota.consume(501, 'articles_per_month')$$);
RESET ROLE;

DROP SCHEMA evil CASCADE;
DROP ROLE app_server, admin_tool, reporter, stranger;
