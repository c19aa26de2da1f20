-- Fixtures of the load test (scripts/load.sh). psql variables: hot_limit, users, user_limit.
--   user 1:                one user with limit :hot_limit on articles_per_month (part a)
--   users 1001 .. 1000+:users  limit :user_limit each on articles_per_month (part b)
--   user 2:                record_feature_usage with idempotency keys on publish_per_month (part c)
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES
    ('load_hot', 'load: one user'), ('load_many', 'load: many users'), ('load_keys', 'load: keys');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, 'articles_per_month', CASE p.plan_code WHEN 'load_hot' THEN :hot_limit ELSE :user_limit END
  FROM quota.subscription_plans p WHERE p.plan_code IN ('load_hot', 'load_many');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, 'publish_per_month', 1000000 FROM quota.subscription_plans p WHERE p.plan_code = 'load_keys';
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT u.user_id, p.id, now() - interval '10 days', now() + interval '1 year'
  FROM (SELECT 1 AS user_id, 'load_hot' AS plan_code
        UNION ALL SELECT 2, 'load_keys'
        UNION ALL SELECT g, 'load_many' FROM generate_series(1001, 1000 + :users) g) u
  JOIN quota.subscription_plans p USING (plan_code);
-- Every key part (c) draws, whether or not the call counted it: the test compares the counter
-- with the number of distinct keys drawn.
CREATE UNLOGGED TABLE public.load_keys_drawn (key text NOT NULL);
-- Part (d): user 3 with limit 1000000 on articles_per_month, renewed over and over while
-- clients consume and record. Each answer is kept: a refusal or a P0002 is a failure, since a
-- subscription is active at every commit.
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('load_renew', 'load: renewals');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, 'articles_per_month', 1000000 FROM quota.subscription_plans p WHERE p.plan_code = 'load_renew';
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT 3, p.id, now() - interval '10 days', now() + interval '1 year'
  FROM quota.subscription_plans p WHERE p.plan_code = 'load_renew';
CREATE UNLOGGED TABLE public.load_renewal_answers (
    call text NOT NULL, allowed boolean, quota_limit integer, sqlstate text);
-- record_feature_usage, its outcome kept instead of aborting the pgbench client.
CREATE FUNCTION public.load_record_renewed() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM quota.record_feature_usage(3, 'articles_per_month');
    INSERT INTO public.load_renewal_answers VALUES ('record', true, NULL, NULL);
EXCEPTION WHEN OTHERS THEN
    INSERT INTO public.load_renewal_answers VALUES ('record', false, NULL, SQLSTATE);
END $$;
-- Part (e): user 4 with limit :hot_limit on articles_per_month, renewed over and over as a new
-- row that starts at the renewal and keeps the anchor only approximately, while clients
-- consume: every renewal must continue the period, so no more than the limit is ever allowed.
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('load_restart', 'load: restarts');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, 'articles_per_month', :hot_limit FROM quota.subscription_plans p WHERE p.plan_code = 'load_restart';
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT 4, p.id, now() - interval '10 days', now() + interval '20 days'
  FROM quota.subscription_plans p WHERE p.plan_code = 'load_restart';
CREATE UNLOGGED TABLE public.load_restart_answers (allowed boolean NOT NULL);
-- Part (f): user 5, an allowance of 100 articles_per_month and three grants (30 at priority -1,
-- 50 expiring in 10 days, 70 that never expire): 250 units in all, which clients consuming 3 at a
-- time split across the allowance and the grants.
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('load_grants', 'load: grants');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, 'articles_per_month', 100 FROM quota.subscription_plans p WHERE p.plan_code = 'load_grants';
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT 5, p.id, now() - interval '10 days', now() + interval '1 year'
  FROM quota.subscription_plans p WHERE p.plan_code = 'load_grants';
SELECT count(*) FROM (
    SELECT quota.grant_quota(5, 'articles_per_month', 30, NULL, -1, 'promotion')
    UNION ALL SELECT quota.grant_quota(5, 'articles_per_month', 50, now() + interval '10 days')
    UNION ALL SELECT quota.grant_quota(5, 'articles_per_month', 70)) g;
-- Part (g): user 6, 500 articles_per_month, for twenty holds of 75 at once; user 7, 500
-- publish_per_month and a grant of 100, for holds settled with less, more or nothing beside uses.
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('load_holds', 'load: holds');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, f.code, 500 FROM quota.subscription_plans p,
       (VALUES ('articles_per_month'), ('publish_per_month')) AS f (code)
 WHERE p.plan_code = 'load_holds';
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT u.id, p.id, now() - interval '10 days', now() + interval '1 year'
  FROM quota.subscription_plans p, (VALUES (6), (7)) AS u (id) WHERE p.plan_code = 'load_holds';
SELECT count(*) FROM quota.grant_quota(7, 'publish_per_month', 100);
-- Part (h): user 8, searches limited to 10000 a billing month and 300 a day, with a grant of 50
-- (to the month's limit only), for uses of 1 to 3 and refunds racing at the day's edge.
INSERT INTO quota.features (code, name, default_limit, window_limits)
VALUES ('searches', 'Searches', 10000, '{"day": 300}');
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('load_windows', 'load: windows');
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT 8, p.id, now() - interval '10 days', now() + interval '1 year'
  FROM quota.subscription_plans p WHERE p.plan_code = 'load_windows';
SELECT count(*) FROM quota.grant_quota(8, 'searches', 50);
