-- pg_entitlements 0.2.0 → 0.3.0, run by ALTER EXTENSION pg_entitlements UPDATE.
--
-- The library is replaced before this script runs, so every C function 0.2.0 created already
-- runs the new code; this script brings the SQL objects to what a fresh 0.3.0 install creates.

-- Privileges hold against the extension's own roles (issue 13; sql/privileges.sql,
-- sql/attach.sql). A database attached under 0.2.0 is refused: the writers now run as the owner
-- of the attached tables, which attach() grants what they need in schema quota; granted inside
-- this script, those grants would count as the extension's initial privileges (pg_init_privs),
-- which pg_dump leaves out. Detaching and attaching again around the update, in one transaction,
-- leaves no moment in which the functions read other tables.
DO $$
DECLARE
    attached name := (SELECT st.attached_schema FROM quota.settings st);
BEGIN
    IF attached IS NOT NULL THEN
        RAISE EXCEPTION 'pg_entitlements is attached to schema %: detach it before this update and attach it again after',
                        quote_ident(attached)
            USING ERRCODE = '55000',
                  HINT = pg_catalog.format('Run, in one transaction: BEGIN; SELECT quota.detach(); ALTER EXTENSION pg_entitlements UPDATE; SELECT quota.attach(%L); COMMIT;',
                                           attached);
    END IF;
END
$$;

-- quota_admin keeps the time zone of quota.settings, and no longer the binding.
REVOKE INSERT, UPDATE, DELETE ON quota.settings FROM quota_admin;
GRANT INSERT (singleton, time_zone), UPDATE (time_zone) ON quota.settings TO quota_admin;

-- What attach() granted the owner of the attached tables, for detach() to revoke.
ALTER TABLE quota.settings ADD COLUMN attached_owner regrole, ADD COLUMN attached_grants text[];

-- The login role of the session of every adjustment. Rows audited before this update get the
-- login role that runs it: 0.2.0 did not record theirs.
ALTER TABLE quota.quota_adjustments ADD COLUMN session_role text NOT NULL DEFAULT session_user;

-- attach_problems() refuses temporary schemas, tables that are not ordinary tables and tables
-- of another owner than user_subscriptions'; attach() and detach() are for superusers only,
-- name the application's triggers and rules, and grant and revoke what the writers need.
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
    owner regrole := (SELECT c.relowner::regrole FROM pg_class c
                       WHERE c.oid = to_regclass(format('%I.user_subscriptions', target_schema)));
BEGIN
    -- Any role with TEMP on the database creates its own temporary schema and tables in it,
    -- and the schema ends with that role's session: never a binding. pg_temp is the alias of
    -- the caller's own; names beginning with pg_ are reserved, so these are the temporary ones.
    IF target_schema = 'pg_temp' OR target_schema ~ '^pg_(toast_)?temp_[0-9]+$' THEN
        problem := format('schema %I is a temporary schema: it belongs to one session, which any role with TEMP may open',
                          target_schema);
        fix := NULL;
        RETURN NEXT;
        RETURN;
    END IF;

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
            ('user_usage',         'alerted_limit',      '{int8}', 'bigint'),
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

    -- The writers run their statements on these tables as the owner of user_subscriptions:
    -- each must be a plain table (a view or foreign table runs code of its own) of that owner.
    FOR req IN
        SELECT t.tbl, c.oid::regclass AS rel, c.relkind, c.relowner::regrole AS relowner
          FROM unnest(ARRAY['user_subscriptions', 'subscription_plans', 'plan_features',
                            'user_usage', 'usage_records', 'user_storage_usage']) AS t (tbl)
          LEFT JOIN pg_class c ON c.oid = to_regclass(format('%I.%I', target_schema, t.tbl))
    LOOP
        IF req.rel IS NULL THEN
            problem := format('table %I.%I does not exist', target_schema, req.tbl);
            fix := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF req.relkind <> 'r' THEN
            problem := format('%s is %s, not an ordinary table', req.rel,
                              CASE req.relkind WHEN 'v' THEN 'a view'
                                               WHEN 'm' THEN 'a materialized view'
                                               WHEN 'f' THEN 'a foreign table'
                                               WHEN 'p' THEN 'a partitioned table'
                                               ELSE format('of kind %L', req.relkind) END);
            fix := NULL;
            RETURN NEXT;
        END IF;
        IF req.relowner <> owner THEN
            problem := format('%s is owned by %s, not by %s, the owner of %I.user_subscriptions, as whom the writers run',
                              req.rel, req.relowner, owner, target_schema);
            fix := format('ALTER TABLE %s OWNER TO %s', req.rel, owner);
            RETURN NEXT;
        END IF;
    END LOOP;

    -- The unique keys ON CONFLICT and idempotency rely on. A key on a nullable column may be
    -- partial, unique only where that column IS NOT NULL: a NULL never conflicts anyway.
    FOR req IN
        SELECT * FROM (VALUES
            ('user_usage', '{user_id,feature_code,period_start}', NULL),
            -- The direct reads keep one plan per id and one value per plan and feature.
            ('subscription_plans', '{id}', NULL),
            ('plan_features', '{plan_id,feature_code}', NULL),
            ('user_storage_usage', '{user_id}', NULL),
            ('usage_records', '{user_id,idempotency_key}', 'idempotency_key'),
            ('usage_records', '{user_id,refund_of}', 'refund_of')
        ) AS r (tbl, cols, nullable)
    LOOP
        rel := to_regclass(format('%I.%I', target_schema, req.tbl));
        -- Only a table has indexes; any other relation is reported as such above.
        CONTINUE WHEN rel IS NULL OR (SELECT c.relkind FROM pg_class c WHERE c.oid = rel) <> 'r';
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

