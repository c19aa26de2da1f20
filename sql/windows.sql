-- Limit windows: besides the billing cycle, usage may reset every calendar hour, day, ISO week
-- (from Monday), month or year, in local time of quota.settings.time_zone
-- (entitlements_core::period::calendar_window), per feature (features.reset_rule) or per plan
-- feature (plan_features.reset_rule, which wins when set).
ALTER TABLE quota.plan_features
    ADD COLUMN reset_rule text CHECK (reset_rule IN ('billing_cycle', 'hour', 'day', 'week', 'month', 'year', 'subscription', 'never'));

-- Several limits on one feature (entitlements_core::windows): besides its limit per period, a
-- metered feature may be limited over other windows at once, {"day": 100} beside 1000 per
-- billing month. The plan's window_limits when set, else the catalog's; custom_quotas
-- overrides the main limit only. quota.valid_window_limits() refuses a malformed document at
-- write time with the reason.
ALTER TABLE quota.features
    ADD COLUMN window_limits jsonb CHECK (quota.valid_window_limits(window_limits));
ALTER TABLE quota.plan_features
    ADD COLUMN window_limits jsonb CHECK (quota.valid_window_limits(window_limits));

-- What each further window of a feature counted: one row per user, feature, window and
-- window start, moved under its row lock by the uses (after the period's counter, the order
-- every writer locks them in) and by the refunds of uses made in the window. Only the
-- windows' rows of the current instant decide anything; older rows are history.
CREATE TABLE quota.window_usage (
    user_id bigint NOT NULL,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    window_name text NOT NULL CHECK (window_name IN ('hour', 'day', 'week', 'month', 'year', 'billing_cycle')),
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    usage_count bigint NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, feature_code, window_name, window_start)
);

SELECT pg_catalog.pg_extension_config_dump('quota.window_usage', '');
