-- 03_storage: the storage quota in bytes, and the trigger that keeps
-- user_storage_usage.storage_quota_bytes equal to it.
--
-- storage_space follows the same precedence as every limit (custom_quotas, plan_features,
-- quota.features.default_limit). The value is in MB as the seed stored it: a plan's value is
-- in plan_features.feature_unit when that is set, anything else in quota.features.unit (MB).
-- 1 MB = 1048576 bytes (binary multiples, as the seed computed them). -1 stays -1 (unlimited);
-- without an active subscription the quota is 0.
-- Users 301..399.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- A plan that counts storage in GB, and a plan without a storage row (catalog default 100 MB).
INSERT INTO subscription_plans (plan_code, plan_name) VALUES ('storage_gb', 'Storage in GB'),
                                                             ('no_storage_row', 'No storage row');
INSERT INTO plan_features (plan_id, feature_code, feature_value, feature_unit)
VALUES (plan_id('storage_gb'), 'storage_space', 2, 'GB'),
       (plan_id('no_storage_row'), 'articles_per_month', 10, NULL);

-- What a user's storage looks like: the function and the synchronised column side by side.
CREATE FUNCTION pg_temp.storage(u bigint)
    RETURNS TABLE (quota_bytes bigint, row_quota_bytes bigint, row_exists boolean)
    LANGUAGE sql AS $$
    SELECT quota.get_user_storage_quota(u), s.storage_quota_bytes, s.user_id IS NOT NULL
      FROM (SELECT) AS one
      LEFT JOIN quota.user_storage_usage s ON s.user_id = u
$$;

-- =============================================================================================
-- get_user_storage_quota

-- No subscription: 0, and no user_storage_usage row is created by reading.
SELECT * FROM pg_temp.storage(301);

-- free plan: 100 MB = 104857600 bytes; professional: 1024 MB = 1 GiB; enterprise: -1.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (302, plan_id('free'),         now() - interval '1 day', now() + interval '30 days'),
       (303, plan_id('professional'), now() - interval '1 day', now() + interval '30 days'),
       (304, plan_id('enterprise'),   now() - interval '1 day', now() + interval '1 year');
SELECT u AS user_id, s.* FROM unnest(ARRAY[302, 303, 304]) AS u, pg_temp.storage(u) AS s;

-- A plan row with feature_unit 'GB': 2 GB = 2147483648 bytes.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (305, plan_id('storage_gb'), now() - interval '1 day', now() + interval '30 days'),
       (310, plan_id('storage_gb'), now() - interval '1 day', now() + interval '30 days');
SELECT * FROM pg_temp.storage(305);
-- An override in custom_quotas is in the catalog's unit (MB), whatever the plan row says:
-- 512 MB on the GB plan.
UPDATE user_subscriptions SET custom_quotas = '{"storage_space": 512}' WHERE user_id = 305;
SELECT * FROM pg_temp.storage(305);

-- The plan lacks storage_space: the catalog default (100 MB).
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (306, plan_id('no_storage_row'), now() - interval '1 day', now() + interval '30 days');
SELECT * FROM pg_temp.storage(306);

-- Overrides: 2048 MB, and -1 (unlimited) on the free plan.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
VALUES (307, plan_id('free'), now() - interval '1 day', now() + interval '30 days',
        '{"storage_space": 2048}'),
       (308, plan_id('free'), now() - interval '1 day', now() + interval '30 days',
        '{"storage_space": -1}');
SELECT u AS user_id, s.* FROM unnest(ARRAY[307, 308]) AS u, pg_temp.storage(u) AS s;

-- A unit that is not a unit of bytes is an error (22023), never a guess from the size of the
-- number. (Changed inside a transaction that is rolled back.)
BEGIN;
-- The change itself is refused: the trigger on plan_features recomputes the storage quota of
-- the plan's users (310) and raises the error, so it is not written (sql/catalog.sql).
CALL expect_error($$UPDATE quota.plan_features SET feature_unit = 'articles'
                     WHERE plan_id = public.plan_id('storage_gb') AND feature_code = 'storage_space'$$);
-- Written without triggers (as a replication apply does), the row makes the reads raise it.
SET LOCAL session_replication_role = replica;
UPDATE plan_features SET feature_unit = 'articles'
 WHERE plan_id = plan_id('storage_gb') AND feature_code = 'storage_space';
SET LOCAL session_replication_role = origin;
CALL expect_error('SELECT quota.get_user_storage_quota(310)');
-- 305's override is in MB, so the plan's unit does not matter to it...
SELECT * FROM pg_temp.storage(305);
-- ... until the override is removed: the trigger then computes the quota from the plan and
-- raises the same error, so the update is not written.
CALL expect_error($$UPDATE quota.user_subscriptions SET custom_quotas = NULL WHERE user_id = 305$$);
SELECT custom_quotas FROM user_subscriptions WHERE user_id = 305;
-- A subscription to such a plan cannot be created either.
CALL expect_error($$
    INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
    VALUES (309, public.plan_id('storage_gb'), now() - interval '1 day', now() + interval '30 days')$$);
SELECT count(*) AS subscriptions_of_309 FROM user_subscriptions WHERE user_id = 309;
ROLLBACK;
-- A byte count beyond bigint is an error too (22003): 2147483647 TB.
BEGIN;
CALL expect_error($$UPDATE quota.plan_features SET feature_value = 2147483647, feature_unit = 'TB'
                     WHERE plan_id = public.plan_id('storage_gb') AND feature_code = 'storage_space'$$);
