-- 11_retries_alerts_int4: a key is one logical use for good, refunds included; alerts are
-- judged against the limit in force at the time of the use; unlimited stays unlimited beyond
-- the int4 range (issue 14, items 3, 8 and 9). Users 11xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1101, plan_id('professional'), now() - interval '3 days', now() + interval '27 days'),
       (1102, plan_id('free'), now() - interval '3 days', now() + interval '27 days'),
       (1103, plan_id('enterprise'), now() - interval '3 days', now() + interval '1 year'),
       (1104, plan_id('free'), now() - interval '3 days', now() + interval '27 days');

-- 1. A job consumes under its key, fails outside the transaction and is refunded; the queue
-- retries it with the same key. The retry is refused (55000): it would otherwise get the work
-- for free, since the key already names a use, and that use was given back.
SELECT * FROM consume(1101, 'articles_per_month', 10, 'job-1');
SELECT refunded_amount, newly_refunded FROM refund_usage(1101, 'job-1');
CALL expect_error($$SELECT * FROM quota.consume(1101, 'articles_per_month', 10, 'job-1')$$);
-- Nothing was counted by the refused retry.
SELECT * FROM check_user_quota(1101, 'articles_per_month');
-- The refund itself stays idempotent, by key and by id.
SELECT refunded_amount, newly_refunded FROM refund_usage(1101, 'job-1');
SELECT refunded_amount, newly_refunded
  FROM refund_usage((SELECT id FROM usage_records WHERE user_id = 1101 AND idempotency_key = 'job-1'));
-- Another feature or amount under the refunded key is the conflict it always was (23505).
CALL expect_error($$SELECT * FROM quota.consume(1101, 'articles_per_month', 9, 'job-1')$$);
-- A new attempt takes a new key; a retry of a key that was not refunded still returns the
-- original outcome and counts nothing.
SELECT * FROM consume(1101, 'articles_per_month', 10, 'job-1/attempt-2');
SELECT * FROM consume(1101, 'articles_per_month', 10, 'job-1/attempt-2');
-- record_feature_usage: the same rule.
SELECT record_feature_usage(1101, 'articles_per_month', amount => 2, idempotency_key => 'import-7');
SELECT refunded_amount, newly_refunded FROM refund_usage(1101, 'import-7');
CALL expect_error($$SELECT quota.record_feature_usage(1101, 'articles_per_month', amount => 2, idempotency_key => 'import-7')$$);
-- The ledger: two uses refunded, one standing; counter and records agree.
SELECT amount, idempotency_key, refund_of IS NOT NULL AS is_refund
  FROM usage_records WHERE user_id = 1101 ORDER BY id;
SELECT * FROM check_user_quota(1101, 'articles_per_month');
SELECT * FROM verify_ledger(1101);

-- 2. Alerts re-arm when the limit changes. The counter remembers the highest threshold
-- announced in its period and the limit it was judged against (the notifications themselves
-- are heard by the Node client's test: psql prints the listener's process id with each).
-- Free plan, 10 articles: 10 used announces 80, 95 and 100 % of 10.
SELECT allowed, current_usage FROM consume(1102, 'articles_per_month', 10);
SELECT usage_count, alerted_percent, alerted_limit FROM user_usage WHERE user_id = 1102;
-- Raised to 100: the memory of 10 no longer applies. 11 used is below 80 % of 100: nothing yet.
SELECT * FROM adjust_quota(1102, 'articles_per_month', 100, 'upgrade');
SELECT allowed, current_usage FROM consume(1102, 'articles_per_month', 1);
SELECT usage_count, alerted_percent, alerted_limit FROM user_usage WHERE user_id = 1102;
-- 85 used: 80 % of 100 announced, and remembered against 100.
SELECT allowed, current_usage FROM consume(1102, 'articles_per_month', 74);
SELECT usage_count, alerted_percent, alerted_limit FROM user_usage WHERE user_id = 1102;
-- 100 used: 95 and 100 % of 100.
SELECT allowed, current_usage FROM consume(1102, 'articles_per_month', 15);
SELECT usage_count, alerted_percent, alerted_limit FROM user_usage WHERE user_id = 1102;
-- A refund and a use back to 100 % under the same limit announce nothing new.
SELECT refunded_amount FROM refund_usage((SELECT max(id) FROM usage_records WHERE user_id = 1102));
SELECT allowed, current_usage FROM consume(1102, 'articles_per_month', 15);
SELECT usage_count, alerted_percent, alerted_limit FROM user_usage WHERE user_id = 1102;

-- 3. Unlimited is unlimited beyond int4. Enterprise: publish_per_month -1. Two uses of
-- 2147483647 are 4294967294 in the bigint counter; the int4 columns of consume and
-- check_user_quota report 2147483647, usage_overview the exact figure.
SELECT * FROM consume(1103, 'publish_per_month', 2147483647);
SELECT * FROM consume(1103, 'publish_per_month', 2147483647);
SELECT record_feature_usage(1103, 'publish_per_month', amount => 2147483647);
SELECT * FROM check_user_quota(1103, 'publish_per_month');
SELECT current_usage, quota_limit, remaining
  FROM usage_overview(1103) WHERE feature_code = 'publish_per_month';
SELECT * FROM verify_ledger(1103);
-- Limited: usage beyond int4 only arises from record_feature_usage (which does not enforce) or
-- a lowered limit. It saturates too; has_quota is false and remaining 0.
SELECT record_feature_usage(1104, 'articles_per_month', amount => 2147483647);
SELECT record_feature_usage(1104, 'articles_per_month', amount => 5);
SELECT * FROM check_user_quota(1104, 'articles_per_month');
SELECT * FROM consume(1104, 'articles_per_month', 1);
SELECT current_usage, quota_limit, remaining, percentage
  FROM usage_overview(1104) WHERE feature_code = 'articles_per_month';

-- An attached application whose usage_count is integer cannot count beyond 2147483647: the
-- error keeps PostgreSQL's SQLSTATE 22003, names the user, the feature and the table, and
-- gives the fix.
CREATE DATABASE int4_app;
\c int4_app
SET TimeZone = 'UTC';
SET client_min_messages = warning;
\set ECHO none
\i tests/fixtures/seed_app.sql
\i tests/fixtures/seed_app_timestamptz.sql
\set ECHO all
CREATE EXTENSION pg_entitlements;
\set ECHO none
SELECT fix FROM quota.attach_problems('public') WHERE fix IS NOT NULL ORDER BY problem \gexec
\set ECHO all
SELECT quota.attach('public');
SET client_min_messages = notice;
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
    RAISE NOTICE '%: %', code, message USING HINT = hint;
END
$$;
-- User 3 is on the enterprise plan: publish_per_month unlimited.
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'public.user_usage'::regclass AND attname = 'usage_count';
SELECT allowed, current_usage, quota_limit FROM quota.consume(3, 'publish_per_month', 2147483647);
CALL expect_error($$SELECT * FROM quota.consume(3, 'publish_per_month', 1)$$);
CALL expect_error($$SELECT quota.record_feature_usage(3, 'publish_per_month', amount => 1)$$);
-- After the fix the counter goes on.
ALTER TABLE public.user_usage ALTER COLUMN usage_count TYPE bigint;
SELECT allowed, current_usage, quota_limit FROM quota.consume(3, 'publish_per_month', 1);
SELECT usage_count FROM public.user_usage WHERE user_id = 3 AND feature_code = 'publish_per_month';
\c pge_regress
DROP DATABASE int4_app;
