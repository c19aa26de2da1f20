-- pg_entitlements schema: the quota catalog, plans, subscriptions and counters.
--
-- Every per-user table keys on user_id (a plain bigint, no foreign key to any application
-- table) and every primary key or unique constraint of a per-user table includes user_id, so
-- the tables can be distributed by user_id (quota.distribute(), docs/scaling.md). Row ids are
-- bigint identity columns, never serial; on Citus each node gives ids from a range of its own.

-- One row at most; no row means the defaults. Kept without a default row so that pg_dump can
-- dump the whole table and a restore does not collide with rows CREATE EXTENSION inserted.
CREATE TABLE quota.settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Periods are computed in this zone, never in the session's TimeZone.
    -- The AT TIME ZONE check rejects names PostgreSQL does not know, at write time.
    time_zone text NOT NULL DEFAULT 'UTC'
        CHECK ((timestamptz '2000-01-01 00:00+00' AT TIME ZONE time_zone) IS NOT NULL),
    -- Set by quota.attach(schema): the functions use that schema's application tables.
    -- Written by attach() and detach() only: quota_admin may write time_zone alone.
    attached_schema name,
    -- The owner of the attached tables, as whom the writers run, and the privileges attach()
    -- granted it in schema quota, which detach() revokes (what it held before stays).
    attached_owner regrole,
    attached_grants text[],
    -- The zone before the last change of time_zone, and when that change was made (set by the
    -- trigger pg_entitlements_remember_zone): the period a change falls in keeps the bounds it
    -- had, and the new zone applies from its end. previous_time_zone = time_zone: no change
    -- in force (time_zone_changed_at is then -infinity, "always").
    previous_time_zone text NOT NULL DEFAULT 'UTC',
    time_zone_changed_at timestamptz NOT NULL DEFAULT '-infinity',
    -- Set by quota.attach(schema, local_time_zone): the zone of the local times the attached
    -- tables hold in their timestamp (without time zone) columns; NULL when they hold none.
    -- Written by attach() and detach() only, as the binding it belongs to.
    attached_time_zone text,
    -- Set by quota.attach(schema): the optional features the attached tables lack the columns
    -- of (attach_problems().needed_for), whose calls are refused (idempotency keys, refunds
    -- booster packs and reservations) or which do not happen (alerts). Written by attach() and
    -- detach() only.
    attached_lacks text[]
        CHECK (attached_lacks <@ ARRAY['idempotency_keys', 'refunds', 'alerts', 'booster_packs',
                                      'reservations', 'soft_limits', 'rollover',
                                      'windows', 'config_values',
                                      'window_limits'])
);

CREATE TABLE quota.features (
    code text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{0,62}$'),
    name text NOT NULL,
    -- 'count' or a unit of bytes (B, KB, MB, GB, TB: binary multiples, as the seed used them).
    unit text NOT NULL DEFAULT 'count',
    -- billing_cycle: resets on each anniversary; subscription: once per subscription;
    -- never: one counter for the user's whole life.
    reset_rule text NOT NULL DEFAULT 'billing_cycle'
        CHECK (reset_rule IN ('billing_cycle', 'hour', 'day', 'week', 'month', 'year', 'subscription', 'never')),
    -- Limit for subscriptions whose plan lacks the feature; NULL = no quota; -1 = unlimited.
    default_limit integer CHECK (default_limit >= -1),
    -- Percentages of the limit whose crossing is announced on channel quota_threshold,
    -- once per period each.
    alert_thresholds integer[] NOT NULL DEFAULT '{80,95,100}'
        CHECK (1 <= ALL (alert_thresholds) AND 100 >= ALL (alert_thresholds)),
    -- Rows the extension created (see features_restore_builtin below).
    builtin boolean NOT NULL DEFAULT false
);

-- pg_dump dumps every row of quota.features, edits of the built-in ones included. On restore,
-- CREATE EXTENSION has already inserted the built-in rows, so the dump's copy of one would
-- collide with it: an INSERT of a built-in feature's code replaces that row's settings instead.
CREATE FUNCTION quota.features_restore_builtin() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE quota.features f
       SET name = NEW.name, unit = NEW.unit, reset_rule = NEW.reset_rule,
           default_limit = NEW.default_limit, alert_thresholds = NEW.alert_thresholds
     WHERE f.code = NEW.code AND f.builtin;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER restore_builtin BEFORE INSERT ON quota.features
    FOR EACH ROW EXECUTE FUNCTION quota.features_restore_builtin();

