-- 15_adopt: adopting pg_entitlements in a database in use (issue 15). The seed application's
-- schema as it is (tests/fixtures/seed_app.sql: serial ids, varchar codes, timestamp without
-- time zone), its local times written in Asia/Shanghai, and rows of its own that the functions
-- cannot rely on. attach_problems() proposes only fixes that add, each with the lock it takes,
-- and they neither rewrite nor (but the unique indexes) read a table; the bad rows come with
-- their ids and a query that shows them; attach() asks for the zone of the local times and for
-- the DBA's word about the bad rows; detach() leaves the application's tables, rows, triggers,
-- rules and functions exactly as they were before the fixes, apart from the columns and
-- indexes the fixes added, and the application's own statements work throughout.
CREATE DATABASE adopt;
\c adopt
SET client_min_messages = notice;
\set VERBOSITY default
\set SHOW_CONTEXT never
-- The application's sessions run in Shanghai time: its timestamp columns hold Shanghai times.
SET TimeZone = 'Asia/Shanghai';
\set ECHO none
\i tests/fixtures/seed_app.sql
\set ECHO all

-- Rows the application wrote that the functions cannot rely on: a custom_quotas that is an
-- array, one with a string for a number and a key that is no feature, a subscription without a
-- start (this application lets start_date be NULL), a user with two overlapping active
-- subscriptions, a counter whose period ends before it starts and a record without an amount.
ALTER TABLE public.user_subscriptions ALTER COLUMN start_date DROP NOT NULL;
INSERT INTO public.users (id, username)
VALUES (5, 'array'), (6, 'no start'), (7, 'twice'), (8, 'strings');
INSERT INTO public.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
VALUES (5, 2, localtimestamp(0) - interval '1 day', localtimestamp(0) + interval '1 month',
        '["articles_per_month"]'),
       (6, 2, NULL, localtimestamp(0) + interval '1 month', NULL),
       (7, 1, localtimestamp(0) - interval '5 days', localtimestamp(0) + interval '25 days', NULL),
       (7, 2, localtimestamp(0) - interval '1 day', localtimestamp(0) + interval '1 month', NULL),
       (8, 2, localtimestamp(0) - interval '1 day', localtimestamp(0) + interval '1 month',
        '{"articles_per_month": "10", "articles_per_week": 3}');
INSERT INTO public.user_usage (user_id, feature_code, usage_count, period_start, period_end)
VALUES (7, 'articles_per_month', 1, localtimestamp(0), localtimestamp(0) - interval '1 month');
INSERT INTO public.usage_records (user_id, feature_code, resource_type, resource_id, amount)
VALUES (7, 'articles_per_month', 'article', 701, NULL);
-- A rule of the application's: its usage records are never deleted.
CREATE RULE usage_records_kept AS ON DELETE TO public.usage_records DO INSTEAD NOTHING;

-- What the application has before anything is done for pg_entitlements: its tables (owner,
-- privileges), columns, indexes, constraints, triggers, rules and functions, and a checksum of
-- each table's rows over the columns it has now.
CREATE FUNCTION pg_temp.catalog() RETURNS TABLE (kind text, object text, detail text)
LANGUAGE sql AS $$
    SELECT 'relation', c.oid::regclass::text,
           concat_ws(' ', c.relkind::text, pg_get_userbyid(c.relowner), c.relacl::text)
      FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S', 'v')
    UNION ALL
    SELECT 'column', format('%s.%I', a.attrelid::regclass, a.attname),
           concat_ws(' ', format_type(a.atttypid, a.atttypmod),
                     CASE WHEN a.attnotnull THEN 'NOT NULL' END,
                     'DEFAULT ' || pg_get_expr(d.adbin, d.adrelid),
                     nullif(a.attidentity::text, ''), nullif(a.attgenerated::text, ''))
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
       AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'index', i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
     WHERE c.relnamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'constraint', format('%s.%I', k.conrelid::regclass, k.conname), pg_get_constraintdef(k.oid)
      FROM pg_constraint k WHERE k.connamespace = 'public'::regnamespace
       AND k.contype <> 'n' -- NOT NULL is in the column's line (18 keeps it as a constraint too)
    UNION ALL
    SELECT 'trigger', format('%s.%I', t.tgrelid::regclass, t.tgname),
           pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'rule', format('%s.%I', r.ev_class::regclass, r.rulename), pg_get_ruledef(r.oid)
      FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
     WHERE c.relnamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'function', p.oid::regprocedure::text,
           md5(pg_get_functiondef(p.oid)) || ' ' || pg_get_userbyid(p.proowner)
           || ' ' || coalesce(p.proacl::text, 'default')
      FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
