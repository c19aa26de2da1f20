-- The threat model (README, "Roles and privileges", "Threat model"): every line, run as the
-- role it names, with login roles that are members of the extension's roles. The escalation it
-- guards against: a SECURITY DEFINER writer (owned by the superuser who ran CREATE EXTENSION)
-- that could be made to run code someone else wrote would run it as a superuser. Every piece of
-- hostile code below tries `ALTER ROLE <itself> SUPERUSER` and notes who ran it; the file ends
-- by showing that no role became a superuser.
SET TimeZone = 'UTC';

CREATE ROLE tm_app LOGIN IN ROLE quota_app;          -- an app server
CREATE ROLE tm_admin LOGIN IN ROLE quota_admin;      -- an admin tool
CREATE ROLE tm_reader LOGIN IN ROLE quota_reader;    -- reporting
CREATE ROLE tm_stranger LOGIN;                       -- no grant at all
CREATE ROLE tm_app_owner LOGIN;                      -- owns the application's tables
CREATE ROLE tm_db_owner LOGIN;                       -- owns the database
CREATE DATABASE threat_model OWNER tm_db_owner;
\c threat_model
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

-- 00_setup's helper, in this database: the SQLSTATE and message of a statement's error, with
-- the number of a temporary schema (which depends on the backend) masked.
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
    message := regexp_replace(message, 'pg_temp_[0-9]+', 'pg_temp_N', 'g');
    IF hint <> '' THEN
        RAISE NOTICE '%: %', code, message USING HINT = hint;
    ELSE
        RAISE NOTICE '%: %', code, message;
    END IF;
END
$$;

-- The hostile code's log: who ran it (current_user, and the session's login role) and what
-- became of its attempt to make its author a superuser. Anybody may write it.
CREATE TABLE public.who_ran (what text, current_role_name text, session_role text, escalation text);
GRANT INSERT, SELECT ON public.who_ran TO PUBLIC;
CREATE FUNCTION public.note_who(what text, author name) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    outcome text;
BEGIN
    BEGIN
        EXECUTE format('ALTER ROLE %I SUPERUSER', author);
        outcome := 'became superuser';
    EXCEPTION WHEN OTHERS THEN
        outcome := 'refused: ' || SQLSTATE;
    END;
    INSERT INTO public.who_ran VALUES (what, current_user, session_user, outcome);
    RETURN current_user;
END
$$;

-- The application's schema (tests/fixtures/seed_app.sql), created by its own owner in public,
-- where the database owner let it create objects.
GRANT CREATE ON SCHEMA public TO tm_app_owner;
SET ROLE tm_app_owner;
\i tests/fixtures/seed_app.sql
\i tests/fixtures/seed_app_timestamptz.sql
-- A function named like pg_entitlements' with the application's argument types.
CREATE FUNCTION public.check_user_quota(integer, varchar)
    RETURNS TABLE (has_quota boolean, current_usage integer, quota_limit integer,
                   remaining integer, percentage numeric)
    LANGUAGE sql AS $$ SELECT true, 0, 1000000, 1000000, 0.00 $$;
RESET ROLE;

CREATE EXTENSION pg_entitlements;

