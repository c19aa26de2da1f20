-- 16_local_time: an application that stores local times in `timestamp without time zone`
-- columns is attached as it is (issue 15, part 1). The same data, once in the extension's own
-- timestamptz tables and once in the application's local-time tables (Asia/Shanghai), gives the
-- same answers from every reading and writing function, and what the functions write into the
-- application's tables is its local time. Users 16xx.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET search_path = quota, public;
SET client_min_messages = warning;
-- Periods are computed in Shanghai, as the seed application's users live there (in force for
-- long: a change made now would apply from the next boundary).
INSERT INTO settings (time_zone, time_zone_changed_at) VALUES ('Asia/Shanghai', '2000-01-01');

-- The application's tables: the seed's shape (integer ids, varchar codes, local times), with
-- the columns and indexes attach_problems asks for added.
CREATE SCHEMA lt;
CREATE TABLE lt.subscription_plans (
    id serial PRIMARY KEY, plan_code varchar(50) NOT NULL UNIQUE, plan_name varchar(100) NOT NULL,
    billing_cycle varchar(20) NOT NULL DEFAULT 'monthly', quota_cycle_type varchar(20));
CREATE TABLE lt.plan_features (
    id serial PRIMARY KEY, plan_id integer REFERENCES lt.subscription_plans (id),
    feature_code varchar(50) NOT NULL, feature_value integer NOT NULL, feature_unit varchar(20),
    UNIQUE (plan_id, feature_code));
CREATE TABLE lt.user_subscriptions (
    id serial PRIMARY KEY, user_id integer NOT NULL,
    plan_id integer REFERENCES lt.subscription_plans (id),
    start_date timestamp NOT NULL, end_date timestamp NOT NULL,
    status varchar(20) DEFAULT 'active', custom_quotas jsonb, quota_reset_anchor timestamp,
    quota_cycle_type varchar(20));
CREATE TABLE lt.user_usage (
    id serial PRIMARY KEY, user_id integer NOT NULL, feature_code varchar(50) NOT NULL,
    usage_count integer DEFAULT 0, period_start timestamp NOT NULL, period_end timestamp NOT NULL,
    last_reset_at timestamp, updated_at timestamp, alerted_percent integer NOT NULL DEFAULT 0,
    alerted_limit bigint, UNIQUE (user_id, feature_code, period_start));
CREATE TABLE lt.usage_records (
    id serial PRIMARY KEY, user_id integer NOT NULL, feature_code varchar(50) NOT NULL,
    period_start timestamp, resource_type varchar(50), resource_id integer, amount integer,
    metadata jsonb, idempotency_key text, refund_of integer, created_at timestamp);
CREATE UNIQUE INDEX ON lt.usage_records (user_id, idempotency_key);
CREATE UNIQUE INDEX ON lt.usage_records (user_id, refund_of);
CREATE TABLE lt.user_storage_usage (
    id serial PRIMARY KEY, user_id integer NOT NULL UNIQUE,
    storage_quota_bytes bigint NOT NULL DEFAULT 0, updated_at timestamp);

-- The same plans on both sides.
INSERT INTO subscription_plans (plan_code, plan_name, billing_cycle)
VALUES ('lt_monthly', 'LT monthly', 'monthly'), ('lt_yearly', 'LT yearly', 'yearly');
INSERT INTO plan_features (plan_id, feature_code, feature_value, feature_unit)
SELECT p.id, f.code, f.value, f.unit
  FROM subscription_plans p
 CROSS JOIN (VALUES ('articles_per_month', 10, NULL), ('publish_per_month', 20, NULL),
                    ('platform_accounts', 3, NULL), ('storage_space', 100, 'MB')) AS f (code, value, unit)
 WHERE p.plan_code IN ('lt_monthly', 'lt_yearly');
INSERT INTO lt.subscription_plans (id, plan_code, plan_name, billing_cycle)
SELECT id, plan_code, plan_name, billing_cycle FROM subscription_plans
 WHERE plan_code IN ('lt_monthly', 'lt_yearly');
INSERT INTO lt.plan_features (plan_id, feature_code, feature_value, feature_unit)
SELECT plan_id, feature_code, feature_value, feature_unit FROM plan_features
 WHERE plan_id IN (SELECT id FROM lt.subscription_plans);

