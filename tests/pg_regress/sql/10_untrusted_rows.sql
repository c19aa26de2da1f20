-- 10_untrusted_rows: rows the extension did not write, errors people read, and data that one
-- command must not lose.
--
-- An application's tables attached with quota.attach() hold whatever the application wrote
-- before: its columns have no CHECK, and some are nullable. Each reading function answers such
-- rows exactly as its statements would, through the backend copy and index reads
-- (direct_reads on) or through statements (off): the same answer or the same error, never a
-- crash or an internal error. The server of this suite runs with RUST_BACKTRACE=1
-- (scripts/cluster.sh), so a Rust backtrace in any DETAIL would show in this file.
CREATE DATABASE untrusted;
\c untrusted
SET TimeZone = 'UTC';
SET client_min_messages = warning;
\i tests/fixtures/seed_app.sql
\i tests/fixtures/seed_app_timestamptz.sql
CREATE EXTENSION pg_entitlements;

-- Rows the application wrote before attaching: a custom_quotas that is an array (it crashed
-- the backend once: the index read took every jsonb for an object), a subscription without a
-- start date, one without a plan, and one whose custom value is not a number.
ALTER TABLE public.user_subscriptions ALTER COLUMN start_date DROP NOT NULL;
INSERT INTO public.users (id, username) VALUES (5, 'e'), (6, 'f'), (7, 'g'), (8, 'h');
INSERT INTO public.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
VALUES (5, 2, now()::timestamp - interval '1 day', now()::timestamp + interval '1 month',
        '["a","xxxxxxxxxxxxarticl","es_per_month"]'),
       (6, 2, NULL, now()::timestamp + interval '1 month', NULL),
       (7, NULL, now()::timestamp - interval '1 day', now()::timestamp + interval '1 month', NULL),
       (8, 2, now()::timestamp - interval '1 day', now()::timestamp + interval '1 month',
        '{"articles_per_month": "abc"}');
-- A usage record from long ago, which no counter holds any more.
INSERT INTO public.usage_records (user_id, feature_code, resource_type, resource_id, amount, created_at)
VALUES (3, 'articles_per_month', 'article', 301, 1, now()::timestamp - interval '3 years');
SELECT fix FROM quota.attach_problems('public') WHERE fix IS NOT NULL ORDER BY problem \gexec
-- attach() names those rows and refuses them unless told that the calls which meet them may fail.
SELECT problem, user_ids FROM quota.attach_problems('public') WHERE bad_rows IS NOT NULL
 ORDER BY problem;
SELECT quota.attach('public', accept_bad_rows => true);
CREATE INDEX ON public.user_subscriptions (user_id);

-- The reads go through the index: the path that met those rows unguarded.
SELECT table_name, read_by FROM quota.read_paths() ORDER BY table_name;

-- Every user, through both paths: the same answer or the same SQLSTATE.
CREATE FUNCTION public.answer(u bigint, direct text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
BEGIN
    PERFORM set_config('pg_entitlements.direct_reads', direct, true);
    SELECT * INTO r FROM quota.check_user_quota(u, 'articles_per_month');
    RETURN r::text;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
SELECT u AS user_id, answer(u, 'on') AS direct, answer(u, 'on') = answer(u, 'off') AS same
  FROM generate_series(1, 8) u ORDER BY u;

-- The same errors from the writers, with their SQLSTATE and no backtrace.
\set VERBOSITY default
SELECT * FROM quota.consume(5, 'articles_per_month');
SELECT * FROM quota.consume(7, 'articles_per_month');
SELECT * FROM quota.adjust_quota(5, 'articles_per_month', 10, 'raise');
SELECT * FROM quota.consume(1, 'articles_per_month', 1, '');
SELECT * FROM quota.consume(1, 'articles_per_month', 1, repeat('k', 6400));
-- The storage trigger refuses a change that leaves the active subscription without a plan.
UPDATE public.user_subscriptions SET plan_id = NULL WHERE user_id = 1;
\set VERBOSITY terse

-- A refund of a record written before attach that no counter holds (it has no period) and a
-- refund after an admin
-- zeroed the counter outside the ledger: each a clear error, nothing written.
SELECT id AS old_record FROM public.usage_records WHERE period_start IS NULL ORDER BY id LIMIT 1 \gset
\set VERBOSITY default
SELECT * FROM quota.refund_usage(:old_record);
SELECT allowed FROM quota.consume(2, 'articles_per_month', 3, 'zeroed-1');
UPDATE public.user_usage SET usage_count = 0 WHERE user_id = 2;
SELECT * FROM quota.refund_usage(2, 'zeroed-1');
SELECT count(*) AS refunds FROM public.usage_records WHERE refund_of IS NOT NULL;
\set VERBOSITY terse

-- A lock timeout while another transaction (a prepared one: it holds its locks without a
-- session, and needs no dblink, which not every server has) holds user 2's counter: the ERROR
-- keeps its SQLSTATE and message and carries nothing more.
BEGIN;
UPDATE public.user_usage SET usage_count = usage_count WHERE user_id = 2;
PREPARE TRANSACTION 'holds user 2';
SET lock_timeout = '50ms';
\set VERBOSITY default
SELECT * FROM quota.consume(2, 'articles_per_month');
\set VERBOSITY terse
RESET lock_timeout;
ROLLBACK PREPARED 'holds user 2';

\c pge_regress
DROP DATABASE untrusted;

-- DROP EXTENSION with data refuses; the hint says how to keep the data and how to go ahead.
CREATE DATABASE drops;
\c drops
CREATE EXTENSION pg_entitlements;
DROP EXTENSION pg_entitlements;
CREATE EXTENSION pg_entitlements;
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('free', 'Free');
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT 1, id, now(), now() + interval '1 month' FROM quota.subscription_plans;
\set VERBOSITY default
DROP EXTENSION pg_entitlements;
DROP EXTENSION pg_entitlements CASCADE;
DROP SCHEMA quota CASCADE;
\set VERBOSITY terse
SELECT count(*) AS subscriptions_kept FROM quota.user_subscriptions;
-- Dropping another extension is not concerned (any the server has: dblink where contrib is
-- installed).
SELECT name AS other_extension FROM pg_available_extensions
 WHERE name NOT IN ('pg_entitlements', 'plpgsql') ORDER BY name <> 'dblink', name LIMIT 1 \gset
CREATE EXTENSION :"other_extension";
DROP EXTENSION :"other_extension";
SET pg_entitlements.allow_drop_with_data = on;
DROP EXTENSION pg_entitlements;
\c pge_regress
DROP DATABASE drops;