SET LOCAL session_replication_role = replica;
UPDATE plan_features SET feature_value = 2147483647, feature_unit = 'TB'
 WHERE plan_id = plan_id('storage_gb') AND feature_code = 'storage_space';
SET LOCAL session_replication_role = origin;
CALL expect_error('SELECT quota.get_user_storage_quota(310)');
ROLLBACK;
-- Rolled back: 310 has its 2 GB again, 305 its 512 MB override.
SELECT u AS user_id, s.* FROM unnest(ARRAY[305, 310]) AS u, pg_temp.storage(u) AS s;

-- =============================================================================================
-- The trigger sync_storage_quota, step by step for user 320.

-- 1. Inserting a subscription creates the missing user_storage_usage row with the quota.
SELECT * FROM pg_temp.storage(320);
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (320, plan_id('free'), now() - interval '1 day', now() + interval '30 days');
SELECT * FROM pg_temp.storage(320);
SELECT user_id, image_storage_bytes, document_storage_bytes, article_storage_bytes,
       total_storage_bytes, storage_quota_bytes, purchased_storage_bytes
  FROM user_storage_usage WHERE user_id = 320;

-- 2. An override in custom_quotas is followed at once.
UPDATE user_subscriptions SET custom_quotas = '{"storage_space": 300}' WHERE user_id = 320;
SELECT * FROM pg_temp.storage(320);

-- 3. Removing the storage_space key falls back to the plan (free: 100 MB).
UPDATE user_subscriptions SET custom_quotas = custom_quotas - 'storage_space' WHERE user_id = 320;
SELECT custom_quotas FROM user_subscriptions WHERE user_id = 320;
SELECT * FROM pg_temp.storage(320);

-- 4. Changing plan: professional (1024 MB), then enterprise (unlimited).
UPDATE user_subscriptions SET plan_id = plan_id('professional') WHERE user_id = 320;
SELECT * FROM pg_temp.storage(320);
UPDATE user_subscriptions SET plan_id = plan_id('enterprise') WHERE user_id = 320;
SELECT * FROM pg_temp.storage(320);

-- 5. An update that does not move the quota leaves the row untouched (updated_at unchanged).
CREATE TEMP TABLE before_320 AS SELECT * FROM user_storage_usage WHERE user_id = 320;
UPDATE user_subscriptions SET custom_quotas = '{"articles_per_month": 50}' WHERE user_id = 320;
SELECT s.updated_at = b.updated_at AS untouched, s.storage_quota_bytes
  FROM user_storage_usage s JOIN before_320 b USING (user_id);
DROP TABLE before_320;

-- 6. Status 'cancelled': no active subscription, quota 0 (the row stays, with 0).
UPDATE user_subscriptions SET status = 'cancelled' WHERE user_id = 320;
SELECT * FROM pg_temp.storage(320);
-- Active again:
UPDATE user_subscriptions SET status = 'active' WHERE user_id = 320;
SELECT * FROM pg_temp.storage(320);

-- 7. Moving the end date into the past ends the subscription: 0.
UPDATE user_subscriptions SET end_date = now() - interval '1 second' WHERE user_id = 320;
SELECT * FROM pg_temp.storage(320);
UPDATE user_subscriptions SET end_date = now() + interval '30 days' WHERE user_id = 320;
SELECT * FROM pg_temp.storage(320);

-- 8. A rolled-back change leaves the previous value.
BEGIN;
UPDATE user_subscriptions SET plan_id = plan_id('free') WHERE user_id = 320;
SELECT * FROM pg_temp.storage(320);
ROLLBACK;
SELECT * FROM pg_temp.storage(320);

-- 9. Deleting the subscription: 0.
DELETE FROM user_subscriptions WHERE user_id = 320;
SELECT * FROM pg_temp.storage(320);

-- ---------------------------------------------------------------------------------------------
-- An existing user_storage_usage row (written by the application, with usage) keeps its usage
-- columns; only storage_quota_bytes is set.
INSERT INTO user_storage_usage (user_id, image_storage_bytes, document_storage_bytes,
                                article_storage_bytes, storage_quota_bytes)
VALUES (321, 5000, 300, 20, 0);
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (321, plan_id('professional'), now() - interval '1 day', now() + interval '30 days');
SELECT user_id, image_storage_bytes, document_storage_bytes, article_storage_bytes,
       total_storage_bytes, storage_quota_bytes
  FROM user_storage_usage WHERE user_id = 321;

-- Two subscriptions: the row follows the active one with the latest end_date; when that one
-- is deleted, the other one's quota.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (321, plan_id('enterprise'), now() - interval '1 day', now() + interval '1 year');
SELECT * FROM pg_temp.storage(321);
DELETE FROM user_subscriptions WHERE user_id = 321 AND plan_id = plan_id('enterprise');
SELECT * FROM pg_temp.storage(321);

-- Moving a subscription to another user updates both users' rows.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (322, plan_id('free'), now() - interval '1 day', now() + interval '30 days');
UPDATE user_subscriptions SET user_id = 323 WHERE user_id = 322;
SELECT u AS user_id, s.* FROM unnest(ARRAY[322, 323]) AS u, pg_temp.storage(u) AS s;

-- A subscription that has not started yet gives 0 at insert time.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (324, plan_id('professional'), now() + interval '1 day', now() + interval '31 days');
SELECT * FROM pg_temp.storage(324);

RESET search_path;
