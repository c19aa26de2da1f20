-- Grants: extra quota per user and feature beside the period's allowance (top-ups, booster
-- packs, promotions), with a priority and an expiry. A use draws from the allowance first, then
-- from the active grants in use order (entitlements_core::grants). Every unit drawn from a
-- grant is in quota.grant_uses, beside the usage record of the use that drew it, so for every
-- grant amount - remaining equals the sum of its uses (quota.verify_grants()), and for every
-- counter its usage equals its records less what they drew from grants (quota.verify_ledger()).
-- Grants live in schema quota also when an application's tables are attached: they are the
-- extension's own, keyed by user_id like the application's rows.

CREATE TABLE quota.grants (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    amount bigint NOT NULL CHECK (amount > 0),
    -- What is left of it; only the uses and refunds change it.
    remaining bigint NOT NULL,
    -- Lower first.
    priority integer NOT NULL DEFAULT 0,
    effective_from timestamptz NOT NULL DEFAULT now(),
    -- NULL: never expires. It counts while effective_from <= now() < expires_at.
    expires_at timestamptz,
    source text NOT NULL
        CHECK (source IN ('booster_pack', 'top_up', 'promotion', 'rollover', 'admin')),
    reason text,
    -- The login role of the session that granted it.
    actor text NOT NULL DEFAULT session_user,
    -- Names one grant (one per feature of a booster pack) for good.
    idempotency_key quota.idempotency_key,
    -- The booster plan a booster_pack grant came from.
    plan_id bigint,
    voided_at timestamptz,
    void_reason text,
    voided_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id),
    CHECK (remaining BETWEEN 0 AND amount),
    CHECK (expires_at > effective_from),
    CHECK ((voided_at IS NULL) = (void_reason IS NULL))
);
-- The active grants of a user's feature: every use and check probes it.
CREATE INDEX grants_user_feature_idx ON quota.grants (user_id, feature_code);
-- void_grant(grant_id) finds a grant by its id alone.
CREATE INDEX grants_id_idx ON quota.grants (id);
CREATE UNIQUE INDEX grants_idempotency_key_idx
    ON quota.grants (user_id, idempotency_key, feature_code) WHERE idempotency_key IS NOT NULL;

-- What each use drew from each grant (amount > 0), and what each refund gave back (< 0).
-- record_id is the id of the usage record in the usage_records table the functions use (the
-- extension's own, or an attached application's), so it has no foreign key.
CREATE TABLE quota.grant_uses (
    user_id bigint NOT NULL,
    record_id bigint NOT NULL,
    grant_id bigint NOT NULL,
    amount bigint NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (user_id, record_id, grant_id),
    FOREIGN KEY (user_id, grant_id) REFERENCES quota.grants (user_id, id)
);
CREATE INDEX grant_uses_grant_idx ON quota.grant_uses (user_id, grant_id);

SELECT pg_catalog.pg_extension_config_dump('quota.grants', '');
SELECT pg_catalog.pg_extension_config_dump('quota.grant_uses', '');
SELECT pg_catalog.pg_extension_config_dump('quota.grants_id_seq', '');

-- Purchased storage: a change of what decides whether a storage grant counts resyncs the user's
-- storage_quota_bytes (src/triggers.rs, sync_granted_storage).
CREATE TRIGGER pg_entitlements_sync_granted_storage
    AFTER INSERT OR UPDATE OF amount, effective_from, expires_at, voided_at ON quota.grants
    FOR EACH ROW WHEN (NEW.feature_code = 'storage_space')
    EXECUTE FUNCTION quota.sync_granted_storage();

-- A booster pack is a plan of kind 'booster': buying it grants each of its features with a
-- value above 0 for duration_days.
ALTER TABLE quota.subscription_plans
    ADD COLUMN plan_kind text NOT NULL DEFAULT 'base' CHECK (plan_kind IN ('base', 'booster'));

