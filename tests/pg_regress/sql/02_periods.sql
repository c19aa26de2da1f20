-- 02_periods: billing periods.
--
-- Usage resets on the anniversary of the anchor (quota_reset_anchor, else start_date), not on
-- the calendar month. Month ends clamp without drift, periods are half-open [start, end),
-- clamped to the subscription's [start_date, end_date), and computed in
-- quota.settings.time_zone (UTC without a settings row), never in the session's TimeZone.
-- Users 201..299.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- =============================================================================================
-- Part 1: the pure arithmetic, quota.anniversary_period(anchor, cycle, at, time_zone), with
-- fixed dates. It returns the unclamped period of `anchor` that contains `at`.

-- An anchor on January 31: February clamps to the 28th, March returns to the 31st (no drift
-- to the 28th), April clamps to the 30th.
SELECT a.at, p.*
  FROM (VALUES (timestamptz '2026-02-10 00:00+00'), ('2026-03-01 00:00+00'),
               ('2026-04-15 00:00+00'), ('2026-08-01 00:00+00')) AS a(at),
       anniversary_period('2026-01-31 00:00+00', 'monthly', a.at) AS p;

-- In a leap year the January 31 anchor gives February 29.
SELECT * FROM anniversary_period('2028-01-31 00:00+00', 'monthly', '2028-02-29 12:00+00');

-- A yearly anchor on February 29: February 28 in common years, February 29 again in the next
-- leap year.
SELECT a.at, p.*
  FROM (VALUES (timestamptz '2028-06-01 00:00+00'), ('2029-06-01 00:00+00'),
               ('2032-02-28 23:59+00'), ('2032-03-01 00:00+00')) AS a(at),
       anniversary_period('2028-02-29 00:00+00', 'yearly', a.at) AS p;

-- Half-open: the boundary instant itself belongs to the next period, the microsecond before
-- it to the previous one.
SELECT a.at, p.*
  FROM (VALUES (timestamptz '2026-02-14 23:59:59.999999+00'), ('2026-02-15 00:00:00+00')) AS a(at),
       anniversary_period('2026-01-15 00:00+00', 'monthly', a.at) AS p;

-- The anchor itself starts the first period; an instant before the anchor falls in a period
-- counted backwards from it.
SELECT * FROM anniversary_period('2026-01-15 00:00+00', 'monthly', '2026-01-15 00:00+00');
SELECT * FROM anniversary_period('2026-01-15 00:00+00', 'monthly', '2025-12-20 00:00+00');

-- America/New_York across daylight saving time: an anchor at 00:30 local time (EST, UTC-5)
-- keeps starting periods at 00:30 local time after the switch to EDT (UTC-4) on 2026-03-08,
-- so the UTC instant moves by an hour; back to EST in November.
SELECT a.at, p.period_start, p.period_end,
       p.period_start AT TIME ZONE 'America/New_York' AS local_start,
       p.period_end AT TIME ZONE 'America/New_York' AS local_end
  FROM (VALUES (timestamptz '2026-02-20 00:00+00'), ('2026-03-20 00:00+00'),
               ('2026-11-20 00:00+00')) AS a(at),
       anniversary_period('2026-02-10 05:30+00', 'monthly', a.at, 'America/New_York') AS p;
-- The same anchor counted in UTC keeps 05:30 UTC instead.
SELECT * FROM anniversary_period('2026-02-10 05:30+00', 'monthly', '2026-03-20 00:00+00', 'UTC');

-- A local time that does not exist (02:30 on 2026-03-08 in New York, skipped by the switch)
-- moves forward to 03:30 EDT, as PostgreSQL's own AT TIME ZONE does; the next period starts at
-- 02:30 local again.
SELECT p.*, p.period_start AT TIME ZONE 'America/New_York' AS local_start,
       p.period_end AT TIME ZONE 'America/New_York' AS local_end
  FROM anniversary_period('2026-02-08 07:30+00', 'monthly', '2026-03-09 00:00+00',
                          'America/New_York') AS p;
