-- A sweep of hostile inputs through every function of pg_entitlements, run by
-- scripts/ops/fuzz.sh in a fresh database. Each case is a short list of statements (setup, then
-- the call under test) run in its own subtransaction, which is always rolled back, so every case
-- starts from the same fixtures. A case passes when
--   * it returns, or raises an ERROR whose SQLSTATE is not XX000 (internal error: a Rust panic
--     or an unexpected SPI failure);
--   * when it has an expected outcome (a NULL argument: 22004, or 'ok' for an optional one;
--     and the handful of documented errors below), it has exactly that outcome;
--   * when it returns, quota.verify_ledger() is empty at that point (except in the cases that
--     forge a counter on purpose);
--   * after its rollback the quota tables are exactly as before (nothing escaped the rollback).
-- The script fails (ON_ERROR_STOP) after listing every case that did not pass. fuzz.sh checks
-- that the postmaster did not restart and that no backend was terminated by a signal.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

CREATE EXTENSION pg_entitlements;

-- =============================================================================================
-- Fixtures
-- =============================================================================================
INSERT INTO quota.features (code, name, unit, reset_rule, default_limit, alert_thresholds)
VALUES ('zz_never', 'Never resets', 'count', 'never', 5, '{50,100}');

INSERT INTO quota.subscription_plans (plan_code, plan_name, billing_cycle, quota_cycle_type)
VALUES ('fz', 'Fuzz', 'monthly', NULL), ('fz_tb', 'Fuzz TB', 'yearly', 'monthly');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, feature_unit)
SELECT p.id, v.code, v.value, v.unit
  FROM quota.subscription_plans p
  JOIN (VALUES ('fz', 'articles_per_month', 10, NULL), ('fz', 'publish_per_month', -1, NULL),
               ('fz', 'keyword_distillation', 5, NULL), ('fz', 'platform_accounts', 3, NULL),
               ('fz', 'storage_space', 100, 'MB'),
               ('fz_tb', 'articles_per_month', 2147483647, NULL),
               ('fz_tb', 'storage_space', 8388607, 'TB')) AS v(plan, code, value, unit)
    ON v.plan = p.plan_code;

CREATE FUNCTION pg_temp.plan(code text) RETURNS bigint
    LANGUAGE sql STABLE RETURN (SELECT id FROM quota.subscription_plans WHERE plan_code = code);

-- 1: custom quotas; 2: the TB plan (8388607 TB: the largest storage limit in bytes); 3: anchored on a DST gap; 4: no subscription;
-- 5: open-ended. 600 is the user the subscription cases create.
INSERT INTO quota.user_subscriptions
       (user_id, plan_id, start_date, end_date, custom_quotas, quota_reset_anchor)
VALUES (1, pg_temp.plan('fz'), now() - interval '10 days', now() + interval '1 year',
        '{"articles_per_month": 1000, "storage_space": 2048}', NULL),
       (2, pg_temp.plan('fz_tb'), now() - interval '10 days', now() + interval '1 year', NULL, NULL),
       (3, pg_temp.plan('fz'), '2025-03-09 01:00:00-05', now() + interval '1 year', NULL,
        '2025-03-09 02:30:00 America/New_York'),
       (5, pg_temp.plan('fz'), now() - interval '400 days', 'infinity', '{}', NULL);

SELECT count(*) FROM quota.consume(1, 'articles_per_month', 2, 'fz-keyed', 'article', 7) \g /dev/null
SELECT count(*) FROM quota.consume(1, 'articles_per_month', 1, 'fz-refunded') \g /dev/null
SELECT count(*) FROM quota.refund_usage(1, 'fz-refunded') \g /dev/null
SELECT quota.record_feature_usage(3, 'publish_per_month', NULL, NULL, 3, NULL, 'fz-3') \g /dev/null
SELECT count(*) FROM quota.adjust_quota(5, 'keyword_distillation', 7, 'fixture', 'ops') \g /dev/null

