-- 04_bad_input: every bad input gets an ERROR with a proper SQLSTATE and a message naming the
-- user, the feature and the bad value; never a crash, never a silent fallback, never a
-- partial write.
--
-- expect_error (from 00_setup) runs a statement and prints "SQLSTATE: message" and the hint
-- of the error it raised. SQLSTATEs used by pg_entitlements:
--   22P02 invalid_text_representation  a malformed custom_quotas value or document
--   22003 numeric_value_out_of_range   a value or counter beyond its integer type
--   22004 null_value_not_allowed       a NULL argument
--   22023 invalid_parameter_value      an amount below 1, an unknown unit, cycle or time zone
--   P0002 no_data_found                an unknown feature, no active subscription
-- Users 401..499.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- 401 has a valid override, which every rejected write below must leave as it is.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
VALUES (401, plan_id('free'), now() - interval '1 day', now() + interval '30 days',
        '{"articles_per_month": 6}');

-- =============================================================================================
-- custom_quotas: malformed values are rejected at write time (trigger validate_custom_quotas),
-- so that a read never meets them. Each bad document is tried as an INSERT of a new
-- subscription for user 402 and as an UPDATE of user 401's subscription.
CREATE TEMP TABLE bad_documents (n int, document jsonb);
INSERT INTO bad_documents VALUES
    (1,  '{"articles_per_month": "abc"}'),        -- a string
    (2,  '{"articles_per_month": "10"}'),         -- a number in a string is not guessed at
    (3,  '{"articles_per_month": 6.5}'),          -- a fraction
    (4,  '{"articles_per_month": 10.0}'),         -- a whole number written as a fraction
    (5,  '{"articles_per_month": true}'),         -- a boolean
    (6,  '{"articles_per_month": null}'),         -- JSON null (remove the key instead)
    (7,  '{"articles_per_month": {}}'),           -- an object
    (8,  '{"articles_per_month": []}'),           -- an array
    (9,  '{"articles_per_month": 2147483648}'),   -- beyond int4
    (10, '{"articles_per_month": 1e30}'),         -- far beyond int4
    (11, '{"articles_per_month": -2}'),           -- negative other than -1
    (12, '[{"articles_per_month": 10}]'),         -- a document that is not an object
    (13, '10'),                                   -- a scalar document
    (14, 'null'),                                 -- JSON null as the whole document
    (15, '{"no_such_feature": 10}'),              -- an unknown feature
    (16, '{"storage_space": 100, "publish_per_month": "x"}');  -- one bad key among good ones

-- At INSERT:
DO $$
DECLARE d record;
BEGIN
    FOR d IN SELECT * FROM bad_documents ORDER BY n LOOP
        RAISE NOTICE 'document %: %', d.n, d.document;
        CALL expect_error(format($q$
            INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
            VALUES (402, public.plan_id('free'), now() - interval '1 day', now() + interval '30 days', %L)
        $q$, d.document));
    END LOOP;
END
$$;
-- Nothing was written: no subscription and no storage row for 402.
SELECT (SELECT count(*) FROM user_subscriptions WHERE user_id = 402) AS subscriptions,
       (SELECT count(*) FROM user_storage_usage WHERE user_id = 402) AS storage_rows;

-- At UPDATE:
DO $$
DECLARE d record;
BEGIN
    FOR d IN SELECT * FROM bad_documents ORDER BY n LOOP
        RAISE NOTICE 'document %: %', d.n, d.document;
        CALL expect_error(format($q$
            UPDATE quota.user_subscriptions SET custom_quotas = %L WHERE user_id = 401
        $q$, d.document));
    END LOOP;
END
$$;
-- ... also when the bad value is set with jsonb_set on an existing document.
CALL expect_error($$
    UPDATE quota.user_subscriptions
       SET custom_quotas = jsonb_set(custom_quotas, '{articles_per_month}', '"10"')
     WHERE user_id = 401$$);
-- The row is unchanged, and the override still applies.
SELECT user_id, custom_quotas FROM user_subscriptions WHERE user_id = 401;
SELECT * FROM check_user_quota(401, 'articles_per_month');

-- The values that are valid: whole numbers from -1 to 2147483647, an empty object, SQL NULL.
-- 1e3 is stored by jsonb as 1000, a whole number.
BEGIN;
UPDATE user_subscriptions
   SET custom_quotas = '{"articles_per_month": 2147483647, "publish_per_month": -1,
                         "keyword_distillation": 0, "platform_accounts": 1e3}'
 WHERE user_id = 401;
