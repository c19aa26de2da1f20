-- 14_continuity: usage belongs to the user's billing anchor, not to a subscription row. No
-- renewal, plan change or change of the time zone resets, loses or gives away usage; a reset
-- happens only when the change asks for one (issue 14, items 1 and 2). Users 14xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

INSERT INTO subscription_plans (plan_code, plan_name, billing_cycle)
VALUES ('pro_yearly', 'Professional, yearly', 'yearly');
INSERT INTO plan_features (plan_id, feature_code, feature_value)
VALUES (plan_id('pro_yearly'), 'articles_per_month', 1200),
       (plan_id('pro_yearly'), 'platform_accounts', 10);

-- What a user has of the two features the cases use: a counter that resets each billing
-- period (articles) and one that never does (connected platform accounts).
CREATE FUNCTION public.figures(u bigint)
RETURNS TABLE (feature text, current_usage integer, quota_limit integer, remaining integer)
LANGUAGE sql AS $$
    SELECT f, q.current_usage, q.quota_limit, q.remaining
      FROM unnest(ARRAY['articles_per_month', 'platform_accounts']) f,
           quota.check_user_quota(u, f) q
$$;

-- 1401, the issue's case: 9 of 10 articles and 3 of 3 accounts used, then the row is
-- cancelled and a new one inserted in one transaction, keeping the anchor only approximately
-- (now() - 10 days, not the old row's start to the microsecond).
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1401, plan_id('free'), now() - interval '10 days', now() + interval '20 days');
SELECT allowed FROM consume(1401, 'articles_per_month', 9);
SELECT allowed FROM consume(1401, 'platform_accounts', 3);
SELECT pg_sleep(0.01);
BEGIN;
UPDATE user_subscriptions SET status = 'cancelled' WHERE user_id = 1401;
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor)
VALUES (1401, plan_id('free'), now(), now() + interval '1 month', now() - interval '10 days');
COMMIT;
-- Still 9 of 10 and 3 of 3: a 4th account and a 2nd article over the limit are refused.
SELECT * FROM figures(1401);
SELECT allowed, current_usage, quota_limit FROM consume(1401, 'platform_accounts', 3);
SELECT allowed, current_usage, quota_limit FROM consume(1401, 'articles_per_month', 2);
SELECT allowed, current_usage, quota_limit FROM consume(1401, 'articles_per_month', 1);
-- The period is the new anchor's; the usage and its records moved there together (the counter
-- of the period before stays, emptied, ending at the renewal).
SELECT p.period_start = s.quota_reset_anchor AS starts_at_new_anchor
  FROM get_quota_period(1401, 'articles_per_month') p, user_subscriptions s
 WHERE s.user_id = 1401 AND s.status = 'active';
SELECT count(*) FILTER (WHERE usage_count > 0) AS counters_in_use, sum(usage_count) AS used
  FROM user_usage WHERE user_id = 1401 AND feature_code = 'articles_per_month';
SELECT * FROM verify_ledger(1401);

-- 1402: a renewal that keeps the anchor exactly continues the same period and counter.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1402, plan_id('free'), now() - interval '10 days', now() + interval '5 days');
SELECT allowed FROM consume(1402, 'articles_per_month', 6);
BEGIN;
UPDATE user_subscriptions SET status = 'cancelled' WHERE user_id = 1402;
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor)
SELECT 1402, plan_id('free'), now(), now() + interval '1 month', start_date
  FROM user_subscriptions WHERE user_id = 1402;
COMMIT;
SELECT * FROM figures(1402);

-- 1403: an upgrade in the middle of a period, written as a new row that starts now with no
-- anchor of its own: the new period starts now, and the 9 articles already used count in it:
-- 9 of 10 becomes 9 of 100.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1403, plan_id('free'), now() - interval '10 days', now() + interval '20 days');
SELECT allowed FROM consume(1403, 'articles_per_month', 9);
SELECT allowed FROM consume(1403, 'platform_accounts', 2);
BEGIN;
UPDATE user_subscriptions SET status = 'cancelled' WHERE user_id = 1403;
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1403, plan_id('professional'), now(), now() + interval '1 month');
COMMIT;
SELECT * FROM figures(1403);
SELECT p.period_start = s.start_date AS starts_now
  FROM get_quota_period(1403, 'articles_per_month') p, user_subscriptions s
 WHERE s.user_id = 1403 AND s.status = 'active';
SELECT * FROM verify_ledger(1403);

