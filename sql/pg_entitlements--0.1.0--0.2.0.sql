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
