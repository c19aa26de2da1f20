-- Feature kinds (quota.features.kind): 'metered' (the default) counts uses per period;
-- 'gauge' is a running count (seats, connected accounts) that goes up with the uses and down
-- with release_usage, never resets (one counter for good, whatever reset_rule says) and is
-- checked on the way up only; 'boolean' is on or off (has_feature), 'config' a JSON value
-- (feature_value). Each kind has the same precedence, custom_quotas, then the plan, then the
-- catalog (entitlements_core::kind); neither boolean nor config features are used up.
ALTER TABLE quota.features
    ADD COLUMN kind text NOT NULL DEFAULT 'metered'
        CHECK (kind IN ('metered', 'gauge', 'boolean', 'config')),
    -- The value of a feature of kind config for subscriptions whose plan sets none (NULL: none).
    ADD COLUMN default_value jsonb;
-- The value a plan gives a feature of kind config (NULL: the catalog's default_value).
ALTER TABLE quota.plan_features ADD COLUMN config_value jsonb;

-- What release_usage took off a running count: a row of its own, as in the ledger a negative
-- amount is a refund and only that. For every counter, usage_count equals its usage records,
-- less what they drew from grants, less its releases (quota.verify_ledger()). Here also when
-- an application's tables are attached.
CREATE TABLE quota.releases (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    -- The period of the counter it counted down (-infinity for a running count).
    period_start timestamptz NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    idempotency_key quota.idempotency_key,
    resource_type text,
    resource_id bigint,
    metadata jsonb,
    -- The login role of the session that released.
    actor text NOT NULL DEFAULT session_user,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id)
);
CREATE INDEX releases_counter_idx ON quota.releases (user_id, feature_code, period_start);
CREATE UNIQUE INDEX releases_idempotency_key_idx
    ON quota.releases (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('quota.releases', '');
SELECT pg_catalog.pg_extension_config_dump('quota.releases_id_seq', '');