-- 1404: a monthly plan changed to a yearly one in place (UPDATE plan_id): the period becomes
-- the anniversary year, and the 30 articles used stay; back to monthly, they stay again.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1404, plan_id('professional'), now() - interval '40 days', now() + interval '1 year');
SELECT allowed FROM consume(1404, 'articles_per_month', 30);
UPDATE user_subscriptions SET plan_id = plan_id('pro_yearly') WHERE user_id = 1404;
SELECT * FROM figures(1404);
SELECT cycle, period_start = (SELECT start_date FROM user_subscriptions WHERE user_id = 1404)
       AS year_from_the_start
  FROM get_quota_period(1404, 'articles_per_month');
UPDATE user_subscriptions SET plan_id = plan_id('professional') WHERE user_id = 1404;
SELECT * FROM figures(1404);
-- A new anchor set in place moves the period the same way, and the usage with it.
UPDATE user_subscriptions SET quota_reset_anchor = now() - interval '2 days' WHERE user_id = 1404;
SELECT * FROM figures(1404);
SELECT * FROM verify_ledger(1404);

-- 1405: renewals in a loop, each its own transaction with its own approximate anchor, and a
-- use of the whole limit after each: only the first is allowed.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1405, plan_id('free'), now() - interval '10 days', now() + interval '20 days');
CREATE TABLE public.renewal_outcomes (allowed boolean);
DO $$
BEGIN
    FOR i IN 1..30 LOOP
        UPDATE quota.user_subscriptions SET status = 'cancelled'
         WHERE user_id = 1405 AND status = 'active';
        INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date,
                                              quota_reset_anchor)
        VALUES (1405, public.plan_id('free'), now(), now() + interval '1 month',
                now() - interval '10 days');
        INSERT INTO public.renewal_outcomes
        SELECT c.allowed FROM quota.consume(1405, 'articles_per_month', 10) c;
        COMMIT;
    END LOOP;
END
$$;
SELECT allowed, count(*) FROM renewal_outcomes GROUP BY allowed ORDER BY allowed;
SELECT * FROM figures(1405);
SELECT * FROM verify_ledger(1405);
DROP TABLE renewal_outcomes;

-- 1406: a reset asked for. The seed application starts usage afresh on a new purchase: the
-- change starts a new period (start_date now, no anchor) with pg_entitlements.carry_usage off
-- for its transaction. The articles start at 0; the old counter stays as the history of the
-- period the purchase ended; accounts, which never reset, stay.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1406, plan_id('free'), now() - interval '10 days', now() + interval '20 days');
SELECT allowed FROM consume(1406, 'articles_per_month', 8);
SELECT allowed FROM consume(1406, 'platform_accounts', 2);
BEGIN;
SET LOCAL pg_entitlements.carry_usage = off;
UPDATE user_subscriptions SET status = 'cancelled' WHERE user_id = 1406;
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1406, plan_id('free'), now(), now() + interval '1 month');
COMMIT;
SHOW pg_entitlements.carry_usage;
SELECT * FROM figures(1406);
SELECT usage_count, period_end = (SELECT start_date FROM user_subscriptions
                                   WHERE user_id = 1406 AND status = 'active') AS ended_at_purchase
  FROM user_usage WHERE user_id = 1406 AND feature_code = 'articles_per_month';
SELECT * FROM verify_ledger(1406);
-- With carry_usage off, a change that keeps the period (the same anchor) has no new period to
-- start: the usage stays.
SELECT allowed FROM consume(1406, 'articles_per_month', 4);
BEGIN;
SET LOCAL pg_entitlements.carry_usage = off;
UPDATE user_subscriptions SET end_date = end_date + interval '1 month'
 WHERE user_id = 1406 AND status = 'active';
COMMIT;
SELECT * FROM figures(1406);

-- 1407: the time zone changes. A subscription anchored at 2010-01-15 00:00 UTC has its
-- anniversaries at 00:00 UTC on the 15th; in America/Caracas (UTC-4:30 in 2010, UTC-4 since
-- 2016) the anchor was 19:30 local on the 14th, which is 23:30 UTC today. A change applies from
-- the next boundary: the period it falls in keeps its bounds and its usage, 10 of 10.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1407, plan_id('free'), '2010-01-15 00:00+00', now() + interval '1 year');
SELECT allowed FROM consume(1407, 'articles_per_month', 10);
SELECT period_start AS utc_start, period_end AS utc_end
  FROM get_quota_period(1407, 'articles_per_month') \gset
INSERT INTO settings (time_zone) VALUES ('America/Caracas')
    ON CONFLICT (singleton) DO UPDATE SET time_zone = EXCLUDED.time_zone;
