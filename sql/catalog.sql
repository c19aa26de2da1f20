-- Catalog changes reach the users they decide (issue 14, items 6 and 7).
--
-- user_storage_usage.storage_quota_bytes is kept equal to get_user_storage_quota() by the
-- trigger on user_subscriptions (sql/triggers.sql); a change of the catalog moves that quota
-- too: a plan's storage_space row in plan_features, or the default_limit or unit of
-- storage_space in quota.features. The triggers below resync exactly the users whose active
-- subscription the change decides, in one statement per change (never a loop per user), and
-- announce the change: quota_updated once per plan or feature, storage_quota_changed once per
-- user whose bytes moved (the payload the subscription trigger sends, keys in the same order:
-- serde_json's, alphabetical).
--
-- They update storage rows that exist and create none: rows are created by the subscription
-- trigger, and a restore (pg_restore fires these triggers while it loads the catalog) must not
-- find rows it is about to load.
--
-- Changes by the clock alone (a subscription ends) fire nothing: get_user_storage_quota()
-- stays the truth.

-- The plan of each user's subscription that counts now, among the users with a subscription
-- of status 'active' in `subs` (a user_subscriptions table) on one of `plans` (all of them when
-- NULL). Which subscription counts is decided by quota.counting_plan(), with the rules of
-- entitlements_core::subscription, as for every read: the status condition here only narrows
-- the users down, as the statements' does. STABLE, not IMMUTABLE: a regclass prints as the
-- table's name of the moment.
CREATE FUNCTION quota.counting_subscriptions_sql(subs regclass, plans text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT format(
    'SELECT c.user_id, c.plan_id
       FROM (SELECT u.user_id, quota.counting_plan(u.user_id) AS plan_id
               FROM (SELECT DISTINCT us.user_id::pg_catalog.int8 AS user_id
                       FROM %1$s us
                      WHERE us.status = ''active'' %2$s) u) c
      WHERE c.plan_id IS NOT NULL',
    subs,
    CASE WHEN plans IS NOT NULL
         THEN format('AND us.plan_id::pg_catalog.int8 IN (%s)', plans) ELSE '' END)
$$;

-- The storage resync and the announcements of one change, as the last part of one statement:
-- `affected` (user_id) and `announce` (channel quota_updated payloads, in order) are defined by
-- the caller; `storage` is the condition on `affected a` of the users whose storage quota the
-- change can move. `target` is materialized so that the UPDATE's join computes each user's
-- quota once. The UPDATE reads each user's old quota through a second reference to the row
-- (RETURNING shows only the new one). only_user, the expression of the one user the statement
-- resyncs (quota.tick_user()): every table is filtered by it, so that Citus finds the user's
-- shards. On a Citus cluster the events go through quota.announce, which holds them until the
-- commit of a transaction Citus commits in two phases. STABLE for the regclass, as above.
CREATE FUNCTION quota.resync_storage_sql(storage_table regclass, storage text,
                                         only_user text DEFAULT NULL)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT format(
    ', target AS MATERIALIZED (
        SELECT a.user_id, quota.get_user_storage_quota(a.user_id) AS bytes
          FROM affected a WHERE %2$s
    ), moved AS (
        UPDATE %1$s s
           SET storage_quota_bytes = t.bytes, updated_at = %3$s
          FROM target t, %1$s o
         WHERE s.user_id = t.user_id AND o.user_id = t.user_id%4$s
           AND s.storage_quota_bytes IS DISTINCT FROM t.bytes
        RETURNING t.user_id, o.storage_quota_bytes AS old_bytes, t.bytes AS new_bytes
    )
    SELECT (SELECT pg_catalog.count(%5$s(''quota_updated'', a.payload))
              FROM announce a),
           (SELECT pg_catalog.count(%5$s(''storage_quota_changed'',
                       pg_catalog.format(''{"new_bytes":%%s,"old_bytes":%%s,"user_id":%%s}'',
                                         m.new_bytes, m.old_bytes, m.user_id)))
              FROM (SELECT * FROM moved ORDER BY user_id) m)',
    storage_table, storage,
    -- An attached application's updated_at without time zone holds its local time.
    CASE WHEN (SELECT a.atttypid FROM pg_attribute a
                WHERE a.attrelid = storage_table AND a.attname = 'updated_at'
                  AND NOT a.attisdropped) = 'timestamp'::regtype
         THEN format('(pg_catalog.now() AT TIME ZONE %L)',
                     coalesce((SELECT to_jsonb(st) ->> 'attached_time_zone' FROM quota.settings st),
                              'UTC'))
         ELSE 'pg_catalog.now()' END,
    CASE WHEN only_user IS NOT NULL
         THEN format(' AND s.user_id = %1$s AND o.user_id = %1$s', only_user) ELSE '' END,
    CASE WHEN quota.distributed() THEN 'quota.announce' ELSE 'pg_catalog.pg_notify' END)
$$;

-- The bound tables: the attached application's when quota.attach() ran, else quota's.
CREATE FUNCTION quota.bound_table(name text)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT coalesce(
    (SELECT to_regclass(format('%I.%I', st.attached_schema, name))
       FROM quota.settings st WHERE st.attached_schema IS NOT NULL),
    format('quota.%I', name)::regclass)
$$;

-- AFTER INSERT, UPDATE or DELETE on a plan_features table, FOR EACH STATEMENT, with transition
-- tables: one statement resyncs and announces every plan the change touched. Fires on
-- quota.plan_features and, through quota.attach(), on the attached application's; a change of
-- the one the functions do not read decides nothing and does nothing. On a Citus cluster it
-- fires on each node's copy of quota.plan_features, and each node resyncs and announces for
-- the users of the shards it holds (quota.local_shards).
CREATE FUNCTION quota.plan_features_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed jsonb;
    -- Where the users are: user_subscriptions and user_storage_usage, or their shards.
    places regclass[];
    here regclass[];
    -- The catalog's features, read from quota.features or, on a Citus node, its copy there.
    catalog regclass := 'quota.features';
    known text[];
BEGIN
    IF TG_RELID = quota.bound_table('plan_features') THEN
        places := ARRAY[ARRAY[quota.bound_table('user_subscriptions'),
                              quota.bound_table('user_storage_usage')]];
    ELSIF TG_RELID <> 'quota.plan_features'::regclass AND quota.distributed() THEN
        places := ARRAY(SELECT s::regclass[] FROM quota.local_shards(
                            ARRAY['user_subscriptions', 'user_storage_usage']) s);
        catalog := (SELECT s[1]::regclass FROM quota.local_shards(ARRAY['features']) s LIMIT 1);
    ELSE
        RETURN NULL;
    END IF;
    -- A node that serves no users (the coordinator) has nothing to resync or announce.
    IF cardinality(places) = 0 THEN
        RETURN NULL;
    END IF;
    -- The (plan, feature) pairs whose value or unit the statement changed.
    IF TG_OP = 'INSERT' THEN
        SELECT jsonb_agg(jsonb_build_object('plan_id', n.plan_id, 'feature_code', n.feature_code))
          INTO changed FROM new_rows n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT jsonb_agg(jsonb_build_object('plan_id', o.plan_id, 'feature_code', o.feature_code))
          INTO changed FROM old_rows o;
    ELSE
        -- Rows whose plan, feature, value and unit all stay are no change. The cascade of a
        -- feature rename (quota.features code, ON UPDATE CASCADE) moves a row from the old
        -- code, no longer in the catalog, to the new one with the same value: no limit moves,
        -- and quota.features_changed announces the rename.
        -- A configuration value and further limits decide too; to_jsonb reads them as NULL on
        -- both sides from an attached plan_features without the columns.
        EXECUTE format('SELECT pg_catalog.array_agg(f.code::pg_catalog.text) FROM %s f', catalog)
           INTO known;
        WITH gone AS (
            SELECT o.plan_id::bigint AS plan_id, o.feature_code::text AS feature_code,
                   o.feature_value, o.feature_unit::text AS feature_unit,
                   to_jsonb(o) -> 'config_value' AS config_value,
                   to_jsonb(o) -> 'window_limits' AS window_limits FROM old_rows o
            EXCEPT
            SELECT n.plan_id, n.feature_code, n.feature_value, n.feature_unit,
                   to_jsonb(n) -> 'config_value', to_jsonb(n) -> 'window_limits' FROM new_rows n
        ), came AS (
            SELECT n.plan_id::bigint AS plan_id, n.feature_code::text AS feature_code,
                   n.feature_value, n.feature_unit::text AS feature_unit,
                   to_jsonb(n) -> 'config_value' AS config_value,
                   to_jsonb(n) -> 'window_limits' AS window_limits FROM new_rows n
            EXCEPT
            SELECT o.plan_id, o.feature_code, o.feature_value, o.feature_unit,
                   to_jsonb(o) -> 'config_value', to_jsonb(o) -> 'window_limits' FROM old_rows o
        ), renamed AS (
            SELECT g.plan_id, g.feature_code AS old_code, c.feature_code AS new_code
              FROM gone g JOIN came c
                ON c.plan_id = g.plan_id AND c.feature_value = g.feature_value
               AND c.feature_unit IS NOT DISTINCT FROM g.feature_unit
               AND c.config_value IS NOT DISTINCT FROM g.config_value
               AND c.window_limits IS NOT DISTINCT FROM g.window_limits
             WHERE g.feature_code <> ALL (coalesce(known, '{}'))
        )
        SELECT jsonb_agg(jsonb_build_object('plan_id', x.plan_id, 'feature_code', x.feature_code))
          INTO changed
          FROM (SELECT g.plan_id, g.feature_code FROM gone g
                 WHERE (g.plan_id, g.feature_code) NOT IN (SELECT r.plan_id, r.old_code FROM renamed r)
                UNION
                SELECT c.plan_id, c.feature_code FROM came c
                 WHERE (c.plan_id, c.feature_code) NOT IN (SELECT r.plan_id, r.new_code FROM renamed r)) x;
    END IF;
    IF changed IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH here SLICE 1 IN ARRAY places LOOP
        EXECUTE format(
            'WITH changed AS (
                 SELECT DISTINCT (c ->> ''plan_id'')::pg_catalog.int8 AS plan_id,
                        c ->> ''feature_code'' AS feature_code
                   FROM pg_catalog.jsonb_array_elements($1) AS c
             ), counting AS (%1$s
             ), affected AS (
                 SELECT c.user_id, c.plan_id FROM counting c
                  WHERE c.plan_id IN (SELECT ch.plan_id FROM changed ch)
             ), announce AS (
                 SELECT pg_catalog.format(''{"features":%%s,"plan_id":%%s,"users_affected":%%s}'',
                            pg_catalog.to_json(pg_catalog.array_agg(ch.feature_code ORDER BY ch.feature_code)),
                            ch.plan_id,
                            (SELECT pg_catalog.count(*) FROM affected a WHERE a.plan_id = ch.plan_id)) AS payload
                   FROM changed ch GROUP BY ch.plan_id ORDER BY ch.plan_id
             )%2$s',
            quota.counting_subscriptions_sql(
                here[1],
                'SELECT (c ->> ''plan_id'')::pg_catalog.int8 FROM pg_catalog.jsonb_array_elements($1) AS c'),
            quota.resync_storage_sql(
                here[2],
                'a.plan_id IN (SELECT ch.plan_id FROM changed ch WHERE ch.feature_code = ''storage_space'')'))
        USING changed;
    END LOOP;
    RETURN NULL;
