-- Every backend keeps a copy of settings, features, plans and plan features (src/read/copy.rs), so
-- that a quota check reads them without a statement. A change of any of them must reach every
-- backend before its next check: this trigger queues an invalidation that PostgreSQL sends to
-- all backends when the change commits (and to none when it rolls back).
--
-- ENABLE ALWAYS: it fires under session_replication_role = replica too, so rows that a logical
-- replication subscription applies reach the copies as well. A table whose trigger is disabled
-- (ALTER TABLE ... DISABLE TRIGGER ALL) leaves copies stale until their backends end.
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