SELECT timestamp '2026-03-08 02:30' AT TIME ZONE 'America/New_York' AS postgres_says;

-- The zone decides where a boundary falls: 2026-01-30 16:00 UTC is January 31 00:00 in
-- Shanghai. Counted in Shanghai, the anchor is the 31st, which clamps to February 28 local
-- (Feb 27 16:00 UTC); counted in UTC it is the 30th, which clamps to February 28 UTC.
SELECT z.zone, p.*
  FROM (VALUES ('Asia/Shanghai'), ('UTC')) AS z(zone),
       anniversary_period('2026-01-30 16:00+00', 'monthly', '2026-02-28 00:00+00', z.zone) AS p;

-- The session's TimeZone changes how results print, never which instants they are.
CREATE TEMP TABLE ny_utc AS
SELECT * FROM anniversary_period('2026-02-10 05:30+00', 'monthly', '2026-03-20 00:00+00', 'America/New_York');
SET TimeZone = 'Asia/Tokyo';
SELECT p.period_start = n.period_start AND p.period_end = n.period_end AS same_instants
  FROM anniversary_period('2026-02-10 05:30+00', 'monthly', '2026-03-20 00:00+00', 'America/New_York') AS p,
       ny_utc AS n;
SET TimeZone = 'UTC';
DROP TABLE ny_utc;

-- The time zone argument defaults to UTC.
SELECT * FROM anniversary_period('2026-01-30 16:00+00', 'monthly', '2026-02-28 00:00+00');

-- The function is STRICT: a NULL argument gives no row.
SELECT count(*) AS rows FROM anniversary_period('2026-01-30 16:00+00', 'monthly', NULL);

-- An unknown cycle or time zone is an error (SQLSTATE 22023 invalid_parameter_value), as is
-- an infinite instant (22008 datetime_field_overflow). (expect_error, from 00_setup, prints
-- the SQLSTATE and message of the error a statement raises.)
CALL expect_error($$SELECT * FROM quota.anniversary_period('2026-01-15 00:00+00', 'weekly', '2026-02-01 00:00+00')$$);
CALL expect_error($$SELECT * FROM quota.anniversary_period('2026-01-15 00:00+00', 'monthly', '2026-02-01 00:00+00', 'Mars/Olympus')$$);
CALL expect_error($$SELECT * FROM quota.anniversary_period('2026-01-15 00:00+00', 'monthly', 'infinity')$$);
CALL expect_error($$SELECT * FROM quota.anniversary_period('-infinity', 'monthly', '2026-02-01 00:00+00')$$);

-- =============================================================================================
-- Part 2: get_quota_period(user_id, feature_code) for live subscriptions. Dates are relative
-- to now(), so only relations that hold on any day are printed.

-- 201: started 40 days ago, monthly (free plan). Now lies in the second period:
-- [start_date + 1 month, start_date + 2 months), whatever today's date.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (201, plan_id('free'), now() - interval '40 days', now() + interval '1 year');
SELECT p.period_start = s.start_date + interval '1 month' AS starts_one_month_in,
       p.period_end = s.start_date + interval '2 months' AS ends_two_months_in,
       p.cycle
  FROM get_quota_period(201, 'articles_per_month') p, user_subscriptions s
 WHERE s.user_id = 201;
-- Without a feature: the billing-cycle period, the same one here.
SELECT (SELECT period_start FROM get_quota_period(201)) =
       (SELECT period_start FROM get_quota_period(201, 'articles_per_month')) AS same_period;

-- Usage recorded in an earlier period (a counter written directly with the first period's
-- start) is not counted in the current one.
INSERT INTO user_usage (user_id, feature_code, period_start, period_end, usage_count,
                        last_reset_at, updated_at)
SELECT 201, 'articles_per_month', start_date, start_date + interval '1 month', 7,
       start_date, start_date
  FROM user_subscriptions WHERE user_id = 201;
