-- Soft limits: an allowed overage beyond the limit, per catalog feature (features.overage_limit)
-- or per plan feature (plan_features.overage_limit, which wins when set). NULL or 0: none (the
-- default), N: N units a period, -1: unlimited. A use beyond the limit and the grants but
-- within the overage is allowed and counted on the period's counter beyond the limit; what of
-- each usage record was overage is in quota.overage_uses, so billing can charge it
-- (entitlements_core::overage).
ALTER TABLE quota.features
    ADD COLUMN overage_limit integer CHECK (overage_limit >= -1);
ALTER TABLE quota.plan_features
    ADD COLUMN overage_limit integer CHECK (overage_limit >= -1);

-- What each usage record took beyond the limit as overage (amount > 0), and what its refund
-- gave back of it (< 0). record_id is the id of the usage record in the usage_records table the
-- functions use (the extension's own, or an attached application's), so it has no foreign key.
CREATE TABLE quota.overage_uses (
    user_id bigint NOT NULL,
    record_id bigint NOT NULL,
    feature_code text NOT NULL,
    -- The period of the counter the units counted on.
    period_start timestamptz NOT NULL,
    amount bigint NOT NULL CHECK (amount <> 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, record_id)
);
-- What a user's feature took as overage in a period: usage_overview and billing sum it.
CREATE INDEX overage_uses_period_idx ON quota.overage_uses (user_id, feature_code, period_start);

SELECT pg_catalog.pg_extension_config_dump('quota.overage_uses', '');
