-- Part (d): one renewal of user 3, as an application renews: the active row is cancelled and a
-- new active row inserted, in one transaction. It keeps the dates, so the period (and the
-- counter) stays the same and every use is judged by the same limit.
BEGIN;
UPDATE quota.user_subscriptions SET status = 'cancelled' WHERE user_id = 3 AND status = 'active';
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT user_id, plan_id, start_date, end_date FROM quota.user_subscriptions
 WHERE user_id = 3 ORDER BY id DESC LIMIT 1;
COMMIT;
\sleep 10 ms
