-- 19_reservations: holds taken before slow work that runs outside any transaction (the seed's
-- 10-minute hold before generating articles), settled with the actual use once it is done.
-- An active hold counts against what is left in every check, use and reserve until it is
-- settled, released or expires; an expired hold stops counting at that instant, without any
-- job. Users 19xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- What the holds of a user look like (ids and times left out).
CREATE FUNCTION public.holds_of(u bigint)
RETURNS TABLE (n bigint, feature_code text, amount bigint, state text, settled_amount bigint,
               has_record boolean, counts boolean)
LANGUAGE sql AS $$
    SELECT row_number() OVER (ORDER BY r.id), r.feature_code, r.amount, r.state,
           r.settled_amount, r.record_id IS NOT NULL,
           r.state = 'held' AND r.expires_at > now()
      FROM quota.reservations r WHERE r.user_id = u ORDER BY r.id
$$;
-- A hold's clock moved back, as time passing would move it past its expiry.
CREATE FUNCTION public.expire_holds(u bigint)
RETURNS void LANGUAGE sql AS $$
    UPDATE quota.reservations r
       SET expires_at = now() - interval '1 second', created_at = now() - interval '11 minutes'
     WHERE r.user_id = u AND r.state = 'held'
$$;

-- 1901, free plan (10 articles a month): a hold of 4 before generating.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1901, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT allowed, reservation_id IS NOT NULL AS has_id, remaining,
       expires_at = now() + interval '10 minutes' AS ten_minutes
  FROM reserve(1901, 'articles_per_month', 4);
-- The hold counts in every check: usage 4 of 10, 6 left; the counter itself holds 0 used.
SELECT * FROM check_user_quota(1901, 'articles_per_month');
SELECT usage_count, held FROM user_usage WHERE user_id = 1901;
SELECT feature_code, current_usage, remaining, allowance_used, held
  FROM usage_overview(1901) WHERE feature_code = 'articles_per_month';
-- A use of 7 does not fit beside the hold; 6 do.
SELECT allowed, current_usage, remaining FROM consume(1901, 'articles_per_month', 7);
SELECT allowed, current_usage, remaining FROM consume(1901, 'articles_per_month', 6);
-- Nothing left: a second hold is refused, and holds nothing.
SELECT allowed, reservation_id, remaining, expires_at FROM reserve(1901, 'articles_per_month', 1);
-- The work used 3 of the 4: one usage record of 3 in the hold's period, 1 given back.
SELECT settled, usage_record_id IS NOT NULL AS recorded, released_amount
  FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1901), 3, 'article', 42);
SELECT amount, resource_type, resource_id FROM usage_records WHERE user_id = 1901 ORDER BY id;
SELECT * FROM check_user_quota(1901, 'articles_per_month');
SELECT * FROM holds_of(1901);
-- Settling again with the same amount returns the first outcome; with another, an error.
SELECT settled, released_amount
  FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1901), 3);
SELECT * FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1901), 2);
SELECT * FROM verify_ledger(1901);
SELECT * FROM verify_holds(1901);

-- 1902: settling beyond the hold counts only while what is left allows it.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1902, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT allowed, remaining FROM reserve(1902, 'articles_per_month', 5);
SELECT allowed FROM consume(1902, 'articles_per_month', 3);
-- 2 left beside the hold of 5: settling 8 is refused, the hold stays; 7 fits.
SELECT * FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1902), 8);
SELECT * FROM holds_of(1902);
SELECT settled, released_amount
  FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1902), 7);
SELECT * FROM check_user_quota(1902, 'articles_per_month');
-- Settling 0 records nothing and gives everything back.
SELECT allowed FROM reserve(1902, 'publish_per_month', 5);
SELECT * FROM settle((SELECT max(id) FROM quota.reservations WHERE user_id = 1902), 0);
SELECT * FROM holds_of(1902);
SELECT * FROM check_user_quota(1902, 'publish_per_month');

-- 1903: release gives a hold back at once; a second release changes nothing.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1903, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT allowed, remaining FROM reserve(1903, 'articles_per_month', 10);
SELECT * FROM check_user_quota(1903, 'articles_per_month');
SELECT release((SELECT id FROM quota.reservations WHERE user_id = 1903));
SELECT release((SELECT id FROM quota.reservations WHERE user_id = 1903));
SELECT * FROM check_user_quota(1903, 'articles_per_month');
-- A released hold cannot be settled.
SELECT * FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1903), 1);