--------------------------------------------------------------------------------------------
-- Nobody but a superuser attaches: not quota_admin, not quota_app, not the owner of the
-- application's tables, not the database owner (EXECUTE is revoked from PUBLIC) ...
SET ROLE tm_admin;
CALL expect_error($$SELECT quota.attach('public')$$);
CALL expect_error($$SELECT quota.detach()$$);
SET ROLE tm_app;
CALL expect_error($$SELECT quota.attach('public')$$);
SET ROLE tm_app_owner;
CALL expect_error($$SELECT quota.attach('public')$$);
SET ROLE tm_db_owner;
CALL expect_error($$SELECT quota.attach('public')$$);
RESET ROLE;
-- ... not even a role EXECUTE was granted to by mistake.
GRANT EXECUTE ON FUNCTION quota.attach(name, text, boolean), quota.detach() TO tm_admin;
SET ROLE tm_admin;
CALL expect_error($$SELECT quota.attach('public')$$);
CALL expect_error($$SELECT quota.detach()$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION quota.attach(name, text, boolean), quota.detach() FROM tm_admin;

-- A temporary schema is never a binding, not even from a superuser: it belongs to one session,
-- and any role with TEMP can make one with look-alike tables.
CREATE TEMP TABLE user_subscriptions (LIKE public.user_subscriptions);
CALL expect_error($$SELECT quota.attach(pg_my_temp_schema()::regnamespace::name)$$);
SELECT regexp_replace(problem, 'pg_temp_[0-9]+', 'pg_temp_N') AS problem, fix
  FROM quota.attach_problems(pg_my_temp_schema()::regnamespace::name);
CALL expect_error($$SELECT quota.attach('pg_temp')$$);
SELECT problem FROM quota.attach_problems('pg_temp');
DROP TABLE pg_temp.user_subscriptions;

-- A superuser attaches the application's schema: the NOTICEs name the application's trigger
-- (which will run with its owner's rights), the function named like ours, and what the owner
-- is granted for the writers, which run as the owner.
SELECT fix FROM quota.attach_problems('public') WHERE fix IS NOT NULL ORDER BY problem \gexec
CREATE INDEX ON public.user_subscriptions (user_id);
-- The DBA had let the owner read the feature catalog already: attach() grants the rest.
GRANT SELECT ON quota.features TO tm_app_owner;
SELECT quota.attach('public');
SELECT attached_schema, attached_owner, attached_grants FROM quota.settings;
-- detach() revokes exactly what attach() granted, and what the owner held before stays; the
-- DBA attaches again.
SELECT quota.detach();
SELECT has_schema_privilege('tm_app_owner', 'quota', 'USAGE') AS usage_on_quota,
       has_table_privilege('tm_app_owner', 'quota.settings', 'SELECT') AS select_on_settings,
       has_table_privilege('tm_app_owner', 'quota.features', 'SELECT') AS select_on_features,
       has_column_privilege('tm_app_owner', 'quota.quota_adjustments', 'reason', 'INSERT')
           AS insert_on_audit;
SELECT quota.attach('public');
-- The app server reads the application's tables with its own rights.
SET ROLE tm_app_owner;
GRANT SELECT ON public.user_subscriptions, public.subscription_plans, public.plan_features,
                public.user_usage, public.usage_records, public.user_storage_usage
   TO quota_app, quota_admin, quota_reader;
RESET ROLE;

--------------------------------------------------------------------------------------------
-- quota_admin manages the time zone of quota.settings ...
SET ROLE tm_admin;
INSERT INTO quota.settings (time_zone) VALUES ('UTC')
ON CONFLICT (singleton) DO UPDATE SET time_zone = EXCLUDED.time_zone;
-- ... but cannot change the binding, in any way, nor remove the row that holds it.
CALL expect_error($$UPDATE quota.settings SET attached_schema = 'public'$$);
CALL expect_error($$UPDATE quota.settings SET attached_owner = 'tm_admin', attached_grants = '{}'$$);
CALL expect_error($$INSERT INTO quota.settings (time_zone) VALUES ('UTC')
                    ON CONFLICT (singleton) DO UPDATE SET attached_schema = 'public'$$);
CALL expect_error($$DELETE FROM quota.settings$$);
CALL expect_error($$TRUNCATE quota.settings$$);

-- The escalation this file is about: a quota_admin member builds look-alike tables in its own
-- temporary schema, with a trigger that would make it a superuser if it ran as one, points the
-- binding at them and calls the SECURITY DEFINER writer adjust_quota.
CREATE FUNCTION pg_temp.escalate() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.note_who('look-alike trigger in a temporary schema', 'tm_admin');
    RETURN NEW;
END
$$;
CREATE TEMP TABLE user_subscriptions (LIKE public.user_subscriptions);
CREATE TEMP TABLE subscription_plans (LIKE public.subscription_plans);
CREATE TEMP TABLE plan_features (LIKE public.plan_features);
CREATE TEMP TABLE user_usage (LIKE public.user_usage);
CREATE TEMP TABLE usage_records (LIKE public.usage_records);
CREATE TEMP TABLE user_storage_usage (LIKE public.user_storage_usage);
CREATE TRIGGER escalate BEFORE INSERT OR UPDATE ON pg_temp.user_subscriptions
    FOR EACH ROW EXECUTE FUNCTION pg_temp.escalate();
INSERT INTO pg_temp.user_subscriptions SELECT * FROM public.user_subscriptions;
CALL expect_error($$UPDATE quota.settings SET attached_schema = pg_my_temp_schema()::regnamespace::name$$);
CALL expect_error($$INSERT INTO quota.settings (attached_schema) VALUES (pg_my_temp_schema()::regnamespace::name)
                    ON CONFLICT (singleton) DO UPDATE SET attached_schema = EXCLUDED.attached_schema$$);
CALL expect_error($$SELECT quota.attach(pg_my_temp_schema()::regnamespace::name)$$);
-- The writer writes the attached application's table, never the look-alike.
SELECT * FROM quota.adjust_quota(2, 'articles_per_month', 150, 'agency deal', 'sales');
SELECT what, current_role_name, escalation FROM public.who_ran
 WHERE what = 'look-alike trigger in a temporary schema' AND current_role_name <> 'tm_admin';
SELECT count(*) AS lookalike_changed FROM pg_temp.user_subscriptions WHERE custom_quotas IS NOT NULL
   AND user_id = 2;
DROP TABLE pg_temp.user_subscriptions, pg_temp.subscription_plans, pg_temp.plan_features,
           pg_temp.user_usage, pg_temp.usage_records, pg_temp.user_storage_usage;
-- quota_admin cannot change the extension's objects either.
CALL expect_error($$CREATE TRIGGER t BEFORE INSERT ON quota.user_subscriptions
                    FOR EACH ROW EXECUTE FUNCTION quota.validate_custom_quotas()$$);
CALL expect_error($$ALTER FUNCTION quota.adjust_quota(bigint, text, bigint, text, text) RESET search_path$$);
CALL expect_error($$CREATE TABLE quota.user_usage_2 (id int)$$);
RESET ROLE;

-- The audit records who really acted: actor is what the caller says, session_role the login
-- role of its session (SET ROLE keeps the session's login role, so the admin tool logs in here).
SET SESSION AUTHORIZATION tm_admin;
SELECT * FROM quota.adjust_quota(2, 'articles_per_month', 160, 'who am I', 'the CEO');
RESET SESSION AUTHORIZATION;
SELECT feature_code, new_value, actor, session_role FROM quota.quota_adjustments ORDER BY id;

--------------------------------------------------------------------------------------------
-- quota_app consumes, records and refunds, and changes nothing else: no limit, no counter, no
-- plan, no ledger row, no setting.
SET ROLE tm_app;
SELECT * FROM quota.consume(2, 'articles_per_month', 1, 'tm-1');
SELECT quota.record_feature_usage(2, 'articles_per_month', 'article', 1, 1, NULL, 'tm-2');
SELECT refunded_amount, newly_refunded FROM quota.refund_usage(2, 'tm-2');
CALL expect_error($$UPDATE public.user_subscriptions SET custom_quotas = '{"articles_per_month": 1000}' WHERE user_id = 2$$);
CALL expect_error($$UPDATE quota.user_subscriptions SET custom_quotas = '{"articles_per_month": 1000}'$$);
CALL expect_error($$UPDATE public.user_usage SET usage_count = 0$$);
CALL expect_error($$INSERT INTO public.plan_features (plan_id, feature_code, feature_value) VALUES (2, 'articles_per_month', 1)$$);
CALL expect_error($$DELETE FROM public.usage_records$$);
CALL expect_error($$SELECT quota.adjust_quota(2, 'articles_per_month', 1000, 'self-service')$$);
CALL expect_error($$UPDATE quota.settings SET time_zone = 'UTC'$$);

-- A hostile search_path changes nothing in a writer: operators = and + and a now() in a schema
-- of the caller's, ahead of pg_catalog, that note who ran them. A reading function (SECURITY
-- INVOKER, its statements prepared under this search_path) may run them as the caller itself;
-- the writers, which reuse statements prepared once per backend, never run them.
RESET ROLE;
CREATE SCHEMA tm_evil AUTHORIZATION tm_app;
SET ROLE tm_app;
CREATE FUNCTION tm_evil.eq(text, text) RETURNS boolean
    LANGUAGE sql RETURN public.note_who('operator =', 'tm_app') IS NOT NULL;
CREATE FUNCTION tm_evil.eq(integer, bigint) RETURNS boolean
    LANGUAGE sql RETURN public.note_who('operator =', 'tm_app') IS NOT NULL;
CREATE FUNCTION tm_evil.plus(integer, integer) RETURNS integer
    LANGUAGE sql RETURN length(public.note_who('operator +', 'tm_app'));
CREATE OPERATOR tm_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = tm_evil.eq);
CREATE OPERATOR tm_evil.= (LEFTARG = integer, RIGHTARG = bigint, FUNCTION = tm_evil.eq);
CREATE OPERATOR tm_evil.+ (LEFTARG = integer, RIGHTARG = integer, FUNCTION = tm_evil.plus);
CREATE FUNCTION tm_evil.now() RETURNS timestamptz
    LANGUAGE sql RETURN CASE WHEN public.note_who('now()', 'tm_app') IS NOT NULL THEN 'infinity'::timestamptz END;
SET search_path = tm_evil, pg_catalog, quota, public;
SET pg_entitlements.direct_reads = off;
SELECT has_quota, current_usage, quota_limit FROM quota.check_user_quota(2, 'articles_per_month') \g /dev/null
SELECT * FROM quota.consume(2, 'articles_per_month', 2, 'tm-3');
SELECT quota.record_feature_usage(2, 'articles_per_month', 'article', 2, 1, NULL, 'tm-4');
RESET pg_entitlements.direct_reads;
RESET search_path;
RESET ROLE;
SELECT u.usage_count FROM public.user_usage u WHERE u.user_id = 2;
SELECT count(*) AS hostile_code_run_by_another_role FROM public.who_ran
 WHERE what IN ('operator =', 'operator +', 'now()') AND current_role_name <> 'tm_app';

-- A function named like ours in the application's schema (attach's NOTICE named it) catches
-- the application's unqualified calls with exactly its argument types, and nothing else: the
-- writers and quota's own functions answer as before.
SET ROLE tm_app;
SET search_path = quota, public;
SELECT quota_limit FROM check_user_quota(2::integer, 'articles_per_month'::varchar);
SELECT quota_limit FROM quota.check_user_quota(2, 'articles_per_month');
SELECT allowed, quota_limit FROM consume(2, 'articles_per_month', 1, 'tm-5');
RESET search_path;
RESET ROLE;

