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

-- What an application's tables lack for the functions, and the rows of theirs the functions
-- cannot rely on. Attaching is for a database in use, so the only fixes proposed are the ones
-- that add without rewriting and without changing what the data means: a column that is
-- nullable or has a constant default (a catalog change), a unique index built CONCURRENTLY.
-- Each row says the lock its fix takes, whether the fix reads or rewrites the table and whether
-- it may run in a transaction block. A column of a type the functions cannot read is reported
-- with no fix and why: converting it (ALTER COLUMN ... TYPE) rewrites the table under ACCESS
-- EXCLUSIVE, and for timestamp without time zone would also guess the zone of its values, so
-- the caller says the zone instead (local_time_zone) and the columns stay as they are.
-- The checks of rows read every row of the six tables (ACCESS SHARE: writers go on). A row
-- problem has bad_rows set, the first 20 user and row ids, and a query that shows the rows.
-- A problem with needed_for set concerns only that optional feature (idempotency_keys,
-- refunds, alerts, booster_packs, reservations,
-- soft_limits, rollover, windows): attach() goes on without it, and the calls that need it are
-- refused.
CREATE FUNCTION quota.attach_problems(target_schema name, local_time_zone text DEFAULT NULL)
RETURNS TABLE (problem text, fix text, fix_lock text, fix_scans boolean, fix_rewrites boolean,
               fix_in_transaction boolean, note text,
               bad_rows bigint, user_ids bigint[], row_ids bigint[], show_rows text,
               needed_for text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- ADD COLUMN without a volatile default and ALTER TABLE ... OWNER TO change the catalog
    -- only, but wait for, and then hold up, every statement on the table while they do.
    catalog_lock CONSTANT text := 'ACCESS EXCLUSIVE, brief (catalog only)';
    -- CREATE INDEX CONCURRENTLY lets reads and writes go on (it waits for open transactions).
    index_lock CONSTANT text := 'SHARE UPDATE EXCLUSIVE (reads and writes go on)';
    req record;
    col record;
    rel regclass;
    owner regrole := (SELECT c.relowner::regrole FROM pg_class c
                       WHERE c.oid = to_regclass(format('%I.user_subscriptions', target_schema)));
    -- 'table.column' of every column the checks of rows may read (present, of a type they read).
    usable text[] := '{}';
    -- Checks of rows: {table, columns read, condition on alias t, what is wrong, note,
    -- the optional feature it concerns or ''}.
    checks text[] := '{}';
    -- The note of a check whose rows the functions meet once attached: what follows then.
    accept CONSTANT text := 'once attached, %s. Correct the rows, or attach with accept_bad_rows => true';
    hits record;
BEGIN
    IF local_time_zone IS NOT NULL AND NOT quota.is_valid_time_zone(local_time_zone) THEN
        RAISE EXCEPTION 'invalid time zone "%"', local_time_zone
            USING ERRCODE = '22023',
                  HINT = 'local_time_zone is the zone of the application''s local times: a name from pg_timezone_names, such as ''Asia/Shanghai''.';
    END IF;
    -- Any role with TEMP on the database creates its own temporary schema and tables in it,
    -- and the schema ends with that role's session: never a binding. pg_temp is the alias of
    -- the caller's own; names beginning with pg_ are reserved, so these are the temporary ones.
    IF target_schema = 'pg_temp' OR target_schema ~ '^pg_(toast_)?temp_[0-9]+$' THEN
        problem := format('schema %I is a temporary schema: it belongs to one session, which any role with TEMP may open',
                          target_schema);
        note := 'attach a permanent schema';
        RETURN NEXT;
        RETURN;
    END IF;

    -- Every column the functions read or write: accepted types, how to add it if missing
    -- (only where an added column holds what the functions expect of the rows there already:
    -- NULL, or a constant), and the optional feature that alone needs it. The time columns may
    -- hold local times (timestamp) when the caller says their zone. usage_records.period_start
    -- names a counter's period_start, so it is added with that column's type: the two compare
    -- without a zone.
    FOR req IN
        SELECT r.*, (r.tbl = 'user_subscriptions' AND r.col IN ('start_date', 'end_date', 'quota_reset_anchor')
                     OR r.tbl = 'user_usage' AND r.col IN ('period_start', 'period_end', 'last_reset_at', 'updated_at')
                     OR r.tbl = 'usage_records' AND r.col IN ('period_start', 'created_at')
                     OR r.tbl = 'user_storage_usage' AND r.col = 'updated_at') AS is_time
          FROM (VALUES
            ('user_subscriptions', 'id',                 '{int4,int8}', NULL, NULL),
            ('user_subscriptions', 'user_id',            '{int4,int8}', NULL, NULL),
            ('user_subscriptions', 'plan_id',            '{int4,int8}', NULL, NULL),
            ('user_subscriptions', 'start_date',         '{timestamptz}', NULL, NULL),
            ('user_subscriptions', 'end_date',           '{timestamptz}', NULL, NULL),
            ('user_subscriptions', 'status',             '{text,varchar}', NULL, NULL),
            ('user_subscriptions', 'custom_quotas',      '{jsonb}', 'jsonb', NULL),
            ('user_subscriptions', 'quota_reset_anchor', '{timestamptz}', 'timestamptz', NULL),
            ('user_subscriptions', 'quota_cycle_type',   '{text,varchar}', 'varchar(20)', NULL),
            ('subscription_plans', 'id',                 '{int4,int8}', NULL, NULL),
            ('subscription_plans', 'billing_cycle',      '{text,varchar}', 'varchar(20) NOT NULL DEFAULT ''monthly''', NULL),
            ('subscription_plans', 'quota_cycle_type',   '{text,varchar}', 'varchar(20)', NULL),
            ('subscription_plans', 'plan_code',          '{text,varchar}', NULL, 'booster_packs'),
            ('subscription_plans', 'duration_days',      '{int4}', 'integer', 'booster_packs'),
            ('subscription_plans', 'plan_kind',          '{text,varchar}', 'varchar(20) NOT NULL DEFAULT ''base''', 'booster_packs'),
            ('plan_features',      'plan_id',            '{int4,int8}', NULL, NULL),
            ('plan_features',      'feature_code',       '{text,varchar}', NULL, NULL),
            ('plan_features',      'feature_value',      '{int4}', NULL, NULL),
            ('plan_features',      'feature_unit',       '{text,varchar}', 'varchar(20)', NULL),
            ('plan_features',      'overage_limit',      '{int4}', 'integer', 'soft_limits'),
            ('plan_features',      'rollover_max',       '{int4}', 'integer', 'rollover'),
            ('plan_features',      'rollover_periods',   '{int4}', 'integer', 'rollover'),
            ('plan_features',      'reset_rule',         '{text,varchar}', 'text', 'windows'),
            ('plan_features',      'config_value',       '{jsonb}', 'jsonb', 'config_values'),
            ('plan_features',      'window_limits',      '{jsonb}', 'jsonb', 'window_limits'),
            ('user_usage',         'user_id',            '{int4,int8}', NULL, NULL),
            ('user_usage',         'feature_code',       '{text,varchar}', NULL, NULL),
            ('user_usage',         'period_start',       '{timestamptz}', NULL, NULL),
            ('user_usage',         'period_end',         '{timestamptz}', NULL, NULL),
            ('user_usage',         'usage_count',        '{int4,int8}', NULL, NULL),
            ('user_usage',         'alerted_percent',    '{int4}', 'integer NOT NULL DEFAULT 0', 'alerts'),
            ('user_usage',         'alerted_limit',      '{int8}', 'bigint', 'alerts'),
            ('user_usage',         'held',               '{int8}', 'bigint NOT NULL DEFAULT 0', 'reservations'),
            ('user_usage',         'last_reset_at',      '{timestamptz}', 'timestamptz', NULL),
            ('user_usage',         'updated_at',         '{timestamptz}', 'timestamptz', NULL),
            ('usage_records',      'id',                 '{int4,int8}', NULL, NULL),
            ('usage_records',      'user_id',            '{int4,int8}', NULL, NULL),
            ('usage_records',      'feature_code',       '{text,varchar}', NULL, NULL),
            ('usage_records',      'period_start',       '{timestamptz}',
             coalesce((SELECT 'timestamp' FROM pg_attribute a
                        WHERE a.attrelid = to_regclass(format('%I.user_usage', target_schema))
                          AND a.attname = 'period_start' AND NOT a.attisdropped
                          AND a.atttypid = 'timestamp'::regtype),
                      'timestamptz'), NULL),
            ('usage_records',      'resource_type',      '{text,varchar}', 'varchar(50)', NULL),
            ('usage_records',      'resource_id',        '{int4,int8}', 'bigint', NULL),
            ('usage_records',      'amount',             '{int4}', NULL, NULL),
            ('usage_records',      'metadata',           '{jsonb}', 'jsonb', NULL),
            ('usage_records',      'idempotency_key',    '{text,varchar}', 'text', 'idempotency_keys'),
            ('usage_records',      'refund_of',          '{int4,int8}', 'bigint', 'refunds'),
            -- NULL in the records from before: when they were made is not known. The
            -- functions write it in every record they make.
            ('usage_records',      'created_at',         '{timestamptz}', 'timestamptz', NULL),
            ('user_storage_usage', 'user_id',            '{int4,int8}', NULL, NULL),
            ('user_storage_usage', 'storage_quota_bytes', '{int8}', 'bigint NOT NULL DEFAULT 0', NULL),
            ('user_storage_usage', 'updated_at',         '{timestamptz}', 'timestamptz', NULL)
        ) AS r (tbl, col, types, add_type, optional_for)
    LOOP
        rel := to_regclass(format('%I.%I', target_schema, req.tbl));
        IF rel IS NULL THEN
            CONTINUE;  -- reported once per table below
        END IF;
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS shown, t.typname
          INTO col
          FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = rel AND a.attname = req.col AND a.attnum > 0 AND NOT a.attisdropped;
        fix := NULL; fix_lock := NULL; fix_scans := NULL; fix_rewrites := NULL;
        fix_in_transaction := NULL; note := NULL;
        needed_for := req.optional_for;
        IF NOT FOUND THEN
            problem := format('%s has no column %I', rel, req.col);
            IF req.add_type IS NULL THEN
                note := 'no fix proposed: the functions need the application''s own values here, which a column added now would not hold';
            ELSE
                fix := format('ALTER TABLE %s ADD COLUMN %I %s', rel, req.col, req.add_type);
                fix_lock := catalog_lock;
                fix_scans := false;
                fix_rewrites := false;
                fix_in_transaction := true;
                note := CASE WHEN req.add_type LIKE '%DEFAULT%'
                             THEN 'the rows there read the default, which is stored once, in the catalog'
                             ELSE 'the rows there read NULL' END
                        || '; the application''s statements need not name the column';
            END IF;
            RETURN NEXT;
        ELSIF col.typname = 'timestamp' AND req.is_time THEN
            -- The checks of rows compare such a column only with columns of its table, never
            -- with now(): they read it whether its zone is known or not.
            usable := usable || (req.tbl || '.' || req.col);
            IF local_time_zone IS NULL THEN
                problem := format('%s.%I is timestamp without time zone: the application stores local times, in a zone pg_entitlements must be told',
                                  rel, req.col);
                note := format('no fix proposed: say which zone, quota.attach(%L, local_time_zone => ''...''). Converting the column to timestamptz would rewrite the table under ACCESS EXCLUSIVE and guess that zone; it stays as it is',
                               target_schema);
                RETURN NEXT;
            END IF;
        ELSIF NOT col.typname = ANY (req.types::text[]) THEN
            problem := format('%s.%I is %s, not %s', rel, req.col, col.shown,
                              array_to_string(req.types::text[], ' or '));
            note := format('no fix proposed: ALTER TABLE %s ALTER COLUMN %I TYPE %s rewrites the table under ACCESS EXCLUSIVE and may change its values; where the application allows it, run it in a maintenance window',
                           rel, req.col, (req.types::text[])[array_upper(req.types::text[], 1)]);
            RETURN NEXT;
        ELSE
            usable := usable || (req.tbl || '.' || req.col);
        END IF;
    END LOOP;
    fix := NULL; fix_lock := NULL; fix_scans := NULL; fix_rewrites := NULL;
    fix_in_transaction := NULL; note := NULL; needed_for := NULL;

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
            note := 'no fix proposed: the functions use the application''s own rows of all six tables';
            RETURN NEXT;
            note := NULL;
            CONTINUE;
        END IF;
        IF req.relkind <> 'r' THEN
            problem := format('%s is %s, not an ordinary table', req.rel,
                              CASE req.relkind WHEN 'v' THEN 'a view'
                                               WHEN 'm' THEN 'a materialized view'
                                               WHEN 'f' THEN 'a foreign table'
                                               WHEN 'p' THEN 'a partitioned table'
                                               ELSE format('of kind %L', req.relkind) END);
            note := 'no fix proposed: the writers write it with the rights of the tables'' owner, so it must hold its rows itself, with no code of its own';
            RETURN NEXT;
            note := NULL;
        END IF;
        IF req.relowner <> owner THEN
            problem := format('%s is owned by %s, not by %s, the owner of %I.user_subscriptions, as whom the writers run',
                              req.rel, req.relowner, owner, target_schema);
            fix := format('ALTER TABLE %s OWNER TO %s', req.rel, owner);
            fix_lock := catalog_lock;
            fix_scans := false;
            fix_rewrites := false;
            fix_in_transaction := true;
            note := format('%s keeps on the table only what is granted to it', req.relowner);
            RETURN NEXT;
            fix := NULL; fix_lock := NULL; fix_scans := NULL; fix_rewrites := NULL;
            fix_in_transaction := NULL; note := NULL;
        END IF;
    END LOOP;

    -- The unique keys ON CONFLICT and idempotency rely on. A key on a nullable column may be
    -- partial, unique only where that column IS NOT NULL: a NULL never conflicts anyway. Only a
    -- valid, immediate index counts: a CREATE INDEX CONCURRENTLY that failed leaves an invalid
    -- one, and ON CONFLICT takes no deferrable index as its arbiter.
    FOR req IN
        SELECT * FROM (VALUES
            ('user_usage', '{user_id,feature_code,period_start}', NULL, NULL),
            -- The direct reads keep one plan per id and one value per plan and feature.
            ('subscription_plans', '{id}', NULL, NULL),
            ('plan_features', '{plan_id,feature_code}', NULL, NULL),
            ('user_storage_usage', '{user_id}', NULL, NULL),
            ('usage_records', '{user_id,idempotency_key}', 'idempotency_key', 'idempotency_keys'),
            ('usage_records', '{user_id,refund_of}', 'refund_of', 'refunds')
        ) AS r (tbl, cols, nullable, optional_for)
    LOOP
        rel := to_regclass(format('%I.%I', target_schema, req.tbl));
        -- Only a table has indexes; any other relation is reported as such above.
        CONTINUE WHEN rel IS NULL OR (SELECT c.relkind FROM pg_class c WHERE c.oid = rel) <> 'r';
        CONTINUE WHEN EXISTS (
            SELECT FROM pg_index i
             WHERE i.indrelid = rel AND i.indisunique AND i.indisvalid AND i.indimmediate
               AND (i.indpred IS NULL
                    OR pg_get_expr(i.indpred, i.indrelid)
                       = '(' || quote_ident(req.nullable) || ' IS NOT NULL)')
               AND i.indnkeyatts = cardinality(req.cols::text[])
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                      FROM pg_attribute a
                     WHERE a.attrelid = rel AND a.attnum = ANY (i.indkey::int2[]))
                   = (SELECT array_agg(c ORDER BY c) FROM unnest(req.cols::text[]) c));
        problem := format('%s has no unique index on (%s)', rel,
                          array_to_string(req.cols::text[], ', '));
        needed_for := req.optional_for;
        fix := format('CREATE UNIQUE INDEX CONCURRENTLY ON %s (%s)', rel,
                      (SELECT string_agg(quote_ident(c), ', ') FROM unnest(req.cols::text[]) c))
               || coalesce(' WHERE ' || quote_ident(req.nullable) || ' IS NOT NULL', '');
        fix_lock := index_lock;
        fix_scans := true;
        fix_rewrites := false;
        fix_in_transaction := false;
        note := 'cannot run inside a transaction block: run it on its own. It reads the table twice and waits for the transactions open on it; if it fails (rows with the same key) it leaves an invalid index behind: DROP INDEX CONCURRENTLY it, correct the rows, run it again';
        RETURN NEXT;
        fix := NULL; fix_lock := NULL; fix_scans := NULL; fix_rewrites := NULL;
        fix_in_transaction := NULL; note := NULL; needed_for := NULL;
        -- The rows that would make it fail, checked below with the others.
        checks := checks || ARRAY[req.tbl, array_to_string(req.cols::text[], ','),
            format('(%s) IN (SELECT %s FROM %s d WHERE %s GROUP BY %s HAVING count(*) > 1)',
                   (SELECT string_agg('t.' || quote_ident(c), ', ') FROM unnest(req.cols::text[]) c),
                   (SELECT string_agg('d.' || quote_ident(c), ', ') FROM unnest(req.cols::text[]) c),
                   rel,
                   (SELECT string_agg('d.' || quote_ident(c) || ' IS NOT NULL', ' AND ')
                      FROM unnest(req.cols::text[]) c),
                   (SELECT string_agg('d.' || quote_ident(c), ', ') FROM unnest(req.cols::text[]) c)),
            format('share their (%s) with another row', array_to_string(req.cols::text[], ', ')),
            CASE WHEN req.optional_for IS NULL
                 THEN format('the unique index on (%s) cannot be built, nor pg_entitlements attached, until one row of each key is left',
                             array_to_string(req.cols::text[], ', '))
                 ELSE format('the unique index on (%s) cannot be built until one row of each key is left; until then pg_entitlements attaches without %s',
                             array_to_string(req.cols::text[], ', '), req.optional_for) END,
            coalesce(req.optional_for, '')];
    END LOOP;

    -- The rows. Each check reads only columns found usable above, and looks for a NULL only
    -- where the column allows one. What follows for such a row once attached is what the
    -- readers do with it: a read that meets it refuses with its SQLSTATE, or it counts as not
    -- there, never a guess.
    checks := checks || ARRAY[
        'user_subscriptions', 'custom_quotas',
        't.custom_quotas IS NOT NULL AND jsonb_typeof(t.custom_quotas) <> ''object''',
        'have a custom_quotas that is not a JSON object',
        format(accept, 'every quota read for the user fails (22P02)'), '',

        'user_subscriptions', 'custom_quotas',
        'CASE WHEN jsonb_typeof(t.custom_quotas) = ''object'' THEN EXISTS (SELECT FROM jsonb_each(t.custom_quotas) e JOIN quota.features f ON f.code = e.key WHERE CASE f.kind WHEN ''config'' THEN false WHEN ''boolean'' THEN e.value::text NOT IN (''true'', ''false'', ''1'', ''0'') ELSE CASE WHEN e.value::text ~ ''^-?[0-9]+$'' THEN e.value::text::numeric NOT BETWEEN -1 AND 2147483647 ELSE true END END) ELSE false END',
        'have a custom_quotas value that does not suit its feature''s kind (a whole number from -1 to 2147483647; true, false, 1 or 0 for a boolean feature)',
        format(accept, 'a read of that feature for the user fails (22P02, or 22003 beyond int4)'), '',

        'user_subscriptions', 'custom_quotas',
        'CASE WHEN jsonb_typeof(t.custom_quotas) = ''object'' THEN EXISTS (SELECT FROM jsonb_object_keys(t.custom_quotas) k WHERE NOT EXISTS (SELECT FROM quota.features f WHERE f.code = k)) ELSE false END',
        'have a custom_quotas key that is no feature of quota.features',
        format(accept, 'every later change of that custom_quotas is refused (P0002) until the key is removed or the feature added'), '',

        'user_subscriptions', 'id,user_id,status,start_date,end_date',
        format('t.status = ''active'' AND EXISTS (SELECT FROM %I.user_subscriptions o WHERE o.user_id = t.user_id AND o.id <> t.id AND o.status = ''active'' AND o.start_date < t.end_date AND t.start_date < o.end_date)',
               target_schema),
        'are active subscriptions whose [start_date, end_date) overlaps another active one of the same user',
        format(accept, 'while both are current, the one that ends later counts and the other is ignored'), '',

        'user_usage', 'period_start,period_end',
        't.period_end <= t.period_start',
        'are counters whose period ends where or before it starts',
        format(accept, 'no read finds them in a period: their usage counts nowhere'), ''];
    checks := checks || coalesce((
        SELECT array_agg(x.v ORDER BY n.ord, x.k)
          FROM (VALUES
                (1, 'user_subscriptions', 'user_id', 'the subscription belongs to no user and never counts'),
                (2, 'user_subscriptions', 'status', 'the subscription is not active'),
                (3, 'user_subscriptions', 'start_date', 'the subscription is not active'),
                (4, 'user_subscriptions', 'end_date', 'the subscription is not active'),
                (5, 'user_subscriptions', 'plan_id', 'while it is active, every quota read for the user fails (23503)'),
                (6, 'subscription_plans', 'id', 'no subscription can name the plan'),
                (7, 'plan_features', 'plan_id', 'the value belongs to no plan'),
                (8, 'plan_features', 'feature_code', 'the value belongs to no feature'),
                (9, 'plan_features', 'feature_value', 'the plan counts as lacking the feature: the catalog default applies'),
                (10, 'user_usage', 'user_id', 'the counter belongs to no user'),
                (11, 'user_usage', 'feature_code', 'the counter belongs to no feature'),
                (12, 'user_usage', 'period_start', 'the counter is in no period'),
                (13, 'user_usage', 'period_end', 'the counter is in no period'),
                (14, 'user_usage', 'usage_count', 'reads count it as 0 and every use of it is refused'),
                (15, 'usage_records', 'user_id', 'the record belongs to no user'),
                (16, 'usage_records', 'feature_code', 'the record belongs to no feature'),
                (17, 'usage_records', 'amount', 'the record counts nothing in verify_ledger() and cannot be refunded'),
                (18, 'user_storage_usage', 'user_id', 'the row belongs to no user')
               ) AS n (ord, tbl, col, effect)
          JOIN pg_attribute a
            ON a.attrelid = to_regclass(format('%I.%I', target_schema, n.tbl))
           AND a.attname = n.col AND NOT a.attisdropped AND NOT a.attnotnull
         CROSS JOIN LATERAL unnest(ARRAY[n.tbl, n.col, format('t.%I IS NULL', n.col),
                                         format('have a NULL %I', n.col), format(accept, n.effect),
                                         ''])
                            WITH ORDINALITY AS x (v, k)), '{}');

    -- Six entries per check.
    FOR i IN 0 .. coalesce(array_length(checks, 1), 0) / 6 - 1 LOOP
        rel := to_regclass(format('%I.%I', target_schema, checks[6 * i + 1]));
        CONTINUE WHEN rel IS NULL
            OR NOT (SELECT bool_and((checks[6 * i + 1] || '.' || c) = ANY (usable))
                      FROM unnest(string_to_array(checks[6 * i + 2], ',')) c);
        EXECUTE format($q$
            WITH bad AS MATERIALIZED (SELECT %s AS u, %s AS r FROM %s t WHERE %s)
            SELECT (SELECT count(*) FROM bad) AS n,
                   (SELECT count(DISTINCT b.u) FROM bad b) AS users,
                   (SELECT array_agg(x.u ORDER BY x.u)
                      FROM (SELECT DISTINCT b.u FROM bad b WHERE b.u IS NOT NULL
                             ORDER BY b.u LIMIT 20) x) AS user_ids,
                   (SELECT array_agg(y.r ORDER BY y.r)
                      FROM (SELECT b.r FROM bad b WHERE b.r IS NOT NULL
                             ORDER BY b.r LIMIT 20) y) AS row_ids$q$,
                CASE WHEN checks[6 * i + 1] || '.user_id' = ANY (usable)
                     THEN 't.user_id::int8' ELSE 'NULL::int8' END,
                CASE WHEN EXISTS (SELECT FROM pg_attribute a
                                   WHERE a.attrelid = rel AND a.attname = 'id' AND NOT a.attisdropped
                                     AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype))
                     THEN 't.id::int8' ELSE 'NULL::int8' END,
                rel, checks[6 * i + 3])
          INTO hits;
        CONTINUE WHEN hits.n = 0;
        problem := format('%s: %s row(s)%s %s', rel, hits.n,
                          CASE WHEN hits.users > 0 THEN format(' of %s user(s)', hits.users) ELSE '' END,
                          checks[6 * i + 4]);
        note := checks[6 * i + 5];
        bad_rows := hits.n;
        user_ids := hits.user_ids;
        row_ids := hits.row_ids;
        show_rows := format('SELECT * FROM %s t WHERE %s', rel, checks[6 * i + 3]);
        needed_for := nullif(checks[6 * i + 6], '');
        RETURN NEXT;
    END LOOP;
