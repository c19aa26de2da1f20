-- Data in every quota table, for scripts/ops/dump-restore.sh: plans and their features,
-- subscriptions with custom_quotas (active, expired, paused, open-ended), uses through consume
-- and record_feature_usage with and without idempotency keys, refunds by key and by id,
-- audited adjustments, storage figures, a settings row and a feature added by the user.
-- Users 1..7; user 7 has no subscription at all.
SET TimeZone = 'UTC';

INSERT INTO quota.settings (time_zone) VALUES ('Asia/Shanghai');
-- In force for good, as in a database updated from a version that did not remember changes of
-- zone (scripts/ops/upgrade.sh compares such databases with a fresh one).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'quota.settings'::regclass
                                          AND attname = 'time_zone_changed_at') THEN
        UPDATE quota.settings SET previous_time_zone = time_zone,
                                  time_zone_changed_at = '-infinity';
    END IF;
END
$$;

-- A feature of the user's own, next to the five built-in ones.
INSERT INTO quota.features (code, name, unit, reset_rule, default_limit, alert_thresholds)
VALUES ('api_calls', 'API calls ✓ «ﬁ»', 'calls', 'never', 1000, '{50,90}');

INSERT INTO quota.subscription_plans
       (plan_code, plan_name, price, duration_days, is_active, billing_cycle, quota_cycle_type)
VALUES ('free',         'Free',         0.00,  30,  true,  'monthly', NULL),
       ('professional', 'Professional', 99.00, 30,  true,  'monthly', NULL),
       ('enterprise',   'Enterprise',   999.00, 365, true, 'yearly',  'monthly'),
       ('legacy',       'Legacy 旧版',   5.50,  365, false, 'yearly',  NULL);

INSERT INTO quota.plan_features (plan_id, feature_code, feature_name, feature_value, feature_unit)
SELECT p.id, v.code, v.name, v.value, v.unit
  FROM quota.subscription_plans p
  JOIN (VALUES
        ('free', 'articles_per_month', 'Article generation', 10, NULL),
        ('free', 'publish_per_month', 'Article publishing', 20, NULL),
        ('free', 'keyword_distillation', 'Keyword distillation', 5, NULL),
        ('free', 'platform_accounts', 'Platform accounts', 3, NULL),
        ('free', 'storage_space', 'Storage space', 100, 'MB'),
        ('professional', 'articles_per_month', 'Article generation', 100, NULL),
        ('professional', 'publish_per_month', 'Article publishing', 200, NULL),
        ('professional', 'keyword_distillation', 'Keyword distillation', 50, NULL),
        ('professional', 'platform_accounts', 'Platform accounts', 10, NULL),
        ('professional', 'storage_space', 'Storage space', 1, 'GB'),
        ('professional', 'api_calls', 'API calls', 10000, NULL),
        ('enterprise', 'articles_per_month', NULL, -1, NULL),
        ('enterprise', 'publish_per_month', NULL, -1, NULL),
        ('enterprise', 'keyword_distillation', NULL, -1, NULL),
        ('enterprise', 'platform_accounts', NULL, -1, NULL),
        ('enterprise', 'storage_space', NULL, -1, 'MB'),
        ('legacy', 'articles_per_month', 'Old articles', 3, NULL)
       ) AS v(plan, code, name, value, unit) ON v.plan = p.plan_code;

INSERT INTO quota.user_subscriptions
       (user_id, plan_id, start_date, end_date, status, paused_at, custom_quotas,
        quota_reset_anchor, quota_cycle_type)