--------------------------------------------------------------------------------------------
-- quota_reader reads every table of schema quota and writes nothing.
SET ROLE tm_reader;
SELECT count(*) > 0 AS reads_the_audit FROM quota.quota_adjustments;
CALL expect_error($$SELECT quota.record_feature_usage(2, 'articles_per_month')$$);
CALL expect_error($$SELECT * FROM quota.adjust_quota(2, 'articles_per_month', 1, 'report')$$);
CALL expect_error($$UPDATE quota.features SET default_limit = 1$$);
CALL expect_error($$UPDATE quota.settings SET time_zone = 'UTC'$$);
RESET ROLE;

-- Only the catalog's administrators take Citus' placement locks (through the catalog triggers).
SET ROLE tm_app;
CALL expect_error($$SELECT * FROM quota.local_shards(ARRAY['features'])$$);
RESET ROLE;
SET ROLE tm_admin;
SELECT count(*) AS shards_on_one_server FROM quota.local_shards(ARRAY['features']);
RESET ROLE;

-- A role without grants reaches nothing of schema quota.
SET ROLE tm_stranger;
CALL expect_error($$SELECT * FROM quota.check_user_quota(2, 'articles_per_month')$$);
CALL expect_error($$SELECT * FROM quota.consume(2, 'articles_per_month')$$);
CALL expect_error($$SELECT * FROM quota.settings$$);
RESET ROLE;

