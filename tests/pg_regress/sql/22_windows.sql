-- 22_windows: limits per calendar hour, day, ISO week, month or year in the configured time
-- zone, besides the billing cycle: features.reset_rule, or a plan feature's own reset_rule,
-- which wins. get_quota_period answers the window in force; calendar_window(window, at, zone)
-- is the arithmetic alone, for any instant. Users 22xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- Days in New York: the day of the spring-forward change lasts 23 hours, the fall-back one 25.
SELECT window_start, window_end, window_end - window_start AS length
  FROM calendar_window('day', '2026-03-08 12:00+00', 'America/New_York');
SELECT window_start, window_end, window_end - window_start AS length
  FROM calendar_window('day', '2026-11-01 12:00+00', 'America/New_York');
-- The hour that happens twice on the fall-back night is one window of two hours.
SELECT window_start, window_end FROM calendar_window('hour', '2026-11-01 06:30+00', 'America/New_York');
-- ISO weeks start on Monday; 2026 has a week 53 (28 December to 3 January), here in Shanghai.
SELECT window_start, window_end,
       extract(isoyear FROM window_start AT TIME ZONE 'Asia/Shanghai') AS iso_year,
       extract(week FROM window_start AT TIME ZONE 'Asia/Shanghai') AS iso_week
  FROM calendar_window('week', '2027-01-02 12:00+00', 'Asia/Shanghai');
-- A calendar month against the anniversary of a subscription that started on 31 January.
SELECT window_start, window_end FROM calendar_window('month', '2026-02-20 00:00+00');
SELECT period_start, period_end FROM anniversary_period('2026-01-31', 'monthly', '2026-02-20');
SELECT window_start, window_end FROM calendar_window('year', '2026-12-31 23:30+00', 'Asia/Shanghai');
-- Not a window.
SELECT * FROM calendar_window('fortnight', now());
SELECT * FROM calendar_window('billing_cycle', now());

-- Daily article limits, as the seed had them before its migration 016: the free plan gets 3 a
-- day of articles in its own right (the plan's reset_rule wins over the catalog's).
INSERT INTO quota.settings (time_zone) VALUES ('Asia/Shanghai');
-- A change of zone applies from each period's next boundary; this file wants Shanghai's days at
-- once, as if the zone had always been Shanghai.
UPDATE quota.settings SET time_zone_changed_at = '-infinity';
UPDATE plan_features SET feature_value = 3, reset_rule = 'day'
 WHERE plan_id = plan_id('free') AND feature_code = 'articles_per_month';
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2201, plan_id('free'), now() - interval '40 days', now() + interval '300 days'),
       (2202, plan_id('professional'), now() - interval '40 days', now() + interval '300 days');
-- The window in force is today in Shanghai, for the free plan; professional keeps the cycle.
SELECT p.cycle, (p.period_start, p.period_end) = (w.window_start, w.window_end) AS today_in_shanghai
  FROM get_quota_period(2201, 'articles_per_month') p,
       calendar_window('day', now(), 'Asia/Shanghai') w;
SELECT cycle FROM get_quota_period(2202, 'articles_per_month');
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2201, 'articles_per_month', 3);
SELECT allowed, remaining FROM consume(2201, 'articles_per_month', 1);
SELECT (u.period_start, u.period_end) = (w.window_start, w.window_end) AS counted_in_today
  FROM user_usage u, calendar_window('day', now(), 'Asia/Shanghai') w
 WHERE u.user_id = 2201 AND u.feature_code = 'articles_per_month';
SELECT cycle, period_start = (SELECT window_start FROM calendar_window('day', now(), 'Asia/Shanghai')) AS today
  FROM usage_overview(2201) WHERE feature_code = 'articles_per_month';
-- Yesterday's window is another counter: what was used then does not count today.
INSERT INTO user_usage (user_id, feature_code, period_start, period_end, usage_count, last_reset_at, updated_at)
SELECT 2201, 'articles_per_month', w.window_start - interval '1 day', w.window_start, 3, now(), now()
  FROM calendar_window('day', now(), 'Asia/Shanghai') w;
INSERT INTO usage_records (user_id, feature_code, period_start, amount, created_at)
SELECT 2201, 'articles_per_month', w.window_start - interval '1 day', 3, now()
  FROM calendar_window('day', now(), 'Asia/Shanghai') w;
SELECT current_usage, quota_limit FROM check_user_quota(2201, 'articles_per_month');
SELECT * FROM verify_ledger(2201);

-- A catalog feature by ISO week, and a window that is not one.
UPDATE quota.features SET reset_rule = 'week' WHERE code = 'keyword_distillation';
SELECT cycle, (period_start, period_end) = (w.window_start, w.window_end) AS this_week
  FROM get_quota_period(2202, 'keyword_distillation'), calendar_window('week', now(), 'Asia/Shanghai') w;
UPDATE quota.features SET reset_rule = 'fortnight' WHERE code = 'keyword_distillation';
UPDATE plan_features SET reset_rule = 'weekly' WHERE plan_id = plan_id('free');

UPDATE quota.features SET reset_rule = 'billing_cycle' WHERE code = 'keyword_distillation';
UPDATE plan_features SET feature_value = 10, reset_rule = NULL
 WHERE plan_id = plan_id('free') AND feature_code = 'articles_per_month';
DELETE FROM quota.settings;