END
$$;

-- The user_subscriptions tables whose custom_quotas name catalog features: quota's own and the
-- attached application's (both are validated against quota.features).
CREATE FUNCTION quota.custom_quotas_tables()
RETURNS regclass[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT ARRAY['quota.user_subscriptions'::regclass]
       || coalesce((SELECT array_agg(to_regclass(format('%I.user_subscriptions', st.attached_schema)))
                      FROM quota.settings st
                     WHERE to_regclass(format('%I.user_subscriptions', st.attached_schema)) IS NOT NULL),
                   '{}')
$$;

-- BEFORE DELETE on quota.features, FOR EACH ROW: a delete is refused while a subscription still
-- overrides the feature in custom_quotas. The key would stay behind, and the validation trigger
-- would then reject every later change of that document (adjust_quota of another feature
-- fails with "unknown feature"). BEFORE, so that this refusal, with its fix, comes first.
-- On a Citus cluster the trigger fires on each node's copy of the reference table (TG_RELID
-- is that copy), where a query of the distributed quota.user_subscriptions would be a
-- distributed query from a query on a shard, which Citus refuses: each node looks at the shards
-- of the subscriptions it holds, and together the nodes look at every one.
CREATE FUNCTION quota.features_delete_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t regclass;
    shards regclass[];
    shard regclass;
    overriding bigint;
    n bigint;
