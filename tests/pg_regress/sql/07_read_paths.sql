-- 07_read_paths: reading without SQL statements gives exactly the statements' answers.
--
-- The reading functions (check_user_quota, get_user_storage_quota, get_quota_period,
-- usage_overview) keep a per-backend copy of settings, features, plans and plan features, and
-- read subscriptions and counters straight through their indexes, wherever that is what a
-- statement would see; quota.read_paths() says how each table is read and why.
-- Users 701..799.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

SELECT * FROM quota.read_paths();

-- Every answer of every reading function (or the error it raises), for every user of the
-- earlier files, two users without a subscription and every feature, as one fingerprint.
CREATE FUNCTION public.all_answers(OUT answers bigint, OUT fingerprint text)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    u bigint;
    f text;
    lines text[] := '{}';
    calls text[];
    c text;
    answer text;
BEGIN
    FOR u IN SELECT DISTINCT user_id FROM quota.user_subscriptions UNION VALUES (0), (9999999)
    LOOP
        calls := ARRAY[format('SELECT quota.get_user_storage_quota(%s)::text', u),
                       format('SELECT string_agg(p::text, '','') FROM quota.get_quota_period(%s) p', u),
                       format('SELECT string_agg(o::text, '','') FROM quota.usage_overview(%s) o', u)];
        FOR f IN SELECT code FROM quota.features LOOP
            calls := calls || format('SELECT q::text FROM quota.check_user_quota(%s, %L) q', u, f)
                           || format('SELECT p::text FROM quota.get_quota_period(%s, %L) p', u, f);
        END LOOP;
        FOREACH c IN ARRAY calls LOOP
            BEGIN
                EXECUTE c INTO answer;
            EXCEPTION WHEN OTHERS THEN
                answer := SQLSTATE || ' ' || SQLERRM;
            END;
            lines := lines || (c || ' -> ' || coalesce(answer, 'NULL'));
        END LOOP;
    END LOOP;
    answers := cardinality(lines);
    fingerprint := md5(array_to_string(lines, E'\n'));
END
$$;

SELECT answers, fingerprint AS direct FROM public.all_answers() \gset
\echo answers compared: :answers
SET pg_entitlements.direct_reads = off;
SELECT table_name, read_by, detail FROM quota.read_paths() WHERE table_name = 'user_usage';
SELECT fingerprint = :'direct' AS statements_give_the_same_answers FROM public.all_answers();
RESET pg_entitlements.direct_reads;

-- A user on the free plan (articles 10) for this file.
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (701, plan_id('free'), now() - interval '3 days', now() + interval '400 days');
SELECT quota.record_feature_usage(701, 'articles_per_month', amount => 4);
SELECT * FROM quota.check_user_quota(701, 'articles_per_month');

-- Changes of the copied tables reach the very next call: a plan's value, ...
UPDATE quota.plan_features SET feature_value = 12
 WHERE plan_id = plan_id('free') AND feature_code = 'articles_per_month';
SELECT quota_limit, remaining FROM quota.check_user_quota(701, 'articles_per_month');
-- ... a catalog default (the free plan has no image_generation; 01 added it without default),
UPDATE quota.features SET default_limit = 7 WHERE code = 'image_generation';
SELECT has_quota, quota_limit FROM quota.check_user_quota(701, 'image_generation');
UPDATE quota.features SET default_limit = NULL WHERE code = 'image_generation';
SELECT has_quota, quota_limit FROM quota.check_user_quota(701, 'image_generation');
-- ... a plan's billing cycle (the period becomes a year), ...
UPDATE quota.subscription_plans SET billing_cycle = 'yearly' WHERE plan_code = 'free';
SELECT period_end - period_start > interval '300 days' AS yearly
  FROM quota.get_quota_period(701, 'articles_per_month');
UPDATE quota.subscription_plans SET billing_cycle = 'monthly' WHERE plan_code = 'free';
SELECT period_end - period_start > interval '300 days' AS yearly
  FROM quota.get_quota_period(701, 'articles_per_month');
