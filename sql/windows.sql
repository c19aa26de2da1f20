-- Limit windows: besides the billing cycle, usage may reset every calendar hour, day, ISO week
-- (from Monday), month or year, in local time of quota.settings.time_zone
-- (entitlements_core::period::calendar_window), per feature (features.reset_rule) or per plan
-- feature (plan_features.reset_rule, which wins when set).
ALTER TABLE quota.plan_features
    ADD COLUMN reset_rule text CHECK (reset_rule IN ('billing_cycle', 'hour', 'day', 'week', 'month', 'year', 'subscription', 'never'));
