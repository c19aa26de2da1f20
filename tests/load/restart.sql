-- Part (e): one renewal of user 4 as a new row: the active row is cancelled and a new one
-- inserted that starts now, with quota_reset_anchor set to now() - 10 days (the anchor the
-- application computed, off by the time since the first row started).
BEGIN;
UPDATE quota.user_subscriptions SET status = 'cancelled' WHERE user_id = 4 AND status = 'active';
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor)
SELECT 4, plan_id, now(), now() + interval '20 days', now() - interval '10 days'
  FROM quota.user_subscriptions WHERE user_id = 4 ORDER BY id DESC LIMIT 1;
COMMIT;
\sleep 20 ms
