-- 21_rollover: what a period's allowance left unused becomes a grant of the next period (source
-- 'rollover'), capped by rollover_max (catalog or plan feature; the plan's wins) and lasting
-- rollover_periods periods. It is created once per user, feature and period, by the first
-- write that touches the new period; every read counts it from the period's first instant.
-- Users 21xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- A period that ended: its counter and its one record, written as the uses would have (the
-- ledger holds), for a subscription that started 40 days ago (monthly from its start).
CREATE FUNCTION public.used_last_period(u bigint, f text, n integer)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO quota.user_usage (user_id, feature_code, period_start, period_end, usage_count,
                                  last_reset_at, updated_at)
    SELECT u, f, s.start_date, s.start_date + interval '1 month', n, now(), now()
      FROM quota.user_subscriptions s WHERE s.user_id = u;
    INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, created_at)
    SELECT u, f, s.start_date, n, s.start_date FROM quota.user_subscriptions s
     WHERE s.user_id = u AND n <> 0;
$$;

-- Articles roll over, at most 5, for one period.
UPDATE quota.features SET rollover_max = 5 WHERE code = 'articles_per_month';

-- 2101, free plan (10 a month): 3 used last period, so 5 of the 7 unused roll over.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2101, plan_id('free'), now() - interval '40 days', now() + interval '300 days');
SELECT used_last_period(2101, 'articles_per_month', 3);
-- Before any write the reads count it already; its grant does not exist yet.
SELECT * FROM check_user_quota(2101, 'articles_per_month');
SELECT count(*) AS grants FROM quota.grants WHERE user_id = 2101;
SELECT allowance, allowance_used, grants #>> '{0,source}' AS source,
       grants #>> '{0,amount}' AS amount, grants #> '{0,grant_id}' AS grant_id
  FROM usage_overview(2101) WHERE feature_code = 'articles_per_month';
-- The first use creates it: from the period's start until its end.
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2101, 'articles_per_month', 1);
SELECT g.source, g.amount, g.remaining, g.rollover_from = s.start_date AS from_last_period,
       g.effective_from = p.period_start AS from_period_start,
       g.expires_at = p.period_end AS until_period_end
  FROM quota.grants g, quota.user_subscriptions s, get_quota_period(2101, 'articles_per_month') p
 WHERE g.user_id = 2101 AND s.user_id = 2101;
-- Every later write finds it: created once.
SELECT allowed FROM consume(2101, 'articles_per_month', 1);
SELECT record_feature_usage(2101, 'articles_per_month');
SELECT count(*) AS grants FROM quota.grants WHERE user_id = 2101;
-- The allowance first, then the rollover: 7 left of 10, then 5.
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2101, 'articles_per_month', 12);
SELECT remaining AS rollover_left FROM quota.grants WHERE user_id = 2101;
SELECT allowed, remaining FROM consume(2101, 'articles_per_month', 1);
SELECT * FROM verify_ledger(2101);
SELECT * FROM verify_grants(2101);

-- 2102: a plan's own rule wins: professional (100) passes all of it on (-1), for 2 periods.
UPDATE plan_features SET rollover_max = -1, rollover_periods = 2
 WHERE plan_id = plan_id('professional') AND feature_code = 'articles_per_month';
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2102, plan_id('professional'), now() - interval '40 days', now() + interval '300 days');
SELECT used_last_period(2102, 'articles_per_month', 40);
SELECT quota_limit, remaining FROM check_user_quota(2102, 'articles_per_month');
SELECT allowed FROM reserve(2102, 'articles_per_month', 1);
SELECT g.amount, g.expires_at = p.period_end + interval '1 month' AS two_periods
  FROM quota.grants g, get_quota_period(2102, 'articles_per_month') p WHERE g.user_id = 2102;
-- A plan's 0 means none, whatever the catalog says: 2106, on professional too, gets none.
UPDATE plan_features SET rollover_max = 0, rollover_periods = NULL
 WHERE plan_id = plan_id('professional') AND feature_code = 'articles_per_month';
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2106, plan_id('professional'), now() - interval '40 days', now() + interval '300 days');
SELECT used_last_period(2106, 'articles_per_month', 40);
SELECT quota_limit FROM check_user_quota(2106, 'articles_per_month');

-- 2103: a first period has no period before it; 2104: a period used beyond its limit left
-- nothing unused. Neither gets a rollover.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2103, plan_id('free'), now() - interval '5 days', now() + interval '300 days'),
       (2104, plan_id('free'), now() - interval '40 days', now() + interval '300 days');
SELECT used_last_period(2104, 'articles_per_month', 12);
SELECT user_id, quota_limit, remaining FROM check_user_quota(2103, 'articles_per_month'), (VALUES (2103)) u (user_id)
UNION ALL
SELECT user_id, quota_limit, remaining FROM check_user_quota(2104, 'articles_per_month'), (VALUES (2104)) u (user_id);
SELECT allowed FROM consume(2103, 'articles_per_month', 1);
SELECT allowed FROM consume(2104, 'articles_per_month', 1);
SELECT count(*) AS grants FROM quota.grants WHERE user_id IN (2103, 2104);

-- 2105: a rollover voided stays voided: it is not created again, nor counted.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2105, plan_id('free'), now() - interval '40 days', now() + interval '300 days');
SELECT used_last_period(2105, 'articles_per_month', 0);
SELECT allowed FROM consume(2105, 'articles_per_month', 1);
SELECT void_reason FROM void_grant((SELECT id FROM quota.grants WHERE user_id = 2105), 'goodwill revoked');
SELECT allowed FROM consume(2105, 'articles_per_month', 1);
SELECT count(*) AS grants, quota_limit FROM quota.grants, check_user_quota(2105, 'articles_per_month')
 WHERE user_id = 2105 GROUP BY quota_limit;

-- A rule is a limit's value: -1 or more, and at least one period.
UPDATE quota.features SET rollover_max = -2 WHERE code = 'articles_per_month';
UPDATE quota.features SET rollover_periods = 0 WHERE code = 'articles_per_month';

UPDATE quota.features SET rollover_max = NULL WHERE code = 'articles_per_month';
UPDATE plan_features SET rollover_max = NULL
 WHERE plan_id = plan_id('professional') AND feature_code = 'articles_per_month';