CREATE OR REPLACE FUNCTION quota.attach(target_schema name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problems text;
    subs regclass;
    owner regrole;
    owner_is_superuser boolean;
    needed record;
    granted text[] := '{}';
    other record;
    backfilled bigint;
BEGIN
    -- EXECUTE is revoked from PUBLIC; this also holds for a role it was granted to.
    IF NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user), false) THEN
        RAISE EXCEPTION 'permission denied to attach pg_entitlements to schema %: role % is not a superuser',
                        quote_ident(target_schema), quote_ident(current_user)
            USING ERRCODE = '42501',
                  HINT = 'The binding decides which tables the writing functions write with the extension owner''s rights; a superuser runs quota.attach() after reviewing the schema.';
    END IF;
    IF target_schema = 'quota' THEN
        RAISE EXCEPTION 'schema quota holds the extension''s own tables; use quota.detach()'
            USING ERRCODE = '22023';
    END IF;
    -- attach_problems() says why; nothing fixes it, so it is refused before anything else.
    IF target_schema = 'pg_temp' OR target_schema ~ '^pg_(toast_)?temp_[0-9]+$' THEN
        RAISE EXCEPTION 'cannot attach pg_entitlements to temporary schema %', quote_ident(target_schema)
            USING ERRCODE = '22023',
                  HINT = 'A temporary schema belongs to one session, which any role with TEMP may open: attach a permanent schema.';
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
    SELECT c.relowner::regrole, r.rolsuper INTO owner, owner_is_superuser
      FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
     WHERE c.oid = subs;

    -- Code of the application's that runs in the writers' statements: with the owner's rights.
    FOR other IN
        SELECT 'trigger' AS kind, t.tgname AS name, t.tgrelid::regclass AS rel
          FROM pg_trigger t
         WHERE NOT t.tgisinternal
           AND t.tgrelid IN (SELECT format('%I.%I', target_schema, n)::regclass
                               FROM unnest(ARRAY['user_subscriptions', 'subscription_plans',
                                                 'plan_features', 'user_usage', 'usage_records',
                                                 'user_storage_usage']) AS n)
        UNION ALL
        SELECT 'rule', r.rulename, r.ev_class::regclass
          FROM pg_rewrite r
         WHERE r.ev_class IN (SELECT format('%I.%I', target_schema, n)::regclass
                                FROM unnest(ARRAY['user_subscriptions', 'subscription_plans',
                                                  'plan_features', 'user_usage', 'usage_records',
                                                  'user_storage_usage']) AS n)
         ORDER BY 1, 3, 2
    LOOP
        RAISE NOTICE '% % on % is the application''s own and stays: it fires on pg_entitlements'' writes too and runs with the rights of the tables'' owner %',
            other.kind, quote_ident(other.name), other.rel, owner;
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

    -- What the writers, running as the owner, use in schema quota: the settings and the
    -- catalog, and the audit adjust_quota writes (without session_role, which keeps its
    -- default, the session's login role). The triggers they fire are C functions, whose EXECUTE
    -- privilege is checked when a trigger is created, not when it fires. Only what the owner
    -- does not hold directly already is granted, and recorded for detach() to revoke.
    IF owner_is_superuser THEN
        RAISE NOTICE 'the tables'' owner % is a superuser: the application''s triggers, rules and defaults on them run as a superuser',
            owner;
    ELSE
        FOR needed IN
            SELECT * FROM (VALUES
                ('USAGE ON SCHEMA quota',
                 EXISTS (SELECT FROM pg_namespace n, aclexplode(n.nspacl) a
                          WHERE n.nspname = 'quota' AND a.grantee = owner
                            AND a.privilege_type = 'USAGE')),
                ('SELECT ON TABLE quota.settings',
                 EXISTS (SELECT FROM pg_class c, aclexplode(c.relacl) a
                          WHERE c.oid = 'quota.settings'::regclass AND a.grantee = owner
                            AND a.privilege_type = 'SELECT')),
                ('SELECT ON TABLE quota.features',
                 EXISTS (SELECT FROM pg_class c, aclexplode(c.relacl) a
                          WHERE c.oid = 'quota.features'::regclass AND a.grantee = owner
                            AND a.privilege_type = 'SELECT')),
                ('INSERT (user_id, subscription_id, feature_code, old_value, new_value, reason, actor, created_at) ON TABLE quota.quota_adjustments',
                 EXISTS (SELECT FROM pg_class c, aclexplode(c.relacl) a
                          WHERE c.oid = 'quota.quota_adjustments'::regclass AND a.grantee = owner
                            AND a.privilege_type = 'INSERT')
                 OR NOT EXISTS (
                     SELECT FROM pg_attribute att
                      WHERE att.attrelid = 'quota.quota_adjustments'::regclass
                        AND att.attname IN ('user_id', 'subscription_id', 'feature_code',
                                            'old_value', 'new_value', 'reason', 'actor',
                                            'created_at')
                        AND NOT EXISTS (SELECT FROM aclexplode(att.attacl) a
                                         WHERE a.grantee = owner AND a.privilege_type = 'INSERT')))
            ) AS g (privilege, held)
        LOOP
            CONTINUE WHEN needed.held;
            EXECUTE format('GRANT %s TO %s', needed.privilege, owner);
            granted := granted || needed.privilege;
        END LOOP;
        IF granted <> '{}' THEN
            RAISE NOTICE 'granted % to %, the tables'' owner, as whom the writers run; detach() revokes them',
                array_to_string(granted, '; '), owner;
        END IF;
    END IF;

    -- The application's usage records from before name no period (the column exists for the
    -- ledger); each gets the period of the counter whose [period_start, period_end) holds its
    -- created_at, so that the ledger holds from the start and such a record can be refunded.
    -- A record no counter holds keeps NULL and is left out of the ledger. Nothing else of the
    -- application's data is written.
    EXECUTE format($q$
        UPDATE %1$I.usage_records r SET period_start = u.period_start
          FROM %1$I.user_usage u
         WHERE r.period_start IS NULL AND u.user_id = r.user_id
           AND u.feature_code = r.feature_code
           AND r.created_at >= u.period_start AND r.created_at < u.period_end$q$, target_schema);
    GET DIAGNOSTICS backfilled = ROW_COUNT;
    IF backfilled > 0 THEN
        RAISE NOTICE '% usage records written before attaching now name the period of their counter',
            backfilled;
    END IF;

    PERFORM quota.install_triggers(subs);
    PERFORM quota.install_cache_trigger(format('%I.%I', target_schema, t)::regclass)
       FROM unnest(ARRAY['subscription_plans', 'plan_features']) AS t;
    PERFORM quota.install_plan_features_triggers(format('%I.plan_features', target_schema)::regclass);
    INSERT INTO quota.settings (attached_schema, attached_owner, attached_grants)
    VALUES (target_schema, owner, granted)
    ON CONFLICT (singleton) DO UPDATE
       SET attached_schema = EXCLUDED.attached_schema, attached_owner = EXCLUDED.attached_owner,
           attached_grants = EXCLUDED.attached_grants;
    RAISE NOTICE 'pg_entitlements now uses the tables of schema %', quote_ident(target_schema);