INSERT INTO quota.features (code, name, unit, reset_rule, default_limit, builtin) VALUES
    ('articles_per_month',   'Article generation',   'articles', 'billing_cycle', 100, true),
    ('publish_per_month',    'Article publishing',   'articles', 'billing_cycle', 200, true),
    ('keyword_distillation', 'Keyword distillation', 'keywords', 'billing_cycle', 1,   true),
    ('platform_accounts',    'Platform accounts',    'accounts', 'subscription',  50,  true),
    ('storage_space',        'Storage space',        'MB',       'subscription',  100, true);

CREATE TABLE quota.subscription_plans (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    plan_code text NOT NULL UNIQUE,
    plan_name text NOT NULL,
    price numeric(10, 2) NOT NULL DEFAULT 0 CHECK (price >= 0),
    duration_days integer CHECK (duration_days > 0),
    is_active boolean NOT NULL DEFAULT true,
    billing_cycle text NOT NULL DEFAULT 'monthly' CHECK (billing_cycle IN ('monthly', 'yearly')),
    -- The quota period when it differs from the billing cycle.
    quota_cycle_type text CHECK (quota_cycle_type IN ('monthly', 'yearly')),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE quota.plan_features (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    plan_id bigint NOT NULL REFERENCES quota.subscription_plans (id) ON DELETE CASCADE,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    feature_name text,
    feature_value integer NOT NULL CHECK (feature_value >= -1),
    -- Unit of feature_value when it differs from quota.features.unit.
    feature_unit text,
    UNIQUE (plan_id, feature_code)
);

CREATE TABLE quota.user_subscriptions (
    id bigint GENERATED BY DEFAULT AS IDENTITY,
    user_id bigint NOT NULL,
    plan_id bigint NOT NULL REFERENCES quota.subscription_plans (id),
    start_date timestamptz NOT NULL,
    end_date timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'paused', 'cancelled', 'expired', 'pending')),
    paused_at timestamptz,
    -- {"feature_code": limit}; validated by the trigger validate_custom_quotas.
    custom_quotas jsonb CHECK (jsonb_typeof(custom_quotas) = 'object'),
    quota_reset_anchor timestamptz,
    quota_cycle_type text CHECK (quota_cycle_type IN ('monthly', 'yearly')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id),
    CHECK (start_date < end_date)
);
-- The active-subscription lookup of every quota function.
CREATE INDEX user_subscriptions_active_idx
    ON quota.user_subscriptions (user_id, end_date DESC, id DESC) WHERE status = 'active';
CREATE INDEX user_subscriptions_plan_idx ON quota.user_subscriptions (plan_id);

-- Rules on one value of the tables every use writes (user_usage, usage_records) are domains,
-- not CHECK constraints: PostgreSQL parses and plans a table's CHECK constraints again in every
-- statement that writes the table (ExecRelCheck runs stringToNode on each one), about 12,000
-- instructions for `usage_count >= 0` alone, while a domain's constraints are parsed once per
-- backend and kept in the type cache (bench/optimisations.md).
CREATE DOMAIN quota.usage_total AS bigint
    CONSTRAINT usage_total_not_negative CHECK (VALUE >= 0);
CREATE DOMAIN quota.usage_amount AS integer
    CONSTRAINT usage_amount_not_zero CHECK (VALUE <> 0);
CREATE DOMAIN quota.idempotency_key AS text
    CONSTRAINT idempotency_key_not_empty CHECK (VALUE <> '');

-- One counter per user, feature and period; the key is the natural one, so no sequence.
CREATE TABLE quota.user_usage (
    user_id bigint NOT NULL,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    usage_count quota.usage_total NOT NULL DEFAULT 0,
    -- The highest alert threshold already announced for this period.
    alerted_percent integer NOT NULL DEFAULT 0,
    last_reset_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    -- The limit alerted_percent was judged against: a use judged against another limit
    -- announces the thresholds of that limit afresh (NULL: remembered before 0.3.0, any limit).
    -- Last, where ALTER TABLE ADD COLUMN puts it in an updated installation.
    alerted_limit bigint,
    PRIMARY KEY (user_id, feature_code, period_start)
);

