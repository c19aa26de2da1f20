-- 23_gauges: a running count (quota.features.kind = 'gauge'), such as the seed's connected
-- platform accounts: consume counts an account up, checked against the limit; release_usage
-- counts one down when it is removed, never below zero, idempotent with a key, in
-- quota.releases (the ledger subtracts it).
-- It never resets, whatever reset_rule says. Users 23xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

UPDATE quota.features SET kind = 'gauge', reset_rule = 'day' WHERE code = 'platform_accounts';

-- 2301, free plan: 3 accounts at most.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2301, plan_id('free'), now() - interval '40 days', now() + interval '300 days');
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2301, 'platform_accounts', 1, 'connect-a');
SELECT allowed, current_usage, remaining FROM consume(2301, 'platform_accounts', 2, 'connect-bc');
SELECT allowed, remaining FROM consume(2301, 'platform_accounts', 1, 'connect-d');
-- One account removed: one place free again; a retry of the removal frees nothing more.
SELECT * FROM release_usage(2301, 'platform_accounts', 1, 'remove-b');
SELECT * FROM release_usage(2301, 'platform_accounts', 1, 'remove-b');
SELECT allowed, current_usage, remaining FROM consume(2301, 'platform_accounts', 1, 'connect-d');
-- Never below zero: releasing 10 of 3 releases 3; releasing from nothing releases nothing.
SELECT * FROM release_usage(2301, 'platform_accounts', 10);
SELECT * FROM release_usage(2301, 'platform_accounts', 1);
-- One counter for good (the 'day' rule does not apply to a running count), and its ledger.
SELECT period_start, period_end, cycle FROM get_quota_period(2301, 'platform_accounts');
SELECT amount, idempotency_key FROM usage_records
 WHERE user_id = 2301 AND feature_code = 'platform_accounts' ORDER BY id;
SELECT amount, idempotency_key, period_start FROM quota.releases WHERE user_id = 2301 ORDER BY id;
SELECT * FROM verify_ledger(2301);
-- The limit is checked on the way up only: a lowered limit leaves the accounts connected, and
-- removing them is always allowed.
SELECT allowed FROM consume(2301, 'platform_accounts', 3);
SELECT * FROM adjust_quota(2301, 'platform_accounts', 1, 'downgrade');
SELECT * FROM release_usage(2301, 'platform_accounts', 1);
SELECT allowed, remaining FROM consume(2301, 'platform_accounts', 1);
SELECT * FROM verify_ledger(2301);
-- Only running counts count down.
SELECT * FROM release_usage(2301, 'articles_per_month', 1);
SELECT * FROM release_usage(2399, 'platform_accounts', 1);
SELECT * FROM release_usage(2301, 'platform_accounts', 0);
-- Who may: an app server, not a reporting role.
SET ROLE quota_reader;
\set VERBOSITY sqlstate
SELECT * FROM release_usage(2301, 'platform_accounts', 1);
\set VERBOSITY default
RESET ROLE;

UPDATE quota.features SET kind = 'metered', reset_rule = 'subscription' WHERE code = 'platform_accounts';

-- The overview says what each feature is and when it starts again from zero.
UPDATE quota.features SET kind = 'gauge' WHERE code = 'platform_accounts';
SELECT feature_code, kind, cycle, next_reset IS NOT NULL AS resets,
       next_reset = period_end AS at_period_end
  FROM usage_overview(2301) ORDER BY feature_code;
UPDATE quota.features SET kind = 'metered' WHERE code = 'platform_accounts';