-- 1904: a hold past its expiry stops counting at that instant, without any job: the reads
-- compare with the clock, though the counter still says 8 are held.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1904, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT allowed, remaining FROM reserve(1904, 'articles_per_month', 8);
SELECT expire_holds(1904);
SELECT * FROM check_user_quota(1904, 'articles_per_month');
SELECT held FROM user_usage WHERE user_id = 1904;
-- A use that needs those units reclaims them: the hold is marked expired, the counter freed.
SELECT allowed, current_usage, remaining FROM consume(1904, 'articles_per_month', 9);
SELECT usage_count, held FROM user_usage WHERE user_id = 1904;
SELECT * FROM holds_of(1904);
-- Settling an expired hold counts only what is left allows: 1 is left, 2 are refused.
SELECT * FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1904), 2);
SELECT settled, usage_record_id IS NOT NULL AS recorded, released_amount
  FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1904), 1);
SELECT * FROM holds_of(1904);
SELECT * FROM check_user_quota(1904, 'articles_per_month');
-- Releasing an expired hold says it no longer counted.
SELECT allowed FROM reserve(1904, 'publish_per_month', 2);
SELECT expire_holds(1904);
SELECT release((SELECT max(id) FROM quota.reservations WHERE user_id = 1904));
SELECT * FROM holds_of(1904);
SELECT * FROM verify_holds(1904);
SELECT * FROM verify_ledger(1904);

-- 1905: holds come off the allowance first, then off the grants' total.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1905, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT amount FROM grant_quota(1905, 'articles_per_month', 20, reason => 'top-up');
SELECT * FROM check_user_quota(1905, 'articles_per_month');
-- A hold of 25: the 10 of the allowance and 15 of the grant; 5 are left.
SELECT allowed, remaining FROM reserve(1905, 'articles_per_month', 25);
SELECT allowed, remaining FROM consume(1905, 'articles_per_month', 6);
SELECT allowed, current_usage, quota_limit, remaining FROM consume(1905, 'articles_per_month', 5);
-- The hold settles 25: the allowance was left to it (10), the grant had 15 left for it.
SELECT settled, released_amount
  FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1905), 25);
SELECT usage_count FROM user_usage WHERE user_id = 1905;
SELECT amount, remaining FROM quota.grants WHERE user_id = 1905;
SELECT * FROM check_user_quota(1905, 'articles_per_month');
SELECT * FROM verify_ledger(1905);
SELECT * FROM verify_grants(1905);

-- 1906: an unlimited feature holds without limit; retries by key hold once.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
VALUES (1906, plan_id('free'), now() - interval '5 days', now() + interval '25 days',
        '{"articles_per_month": -1}');
SELECT allowed, remaining FROM reserve(1906, 'articles_per_month', 1000000, idempotency_key => 'job-1');
SELECT allowed, remaining FROM reserve(1906, 'articles_per_month', 1000000, idempotency_key => 'job-1');
SELECT count(*) AS holds FROM quota.reservations WHERE user_id = 1906;
-- The same key with another amount is refused.
SELECT * FROM reserve(1906, 'articles_per_month', 5, idempotency_key => 'job-1');

-- 1907: a change that starts another billing period (a new anchor) carries the usage into it,
-- and the holds with it: they keep counting, and settle there.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1907, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT allowed FROM consume(1907, 'articles_per_month', 2);
SELECT allowed, remaining FROM reserve(1907, 'articles_per_month', 5);
UPDATE user_subscriptions SET quota_reset_anchor = now() - interval '2 days' WHERE user_id = 1907;
SELECT r.period_start = p.period_start AS hold_in_new_period
  FROM quota.reservations r, get_quota_period(1907, 'articles_per_month') p
 WHERE r.user_id = 1907;
SELECT usage_count, held, period_start = (SELECT period_start FROM get_quota_period(1907, 'articles_per_month')) AS current
  FROM user_usage WHERE user_id = 1907 AND feature_code = 'articles_per_month' ORDER BY period_start;
SELECT * FROM check_user_quota(1907, 'articles_per_month');
SELECT settled, released_amount
  FROM settle((SELECT id FROM quota.reservations WHERE user_id = 1907), 5);
