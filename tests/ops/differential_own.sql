-- scripts/ops/differential.sh, database of quota's own tables: the random rows of
-- tests/ops/differential_data.sql (hostile = false), loaded through the tables' constraints and
-- triggers, which refuse what they must (a start after the end, a storage quota that cannot be
-- computed); and the fixtures of the named case "a plan deleted while a statement runs".
\set ON_ERROR_STOP 1
\set hostile false
\ir differential_data.sql

INSERT INTO quota.subscription_plans (id, plan_code, plan_name, billing_cycle, quota_cycle_type)
SELECT id, plan_code, plan_code, billing_cycle, quota_cycle_type FROM gen_plans ORDER BY id;
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, feature_unit, overage_limit,
                                 reset_rule, window_limits, config_value)
SELECT plan_id, feature_code, feature_value, feature_unit, overage_limit, reset_rule,
       window_limits, config_value
  FROM gen_plan_features;
-- Plans deleted before any subscription named them: gaps in the copy of the plans.
DELETE FROM quota.subscription_plans p USING gen_plans g WHERE g.id = p.id AND g.deleted;

-- One by one: a row the tables refuse is left out and counted.
SET client_min_messages = notice;
DO $$
DECLARE
    s record;
    refused int := 0;
BEGIN
    FOR s IN SELECT * FROM gen_subscriptions ORDER BY id LOOP
        BEGIN
            INSERT INTO quota.user_subscriptions
                   (id, user_id, plan_id, start_date, end_date, status, custom_quotas,
                    quota_reset_anchor, quota_cycle_type)
            VALUES (s.id, s.user_id, s.plan_id, s.start_date, s.end_date, s.status,
                    s.custom_quotas, s.quota_reset_anchor, s.quota_cycle_type);
        EXCEPTION WHEN OTHERS THEN
            refused := refused + 1;
        END;
    END LOOP;
    RAISE NOTICE 'quota''s own tables: % subscriptions loaded, % refused by the tables',
        (SELECT count(*) FROM quota.user_subscriptions), refused;
END
$$;

INSERT INTO quota.user_usage (user_id, feature_code, period_start, period_end, usage_count,
                              last_reset_at, updated_at)
SELECT user_id, feature_code, period_start, period_end, usage_count, now(), now()
  FROM gen_usage;

INSERT INTO quota.reservations (user_id, feature_code, period_start, period_end, amount,
                                expires_at, state, settled_amount, created_at, ended_at)
SELECT user_id, feature_code, period_start, period_end, amount, expires_at, state,
       CASE WHEN state = 'settled' THEN amount END, expires_at - interval '10 minutes',
       CASE WHEN state <> 'held' THEN expires_at - interval '5 minutes' END
  FROM gen_holds;
UPDATE quota.user_usage u SET held = h.held
  FROM (SELECT user_id, feature_code, period_start, sum(amount) AS held FROM gen_holds
         WHERE state = 'held' GROUP BY 1, 2, 3) h
 WHERE u.user_id = h.user_id AND u.feature_code = h.feature_code
   AND u.period_start = h.period_start;

-- The named case "a plan deleted while a statement runs": user 800003 on plan case3_old
-- (articles 11), which another session replaces with case3_new (articles 22) and deletes.
INSERT INTO quota.subscription_plans (id, plan_code, plan_name, billing_cycle)
VALUES (800001, 'case3_old', 'Case 3, old', 'monthly'), (800002, 'case3_new', 'Case 3, new', 'yearly');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
VALUES (800001, 'articles_per_month', 11), (800002, 'articles_per_month', 22);
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (800003, 800001, now() - interval '3 days', now() + interval '300 days');

ANALYZE;

INSERT INTO quota.grants (user_id, feature_code, amount, remaining, priority, effective_from,
                          expires_at, source, voided_at, void_reason)
SELECT user_id, feature_code, amount, remaining, priority, effective_from, expires_at, 'admin',
       CASE WHEN voided THEN now() END, CASE WHEN voided THEN 'differential' END
  FROM gen_grants;
ANALYZE quota.grants;
INSERT INTO quota.window_usage (user_id, feature_code, window_name, window_start, window_end,
                                usage_count)
SELECT user_id, feature_code, window_name, window_start, window_end, usage_count
  FROM gen_windows;
