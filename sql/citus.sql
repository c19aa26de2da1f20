-- Scale-out with Citus (docs/scaling.md): the extension's tables and functions laid out over a
-- Citus cluster by one call, quota.distribute().

-- A restored dump's edits of a built-in feature replace that feature's settings, its further
-- limits (window_limits) included. The UPDATE names the table the trigger fires on (TG_RELID):
-- on one server that is quota.features; on a Citus cluster, where quota.features is a
-- reference table, the trigger fires on each copy (shard) of it, and an UPDATE of the
-- distributed table from there would be a distributed query from a query on a shard, which
-- Citus refuses, and would fight the copy Citus makes of the table while it distributes it.
CREATE OR REPLACE FUNCTION quota.features_restore_builtin() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    replaced integer;
BEGIN
    EXECUTE pg_catalog.format(
        'UPDATE %s f
            SET name = $1.name, unit = $1.unit, reset_rule = $1.reset_rule,
                default_limit = $1.default_limit, alert_thresholds = $1.alert_thresholds,
                overage_limit = $1.overage_limit, rollover_max = $1.rollover_max,
                rollover_periods = $1.rollover_periods, granted = f.granted OR $1.granted,
                kind = $1.kind, default_value = $1.default_value,
                window_limits = $1.window_limits
          WHERE f.code OPERATOR(pg_catalog.=) $1.code AND f.builtin',
        TG_RELID::pg_catalog.regclass)
        USING NEW;
    GET DIAGNOSTICS replaced = ROW_COUNT;
    IF replaced > 0 THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