-- Whether a grant counts now: not voided, and effective_from <= now() < expires_at. The same
-- rule as entitlements_core::grants::counts, which the direct reads apply (a SQL function that
-- the planner inlines into each statement that uses it).
-- Without a SET clause, which would keep it from being inlined: every name is qualified.
CREATE FUNCTION quota.grant_counts(g quota.grants)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT g.voided_at IS NULL AND g.effective_from OPERATOR(pg_catalog.<=) pg_catalog.now()
           AND (g.expires_at IS NULL OR g.expires_at OPERATOR(pg_catalog.>) pg_catalog.now())
$$;

-- Announced on channel quota_grant (quota.announce: pg_notify, held until the commit on a Citus
-- cluster): version 1 of the payload.
CREATE FUNCTION quota.grant_event(event text, g quota.grants)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT quota.announce('quota_grant', json_build_object(
        'version', 1, 'event', event, 'grant_id', g.id, 'user_id', g.user_id,
        'feature_code', g.feature_code, 'amount', g.amount, 'remaining', g.remaining,
        'expires_at', g.expires_at, 'source', g.source)::text)
$$;
REVOKE EXECUTE ON FUNCTION quota.grant_event(text, quota.grants) FROM PUBLIC;
-- quota.announce (src/api.rs) raises the extension's events: only its own functions call it,
-- and on a Citus cluster the catalog triggers, as quota_admin (sql/privileges.sql).
REVOKE EXECUTE ON FUNCTION quota.announce(text, text) FROM PUBLIC;