SELECT * FROM check_user_quota(201, 'articles_per_month');
SELECT record_feature_usage(201, 'articles_per_month', amount => 2);
SELECT * FROM check_user_quota(201, 'articles_per_month');
-- Two counters now: the old period's 7 and the current period's 2.
SELECT u.period_start = s.start_date AS first_period, u.usage_count,
       u.period_start = p.period_start AND u.period_end = p.period_end AS current_period
  FROM user_usage u
  JOIN user_subscriptions s USING (user_id)
  CROSS JOIN get_quota_period(201, 'articles_per_month') p
 WHERE u.user_id = 201
 ORDER BY u.period_start;

-- 202: quota_reset_anchor overrides start_date. Anchored 5 days ago, the period runs from the
-- anchor for one month although the subscription started 40 days ago.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor)
VALUES (202, plan_id('free'), now() - interval '40 days', now() + interval '1 year',
        now() - interval '5 days');
SELECT p.period_start = s.quota_reset_anchor AS starts_at_anchor,
       p.period_end = s.quota_reset_anchor + interval '1 month' AS ends_one_month_later
  FROM get_quota_period(202, 'articles_per_month') p, user_subscriptions s
 WHERE s.user_id = 202;
-- An anchor in the future counts backwards from it: the period ends at the anchor.
UPDATE user_subscriptions SET quota_reset_anchor = now() + interval '3 days' WHERE user_id = 202;
SELECT p.period_start = s.quota_reset_anchor - interval '1 month' AS starts_one_month_before,
       p.period_end = s.quota_reset_anchor AS ends_at_anchor
  FROM get_quota_period(202, 'articles_per_month') p, user_subscriptions s
 WHERE s.user_id = 202;

-- 203: a period belongs to the anchor and ends with the subscription: anchored 20 days before a
-- subscription that started 5 days ago and ends in 5 days, the period starts at the anchor
-- (usage counted under an earlier row with that anchor continues) and ends with the row.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor)
VALUES (203, plan_id('free'), now() - interval '5 days', now() + interval '5 days',
        now() - interval '20 days');
SELECT p.period_start = s.quota_reset_anchor AS starts_at_anchor, p.period_end = s.end_date AS clamped_to_end
  FROM get_quota_period(203, 'articles_per_month') p, user_subscriptions s
 WHERE s.user_id = 203;

-- 204: the cycle comes from the subscription's quota_cycle_type, else the plan's
-- quota_cycle_type, else the plan's billing_cycle. The enterprise plan bills yearly:
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (204, plan_id('enterprise'), now() - interval '400 days', now() + interval '2 years');
SELECT p.period_start = s.start_date + interval '1 year' AS starts_one_year_in,
       p.period_end = s.start_date + interval '2 years' AS ends_two_years_in, p.cycle
  FROM get_quota_period(204) p, user_subscriptions s
 WHERE s.user_id = 204;
-- A plan billed monthly whose quotas reset yearly:
INSERT INTO subscription_plans (plan_code, plan_name, billing_cycle, quota_cycle_type)
VALUES ('monthly_billed_yearly_quota', 'Monthly billing, yearly quota', 'monthly', 'yearly');
UPDATE user_subscriptions SET plan_id = plan_id('monthly_billed_yearly_quota') WHERE user_id = 204;
SELECT cycle FROM get_quota_period(204);
-- The subscription's own quota_cycle_type wins over both.
UPDATE user_subscriptions SET quota_cycle_type = 'monthly' WHERE user_id = 204;
SELECT p.period_start = s.start_date + interval '13 months' AS starts_13_months_in,
       p.period_end = s.start_date + interval '14 months' AS ends_14_months_in, p.cycle
  FROM get_quota_period(204) p, user_subscriptions s
 WHERE s.user_id = 204;