END
$$;

CREATE OR REPLACE FUNCTION quota.detach()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    binding record;
    subs regclass;
    t regclass;
    privilege text;
BEGIN
    IF NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user), false) THEN
        RAISE EXCEPTION 'permission denied to detach pg_entitlements: role % is not a superuser',
                        quote_ident(current_user)
            USING ERRCODE = '42501',
                  HINT = 'The binding decides which tables the writing functions write with the extension owner''s rights; a superuser runs quota.detach().';
    END IF;
    SELECT st.attached_schema, st.attached_owner, st.attached_grants INTO binding
      FROM quota.settings st;
    IF binding.attached_schema IS NULL THEN
        RETURN;
    END IF;
    subs := to_regclass(format('%I.user_subscriptions', binding.attached_schema));
    IF subs IS NOT NULL THEN
        EXECUTE format('DROP TRIGGER IF EXISTS pg_entitlements_validate_custom_quotas ON %s', subs);
        EXECUTE format('DROP TRIGGER IF EXISTS pg_entitlements_sync_storage_quota ON %s', subs);
        EXECUTE format('DROP TRIGGER IF EXISTS pg_entitlements_wait_for_uses ON %s', subs);
    END IF;
    FOR t IN SELECT to_regclass(format('%I.%I', binding.attached_schema, n))
               FROM unnest(ARRAY['subscription_plans', 'plan_features']) AS n
    LOOP
        IF t IS NOT NULL THEN
            EXECUTE format('DROP TRIGGER IF EXISTS pg_entitlements_invalidate_cache ON %s', t);
        END IF;
    END LOOP;
    t := to_regclass(format('%I.plan_features', binding.attached_schema));
    IF t IS NOT NULL THEN
        EXECUTE format('DROP TRIGGER IF EXISTS pg_entitlements_plan_features_inserted ON %s', t);
        EXECUTE format('DROP TRIGGER IF EXISTS pg_entitlements_plan_features_updated ON %s', t);
        EXECUTE format('DROP TRIGGER IF EXISTS pg_entitlements_plan_features_deleted ON %s', t);
    END IF;
    -- Exactly what attach() granted: what the owner held before stays.
    FOREACH privilege IN ARRAY coalesce(binding.attached_grants, '{}') LOOP
        EXECUTE format('REVOKE %s FROM %s', privilege, binding.attached_owner);
    END LOOP;
    UPDATE quota.settings
       SET attached_schema = NULL, attached_owner = NULL, attached_grants = NULL;
