-- An existing database: the seed application's own tables in public, then the extension,
-- then quota.attach('public') so that the application's unchanged SQL gets the right answers.
CREATE DATABASE seed_app;
\c seed_app
SET TimeZone = 'UTC';
SET client_min_messages = notice;
\i tests/fixtures/seed_app.sql

-- A fingerprint of every application table, to prove CREATE EXTENSION touches none of them
-- (a function of this session: no XML functions, which a server may be built without).
CREATE FUNCTION pg_temp.fingerprint(relation regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  md5 text;
BEGIN
  EXECUTE format('SELECT md5(string_agg(t::text, %L ORDER BY t::text)) FROM %s t', ',', relation)
     INTO md5;
  RETURN md5;
END
$$;
CREATE TEMP TABLE fingerprint AS
SELECT c.relname, pg_temp.fingerprint(c.oid) AS md5
  FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r';

CREATE EXTENSION pg_entitlements;

SELECT f.relname, f.md5 = pg_temp.fingerprint(format('public.%I', f.relname)::regclass) AS unchanged
  FROM fingerprint f ORDER BY f.relname;

-- Attaching refuses at first: the application stores local times (timestamp without time
-- zone), and their zone is never guessed.
\set VERBOSITY default
SELECT quota.attach('public');
-- This file checks the answers on timestamptz columns, so it converts the local times itself,
-- naming their zone (a rewrite a DBA may choose in a maintenance window, which attach_problems
-- never proposes; 15_adopt attaches the local times as they are).
\i tests/fixtures/seed_app_timestamptz.sql
-- Attaching still refuses, with every problem and the statement that fixes it: only fixes that
-- add, each with the lock it takes and whether it reads or rewrites the table.
SELECT quota.attach('public');
SELECT problem, fix, fix_lock, fix_scans, fix_rewrites, fix_in_transaction
  FROM quota.attach_problems('public') ORDER BY problem;

-- The DBA runs the fixes (in psql: \gexec) ...
SELECT fix FROM quota.attach_problems('public') WHERE fix IS NOT NULL ORDER BY problem \gexec
SELECT count(*) AS problems_left FROM quota.attach_problems('public');
-- A key on a nullable column may be a full unique index as well; partial on anything but
-- that column being set, it is not one.
BEGIN;
DROP INDEX public.usage_records_user_id_refund_of_idx;
CREATE UNIQUE INDEX ON public.usage_records (user_id, refund_of);
SELECT count(*) AS problems_left FROM quota.attach_problems('public');
DROP INDEX public.usage_records_user_id_refund_of_idx;
CREATE UNIQUE INDEX ON public.usage_records (user_id, refund_of) WHERE amount < 0;
SELECT problem FROM quota.attach_problems('public');
-- A key on a column that is never NULL gets a full index as its fix.
ALTER TABLE public.user_storage_usage DROP CONSTRAINT user_storage_usage_user_id_key;
SELECT problem, fix FROM quota.attach_problems('public') ORDER BY problem;
ROLLBACK;
-- The writers run their statements on the bound tables as the owner of user_subscriptions:
-- every table must be an ordinary table of that owner (a view runs code of its own).
BEGIN;
CREATE ROLE attach_other_owner;
ALTER TABLE public.user_usage OWNER TO attach_other_owner;
ALTER TABLE public.plan_features RENAME TO plan_features_data;
CREATE VIEW public.plan_features AS SELECT * FROM public.plan_features_data;
SELECT problem, fix FROM quota.attach_problems('public') ORDER BY problem;
ROLLBACK;
-- ... and attaches: pg_entitlements' triggers go beside the application's own.
SELECT quota.attach('public');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.user_subscriptions'::regclass
   AND NOT tgisinternal ORDER BY tgname;
-- How the reading functions now reach the application's tables (the plans are copied into
-- each backend, kept current by a trigger attach() put on them).
SELECT table_name, read_by, detail FROM quota.read_paths();
SELECT tgrelid::regclass, tgname, tgenabled FROM pg_trigger
 WHERE tgname = 'pg_entitlements_invalidate_cache' ORDER BY 1;

-- The seed's own calls, unchanged, with quota on the search_path.
SET search_path = quota, public;
PREPARE check_quota (int, varchar) AS SELECT * FROM check_user_quota($1, $2);
PREPARE record_usage AS SELECT record_feature_usage($1::INTEGER, $2::VARCHAR, $3::VARCHAR,
                                                    $4::INTEGER, $5::INTEGER, $6::JSONB);