-- The database owner is no superuser of the extension: it cannot drop it, change its functions
-- or write its tables; what it creates in its database changes nothing in a writer.
SET ROLE tm_db_owner;
CALL expect_error($$DROP EXTENSION pg_entitlements$$);
CALL expect_error($$ALTER FUNCTION quota.consume(bigint, text, integer, text, text, bigint, jsonb) SECURITY INVOKER$$);
CALL expect_error($$UPDATE quota.settings SET attached_schema = NULL$$);
CALL expect_error($$DROP SCHEMA quota CASCADE$$);
RESET ROLE;

--------------------------------------------------------------------------------------------
-- The owner of the attached tables: its own code on them runs with its own rights in every
-- writer's statement, never with the extension owner's. It adds a trigger on the counters, a
-- default on the ledger and then a rule diverting the ledger; an app server consumes.
SET ROLE tm_app_owner;
CALL expect_error($$UPDATE quota.settings SET attached_schema = NULL$$);
CREATE FUNCTION public.note_trigger() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.note_who('trigger on user_usage', 'tm_app_owner');
    RETURN NEW;
END
$$;
CREATE TRIGGER note_counter AFTER INSERT OR UPDATE ON public.user_usage
    FOR EACH ROW EXECUTE FUNCTION public.note_trigger();