END
$$;

COMMENT ON FUNCTION quota.attach(name) IS
    'Superusers only. Binds every quota function and the storage trigger to the application '
    'tables of a schema (user_subscriptions, subscription_plans, plan_features, user_usage, '
    'usage_records, user_storage_usage), or refuses with one message listing each problem and '
    'its fix. The writers then run as the tables'' owner, which is granted what they need in '
    'schema quota; a NOTICE names each trigger and rule of the application''s on the tables.';

COMMENT ON FUNCTION quota.detach() IS
    'Superusers only. Binds the quota functions to the extension''s own tables again, removes '
    'the triggers attach() installed and revokes what it granted.';

COMMENT ON COLUMN quota.settings.attached_owner IS
    'Written by quota.attach() and quota.detach() only: the owner of the attached tables, as '
    'whom the writers run.';

COMMENT ON COLUMN quota.settings.attached_grants IS
    'Written by quota.attach() and quota.detach() only: the privileges attach() granted '
    'attached_owner in schema quota, which detach() revokes.';

COMMENT ON COLUMN quota.quota_adjustments.actor IS
    'Free text the caller of adjust_quota or clear_custom_quota passed (its current_user by '
    'default): who it says acted. session_role is who did.';

COMMENT ON COLUMN quota.quota_adjustments.session_role IS
    'The login role (session_user) of the session that made the change; neither the SECURITY '
    'DEFINER writer nor SET ROLE changes it, and the caller cannot choose it.';

-- No data loss by a single command: DROP EXTENSION pg_entitlements (or DROP SCHEMA quota)
-- refuses while the extension's tables hold rows (sql/drop_guard.sql).
CREATE FUNCTION quota.guard_drop() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'guard_drop';

CREATE EVENT TRIGGER pg_entitlements_guard_drop ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA')
    EXECUTE FUNCTION quota.guard_drop();


COMMENT ON FUNCTION quota.guard_drop() IS
'Event trigger function of pg_entitlements_guard_drop: refuses DROP EXTENSION pg_entitlements and DROP SCHEMA quota while the extension''s tables hold subscriptions, counters, usage records or adjustments, unless pg_entitlements.allow_drop_with_data is on.';
COMMENT ON EVENT TRIGGER pg_entitlements_guard_drop IS
'Refuses to drop pg_entitlements with its data in one command; see quota.guard_drop().';

