-- 18_grants: extra quota beside the period's allowance. A use draws from the allowance first,
-- then from the active grants: lower priority first, then the one that expires soonest, then
-- the oldest; one use may be split across them. Booster packs are plans of kind 'booster' that
-- grant each of their features for duration_days. A refund gives units back where they came
-- from, but never revives a grant that no longer counts. Users 18xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- What a user has of a feature, and what is left of each of their grants of it.
CREATE FUNCTION public.grants_of(u bigint, f text)
RETURNS TABLE (n bigint, source text, priority integer, amount bigint, remaining bigint,
               counts boolean)
LANGUAGE sql AS $$
    SELECT row_number() OVER (ORDER BY g.id), g.source, g.priority, g.amount, g.remaining,
           quota.grant_counts(g)
      FROM quota.grants g WHERE g.user_id = u AND g.feature_code = f ORDER BY g.id
$$;

-- The seed's booster pack: 20 articles and 5 publications for 30 days.
INSERT INTO subscription_plans (plan_code, plan_name, price, duration_days, plan_kind)
VALUES ('articles_boost', 'Article booster', 19.00, 30, 'booster');
INSERT INTO plan_features (plan_id, feature_code, feature_value)
VALUES (plan_id('articles_boost'), 'articles_per_month', 20),
       (plan_id('articles_boost'), 'publish_per_month', 5),
       (plan_id('articles_boost'), 'keyword_distillation', 0);

-- 1801, the seed's story: a free user (10 articles a month) buys the pack and uses 25: the
-- allowance goes to 10 of 10 and the pack to 15 left.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1801, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT feature_code, amount, remaining, source, reason,
       expires_at = ((now() AT TIME ZONE 'UTC')::date + 30 + time '23:59:59') AT TIME ZONE 'UTC' AS last_day_235959
  FROM buy_booster(1801, 'articles_boost', 'payment-1801-1');
-- A retry of the purchase adds nothing.
SELECT count(*) AS grants FROM buy_booster(1801, 'articles_boost', 'payment-1801-1');
SELECT count(*) AS grants FROM quota.grants WHERE user_id = 1801;
SELECT * FROM check_user_quota(1801, 'articles_per_month');
SELECT allowed, current_usage, quota_limit, remaining FROM consume(1801, 'articles_per_month', 25);
SELECT usage_count FROM user_usage WHERE user_id = 1801 AND feature_code = 'articles_per_month';
SELECT * FROM grants_of(1801, 'articles_per_month');
-- The one usage record of 25, of which 15 came from the pack.
SELECT r.amount, u.amount AS from_grant
  FROM usage_records r JOIN grant_uses u ON u.user_id = r.user_id AND u.record_id = r.id
 WHERE r.user_id = 1801;
-- remaining = quota_limit - current_usage still holds for the seed's callers.
SELECT has_quota, current_usage, quota_limit, remaining, percentage,
       remaining = quota_limit - current_usage AS seed_identity
  FROM check_user_quota(1801, 'articles_per_month');
-- 16 more do not fit in the 15 left: refused, nothing written.
SELECT allowed, remaining FROM consume(1801, 'articles_per_month', 16);
SELECT allowed, remaining FROM consume(1801, 'articles_per_month', 15);
SELECT allowed, remaining FROM consume(1801, 'articles_per_month', 1);
-- The pack survives a plan change: an upgrade to professional (100) keeps it, and the usage.
UPDATE user_subscriptions SET plan_id = plan_id('professional') WHERE user_id = 1801;
SELECT current_usage, quota_limit, remaining FROM check_user_quota(1801, 'articles_per_month');
-- Day 31: the pack no longer counts (its window moved back 31 days, as the clock would).
UPDATE quota.grants SET effective_from = effective_from - interval '31 days',
                        expires_at = expires_at - interval '31 days',
                        created_at = created_at - interval '31 days'
 WHERE user_id = 1801;
SELECT current_usage, quota_limit, remaining FROM check_user_quota(1801, 'articles_per_month');
SELECT * FROM verify_ledger(1801);
SELECT * FROM verify_grants(1801);

-- A booster pack needs an active base subscription, a booster plan and a key.
SELECT buy_booster(1899, 'articles_boost', 'payment-1899');
SELECT buy_booster(1801, 'free', 'payment-1801-2');
SELECT buy_booster(1801, 'no_such_plan', 'payment-1801-2');
SELECT buy_booster(1801, 'articles_boost', NULL);

