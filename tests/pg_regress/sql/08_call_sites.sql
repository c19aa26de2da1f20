-- 08_call_sites: the one-row functions (check_user_quota, consume, refund_usage, adjust_quota,
-- clear_custom_quota, anniversary_period) hand their row to the executor in materialize mode.
-- Every place SQL can call a set-returning function must get the same row: FROM, LATERAL,
-- ROWS FROM, WITH ORDINALITY, the select list (whole row, one field, expanded), a scrollable
-- cursor read backwards, PL/pgSQL SELECT INTO and RETURN QUERY, a SQL function, a prepared
-- statement executed more times than the plan cache needs to switch to a generic plan.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;

-- User 801 on the free plan (articles_per_month 10), 3 used.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (801, plan_id('free'), now() - interval '1 day', now() + interval '29 days');
SELECT record_feature_usage(801, 'articles_per_month', amount => 3);

SELECT * FROM check_user_quota(801, 'articles_per_month');
SELECT u, c.* FROM generate_series(800, 801) u, LATERAL check_user_quota(801, 'articles_per_month') c;
SELECT * FROM ROWS FROM (check_user_quota(801, 'articles_per_month'),
                         check_user_quota(801, 'publish_per_month')) WITH ORDINALITY;

-- In the select list: the whole row, one field of it, and the row expanded into columns.
SELECT check_user_quota(801, 'articles_per_month');
SELECT (check_user_quota(801, 'articles_per_month')).remaining;
SELECT (check_user_quota(801, 'articles_per_month')).*;
SELECT f, (check_user_quota(801, f)).quota_limit
  FROM unnest(ARRAY['articles_per_month', 'storage_space']) f ORDER BY f;
SELECT anniversary_period('2026-01-31 10:00+00', 'monthly', '2026-03-01 00:00+00');

-- In a parallel worker (force_parallel_mode runs the whole query in one), every reading
-- function answers as in the leader: a worker cannot take the newest snapshot the backend's
-- copy is built from, so it reads through statements with the query's snapshot. The setting
-- is called debug_parallel_query from PostgreSQL 16 on.
SELECT set_config(name, 'on', false) AS whole_query_in_a_worker
  FROM pg_settings WHERE name IN ('force_parallel_mode', 'debug_parallel_query');
SELECT c.*, (SELECT count(*) FROM usage_overview(801)) AS features,
       get_user_storage_quota(801) AS storage_bytes, p.cycle
  FROM check_user_quota(801, 'articles_per_month') c,
       get_quota_period(801, 'articles_per_month') p;
SELECT sum(c.remaining) AS remaining_summed
  FROM generate_series(1, 3) g, LATERAL check_user_quota(801, 'articles_per_month') c;
SELECT set_config(name, reset_val, false) AS whole_query_in_a_worker
  FROM pg_settings WHERE name IN ('force_parallel_mode', 'debug_parallel_query');

-- A scrollable cursor reads the row forwards and backwards.
BEGIN;
DECLARE c SCROLL CURSOR FOR SELECT * FROM check_user_quota(801, 'articles_per_month');
FETCH NEXT FROM c;
FETCH PRIOR FROM c;
FETCH LAST FROM c;
COMMIT;

-- PL/pgSQL and SQL functions.
CREATE FUNCTION pg_temp.remaining_plpgsql(uid bigint) RETURNS int LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  SELECT * INTO r FROM quota.check_user_quota(uid, 'articles_per_month');
  RETURN r.remaining;
END $$;
CREATE FUNCTION pg_temp.remaining_sql(uid bigint) RETURNS int LANGUAGE sql STABLE AS $$
  SELECT remaining FROM quota.check_user_quota(uid, 'articles_per_month')
$$;
CREATE FUNCTION pg_temp.figures(uid bigint)
RETURNS TABLE (has_quota bool, current_usage int, quota_limit int, remaining int, percentage numeric)
LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY SELECT * FROM quota.check_user_quota(uid, 'articles_per_month');
END $$;
SELECT pg_temp.remaining_plpgsql(801), pg_temp.remaining_sql(801);
SELECT * FROM pg_temp.figures(801);

-- A prepared statement, executed often enough for the plan cache to try its generic plan.
PREPARE q(bigint) AS SELECT remaining FROM check_user_quota($1, 'articles_per_month');
EXECUTE q(801); EXECUTE q(801); EXECUTE q(801); EXECUTE q(801);
EXECUTE q(801); EXECUTE q(801); EXECUTE q(801);
DEALLOCATE q;

-- The writers in the select list and in FROM, each once: consume allows 2 of the remaining 7,
-- refunds it by key, adjusts the limit and clears it again.
SELECT consume(801, 'articles_per_month', 2, 'call-sites-1');
SELECT (refund_usage(801, 'call-sites-1')).refunded_amount;
SELECT * FROM adjust_quota(801, 'articles_per_month', 12, 'call sites', 'regress');
SELECT (clear_custom_quota(801, 'articles_per_month', 'call sites', 'regress')).*;
SELECT * FROM check_user_quota(801, 'articles_per_month');
