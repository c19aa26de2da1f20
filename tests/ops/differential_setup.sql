-- The machinery of scripts/ops/differential.sh, loaded into each of its databases after
-- CREATE EXTENSION: three more features, the functions that call a reading function with
-- pg_entitlements.direct_reads on and off within one statement snapshot and compare, and the
-- procedure a second session runs to change the catalog while they do.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

-- Beside the five built-in features: a count without any default (limited a day too, where
-- the plan says nothing else), one that never resets and is unlimited by default, one counted
-- once per subscription, a switch (off by default) and a configuration value.
INSERT INTO quota.features (code, name, unit, reset_rule, default_limit, window_limits) VALUES
    ('image_generation', 'Image generation', 'images', 'billing_cycle', NULL, '{"day": 40}'),
    ('video_minutes', 'Video minutes', 'minutes', 'never', -1, NULL),
    ('api_calls', 'API calls', 'calls', 'subscription', 5000, NULL);
INSERT INTO quota.features (code, name, kind, default_limit, default_value) VALUES
    ('sso', 'Single sign-on', 'boolean', 0, NULL),
    ('ai_model', 'AI model', 'config', NULL, '"small"');

CREATE SCHEMA diff;

-- One call of a reading function with direct reads on or off: the rows it returned as text, or
-- 'ERROR ' and its SQLSTATE (message and detail apart, for the report), and how
-- quota.read_paths() said user_subscriptions is read right before the call ('index' when
-- direct; with direct reads on, anything else followed by its reason). STABLE, so that it runs in the snapshot of the statement that calls it: every call
-- of one statement, on either path, must see the same rows. The GUC is set for the rest of
-- the transaction (set_config(..., true)), before the block: its subtransaction would undo it.
-- A subtransaction takes no transaction id unless something writes, so the direct path stays
-- open (the caller checks read_by).
CREATE FUNCTION diff.answer(call text, direct boolean,
                            OUT answer text, OUT message text, OUT read_by text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    state text;
    detail text;
BEGIN
    PERFORM pg_catalog.set_config('pg_entitlements.direct_reads',
                                  CASE WHEN direct THEN 'on' ELSE 'off' END, true);
    BEGIN
        SELECT p.read_by || CASE WHEN direct AND p.read_by <> 'index' THEN ': ' || p.detail ELSE '' END
          INTO read_by FROM quota.read_paths() p
         WHERE p.table_name = 'user_subscriptions';
    EXCEPTION WHEN OTHERS THEN
        read_by := 'ERROR ' || SQLSTATE;
    END;
    BEGIN
        EXECUTE call INTO answer;
        answer := coalesce(answer, '(no row)');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                                detail = PG_EXCEPTION_DETAIL;
        answer := 'ERROR ' || state;
        message := message || coalesce(' DETAIL: ' || nullif(detail, ''), '');
    END;
END
$$;

-- Every reading function for users first_user..last_user, each on both paths: per user
-- get_user_storage_quota, get_quota_period without a feature and usage_overview, and per
-- feature (every catalog feature and one unknown code) check_user_quota and get_quota_period.
-- One row per call with both answers; the whole range runs in the snapshot of the calling
-- statement, while another session may commit catalog changes.
CREATE FUNCTION diff.compare(first_user bigint, last_user bigint)
RETURNS TABLE (call text, direct_answer text, sql_answer text, direct_read_by text,
               sql_read_by text, direct_message text, sql_message text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u bigint;
    f text;
    calls text[];
    d record;
    s record;
BEGIN
    FOR u IN SELECT generate_series(first_user, last_user) LOOP
        calls := ARRAY[
            format('SELECT quota.get_user_storage_quota(%s)::text', u),
            format('SELECT string_agg(p::text, '' '') FROM quota.get_quota_period(%s) p', u),
            format('SELECT string_agg(o::text, '' '' ORDER BY o.feature_code) FROM quota.usage_overview(%s) o', u)];
        FOR f IN SELECT code FROM quota.features UNION ALL VALUES ('no_such_feature') ORDER BY 1 LOOP
            calls := calls
                || format('SELECT q::text FROM quota.check_user_quota(%s, %L) q', u, f)
                || format('SELECT string_agg(p::text, '' '') FROM quota.get_quota_period(%s, %L) p', u, f)
                || format('SELECT quota.has_feature(%s, %L)::text || '' '' || coalesce(quota.feature_value(%s, %L)::text, ''NULL'')', u, f, u, f);
        END LOOP;
        FOREACH call IN ARRAY calls LOOP
            SELECT * INTO d FROM diff.answer(call, true);
            SELECT * INTO s FROM diff.answer(call, false);
            direct_answer := d.answer;
            sql_answer := s.answer;
            direct_read_by := d.read_by;
            sql_read_by := s.read_by;
            direct_message := d.message;
            sql_message := s.message;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

-- Whether an error's message or detail holds a Rust backtrace (frames "  12: path::fn").
CREATE FUNCTION diff.backtrace(message text) RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN message ~ '(stack backtrace|rust_begin_unwind|panicked at|\n +[0-9]+: )';

-- An error for a report: its message and the first line of its detail, a backtrace named but
-- not shown.
CREATE FUNCTION diff.shown(message text) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN left(regexp_replace(split_part(message, E'\n', 1), ' DETAIL: $', ''), 300)
       || CASE WHEN diff.backtrace(message) THEN ' [and a Rust backtrace]' ELSE '' END;

-- What a named case reports, from the answers of both paths: 'ok: ...' or 'FAIL: ...'.
CREATE FUNCTION diff.verdict(call text, expected text, d record, s record) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF d.read_by IS DISTINCT FROM 'index' THEN
        RETURN format('FAIL: %s: the direct call did not read user_subscriptions through an index (read_paths: %s)',
                      call, d.read_by);
    END IF;
    IF s.read_by IS DISTINCT FROM 'sql' THEN
        RETURN format('FAIL: %s: with direct_reads off, read_paths says %s, not sql', call, s.read_by);
    END IF;
    IF d.answer = expected AND s.answer = expected AND NOT diff.backtrace(concat(d.message, s.message)) THEN
        RETURN format('ok: %s -> %s on both paths', call, expected);
    END IF;
    RETURN format('FAIL: %s: expected %s on both paths, without a Rust backtrace; direct reads: %s%s; statements: %s%s',
                  call, expected, d.answer, coalesce(' (' || diff.shown(d.message) || ')', ''),
                  s.answer, coalesce(' (' || diff.shown(s.message) || ')', ''));
END
$$;

-- A named case: call must answer expected on both paths.
CREATE FUNCTION diff.expect(call text, expected text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    d record;
    s record;
BEGIN
    SELECT * INTO d FROM diff.answer(call, true);
    SELECT * INTO s FROM diff.answer(call, false);
    RETURN diff.verdict(call, expected, d, s);
END
$$;

-- A named case for a change committed by another session while one statement runs: call is
-- answered on both paths, then this statement waits for advisory lock lock_key, which the
-- other session holds until its change has committed, and call is answered on both paths
-- again. A STABLE function never changes its answer within one statement: all four answers
-- must be the first one, expected (the rows as the statement's snapshot has them).
CREATE FUNCTION diff.around_a_change(call text, expected text, lock_key bigint) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    d record;
    s record;
    before text;
BEGIN
    SELECT * INTO d FROM diff.answer(call, true);
    SELECT * INTO s FROM diff.answer(call, false);
    before := diff.verdict(call, expected, d, s);
    PERFORM pg_catalog.pg_advisory_lock(lock_key);
    PERFORM pg_catalog.pg_advisory_unlock(lock_key);
    SELECT * INTO d FROM diff.answer(call, true);
    SELECT * INTO s FROM diff.answer(call, false);
    RETURN 'before the change: ' || before || E'\n'
        || 'after the change, same statement: ' || diff.verdict(call, expected, d, s);
END
$$;

-- The stop signal for diff.churn.
CREATE TABLE diff.control (stop boolean NOT NULL);
INSERT INTO diff.control VALUES (false);

-- A second session's stream of catalog changes, each committed on its own, about every ten
-- milliseconds, until diff.control.stop (or ten minutes): plan feature values, plan features
-- and plans added and removed, subscriptions moved to other plans, plans moved to another id,
-- billing cycles, catalog defaults and the settings' time zone. It works on the tables the
-- functions read (quota's own, or the attached schema's). A change that the tables refuse
-- (a foreign key, a NOT NULL, a trigger computing a storage quota from a bad row) is rolled
-- back and counted; the notice at the end gives the counts, and the first five refusals with
-- SQLSTATE XX000 (an internal error, never a refusal of the tables).
CREATE PROCEDURE diff.churn(seed float8)
LANGUAGE plpgsql AS $$
DECLARE
    s name := coalesce((SELECT st.attached_schema FROM quota.settings st), 'quota');
    deadline timestamptz := clock_timestamp() + interval '10 minutes';
    action int;
    plan bigint;
    other bigint;
    next_plan bigint := 1000000;
    committed int := 0;
    refused int := 0;
    internal int := 0;
    internal_shown text := '';
BEGIN
    PERFORM setseed(seed);
    WHILE NOT (SELECT c.stop FROM diff.control c) AND clock_timestamp() < deadline LOOP
        action := floor(random() * 10)::int;
        next_plan := next_plan + 1;
        EXECUTE format('SELECT id FROM %I.subscription_plans ORDER BY random() LIMIT 1', s) INTO plan;
        EXECUTE format('SELECT id FROM %I.subscription_plans ORDER BY random() LIMIT 1', s) INTO other;
        BEGIN
            CASE action
            WHEN 0 THEN
                EXECUTE format('UPDATE %I.plan_features SET feature_value = $1
                                 WHERE id = (SELECT id FROM %I.plan_features ORDER BY random() LIMIT 1)', s, s)
                  USING floor(random() * 1002)::int - 1;
            WHEN 1 THEN
                EXECUTE format('INSERT INTO %I.plan_features (plan_id, feature_code, feature_value)
                                SELECT $1, code, $2 FROM quota.features ORDER BY random() LIMIT 1
                                ON CONFLICT DO NOTHING', s)
                  USING plan, floor(random() * 1002)::int - 1;
            WHEN 2 THEN
                EXECUTE format('DELETE FROM %I.plan_features
                                 WHERE id = (SELECT id FROM %I.plan_features ORDER BY random() LIMIT 1)', s, s);
            WHEN 3 THEN
                EXECUTE format('INSERT INTO %I.subscription_plans (id, plan_code, plan_name, billing_cycle, quota_cycle_type)
                                VALUES ($1, $2, $2, $3, $4)', s)
                  USING next_plan, 'churn_' || next_plan,
                        (ARRAY['monthly', 'yearly', NULL])[1 + floor(random() * 3)::int],
                        (ARRAY['monthly', 'yearly', NULL, NULL])[1 + floor(random() * 4)::int];
                EXECUTE format('INSERT INTO %I.plan_features (plan_id, feature_code, feature_value, feature_unit)
                                SELECT $1, code, floor(random() * 1002)::int - 1,
                                       CASE WHEN code = ''storage_space'' AND random() < 0.5 THEN ''GB'' END
                                  FROM quota.features WHERE random() < 0.6', s)
                  USING next_plan;
            WHEN 4 THEN
                -- Its subscriptions move to another plan, then the plan goes with its features.
                EXECUTE format('UPDATE %I.user_subscriptions SET plan_id = $2 WHERE plan_id = $1', s)
                  USING plan, other;
                EXECUTE format('DELETE FROM %I.plan_features WHERE plan_id = $1', s) USING plan;
                EXECUTE format('DELETE FROM %I.subscription_plans WHERE id = $1', s) USING plan;
            WHEN 5 THEN
                -- The plan, its features and its subscriptions move to a new id, but one
                -- subscription left naming the old id where no foreign key keeps it (not in
                -- quota's own tables).
                EXECUTE format('INSERT INTO %I.subscription_plans (id, plan_code, plan_name, billing_cycle, quota_cycle_type)
                                SELECT $2, plan_code || ''_'' || $2, plan_name, billing_cycle, quota_cycle_type
                                  FROM %I.subscription_plans WHERE id = $1', s, s)
                  USING plan, next_plan;
                EXECUTE format('UPDATE %I.plan_features SET plan_id = $2 WHERE plan_id = $1', s)
                  USING plan, next_plan;
                EXECUTE format('UPDATE %I.user_subscriptions SET plan_id = $2
                                 WHERE plan_id = $1
                                   AND ($3 OR id <> (SELECT min(id) FROM %I.user_subscriptions WHERE plan_id = $1))', s, s)
                  USING plan, next_plan, s = 'quota';
                EXECUTE format('DELETE FROM %I.subscription_plans WHERE id = $1', s) USING plan;
            WHEN 6 THEN
                EXECUTE format('UPDATE %I.user_subscriptions SET plan_id = $1
                                 WHERE id = (SELECT id FROM %I.user_subscriptions ORDER BY random() LIMIT 1)', s, s)
                  USING plan;
            WHEN 7 THEN
                EXECUTE format('UPDATE %I.subscription_plans SET billing_cycle = $2 WHERE id = $1', s)
                  USING plan, (ARRAY['monthly', 'yearly', NULL])[1 + floor(random() * 3)::int];
            WHEN 8 THEN
                UPDATE quota.features
                   SET default_limit = (ARRAY[NULL, -1, 0, floor(random() * 1000)::int])[1 + floor(random() * 4)::int]
                 WHERE code = (SELECT code FROM quota.features ORDER BY random() LIMIT 1);
            ELSE
                INSERT INTO quota.settings (time_zone)
                VALUES ((ARRAY['UTC', 'Asia/Shanghai', 'America/New_York', 'Pacific/Chatham',
                               'Australia/Lord_Howe'])[1 + floor(random() * 5)::int])
                ON CONFLICT (singleton) DO UPDATE SET time_zone = EXCLUDED.time_zone;
            END CASE;
            committed := committed + 1;
        EXCEPTION WHEN OTHERS THEN
            refused := refused + 1;
            IF SQLSTATE = 'XX000' THEN
                internal := internal + 1;
                IF internal <= 5 THEN
                    internal_shown := internal_shown || format(E'\n  XX000 in change %s: %s', action, SQLERRM);
                END IF;
            END IF;
        END;
        COMMIT;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RAISE NOTICE 'churn: % changes committed, % refused by the tables, % of them with XX000%',
        committed, refused, internal, internal_shown;
END
$$;