-- Alerts are judged against the limit in force at the time of the use (issue 14, item 8): the
-- counter remembers the limit its highest announced threshold was judged against.
-- attach_problems() above lists the column for an attached application's user_usage.
ALTER TABLE quota.user_usage ADD COLUMN alerted_limit bigint;
-- A counter of the current period that announced an alert gets the limit in force now, the one
-- its alerts were judged against unless it changed since (0.2.0 did not remember). Any other
-- (an older period, a counter whose limit cannot be read) keeps NULL: a memory that applies to
-- any limit, so the update announces nothing twice. One row at a time, so that one counter
-- whose subscription cannot be read leaves only that counter as it was.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT u.user_id, u.feature_code, u.period_start
               FROM quota.user_usage u WHERE u.alerted_percent > 0
    LOOP
        BEGIN
            UPDATE quota.user_usage u
               SET alerted_limit = (SELECT q.quota_limit
                                      FROM quota.check_user_quota(c.user_id, c.feature_code) q)
             WHERE u.user_id = c.user_id AND u.feature_code = c.feature_code
               AND u.period_start = c.period_start
               AND u.period_start = (SELECT p.period_start
                                       FROM quota.get_quota_period(c.user_id, c.feature_code) p);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END LOOP;
END
$$;


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
-- (RETURNING shows only the new one). STABLE for the regclass, as above.
CREATE FUNCTION quota.resync_storage_sql(storage_table regclass, storage text)
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
           SET storage_quota_bytes = t.bytes, updated_at = pg_catalog.now()
          FROM target t, %1$s o
         WHERE s.user_id = t.user_id AND o.user_id = t.user_id
           AND s.storage_quota_bytes IS DISTINCT FROM t.bytes
        RETURNING t.user_id, o.storage_quota_bytes AS old_bytes, t.bytes AS new_bytes
    )
    SELECT (SELECT pg_catalog.count(pg_catalog.pg_notify(''quota_updated'', a.payload))
              FROM announce a),
           (SELECT pg_catalog.count(pg_catalog.pg_notify(''storage_quota_changed'',
                       pg_catalog.format(''{"new_bytes":%%s,"old_bytes":%%s,"user_id":%%s}'',
                                         m.new_bytes, m.old_bytes, m.user_id)))
              FROM (SELECT * FROM moved ORDER BY user_id) m)',
    storage_table, storage)
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
-- the one the functions do not read decides nothing and does nothing.
CREATE FUNCTION quota.plan_features_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed jsonb;
BEGIN
    IF TG_RELID <> quota.bound_table('plan_features') THEN
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
        WITH gone AS (
            SELECT o.plan_id::bigint AS plan_id, o.feature_code::text AS feature_code,
                   o.feature_value, o.feature_unit::text AS feature_unit FROM old_rows o
            EXCEPT
            SELECT n.plan_id, n.feature_code, n.feature_value, n.feature_unit FROM new_rows n
        ), came AS (
            SELECT n.plan_id::bigint AS plan_id, n.feature_code::text AS feature_code,
                   n.feature_value, n.feature_unit::text AS feature_unit FROM new_rows n
            EXCEPT
            SELECT o.plan_id, o.feature_code, o.feature_value, o.feature_unit FROM old_rows o
        ), renamed AS (
            SELECT g.plan_id, g.feature_code AS old_code, c.feature_code AS new_code
              FROM gone g JOIN came c
                ON c.plan_id = g.plan_id AND c.feature_value = g.feature_value
               AND c.feature_unit IS NOT DISTINCT FROM g.feature_unit
             WHERE NOT EXISTS (SELECT FROM quota.features f WHERE f.code = g.feature_code)
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
            quota.bound_table('user_subscriptions'),
            'SELECT (c ->> ''plan_id'')::pg_catalog.int8 FROM pg_catalog.jsonb_array_elements($1) AS c'),
        quota.resync_storage_sql(
            quota.bound_table('user_storage_usage'),
            'a.plan_id IN (SELECT ch.plan_id FROM changed ch WHERE ch.feature_code = ''storage_space'')'))
    USING changed;
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
CREATE FUNCTION quota.features_delete_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t regclass;
    overriding bigint;