SELECT * FROM check_user_quota(1907, 'articles_per_month');
SELECT * FROM verify_holds(1907);
SELECT * FROM verify_ledger(1907);

-- The same calls with the user named first (what a Citus cluster routes by): a hold is found
-- only under its own user. 1908, free plan: a hold of 3 settled at 2, a hold of 1 released.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1908, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT allowed, remaining FROM reserve(1908, 'articles_per_month', 3);
SELECT * FROM settle(1901, (SELECT id FROM quota.reservations WHERE user_id = 1908), 2);
SELECT settled, usage_record_id IS NOT NULL AS recorded, released_amount
  FROM settle(1908, (SELECT id FROM quota.reservations WHERE user_id = 1908), 2);
SELECT allowed, remaining FROM reserve(1908, 'articles_per_month', 1);
SELECT release(1901, (SELECT max(id) FROM quota.reservations WHERE user_id = 1908));
SELECT release(1908, (SELECT max(id) FROM quota.reservations WHERE user_id = 1908));
SELECT release(1908, (SELECT max(id) FROM quota.reservations WHERE user_id = 1908));
-- A refund by record id with the user named: another user's record is not found.
SELECT * FROM refund_usage(1901, (SELECT max(id) FROM quota.usage_records WHERE user_id = 1908));
SELECT refunded_amount, newly_refunded
  FROM refund_usage(1908, (SELECT max(id) FROM quota.usage_records WHERE user_id = 1908));
SELECT current_usage, remaining FROM check_user_quota(1908, 'articles_per_month');
SELECT * FROM settle(NULL, 1, 1);
SELECT release(1908, NULL);
SELECT * FROM verify_holds(1908);
SELECT * FROM verify_ledger(1908);

-- Bad input: no hold for a user without a subscription; clear errors for the rest.
SELECT * FROM reserve(1999, 'articles_per_month', 1);
SELECT * FROM reserve(1901, 'articles_per_month', 0);
SELECT * FROM reserve(1901, 'articles_per_month', 1, interval '0 seconds');
SELECT * FROM reserve(1901, 'articles_per_month', 1, interval '-5 minutes');
SELECT * FROM reserve(1901, 'no_such_feature', 1);
SELECT * FROM reserve(1901, 'articles_per_month', NULL);
SELECT * FROM settle(-1, 1);
SELECT * FROM settle((SELECT min(id) FROM quota.reservations WHERE user_id = 1906), -1);
SELECT release(NULL);

-- Who may: holds are written by their functions only. An app server reserves, settles and
-- releases, and reads the holds; it cannot write them, nor what a counter holds. A reporting
-- role reads only; an admin tool cannot write them either.
SET ROLE quota_app;
\set VERBOSITY sqlstate
SELECT allowed FROM reserve(1903, 'keyword_distillation', 1);
SELECT release((SELECT max(id) FROM quota.reservations WHERE user_id = 1903));
SELECT allowed FROM reserve(1903, 'keyword_distillation', 1);
SELECT release(1903, (SELECT max(id) FROM quota.reservations WHERE user_id = 1903));
UPDATE quota.reservations SET state = 'released', ended_at = now() WHERE user_id = 1902;
INSERT INTO quota.reservations (user_id, feature_code, period_start, period_end, amount, expires_at)
VALUES (1903, 'articles_per_month', now(), now(), 1, now() + interval '1 hour');
UPDATE quota.user_usage SET held = 0 WHERE user_id = 1903;
SELECT count(*) > 0 AS app_reads_holds FROM quota.reservations WHERE user_id = 1903;
RESET ROLE;
SET ROLE quota_reader;
SELECT reserve(1903, 'keyword_distillation', 1);
SELECT release(1);
SELECT settle(1, 1);
SELECT release(1903, 1);
SELECT settle(1903, 1, 1);
SELECT refund_usage(1903, 1::bigint);
RESET ROLE;
SET ROLE quota_admin;
DELETE FROM quota.reservations WHERE user_id = 1903;
UPDATE quota.user_usage SET held = 0 WHERE user_id = 1903;
RESET ROLE;
\set VERBOSITY default

-- Every counter's held equals its holds, every counter its records.
SELECT * FROM verify_holds();
SELECT * FROM verify_ledger() WHERE user_id BETWEEN 1900 AND 1999;