-- ... and a rolled-back change never shows.
BEGIN;
UPDATE quota.plan_features SET feature_value = 99
 WHERE plan_id = plan_id('free') AND feature_code = 'articles_per_month';
ROLLBACK;
SELECT quota_limit FROM quota.check_user_quota(701, 'articles_per_month');
UPDATE quota.plan_features SET feature_value = 10
 WHERE plan_id = plan_id('free') AND feature_code = 'articles_per_month';

-- Where a statement would see something else than the caller's snapshot, statements read:
-- after a write in the same transaction (the write must be seen) ...
BEGIN;
SELECT quota.record_feature_usage(701, 'articles_per_month');
SELECT read_by, detail FROM quota.read_paths() WHERE table_name = 'user_usage';
SELECT current_usage FROM quota.check_user_quota(701, 'articles_per_month');
ROLLBACK;
-- ... and under REPEATABLE READ (every read sees the transaction's one snapshot).
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT read_by, detail FROM quota.read_paths() WHERE table_name = 'features';
SELECT current_usage, quota_limit FROM quota.check_user_quota(701, 'articles_per_month');
COMMIT;

-- Reading without statements checks the privileges a statement would: a role without SELECT
-- on the tables gets the statement's own error ...
CREATE ROLE read_paths_user;
GRANT USAGE ON SCHEMA quota TO read_paths_user;
SET ROLE read_paths_user;
SELECT read_by, detail FROM quota.read_paths() WHERE table_name = 'user_usage';
CALL expect_error('SELECT * FROM quota.check_user_quota(701, ''articles_per_month'')');
RESET ROLE;
-- ... is served once granted quota_reader, and refused again the moment it is revoked.
GRANT quota_reader TO read_paths_user;
SET ROLE read_paths_user;
SELECT read_by FROM quota.read_paths() WHERE table_name = 'user_usage';
SELECT current_usage, quota_limit FROM quota.check_user_quota(701, 'articles_per_month');
RESET ROLE;
REVOKE quota_reader FROM read_paths_user;
SET ROLE read_paths_user;
SELECT read_by FROM quota.read_paths() WHERE table_name = 'user_usage';
CALL expect_error('SELECT * FROM quota.check_user_quota(701, ''articles_per_month'')');
RESET ROLE;
DROP OWNED BY read_paths_user;
DROP ROLE read_paths_user;

-- A table without a usable index is read by statements: user_usage loses the primary key it
-- is read through, and gets it back (DDL reaches every backend's copy without a trigger).
ALTER TABLE quota.user_usage DROP CONSTRAINT user_usage_pkey;
SELECT read_by, detail FROM quota.read_paths() WHERE table_name = 'user_usage';
SELECT current_usage, quota_limit FROM quota.check_user_quota(701, 'articles_per_month');
ALTER TABLE quota.user_usage ADD PRIMARY KEY (user_id, feature_code, period_start);
SELECT read_by, detail FROM quota.read_paths() WHERE table_name = 'user_usage';

-- On a Citus coordinator a distributed table holds no rows of its own: only a statement,
-- which Citus plans, reaches the workers. A stand-in for Citus' catalog lists user_usage as
-- distributed; a new session (Citus invalidates the table when it distributes it) reads it by
-- statements, with the same answers.
SET allow_system_table_mods = on;
CREATE TABLE pg_catalog.pg_dist_partition (logicalrelid regclass NOT NULL);
INSERT INTO pg_catalog.pg_dist_partition VALUES ('quota.user_usage');
\c
SET TimeZone = 'UTC';
SELECT table_name, read_by, detail FROM quota.read_paths();
SELECT current_usage, quota_limit FROM quota.check_user_quota(701, 'articles_per_month');
SET allow_system_table_mods = on;
DROP TABLE pg_catalog.pg_dist_partition;