BEGIN
    FOREACH t IN ARRAY quota.custom_quotas_tables() LOOP
        overriding := 0;
        IF TG_RELID = 'quota.features'::regclass THEN
            shards := ARRAY[t];
        ELSE
            -- A node's copy on a Citus cluster, which has quota's own tables only.
            shards := ARRAY(SELECT s[1]::regclass FROM quota.local_shards(ARRAY['user_subscriptions']) s);
        END IF;
        FOREACH shard IN ARRAY shards LOOP
            EXECUTE format('SELECT count(*) FROM %s us WHERE us.custom_quotas ? $1', shard)
               INTO n USING OLD.code;
            overriding := overriding + n;
        END LOOP;
        IF overriding > 0 THEN
            RAISE EXCEPTION 'cannot delete feature %: % subscription(s) of % still override it in custom_quotas',
                            OLD.code, overriding, t
                USING ERRCODE = '23503',
                      HINT = format('Clear the key first: UPDATE %s SET custom_quotas = custom_quotas - %L WHERE custom_quotas ? %L;',
                                    t, OLD.code, OLD.code);
        END IF;
    END LOOP;
    RETURN OLD;
END
$$;

CREATE TRIGGER pg_entitlements_features_delete_guard
    BEFORE DELETE ON quota.features
    FOR EACH ROW EXECUTE FUNCTION quota.features_delete_guard();