-- The seed report's scenario on the application's real rows: custom quota 6, used 2.
EXECUTE check_quota(1, 'articles_per_month');
-- The admin raises it to 10 in the application's table: remaining 8 at once.
UPDATE public.user_subscriptions
   SET custom_quotas = jsonb_set(custom_quotas, '{articles_per_month}', '10') WHERE user_id = 1;
EXECUTE check_quota(1, 'articles_per_month');
-- A request for 3 articles is allowed and recorded in the application's tables.
SELECT remaining >= 3 AS allowed FROM check_user_quota(1, 'articles_per_month');
EXECUTE record_usage(1, 'articles_per_month', 'article', 103, 3, '{"batch": 1}');
EXECUTE check_quota(1, 'articles_per_month');
SELECT user_id, feature_code, usage_count FROM public.user_usage ORDER BY user_id, feature_code;
SELECT user_id, resource_id, amount, period_start IS NOT NULL AS in_a_period
  FROM public.usage_records ORDER BY id;

-- Precedence on the application's rows: plan only, unlimited, catalog default (no plan has
-- keyword_distillation), a custom quota for a feature the plan lacks, no subscription.
EXECUTE check_quota(2, 'articles_per_month');
EXECUTE check_quota(3, 'articles_per_month');
EXECUTE check_quota(2, 'keyword_distillation');
EXECUTE check_quota(3, 'keyword_distillation');
EXECUTE check_quota(4, 'articles_per_month');

-- Periods of the application's subscriptions: anniversaries of start_date, in the
-- configured zone.
SELECT s.user_id, p.cycle, p.period_start = s.start_date AS starts_at_subscription_start,
       p.period_end - p.period_start AS length
  FROM public.user_subscriptions s, get_quota_period(s.user_id) p
 WHERE s.user_id IN (1, 2) ORDER BY s.user_id;
-- User 3's enterprise plan bills yearly: 40 days in, still the first period.
SELECT p.cycle, p.period_start = s.start_date AS first_period,
       p.period_end = s.start_date + interval '1 year' AS ends_after_a_year
  FROM public.user_subscriptions s, get_quota_period(s.user_id, 'articles_per_month') p
 WHERE s.user_id = 3;

-- The storage trigger on the application's table: an override reaches user_storage_usage at
-- once, a removed override falls back to the plan, and the row the seed never created appears.
SELECT user_id, storage_quota_bytes FROM public.user_storage_usage ORDER BY user_id;
UPDATE public.user_subscriptions SET custom_quotas = custom_quotas || '{"storage_space": 2048}'
 WHERE user_id = 1;
SELECT get_user_storage_quota(1), storage_quota_bytes FROM public.user_storage_usage WHERE user_id = 1;
UPDATE public.user_subscriptions SET custom_quotas = custom_quotas - 'storage_space' WHERE user_id = 1;
SELECT get_user_storage_quota(1), storage_quota_bytes FROM public.user_storage_usage WHERE user_id = 1;
UPDATE public.user_subscriptions SET plan_id = 2 WHERE user_id = 3;
SELECT user_id, storage_quota_bytes FROM public.user_storage_usage WHERE user_id = 3;
-- Malformed overrides are refused on the application's table too.
\set VERBOSITY terse
UPDATE public.user_subscriptions SET custom_quotas = '{"articles_per_month": "abc"}' WHERE user_id = 2;
\set VERBOSITY default

-- consume, adjust_quota and refunds work on the application's rows.
SELECT * FROM consume(2, 'articles_per_month', 99, 'order-7');
SELECT * FROM consume(2, 'articles_per_month', 2, 'order-8');
SELECT * FROM consume(2, 'articles_per_month', 99, 'order-7');
SELECT * FROM adjust_quota(2, 'articles_per_month', 150, 'agency deal', 'sales');
SELECT refunded_amount, newly_refunded FROM refund_usage(2, 'order-7');
EXECUTE check_quota(2, 'articles_per_month');
SELECT subscription_id, feature_code, old_value, new_value, actor FROM quota.quota_adjustments;
-- The ledger holds, for what was recorded since attaching and for user 1's 2 articles from
-- before: attach() gave their records the period of the counter that holds them.
SELECT user_id, feature_code, counter, ledger FROM verify_ledger();
SELECT resource_id, period_start IS NOT NULL AS in_a_period FROM public.usage_records
 WHERE resource_id IN (101, 102) ORDER BY resource_id;

-- Detaching goes back to the extension's own (empty) tables and removes the triggers.
SELECT quota.detach();
SELECT * FROM quota.check_user_quota(1, 'articles_per_month');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.user_subscriptions'::regclass
   AND NOT tgisinternal ORDER BY tgname;

\c pge_regress
DROP DATABASE seed_app;
