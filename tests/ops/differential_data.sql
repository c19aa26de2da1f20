-- Random plans, plan features, subscriptions and counters for scripts/ops/differential.sh, as
-- temporary tables that tests/ops/differential_own.sql and differential_app.sql then load into
-- quota's own tables and into the seed-shaped application schema. psql variables:
--   seed     setseed() argument: the same seed gives the same rows (dates relative to now())
--   users    users 1..users, each with 0 to 3 subscriptions
--   hostile  true for the application schema, whose columns check nothing: NULL dates,
--            statuses and plans, plans that do not exist, odd cycles, custom_quotas that are
--            not objects or hold values that are not limits, NULL counters
-- Either way: every status, dates around now(), infinite and far dates (BC, beyond the year
-- 9999), several active subscriptions per user, plans deleted afterwards (ids
-- 6, 12, ..., 36), valid custom quotas including the extremes -1 and 2147483647.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SELECT setseed(:seed) \g /dev/null

CREATE TEMP TABLE gen_plans AS
SELECT i AS id, 'plan_' || i AS plan_code, i % 6 = 0 AS deleted,
       CASE WHEN :hostile AND random() < 0.1 THEN NULL
            WHEN random() < 0.7 THEN 'monthly' ELSE 'yearly' END AS billing_cycle,
       (ARRAY['monthly', 'yearly', NULL, NULL, NULL])[1 + floor(random() * 5)::int] AS quota_cycle_type
  FROM generate_series(1, 36) i;

CREATE TEMP TABLE gen_plan_features AS
SELECT p.id AS plan_id, f.code AS feature_code,
       CASE WHEN random() < 0.1 THEN -1 ELSE floor(random() * 1001)::int END AS feature_value,
       CASE WHEN f.code = 'storage_space'
            THEN (ARRAY[NULL, 'B', 'KB', 'MB', 'GB', 'TB'])[1 + floor(random() * 6)::int]
            WHEN random() < 0.1 THEN f.unit END AS feature_unit,
       -- Soft limits (quota's own plan_features): none, 0, N or unlimited.
       (ARRAY[NULL, NULL, NULL, 0, 7, 250, -1])[1 + floor(random() * 7)::int] AS overage_limit,
       -- Limit windows of the plan's own (quota's own plan_features), mostly none.
       (ARRAY[NULL, NULL, NULL, NULL, 'hour', 'day', 'week', 'month', 'year', 'never'])
           [1 + floor(random() * 10)::int] AS reset_rule,
       -- Further limits of the plan's own (quota's own plan_features), mostly none.
       (ARRAY[NULL, NULL, NULL, NULL, '{}', '{"day": 30}', '{"hour": 5, "week": 200}',
              '{"billing_cycle": -1, "day": 0}'])[1 + floor(random() * 8)::int]::jsonb AS window_limits,
       -- A configuration value of the plan's own (quota's own plan_features; config features).
       (ARRAY[NULL, '"large"', '{"max_resolution": "4k"}', '50', 'null'])
           [1 + floor(random() * 5)::int]::jsonb AS config_value
  FROM gen_plans p CROSS JOIN quota.features f
 WHERE random() < 0.7;
-- The catalog's soft limits, which the plans' own override.
UPDATE quota.features SET overage_limit = CASE code WHEN 'publish_per_month' THEN 5
                                                    WHEN 'keyword_distillation' THEN -1 END;
-- A running count, whose one counter for good both paths must find.
UPDATE quota.features SET kind = 'gauge' WHERE code = 'keyword_distillation';

CREATE TEMP TABLE gen_users AS
SELECT u AS user_id, floor(random() * 4)::int AS subscriptions FROM generate_series(1, :users) u;

-- Drawn column by column from r, a row of random numbers, so that each choice is independent.
CREATE TEMP TABLE gen_draws AS
SELECT row_number() OVER (ORDER BY u.user_id, n) AS id, u.user_id,
       random() AS r_plan, random() AS r_plan_pick, random() AS r_start, random() AS r_start_days,
       random() AS r_end, random() AS r_end_days, random() AS r_status, random() AS r_anchor,
       random() AS r_cycle, random() AS r_custom, random() AS r_custom_pick
  FROM gen_users u JOIN generate_series(1, 3) n ON n <= u.subscriptions;

