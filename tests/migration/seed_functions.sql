-- The seed application's own quota functions, as it runs them on its own tables (public) with
-- local times in `timestamp without time zone` columns: the calls the migration test
-- (scripts/ops/migration.sh) keeps making while the extension takes over. Written the seed's
-- way: its signatures (INTEGER / VARCHAR), custom_quotas -> plan_features -> hard-coded
-- defaults, an anniversary period computed in local time from the subscription's start.
CREATE FUNCTION public.get_user_quota_period(p_user_id INTEGER, p_feature_code VARCHAR DEFAULT NULL)
RETURNS TABLE (period_start TIMESTAMP, period_end TIMESTAMP)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_start TIMESTAMP;
    v_end TIMESTAMP;
    v_anchor TIMESTAMP;
    v_step INTEGER;
    v_k INTEGER;
BEGIN
    SELECT us.start_date, us.end_date, COALESCE(us.quota_reset_anchor, us.start_date),
           CASE WHEN COALESCE(us.quota_cycle_type, sp.quota_cycle_type, sp.billing_cycle) = 'yearly'
                THEN 12 ELSE 1 END
      INTO v_start, v_end, v_anchor, v_step
      FROM public.user_subscriptions us
      JOIN public.subscription_plans sp ON sp.id = us.plan_id
     WHERE us.user_id = p_user_id AND us.status = 'active' AND us.end_date > LOCALTIMESTAMP
     ORDER BY us.end_date DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_feature_code IN ('storage_space', 'platform_accounts') THEN
        RETURN QUERY SELECT v_start, v_end;
        RETURN;
    END IF;
    v_k := floor(((EXTRACT(YEAR FROM LOCALTIMESTAMP) - EXTRACT(YEAR FROM v_anchor)) * 12
                  + EXTRACT(MONTH FROM LOCALTIMESTAMP) - EXTRACT(MONTH FROM v_anchor)) / v_step);
    WHILE v_anchor + make_interval(months => v_k * v_step) > LOCALTIMESTAMP LOOP
        v_k := v_k - 1;
    END LOOP;
    WHILE v_anchor + make_interval(months => (v_k + 1) * v_step) <= LOCALTIMESTAMP LOOP
        v_k := v_k + 1;
    END LOOP;
    RETURN QUERY SELECT GREATEST(v_anchor + make_interval(months => v_k * v_step), v_start),
                        LEAST(v_anchor + make_interval(months => (v_k + 1) * v_step), v_end);
END;
$$;

CREATE FUNCTION public.check_user_quota(p_user_id INTEGER, p_feature_code VARCHAR)
RETURNS TABLE (has_quota BOOLEAN, current_usage INTEGER, quota_limit INTEGER,
               remaining INTEGER, percentage NUMERIC)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_plan_id INTEGER;
    v_custom_quotas JSONB;
    v_value INTEGER;
    v_usage INTEGER;
BEGIN
    SELECT us.plan_id, us.custom_quotas INTO v_plan_id, v_custom_quotas
      FROM public.user_subscriptions us
     WHERE us.user_id = p_user_id AND us.status = 'active' AND us.end_date > LOCALTIMESTAMP
     ORDER BY us.end_date DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN QUERY SELECT FALSE, 0, 0, 0, 0::NUMERIC;
        RETURN;
    END IF;
    IF v_custom_quotas IS NOT NULL AND v_custom_quotas ? p_feature_code THEN
        v_value := (v_custom_quotas ->> p_feature_code)::INTEGER;
    ELSE
        SELECT pf.feature_value INTO v_value FROM public.plan_features pf
         WHERE pf.plan_id = v_plan_id AND pf.feature_code = p_feature_code;
    END IF;
    v_value := COALESCE(v_value, CASE p_feature_code WHEN 'articles_per_month' THEN 100
                                                     WHEN 'publish_per_month' THEN 200 ELSE 0 END);
    SELECT uu.usage_count INTO v_usage FROM public.user_usage uu
     WHERE uu.user_id = p_user_id AND uu.feature_code = p_feature_code
       AND uu.period_start = (SELECT p.period_start
                                FROM public.get_user_quota_period(p_user_id, p_feature_code) p);
    v_usage := COALESCE(v_usage, 0);
    IF v_value = -1 THEN
        RETURN QUERY SELECT TRUE, v_usage, -1, -1, 0::NUMERIC;
        RETURN;
    END IF;
    RETURN QUERY SELECT v_usage < v_value, v_usage, v_value, GREATEST(v_value - v_usage, 0),
                        CASE WHEN v_value > 0 THEN ROUND(v_usage::NUMERIC * 100 / v_value, 2)
                             ELSE 0::NUMERIC END;
END;
$$;

CREATE FUNCTION public.record_feature_usage(
    p_user_id INTEGER, p_feature_code VARCHAR, p_resource_type VARCHAR, p_resource_id INTEGER,
    p_amount INTEGER, p_metadata JSONB)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    v_start TIMESTAMP;
    v_end TIMESTAMP;
BEGIN
    SELECT p.period_start, p.period_end INTO v_start, v_end
      FROM public.get_user_quota_period(p_user_id, p_feature_code) p;
    IF v_start IS NULL THEN
        RAISE EXCEPTION 'user % has no active subscription', p_user_id;
    END IF;
    INSERT INTO public.usage_records (user_id, feature_code, resource_type, resource_id, amount,
                                      metadata)
    VALUES (p_user_id, p_feature_code, p_resource_type, p_resource_id, p_amount, p_metadata);
    INSERT INTO public.user_usage AS uu (user_id, feature_code, usage_count, period_start,
                                         period_end)
    VALUES (p_user_id, p_feature_code, p_amount, v_start, v_end)
    ON CONFLICT (user_id, feature_code, period_start)
    DO UPDATE SET usage_count = uu.usage_count + EXCLUDED.usage_count;
    RETURN TRUE;
END;
$$;

-- What the clients sent, written in the same transaction as each use.
CREATE TABLE public.migration_sent (user_id integer NOT NULL, at timestamp NOT NULL DEFAULT LOCALTIMESTAMP);
