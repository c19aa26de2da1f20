-- scripts/ops/differential.sh, last part, in app_db once its comparisons are done: the same
-- rows with local times. The six attached tables are copied into schema app_local with every
-- timestamptz column made timestamp without time zone and holding the Asia/Shanghai local time
-- of the instant; attached there with local_time_zone => 'Asia/Shanghai', every reading function
-- must give, for users 1 to :users and the named cases, exactly the answer it gives on the
-- timestamptz tables of schema public. Both sets of answers are taken in one transaction, so
-- under one now(), in a session whose TimeZone is neither zone. Prints one line per call whose
-- answers differ ("DIFF call | timestamptz answer | local answer"), then "compared N".
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE SCHEMA app_local;
DO $$
DECLARE
    t text;
    c record;
BEGIN
    FOREACH t IN ARRAY ARRAY['user_subscriptions', 'subscription_plans', 'plan_features',
                             'user_usage', 'usage_records', 'user_storage_usage'] LOOP
        EXECUTE format('CREATE TABLE app_local.%1$I (LIKE public.%1$I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)', t);
        FOR c IN SELECT a.attname FROM pg_attribute a
                  WHERE a.attrelid = format('app_local.%I', t)::regclass AND a.attnum > 0
                    AND NOT a.attisdropped AND a.atttypid = 'timestamptz'::regtype LOOP
            EXECUTE format('ALTER TABLE app_local.%I ALTER COLUMN %I TYPE timestamp', t, c.attname);
        END LOOP;
    END LOOP;
END
$$;
-- The assignment cast from timestamptz to timestamp gives the local time of the session's zone.
SET TimeZone = 'Asia/Shanghai';
INSERT INTO app_local.subscription_plans SELECT * FROM public.subscription_plans;
INSERT INTO app_local.plan_features SELECT * FROM public.plan_features;
INSERT INTO app_local.user_subscriptions SELECT * FROM public.user_subscriptions;
INSERT INTO app_local.user_usage SELECT * FROM public.user_usage;
INSERT INTO app_local.usage_records SELECT * FROM public.usage_records;
INSERT INTO app_local.user_storage_usage SELECT * FROM public.user_storage_usage;
CREATE INDEX ON app_local.user_subscriptions (user_id);
ANALYZE app_local.user_subscriptions, app_local.user_usage;

SET TimeZone = 'America/New_York';
CREATE TEMP TABLE answers (schema text, call text, answer text);
BEGIN;
INSERT INTO answers
SELECT 'public', c.call, c.sql_answer
  FROM diff.compare(1, :users) c
UNION ALL
SELECT 'public', c.call, c.sql_answer
  FROM diff.compare(900001, 900003) c;
DO $$ BEGIN PERFORM quota.attach('app_local', local_time_zone => 'Asia/Shanghai', accept_bad_rows => true); END $$;
INSERT INTO answers
SELECT 'app_local', c.call, c.sql_answer
  FROM diff.compare(1, :users) c
UNION ALL
SELECT 'app_local', c.call, c.sql_answer
  FROM diff.compare(900001, 900003) c;
-- Back to the timestamptz tables: the application's data stays as the suite left it.
DO $$ BEGIN PERFORM quota.attach('public', accept_bad_rows => true); END $$;
COMMIT;

\pset format unaligned
\pset tuples_only on
SELECT format('DIFF %s | %s | %s', coalesce(p.call, l.call), p.answer, l.answer)
  FROM (SELECT * FROM answers WHERE schema = 'public') p
  FULL JOIN (SELECT * FROM answers WHERE schema = 'app_local') l ON l.call = p.call
 WHERE p.answer IS DISTINCT FROM l.answer
 ORDER BY 1
 LIMIT 20;
SELECT format('compared %s calls, %s of them errors, %s differ', count(*),
              count(*) FILTER (WHERE p.answer LIKE 'ERROR%'),
              count(*) FILTER (WHERE p.answer IS DISTINCT FROM l.answer))
  FROM (SELECT * FROM answers WHERE schema = 'public') p
  FULL JOIN (SELECT * FROM answers WHERE schema = 'app_local') l ON l.call = p.call;