ALTER TABLE public.usage_records ADD COLUMN noted_by text;
ALTER TABLE public.usage_records
    ALTER COLUMN noted_by SET DEFAULT public.note_who('default on usage_records', 'tm_app_owner');
RESET ROLE;
SET ROLE tm_app;
SELECT allowed, current_usage FROM quota.consume(2, 'articles_per_month', 1, 'tm-6');
RESET ROLE;
SET ROLE tm_app_owner;
CREATE TABLE public.diverted (who text);
CREATE RULE divert AS ON INSERT TO public.usage_records
    DO INSTEAD INSERT INTO public.diverted VALUES (public.note_who('rule on usage_records', 'tm_app_owner'));
RESET ROLE;
SET ROLE tm_app;
SELECT allowed, current_usage FROM quota.consume(2, 'articles_per_month', 1, 'tm-7');
RESET ROLE;
SET ROLE tm_app_owner;
DROP RULE divert ON public.usage_records;
RESET ROLE;
SELECT DISTINCT what, current_role_name, escalation FROM public.who_ran
 WHERE what IN ('trigger on user_usage', 'default on usage_records', 'rule on usage_records')
 ORDER BY what;

SELECT quota.detach();

-- Nobody became a superuser.
\c pge_regress
SELECT rolname, rolsuper FROM pg_roles
 WHERE rolname IN ('quota_app', 'quota_admin', 'quota_reader', 'tm_app', 'tm_admin', 'tm_reader',
                   'tm_stranger', 'tm_app_owner', 'tm_db_owner')
 ORDER BY rolname;
DROP DATABASE threat_model;
DROP ROLE tm_app, tm_admin, tm_reader, tm_stranger, tm_app_owner, tm_db_owner;