-- The ledger: one row per recorded use, and one compensating row per refund. period_start ties
-- each row to the counter it moved, so for every (user, feature, period) the counter in
-- quota.user_usage equals the sum of amount here (quota.verify_ledger() checks it).
CREATE TABLE quota.usage_records (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    period_start timestamptz NOT NULL,
    resource_type text,
    resource_id bigint,
    -- Positive for a use, the negated original amount for a refund.
    amount quota.usage_amount NOT NULL,
    metadata jsonb,
    -- Names one use for good (not for a time window): a retry with the same key counts nothing.
    idempotency_key quota.idempotency_key,
    -- The record this one refunds.
    refund_of bigint,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, id),
    FOREIGN KEY (user_id, refund_of) REFERENCES quota.usage_records (user_id, id),
    -- A use counts up, its refund down (amount is never 0). The shortest form of the rule:
    -- this table CHECK is parsed again in every statement that writes a record (see above).
    CONSTRAINT usage_records_refund_sign CHECK ((refund_of IS NULL) = (amount > 0))
);
-- Unique only where set: most uses have no key and no record has a refund_of of its own, and a
-- NULL never conflicts, so full indexes would hold one useless entry per record and cost every
-- use two more index insertions.
CREATE UNIQUE INDEX usage_records_idempotency_key_idx
    ON quota.usage_records (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- At most one refund per record: never refunded twice.
CREATE UNIQUE INDEX usage_records_refund_of_idx
    ON quota.usage_records (user_id, refund_of) WHERE refund_of IS NOT NULL;
CREATE INDEX usage_records_counter_idx
    ON quota.usage_records (user_id, feature_code, period_start);
-- refund_usage(usage_record_id) finds a record by its id alone.
CREATE INDEX usage_records_id_idx ON quota.usage_records (id);

-- Audit of every change made through adjust_quota / clear_custom_quota.
CREATE TABLE quota.quota_adjustments (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    -- NULL: no custom quota (before: the plan or default applied; after: cleared).
    old_value integer,
    new_value integer,
    reason text NOT NULL CHECK (reason <> ''),
    -- Free text the caller passes (its current_user by default): who it says acted.
    actor text NOT NULL,
    created_at timestamptz NOT NULL,
    -- The login role of the session that made the change, whatever the caller passed as
    -- actor: session_user is not changed by SECURITY DEFINER functions nor by SET ROLE.
    session_role text NOT NULL DEFAULT session_user,
    PRIMARY KEY (user_id, id)
);

CREATE TABLE quota.user_storage_usage (
    user_id bigint PRIMARY KEY,
    image_storage_bytes bigint NOT NULL DEFAULT 0 CHECK (image_storage_bytes >= 0),
    document_storage_bytes bigint NOT NULL DEFAULT 0 CHECK (document_storage_bytes >= 0),
    article_storage_bytes bigint NOT NULL DEFAULT 0 CHECK (article_storage_bytes >= 0),
    total_storage_bytes bigint GENERATED ALWAYS AS
        (image_storage_bytes + document_storage_bytes + article_storage_bytes) STORED,
    -- Kept equal to quota.get_user_storage_quota(user_id) by the trigger sync_storage_quota.
    storage_quota_bytes bigint NOT NULL CHECK (storage_quota_bytes >= -1),
    purchased_storage_bytes bigint NOT NULL DEFAULT 0 CHECK (purchased_storage_bytes >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- pg_dump dumps the contents of these tables and the positions of their identity sequences,
-- so a dump restores the data as well as the extension, and new rows get new ids.
SELECT pg_catalog.pg_extension_config_dump('quota.settings', '');
SELECT pg_catalog.pg_extension_config_dump('quota.features', '');
SELECT pg_catalog.pg_extension_config_dump('quota.subscription_plans', '');
SELECT pg_catalog.pg_extension_config_dump('quota.plan_features', '');
SELECT pg_catalog.pg_extension_config_dump('quota.user_subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('quota.user_usage', '');
SELECT pg_catalog.pg_extension_config_dump('quota.usage_records', '');
SELECT pg_catalog.pg_extension_config_dump('quota.user_storage_usage', '');
SELECT pg_catalog.pg_extension_config_dump('quota.quota_adjustments', '');
SELECT pg_catalog.pg_extension_config_dump('quota.subscription_plans_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('quota.plan_features_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('quota.user_subscriptions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('quota.usage_records_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('quota.quota_adjustments_id_seq', '');