-- 1802, the use order: allowance 10, then priority, then soonest expiry (never last), then the
-- oldest. A use of 22 takes the 10 of the allowance, then grant 4 (priority -1), grant 3 (the
-- older of the two expiring in 10 days) and 2 of grant 5; 4 more take 3 of grant 5 and 1 of
-- grant 2 (20 days); grant 1, which never expires, comes last.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1802, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT g.amount, g.priority, g.expires_at IS NULL AS never_expires
  FROM (VALUES (1, NULL::interval, 0, 'top_up'), (2, interval '20 days', 0, 'top_up'),
               (3, interval '10 days', 0, 'top_up'), (4, NULL, -1, 'promotion'),
               (5, interval '10 days', 0, 'top_up')) AS v (n, lasts, priority, source),
       LATERAL grant_quota(1802, 'articles_per_month', 5, now() + v.lasts, v.priority, v.source) g
 ORDER BY v.n;
SELECT allowed, current_usage, quota_limit, remaining FROM consume(1802, 'articles_per_month', 22);
SELECT * FROM grants_of(1802, 'articles_per_month');
SELECT allowed, remaining FROM consume(1802, 'articles_per_month', 4);
SELECT * FROM grants_of(1802, 'articles_per_month');
-- record_feature_usage records what neither covers on the allowance, beyond its limit.
SELECT record_feature_usage(1802, 'articles_per_month', amount => 12);
SELECT * FROM grants_of(1802, 'articles_per_month');
SELECT current_usage, quota_limit, remaining, has_quota FROM check_user_quota(1802, 'articles_per_month');
SELECT usage_count FROM user_usage WHERE user_id = 1802 AND feature_code = 'articles_per_month';
SELECT * FROM verify_ledger(1802);
SELECT * FROM verify_grants(1802);

-- 1803, refunds: units go back where they came from. A use of 8 over an allowance of 10 with 6
-- used takes 4 from the allowance and 4 from a grant; its refund gives both back.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1803, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT amount FROM grant_quota(1803, 'articles_per_month', 10, now() + interval '7 days',
                               reason => 'support ticket 42', idempotency_key => 'ticket-42');
-- The same key again returns the grant and adds nothing; another amount under it is refused.
SELECT amount FROM grant_quota(1803, 'articles_per_month', 10, now() + interval '7 days',
                               reason => 'support ticket 42', idempotency_key => 'ticket-42');
SELECT amount FROM grant_quota(1803, 'articles_per_month', 11, idempotency_key => 'ticket-42');
SELECT allowed FROM consume(1803, 'articles_per_month', 6, idempotency_key => 'use-1');
SELECT allowed FROM consume(1803, 'articles_per_month', 8, idempotency_key => 'use-2');
SELECT * FROM grants_of(1803, 'articles_per_month');
SELECT refunded_amount, newly_refunded FROM refund_usage(1803, 'use-2');
SELECT * FROM grants_of(1803, 'articles_per_month');
SELECT current_usage, remaining FROM check_user_quota(1803, 'articles_per_month');
-- Again, then the grant expires: the refund gives back the allowance's share only, and says so.
SELECT allowed FROM consume(1803, 'articles_per_month', 8, idempotency_key => 'use-3');
UPDATE quota.grants SET effective_from = effective_from - interval '8 days',
                        expires_at = expires_at - interval '8 days'
 WHERE user_id = 1803;
SELECT refunded_amount FROM refund_usage(1803, 'use-3');
SELECT * FROM grants_of(1803, 'articles_per_month');
-- A use taken wholly from a grant that expired has nothing to give back.
SELECT amount FROM grant_quota(1803, 'articles_per_month', 3, now() + interval '1 day');
SELECT allowed FROM consume(1803, 'articles_per_month', 4, idempotency_key => 'use-4');
SELECT allowed FROM consume(1803, 'articles_per_month', 2, idempotency_key => 'use-5');
UPDATE quota.grants SET effective_from = effective_from - interval '2 days',
                        expires_at = expires_at - interval '2 days'
 WHERE user_id = 1803 AND amount = 3;
SELECT refunded_amount FROM refund_usage(1803, 'use-5');
SELECT * FROM verify_ledger(1803);
SELECT * FROM verify_grants(1803);

-- 1804, void_grant: what is left stops counting at once; what was used stays used; a second
-- void returns the grant as it is. A reason is required.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1804, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT id AS grant_1804 FROM grant_quota(1804, 'publish_per_month', 50) \gset
SELECT allowed FROM consume(1804, 'publish_per_month', 30);
SELECT remaining FROM check_user_quota(1804, 'publish_per_month');
SELECT void_grant(:grant_1804, '');
SELECT remaining, void_reason, voided_by = session_user AS by_caller
  FROM void_grant(:grant_1804, 'chargeback');