SELECT time_zone, previous_time_zone, time_zone_changed_at > now() - interval '1 minute' AS changed_just_now FROM settings;
SELECT period_start = :'utc_start' AS same_start, period_end = :'utc_end' AS same_end
  FROM get_quota_period(1407, 'articles_per_month');
SELECT * FROM figures(1407);
SELECT allowed, current_usage, quota_limit FROM consume(1407, 'articles_per_month', 1);
SELECT * FROM verify_ledger(1407);
-- As if the change had been made 40 days ago: the period after the one it fell in starts where
-- that one ended and ends on the new zone's boundary; 80 days ago, the period is the new
-- zone's throughout. (Only a superuser can write these two columns.)
UPDATE settings SET time_zone_changed_at = now() - interval '40 days';
SELECT period_start - :'utc_start' AS start_moved_by, period_end - :'utc_end' AS end_moved_by
  FROM get_quota_period(1407, 'articles_per_month');
UPDATE settings SET time_zone_changed_at = now() - interval '80 days';
SELECT period_start - :'utc_start' AS start_moved_by, period_end - :'utc_end' AS end_moved_by
  FROM get_quota_period(1407, 'articles_per_month');
-- The usage followed the period each time (quota.carry_usage; the triggers do it after the
-- changes they see).
SELECT carry_usage(1407);
SELECT * FROM figures(1407);
-- Removing the settings row means UTC at once, with no change to remember: the period moves
-- back to the UTC anniversaries, and the usage with it.
DELETE FROM settings;
SELECT period_start = :'utc_start' AS back_in_utc
  FROM get_quota_period(1407, 'articles_per_month');
SELECT * FROM figures(1407);
SELECT * FROM verify_ledger(1407);
-- A second change within the period the first fell in: the settings remember the last change
-- only, so the period is the one of the zone before it (Caracas) at once, and the usage moves
-- with it.
INSERT INTO settings (time_zone) VALUES ('America/Caracas');
UPDATE settings SET time_zone = 'Asia/Shanghai';
SELECT period_start - :'utc_start' AS start_moved_by
  FROM get_quota_period(1407, 'articles_per_month');
SELECT * FROM figures(1407);
SELECT * FROM verify_ledger(1407);
DELETE FROM settings;

-- 1408: a refund after the usage moved posts to the counter the use moved to.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1408, plan_id('free'), now() - interval '10 days', now() + interval '20 days');
SELECT allowed FROM consume(1408, 'articles_per_month', 4, 'job-1408');
UPDATE user_subscriptions SET quota_reset_anchor = now() - interval '3 days' WHERE user_id = 1408;
SELECT refunded_amount, newly_refunded FROM refund_usage(1408, 'job-1408');
SELECT * FROM figures(1408);
SELECT * FROM verify_ledger(1408);

-- 1409: a period that ended by the clock is not carried into the next: usage of the period
-- before (a counter that ended yesterday) stays there, and the new period starts empty.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor)
VALUES (1409, plan_id('free'), now() - interval '40 days', now() + interval '20 days',
        now() - interval '1 month' - interval '1 day');
INSERT INTO user_usage (user_id, feature_code, period_start, period_end, usage_count,
                        last_reset_at, updated_at)
SELECT 1409, 'articles_per_month', p.period_start - interval '1 month', p.period_start, 10,
       now(), now()
  FROM get_quota_period(1409, 'articles_per_month') p;
INSERT INTO usage_records (user_id, feature_code, period_start, amount, created_at)
SELECT 1409, 'articles_per_month', period_start, 10, now() FROM user_usage WHERE user_id = 1409;
UPDATE user_subscriptions SET plan_id = plan_id('professional') WHERE user_id = 1409;
SELECT * FROM figures(1409);

-- quota.carry_usage(user_id), for a period the clock alone moved, is for quota_admin only.
SET ROLE quota_admin;
SELECT carry_usage(1401);
RESET ROLE;
SET ROLE quota_app;
CALL expect_error($$SELECT quota.carry_usage(1401)$$);
RESET ROLE;
-- quota_admin changes subscriptions and the time zone without any right on the counters or
-- the ledger: the triggers carry the usage as the tables' owner.
SET ROLE quota_admin;
UPDATE quota.user_subscriptions SET quota_reset_anchor = now() - interval '4 days'
 WHERE user_id = 1401 AND status = 'active';
INSERT INTO quota.settings (time_zone) VALUES ('Europe/Berlin');
DELETE FROM quota.user_usage WHERE user_id = 1401;
RESET ROLE;
SELECT * FROM figures(1401);
DELETE FROM settings;
SELECT * FROM verify_ledger() WHERE user_id BETWEEN 1400 AND 1499;
