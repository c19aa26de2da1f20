-- 25_several_limits: one feature limited over several windows at once, as the seed's API
-- calls (100 a day and 1000 a month per tenant). A use must fit every limit, atomically;
-- check_user_quota reports the tightest; usage_overview lists them all. Users 25xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- The catalog: 10 per billing month and 4 a day for plans that say nothing else; professional
-- gives 20 a month, 5 a day and 3 an hour.
INSERT INTO quota.features (code, name, default_limit, window_limits)
VALUES ('searches', 'Searches', 10, '{"day": 4}');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, window_limits)
VALUES (plan_id('professional'), 'searches', 20, '{"day": 5, "hour": 3}');
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date) VALUES
    (2501, plan_id('free'), now() - interval '10 days', now() + interval '20 days'),
    (2502, plan_id('professional'), now() - interval '10 days', now() + interval '20 days');

CREATE FUNCTION pg_temp.limits(u bigint)
RETURNS TABLE (win text, lim bigint, used bigint, remaining bigint, resets boolean)
LANGUAGE sql AS $$
    SELECT l ->> 'window', (l ->> 'limit')::bigint, (l ->> 'used')::bigint,
           (l ->> 'remaining')::bigint, l ->> 'next_reset' IS NOT NULL
      FROM quota.usage_overview(u) o, jsonb_array_elements(o.limits) l
     WHERE o.feature_code = 'searches'
$$;

-- What the limits say, whatever the clock: one transaction, one now(), one hour and day.
BEGIN;
-- The catalog's day limit is the tighter one: 3 of 4 used leaves 1, not 7.
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2501, 'searches', 3);
SELECT * FROM check_user_quota(2501, 'searches');
-- Refused by the day, though the month has room; nothing is counted anywhere.
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2501, 'searches', 2);
SELECT allowed, remaining FROM consume(2501, 'searches', 1);
SELECT * FROM pg_temp.limits(2501);
-- The plan's own windows: 3 an hour comes first.
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2502, 'searches', 3);
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2502, 'searches', 1);
-- record_feature_usage records what happened, beyond the limits too, in every window.
SELECT record_feature_usage(2502, 'searches', 'search', 1);
SELECT * FROM pg_temp.limits(2502);
SELECT * FROM check_user_quota(2502, 'searches');

-- A refund gives the units back to every window that counted them.
SELECT refunded_amount FROM refund_usage((SELECT max(id) FROM usage_records WHERE user_id = 2501));
SELECT * FROM pg_temp.limits(2501);

-- The main limit can be the tightest: a custom quota of 5 a month with 4 used leaves 1.
SELECT * FROM adjust_quota(2501, 'searches', 5, 'trial');
SELECT allowed FROM consume(2501, 'searches', 1);
SELECT * FROM check_user_quota(2501, 'searches');
SELECT * FROM pg_temp.limits(2501);
SELECT * FROM clear_custom_quota(2501, 'searches', 'trial over');

-- A new day starts a new window (here: the day's counter moved back one day), the month
-- goes on: 4 of 10 used this month, 0 of 4 today.
UPDATE quota.window_usage
   SET window_start = window_start - interval '1 day', window_end = window_end - interval '1 day'
 WHERE user_id = 2501 AND feature_code = 'searches' AND window_name = 'day';
SELECT * FROM check_user_quota(2501, 'searches');
SELECT allowed, remaining FROM consume(2501, 'searches', 4);
SELECT allowed, remaining FROM consume(2501, 'searches', 1);
SELECT window_name, usage_count FROM quota.window_usage
 WHERE user_id = 2501 ORDER BY window_start;

-- The ledger is the records' alone: every counter still equals its records.
SELECT * FROM verify_ledger(2501);
SELECT * FROM verify_ledger(2502);

-- Both read paths give the same answers.
SET pg_entitlements.direct_reads = off;
SELECT * FROM check_user_quota(2502, 'searches');
SELECT * FROM pg_temp.limits(2502);
RESET pg_entitlements.direct_reads;
SELECT * FROM check_user_quota(2502, 'searches');

-- Every role the README names: the app consumes, the reader reads.
SET LOCAL ROLE quota_app;
SELECT allowed FROM consume(2502, 'searches', 1);
SET LOCAL ROLE quota_reader;
SELECT has_quota, remaining FROM check_user_quota(2502, 'searches');
SELECT count(*) > 0 FROM quota.window_usage;
RESET ROLE;
COMMIT;

-- Holds claim units of one limit: a feature with several has none.
SELECT * FROM reserve(2502, 'searches', 1);

-- Window limits are checked when written, with the reason.
UPDATE quota.features SET window_limits = '{"fortnight": 1}' WHERE code = 'searches';
UPDATE quota.features SET window_limits = '{"day": -2}' WHERE code = 'searches';
UPDATE quota.features SET window_limits = '[100]' WHERE code = 'searches';
UPDATE quota.plan_features SET window_limits = '{"day": "100"}' WHERE feature_code = 'searches';
UPDATE quota.features SET window_limits = '{"week": 30, "day": -1}' WHERE code = 'searches'
RETURNING window_limits;
-- A change of further limits is announced, for a plan's users and for the catalog's (in a psql
-- of its own: a notification shows the sending backend's PID).
\! psql -X -q -d pge_regress -c 'LISTEN quota_updated' -c "UPDATE quota.plan_features SET window_limits = '{\"day\": 6, \"hour\": 3}' WHERE feature_code = 'searches'" -c "UPDATE quota.features SET window_limits = '{\"week\": 30}' WHERE code = 'searches'" 2>&1 | sed -E 's/server process with PID [0-9]+/server process with PID N/'

-- Only metered features have further windows: a running count never resets.
UPDATE quota.features SET kind = 'gauge' WHERE code = 'searches';
SELECT * FROM pg_temp.limits(2501);
UPDATE quota.features SET kind = 'metered' WHERE code = 'searches';

DELETE FROM quota.window_usage WHERE user_id IN (2501, 2502);