-- Subscriptions and usage in the extension's own tables: anchors on either side of a period
-- boundary, a yearly plan, a custom quota, an open use history with a key and a refund.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
VALUES (1601, plan_id('lt_monthly'), now() - interval '10 days', now() + interval '20 days', NULL),
       (1602, plan_id('lt_monthly'), now() - interval '40 days 3 hours', now() + interval '50 days',
        '{"publish_per_month": 30}'),
       (1603, plan_id('lt_yearly'), now() - interval '200 days', now() + interval '165 days', NULL),
       (1604, plan_id('lt_monthly'), now() - interval '10 days', now() + interval '20 days', NULL);
SELECT count(*) FILTER (WHERE allowed) AS allowed
  FROM (VALUES (1601, 'articles_per_month', 4, 'seed-1'), (1602, 'publish_per_month', 25, NULL),
               (1603, 'articles_per_month', 7, NULL), (1604, 'articles_per_month', 6, 'seed-4'),
               (1604, 'platform_accounts', 2, NULL)) AS u (user_id, feature, amount, key),
       LATERAL consume(u.user_id, u.feature, u.amount, u.key) c;
SELECT refunded_amount FROM refund_usage(1601, 'seed-1');

-- The same rows in the application's tables, its times local to Shanghai.
INSERT INTO lt.user_subscriptions (id, user_id, plan_id, start_date, end_date, status,
                                   custom_quotas, quota_reset_anchor, quota_cycle_type)
SELECT id, user_id, plan_id, start_date AT TIME ZONE 'Asia/Shanghai',
       end_date AT TIME ZONE 'Asia/Shanghai', status, custom_quotas,
       quota_reset_anchor AT TIME ZONE 'Asia/Shanghai', quota_cycle_type
  FROM user_subscriptions WHERE user_id BETWEEN 1600 AND 1699;
SELECT setval(pg_get_serial_sequence('lt.user_subscriptions', 'id'),
              (SELECT max(id) FROM user_subscriptions));
INSERT INTO lt.user_usage (user_id, feature_code, usage_count, period_start, period_end,
                           last_reset_at, updated_at, alerted_percent, alerted_limit)
SELECT user_id, feature_code, usage_count, period_start AT TIME ZONE 'Asia/Shanghai',
       period_end AT TIME ZONE 'Asia/Shanghai', last_reset_at AT TIME ZONE 'Asia/Shanghai',
       updated_at AT TIME ZONE 'Asia/Shanghai', alerted_percent, alerted_limit
  FROM user_usage WHERE user_id BETWEEN 1600 AND 1699;
INSERT INTO lt.usage_records (id, user_id, feature_code, period_start, resource_type,
                              resource_id, amount, metadata, idempotency_key, refund_of,
                              created_at)
SELECT id, user_id, feature_code, period_start AT TIME ZONE 'Asia/Shanghai', resource_type,
       resource_id, amount, metadata, idempotency_key, refund_of,
       created_at AT TIME ZONE 'Asia/Shanghai'
  FROM usage_records WHERE user_id BETWEEN 1600 AND 1699;
SELECT setval(pg_get_serial_sequence('lt.usage_records', 'id'),
              (SELECT max(id) FROM usage_records));