CREATE TEMP TABLE gen_subscriptions AS
WITH dated AS (
    SELECT d.*,
           CASE WHEN :hostile AND r_start < 0.04 THEN NULL
                WHEN r_start < 0.06 THEN '-infinity'::timestamptz
                -- 100 to 6,500 years ago, BC dates down to the year 4713 BC PostgreSQL allows
                WHEN r_start < 0.08 THEN now() - interval '1 year' * (100 + r_start_days * 6400)
                WHEN r_start < 0.12 THEN now() + interval '1 day' * (r_start_days * 60)
                ELSE now() - interval '1 day' * (r_start_days * 800) END AS start_date
      FROM gen_draws d)
SELECT id, user_id,
       CASE WHEN :hostile AND r_plan < 0.03 THEN NULL
            WHEN :hostile AND r_plan < 0.06 THEN (ARRAY[6, 12, 18, 99999])[1 + floor(r_plan_pick * 4)::int]
            ELSE (SELECT p.id FROM gen_plans p WHERE NOT p.deleted
                   ORDER BY p.id OFFSET floor(r_plan_pick * 30)::int LIMIT 1) END AS plan_id,
       start_date,
       CASE WHEN :hostile AND r_end < 0.04 THEN NULL
            WHEN r_end < 0.08 THEN 'infinity'::timestamptz
            -- 10 to 9,000 years ahead: some beyond the year 9999
            WHEN r_end < 0.10 THEN now() + interval '1 year' * (10 + r_end_days * 9000)
            ELSE CASE WHEN isfinite(start_date) THEN start_date ELSE now() - interval '400 days' END
                 + interval '1 day' * (1 + r_end_days * 900) END AS end_date,
       CASE WHEN :hostile AND r_status < 0.03 THEN NULL
            WHEN :hostile AND r_status < 0.05 THEN 'ACTIVE'
            WHEN r_status < 0.7 THEN 'active'
            ELSE (ARRAY['paused', 'cancelled', 'expired', 'pending'])[1 + floor((r_status - 0.7) / 0.3 * 4)::int] END AS status,
       CASE WHEN r_anchor < 0.8 THEN NULL
            WHEN r_anchor < 0.97 THEN now() - interval '1 day' * (r_anchor * 400)
            WHEN r_anchor < 0.985 THEN 'infinity'::timestamptz
            ELSE now() - interval '1 year' * 6000 END AS quota_reset_anchor,
       CASE WHEN :hostile AND r_cycle < 0.02 THEN 'weekly'
            WHEN r_cycle < 0.8 THEN NULL
            WHEN r_cycle < 0.9 THEN 'monthly' ELSE 'yearly' END AS quota_cycle_type,
       CASE WHEN r_custom < 0.4 THEN NULL
            WHEN :hostile AND r_custom >= 0.8
            THEN (ARRAY['["a","xxxxxxxxxxxxarticl","es_per_month"]', '[]', '"articles_per_month"',
                        '42', 'true', 'null', '{"articles_per_month": "abc"}',
                        '{"storage_space": 6.5}', '{"publish_per_month": true}',
                        '{"articles_per_month": {}}', '{"keyword_distillation": 1e20}',
                        '{"platform_accounts": -5}', '{"api_calls": "10"}',
                        '{"articles_per_month": null}', '{"unknown_feature": 5}',
                        '{"storage_space": 2147483648}'])[1 + floor(r_custom_pick * 16)::int]::jsonb
            ELSE (SELECT coalesce(jsonb_object_agg(f.code, CASE WHEN f.kind = 'boolean' THEN to_jsonb(r < 0.5)
                                                                WHEN f.kind = 'config' THEN to_jsonb('custom-' || floor(r * 9))
                                                                WHEN r < 0.1 THEN to_jsonb(-1)
                                                                WHEN r < 0.15 THEN to_jsonb(2147483647)
                                                                ELSE to_jsonb(floor(r * 1000)::int) END), '{}')
                    FROM (SELECT code, kind, random() AS r, random() AS pick FROM quota.features
                           WHERE d.id IS NOT NULL) f
                   WHERE f.pick < 0.4) END AS custom_quotas
  FROM dated d;

-- Counters: for about half of each subscription's (subscription, feature) pairs, one counter
-- at the current monthly or yearly anniversary of its anchor (as the UTC calendar has it), the
-- one before, the subscription's start, or -infinity (a feature that never resets). Some hit
-- the period a reading function computes, some do not.
CREATE TEMP TABLE gen_usage AS
WITH candidates AS (
    SELECT s.user_id, f.code AS feature_code, random() AS r, random() AS r_count,
           coalesce(s.quota_reset_anchor, s.start_date) AS anchor, s.start_date
      FROM gen_subscriptions s CROSS JOIN quota.features f
     WHERE isfinite(coalesce(s.quota_reset_anchor, s.start_date))),