SELECT custom_quotas FROM user_subscriptions WHERE user_id = 401;
SELECT f AS feature, q.quota_limit
  FROM unnest(ARRAY['articles_per_month', 'publish_per_month', 'keyword_distillation',
                    'platform_accounts']) AS f,
       check_user_quota(401, f) AS q;
UPDATE user_subscriptions SET custom_quotas = '{}' WHERE user_id = 401;
UPDATE user_subscriptions SET custom_quotas = NULL WHERE user_id = 401;
SELECT * FROM check_user_quota(401, 'articles_per_month');
ROLLBACK;

-- Should a malformed value get in anyway (triggers do not fire with session_replication_role
-- = replica, as during some restores and replication), reading it is an error naming it, not
-- a silent fallback to the plan. Features without a bad value are not affected.
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE user_subscriptions SET custom_quotas = '{"articles_per_month": "abc"}' WHERE user_id = 401;
RESET session_replication_role;
CALL expect_error($$SELECT * FROM quota.check_user_quota(401, 'articles_per_month')$$);
CALL expect_error($$SELECT quota.record_feature_usage(401, 'articles_per_month')$$);
SELECT * FROM check_user_quota(401, 'publish_per_month');
ROLLBACK;

-- =============================================================================================
-- NULL arguments: an error naming the function and the argument (22004), not a NULL result.
CALL expect_error($$SELECT * FROM quota.check_user_quota(NULL, 'articles_per_month')$$);
CALL expect_error($$SELECT * FROM quota.check_user_quota(401, NULL)$$);
CALL expect_error($$SELECT quota.record_feature_usage(NULL, 'articles_per_month')$$);
CALL expect_error($$SELECT quota.record_feature_usage(401, NULL)$$);
CALL expect_error($$SELECT quota.record_feature_usage(401, 'articles_per_month', amount => NULL)$$);
CALL expect_error($$SELECT quota.get_user_storage_quota(NULL)$$);
CALL expect_error($$SELECT * FROM quota.get_quota_period(NULL)$$);
CALL expect_error($$SELECT * FROM quota.get_quota_period(NULL, 'articles_per_month')$$);
-- The seed's call shape with a NULL user, as a driver would send it:
PREPARE seed_check AS SELECT * FROM check_user_quota($1, $2);
CALL expect_error('EXECUTE seed_check(NULL, ''articles_per_month'')');
DEALLOCATE seed_check;
-- (A NULL feature_code of get_quota_period is allowed: it asks for the billing-cycle period.)
SELECT count(*) AS rows FROM get_quota_period(401, NULL);

-- =============================================================================================
-- An unknown feature (P0002), for every function that takes one; also with an active
-- subscription, and nothing is written.
CALL expect_error($$SELECT * FROM quota.check_user_quota(401, 'no_such_feature')$$);
CALL expect_error($$SELECT quota.record_feature_usage(401, 'no_such_feature')$$);
CALL expect_error($$SELECT * FROM quota.get_quota_period(401, 'no_such_feature')$$);
-- Feature codes are case-sensitive.
CALL expect_error($$SELECT * FROM quota.check_user_quota(401, 'Articles_Per_Month')$$);

-- =============================================================================================
-- Amounts: at least 1 (22023).
CALL expect_error($$SELECT quota.record_feature_usage(401, 'articles_per_month', amount => 0)$$);
CALL expect_error($$SELECT quota.record_feature_usage(401, 'articles_per_month', amount => -3)$$);
CALL expect_error($$SELECT quota.record_feature_usage(401, 'articles_per_month', 'article', 7, -2147483648)$$);
-- Nothing was recorded for 401.
SELECT (SELECT count(*) FROM user_usage WHERE user_id = 401) AS counters,
       (SELECT count(*) FROM usage_records WHERE user_id = 401) AS records;

-- =============================================================================================
-- Recording without an active subscription (P0002), with no partial write: neither a counter
-- nor a usage record appears. 403 has a paused subscription, 404 none at all.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, status)
VALUES (403, plan_id('free'), now() - interval '1 day', now() + interval '30 days', 'paused');
CREATE TEMP TABLE counts_before AS
SELECT (SELECT count(*) FROM user_usage) AS counters, (SELECT count(*) FROM usage_records) AS records;
CALL expect_error($$SELECT quota.record_feature_usage(403, 'articles_per_month', 'article', 1, 1, '{"x": 1}')$$);
CALL expect_error($$SELECT quota.record_feature_usage(404, 'articles_per_month')$$);
SELECT (SELECT count(*) FROM user_usage) - b.counters AS new_counters,
       (SELECT count(*) FROM usage_records) - b.records AS new_records
  FROM counts_before b;
DROP TABLE counts_before;
-- In the client's own transaction, the error aborts the transaction.
BEGIN;
SELECT record_feature_usage(404, 'articles_per_month');
ROLLBACK;

