-- Rollover: what a period's allowance left unused becomes a grant of the next period (source
-- 'rollover'), per catalog feature (features.rollover_max) or per plan feature
-- (plan_features.rollover_max, which wins when set). rollover_max: NULL or 0 none (the
-- default), N at most N units, -1 all of it; rollover_periods: how many periods the grant lasts
-- (1: until the end of the period it starts). The grant is created once per user, feature and
-- period, by the first write that touches the new period (grants.rollover_from names the period
-- it came from, unique); until then every read counts it as created (entitlements_core::rollover).
ALTER TABLE quota.features
    ADD COLUMN rollover_max integer CHECK (rollover_max >= -1),
    ADD COLUMN rollover_periods integer NOT NULL DEFAULT 1 CHECK (rollover_periods >= 1);
ALTER TABLE quota.plan_features
    ADD COLUMN rollover_max integer CHECK (rollover_max >= -1),
    ADD COLUMN rollover_periods integer CHECK (rollover_periods >= 1);

ALTER TABLE quota.grants
    ADD COLUMN rollover_from timestamptz CHECK (rollover_from IS NULL OR source = 'rollover');
CREATE UNIQUE INDEX grants_rollover_idx ON quota.grants (user_id, feature_code, rollover_from)
    WHERE rollover_from IS NOT NULL;

-- A restored dump's edits of a built-in feature keep its soft limit and rollover too.
CREATE OR REPLACE FUNCTION quota.features_restore_builtin() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE quota.features f
       SET name = NEW.name, unit = NEW.unit, reset_rule = NEW.reset_rule,
           default_limit = NEW.default_limit, alert_thresholds = NEW.alert_thresholds,
           overage_limit = NEW.overage_limit, rollover_max = NEW.rollover_max,
           rollover_periods = NEW.rollover_periods, granted = f.granted OR NEW.granted,
           kind = NEW.kind, default_value = NEW.default_value
     WHERE f.code = NEW.code AND f.builtin;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
