-- pg_entitlements 0.1.0 → 0.2.0, run by ALTER EXTENSION pg_entitlements UPDATE.
--
-- The library is replaced before this script runs, so every C function 0.1.0 created still
-- points at a symbol of the new library; this script only changes what the SQL of 0.2.0
-- changes. scripts/ops/upgrade.sh proves the result equals a fresh install of 0.2.0,
-- catalog for catalog.

-- Reads without statements (src/cache.rs, src/probe.rs): how each table is read, ...
CREATE FUNCTION quota.read_paths() RETURNS TABLE (
	"table_name" TEXT,
	"read_by" TEXT,
	"detail" TEXT
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'read_paths_wrapper';

-- ... and the trigger that keeps every backend's copy of the nearly constant tables current
-- (sql/cache.sql).
CREATE FUNCTION quota.invalidate_cache()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'invalidate_cache_wrapper';

CREATE FUNCTION quota.install_cache_trigger(target regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER pg_entitlements_invalidate_cache
                        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                        FOR EACH STATEMENT EXECUTE FUNCTION quota.invalidate_cache()',
                   target);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pg_entitlements_invalidate_cache',
                   target);
END
$$;
REVOKE EXECUTE ON FUNCTION quota.install_cache_trigger(regclass) FROM PUBLIC;

SELECT quota.install_cache_trigger(t)
  FROM unnest(ARRAY['quota.settings', 'quota.features', 'quota.subscription_plans',
                    'quota.plan_features']::regclass[]) AS t;

-- attach() also puts the trigger on the application's plan tables, detach() takes it off again,
-- and a database attached under 0.1.0 gets it now.
CREATE OR REPLACE FUNCTION quota.attach(target_schema name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problems text;
    subs regclass;
    other record;
BEGIN
    IF target_schema = 'quota' THEN
        RAISE EXCEPTION 'schema quota holds the extension''s own tables; use quota.detach()'
            USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = target_schema) THEN
        RAISE EXCEPTION 'schema % does not exist', quote_ident(target_schema)
            USING ERRCODE = '3F000';
    END IF;
    SELECT string_agg('- ' || p.problem || coalesce(E'\n    fix: ' || p.fix || ';', ''), E'\n'
                      ORDER BY p.problem)
      INTO problems
      FROM quota.attach_problems(target_schema) p;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'cannot attach pg_entitlements to schema %', quote_ident(target_schema)
            USING ERRCODE = '42P16', DETAIL = problems,
                  HINT = 'Run the fixes (SELECT fix FROM quota.attach_problems(...) \gexec in psql), then attach again.';
    END IF;

    PERFORM quota.detach();
    subs := format('%I.user_subscriptions', target_schema)::regclass;
    FOR other IN
        SELECT t.tgname FROM pg_trigger t WHERE t.tgrelid = subs AND NOT t.tgisinternal
    LOOP
        RAISE NOTICE 'trigger % on % is the application''s own and stays; it now runs beside pg_entitlements'' triggers',
            quote_ident(other.tgname), subs;
    END LOOP;
    FOR other IN
        SELECT p.oid::regprocedure AS fn FROM pg_proc p
         WHERE p.pronamespace = target_schema::regnamespace
           AND p.proname IN ('check_user_quota', 'record_feature_usage', 'get_user_storage_quota',
                             'get_quota_period', 'consume')
    LOOP
        RAISE NOTICE 'function % is the application''s own: a call with argument types matching it exactly resolves to it, not to quota''s; drop it to switch the calls over',
            other.fn;
    END LOOP;
    PERFORM quota.install_triggers(subs);
    PERFORM quota.install_cache_trigger(format('%I.%I', target_schema, t)::regclass)
       FROM unnest(ARRAY['subscription_plans', 'plan_features']) AS t;
    INSERT INTO quota.settings (attached_schema) VALUES (target_schema)
    ON CONFLICT (singleton) DO UPDATE SET attached_schema = EXCLUDED.attached_schema;
    RAISE NOTICE 'pg_entitlements now uses the tables of schema %', quote_ident(target_schema);
END
$$;

CREATE OR REPLACE FUNCTION quota.detach()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    attached name := (SELECT st.attached_schema FROM quota.settings st);
    subs regclass;
    t regclass;
BEGIN
    IF attached IS NULL THEN
        RETURN;
    END IF;
    subs := to_regclass(format('%I.user_subscriptions', attached));
    IF subs IS NOT NULL THEN
        EXECUTE format('DROP TRIGGER IF EXISTS pg_entitlements_validate_custom_quotas ON %s', subs);
        EXECUTE format('DROP TRIGGER IF EXISTS pg_entitlements_sync_storage_quota ON %s', subs);
    END IF;
    FOR t IN SELECT to_regclass(format('%I.%I', attached, n))
               FROM unnest(ARRAY['subscription_plans', 'plan_features']) AS n
    LOOP
        IF t IS NOT NULL THEN
            EXECUTE format('DROP TRIGGER IF EXISTS pg_entitlements_invalidate_cache ON %s', t);
        END IF;
    END LOOP;
    UPDATE quota.settings SET attached_schema = NULL;