$$;
-- A table's rows over the given columns, in one text: a count and an md5.
CREATE FUNCTION pg_temp.rows_digest(rel regclass, cols text[]) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    digest text;
BEGIN
    EXECUTE format('SELECT count(*) || '' '' || md5(coalesce(string_agg(r::text, '','' ORDER BY r::text), ''''))
                      FROM (SELECT %s FROM %s) r',
                   (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cols) c), rel)
       INTO digest;
    RETURN digest;
END
$$;
CREATE TEMP TABLE before AS SELECT * FROM pg_temp.catalog();
CREATE TEMP TABLE before_rows AS
SELECT c.oid::regclass AS rel,
       array_agg(a.attname::text ORDER BY a.attnum) AS cols
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
 GROUP BY c.oid;
ALTER TABLE before_rows ADD COLUMN digest text;
UPDATE before_rows SET digest = pg_temp.rows_digest(rel, cols);
CREATE TEMP TABLE before_files AS
SELECT c.oid::regclass AS rel, pg_relation_filenode(c.oid) AS filenode
  FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r';

CREATE EXTENSION pg_entitlements;

-- attach() refuses at once: the application stores local times, and a zone is never guessed.
SELECT quota.attach('public');
SELECT quota.attach('public', local_time_zone => 'Shanghai');

-- attach_problems() without the zone says the same of each local-time column, with no fix:
-- converting one to timestamptz would rewrite the table and guess the zone.
SELECT problem, note FROM quota.attach_problems('public')
 WHERE problem LIKE '%timestamp without time zone%' ORDER BY problem;
-- With the zone, the fixes: columns added in the catalog only (ACCESS EXCLUSIVE for a moment),
-- and unique indexes built CONCURRENTLY (SHARE UPDATE EXCLUSIVE: reads and writes go on), which
-- read the table but cannot run in a transaction block. Nothing rewrites a table.
SELECT problem, fix, fix_lock, fix_scans, fix_rewrites, fix_in_transaction
  FROM quota.attach_problems('public', local_time_zone => 'Asia/Shanghai')
 WHERE bad_rows IS NULL ORDER BY problem;
SELECT fix_lock, fix_scans, fix_rewrites, fix_in_transaction, note
  FROM quota.attach_problems('public', local_time_zone => 'Asia/Shanghai')
 WHERE fix LIKE 'CREATE UNIQUE INDEX%' LIMIT 1;
-- The rows the functions cannot rely on: user and row ids, and the query that shows them.
SELECT problem, user_ids, row_ids FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE bad_rows IS NOT NULL ORDER BY problem;
SELECT note FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE problem LIKE '%overlaps%';
SELECT show_rows FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE problem LIKE '%overlaps%' \gset
SELECT id, user_id, plan_id FROM (:show_rows) s ORDER BY id;

-- The DBA runs the fixes that may share a transaction in one, which reads no table (the
-- statistics of this transaction count no scan of the application's tables), then each
-- CONCURRENTLY one on its own.
CREATE TEMP TABLE fixes AS
SELECT problem, fix, fix_in_transaction FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE fix IS NOT NULL;
BEGIN;
SET LOCAL lock_timeout = '5s';
-- (The counts of this transaction start with what earlier ones have not reported yet.)
CREATE TEMP TABLE scans ON COMMIT DROP AS
SELECT relid, seq_scan FROM pg_stat_xact_user_tables WHERE schemaname = 'public';
SELECT fix FROM fixes WHERE fix_in_transaction ORDER BY problem \gexec
SELECT coalesce(sum(x.seq_scan - s.seq_scan), 0) AS tables_scanned
  FROM pg_stat_xact_user_tables x JOIN scans s USING (relid);
COMMIT;
SELECT fix FROM fixes WHERE NOT fix_in_transaction ORDER BY problem \gexec
-- No table was written anew.
SELECT b.rel, b.filenode = pg_relation_filenode(b.rel) AS same_file
  FROM before_files b ORDER BY b.rel::text;
SELECT count(*) AS problems_left FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE bad_rows IS NULL;

-- The application's own statements, unchanged, work on the tables as fixed (rolled back, so
-- that its rows stay as they were for the comparison below).
BEGIN;
INSERT INTO public.usage_records (user_id, feature_code, resource_type, resource_id, amount)
VALUES (1, 'articles_per_month', 'article', 103, 1);
INSERT INTO public.user_usage (user_id, feature_code, usage_count, period_start, period_end)
VALUES (2, 'articles_per_month', 1, localtimestamp(0), localtimestamp(0) + interval '1 month');
UPDATE public.user_subscriptions SET custom_quotas = '{"storage_space": 200}' WHERE user_id = 2;
SELECT user_id, storage_quota_bytes FROM public.user_storage_usage WHERE user_id = 2;
ROLLBACK;

-- The bad rows are refused until the DBA accepts that the calls meeting them fail.
SELECT quota.attach('public', local_time_zone => 'Asia/Shanghai');
SELECT quota.attach('public', local_time_zone => 'Asia/Shanghai', accept_bad_rows => true);
SELECT attached_schema, attached_time_zone FROM quota.settings;
-- The records from before got the period of their counter: local times compared as local
-- times of the same zone.
SELECT r.id, r.period_start = u.period_start AS counter_period
  FROM public.usage_records r
  LEFT JOIN public.user_usage u ON u.user_id = r.user_id AND u.feature_code = r.feature_code
                               AND r.created_at >= u.period_start AND r.created_at < u.period_end
 ORDER BY r.id;
-- (The answers of the functions on these local times are checked with the readers that read
-- them; this file is about what attaching does to the application's database.)

SELECT quota.detach();
SELECT attached_schema, attached_time_zone FROM quota.settings;

-- After detach, everything of the application's is as it was before the fixes, apart from
-- what the fixes added: the columns (with what attach wrote in usage_records.period_start) and
-- the unique indexes.
CREATE TEMP TABLE after AS SELECT * FROM pg_temp.catalog();
SELECT coalesce(a.kind, b.kind) AS kind, coalesce(a.object, b.object) AS object,
       CASE WHEN b.object IS NULL THEN 'added: ' || a.detail
            WHEN a.object IS NULL THEN 'gone'
            ELSE 'changed: ' || a.detail END AS difference
  FROM before b FULL JOIN after a ON a.kind = b.kind AND a.object = b.object
 WHERE a.detail IS DISTINCT FROM b.detail
 ORDER BY 1, 2;
-- Every row as it was, over the columns the tables had.
SELECT rel, pg_temp.rows_digest(rel, cols) = digest AS same_rows
  FROM before_rows ORDER BY rel::text;

-- The application's own statements work as before.
BEGIN;
INSERT INTO public.usage_records (user_id, feature_code, resource_type, resource_id, amount)
VALUES (1, 'articles_per_month', 'article', 103, 1);
UPDATE public.user_subscriptions SET custom_quotas = '{"storage_space": 200}' WHERE user_id = 2;
SELECT user_id, storage_quota_bytes FROM public.user_storage_usage WHERE user_id = 2;
ROLLBACK;

\c pge_regress
DROP DATABASE adopt;