months AS (
    SELECT c.*, (extract(year FROM age(now(), anchor)) * 12
                 + extract(month FROM age(now(), anchor)))::int AS k
      FROM candidates c WHERE r < 0.5)
SELECT DISTINCT ON (user_id, feature_code, period_start)
       user_id, feature_code, period_start,
       CASE WHEN isfinite(period_start) THEN period_start + interval '1 month' ELSE 'infinity' END AS period_end,
       CASE WHEN :hostile AND r_count < 0.1 THEN NULL ELSE floor(r_count * 1200)::int END AS usage_count
  FROM (SELECT m.*,
               CASE WHEN r < 0.2 THEN anchor + make_interval(months => k)
                    WHEN r < 0.3 THEN anchor + make_interval(months => k - 1)
                    WHEN r < 0.4 THEN anchor + make_interval(years => k / 12)
                    WHEN r < 0.45 THEN start_date
                    ELSE '-infinity'::timestamptz END AS period_start
          FROM months m) p
 WHERE period_start IS NOT NULL
 ORDER BY user_id, feature_code, period_start;

-- Holds (quota.reservations): on about a tenth of the counters, one or two, some expired but not
-- yet reclaimed, some settled or released. The counters of quota's own tables keep what the
-- holds of state 'held' claim (user_usage.held); what counts is decided by the clock on both
-- paths.
CREATE TEMP TABLE gen_holds AS
SELECT c.user_id, c.feature_code, c.period_start, c.period_end, h.amount,
       now() + CASE WHEN h.r_expiry < 0.3 THEN -interval '1 minute'
                    ELSE interval '10 minutes' END AS expires_at,
       CASE WHEN h.r_state < 0.8 THEN 'held' WHEN h.r_state < 0.9 THEN 'settled'
            ELSE 'released' END AS state
  FROM gen_usage c
 CROSS JOIN LATERAL (SELECT 1 + floor(random() * 30)::bigint AS amount, random() AS r_expiry,
                            random() AS r_state, random() AS r_pick
                       FROM generate_series(1, 2) WHERE c.user_id IS NOT NULL) h
 WHERE h.r_pick < 0.06;

-- Grants (quota.grants, the extension's own in both databases): for about a third of the users,
-- one to three of a feature, some spent, some voided, expired or not yet effective, some never
-- expiring. What counts is decided by the clock on both paths.
CREATE TEMP TABLE gen_grants AS
SELECT u.user_id, f.code AS feature_code, amount, floor(r_left * (amount + 1))::bigint AS remaining,
       (floor(r_priority * 3) - 1)::int AS priority,
       now() + CASE WHEN r_window < 0.1 THEN interval '2 days' ELSE -interval '20 days' END AS effective_from,
       CASE WHEN r_window < 0.3 THEN NULL
            WHEN r_window < 0.45 THEN now() - interval '1 day'
            ELSE now() + make_interval(days => 1 + floor(r_window * 60)::int) END AS expires_at,
       r_void < 0.1 AS voided
  FROM gen_users u
 CROSS JOIN LATERAL (SELECT x.code, random() AS r_pick FROM quota.features x
                     WHERE u.user_id IS NOT NULL) f
 -- Each lateral subquery names the row it belongs to: an uncorrelated one runs once.
 CROSS JOIN LATERAL (SELECT 1 + floor(random() * 50)::bigint AS amount, random() AS r_left,
                            random() AS r_priority, random() AS r_window, random() AS r_void
                      WHERE f.code IS NOT NULL) v
 WHERE f.r_pick < 0.12;

-- Window counters (quota.window_usage, the extension's own in both databases): for about half
-- of the users' counters, the current UTC hour's and day's, and yesterday's, which no read may
-- count.
CREATE TEMP TABLE gen_windows AS
SELECT DISTINCT ON (c.user_id, c.feature_code, w.name, w.start)
       c.user_id, c.feature_code, w.name AS window_name, w.start AS window_start,
       w.start + w.length AS window_end, floor(random() * 60)::bigint AS usage_count
  FROM gen_usage c
 CROSS JOIN LATERAL (VALUES ('hour', date_trunc('hour', now()), interval '1 hour'),
                            ('day', date_trunc('day', now()), interval '1 day'),
                            ('day', date_trunc('day', now()) - interval '1 day', interval '1 day'))
       AS w (name, start, length)
 WHERE c.user_id IS NOT NULL AND random() < 0.5
 ORDER BY c.user_id, c.feature_code, w.name, w.start;