-- =============================================================================================
-- quota.settings.time_zone: a name PostgreSQL does not know is rejected at write time.
CALL expect_error($$INSERT INTO quota.settings (time_zone) VALUES ('Mars/Olympus')$$);
CALL expect_error($$INSERT INTO quota.settings (time_zone) VALUES ('')$$);
-- Only one settings row can exist.
CALL expect_error($$INSERT INTO quota.settings (singleton, time_zone) VALUES (false, 'UTC')$$);
SELECT count(*) AS settings_rows FROM settings;

-- =============================================================================================
-- A counter near the top of bigint: recording 5 more would overflow. The error is 22003 and
-- nothing is written (the counter keeps its value, no usage record appears).
-- Only the SQLSTATE is printed: the wording of this message is not settled yet.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (405, plan_id('free'), now() - interval '1 day', now() + interval '30 days');
INSERT INTO user_usage (user_id, feature_code, period_start, period_end, usage_count,
                        last_reset_at, updated_at)
SELECT 405, 'articles_per_month', p.period_start, p.period_end, 9223372036854775807 - 1, now(), now()
  FROM get_quota_period(405, 'articles_per_month') p;
DO $$
BEGIN
    PERFORM quota.record_feature_usage(405, 'articles_per_month', amount => 5);
    RAISE NOTICE 'no error';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'SQLSTATE %', SQLSTATE;
END
$$;
SELECT usage_count FROM user_usage WHERE user_id = 405;
SELECT count(*) AS records FROM usage_records WHERE user_id = 405;
-- One more still fits: the counter reaches the bigint maximum exactly.
SELECT record_feature_usage(405, 'articles_per_month');
SELECT usage_count FROM user_usage WHERE user_id = 405;
-- Such a counter does not fit check_user_quota's int4 current_usage column: it is reported as
-- 2147483647 (saturated, never a wrapped number or an error); usage_overview gives the exact
-- bigint.
SELECT * FROM quota.check_user_quota(405, 'articles_per_month');
SELECT current_usage FROM quota.usage_overview(405) WHERE feature_code = 'articles_per_month';

-- =============================================================================================
-- The ledger's rules hold for writes that bypass the functions too (23514, 23505): a counter
-- never goes negative, an amount is never 0, a use counts up and only a refund down, a key is
-- never empty and names one use per user, a record is refunded once. Rolled back: the rows
-- written here by hand are not in any counter.
BEGIN;
INSERT INTO usage_records (user_id, feature_code, period_start, amount, idempotency_key, created_at)
SELECT 405, 'articles_per_month', p.period_start, 1, 'k-405', now()
  FROM get_quota_period(405, 'articles_per_month') p;
CALL expect_error($$UPDATE quota.user_usage SET usage_count = -1 WHERE user_id = 405$$);
CALL expect_error($$INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, created_at)
                    VALUES (405, 'articles_per_month', now(), 0, now())$$);
CALL expect_error($$INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, created_at)
                    VALUES (405, 'articles_per_month', now(), -1, now())$$);
CALL expect_error($$INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, idempotency_key, created_at)
                    VALUES (405, 'articles_per_month', now(), 1, '', now())$$);
CALL expect_error($$INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, idempotency_key, created_at)
                    VALUES (405, 'articles_per_month', now(), 1, 'k-405', now())$$);
CALL expect_error($$INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, refund_of, created_at)
                    SELECT 405, 'articles_per_month', now(), 1, r.id, now()
                      FROM quota.usage_records r WHERE r.idempotency_key = 'k-405'$$);
INSERT INTO usage_records (user_id, feature_code, period_start, amount, refund_of, created_at)
SELECT 405, 'articles_per_month', r.period_start, -1, r.id, now()
  FROM usage_records r WHERE r.idempotency_key = 'k-405';
CALL expect_error($$INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, refund_of, created_at)
                    SELECT 405, 'articles_per_month', now(), -1, r.id, now()
                      FROM quota.usage_records r WHERE r.idempotency_key = 'k-405'$$);
-- The unique indexes are partial (WHERE idempotency_key IS NOT NULL), and still serve the
-- lookup of a key by the functions (a text compared with the domain's values).
SET LOCAL enable_seqscan = off;
PREPARE by_key (bigint, text) AS
    SELECT r.id FROM quota.usage_records r WHERE r.user_id = $1 AND r.idempotency_key = $2;
EXPLAIN (COSTS OFF) EXECUTE by_key(405, 'k-405');
DEALLOCATE by_key;
ROLLBACK;

DROP TABLE bad_documents;
RESET search_path;