SELECT v.user_id, p.id, v.starts, v.ends, v.status, v.paused_at, v.custom,
       v.anchor, v.cycle
  FROM (VALUES
        (1, 'free', now() - interval '10 days', now() + interval '20 days', 'active', NULL::timestamptz,
         '{"articles_per_month": 12, "api_calls": 5}'::jsonb, NULL::timestamptz, NULL),
        (2, 'professional', now() - interval '40 days', now() + interval '325 days', 'active', NULL,
         NULL, now() - interval '45 days', 'yearly'),
        (3, 'enterprise', now() - interval '400 days', 'infinity', 'active', NULL, '{}', NULL, NULL),
        (4, 'free', now() - interval '90 days', now() - interval '60 days', 'expired', NULL, NULL, NULL, NULL),
        (4, 'free', now() - interval '59 days', now() + interval '1 day', 'paused', now() - interval '3 days',
         '{"publish_per_month": 1}', NULL, NULL),
        (5, 'legacy', now() - interval '800 days', now() - interval '35 days', 'cancelled', NULL, NULL, NULL, NULL),
        (5, 'professional', now() - interval '35 days', now() + interval '330 days', 'active', NULL,
         '{"storage_space": 2048, "keyword_distillation": -1}', NULL, 'monthly'),
        (6, 'free', now() - interval '3 days', now() + interval '27 days', 'active', NULL, '{}', NULL, NULL)
       ) AS v(user_id, plan, starts, ends, status, paused_at, custom, anchor, cycle)
  JOIN quota.subscription_plans p ON p.plan_code = v.plan;
-- User 3's subscription is open-ended (end_date 'infinity').

-- Uses: consume (enforcing) and record_feature_usage (recording), keyed and not.
SELECT * FROM quota.consume(1, 'articles_per_month', 3, 'u1-articles-1', 'article', 101,
                            '{"words": 1200, "lang": "zh", "title": "測試 ✨"}');
SELECT * FROM quota.consume(1, 'articles_per_month', 2, 'u1-articles-2', 'article', 102);
SELECT * FROM quota.consume(1, 'articles_per_month', 1);
SELECT * FROM quota.consume(1, 'api_calls', 2, 'u1-api-1');
SELECT * FROM quota.consume(1, 'api_calls', 9, 'u1-api-refused');      -- refused: writes nothing
SELECT quota.record_feature_usage(1, 'publish_per_month', 'article', 101, 1, '{"to": ["wx", "zhihu"]}', 'u1-publish-1');
SELECT quota.record_feature_usage(1, 'publish_per_month', 'article', 102, 2, NULL, NULL);
SELECT quota.record_feature_usage(2, 'articles_per_month', 'batch', 9001, 7,
                                  '{"nested": {"a": [1, 2, {"b": null}]}, "n": 1.5e300}', 'u2-batch-9001');
SELECT * FROM quota.consume(2, 'keyword_distillation', 4, 'u2-kw-1');
SELECT * FROM quota.consume(2, 'platform_accounts', 1, 'u2-acct-1', 'account', 1);
SELECT * FROM quota.consume(3, 'articles_per_month', 500, 'u3-unlimited-1');
SELECT * FROM quota.consume(5, 'storage_space', 10, 'u5-storage-1');
SELECT * FROM quota.consume(6, 'articles_per_month', 10, 'u6-all');
SELECT * FROM quota.consume(6, 'articles_per_month', 1, 'u6-over');    -- refused

-- Refunds: by key and by id.
SELECT refunded_amount, newly_refunded FROM quota.refund_usage(1, 'u1-articles-2');
SELECT refunded_amount, newly_refunded
  FROM quota.refund_usage((SELECT id FROM quota.usage_records
                            WHERE user_id = 2 AND idempotency_key = 'u2-kw-1'));

-- Audited adjustments.
SELECT * FROM quota.adjust_quota(6, 'articles_per_month', 25, 'support ticket #17', 'alice');
SELECT * FROM quota.adjust_quota(6, 'publish_per_month', -1, 'trial of unlimited', 'alice');
SELECT * FROM quota.clear_custom_quota(6, 'publish_per_month', 'trial over', 'bob');
SELECT * FROM quota.adjust_quota(1, 'articles_per_month', 15, 'goodwill ↔ ‏עברית‏', 'carol');

-- Storage figures next to the quota the trigger keeps.
UPDATE quota.user_storage_usage
   SET image_storage_bytes = 1048576 * user_id, document_storage_bytes = 4096,
       article_storage_bytes = 77, purchased_storage_bytes = CASE WHEN user_id = 2 THEN 1 ELSE 0 END
 WHERE user_id IN (1, 2, 3, 5);