END
$$;

-- Binds the functions and the storage trigger to target_schema's tables, or refuses with one
-- message listing every problem and the statement that fixes it. Superusers only: the binding
-- decides what the SECURITY DEFINER writers write, and the application's triggers, rules and
-- defaults on the bound tables run in every writer's statement (as the tables' owner).
-- local_time_zone: the zone of the application's timestamp (without time zone) columns, which
-- the functions then read and write as local times of that zone; never guessed, so required
-- when such a column exists. accept_bad_rows: attach although attach_problems() reports rows
-- the functions cannot rely on; the calls that meet them then fail as the readers make them.
-- The problems of an optional feature (needed_for) do not stop it: the feature is recorded as
-- lacking (quota.settings.attached_lacks), and the calls that need it are refused (0A000)
-- until the problems are fixed and attach() runs again.
CREATE FUNCTION quota.attach(target_schema name, local_time_zone text DEFAULT NULL,
                             accept_bad_rows boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problems text;
    bad_rows text;
    lacks text[];
    lacking record;
    local_columns text;
    subs regclass;
    owner regrole;
    owner_is_superuser boolean;
    needed record;
    granted text[] := '{}';
    other record;
    backfilled bigint;
    kinds record;
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
    IF local_time_zone IS NOT NULL AND NOT quota.is_valid_time_zone(local_time_zone) THEN
        RAISE EXCEPTION 'invalid time zone "%"', local_time_zone
            USING ERRCODE = '22023',
                  HINT = 'local_time_zone is the zone of the application''s local times: a name from pg_timezone_names, such as ''Asia/Shanghai''.';
    END IF;

    -- The time columns the functions use (those of attach_problems()) that hold local times.
    -- A period boundary is an instant: the zone of those values decides it, and a guess (the
    -- server's, the session's, UTC) would move every boundary by the difference, silently.
    SELECT string_agg(format('%s.%I', a.attrelid::regclass, a.attname), ', '
                      ORDER BY a.attrelid::regclass::text, a.attname)
      INTO local_columns
      FROM (VALUES ('user_subscriptions', 'start_date'), ('user_subscriptions', 'end_date'),
                   ('user_subscriptions', 'quota_reset_anchor'), ('user_usage', 'period_start'),
                   ('user_usage', 'period_end'), ('user_usage', 'last_reset_at'),
                   ('user_usage', 'updated_at'), ('usage_records', 'period_start'),
                   ('usage_records', 'created_at'), ('user_storage_usage', 'updated_at')) AS c (tbl, col)
      JOIN pg_attribute a ON a.attrelid = to_regclass(format('%I.%I', target_schema, c.tbl))
                         AND a.attname = c.col AND NOT a.attisdropped
     WHERE a.atttypid = 'timestamp'::regtype;
    IF local_columns IS NOT NULL AND local_time_zone IS NULL THEN
        RAISE EXCEPTION 'the application stores local times in schema %: in which time zone?', quote_ident(target_schema)
            USING ERRCODE = '22023',
                  DETAIL = format('These columns are timestamp without time zone: %s.', local_columns),
                  HINT = format('Attach with the zone of those local times: SELECT quota.attach(%L, local_time_zone => ''...''); (a name from pg_timezone_names, such as ''Asia/Shanghai'').',
                                target_schema);
    END IF;

    SELECT string_agg('- ' || p.problem
                      || coalesce(E'\n    fix: ' || p.fix || ';', E'\n    ' || p.note), E'\n'
                      ORDER BY p.problem)
             FILTER (WHERE p.bad_rows IS NULL AND p.needed_for IS NULL),
           string_agg(format(E'- %s\n    user ids: %s%s\n    show them: %s;', p.problem,
                             coalesce(array_to_string(p.user_ids, ', '), '-'),
                             CASE WHEN cardinality(p.user_ids) = 20 THEN ', ...' ELSE '' END,
                             p.show_rows), E'\n' ORDER BY p.problem)
             FILTER (WHERE p.bad_rows IS NOT NULL AND p.needed_for IS NULL),
           array_agg(DISTINCT p.needed_for ORDER BY p.needed_for)
             FILTER (WHERE p.needed_for IS NOT NULL)
      INTO problems, bad_rows, lacks
      FROM quota.attach_problems(target_schema, local_time_zone) p;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'cannot attach pg_entitlements to schema %', quote_ident(target_schema)
            USING ERRCODE = '42P16', DETAIL = problems,
                  HINT = 'Run the fixes (SELECT fix FROM quota.attach_problems(...) \gexec in psql, each CONCURRENTLY one outside a transaction block), then attach again.';
    END IF;
    -- Rows the functions cannot rely on: refused unless the caller accepts that the calls
    -- which meet them fail (or count them as not there), as the readers make them.
    IF bad_rows IS NOT NULL THEN
        IF NOT accept_bad_rows THEN
            RAISE EXCEPTION 'cannot attach pg_entitlements to schema %: rows the functions cannot rely on', quote_ident(target_schema)
                USING ERRCODE = '55000', DETAIL = bad_rows,
                      HINT = format('Correct the rows, or attach anyway, knowing that the calls which meet them fail: SELECT quota.attach(%L%s, accept_bad_rows => true);',
                                    target_schema,
                                    coalesce(format(', local_time_zone => %L', local_time_zone), ''));
        END IF;
        RAISE NOTICE 'attaching with rows the functions cannot rely on (accept_bad_rows): the calls that meet them fail%',
            E'\n' || bad_rows;
    END IF;

    FOR lacking IN
        SELECT l.feature, CASE l.feature
                   WHEN 'idempotency_keys' THEN 'record_feature_usage and consume with an idempotency key, and refund_usage by key, are refused'
                   WHEN 'refunds' THEN 'refund_usage is refused'
                   WHEN 'alerts' THEN 'no threshold alert is announced on channel quota_threshold'
                   WHEN 'booster_packs' THEN 'buy_booster is refused'
                   WHEN 'reservations' THEN 'reserve is refused'
                   WHEN 'soft_limits' THEN 'plans give no overage of their own: the catalog''s overage_limit applies'
                   WHEN 'rollover' THEN 'plans give no rollover of their own: the catalog''s rollover_max applies'
                   WHEN 'windows' THEN 'plans set no limit window of their own: the catalog''s reset_rule applies'
                   WHEN 'config_values' THEN 'plans give config features no value of their own: the catalog''s default_value applies'
                   WHEN 'window_limits' THEN 'plans set no further limits of their own: the catalog''s window_limits apply'
               END AS effect
          FROM unnest(lacks) AS l (feature)
    LOOP
        RAISE NOTICE 'attaching without %: % (SELECT * FROM quota.attach_problems(%) WHERE needed_for = % lists what it needs; attach again once it is there)',
            lacking.feature, lacking.effect, quote_literal(target_schema), quote_literal(lacking.feature);
    END LOOP;

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
                -- What a use's statement reads of the user's grants, and what the storage
                -- quota of a changed subscription adds from them.
                ('SELECT ON TABLE quota.grants',
                 EXISTS (SELECT FROM pg_class c, aclexplode(c.relacl) a
                          WHERE c.oid = 'quota.grants'::regclass AND a.grantee = owner
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
    -- A record no counter holds (or whose created_at is NULL: it was made before the column)
    -- keeps NULL and is left out of the ledger. Local times are compared as the instants they
    -- are in local_time_zone, whatever the session's TimeZone. Nothing else of the
    -- application's data is written.
    SELECT bool_or(a.attrelid = to_regclass(format('%I.usage_records', target_schema))
                   AND a.attname = 'created_at' AND a.atttypid = 'timestamp'::regtype) AS created_local,
           bool_or(a.attrelid = to_regclass(format('%I.usage_records', target_schema))
                   AND a.attname = 'period_start' AND a.atttypid = 'timestamp'::regtype) AS record_local,
           bool_or(a.attrelid = to_regclass(format('%I.user_usage', target_schema))
                   AND a.attname = 'period_start' AND a.atttypid = 'timestamp'::regtype) AS counter_local
      INTO kinds
      FROM pg_attribute a
     WHERE a.attrelid IN (to_regclass(format('%I.usage_records', target_schema)),
                          to_regclass(format('%I.user_usage', target_schema)))
       AND a.attname IN ('created_at', 'period_start') AND NOT a.attisdropped;
    EXECUTE format($q$
        UPDATE %1$I.usage_records r SET period_start = %5$s
          FROM %1$I.user_usage u
         WHERE r.period_start IS NULL AND u.user_id = r.user_id
           AND u.feature_code = r.feature_code
           AND %2$s >= %3$s AND %2$s < %4$s$q$,
        target_schema,
        CASE WHEN kinds.created_local THEN format('(r.created_at AT TIME ZONE %L)', local_time_zone)
             ELSE 'r.created_at' END,
        CASE WHEN kinds.counter_local THEN format('(u.period_start AT TIME ZONE %L)', local_time_zone)
             ELSE 'u.period_start' END,
        CASE WHEN kinds.counter_local THEN format('(u.period_end AT TIME ZONE %L)', local_time_zone)
             ELSE 'u.period_end' END,
        -- AT TIME ZONE turns a local time into the instant, and an instant into the local time.
        CASE WHEN kinds.record_local = kinds.counter_local THEN 'u.period_start'
             ELSE format('(u.period_start AT TIME ZONE %L)', local_time_zone) END);
    GET DIAGNOSTICS backfilled = ROW_COUNT;
    IF backfilled > 0 THEN
        RAISE NOTICE '% usage records written before attaching now name the period of their counter',
            backfilled;
    END IF;

    PERFORM quota.install_triggers(subs);
    PERFORM quota.install_cache_trigger(format('%I.%I', target_schema, t)::regclass)
       FROM unnest(ARRAY['subscription_plans', 'plan_features']) AS t;
    PERFORM quota.install_plan_features_triggers(format('%I.plan_features', target_schema)::regclass);
    IF local_columns IS NULL AND local_time_zone IS NOT NULL THEN
        RAISE NOTICE 'no column of schema % holds local times: local_time_zone % is not kept',
            quote_ident(target_schema), quote_literal(local_time_zone);
    END IF;
    -- The row is made first, with the extension's own tables still bound: its insertion runs
    -- the trigger that follows a change of time zone, which has nothing to do in the
    -- application's tables. The binding itself is an update no trigger follows.
    INSERT INTO quota.settings DEFAULT VALUES ON CONFLICT (singleton) DO NOTHING;
    UPDATE quota.settings
       SET attached_schema = target_schema, attached_owner = owner, attached_grants = granted,
           attached_time_zone = CASE WHEN local_columns IS NOT NULL THEN local_time_zone END,
           attached_lacks = lacks;
    RAISE NOTICE 'pg_entitlements now uses the tables of schema %', quote_ident(target_schema);
END
$$;

-- Goes back to the extension's own tables, removes the triggers attach() installed and revokes
-- what it granted. Superusers only, as attach(). The application's tables keep what was
-- added to them for attaching (columns and unique indexes, which its old code ignores) and
-- every row; nothing else of theirs was changed (tests/pg_regress/sql/15_adopt.sql).
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
       SET attached_schema = NULL, attached_owner = NULL, attached_grants = NULL,
           attached_time_zone = NULL, attached_lacks = NULL;
END
$$;

REVOKE EXECUTE ON FUNCTION quota.attach(name, text, boolean), quota.detach() FROM PUBLIC;