BEGIN
    FOREACH t IN ARRAY quota.custom_quotas_tables() LOOP
        EXECUTE format('SELECT count(*) FROM %s us WHERE us.custom_quotas ? $1', t)
           INTO overriding USING OLD.code;
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
--   * a change of what decides limits (code, unit, default_limit, reset_rule), an insert or a
--     delete announces quota_updated with the number of users whose limit it decides, and, for
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
    -- Which users the change decides (see `affected` below).
    default_moved boolean := TG_OP <> 'UPDATE' OR OLD.default_limit IS DISTINCT FROM NEW.default_limit;
    unit_moved boolean := TG_OP = 'UPDATE' AND OLD.unit IS DISTINCT FROM NEW.unit;
    -- A deleted feature had no custom value and no plan row left (the delete guard and the
    -- plan rows' foreign key see to it): it decided every user's limit by its default.
    all_moved boolean := TG_OP = 'DELETE'
                         OR (TG_OP = 'UPDATE' AND (OLD.code <> NEW.code
                                                   OR OLD.reset_rule IS DISTINCT FROM NEW.reset_rule));
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.code <> NEW.code THEN
        -- The row trigger pg_entitlements_sync_storage_quota recognises a document whose only
        -- change is this rename (quota.is_feature_rename in src/quota.rs): it decides the same
        -- limits, and it announces nothing.
        FOREACH t IN ARRAY quota.custom_quotas_tables() LOOP
            EXECUTE format(
                'WITH renamed AS (
                     UPDATE %s us
                        SET custom_quotas = (us.custom_quotas - $1)
                                            || jsonb_build_object($2, us.custom_quotas -> $1)
                      WHERE jsonb_typeof(us.custom_quotas) = ''object'' AND us.custom_quotas ? $1
                     RETURNING us.user_id, us.id, us.custom_quotas -> $2 AS value
                 )
                 INSERT INTO quota.quota_adjustments
                        (user_id, subscription_id, feature_code, old_value, new_value, reason,
                         actor, created_at)
                 SELECT r.user_id, r.id, $2, v.value, v.value, ''feature renamed'',
                        session_user, now()
                   FROM renamed r,
                        LATERAL (SELECT (r.value #>> ''{}'')::numeric::integer AS value) v', t)
                USING OLD.code, NEW.code;
        END LOOP;
    END IF;
    IF NOT (default_moved OR unit_moved OR all_moved) THEN
        RETURN NULL;
    END IF;
    -- affected: the users with an active subscription whose limit of the feature the change
    -- decides: a default change or an insert those whose limit comes from the default
    -- (quota.limit_source, the precedence of entitlements_core::limit); a unit change those
    -- whose value is in the catalog's unit (custom values, the default, plan rows without
    -- feature_unit); a rename, a new reset rule or a delete all of them.
    EXECUTE format(
        'WITH counting AS (%1$s
         ), affected AS (
             SELECT c.user_id FROM counting c
               LEFT JOIN %2$s pf
                      ON pf.plan_id::pg_catalog.int8 = c.plan_id AND pf.feature_code = $1
              WHERE $4
                 OR ($2 AND quota.limit_source(c.user_id, $1) = ''features.default_limit'')
                 OR ($3 AND (quota.limit_source(c.user_id, $1) <> ''plan_features''
                             OR pf.feature_unit IS NULL))
         ), announce AS (
             SELECT pg_catalog.format(''{"feature_code":%%s,"features":%%s%%s,"users_affected":%%s}'',
                        pg_catalog.to_json($1::text), pg_catalog.to_json(ARRAY[$1::text]),
                        coalesce('',"renamed_from":'' || pg_catalog.to_json($5::text), ''''),
                        (SELECT pg_catalog.count(*) FROM affected)) AS payload
         )%3$s',
        quota.counting_subscriptions_sql(quota.bound_table('user_subscriptions'), NULL),
        quota.bound_table('plan_features'),
        quota.resync_storage_sql(quota.bound_table('user_storage_usage'),
                                 '$1 = ''storage_space'''))
    USING code, default_moved, unit_moved, all_moved,
          CASE WHEN TG_OP = 'UPDATE' AND OLD.code <> NEW.code THEN OLD.code END;
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

-- A feature rename by an admin tool audits each rewritten key (sql/privileges.sql).
GRANT INSERT (user_id, subscription_id, feature_code, old_value, new_value, reason, actor,
              created_at)
   ON quota.quota_adjustments TO quota_admin;

-- Two reading functions that give SQL the rules every read follows (sql/catalog.sql uses them
-- instead of stating them again).
CREATE FUNCTION quota.counting_plan("user_id" bigint) RETURNS bigint
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'counting_plan_wrapper';
CREATE FUNCTION quota.limit_source("user_id" bigint, "feature_code" TEXT) RETURNS TEXT
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'limit_source_wrapper';

COMMENT ON FUNCTION quota.counting_plan(bigint) IS
'The plan of the subscription that counts for the user now (status active, start_date <= now() < end_date, latest end_date, then highest id), NULL without one; the rules every read follows, for SQL that needs them (the catalog triggers).';
COMMENT ON FUNCTION quota.limit_source(bigint, text) IS
'Where the user''s limit of a feature comes from now: custom_quotas, plan_features or features.default_limit; NULL without an active subscription or without any limit.';
COMMENT ON FUNCTION quota.counting_subscriptions_sql(regclass, text) IS
'Internal to the catalog triggers: the query of the plan that counts for each user with an active subscription (on the given plans).';
COMMENT ON FUNCTION quota.resync_storage_sql(regclass, text) IS
'Internal to the catalog triggers: the statement tail that resyncs storage_quota_bytes and announces the change.';
COMMENT ON FUNCTION quota.bound_table(text) IS
'The table of that name the functions use: the attached application''s after quota.attach(), else quota''s.';
COMMENT ON FUNCTION quota.plan_features_changed() IS
'Statement trigger on plan_features: resyncs the storage quota of the users a plan change decides and announces the change.';
COMMENT ON FUNCTION quota.custom_quotas_tables() IS
'The user_subscriptions tables whose custom_quotas name catalog features: quota''s and the attached application''s.';
COMMENT ON FUNCTION quota.features_delete_guard() IS
'Refuses to delete a feature while a subscription still overrides it in custom_quotas.';
COMMENT ON FUNCTION quota.features_changed() IS
'Row trigger on quota.features: a rename rewrites custom_quotas keys (audited); a change of what decides limits is announced and resyncs storage.';
COMMENT ON FUNCTION quota.install_plan_features_triggers(regclass) IS
'Installs the three statement triggers that follow changes of a plan_features table.';

-- Usage that never resets belongs to the user, not to a subscription row (issue 14, item 1):
-- reset rule subscription (platform_accounts, storage_space) is one counter per user and
-- feature, from -infinity to infinity, like never. Counters of 0.2.0, one per subscription,
-- and their usage records move there, adding up.
UPDATE quota.usage_records r SET period_start = '-infinity'
  FROM quota.features f
 WHERE f.code = r.feature_code AND f.reset_rule = 'subscription'
   AND r.period_start <> '-infinity';
WITH moved AS (
    DELETE FROM quota.user_usage u
     USING quota.features f
     WHERE f.code = u.feature_code AND f.reset_rule = 'subscription'
       AND u.period_start <> '-infinity'
    RETURNING u.user_id, u.feature_code, u.usage_count, u.alerted_percent, u.last_reset_at,
              u.updated_at
)
INSERT INTO quota.user_usage AS u
       (user_id, feature_code, period_start, period_end, usage_count, alerted_percent,
        last_reset_at, updated_at)
SELECT m.user_id, m.feature_code, '-infinity', 'infinity', sum(m.usage_count),
       max(m.alerted_percent), min(m.last_reset_at), max(m.updated_at)
  FROM moved m GROUP BY m.user_id, m.feature_code
ON CONFLICT (user_id, feature_code, period_start) DO UPDATE
   SET usage_count = u.usage_count + EXCLUDED.usage_count,
       alerted_percent = greatest(u.alerted_percent, EXCLUDED.alerted_percent),
       updated_at = greatest(u.updated_at, EXCLUDED.updated_at);

-- A use locks its counter and nothing of the subscription, no longer the subscription row
-- FOR NO KEY UPDATE (issue 14, item 5): a use of another feature, record_feature_usage and an
-- UPDATE of the row that decides nothing no longer wait for an open use. A change of what
-- decides a limit or a period locks the counters of the features it can move first, through
-- a third trigger on user_subscriptions (sql/triggers.sql), which quota.install_triggers() now
-- creates too (detach() above drops it); a use that waited for one asks row_is_current()
-- whether the subscription it read still stands.
CREATE FUNCTION quota.row_is_current("rel" oid, "version" tid) RETURNS bool
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'row_is_current_wrapper';
CREATE FUNCTION quota.wait_for_uses()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- The features whose counters to lock; NULL: every feature.
    features text[];
    users bigint[] := ARRAY[OLD.user_id];
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (OLD.plan_id, OLD.status, OLD.start_date, OLD.end_date, OLD.quota_reset_anchor,
            OLD.quota_cycle_type, OLD.user_id)
           IS NOT DISTINCT FROM
           (NEW.plan_id, NEW.status, NEW.start_date, NEW.end_date, NEW.quota_reset_anchor,
            NEW.quota_cycle_type, NEW.user_id) THEN
            IF OLD.custom_quotas IS NOT DISTINCT FROM NEW.custom_quotas THEN
                RETURN NEW;
            END IF;
            IF coalesce(jsonb_typeof(OLD.custom_quotas), 'object') = 'object'
               AND coalesce(jsonb_typeof(NEW.custom_quotas), 'object') = 'object' THEN
                SELECT coalesce(array_agg(key), '{}') INTO features
                  FROM jsonb_each(coalesce(OLD.custom_quotas, '{}')) o
                  FULL JOIN jsonb_each(coalesce(NEW.custom_quotas, '{}')) n USING (key)
                 WHERE o.value IS DISTINCT FROM n.value;
            END IF;
        ELSIF NEW.user_id IS DISTINCT FROM OLD.user_id THEN
            users := users || NEW.user_id::bigint;
        END IF;
    END IF;
    IF TG_TABLE_SCHEMA = 'quota' THEN
        PERFORM FROM quota.user_usage u
         WHERE u.user_id = ANY (users) AND (features IS NULL OR u.feature_code = ANY (features))
           AND u.period_end > now()
         ORDER BY u.user_id, u.feature_code, u.period_start FOR UPDATE OF u;
    ELSE
        -- An attached application's table: its own counters, by the same statement.
        EXECUTE format(
            'SELECT FROM %I.user_usage u
              WHERE u.user_id = ANY ($1) AND ($2 IS NULL OR u.feature_code = ANY ($2))
                AND u.period_end > now()
              ORDER BY u.user_id, u.feature_code, u.period_start FOR UPDATE OF u',
            TG_TABLE_SCHEMA)
        USING users, features;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE FUNCTION quota.install_triggers(subscriptions regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER pg_entitlements_validate_custom_quotas
                        BEFORE INSERT OR UPDATE OF custom_quotas ON %s
                        FOR EACH ROW EXECUTE FUNCTION quota.validate_custom_quotas()',
                   subscriptions);
    EXECUTE format('CREATE TRIGGER pg_entitlements_sync_storage_quota
                        AFTER INSERT OR DELETE OR UPDATE OF custom_quotas, plan_id, status,
                              start_date, end_date, user_id ON %s
                        FOR EACH ROW EXECUTE FUNCTION quota.sync_storage_quota()',
                   subscriptions);
    EXECUTE format('CREATE TRIGGER pg_entitlements_wait_for_uses
                        BEFORE DELETE OR UPDATE OF custom_quotas, plan_id, status, start_date,
                              end_date, quota_reset_anchor, quota_cycle_type, user_id ON %s
                        FOR EACH ROW EXECUTE FUNCTION quota.wait_for_uses()',
                   subscriptions);
END
$$;
CREATE TRIGGER pg_entitlements_wait_for_uses
    BEFORE DELETE OR UPDATE OF custom_quotas, plan_id, status, start_date,
          end_date, quota_reset_anchor, quota_cycle_type, user_id ON quota.user_subscriptions
    FOR EACH ROW EXECUTE FUNCTION quota.wait_for_uses();
COMMENT ON FUNCTION quota.wait_for_uses() IS
    'Trigger: before a change of what decides a limit or a period of a subscription, locks the '
    'user''s counters of the features it can move (current periods), so that the change waits '
    'for their open uses and uses that come while it is open wait for it.';
COMMENT ON FUNCTION quota.row_is_current(oid, tid) IS
    'Whether a row version (ctid) of a table is still the committed one now, whatever the '
    'caller''s snapshot; the writers ask it of the subscription they read, once their counter '
    'is locked.';
COMMENT ON FUNCTION quota.install_triggers(regclass) IS
    'Creates the extension''s triggers pg_entitlements_validate_custom_quotas, '
    'pg_entitlements_sync_storage_quota and pg_entitlements_wait_for_uses on a '
    'user_subscriptions table (used by CREATE EXTENSION and quota.attach()).';