END
$$;

SELECT quota.install_cache_trigger(pg_catalog.format('%I.%I', st.attached_schema, t)::regclass)
  FROM quota.settings st, unnest(ARRAY['subscription_plans', 'plan_features']) AS t
 WHERE st.attached_schema IS NOT NULL;

COMMENT ON FUNCTION quota.read_paths() IS
    'How the reading functions reach each table now, in this transaction: cache (the backend''s '
    'copy of a nearly constant table, reloaded by every committed change), index (read through '
    'the named index without an SQL statement) or sql (a statement), with the reason. '
    'SET pg_entitlements.direct_reads = off sends every read through statements.';

COMMENT ON FUNCTION quota.invalidate_cache() IS
    'Trigger: tells every backend, at commit, that its copy of settings, features, plans or plan '
    'features is stale.';

COMMENT ON FUNCTION quota.install_cache_trigger(regclass) IS
    'Creates the trigger pg_entitlements_invalidate_cache (ENABLE ALWAYS) on a table the backends '
    'keep a copy of (used by CREATE EXTENSION and quota.attach()).';

-- The tables every use writes: single-value rules as domains, the refund rule in its shortest
-- form, and partial unique indexes on idempotency_key and refund_of (sql/schema.sql says why).
-- The domains get their constraints after the columns changed type: a column changed to a
-- domain that has constraints is rewritten, one without is not, and ALTER DOMAIN ADD CONSTRAINT
-- only reads the rows to validate them.
CREATE DOMAIN quota.usage_total AS bigint;
CREATE DOMAIN quota.usage_amount AS integer;
CREATE DOMAIN quota.idempotency_key AS text;
ALTER TABLE quota.user_usage
    DROP CONSTRAINT user_usage_usage_count_check,
    ALTER COLUMN usage_count TYPE quota.usage_total;
ALTER TABLE quota.usage_records
    DROP CONSTRAINT usage_records_user_id_idempotency_key_key,
    DROP CONSTRAINT usage_records_user_id_refund_of_key,
    DROP CONSTRAINT usage_records_idempotency_key_check,
    DROP CONSTRAINT usage_records_check,
    ALTER COLUMN amount TYPE quota.usage_amount,
    ALTER COLUMN idempotency_key TYPE quota.idempotency_key,
    ADD CONSTRAINT usage_records_refund_sign CHECK ((refund_of IS NULL) = (amount > 0));
