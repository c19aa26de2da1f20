-- Attaching to an application's own tables (for instance the seed application's in public).
--
-- quota.attach(schema) binds every quota function and the storage trigger to the tables
-- user_subscriptions, subscription_plans, plan_features, user_usage, usage_records and
-- user_storage_usage of that schema, instead of the extension's own. The feature catalog
-- (quota.features), settings and the adjustment audit stay in schema quota.
--
-- The binding decides which tables the SECURITY DEFINER writers write, so only attach() and
-- detach() change it (quota_admin may write quota.settings.time_zone and nothing else there),
-- and only a superuser may run them. The writers run their statements on bound tables as the
-- tables' owner, so that the application's triggers, rules and defaults on them run with the
-- rights of the role that wrote them, never with the extension owner's: attach() refuses
-- tables that are not ordinary tables of one owner in a permanent schema, and grants that
-- owner what the writers need in schema quota.

-- What an application's tables lack for the functions, with the statement that fixes each.
CREATE FUNCTION quota.attach_problems(target_schema name)
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

-- Binds the functions and the storage trigger to target_schema's tables, or refuses with one
-- message listing every problem and the statement that fixes it. Superusers only: the binding
-- decides what the SECURITY DEFINER writers write, and the application's triggers, rules and
-- defaults on the bound tables run in every writer's statement (as the tables' owner).
CREATE FUNCTION quota.attach(target_schema name)
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

-- Goes back to the extension's own tables, removes the triggers attach() installed and revokes
-- what it granted. Superusers only, as attach().
CREATE FUNCTION quota.detach()
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

REVOKE EXECUTE ON FUNCTION quota.attach(name), quota.detach() FROM PUBLIC;