-- Gives this node's identity sequences of the extension a range of row ids of its own on a Citus
-- cluster: 2^48 values per node group, from its group id on (the coordinator's group 0: from 1).
-- Nothing without Citus' node catalog. quota.distribute() runs it on every node, and the
-- extension's script runs it: a worker Citus adds later creates the extension with its group id
-- already set, and so never gives the ids another node gives, even before quota.distribute()
-- runs again. DDL propagation is off for its statements: each node sets its own sequences.
CREATE FUNCTION quota.own_id_range() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET citus.enable_ddl_propagation = off
AS $$
DECLARE
    low pg_catalog.int8;
    s pg_catalog.regclass;
    following pg_catalog.int8;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_local_group') IS NULL THEN
        RETURN;
    END IF;
    EXECUTE 'SELECT g.groupid::pg_catalog.int8 * 281474976710656 + 1 FROM pg_catalog.pg_dist_local_group g'
        INTO low;
    IF low IS NULL THEN
        RETURN;
    END IF;
    FOR s IN
        SELECT d.objid::pg_catalog.regclass
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_class c ON c.oid = d.objid AND c.relkind = 'S'
          JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_entitlements'
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
    LOOP
        EXECUTE pg_catalog.format(
            'SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM %s', s)
            INTO following;
        EXECUTE pg_catalog.format('ALTER SEQUENCE %s MINVALUE %s MAXVALUE %s START %s RESTART %s',
                                  s, low, low + 281474976710654, low,
                                  GREATEST(following, low));
    END LOOP;
END
$$;
-- An administrator's call, as part of quota.distribute().
REVOKE EXECUTE ON FUNCTION quota.own_id_range() FROM PUBLIC;

-- Lays the extension's tables and functions out over a Citus cluster, idempotently: the tables
-- without user_id become reference tables (a copy on every node), those with user_id are
-- distributed by it in one colocation group (anchored on quota.user_subscriptions), each in an
-- order where the tables it references are already laid out; every function whose first
-- argument is user_id is delegated to the node holding that user, the writers also inside a
-- transaction block (force_delegation); and each node's identity sequences are given a range
-- of their own, so that row ids stay unique across nodes (quota.own_id_range()).
CREATE FUNCTION quota.distribute() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pg_catalog.regclass;
    f pg_catalog.regprocedure;
    writes boolean;
    failure text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname = 'citus') THEN
        RAISE EXCEPTION 'quota.distribute() needs Citus: the extension citus is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Load citus (shared_preload_libraries) on every node, CREATE EXTENSION citus on the '
                         'coordinator and the workers, register the workers (citus_add_node), then call '
                         'quota.distribute() on the coordinator.';
    END IF;
    IF EXISTS (SELECT FROM quota.settings st WHERE st.attached_schema IS NOT NULL) THEN
        RAISE EXCEPTION 'quota.distribute() lays out the extension''s own tables, but the functions are attached to schema %',
                        (SELECT st.attached_schema FROM quota.settings st)
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Distribute the application''s tables yourself, or call quota.detach() first.';
    END IF;

    -- Triggers run on the shards (sync_storage_quota, wait_for_uses, validate_custom_quotas):
    -- each stays on one user's rows. Foreign keys from the per-user tables to the catalog stay
    -- as they are: the referencing tables are distributed right after, in this transaction,
    -- instead of becoming Citus local tables, which the extension's sequences would forbid.
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    PERFORM pg_catalog.set_config('citus.enable_local_reference_table_foreign_keys', 'off', true);
    -- A grant made on a worker cannot mark its feature (quota.mark_granted_features): every
    -- feature is marked now, so that every check reads the user's grants.
    UPDATE quota.features f SET granted = true WHERE NOT f.granted;

    -- The tables of the extension in an order where every table comes after those it references.
    FOR t IN
        WITH RECURSIVE own AS (
            SELECT c.oid, EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                   WHERE a.attrelid = c.oid AND a.attname = 'user_id'
                                     AND NOT a.attisdropped) AS per_user
              FROM pg_catalog.pg_class c
              JOIN pg_catalog.pg_depend d
                ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
               AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
              JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_entitlements'
             WHERE c.relkind = 'r'
        ), depth (oid, level) AS (
            SELECT own.oid, 0 FROM own
            UNION ALL
            SELECT con.conrelid, depth.level + 1
              FROM depth
              JOIN pg_catalog.pg_constraint con
                ON con.confrelid = depth.oid AND con.contype = 'f' AND con.conrelid <> depth.oid
        )
        SELECT own.oid::pg_catalog.regclass
          FROM own JOIN depth USING (oid)
         GROUP BY own.oid, own.per_user
         ORDER BY own.per_user, own.oid <> 'quota.user_subscriptions'::pg_catalog.regclass,
                  pg_catalog.max(depth.level), own.oid
    LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = t);
        IF EXISTS (SELECT FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = t AND a.attname = 'user_id' AND NOT a.attisdropped) THEN
            IF t = 'quota.user_subscriptions'::pg_catalog.regclass THEN
                PERFORM pg_catalog.create_distributed_table(t, 'user_id');
            ELSE
                PERFORM pg_catalog.create_distributed_table(t, 'user_id',
                            colocate_with => 'quota.user_subscriptions');
            END IF;
        ELSE
            PERFORM pg_catalog.create_reference_table(t);
        END IF;
    END LOOP;

    -- The per-user functions.
    FOR f, writes IN
        SELECT p.oid::pg_catalog.regprocedure, p.provolatile = 'v'
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_depend d
            ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
          JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_entitlements'
         WHERE p.prokind = 'f' AND p.pronargs > 0
           AND p.proargtypes[0] = 'pg_catalog.int8'::pg_catalog.regtype
           AND p.proargnames[1] = 'user_id'
         ORDER BY p.oid
    LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_dist_object o
                               WHERE o.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                                 AND o.objid = f AND o.distribution_argument_index = 0);
        PERFORM pg_catalog.create_distributed_function(f, '$1',
                    colocate_with := 'quota.user_subscriptions', force_delegation := writes);
    END LOOP;

    -- Every node gives ids from a range of its own.
    FOR failure IN
        SELECT r.result
          FROM pg_catalog.run_command_on_all_nodes('SELECT quota.own_id_range()') r
         WHERE NOT r.success
    LOOP
        RAISE EXCEPTION 'quota.distribute() could not give a node its range of row ids: %', failure
            USING ERRCODE = 'system_error';
    END LOOP;
END
$$;
-- An administrator's call: it changes the layout of every table.
REVOKE EXECUTE ON FUNCTION quota.distribute() FROM PUBLIC;
