-- Baseline (a) of the benchmarks: the seed application's quota functions as it runs them today
-- (shared/seed/quota-sync-fix-report.zh.md, migration 032 "fix check_user_quota to use
-- custom_quotas"), in PL/pgSQL, in a schema of their own (`seed`), operating on the same
-- quota.* tables as the extension so that both read and write the very same rows.
--
-- Written the way the seed writes them: the seed's signatures (INTEGER / VARCHAR), one query
-- per step, custom_quotas -> plan_features -> hard-coded defaults (100/200/1/50/100), a separate
-- anniversary period function that looks the subscription up again, a usage lookup, an upsert
-- for recording, and an AFTER UPDATE trigger that copies the storage quota into
-- user_storage_usage. Adapted only where the extension's tables differ: usage_records needs a
-- period_start, and user_usage has updated_at/last_reset_at NOT NULL.
--
-- On the benchmark's data (every user has one active subscription that has started, valid
-- custom_quotas, time zone UTC) it returns exactly what quota.check_user_quota returns;
-- scripts/bench.sh checks that for all 100,000 users before measuring.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS seed CASCADE;
CREATE SCHEMA seed;

-- The anniversary period the user's usage of a feature counts toward now: the anchor
-- (quota_reset_anchor, else start_date) plus whole cycles, counted from the anchor so that
-- month ends clamp without drift; clamped to the subscription. Features that never reset
-- within a subscription count over the whole subscription.
CREATE FUNCTION seed.get_user_quota_period(p_user_id INTEGER, p_feature_code VARCHAR DEFAULT NULL)
RETURNS TABLE (period_start TIMESTAMPTZ, period_end TIMESTAMPTZ)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_start_date TIMESTAMPTZ;
    v_end_date TIMESTAMPTZ;
    v_anchor TIMESTAMP;
    v_now TIMESTAMP;
    v_cycle VARCHAR(20);
    v_step INTEGER;
    v_k INTEGER;
    v_from TIMESTAMPTZ;
    v_to TIMESTAMPTZ;
BEGIN
    SELECT us.start_date, us.end_date,
           COALESCE(us.quota_reset_anchor, us.start_date) AT TIME ZONE 'UTC',
           COALESCE(us.quota_cycle_type, sp.quota_cycle_type, sp.billing_cycle, 'monthly')
      INTO v_start_date, v_end_date, v_anchor, v_cycle
      FROM quota.user_subscriptions us
      JOIN quota.subscription_plans sp ON sp.id = us.plan_id
     WHERE us.user_id = p_user_id
       AND us.status = 'active'
       AND us.end_date > CURRENT_TIMESTAMP
     ORDER BY us.end_date DESC
     LIMIT 1;

    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF p_feature_code IN ('storage_space', 'platform_accounts') THEN
        RETURN QUERY SELECT v_start_date, v_end_date;
        RETURN;
    END IF;

    v_step := CASE WHEN v_cycle = 'yearly' THEN 12 ELSE 1 END;
    v_now := CURRENT_TIMESTAMP AT TIME ZONE 'UTC';
    v_k := floor(((EXTRACT(YEAR FROM v_now) - EXTRACT(YEAR FROM v_anchor)) * 12
                  + EXTRACT(MONTH FROM v_now) - EXTRACT(MONTH FROM v_anchor)) / v_step);
    WHILE v_anchor + make_interval(months => v_k * v_step) > v_now LOOP
        v_k := v_k - 1;
    END LOOP;
    WHILE v_anchor + make_interval(months => (v_k + 1) * v_step) <= v_now LOOP
        v_k := v_k + 1;
    END LOOP;

    v_from := (v_anchor + make_interval(months => v_k * v_step)) AT TIME ZONE 'UTC';
    v_to := (v_anchor + make_interval(months => (v_k + 1) * v_step)) AT TIME ZONE 'UTC';
    RETURN QUERY SELECT GREATEST(v_from, v_start_date), LEAST(v_to, v_end_date);
END;
$$;

-- The fixed check_user_quota (migration 032): custom_quotas first, then plan_features, then
-- the hard-coded defaults; usage of the current anniversary period.
CREATE FUNCTION seed.check_user_quota(p_user_id INTEGER, p_feature_code VARCHAR)
RETURNS TABLE (has_quota BOOLEAN, current_usage INTEGER, quota_limit INTEGER,
               remaining INTEGER, percentage NUMERIC)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_subscription_id BIGINT;
    v_plan_id BIGINT;
    v_custom_quotas JSONB;
    v_feature_value INTEGER;
    v_usage INTEGER;
    v_period_start TIMESTAMPTZ;
