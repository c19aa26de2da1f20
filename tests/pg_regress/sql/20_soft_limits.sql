-- 20_soft_limits: an allowed overage beyond the limit, per catalog feature
-- (features.overage_limit) or per plan feature (plan_features.overage_limit, which wins): none
-- by default, N units a period, or unlimited (-1). A use beyond the limit and the grants but
-- within the overage is allowed; its overage units are marked in quota.overage_uses, so billing
-- can charge them. Users 20xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- Image exports: 100 a period by default, 10 more allowed as overage.
INSERT INTO quota.features (code, name, unit, reset_rule, default_limit, overage_limit)
VALUES ('image_exports', 'Image exports', 'images', 'billing_cycle', 100, 10);

-- 2001, free plan (no plan row for image_exports: the catalog's 100 and 10).
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2001, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT * FROM check_user_quota(2001, 'image_exports');
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2001, 'image_exports', 100);
-- Beyond the limit, within the overage: allowed, and said so by the figures.
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2001, 'image_exports', 4);
SELECT has_quota, current_usage, quota_limit, remaining,
       remaining = quota_limit - current_usage AS seed_identity
  FROM check_user_quota(2001, 'image_exports');
-- 7 more do not fit in the 6 left; 6 do; then nothing is left.
SELECT allowed, remaining FROM consume(2001, 'image_exports', 7);
SELECT allowed, remaining FROM consume(2001, 'image_exports', 6);
SELECT * FROM check_user_quota(2001, 'image_exports');
-- The ledger marks the overage of each record.
SELECT r.amount, o.amount AS overage
  FROM usage_records r LEFT JOIN quota.overage_uses o ON o.user_id = r.user_id AND o.record_id = r.id
 WHERE r.user_id = 2001 ORDER BY r.id;
SELECT current_usage, quota_limit, remaining, overage_limit, overage_used
  FROM usage_overview(2001) WHERE feature_code = 'image_exports';
-- A refund gives the overage back first: billing charges only what stays used.
SELECT refunded_amount FROM refund_usage((SELECT max(id) FROM usage_records WHERE user_id = 2001));
SELECT overage_used FROM usage_overview(2001) WHERE feature_code = 'image_exports';
-- Refunding the first 100 brings the counter back within the limit: no overage stays.
SELECT refunded_amount FROM refund_usage((SELECT min(id) FROM usage_records WHERE user_id = 2001));
SELECT current_usage, overage_used FROM usage_overview(2001) WHERE feature_code = 'image_exports';
SELECT * FROM verify_ledger(2001);

-- 2002: the grants come before the overage: 100 of the allowance, then a grant of 5, then 3
-- of the overage.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2002, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT amount FROM grant_quota(2002, 'image_exports', 5);
SELECT allowed FROM consume(2002, 'image_exports', 100);
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2002, 'image_exports', 8);
SELECT remaining AS grant_left FROM quota.grants WHERE user_id = 2002;
SELECT o.amount AS overage FROM quota.overage_uses o WHERE o.user_id = 2002;
SELECT * FROM check_user_quota(2002, 'image_exports');
SELECT * FROM verify_ledger(2002);
SELECT * FROM verify_grants(2002);

-- 2003: record_feature_usage, which records after the fact, counts beyond the overage too; only
-- the overage is marked as such.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2003, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT record_feature_usage(2003, 'image_exports', amount => 125);
SELECT usage_count FROM user_usage WHERE user_id = 2003 AND feature_code = 'image_exports';
SELECT o.amount AS overage FROM quota.overage_uses o WHERE o.user_id = 2003;
SELECT * FROM check_user_quota(2003, 'image_exports');

-- 2004: a plan's own overage wins: publish_per_month of the free plan (20) with unlimited
-- overage; the figures are those of an unlimited feature, the overview keeps the limit.
UPDATE plan_features SET overage_limit = -1
 WHERE plan_id = plan_id('free') AND feature_code = 'publish_per_month';
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2004, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2004, 'publish_per_month', 1000);
SELECT * FROM check_user_quota(2004, 'publish_per_month');
SELECT current_usage, allowance, allowance_used, overage_limit, overage_used
  FROM usage_overview(2004) WHERE feature_code = 'publish_per_month';
-- A plan's 0 means none, whatever the catalog says.
INSERT INTO plan_features (plan_id, feature_code, feature_value, overage_limit)
VALUES (plan_id('free'), 'image_exports', 50, 0);
SELECT allowed FROM consume(2004, 'image_exports', 50);
SELECT allowed, remaining FROM consume(2004, 'image_exports', 1);
DELETE FROM plan_features WHERE plan_id = plan_id('free') AND feature_code = 'image_exports';
UPDATE plan_features SET overage_limit = NULL
 WHERE plan_id = plan_id('free') AND feature_code = 'publish_per_month';

-- 2005: a hold may take the overage too, after the allowance and the grants.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2005, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT allowed, remaining FROM reserve(2005, 'image_exports', 108);
SELECT allowed, remaining FROM consume(2005, 'image_exports', 3);
SELECT allowed, remaining FROM consume(2005, 'image_exports', 2);
SELECT settled FROM settle((SELECT id FROM quota.reservations WHERE user_id = 2005), 108);
SELECT * FROM check_user_quota(2005, 'image_exports');
SELECT sum(amount) AS overage FROM quota.overage_uses WHERE user_id = 2005;
SELECT * FROM verify_holds(2005);
SELECT * FROM verify_ledger(2005);

-- An overage is a limit's value: -1 or more.
UPDATE quota.features SET overage_limit = -2 WHERE code = 'image_exports';
UPDATE plan_features SET overage_limit = -5 WHERE plan_id = plan_id('free');

-- Nobody writes the overage ledger but the uses and refunds.
SET ROLE quota_app;
\set VERBOSITY sqlstate
DELETE FROM quota.overage_uses WHERE user_id = 2001;
SELECT count(*) > 0 AS app_reads_overage FROM quota.overage_uses WHERE user_id = 2001;
RESET ROLE;
SET ROLE quota_admin;
UPDATE quota.overage_uses SET amount = 1 WHERE user_id = 2001;
RESET ROLE;
\set VERBOSITY default

-- The catalog is left as it was for the files after this one.
DELETE FROM usage_records WHERE feature_code = 'image_exports';
DELETE FROM user_usage WHERE feature_code = 'image_exports';
DELETE FROM quota.grant_uses WHERE user_id = 2002;
DELETE FROM quota.grants WHERE feature_code = 'image_exports';
DELETE FROM quota.reservations WHERE feature_code = 'image_exports';
DELETE FROM quota.features WHERE code = 'image_exports';