-- Grants and a booster pack, for the suites whose versions have them (psql -v with_grants=1):
-- an update test loads this file into releases without them.
\if :{?with_grants}
INSERT INTO quota.subscription_plans (plan_code, plan_name, price, duration_days, plan_kind)
VALUES ('boost', 'Booster ⚡', 9.90, 30, 'booster');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, 'articles_per_month', 20 FROM quota.subscription_plans p WHERE p.plan_code = 'boost';
SELECT feature_code, amount FROM quota.buy_booster(6, 'boost', 'u6-payment-1');
SELECT amount FROM quota.grant_quota(6, 'articles_per_month', 5, now() + interval '3 days', -1,
                                     'promotion', 'welcome back 👋', 'u6-promo');
SELECT id AS voided_grant FROM quota.grant_quota(6, 'publish_per_month', 7) \gset
SELECT void_reason FROM quota.void_grant(:voided_grant, 'issued by mistake');
-- User 6 (10 of a custom 25 used) uses 20 more: 15 from the allowance, 5 from the promotion;
-- then 2 from the pack, refunded to it.
SELECT * FROM quota.consume(6, 'articles_per_month', 20, 'u6-grants-1');
SELECT * FROM quota.consume(6, 'articles_per_month', 2, 'u6-grants-2');
SELECT refunded_amount FROM quota.refund_usage(6, 'u6-grants-2');
-- Articles may go 4 beyond the limit: user 6 (25 of 25 used, 20 left in the pack) uses 21, 1 of
-- them overage; then holds 1 of the 3 left, and holds and settles another.
UPDATE quota.features SET overage_limit = 4 WHERE code = 'articles_per_month';
SELECT * FROM quota.consume(6, 'articles_per_month', 21, 'u6-overage');
SELECT allowed FROM quota.reserve(6, 'articles_per_month', 1, interval '1 day', 'u6-hold');
SELECT reservation_id AS settled_hold FROM quota.reserve(6, 'publish_per_month', 3) \gset
SELECT settled FROM quota.settle(:settled_hold, 2, 'article', 6);
-- Connected accounts are a running count: user 2 connects a second one and removes it.
UPDATE quota.features SET kind = 'gauge' WHERE code = 'platform_accounts';
SELECT allowed FROM quota.consume(2, 'platform_accounts', 1, 'u2-acct-2', 'account', 2);
SELECT released FROM quota.release_usage(2, 'platform_accounts', 1, 'u2-acct-2-removed', 'account', 2);
-- Kinds and several limits: a switch user 1 has by a custom value, a configuration value of
-- the catalog's, and searches limited per billing month and per day, which user 1 uses.
INSERT INTO quota.features (code, name, kind, default_limit, default_value) VALUES
    ('sso', 'Single sign-on', 'boolean', 0, NULL),
    ('ai_model', 'AI model ✨', 'config', NULL, '{"name": "small", "max_tokens": 4096}');
INSERT INTO quota.features (code, name, default_limit, window_limits)
VALUES ('searches', 'Searches', 100, '{"day": 10}');
UPDATE quota.user_subscriptions SET custom_quotas = coalesce(custom_quotas, '{}') || '{"sso": true}'
 WHERE user_id = 1 AND status = 'active';
SELECT allowed FROM quota.consume(1, 'searches', 4, 'u1-search-1');
SELECT allowed FROM quota.consume(1, 'searches', 2, 'u1-search-2');
SELECT refunded_amount FROM quota.refund_usage(1, 'u1-search-2');
-- The lifecycle, where it exists: user 6's move to the first base plan at the end of the
-- period, scheduled; a top-up that expires in 2 days, which a tick warns of.
SELECT to_regprocedure('quota.tick(timestamptz, integer)') IS NOT NULL AS with_lifecycle \gset
\if :with_lifecycle
SELECT amount FROM quota.grant_quota(6, 'publish_per_month', 3, now() + interval '2 days', 0,
                                     'top_up', 'weekend offer', 'u6-weekend');
SELECT state FROM quota.schedule_plan_change(6, (SELECT plan_code FROM quota.subscription_plans
                                                  WHERE plan_kind = 'base' ORDER BY id LIMIT 1));
SELECT ran, grants_warned FROM quota.tick();
\endif
-- Publishing is also limited to 50 a day (a built-in feature's further limit, which the restore
-- keeps): user 2 publishes one.
UPDATE quota.features SET window_limits = '{"day": 50}' WHERE code = 'publish_per_month';
SELECT allowed FROM quota.consume(2, 'publish_per_month', 1);
\endif