BEGIN
    -- 获取用户当前订阅和自定义配额
    SELECT us.id, us.plan_id, us.custom_quotas
      INTO v_subscription_id, v_plan_id, v_custom_quotas
      FROM quota.user_subscriptions us
     WHERE us.user_id = p_user_id
       AND us.status = 'active'
       AND us.end_date > CURRENT_TIMESTAMP
     ORDER BY us.end_date DESC
     LIMIT 1;

    IF v_subscription_id IS NULL THEN
        RETURN QUERY SELECT FALSE, 0, 0, 0, 0::NUMERIC;
        RETURN;
    END IF;

    -- 优先使用 custom_quotas（如果存在）
    IF v_custom_quotas IS NOT NULL AND v_custom_quotas ? p_feature_code THEN
        v_feature_value := (v_custom_quotas ->> p_feature_code)::INTEGER;
    ELSE
        -- 如果没有自定义配额，从 plan_features 获取
        SELECT pf.feature_value INTO v_feature_value
          FROM quota.plan_features pf
         WHERE pf.plan_id = v_plan_id AND pf.feature_code = p_feature_code;
    END IF;

    -- 硬编码默认值 (兜底)
    IF v_feature_value IS NULL THEN
        v_feature_value := CASE p_feature_code
            WHEN 'articles_per_month' THEN 100
            WHEN 'publish_per_month' THEN 200
            WHEN 'keyword_distillation' THEN 1
            WHEN 'platform_accounts' THEN 50
            WHEN 'storage_space' THEN 100
            ELSE 0 END;
    END IF;

    SELECT p.period_start INTO v_period_start
      FROM seed.get_user_quota_period(p_user_id, p_feature_code) p;

    SELECT uu.usage_count INTO v_usage
      FROM quota.user_usage uu
     WHERE uu.user_id = p_user_id
       AND uu.feature_code = p_feature_code
       AND uu.period_start = v_period_start;
    v_usage := COALESCE(v_usage, 0);

    IF v_feature_value = -1 THEN
        RETURN QUERY SELECT TRUE, v_usage, -1, -1, 0::NUMERIC;
        RETURN;
    END IF;

    RETURN QUERY SELECT
        v_usage < v_feature_value,
        v_usage,
        v_feature_value,
        GREATEST(v_feature_value - v_usage, 0),
        CASE WHEN v_feature_value > 0
             THEN ROUND(v_usage::NUMERIC * 100 / v_feature_value, 2)
             ELSE 0::NUMERIC END;
END;
$$;

-- Records a use after the fact: the ledger row and the period's counter (upsert).
CREATE FUNCTION seed.record_feature_usage(
    p_user_id INTEGER, p_feature_code VARCHAR, p_resource_type VARCHAR,
    p_resource_id INTEGER, p_amount INTEGER, p_metadata JSONB)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    v_period_start TIMESTAMPTZ;
    v_period_end TIMESTAMPTZ;
BEGIN
    SELECT p.period_start, p.period_end INTO v_period_start, v_period_end
      FROM seed.get_user_quota_period(p_user_id, p_feature_code) p;

    IF v_period_start IS NULL THEN
        RAISE EXCEPTION 'user % has no active subscription', p_user_id;
    END IF;

    INSERT INTO quota.usage_records
           (user_id, feature_code, period_start, resource_type, resource_id, amount, metadata,
            created_at)
    VALUES (p_user_id, p_feature_code, v_period_start, p_resource_type, p_resource_id,
            p_amount, p_metadata, CURRENT_TIMESTAMP);

    INSERT INTO quota.user_usage AS uu
           (user_id, feature_code, period_start, period_end, usage_count, last_reset_at,
            updated_at)
    VALUES (p_user_id, p_feature_code, v_period_start, v_period_end, p_amount,
            CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)
    ON CONFLICT (user_id, feature_code, period_start) DO UPDATE
       SET usage_count = uu.usage_count + EXCLUDED.usage_count,
           updated_at = CURRENT_TIMESTAMP;

    RETURN TRUE;
END;
$$;

-- The storage quota in bytes: custom_quotas.storage_space, else the plan's (MB), else 100 MB.
CREATE FUNCTION seed.get_user_storage_quota(p_user_id INTEGER)
RETURNS BIGINT
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_plan_id BIGINT;
    v_custom_quotas JSONB;
    v_mb INTEGER;
BEGIN
    SELECT us.plan_id, us.custom_quotas INTO v_plan_id, v_custom_quotas
      FROM quota.user_subscriptions us
     WHERE us.user_id = p_user_id
       AND us.status = 'active'
       AND us.end_date > CURRENT_TIMESTAMP
     ORDER BY us.end_date DESC
     LIMIT 1;

    IF NOT FOUND THEN
        RETURN 0;
    END IF;

    IF v_custom_quotas IS NOT NULL AND v_custom_quotas ? 'storage_space' THEN
        v_mb := (v_custom_quotas ->> 'storage_space')::INTEGER;
    ELSE
        SELECT pf.feature_value INTO v_mb
          FROM quota.plan_features pf
         WHERE pf.plan_id = v_plan_id AND pf.feature_code = 'storage_space';
    END IF;

    v_mb := COALESCE(v_mb, 100);
    IF v_mb = -1 THEN
        RETURN -1;
    END IF;
    RETURN v_mb::BIGINT * 1024 * 1024;
END;
$$;

-- trigger_sync_storage_quota: copies the storage quota into user_storage_usage.
CREATE FUNCTION seed.sync_storage_quota()
RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO quota.user_storage_usage (user_id, storage_quota_bytes, updated_at)
    VALUES (NEW.user_id, seed.get_user_storage_quota(NEW.user_id::INTEGER), CURRENT_TIMESTAMP)
    ON CONFLICT (user_id) DO UPDATE
       SET storage_quota_bytes = EXCLUDED.storage_quota_bytes,
           updated_at = CURRENT_TIMESTAMP;
    RETURN NEW;
END;
$$;

-- Created disabled: scripts/bench.sh enables it only for the trigger case, with the
-- extension's own triggers disabled.
CREATE TRIGGER trigger_sync_storage_quota
    AFTER UPDATE OF custom_quotas ON quota.user_subscriptions
    FOR EACH ROW EXECUTE FUNCTION seed.sync_storage_quota();
ALTER TABLE quota.user_subscriptions DISABLE TRIGGER trigger_sync_storage_quota;