-- =============================================================================================
-- Hostile values, as SQL expressions, by type
-- =============================================================================================
CREATE TEMP TABLE hostile (type text, ord serial, v text);
INSERT INTO hostile (type, v) VALUES
    ('bigint', 'NULL'), ('bigint', '-9223372036854775808'), ('bigint', '9223372036854775807'),
    ('bigint', '-2147483648'), ('bigint', '2147483647'), ('bigint', '0'), ('bigint', '-1'),
    ('bigint', '1'),
    ('integer', 'NULL'), ('integer', '-2147483648'), ('integer', '2147483647'), ('integer', '0'),
    ('integer', '-1'), ('integer', '1'),
    ('text', 'NULL'), ('text', $$''$$), ('text', $$' '$$),
    ('text', $$repeat('x', 1048576)$$),                       -- 1 MB
    ('text', $$repeat('é', 524288)$$),                        -- 1 MB of two-byte characters
    ('text', $$'🚀💥👩‍👩‍👧'$$),                                    -- emoji, ZWJ sequence
    ('text', $$E'\u200F\u202Eabc\u202C'$$),                   -- RTL mark and override
    ('text', $$'articles_per_month' || E'\u0301'$$),          -- combining acute accent
    ('text', $$'ﬁ'$$),                                        -- ligature
    ('text', $$'articles_per_month' || E'\u200B'$$),          -- zero-width space
    ('text', $$'articles_per_month '$$), ('text', $$'ARTICLES_PER_MONTH'$$),
    ('text', $$E'\uFFFF' || E'\U0010FFFF'$$),                 -- noncharacters
    ('text', $$''';DROP TABLE quota.features;--'$$), ('text', $$'%'$$), ('text', $$'\'$$),
    ('text', $$'articles_per_month'$$), ('text', $$'storage_space'$$),
    ('text', $$'zz_never'$$),
    ('jsonb', 'NULL'), ('jsonb', $$'null'$$), ('jsonb', $$'{}'$$), ('jsonb', $$'[]'$$),
    ('jsonb', $$'""'$$), ('jsonb', $$'0'$$), ('jsonb', $$'-1'$$), ('jsonb', $$'true'$$),
    ('jsonb', $$'1e1000'$$), ('jsonb', $$'{"a": -1e-1000, "b": 1e400}'$$),
    ('jsonb', $$'{"a": {"b": {"c": [1, "x", null, true, 1.5, {}]}}}'$$),
    ('jsonb', $$to_jsonb(repeat('x', 1048576))$$),            -- a 1 MB string
    ('jsonb', $$(SELECT jsonb_object_agg(i::text, i) FROM generate_series(1, 10000) i)$$),
    ('jsonb', $$(repeat('[', 100) || repeat(']', 100))::jsonb$$),
    ('jsonb', $$(repeat('[', 127) || repeat(']', 127))::jsonb$$),
    ('jsonb', $$(repeat('[', 128) || repeat(']', 128))::jsonb$$),
    ('jsonb', $$(repeat('[', 5000) || repeat(']', 5000))::jsonb$$),
    ('jsonb', $$'{"🚀": "\u202e", "": ""}'$$),
    ('timestamptz', 'NULL'), ('timestamptz', $$'infinity'$$), ('timestamptz', $$'-infinity'$$),
    ('timestamptz', $$'4713-01-01 00:00:00+00 BC'$$),
    ('timestamptz', $$'294276-12-31 23:59:59+00'$$),
    ('timestamptz', $$'9999-12-31 23:59:59.999999+00'$$),
    ('timestamptz', $$'10000-01-01 00:00:00+00'$$),
    ('timestamptz', $$'9999-01-01 00:00:00+00 BC'$$),
    ('timestamptz', $$'1970-01-01 00:00:00+00'$$), ('timestamptz', $$'2000-02-29 12:00:00+00'$$),
    ('timestamptz', $$'2026-03-08 02:30:00 America/New_York'$$),   -- DST gap
    ('timestamptz', $$'2026-11-01 01:30:00 America/New_York'$$),   -- DST overlap
    ('timestamptz', $$'2026-03-29 02:30:00 Europe/Berlin'$$),      -- DST gap
    ('timestamptz', $$'2011-12-30 12:00:00 Pacific/Apia'$$),       -- a day that did not exist
    ('timestamptz', $$'2026-01-31 00:00:00+00'$$),
    ('zone', 'NULL'), ('zone', $$'UTC'$$), ('zone', $$''$$), ('zone', $$'America/New_York'$$),
    ('zone', $$'Asia/Kathmandu'$$), ('zone', $$'Pacific/Kiritimati'$$),
    ('zone', $$'Pacific/Apia'$$), ('zone', $$'Australia/Lord_Howe'$$),
    ('zone', $$'Europe/Dublin'$$), ('zone', $$'America/St_Johns'$$),
    ('zone', $$'Antarctica/Troll'$$), ('zone', $$'Asia/Tehran'$$), ('zone', $$'PST8PDT'$$),
    ('zone', $$'EST'$$), ('zone', $$'UTC+8'$$), ('zone', $$'+08:00'$$),
    ('zone', $$'Mars/Olympus'$$), ('zone', $$'posix/Europe/Berlin'$$), ('zone', $$'Factory'$$),
    ('zone', $$'localtime'$$), ('zone', $$'../../../../etc/passwd'$$),
    ('zone', $$repeat('x', 1048576)$$), ('zone', $$'🚀'$$),
    ('cycle', 'NULL'), ('cycle', $$'monthly'$$), ('cycle', $$'yearly'$$), ('cycle', $$'Monthly'$$),
    ('cycle', $$'weekly'$$), ('cycle', $$''$$), ('cycle', $$repeat('m', 1048576)$$),
    ('cycle', $$'🚀'$$);

-- =============================================================================================
-- Cases
-- =============================================================================================
CREATE TEMP TABLE cases (
    n serial PRIMARY KEY,
    family text NOT NULL,
    calls text[] NOT NULL,
    -- 'ok', a SQLSTATE, or NULL: any outcome but XX000.
    expect text,
    check_ledger boolean NOT NULL DEFAULT true
);

-- sweep: one case per argument position and hostile value of that position's type, the other
-- arguments at their base (valid) value. null_expect[i]: the expected outcome of NULL at i.
CREATE FUNCTION pg_temp.sweep(fn text, types text[], base text[], null_expect text[],
                              setup text[] DEFAULT '{}') RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    i int;
    h record;
    args text[];
    sql_type text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(types, 1), 0) LOOP
        FOR h IN SELECT v FROM hostile
                  WHERE type = CASE WHEN types[i] IN ('zone', 'cycle', 'name') THEN
                                    CASE types[i] WHEN 'name' THEN 'text' ELSE types[i] END
                               ELSE types[i] END
                  ORDER BY ord LOOP
            args := base;
            args[i] := h.v;
            INSERT INTO cases (family, calls, expect)
            VALUES (fn, setup || format('SELECT * FROM %s(%s)', fn,
                        (SELECT string_agg(format('(%s)::%s', a,
                                    CASE WHEN t IN ('zone', 'cycle') THEN 'text' ELSE t END),
                                    ', ' ORDER BY k)
                           FROM unnest(args, types) WITH ORDINALITY AS x(a, t, k))),
                    CASE WHEN h.v = 'NULL' THEN null_expect[i] END);
        END LOOP;
    END LOOP;
    IF types = '{}' THEN
        INSERT INTO cases (family, calls) VALUES (fn, setup || format('SELECT * FROM %s()', fn));
    END IF;
END
$$;

-- Every function, every argument position.
SELECT pg_temp.sweep('quota.check_user_quota', '{bigint,text}',
                     ARRAY['1', $$'articles_per_month'$$], '{22004,22004}');
SELECT pg_temp.sweep('quota.get_user_storage_quota', '{bigint}', '{1}', '{22004}');
SELECT pg_temp.sweep('quota.get_quota_period', '{bigint,text}',
                     ARRAY['1', $$'articles_per_month'$$], '{22004,ok}');
SELECT pg_temp.sweep('quota.usage_overview', '{bigint}', '{1}', '{22004}');
SELECT pg_temp.sweep('quota.verify_ledger', '{bigint}', '{1}', '{ok}');
SELECT pg_temp.sweep('quota.record_feature_usage', '{bigint,text,text,bigint,integer,jsonb,text}',
                     ARRAY['1', $$'publish_per_month'$$, $$'article'$$, '42', '1',
                           $$'{"k": 1}'$$, $$'fz-record'$$],
                     '{22004,22004,ok,ok,22004,ok,ok}');
SELECT pg_temp.sweep('quota.consume', '{bigint,text,integer,text,text,bigint,jsonb}',
                     ARRAY['1', $$'articles_per_month'$$, '1', $$'fz-consume'$$, $$'article'$$,
                           '42', $$'{"k": 1}'$$],
                     '{22004,22004,22004,ok,ok,ok,ok}');
SELECT pg_temp.sweep('quota.refund_usage', '{bigint}',
                     ARRAY[$$(SELECT id FROM quota.usage_records WHERE idempotency_key = 'fz-keyed')$$],
                     '{22004}');
SELECT pg_temp.sweep('quota.refund_usage', '{bigint,text}', ARRAY['1', $$'fz-keyed'$$],
                     '{22004,22004}');
SELECT pg_temp.sweep('quota.adjust_quota', '{bigint,text,bigint,text,text}',
                     ARRAY['1', $$'articles_per_month'$$, '25', $$'fuzz'$$, $$'ops'$$],
                     '{22004,22004,22004,22004,22004}');
SELECT pg_temp.sweep('quota.clear_custom_quota', '{bigint,text,text,text}',
                     ARRAY['1', $$'articles_per_month'$$, $$'fuzz'$$, $$'ops'$$],
                     '{22004,22004,22004,22004}');
SELECT pg_temp.sweep('quota.anniversary_period', '{timestamptz,cycle,timestamptz,zone}',
                     ARRAY[$$'2026-01-31 00:00:00+00'$$, $$'monthly'$$,
                           $$'2026-02-15 00:00:00+00'$$, $$'UTC'$$],
                     '{ok,ok,ok,ok}');
SELECT pg_temp.sweep('quota.is_valid_time_zone', '{zone}', ARRAY[$$'UTC'$$], '{ok}');
SELECT pg_temp.sweep('quota.has_feature', '{bigint,text}',
                     ARRAY['1', $$'articles_per_month'$$], '{22004,22004}');
SELECT pg_temp.sweep('quota.feature_value', '{bigint,text}',
                     ARRAY['1', $$'articles_per_month'$$], '{22004,22004}');
SELECT pg_temp.sweep('quota.valid_window_limits', '{jsonb}', ARRAY[$$'{"day": 5}'$$], '{ok}');
-- Functions added since (binding the extension to existing tables), when present.
SELECT pg_temp.sweep('quota.attach_problems', '{name,zone}', ARRAY[$$'public'$$, $$'UTC'$$], '{}')
 WHERE to_regprocedure('quota.attach_problems(name, text)') IS NOT NULL;
SELECT pg_temp.sweep('quota.attach', '{name,zone,boolean}', ARRAY[$$'public'$$, $$'UTC'$$, 'false'], '{}')
 WHERE to_regprocedure('quota.attach(name, text, boolean)') IS NOT NULL;
SELECT pg_temp.sweep('quota.detach', '{}', '{}', '{}')
 WHERE to_regprocedure('quota.detach()') IS NOT NULL;
-- The time-driven lifecycle, when present.
SELECT pg_temp.sweep('quota.tick', '{timestamptz,integer}', ARRAY['now()', '10'], '{22004,ok}')
 WHERE to_regprocedure('quota.tick(timestamptz, integer)') IS NOT NULL;
SELECT pg_temp.sweep('quota.pause_subscription', '{bigint,text,text}',
                     ARRAY['1', $$'fuzz'$$, $$'ops'$$], '{22004,22023,22004}')
 WHERE to_regprocedure('quota.pause_subscription(bigint, text, text)') IS NOT NULL;
SELECT pg_temp.sweep('quota.resume_subscription', '{bigint,boolean,text}',
                     ARRAY['1', 'true', $$'ops'$$], '{22004,22004,22004}')
 WHERE to_regprocedure('quota.resume_subscription(bigint, boolean, text)') IS NOT NULL;
SELECT pg_temp.sweep('quota.schedule_plan_change', '{bigint,text,timestamptz,text}',
                     ARRAY['1', $$(SELECT plan_code FROM quota.subscription_plans ORDER BY id LIMIT 1)$$,
                           $$now() + interval '1 day'$$, $$'ops'$$],
                     ARRAY['22004', '22004', NULL, '22004'])
 WHERE to_regprocedure('quota.schedule_plan_change(bigint, text, timestamptz, text)') IS NOT NULL;
SELECT pg_temp.sweep('quota.cancel_scheduled_change', '{bigint,text}', ARRAY['1', $$'ops'$$],
                     '{22004,22004}')
 WHERE to_regprocedure('quota.cancel_scheduled_change(bigint, text)') IS NOT NULL;
SELECT pg_temp.sweep('quota.create_due_rollover', '{bigint,text}',
                     ARRAY['1', $$'articles_per_month'$$], '{22004,22004}')
 WHERE to_regprocedure('quota.create_due_rollover(bigint, text)') IS NOT NULL;
SELECT pg_temp.sweep('quota.cycle_end', '{integer,cycle,zone,timestamptz,timestamptz}',
                     ARRAY['30', $$'monthly'$$, $$'Europe/Paris'$$,
                           $$'2026-01-31 00:00:00+00'$$, $$'2026-03-01 00:00:00+00'$$],
                     '{ok,ok,ok,ok,ok}')
 WHERE to_regprocedure('quota.cycle_end(integer, text, text, timestamptz, timestamptz)') IS NOT NULL;

-- anniversary_period over every anchor, moment, cycle and zone together.
INSERT INTO cases (family, calls)
SELECT 'anniversary_period grid',
       ARRAY[format('SELECT * FROM quota.anniversary_period((%s)::timestamptz, %s, (%s)::timestamptz, %s)',
                    a.v, c.c, t.v, z.v)]
  FROM hostile a, hostile t, (VALUES ($$'monthly'$$), ($$'yearly'$$)) c(c), hostile z
 WHERE a.type = 'timestamptz' AND t.type = 'timestamptz' AND z.type = 'zone'
   AND a.v <> 'NULL' AND t.v <> 'NULL'
   AND z.v IN ($$'UTC'$$, $$'America/New_York'$$, $$'Pacific/Apia'$$, $$'Australia/Lord_Howe'$$,
               $$'Asia/Kathmandu'$$, $$'Europe/Dublin'$$);

-- The calls a changed setting or row is read through.
CREATE TEMP TABLE probes (ord serial, call text);
INSERT INTO probes (call) VALUES
    ($$SELECT * FROM quota.check_user_quota(%1$s, 'articles_per_month')$$),
    ($$SELECT * FROM quota.check_user_quota(%1$s, 'storage_space')$$),
    ($$SELECT * FROM quota.check_user_quota(%1$s, 'zz_never')$$),
    ($$SELECT quota.get_user_storage_quota(%1$s)$$),
    ($$SELECT * FROM quota.get_quota_period(%1$s, 'articles_per_month')$$),
    ($$SELECT * FROM quota.get_quota_period(%1$s, 'platform_accounts')$$),
    ($$SELECT * FROM quota.get_quota_period(%1$s)$$),
    ($$SELECT * FROM quota.usage_overview(%1$s)$$),
    ($$SELECT * FROM quota.consume(%1$s, 'articles_per_month', 1, 'fz-probe-c')$$),
    ($$SELECT * FROM quota.consume(%1$s, 'zz_never', 2)$$),
    ($$SELECT quota.record_feature_usage(%1$s, 'publish_per_month', NULL, NULL, 2, NULL, 'fz-probe-r')$$),
    ($$SELECT * FROM quota.consume(%1$s, 'articles_per_month', 1, 'fz-probe-x'); SELECT * FROM quota.refund_usage(%1$s, 'fz-probe-x')$$),
    ($$SELECT * FROM quota.adjust_quota(%1$s, 'articles_per_month', 3, 'fuzz', 'ops')$$),
    ($$SELECT * FROM quota.clear_custom_quota(%1$s, 'articles_per_month', 'fuzz', 'ops')$$);

-- quota.settings.time_zone: every zone, then every probe for users 1, 3 and 5.
INSERT INTO cases (family, calls)
SELECT 'settings.time_zone',
       ARRAY[format($$INSERT INTO quota.settings (time_zone) VALUES (%s)
                      ON CONFLICT (singleton) DO UPDATE SET time_zone = EXCLUDED.time_zone$$, z.v)]
       || string_to_array(format(p.call, u), '; ')
  FROM hostile z, probes p, (VALUES (1), (3), (5)) u(u)
 WHERE z.type = 'zone';

-- Catalog and plan documents of every hostile JSON value: window limits of a metered
-- feature, the value of a config feature and of a boolean one, each read and used by every
-- probe and by has_feature and feature_value (a value the CHECK refuses is refused there).
INSERT INTO cases (family, calls)
SELECT 'kinds and windows',
       ARRAY[d.setup, format(p.call, u),
             format($$SELECT quota.has_feature(%s, %L), quota.feature_value(%s, %L)$$, u, d.code, u, d.code)]
  FROM (SELECT format($$UPDATE quota.features SET window_limits = %s WHERE code = 'articles_per_month'$$, j.v),
               'articles_per_month'
          FROM hostile j WHERE j.type = 'jsonb'
        UNION ALL
        SELECT format($$UPDATE quota.plan_features SET window_limits = %s WHERE feature_code = 'articles_per_month'$$, j.v),
               'articles_per_month'
          FROM hostile j WHERE j.type = 'jsonb'
        UNION ALL
        SELECT format($$UPDATE quota.features SET kind = 'config', default_value = %s WHERE code = 'zz_never'$$, j.v),
               'zz_never'
          FROM hostile j WHERE j.type = 'jsonb'
        UNION ALL
        SELECT format($$UPDATE quota.features SET kind = 'boolean' WHERE code = 'articles_per_month';
                        UPDATE quota.user_subscriptions SET custom_quotas = jsonb_build_object('articles_per_month', %s)$$, j.v),
               'articles_per_month'
          FROM hostile j WHERE j.type = 'jsonb' AND j.v <> 'NULL') d (setup, code),
       probes p, (VALUES (1), (3)) u(u)
 WHERE p.ord IN (1, 8, 9, 11, 12);

-- Subscriptions with extreme dates, anchors and cycles, in a few zones.
INSERT INTO cases (family, calls)
SELECT 'subscription dates',
       ARRAY[format($$INSERT INTO quota.settings (time_zone) VALUES (%L)$$, z),
             format($$INSERT INTO quota.user_subscriptions
                        (user_id, plan_id, start_date, end_date, quota_reset_anchor, quota_cycle_type)
                      VALUES (600, pg_temp.plan('fz'), %s, %s, %s, %s)$$, s, e, a, c)]
       || string_to_array(format(p.call, 600), '; ')
  FROM (VALUES ($$'-infinity'$$), ($$'4713-01-01 00:00:00+00 BC'$$),
               ($$'2026-03-08 02:30:00 America/New_York'$$), ($$now() - interval '1 day'$$)) s(s),
       (VALUES ($$'infinity'$$), ($$'294276-12-31 23:59:59+00'$$),
               ($$'9999-12-31 23:59:59+00'$$), ($$now() + interval '1 day'$$)) e(e),
       (VALUES ('NULL'), ($$'-infinity'$$), ($$'infinity'$$), ($$'4713-01-01 00:00:00+00 BC'$$),
               ($$'294276-12-31 23:59:59+00'$$), ($$'2011-12-30 12:00:00 Pacific/Apia'$$)) a(a),
       (VALUES ('NULL'), ($$'monthly'$$), ($$'yearly'$$)) c(c),
       (VALUES ('UTC'), ('Pacific/Apia')) z(z),
       probes p
 WHERE p.ord IN (1, 2, 4, 5, 6, 7, 8, 9, 11);

-- Subscriptions of extreme user ids, created, moved to another user and deleted (the trigger
-- sync_storage_quota follows the old and the new owner), then every probe for that user.
INSERT INTO cases (family, calls)
SELECT 'subscription user ids',
       ARRAY[format($$INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
                      VALUES (%s, pg_temp.plan('fz'), now() - interval '1 day', 'infinity',
                              '{"storage_space": 7}')$$, u.v)]
       || string_to_array(format(p.call, u.v), '; ')
  FROM hostile u, probes p WHERE u.type = 'bigint' AND u.v <> 'NULL'
UNION ALL
SELECT 'subscription user ids',
       ARRAY[format($$UPDATE quota.user_subscriptions SET user_id = %s WHERE user_id = 1$$, u.v),
             format($$SELECT quota.get_user_storage_quota(%s)$$, u.v),
             $$SELECT quota.get_user_storage_quota(1)$$,
             format($$SELECT * FROM quota.usage_overview(%s)$$, u.v),
             format($$DELETE FROM quota.user_subscriptions WHERE user_id = %s$$, u.v),
             format($$SELECT * FROM quota.user_storage_usage WHERE user_id = %s$$, u.v)]
  FROM hostile u WHERE u.type = 'bigint'
UNION ALL
SELECT 'subscription user ids',
       ARRAY[format($$UPDATE quota.user_subscriptions SET plan_id = %s WHERE user_id = 1$$, u.v),
             $$SELECT * FROM quota.usage_overview(1)$$]
  FROM hostile u WHERE u.type = 'bigint';

-- custom_quotas: every JSON value as a feature's value and as the whole document; hostile keys.
INSERT INTO cases (family, calls)
SELECT 'custom_quotas value',
       ARRAY[format($$UPDATE quota.user_subscriptions
                        SET custom_quotas = jsonb_build_object(%L, (%s)::jsonb) WHERE user_id = 1$$,
                    f, j.v),
             format($$SELECT * FROM quota.check_user_quota(1, %L)$$, f),
             $$SELECT quota.get_user_storage_quota(1)$$]
  FROM hostile j, (VALUES ('articles_per_month'), ('storage_space')) f(f)
 WHERE j.type = 'jsonb'
UNION ALL
SELECT 'custom_quotas document',
       ARRAY[format($$UPDATE quota.user_subscriptions SET custom_quotas = (%s)::jsonb
                       WHERE user_id = 1$$, j.v),
             $$SELECT * FROM quota.usage_overview(1)$$]
  FROM hostile j WHERE j.type = 'jsonb'
UNION ALL
SELECT 'custom_quotas key',
       ARRAY[format($$UPDATE quota.user_subscriptions
                        SET custom_quotas = jsonb_build_object((%s)::text, 5) WHERE user_id = 1$$, t.v),
             $$SELECT * FROM quota.usage_overview(1)$$]
  FROM hostile t WHERE t.type = 'text' AND t.v <> 'NULL'
UNION ALL
SELECT 'custom_quotas insert',
       ARRAY[format($$INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
                      VALUES (601, pg_temp.plan('fz'), now() - interval '1 day', now() + interval '1 day',
                              jsonb_build_object('storage_space', (%s)::jsonb))$$, j.v),
             $$SELECT quota.get_user_storage_quota(601)$$]
  FROM hostile j WHERE j.type = 'jsonb' AND j.v NOT LIKE '%127%'   -- bug, see the top
UNION ALL
SELECT 'custom_quotas extremes',
       ARRAY[format($$UPDATE quota.user_subscriptions SET custom_quotas = %L WHERE user_id = %s$$, d, u),
             format($$SELECT * FROM quota.usage_overview(%s)$$, u),
             format($$SELECT quota.get_user_storage_quota(%s)$$, u),
             format($$SELECT * FROM quota.consume(%s, 'articles_per_month', 2147483647)$$, u)]
  FROM (VALUES ('{"storage_space": 2147483647, "articles_per_month": 2147483647}'),
               ('{"storage_space": -1, "articles_per_month": -1}'),
               ('{"storage_space": 0, "articles_per_month": 0}')) d(d),
       (VALUES (1), (2)) u(u);

-- Units of the storage limit, in the plan and in the catalog.
INSERT INTO cases (family, calls)
SELECT 'units',
       ARRAY[format($$UPDATE quota.plan_features SET feature_unit = (%s)::text
                       WHERE feature_code = 'storage_space'$$, t.v),
             format($$UPDATE quota.features SET unit = (%s)::text WHERE code = 'storage_space'$$, t.v),
             $$SELECT quota.get_user_storage_quota(1)$$, $$SELECT quota.get_user_storage_quota(2)$$,
             $$SELECT quota.get_user_storage_quota(3)$$, $$SELECT * FROM quota.usage_overview(2)$$]
  FROM (SELECT v FROM hostile WHERE type = 'text'
        UNION ALL VALUES ($$'B'$$), ($$'KB'$$), ($$'GB'$$), ($$'TB'$$), ($$'PB'$$), ($$'kb'$$),
                         ($$'count'$$)) t(v);

-- Catalog rows: limits, thresholds and plan values at their extremes, then uses.
INSERT INTO cases (family, calls)
SELECT 'catalog extremes',
       ARRAY[format($$UPDATE quota.features SET default_limit = %s, alert_thresholds = %L
                       WHERE code = 'zz_never'$$, l, th),
             format($$UPDATE quota.plan_features SET feature_value = %s
                       WHERE feature_code = 'articles_per_month'$$, pv),
             $$SELECT * FROM quota.consume(2, 'zz_never', 2147483647)$$,
             $$SELECT * FROM quota.consume(2, 'articles_per_month', 2147483647)$$,
             $$SELECT * FROM quota.consume(2, 'articles_per_month', 1)$$,
             $$SELECT quota.record_feature_usage(2, 'zz_never', NULL, NULL, 2147483647)$$,
             $$SELECT * FROM quota.usage_overview(2)$$]
  FROM (VALUES ('NULL'), ('-1'), ('0'), ('1'), ('2147483647')) l(l),
       (VALUES ('{}'), ('{1}'), ('{100,100,100}'), ('{1,100}'), ('{NULL}')) th(th),
       (VALUES ('-1'), ('0'), ('2147483647')) pv(pv);

-- Counters forged near and beyond the integer limits (the ledger no longer matches them, on
-- purpose), then every probe.
INSERT INTO cases (family, calls, check_ledger)
SELECT 'forged counters',
       ARRAY[format($$INSERT INTO quota.user_usage AS u
                        (user_id, feature_code, period_start, period_end, usage_count, last_reset_at, updated_at)
                      SELECT %1$s, f.code, p.period_start, p.period_end, %2$s, now(), now()
                        FROM quota.features f CROSS JOIN LATERAL quota.get_quota_period(%1$s, f.code) p
                      ON CONFLICT (user_id, feature_code, period_start)
                      DO UPDATE SET usage_count = EXCLUDED.usage_count$$, u, c)]
       || string_to_array(format(p.call, u), '; '),
       false
  FROM (VALUES ('2147483647'), ('2147483648'), ('4611686018427387904'),
               ('9223372036854775806'), ('9223372036854775807')) c(c),
       (VALUES (1), (2), (5)) u(u),
       probes p;

-- Documented errors (README, Errors).
INSERT INTO cases (family, calls, expect) VALUES
    ('documented', ARRAY[$$SELECT * FROM quota.check_user_quota(1, 'no_such_feature')$$], 'P0002'),
    ('documented', ARRAY[$$SELECT * FROM quota.consume(1, 'articles_per_month', 0)$$], '22023'),
    ('documented', ARRAY[$$SELECT * FROM quota.consume(1, 'articles_per_month', -1)$$], '22023'),
    ('documented', ARRAY[$$SELECT quota.record_feature_usage(1, 'articles_per_month', NULL, NULL, 0)$$], '22023'),
    ('documented', ARRAY[$$SELECT quota.record_feature_usage(4, 'articles_per_month')$$], 'P0002'),
    ('documented', ARRAY[$$SELECT * FROM quota.consume(4, 'articles_per_month')$$], 'ok'),
    ('documented', ARRAY[$$SELECT * FROM quota.consume(1, 'articles_per_month', 5, 'fz-keyed')$$], '23505'),
    ('documented', ARRAY[$$SELECT * FROM quota.adjust_quota(1, 'articles_per_month', -2, 'fuzz')$$], '22023'),
    ('documented', ARRAY[$$SELECT * FROM quota.adjust_quota(1, 'articles_per_month', 2147483648, 'fuzz')$$], '22003'),
    ('documented', ARRAY[$$SELECT * FROM quota.adjust_quota(1, 'articles_per_month', 5, '')$$], '22023'),
    ('documented', ARRAY[$$SELECT * FROM quota.adjust_quota(4, 'articles_per_month', 5, 'fuzz')$$], 'P0002'),
    ('documented', ARRAY[$$SELECT * FROM quota.refund_usage(-1)$$], 'P0002'),
    ('documented', ARRAY[$$SELECT * FROM quota.refund_usage((SELECT id FROM quota.usage_records WHERE refund_of IS NOT NULL))$$], '22023'),
    ('documented', ARRAY[$$SELECT * FROM quota.anniversary_period(now(), 'weekly', now())$$], '22023'),
    ('documented', ARRAY[$$SELECT * FROM quota.anniversary_period(now(), 'monthly', now(), 'Mars/Olympus')$$], '22023'),
    ('documented', ARRAY[$$SELECT * FROM quota.anniversary_period('infinity', 'monthly', now())$$], '22008'),
    ('documented', ARRAY[$$UPDATE quota.user_subscriptions SET custom_quotas = '{"articles_per_month": "10"}' WHERE user_id = 1$$], '22P02'),
    ('documented', ARRAY[$$UPDATE quota.plan_features SET feature_value = 8388608
                            WHERE feature_code = 'storage_space' AND feature_unit = 'TB'$$,
                         $$SELECT quota.get_user_storage_quota(2)$$], '22003');

-- =============================================================================================
-- Run every case
-- =============================================================================================
-- Every row of every quota table, as one digest.
CREATE FUNCTION pg_temp.quota_state() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    t name;
    digest text := '';
    part text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c
              WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind IN ('r', 'p')
              ORDER BY c.relname LOOP
        EXECUTE format('SELECT count(*) || md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) FROM quota.%I t',
                       ',', '', t) INTO part;
        digest := digest || t || ':' || part || ' ';
    END LOOP;
    RETURN digest;
END
$$;

CREATE TEMP TABLE results (
    n int, family text, call text, sqlstate text, message text, expect text,
    ledger_rows bigint, state_changed boolean
);

SELECT count(*) AS cases FROM cases \gset
\echo 'running' :cases 'cases'
SET client_min_messages = notice;

DO $$
DECLARE
    c record;
    stmt text;
    code text;
    msg text;
    ledger bigint;
    initial text := pg_temp.quota_state();
BEGIN
    FOR c IN SELECT * FROM cases ORDER BY n LOOP
        -- Sent at once: when a case kills the backend, the last notice names it.
        RAISE NOTICE 'case %', c.n;
        ledger := NULL;
        BEGIN
            FOREACH stmt IN ARRAY c.calls LOOP
                EXECUTE stmt;
            END LOOP;
            IF c.check_ledger THEN
                SELECT count(*) INTO ledger FROM quota.verify_ledger();
            END IF;
            -- Roll the case back: every case starts from the fixtures.
            RAISE EXCEPTION USING ERRCODE = 'OPSOK', MESSAGE = coalesce(ledger, 0)::text;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        END;
        IF code = 'OPSOK' THEN
            ledger := msg::bigint;
            code := 'ok';
            msg := NULL;
        END IF;
        INSERT INTO results
        VALUES (c.n, c.family, left(array_to_string(c.calls, '; '), 600), code, left(msg, 300),
                c.expect, ledger, pg_temp.quota_state() IS DISTINCT FROM initial);
    END LOOP;
END
$$;
SET client_min_messages = warning;

\echo '== outcomes by family and SQLSTATE'
\pset footer off
SELECT family, sqlstate, count(*) AS cases FROM results GROUP BY 1, 2 ORDER BY 1, 2;

CREATE TEMP VIEW failures AS
SELECT n, family, 'internal error (XX000)' AS failure, sqlstate, call, message
  FROM results WHERE sqlstate = 'XX000'
UNION ALL
SELECT n, family, 'expected ' || expect, sqlstate, call, message
  FROM results WHERE expect IS NOT NULL AND sqlstate IS DISTINCT FROM expect
UNION ALL
SELECT n, family, 'verify_ledger returned ' || ledger_rows || ' rows', sqlstate, call, message
  FROM results WHERE ledger_rows > 0
UNION ALL
SELECT n, family, 'the quota tables changed after the rollback', sqlstate, call, message
  FROM results WHERE state_changed;

\echo '== failures'
SELECT * FROM failures ORDER BY n;

SET client_min_messages = notice;
DO $$
DECLARE
    total bigint := (SELECT count(*) FROM results);
    bad bigint := (SELECT count(*) FROM failures);
BEGIN
    IF total <> (SELECT count(*) FROM cases) THEN
        RAISE EXCEPTION 'only % of % cases ran', total, (SELECT count(*) FROM cases);
    END IF;
    IF bad > 0 THEN
        RAISE EXCEPTION '% of % hostile-input cases failed (listed above)', bad, total;
    END IF;
    RAISE NOTICE 'all % hostile-input cases passed', total;
END
$$;