ALTER DOMAIN quota.usage_total ADD CONSTRAINT usage_total_not_negative CHECK (VALUE >= 0);
ALTER DOMAIN quota.usage_amount ADD CONSTRAINT usage_amount_not_zero CHECK (VALUE <> 0);
ALTER DOMAIN quota.idempotency_key ADD CONSTRAINT idempotency_key_not_empty CHECK (VALUE <> '');
CREATE UNIQUE INDEX usage_records_idempotency_key_idx
    ON quota.usage_records (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX usage_records_refund_of_idx
    ON quota.usage_records (user_id, refund_of) WHERE refund_of IS NOT NULL;

-- attach_problems() accepts the partial unique keys of 0.2.0 (sql/attach.sql).
CREATE OR REPLACE FUNCTION quota.attach_problems(target_schema name)
RETURNS TABLE (problem text, fix text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tz text := coalesce((SELECT st.time_zone FROM quota.settings st), 'UTC');
    req record;
    col record;
    rel regclass;
BEGIN
    -- Every column the functions read or write: accepted types, and how to add it if missing.
    FOR req IN
        SELECT * FROM (VALUES
            ('user_subscriptions', 'id',                 '{int4,int8}', NULL),
            ('user_subscriptions', 'user_id',            '{int4,int8}', NULL),
            ('user_subscriptions', 'plan_id',            '{int4,int8}', NULL),
            ('user_subscriptions', 'start_date',         '{timestamptz}', NULL),
            ('user_subscriptions', 'end_date',           '{timestamptz}', NULL),
            ('user_subscriptions', 'status',             '{text,varchar}', NULL),
            ('user_subscriptions', 'custom_quotas',      '{jsonb}', 'jsonb'),
            ('user_subscriptions', 'quota_reset_anchor', '{timestamptz}', 'timestamptz'),
            ('user_subscriptions', 'quota_cycle_type',   '{text,varchar}', 'varchar(20)'),
            ('subscription_plans', 'id',                 '{int4,int8}', NULL),
            ('subscription_plans', 'billing_cycle',      '{text,varchar}', 'varchar(20) NOT NULL DEFAULT ''monthly'''),
            ('subscription_plans', 'quota_cycle_type',   '{text,varchar}', 'varchar(20)'),
            ('plan_features',      'plan_id',            '{int4,int8}', NULL),
            ('plan_features',      'feature_code',       '{text,varchar}', NULL),
            ('plan_features',      'feature_value',      '{int4}', NULL),
            ('plan_features',      'feature_unit',       '{text,varchar}', 'varchar(20)'),
            ('user_usage',         'user_id',            '{int4,int8}', NULL),
            ('user_usage',         'feature_code',       '{text,varchar}', NULL),
            ('user_usage',         'period_start',       '{timestamptz}', NULL),
            ('user_usage',         'period_end',         '{timestamptz}', NULL),
            ('user_usage',         'usage_count',        '{int4,int8}', NULL),
            ('user_usage',         'alerted_percent',    '{int4}', 'integer NOT NULL DEFAULT 0'),
            ('user_usage',         'last_reset_at',      '{timestamptz}', 'timestamptz'),
            ('user_usage',         'updated_at',         '{timestamptz}', 'timestamptz'),
            ('usage_records',      'id',                 '{int4,int8}', NULL),
            ('usage_records',      'user_id',            '{int4,int8}', NULL),
            ('usage_records',      'feature_code',       '{text,varchar}', NULL),
            ('usage_records',      'period_start',       '{timestamptz}', 'timestamptz'),
            ('usage_records',      'resource_type',      '{text,varchar}', 'varchar(50)'),
            ('usage_records',      'resource_id',        '{int4,int8}', 'bigint'),
            ('usage_records',      'amount',             '{int4}', NULL),
            ('usage_records',      'metadata',           '{jsonb}', 'jsonb'),
            ('usage_records',      'idempotency_key',    '{text,varchar}', 'text'),
            ('usage_records',      'refund_of',          '{int4,int8}', 'bigint'),
            ('usage_records',      'created_at',         '{timestamptz}', 'timestamptz NOT NULL DEFAULT now()'),
            ('user_storage_usage', 'user_id',            '{int4,int8}', NULL),
            ('user_storage_usage', 'storage_quota_bytes', '{int8}', 'bigint NOT NULL DEFAULT 0'),
            ('user_storage_usage', 'updated_at',         '{timestamptz}', 'timestamptz')
        ) AS r (tbl, col, types, add_type)
    LOOP
        rel := to_regclass(format('%I.%I', target_schema, req.tbl));
        IF rel IS NULL THEN
            CONTINUE;  -- reported once per table below
        END IF;
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS shown, t.typname
          INTO col
          FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = rel AND a.attname = req.col AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            problem := format('%s has no column %I', rel, req.col);
            fix := CASE WHEN req.add_type IS NULL THEN NULL
                        ELSE format('ALTER TABLE %s ADD COLUMN %I %s', rel, req.col, req.add_type) END;
            RETURN NEXT;
        ELSIF NOT col.typname = ANY (req.types::text[]) THEN
            problem := format('%s.%I is %s, not %s', rel, req.col, col.shown,
                              array_to_string(req.types::text[], ' or '));
            fix := CASE
                WHEN col.typname = 'timestamp' THEN
                    format('ALTER TABLE %s ALTER COLUMN %I TYPE timestamptz USING %I AT TIME ZONE %L',
                           rel, req.col, req.col, tz)
                ELSE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s', rel, req.col,
                            (req.types::text[])[array_upper(req.types::text[], 1)]) END;
            RETURN NEXT;
        END IF;
    END LOOP;

    FOR req IN SELECT unnest(ARRAY['user_subscriptions', 'subscription_plans', 'plan_features',
                                   'user_usage', 'usage_records', 'user_storage_usage']) AS tbl
    LOOP
        IF to_regclass(format('%I.%I', target_schema, req.tbl)) IS NULL THEN
            problem := format('table %I.%I does not exist', target_schema, req.tbl);
            fix := NULL;
            RETURN NEXT;
        END IF;
    END LOOP;

    -- The unique keys ON CONFLICT and idempotency rely on. A key on a nullable column may be
    -- partial, unique only where that column IS NOT NULL: a NULL never conflicts anyway.
    FOR req IN
        SELECT * FROM (VALUES
            ('user_usage', '{user_id,feature_code,period_start}', NULL),
            ('user_storage_usage', '{user_id}', NULL),
            ('usage_records', '{user_id,idempotency_key}', 'idempotency_key'),
            ('usage_records', '{user_id,refund_of}', 'refund_of')
        ) AS r (tbl, cols, nullable)
    LOOP
        rel := to_regclass(format('%I.%I', target_schema, req.tbl));
        CONTINUE WHEN rel IS NULL;
        IF NOT EXISTS (
            SELECT FROM pg_index i
             WHERE i.indrelid = rel AND i.indisunique
               AND (i.indpred IS NULL
                    OR pg_get_expr(i.indpred, i.indrelid)
                       = '(' || quote_ident(req.nullable) || ' IS NOT NULL)')
               AND i.indnkeyatts = cardinality(req.cols::text[])
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                      FROM pg_attribute a
                     WHERE a.attrelid = rel AND a.attnum = ANY (i.indkey::int2[]))
                   = (SELECT array_agg(c ORDER BY c) FROM unnest(req.cols::text[]) c))
        THEN
            problem := format('%s has no unique index on (%s)', rel,
                              array_to_string(req.cols::text[], ', '));
            fix := format('CREATE UNIQUE INDEX ON %s (%s)', rel,
                          (SELECT string_agg(quote_ident(c), ', ') FROM unnest(req.cols::text[]) c))
                   || coalesce(' WHERE ' || quote_ident(req.nullable) || ' IS NOT NULL', '');
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