-- Every function, with the times an application writes in its own convention ($1: the zone
-- of its local times, NULL for timestamptz). Ids are left out: each side numbers its own.
CREATE FUNCTION public.lt_calls(local_zone text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    subs regclass := quota.bound_table('user_subscriptions');
    now_there text := CASE WHEN local_zone IS NULL THEN 'now()'
                           ELSE format('(now() AT TIME ZONE %L)', local_zone) END;
    users int[] := ARRAY[1601, 1602, 1603, 1604];
    features text[] := ARRAY['articles_per_month', 'publish_per_month', 'platform_accounts',
                             'storage_space'];
BEGIN
    RETURN QUERY SELECT format('check %s %s %s', u, f, q)
                   FROM unnest(users) u, unnest(features) f, quota.check_user_quota(u, f) q;
    RETURN QUERY SELECT format('period %s %s', u, p)
                   FROM unnest(users) u, quota.get_quota_period(u, 'articles_per_month') p;
    RETURN QUERY SELECT format('overview %s %s', u, o)
                   FROM unnest(users) u, quota.usage_overview(u) o;
    RETURN QUERY SELECT format('storage %s %s', u, quota.get_user_storage_quota(u))
                   FROM unnest(users) u;
    RETURN QUERY SELECT format('consume %s', c)
                   FROM quota.consume(1601, 'articles_per_month', 3, 'call-1') c;
    RETURN QUERY SELECT format('retry %s', c)
                   FROM quota.consume(1601, 'articles_per_month', 3, 'call-1') c;
    RETURN QUERY SELECT format('over %s', c) FROM quota.consume(1604, 'articles_per_month', 5) c;
    PERFORM quota.record_feature_usage(1602, 'publish_per_month', amount => 2,
                                       idempotency_key => 'call-2');
    RETURN QUERY SELECT format('refund %s %s %s', r.refunded_amount, r.period_start, r.newly_refunded)
                   FROM quota.refund_usage(1602, 'call-2') r;
    RETURN QUERY SELECT format('refund again %s', r.newly_refunded)
                   FROM quota.refund_usage(1604, 'seed-4') r;
    RETURN QUERY SELECT format('adjust %s', a)
                   FROM quota.adjust_quota(1603, 'articles_per_month', 50, 'lt', 'lt') a;
    -- A renewal as a new row with an approximate anchor: the usage carries over.
    EXECUTE format('UPDATE %s SET status = ''cancelled'' WHERE user_id = 1604 AND status = ''active''', subs);
    EXECUTE format('INSERT INTO %s (user_id, plan_id, start_date, end_date, quota_reset_anchor)
                    SELECT 1604, plan_id, %s, %s + interval ''1 month'', %s - interval ''10 days''
                      FROM %s WHERE user_id = 1604 LIMIT 1',
                   subs, now_there, now_there, now_there, subs);
    RETURN QUERY SELECT format('after renewal %s %s', f, q)
                   FROM unnest(features) f, quota.check_user_quota(1604, f) q;
    RETURN QUERY SELECT format('period after renewal starts at the new anchor: %s',
                               p.period_start = now() - interval '10 days')
                   FROM quota.get_quota_period(1604, 'articles_per_month') p;
    RETURN QUERY SELECT format('ledger %s %s', u, count(v.*))
                   FROM unnest(users) u LEFT JOIN LATERAL quota.verify_ledger(u) v ON true
                  GROUP BY u;
END
$$;

-- On the extension's own tables.
CREATE TABLE public.lt_own AS SELECT * FROM lt_calls(NULL) AS a (answer);
-- Attached, as it is: no column retyped.
SELECT attach('lt', local_time_zone => 'Asia/Shanghai');
SELECT attached_schema, attached_time_zone FROM settings;
CREATE TABLE public.lt_local AS SELECT * FROM lt_calls('Asia/Shanghai') AS a (answer);

-- The same answers, line for line.
SELECT count(*) AS answers FROM lt_own;
(SELECT answer FROM lt_own EXCEPT ALL SELECT answer FROM lt_local)
UNION ALL
(SELECT answer FROM lt_local EXCEPT ALL SELECT answer FROM lt_own);

-- What the functions wrote is the application's local time: every counter and record equals
-- the extension's own, converted to Shanghai time (1604's renewal happened at another now() on
-- each side: its counters are checked against its own new anchor below).
SELECT count(*) AS counters,
       count(*) FILTER (WHERE l.period_start = o.period_start AT TIME ZONE 'Asia/Shanghai'
                          AND l.period_end = o.period_end AT TIME ZONE 'Asia/Shanghai'
                          AND l.usage_count = o.usage_count) AS equal
  FROM lt.user_usage l
  FULL JOIN user_usage o
    ON o.user_id = l.user_id AND o.feature_code = l.feature_code
   AND o.period_start = l.period_start AT TIME ZONE 'Asia/Shanghai'
 WHERE coalesce(l.user_id, o.user_id) BETWEEN 1600 AND 1603;
SELECT count(*) AS records,
       count(*) FILTER (WHERE l.period_start = o.period_start AT TIME ZONE 'Asia/Shanghai'
                          AND l.amount = o.amount
                          AND abs(extract(epoch FROM l.created_at - (o.created_at AT TIME ZONE 'Asia/Shanghai'))) < 60)
         AS equal
  FROM lt.usage_records l
  JOIN usage_records o ON o.user_id = l.user_id AND o.feature_code = l.feature_code
   AND o.amount = l.amount AND o.idempotency_key IS NOT DISTINCT FROM l.idempotency_key
   AND (o.refund_of IS NULL) = (l.refund_of IS NULL)
 WHERE l.user_id BETWEEN 1600 AND 1603;
SELECT l.feature_code, l.usage_count, l.period_start = s.quota_reset_anchor AS at_local_anchor
  FROM lt.user_usage l
  JOIN lt.user_subscriptions s ON s.user_id = l.user_id AND s.status = 'active'
 WHERE l.user_id = 1604 AND l.feature_code = 'articles_per_month'
   AND l.period_end > s.quota_reset_anchor + interval '10 days';
SELECT detach();
DELETE FROM settings;
DROP TABLE lt_own, lt_local;
DROP FUNCTION lt_calls(text);