-- Adds a grant, or, for an idempotency key already used for this user and feature, returns
-- that grant and adds nothing (the same key with another amount is refused, 23505).
CREATE FUNCTION quota.grant_quota(user_id bigint, feature_code text, amount bigint,
                                  expires_at timestamptz DEFAULT NULL,
                                  priority integer DEFAULT 0, source text DEFAULT 'top_up',
                                  reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS quota.grants
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g quota.grants;
BEGIN
    IF user_id IS NULL OR feature_code IS NULL OR amount IS NULL OR priority IS NULL
       OR source IS NULL THEN
        RAISE EXCEPTION 'grant_quota: user_id, feature_code, amount, priority and source must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT FROM quota.features f WHERE f.code = grant_quota.feature_code) THEN
        RAISE EXCEPTION 'user % feature "%": no such feature', user_id, feature_code
            USING ERRCODE = 'P0002',
                  HINT = 'Known features are listed in quota.features; add the feature there first.';
    END IF;
    -- Only what is used up can be granted: a boolean or config feature has a value instead.
    IF (SELECT f.kind FROM quota.features f WHERE f.code = grant_quota.feature_code)
       NOT IN ('metered', 'gauge') THEN
        RAISE EXCEPTION 'user % feature "%" is of kind %: it is not used up, nothing can be granted',
                        user_id, feature_code,
                        (SELECT f.kind FROM quota.features f WHERE f.code = grant_quota.feature_code)
            USING ERRCODE = '22023',
                  HINT = 'Give a user a boolean or config feature in custom_quotas.';
    END IF;
    IF amount <= 0 THEN
        RAISE EXCEPTION 'user % feature "%": a grant of % units: a grant gives at least 1', user_id, feature_code, amount
            USING ERRCODE = '22023';
    END IF;
    IF grant_quota.expires_at <= now() THEN
        RAISE EXCEPTION 'user % feature "%": a grant expiring at % has expired already', user_id, feature_code, grant_quota.expires_at
            USING ERRCODE = '22023';
    END IF;
    IF grant_quota.idempotency_key IS NOT NULL THEN
        -- A retry that arrives while the first call runs waits for it, then finds its grant.
        PERFORM pg_advisory_xact_lock(hashtextextended(grant_quota.idempotency_key, grant_quota.user_id));
        SELECT * INTO g FROM quota.grants x
         WHERE x.user_id = grant_quota.user_id AND x.idempotency_key = grant_quota.idempotency_key
           AND x.feature_code = grant_quota.feature_code;
        IF FOUND THEN
            IF g.amount <> grant_quota.amount OR g.source <> grant_quota.source THEN
                RAISE EXCEPTION 'user % feature "%": idempotency key "%" already named grant % (% units, %)',
                                user_id, feature_code, idempotency_key, g.id, g.amount, g.source
                    USING ERRCODE = '23505',
                          HINT = 'A key names one grant for good: a retry repeats it, a new grant needs a new key.';
            END IF;
            RETURN g;
        END IF;
    END IF;
    INSERT INTO quota.grants AS x (user_id, feature_code, amount, remaining, priority, expires_at,
                                   source, reason, idempotency_key)
    VALUES (grant_quota.user_id, grant_quota.feature_code, grant_quota.amount, grant_quota.amount,
            grant_quota.priority, grant_quota.expires_at, grant_quota.source, grant_quota.reason,
            grant_quota.idempotency_key)
    RETURNING * INTO g;
    PERFORM quota.grant_event('added', g);
    RETURN g;
END
$$;

-- Stops what is left of a grant from counting, with the reason and who voided it; a grant
-- voided already is returned as it is. Units it gave stay used.
CREATE FUNCTION quota.void_grant(grant_id bigint, reason text)
RETURNS quota.grants
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g quota.grants;
BEGIN
    IF grant_id IS NULL THEN
        RAISE EXCEPTION 'void_grant: grant_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF coalesce(btrim(reason), '') = '' THEN
        RAISE EXCEPTION 'void_grant: grant %: a reason is required', grant_id
            USING ERRCODE = '22023', HINT = 'Say why the grant stops counting; it is kept with the grant.';
    END IF;
    -- Waits for the uses drawing from it: what they drew stays drawn.
    SELECT * INTO g FROM quota.grants x WHERE x.id = void_grant.grant_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no grant with id %', grant_id USING ERRCODE = 'P0002';
    END IF;
    IF g.voided_at IS NOT NULL THEN
        RETURN g;
    END IF;
    UPDATE quota.grants x SET voided_at = now(), void_reason = void_grant.reason,
                              voided_by = session_user
     WHERE x.user_id = g.user_id AND x.id = g.id
    RETURNING * INTO g;
    PERFORM quota.grant_event('voided', g);
    RETURN g;
END
$$;

-- Buys a booster pack: one grant per feature of the booster plan with a value above 0,
-- expiring at 23:59:59 of the plan's last day (duration_days after today) in the configured time
-- zone. Needs an active base subscription. A repeated idempotency key returns the grants of
-- the first purchase and adds nothing.
CREATE FUNCTION quota.buy_booster(user_id bigint, plan_code text, idempotency_key text)
RETURNS SETOF quota.grants
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tables name := coalesce((SELECT st.attached_schema FROM quota.settings st), 'quota');
    zone text := coalesce((SELECT st.time_zone FROM quota.settings st), 'UTC');
    pack record;
    base bigint;
    base_kind text;
    feature record;
    g quota.grants;
    expires timestamptz;
BEGIN
    IF user_id IS NULL OR plan_code IS NULL OR idempotency_key IS NULL THEN
        RAISE EXCEPTION 'buy_booster: user_id, plan_code and idempotency_key must not be NULL'
            USING ERRCODE = '22004',
                  HINT = 'The idempotency key names the purchase (the payment''s id, say): a retry repeats it.';
    END IF;
    IF coalesce((SELECT 'booster_packs' = ANY (st.attached_lacks) FROM quota.settings st), false) THEN
        RAISE EXCEPTION 'buy_booster: booster packs are not available: the tables of the attached schema "%" were attached without the columns they need', tables
            USING ERRCODE = '0A000',
                  HINT = format('SELECT * FROM quota.attach_problems(%L) WHERE needed_for = ''booster_packs'' lists what it needs; add it, then run quota.attach() again.', tables);
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(buy_booster.idempotency_key, buy_booster.user_id));
    IF EXISTS (SELECT FROM quota.grants x WHERE x.user_id = buy_booster.user_id
                                            AND x.idempotency_key = buy_booster.idempotency_key) THEN
        IF EXISTS (SELECT FROM quota.grants x
                    WHERE x.user_id = buy_booster.user_id
                      AND x.idempotency_key = buy_booster.idempotency_key
                      AND (x.source <> 'booster_pack' OR x.reason IS DISTINCT FROM 'booster pack ' || buy_booster.plan_code)) THEN
            RAISE EXCEPTION 'user %: idempotency key "%" already named another grant than a purchase of booster pack "%"',
                            user_id, idempotency_key, plan_code
                USING ERRCODE = '23505',
                      HINT = 'A key names one purchase for good: a retry repeats it, a new purchase needs a new key.';
        END IF;
        RETURN QUERY SELECT * FROM quota.grants x
                      WHERE x.user_id = buy_booster.user_id
                        AND x.idempotency_key = buy_booster.idempotency_key ORDER BY x.id;
        RETURN;
    END IF;
    EXECUTE format('SELECT p.id::bigint AS id, p.plan_kind::text AS kind, p.duration_days
                      FROM %I.subscription_plans p WHERE p.plan_code = $1', tables)
       INTO pack USING buy_booster.plan_code;
    IF pack.id IS NULL OR pack.kind <> 'booster' THEN
        RAISE EXCEPTION 'user %: no booster plan with plan_code "%"', user_id, plan_code
            USING ERRCODE = 'P0002',
                  HINT = 'A booster pack is a plan of plan_kind ''booster'' with duration_days.';
    END IF;
    IF pack.duration_days IS NULL OR pack.duration_days <= 0 THEN
        RAISE EXCEPTION 'booster plan "%" has no duration_days', plan_code
            USING ERRCODE = '23502', HINT = 'Set the plan''s duration_days to the days its grants last.';
    END IF;
    base := quota.counting_plan(buy_booster.user_id);
    IF base IS NOT NULL THEN
        EXECUTE format('SELECT p.plan_kind::text FROM %I.subscription_plans p WHERE p.id = $1', tables)
           INTO base_kind USING base;
    END IF;
    IF base IS NULL OR base_kind IS DISTINCT FROM 'base' THEN
        RAISE EXCEPTION 'user %: a booster pack needs an active base subscription', user_id
            USING ERRCODE = 'P0002',
                  HINT = 'The user needs a subscription with status ''active'' whose start_date <= now() < end_date, on a plan of plan_kind ''base''.';
    END IF;
    expires := (((now() AT TIME ZONE zone)::date + pack.duration_days) + time '23:59:59') AT TIME ZONE zone;
    FOR feature IN
        EXECUTE format('SELECT pf.feature_code::text AS code, pf.feature_value AS value
                          FROM %I.plan_features pf JOIN quota.features f ON f.code = pf.feature_code
                         WHERE pf.plan_id = $1 AND pf.feature_value > 0
                           AND f.kind IN (''metered'', ''gauge'')
                         ORDER BY pf.feature_code', tables)
        USING pack.id
    LOOP
        INSERT INTO quota.grants AS x (user_id, feature_code, amount, remaining, expires_at,
                                       source, reason, idempotency_key, plan_id)
        VALUES (buy_booster.user_id, feature.code, feature.value, feature.value, expires,
                'booster_pack', 'booster pack ' || buy_booster.plan_code,
                buy_booster.idempotency_key, pack.id)
        RETURNING * INTO g;
        PERFORM quota.grant_event('added', g);
        RETURN NEXT g;
    END LOOP;
END
$$;

-- The grants' ledger: for every grant, what it gave less what is left equals the sum of its
-- uses and refunds in quota.grant_uses. Returns the grants that disagree: none, always.
CREATE FUNCTION quota.verify_grants(for_user bigint DEFAULT NULL)
RETURNS TABLE (user_id bigint, grant_id bigint, feature_code text, used bigint, ledger bigint)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.user_id, g.id, g.feature_code, g.amount - g.remaining, coalesce(sum(u.amount), 0)::bigint
      FROM quota.grants g
      LEFT JOIN quota.grant_uses u ON u.user_id = g.user_id AND u.grant_id = g.id
     WHERE for_user IS NULL OR g.user_id = for_user
     GROUP BY g.user_id, g.id
    HAVING g.amount - g.remaining IS DISTINCT FROM coalesce(sum(u.amount), 0)
     ORDER BY 1, 2
$$;