-- AFTER INSERT, UPDATE or DELETE on quota.features, FOR EACH ROW (the catalog holds a handful
-- of rows; each row changed is one change, with one statement per table it touches):
--   * a rename rewrites the key in every custom_quotas document, audited in
--     quota.quota_adjustments (one row per subscription, reason 'feature renamed'), so that a
--     custom limit keeps applying under the new code (counters and plan rows follow by ON
--     UPDATE CASCADE);
--   * a change of what decides limits (code, unit, default_limit, reset_rule, kind,
--     default_value, window_limits), an insert or a delete announces quota_updated with the
--     number of users whose limit or value it decides, and, for
--     storage_space, resyncs their storage_quota_bytes.
-- The restore path (features_restore_builtin turns a dump's INSERT of a built-in feature into
-- an UPDATE) fires it only when the dump's row differs, and then touches storage rows that
-- exist only, with the values the loaded data gives.
CREATE FUNCTION quota.features_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    code text := CASE WHEN TG_OP = 'DELETE' THEN OLD.code ELSE NEW.code END;
    t regclass;
    -- Where the users are: user_subscriptions, plan_features and user_storage_usage, or on a
    -- Citus node the shards it holds and its copy of plan_features.
    places regclass[];
    here regclass[];
    -- A rename rewrites the key in the custom_quotas of %1$s, audited in %2$s; %3$s and %4$s
    -- name and give the audit row's id where the table has no identity (a Citus shard).
    rename_sql text := 'WITH renamed AS (
                            UPDATE %1$s us
                               SET custom_quotas = (us.custom_quotas - $1)
                                                   || jsonb_build_object($2, us.custom_quotas -> $1)
                             WHERE jsonb_typeof(us.custom_quotas) = ''object'' AND us.custom_quotas ? $1
                            RETURNING us.user_id, us.id, us.custom_quotas -> $2 AS value
                        )
                        INSERT INTO %2$s
                               (%3$suser_id, subscription_id, feature_code, old_value, new_value,
                                reason, actor, created_at)
                        SELECT %4$sr.user_id, r.id, $2, v.value, v.value, ''feature renamed'',
                               session_user, now()
                          FROM renamed r,
                               LATERAL (SELECT (r.value #>> ''{}'')::numeric::integer AS value) v';
    -- Which users the change decides (see `affected` below).
    default_moved boolean := TG_OP <> 'UPDATE' OR OLD.default_limit IS DISTINCT FROM NEW.default_limit
                             OR OLD.default_value IS DISTINCT FROM NEW.default_value;
    unit_moved boolean := TG_OP = 'UPDATE' AND OLD.unit IS DISTINCT FROM NEW.unit;
    -- A deleted feature had no custom value and no plan row left (the delete guard and the
    -- plan rows' foreign key see to it): it decided every user's limit by its default.
    all_moved boolean := TG_OP = 'DELETE'
                         OR (TG_OP = 'UPDATE' AND (OLD.code <> NEW.code
                                                   OR OLD.reset_rule IS DISTINCT FROM NEW.reset_rule
                                                   OR OLD.kind IS DISTINCT FROM NEW.kind
                                                   OR OLD.window_limits IS DISTINCT FROM NEW.window_limits));
BEGIN
    -- On a Citus cluster the trigger also fires on every node's copy (shard) of the reference
    -- table, where a statement on the distributed tables would be a distributed query from a
    -- query on a shard. There each node renames the key in the subscriptions of the shards it
    -- holds, audited in the shard of quota_adjustments of the same hash range, and resyncs and
    -- announces for the users of those shards, so that the nodes together act on every user.
    IF TG_RELID <> 'quota.features'::regclass THEN
        IF TG_OP = 'UPDATE' AND OLD.code <> NEW.code THEN
            FOR here IN SELECT s::regclass[] FROM quota.local_shards(
                            ARRAY['user_subscriptions', 'quota_adjustments']) s
            LOOP
                EXECUTE format(rename_sql, here[1], here[2], 'id, ',
                               'pg_catalog.nextval(pg_catalog.pg_get_serial_sequence(''quota.quota_adjustments'', ''id'')), ')
                    USING OLD.code, NEW.code;
            END LOOP;
        END IF;
        places := ARRAY(SELECT s::regclass[] FROM quota.local_shards(
                            ARRAY['user_subscriptions', 'plan_features', 'user_storage_usage']) s);
    ELSE
        IF TG_OP = 'UPDATE' AND OLD.code <> NEW.code THEN
            -- The row trigger pg_entitlements_sync_storage_quota recognises a document whose
            -- only change is this rename (quota.is_feature_rename in src/quota.rs): it decides
            -- the same limits, and it announces nothing.
            FOREACH t IN ARRAY quota.custom_quotas_tables() LOOP
                EXECUTE format(rename_sql, t, 'quota.quota_adjustments', '', '')
                    USING OLD.code, NEW.code;
            END LOOP;
        END IF;
        places := ARRAY[ARRAY[quota.bound_table('user_subscriptions'), quota.bound_table('plan_features'),
                              quota.bound_table('user_storage_usage')]];
    END IF;
    IF NOT (default_moved OR unit_moved OR all_moved) OR cardinality(places) = 0 THEN
        RETURN NULL;
    END IF;
    -- affected: the users with an active subscription whose limit of the feature the change
    -- decides: a default change or an insert those whose limit comes from the default
    -- (quota.limit_source, the precedence of entitlements_core::limit); a unit change those
    -- whose value is in the catalog's unit (custom values, the default, plan rows without
    -- feature_unit); a rename, a new reset rule or a delete all of them.
    FOREACH here SLICE 1 IN ARRAY places LOOP
        EXECUTE format(
            'WITH counting AS (%1$s
             ), affected AS (
                 SELECT c.user_id FROM counting c
                   LEFT JOIN %2$s pf
                          ON pf.plan_id::pg_catalog.int8 = c.plan_id AND pf.feature_code = $1
                  WHERE $4
                     OR ($2 AND quota.limit_source(c.user_id, $1) IN (''features.default_limit'',
                                                                      ''features.default_value''))
                     OR ($3 AND (quota.limit_source(c.user_id, $1) <> ''plan_features''
                                 OR pf.feature_unit IS NULL))
             ), announce AS (
                 SELECT pg_catalog.format(''{"feature_code":%%s,"features":%%s%%s,"users_affected":%%s}'',
                            pg_catalog.to_json($1::text), pg_catalog.to_json(ARRAY[$1::text]),
                            coalesce('',"renamed_from":'' || pg_catalog.to_json($5::text), ''''),
                            (SELECT pg_catalog.count(*) FROM affected)) AS payload
             )%3$s',
            quota.counting_subscriptions_sql(here[1], NULL),
            here[2],
            quota.resync_storage_sql(here[3], '$1 = ''storage_space'''))
        USING code, default_moved, unit_moved, all_moved,
              CASE WHEN TG_OP = 'UPDATE' AND OLD.code <> NEW.code THEN OLD.code END;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER pg_entitlements_features_changed
    AFTER INSERT OR UPDATE OR DELETE ON quota.features
    FOR EACH ROW EXECUTE FUNCTION quota.features_changed();

-- The three statement triggers of a plan_features table (a trigger with transition tables
-- fires for one kind of change only when OLD and NEW tables are both named).
CREATE FUNCTION quota.install_plan_features_triggers(target regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER pg_entitlements_plan_features_inserted
                        AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION quota.plan_features_changed()',
                   target);
    EXECUTE format('CREATE TRIGGER pg_entitlements_plan_features_updated
                        AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION quota.plan_features_changed()',
                   target);
    EXECUTE format('CREATE TRIGGER pg_entitlements_plan_features_deleted
                        AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION quota.plan_features_changed()',
                   target);
END
$$;
REVOKE EXECUTE ON FUNCTION quota.install_plan_features_triggers(regclass) FROM PUBLIC;

SELECT quota.install_plan_features_triggers('quota.plan_features');