SELECT remaining, void_reason FROM void_grant(:grant_1804, 'again');
SELECT current_usage, quota_limit, remaining FROM check_user_quota(1804, 'publish_per_month');
SELECT allowed FROM consume(1804, 'publish_per_month', 1);
SELECT void_grant(-1, 'no such grant');

-- Unlimited stays unlimited, and draws nothing from a grant.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1805, plan_id('enterprise'), now() - interval '5 days', now() + interval '360 days');
SELECT amount FROM grant_quota(1805, 'articles_per_month', 5);
SELECT allowed, current_usage, quota_limit, remaining FROM consume(1805, 'articles_per_month', 100);
SELECT * FROM grants_of(1805, 'articles_per_month');

-- Bad grants are refused with their SQLSTATE.
\set VERBOSITY sqlstate
SELECT grant_quota(1806, 'articles_per_month', 0);
SELECT grant_quota(1806, 'no_such_feature', 1);
SELECT grant_quota(1806, 'articles_per_month', 1, now() - interval '1 second');
SELECT grant_quota(1806, 'articles_per_month', 1, source => 'gift');
SELECT grant_quota(NULL, 'articles_per_month', 1);
\set VERBOSITY default

-- usage_overview: the figures with the grants, the allowance apart, and each grant that
-- counts in use order.
SELECT feature_code, current_usage, quota_limit, remaining, allowance, allowance_used,
       jsonb_path_query_array(grants, '$[*].remaining') AS grants_left,
       jsonb_path_query_array(grants, '$[*].source') AS sources
  FROM usage_overview(1802) WHERE feature_code = 'articles_per_month';
SELECT feature_code, allowance, allowance_used, grants
  FROM usage_overview(1805) WHERE feature_code = 'articles_per_month';

-- 1807, purchased storage: storage grants (in the catalog's unit, MB) add to the storage limit,
-- and storage_quota_bytes follows a grant added or voided at once.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (1807, plan_id('free'), now() - interval '5 days', now() + interval '25 days');
SELECT get_user_storage_quota(1807), storage_quota_bytes FROM user_storage_usage WHERE user_id = 1807;
SELECT id AS storage_grant FROM grant_quota(1807, 'storage_space', 50, source => 'top_up',
                                            reason => 'purchased 50 MB') \gset
SELECT get_user_storage_quota(1807), storage_quota_bytes FROM user_storage_usage WHERE user_id = 1807;
SELECT remaining FROM void_grant(:storage_grant, 'refunded purchase');
SELECT get_user_storage_quota(1807), storage_quota_bytes FROM user_storage_usage WHERE user_id = 1807;

SELECT * FROM verify_ledger() WHERE user_id BETWEEN 1800 AND 1899;
SELECT * FROM verify_grants() WHERE user_id BETWEEN 1800 AND 1899;

-- Who may: grants are written by their functions only. An app server may sell a booster pack
-- but neither grant nor void, nor write the tables; a reporting role may only read.
SET ROLE quota_app;
\set VERBOSITY sqlstate
SELECT grant_quota(1801, 'articles_per_month', 1000);
SELECT void_grant(1, 'mine now');
UPDATE quota.grants SET remaining = amount WHERE user_id = 1801;
INSERT INTO quota.grant_uses VALUES (1801, 1, 1, -100);
SELECT count(*) > 0 AS app_reads_grants FROM quota.grants WHERE user_id = 1801;
RESET ROLE;
SET ROLE quota_reader;
SELECT void_grant(1, 'mine now');
SELECT buy_booster(1801, 'articles_boost', 'payment-reader');
RESET ROLE;
-- An admin tool grants and voids through the functions, which keep both ledgers; it cannot
-- write the tables either.
SET ROLE quota_admin;
UPDATE quota.grants SET remaining = amount WHERE user_id = 1801;
DELETE FROM quota.grant_uses WHERE user_id = 1801;
SELECT amount, remaining, actor = session_user AS by_session
  FROM grant_quota(1808, 'articles_per_month', 3, reason => 'goodwill');
RESET ROLE;
\set VERBOSITY default

-- A feature some user was granted says so, for good: a check of a feature nobody was granted
-- reads no grant. Nobody can take the mark back while grants may exist.
SELECT code, granted FROM quota.features WHERE code IN ('articles_per_month', 'platform_accounts') ORDER BY code;
UPDATE quota.features SET granted = false WHERE code = 'articles_per_month';
SELECT granted FROM quota.features WHERE code = 'articles_per_month';