-- No active subscription: no row.
SELECT count(*) AS rows FROM get_quota_period(299);
SELECT count(*) AS rows FROM get_quota_period(299, 'articles_per_month');

-- ---------------------------------------------------------------------------------------------
-- quota.settings.time_zone decides the local calendar the periods follow.
-- 205: anchored at 00:30 New York time 40 days ago.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (205, plan_id('free'),
        date_trunc('day', now() - interval '40 days', 'America/New_York') + interval '30 minutes',
        now() + interval '1 year');
-- Without a settings row (UTC): the period is the UTC anniversary, at the anchor's UTC time of
-- day.
SELECT p.period_start = a.period_start AND p.period_end = a.period_end AS utc_anniversary,
       to_char(p.period_start, 'HH24:MI') = to_char(s.start_date, 'HH24:MI') AS same_utc_time_of_day
  FROM get_quota_period(205) p
  JOIN user_subscriptions s ON s.user_id = 205
  CROSS JOIN anniversary_period(s.start_date, 'monthly', now(), 'UTC') a;
-- Counted in New York: the period is the New York anniversary and always starts at 00:30 New
-- York time, daylight saving time or not.
-- (A change made now applies from the next boundary, 14_continuity; this row says the zone
-- changed to New York in 2000.)
INSERT INTO settings (time_zone, time_zone_changed_at) VALUES ('America/New_York', '2000-01-01');
SELECT p.period_start = a.period_start AND p.period_end = a.period_end AS new_york_anniversary,
       to_char(p.period_start AT TIME ZONE 'America/New_York', 'HH24:MI') AS new_york_time_of_day
  FROM get_quota_period(205) p
  JOIN user_subscriptions s ON s.user_id = 205
  CROSS JOIN anniversary_period(s.start_date, 'monthly', now(), 'America/New_York') a;
-- The session's TimeZone plays no part.
SET TimeZone = 'Asia/Kolkata';
SELECT p.period_start = a.period_start AS still_new_york
  FROM get_quota_period(205) p
  JOIN user_subscriptions s ON s.user_id = 205
  CROSS JOIN anniversary_period(s.start_date, 'monthly', now(), 'America/New_York') a;
SET TimeZone = 'UTC';
-- Back to the default for the files that follow.
DELETE FROM settings;

-- ---------------------------------------------------------------------------------------------
-- Reset rules other than billing_cycle.
-- 206: platform_accounts (reset rule subscription) never resets: one counter for good, across
-- every subscription of the user.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (206, plan_id('free'), now() - interval '40 days', now() + interval '1 year');
SELECT p.period_start = '-infinity' AS from_minus_infinity, p.period_end = 'infinity' AS to_infinity,
       p.cycle
  FROM get_quota_period(206, 'platform_accounts') p;

-- A feature that never resets: one counter for the user's whole life, -infinity to infinity.
INSERT INTO features (code, name, unit, reset_rule, default_limit)
VALUES ('lifetime_exports', 'Lifetime exports', 'exports', 'never', 3);
SELECT * FROM get_quota_period(206, 'lifetime_exports');
SELECT record_feature_usage(206, 'platform_accounts', amount => 2);
SELECT record_feature_usage(206, 'lifetime_exports', amount => 2);
SELECT feature_code, usage_count, period_start = '-infinity' AS from_minus_infinity,
       period_end = 'infinity' AS to_infinity
  FROM user_usage WHERE user_id = 206 ORDER BY feature_code;

-- The subscription ends (cancelled) and a new one starts: both counters carry on (a renewal
-- never gives back connected accounts).
UPDATE user_subscriptions SET status = 'cancelled' WHERE user_id = 206;
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (206, plan_id('professional'), now() - interval '1 hour', now() + interval '1 year');
SELECT 'platform_accounts' AS feature, * FROM check_user_quota(206, 'platform_accounts')
UNION ALL
SELECT 'lifetime_exports', * FROM check_user_quota(206, 'lifetime_exports');

RESET search_path;
