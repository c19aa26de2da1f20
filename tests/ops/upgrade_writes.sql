-- The same writes on an upgraded and a freshly installed database (scripts/ops/upgrade.sh), on
-- top of tests/ops/dump_restore_data.sql: every writing function, their retries and refusals,
-- the triggers, and the LISTEN/NOTIFY events they send, printed in a fixed order for diff.
-- Run with PGTZ=UTC and -v t0=<the instant the fixture's now() was pinned to>; psql prints
-- each notification with the sender's PID, which the caller removes.
\pset footer off
\pset null '<null>'
LISTEN quota_updated;
LISTEN storage_quota_changed;
LISTEN quota_threshold;

-- try(statement): 'ok', or the SQLSTATE and message of the error it raised.
CREATE FUNCTION pg_temp.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

\echo '== consume: a new use, its retry, the key reused for another amount, a refusal, unlimited'
SELECT * FROM quota.consume(1, 'articles_per_month', 2, 'w-1', 'article', 201, '{"w": 1}');
SELECT * FROM quota.consume(1, 'articles_per_month', 2, 'w-1', 'article', 201, '{"w": 1}');
SELECT pg_temp.try($$SELECT * FROM quota.consume(1, 'articles_per_month', 3, 'w-1')$$);
SELECT * FROM quota.consume(6, 'articles_per_month', 100, 'w-over');
SELECT * FROM quota.consume(3, 'storage_space', 5);
-- User 6 crosses 80 % of 25: one quota_threshold event.
SELECT * FROM quota.consume(6, 'articles_per_month', 11, 'w-threshold');

\echo '== record_feature_usage: keyed, its retry, without a subscription'
SELECT quota.record_feature_usage(2, 'publish_per_month', 'article', 7, 3, '{"w": 2}', 'w-rec-1');
SELECT quota.record_feature_usage(2, 'publish_per_month', 'article', 7, 3, '{"w": 2}', 'w-rec-1');
SELECT quota.record_feature_usage(5, 'api_calls', NULL, NULL, 4);
SELECT pg_temp.try($$SELECT quota.record_feature_usage(7, 'articles_per_month')$$);

\echo '== refund_usage: by key, again, by id, a refund of a refund'
SELECT * FROM quota.refund_usage(1, 'w-1');
SELECT * FROM quota.refund_usage(1, 'w-1');
SELECT * FROM quota.refund_usage((SELECT id FROM quota.usage_records
                                   WHERE user_id = 1 AND idempotency_key = 'u1-api-1'));
SELECT pg_temp.try(format('SELECT * FROM quota.refund_usage(%s)',
                          (SELECT id FROM quota.usage_records WHERE user_id = 1 AND refund_of IS NOT NULL
                            ORDER BY id LIMIT 1)));

\echo '== adjust_quota and clear_custom_quota: below the usage, storage, cleared, bad values'
SELECT * FROM quota.adjust_quota(2, 'articles_per_month', 3, 'lowered below the usage', 'dave');
SELECT * FROM quota.check_user_quota(2, 'articles_per_month');
SELECT * FROM quota.consume(2, 'articles_per_month', 1, 'w-after-lowering');
SELECT * FROM quota.adjust_quota(5, 'storage_space', 4096, 'more room', 'dave');
SELECT * FROM quota.clear_custom_quota(5, 'storage_space', 'back to the plan', 'erin');
SELECT pg_temp.try($$SELECT * FROM quota.adjust_quota(1, 'articles_per_month', -2, 'too low', 'dave')$$);
SELECT pg_temp.try($$SELECT * FROM quota.adjust_quota(7, 'articles_per_month', 5, 'no subscription', 'dave')$$);
SELECT pg_temp.try($$SELECT * FROM quota.clear_custom_quota(1, 'articles_per_month', '', 'dave')$$);

\echo '== triggers: a bad custom_quotas document, a new subscription, a plan change, a delete'
SELECT pg_temp.try($$UPDATE quota.user_subscriptions SET custom_quotas = '{"articles_per_month": "abc"}'
                      WHERE user_id = 1$$);
SELECT pg_temp.try($$UPDATE quota.user_subscriptions SET custom_quotas = '{"no_such_feature": 1}'
                      WHERE user_id = 1$$);
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
SELECT 8, id, :'t0'::timestamptz - interval '1 day', :'t0'::timestamptz + interval '30 days',
       '{"storage_space": 512}'
  FROM quota.subscription_plans WHERE plan_code = 'professional';
UPDATE quota.user_subscriptions
   SET plan_id = (SELECT id FROM quota.subscription_plans WHERE plan_code = 'professional')
 WHERE user_id = 1 AND status = 'active';
DELETE FROM quota.user_subscriptions WHERE user_id = 4 AND status = 'expired';
SELECT * FROM quota.consume(8, 'articles_per_month', 1, 'w-new-user');

\echo '== the catalog: a new feature, a built-in one edited, a plan feature'
INSERT INTO quota.features (code, name, unit, reset_rule, default_limit)
VALUES ('exports', 'Exports', 'exports', 'billing_cycle', 2);
INSERT INTO quota.features (code, name, unit, reset_rule, default_limit)
VALUES ('publish_per_month', 'Publishing (edited)', 'articles', 'billing_cycle', 300);
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT id, 'exports', 3 FROM quota.subscription_plans WHERE plan_code = 'professional';
SELECT * FROM quota.consume(2, 'exports', 3, 'w-exports');
SELECT * FROM quota.consume(2, 'exports', 1, 'w-exports-over');

\echo '== a transaction rolled back leaves nothing (and sends nothing)'
BEGIN;
SELECT * FROM quota.consume(5, 'articles_per_month', 1, 'w-rolled-back');
SELECT * FROM quota.adjust_quota(5, 'articles_per_month', 1, 'rolled back', 'dave');
ROLLBACK;
SELECT count(*) AS rolled_back_rows FROM quota.usage_records WHERE idempotency_key = 'w-rolled-back';

\echo '== answers afterwards'
SELECT u.user_id, f.code, c.*
  FROM (VALUES (1::bigint), (2), (5), (6), (8)) u(user_id) CROSS JOIN quota.features f
 CROSS JOIN LATERAL quota.check_user_quota(u.user_id, f.code) c
 ORDER BY 1, 2;
SELECT u.user_id, quota.get_user_storage_quota(u.user_id)
  FROM (VALUES (1::bigint), (2), (5), (8)) u(user_id) ORDER BY 1;

\echo '== verify_ledger (no row)'
SELECT * FROM quota.verify_ledger();
