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
-- of another owner than user_subscriptions', proposes only fixes that add (with the lock each
-- takes) and reports the rows the functions cannot rely on; attach() and detach() are for
-- superusers only, name the application's triggers and rules, grant and revoke what the
-- writers need, and take the zone of the application's local times. Their result and
-- arguments changed: dropped and created again.
DROP FUNCTION quota.attach_problems(name);
DROP FUNCTION quota.attach(name);

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
       SET attached_schema = NULL, attached_owner = NULL, attached_grants = NULL,
           attached_time_zone = NULL, attached_lacks = NULL;
END
$$;

REVOKE EXECUTE ON FUNCTION quota.attach(name, text, boolean), quota.detach() FROM PUBLIC;

COMMENT ON FUNCTION quota.attach_problems(name, text) IS
    'What the tables of a schema lack for quota.attach(), each with a fix that only adds '
    '(a nullable or constant-default column, a unique index built CONCURRENTLY), the lock it '
    'takes and whether it reads or rewrites the table; no fix, and why, where the only one would '
    'rewrite the table or change what its data means; and the rows the functions cannot rely on, '
    'with their user and row ids and a query that shows them. needed_for names the optional '
    'feature (idempotency_keys, refunds, alerts, booster_packs) a problem alone concerns: '
    'attach() goes on without that feature. local_time_zone: the zone of the application''s '
    'timestamp without time zone columns, as quota.attach() takes it.';

COMMENT ON FUNCTION quota.attach(name, text, boolean) IS
    'Superusers only. Binds every quota function and the storage trigger to the application '
    'tables of a schema (user_subscriptions, subscription_plans, plan_features, user_usage, '
    'usage_records, user_storage_usage), or refuses with one message listing each problem and '
    'its fix. The writers then run as the tables'' owner, which is granted what they need in '
    'schema quota; a NOTICE names each trigger and rule of the application''s on the tables. '
    'local_time_zone is required when a time column is timestamp without time zone (never '
    'guessed); rows the functions cannot rely on are refused unless accept_bad_rows, and then '
    'the calls that meet them fail. What only an optional feature needs does not stop it: the '
    'feature is recorded in quota.settings.attached_lacks and its calls are refused.';

COMMENT ON FUNCTION quota.detach() IS
    'Superusers only. Binds the quota functions to the extension''s own tables again, removes '
    'the triggers attach() installed and revokes what it granted. The application''s tables keep '
    'their rows and the columns and unique indexes added for attaching; nothing else of theirs '
    'changed.';

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
'Event trigger function of pg_entitlements_guard_drop: refuses DROP EXTENSION pg_entitlements and DROP SCHEMA quota while the extension''s tables hold subscriptions, counters, usage records or adjustments, unless pg_entitlements.allow_drop_with_data is on; on a Citus coordinator, a drop that goes ahead first drops the shards of the extension''s tables on every node.';
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

-- The shards of tables per hash range this node serves on a Citus cluster, for the catalog
-- triggers (src/api.rs).
CREATE FUNCTION quota.local_shards("tables" TEXT[]) RETURNS SETOF TEXT[]
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'local_shards_wrapper';

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
COMMENT ON FUNCTION quota.resync_storage_sql(regclass, text, text) IS
'Internal to the catalog triggers: the statement tail that resyncs storage_quota_bytes and announces the change.';
COMMENT ON FUNCTION quota.local_shards(text[]) IS
'On a Citus cluster, for each hash range this node serves on its own, the names of the shards there of the tables of schema quota named (a reference table: this node''s copy): where the catalog triggers act on a node. It holds Citus'' placement lock on those shards until the transaction ends, so that a shard move waits for their work (40001 when one moved away meanwhile). No row on one server.';
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

-- A period belongs to the user's billing anchor, not to a subscription row (issue 14, items 1
-- and 2): its start is the anniversary even when the subscription started later, and a change
-- that moves the current period (another anchor, cycle or time zone) carries the usage counted
-- so far into it. The trigger on user_subscriptions also watches the anchor and the cycle
-- (quota.install_triggers() is replaced once, below, with the third trigger of the locks).
DROP TRIGGER pg_entitlements_sync_storage_quota ON quota.user_subscriptions;
CREATE TRIGGER pg_entitlements_sync_storage_quota
    AFTER INSERT OR DELETE OR UPDATE OF custom_quotas, plan_id, status, start_date, end_date,
          user_id, quota_reset_anchor, quota_cycle_type ON quota.user_subscriptions
    FOR EACH ROW EXECUTE FUNCTION quota.sync_storage_quota();

-- A change of time zone applies from each period's next boundary: the settings remember the
-- zone before it and when it changed.
-- The zone of an existing row has been in force for good.
ALTER TABLE quota.settings ADD COLUMN previous_time_zone text NOT NULL DEFAULT 'UTC',
                           ADD COLUMN time_zone_changed_at timestamptz NOT NULL DEFAULT '-infinity';
UPDATE quota.settings SET previous_time_zone = time_zone;
ALTER TABLE quota.settings ADD CONSTRAINT settings_previous_time_zone_known
    CHECK (quota.is_valid_time_zone(previous_time_zone));
CREATE FUNCTION quota.settings_remember_zone() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- No row meant UTC. A row that says when its zone changed (a restored one) is kept.
        IF NEW.time_zone_changed_at = '-infinity' AND NEW.previous_time_zone <> NEW.time_zone THEN
            NEW.time_zone_changed_at := now();
        END IF;
    ELSIF NEW.time_zone IS DISTINCT FROM OLD.time_zone THEN
        NEW.previous_time_zone := OLD.time_zone;
        NEW.time_zone_changed_at := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER pg_entitlements_remember_zone
    BEFORE INSERT OR UPDATE OF time_zone ON quota.settings
    FOR EACH ROW EXECUTE FUNCTION quota.settings_remember_zone();
CREATE FUNCTION quota.follow_time_zone() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'follow_time_zone_wrapper';
CREATE TRIGGER pg_entitlements_follow_time_zone
    AFTER INSERT OR DELETE OR UPDATE OF time_zone ON quota.settings
    FOR EACH ROW EXECUTE FUNCTION quota.follow_time_zone();

CREATE FUNCTION quota.carry_usage("user_id" bigint) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'carry_usage_wrapper';
REVOKE EXECUTE ON FUNCTION quota.carry_usage(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION quota.carry_usage(bigint) TO quota_admin;

COMMENT ON FUNCTION quota.sync_storage_quota() IS
    'Trigger: keeps user_storage_usage.storage_quota_bytes equal to get_user_storage_quota(user_id), '
    'creating the row when missing, announces changes on channels quota_updated and '
    'storage_quota_changed (pg_notify, sent at commit only), and carries the usage counted so far '
    'into the current billing period when a change moves it (see quota.carry_usage).';
COMMENT ON FUNCTION quota.follow_time_zone() IS
    'Trigger on quota.settings: after a change of time_zone, makes sure every user''s current '
    'billing-cycle usage is in the current period (a change applies from the next boundary).';

COMMENT ON FUNCTION quota.settings_remember_zone() IS
    'Trigger on quota.settings: remembers the zone before a change of time_zone and when it '
    'changed, so that the period the change falls in keeps its bounds.';

COMMENT ON COLUMN quota.settings.previous_time_zone IS
    'Set by the trigger pg_entitlements_remember_zone: the zone before the last change of '
    'time_zone. The period that change falls in keeps the bounds it had in this zone.';

COMMENT ON COLUMN quota.settings.time_zone_changed_at IS
    'Set by the trigger pg_entitlements_remember_zone: when time_zone last changed.';

COMMENT ON FUNCTION quota.carry_usage(bigint) IS
    'Moves the user''s billing-cycle counters whose period contains now() but which another '
    'period start names (the period a change of anchor, cycle or time zone ended) to the current '
    'period, adding up, with their usage records. The triggers do it after every change they see; '
    'call it after a period moved by the clock alone. With pg_entitlements.carry_usage off, those '
    'counters end at now() instead and the current period starts empty.';

-- Counters of 0.2.0 are named by a period start clamped to the subscription's start_date, and
-- those a time-zone change or a renewal left behind are still current: every user's current
-- billing-cycle counters move to the period start of 0.3.0, adding up, with their records.
SELECT quota.carry_usage(c.user_id)
  FROM (SELECT DISTINCT u.user_id
          FROM quota.user_usage u JOIN quota.features f ON f.code = u.feature_code
         WHERE f.reset_rule = 'billing_cycle'
           AND u.period_start <= now() AND u.period_end > now()) c;

-- The zone of an attached application's local times (quota.attach(schema, local_time_zone)):
-- NULL, as no schema is attached while this script runs.
ALTER TABLE quota.settings ADD COLUMN attached_time_zone text;
ALTER TABLE quota.settings ADD CONSTRAINT settings_attached_time_zone_known
    CHECK (quota.is_valid_time_zone(attached_time_zone));
COMMENT ON COLUMN quota.settings.attached_time_zone IS
    'Written by quota.attach() and quota.detach() only: the zone of the local times the attached '
    'tables hold in their timestamp without time zone columns; NULL when they hold none.';

-- verify_ledger() reports an attached application's local period starts as instants.
CREATE OR REPLACE FUNCTION quota.verify_ledger(for_user bigint DEFAULT NULL)
RETURNS TABLE (user_id bigint, feature_code text, period_start timestamptz,
               counter bigint, ledger bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tables name := coalesce((SELECT st.attached_schema FROM quota.settings st), 'quota');
    -- An attached application's period_start without time zone holds its local time.
    local_zone text := (SELECT st.attached_time_zone FROM quota.settings st
                         WHERE (SELECT a.atttypid FROM pg_attribute a
                                 WHERE a.attrelid = to_regclass(format('%I.user_usage', tables))
                                   AND a.attname = 'period_start' AND NOT a.attisdropped)
                               = 'timestamp'::regtype);
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT coalesce(u.user_id, r.user_id)::bigint, coalesce(u.feature_code, r.feature_code)::text,
               %2$s,
               coalesce(u.usage_count, 0)::bigint, coalesce(r.total, 0)::bigint
          FROM (SELECT x.user_id, x.feature_code, x.period_start, x.usage_count
                  FROM %1$I.user_usage x WHERE $1 IS NULL OR x.user_id = $1) u
          FULL JOIN (SELECT e.user_id, e.feature_code, e.period_start, sum(e.amount) AS total
                       FROM (SELECT x.user_id::bigint AS user_id, x.feature_code::text AS feature_code,
                                    x.period_start, x.amount - coalesce(g.drawn, 0) AS amount
                               FROM %1$I.usage_records x
                               LEFT JOIN (SELECT d.user_id, d.record_id, sum(d.amount) AS drawn
                                            FROM quota.grant_uses d
                                           WHERE $1 IS NULL OR d.user_id = $1
                                           GROUP BY 1, 2) g
                                      ON g.user_id = x.user_id AND g.record_id = x.id
                              WHERE ($1 IS NULL OR x.user_id = $1) AND x.period_start IS NOT NULL
                             UNION ALL
                             SELECT l.user_id, l.feature_code, %3$s, -l.amount
                               FROM quota.releases l
                              WHERE $1 IS NULL OR l.user_id = $1) e
                      GROUP BY 1, 2, 3) r
            ON u.user_id = r.user_id AND u.feature_code = r.feature_code
           AND u.period_start = r.period_start
         WHERE coalesce(u.usage_count, 0) IS DISTINCT FROM coalesce(r.total, 0)
         ORDER BY 1, 2, 3$q$, tables,
        CASE WHEN local_zone IS NULL THEN 'coalesce(u.period_start, r.period_start)::timestamptz'
             ELSE format('coalesce(u.period_start, r.period_start) AT TIME ZONE %L', local_zone) END,
        -- A release's period as the bound tables hold it.
        CASE WHEN local_zone IS NULL THEN 'l.period_start'
             ELSE format('l.period_start AT TIME ZONE %L', local_zone) END)
    USING for_user;
END
$$;

-- A use locks its counter and nothing of the subscription, no longer the subscription row
-- FOR NO KEY UPDATE (issue 14, item 5): a use of another feature, record_feature_usage and an
-- UPDATE of the row that decides nothing no longer wait for an open use. A change of what
-- decides a limit or a period locks the counters of the features it can move first, through
-- a third trigger on user_subscriptions (sql/triggers.sql), which quota.install_triggers() now
-- creates too (detach() drops it); a use that waited for one asks row_is_current() whether the
-- subscription it read still stands.
CREATE FUNCTION quota.hold_current_periods("user_id" bigint) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'hold_current_periods_wrapper';
REVOKE EXECUTE ON FUNCTION quota.hold_current_periods(bigint) FROM PUBLIC;
COMMENT ON FUNCTION quota.hold_current_periods(bigint) IS
    'Internal to the trigger pg_entitlements_wait_for_uses: creates, empty, the missing counters '
    'of the user''s current billing period, so that a change that can move the period locks them '
    'and a first use of the period in flight is waited for.';
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
    IF features IS NULL THEN
        -- A change that can move the period: the current period's counters must exist to be
        -- locked, or a first use of the period in flight would count under the period before
        -- the change, where the usage the change carries over would not find it.
        PERFORM quota.hold_current_periods(u) FROM unnest(users) AS u;
    END IF;
    IF TG_TABLE_SCHEMA = 'quota' THEN
        PERFORM FROM quota.user_usage u
         WHERE u.user_id = ANY (users) AND (features IS NULL OR u.feature_code = ANY (features))
           AND u.period_end > now()
         ORDER BY u.user_id, u.feature_code, u.period_start FOR UPDATE OF u;
    ELSE
        -- An attached application's table: its own counters, by the same statement. Its
        -- period_end may be a local time without zone, which now() would be compared with in
        -- the session's zone: a day earlier takes in every current counter whatever the zone
        -- (a few ended ones too, which no use waits for).
        EXECUTE format(
            'SELECT FROM %I.user_usage u
              WHERE u.user_id = ANY ($1) AND ($2 IS NULL OR u.feature_code = ANY ($2))
                AND u.period_end > now() - interval ''1 day''
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
                              start_date, end_date, user_id, quota_reset_anchor,
                              quota_cycle_type ON %s
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

-- The optional features an attached application's tables lack (quota.attach_problems()
-- needed_for): NULL, as no schema is attached while this script runs.
ALTER TABLE quota.settings ADD COLUMN attached_lacks text[]
    CHECK (attached_lacks <@ ARRAY['idempotency_keys', 'refunds', 'alerts', 'booster_packs',
                                      'reservations', 'soft_limits', 'rollover',
                                      'windows', 'config_values',
                                      'window_limits']);
COMMENT ON COLUMN quota.settings.attached_lacks IS
    'Written by quota.attach() and quota.detach() only: the optional features (idempotency_keys, '
    'refunds, alerts, booster_packs) the attached tables lack the columns of; the calls that '
    'need them are refused (0A000).';

-- usage_overview() shows the period's allowance apart and the grants that count: its result
-- changed, so it is dropped and created again.
DROP FUNCTION quota.usage_overview(bigint);
CREATE FUNCTION quota.usage_overview("user_id" bigint) RETURNS TABLE (
	"feature_code" TEXT,
	"feature_name" TEXT,
	"unit" TEXT,
	"has_quota" bool,
	"current_usage" bigint,
	"quota_limit" bigint,
	"remaining" bigint,
	"percentage" NUMERIC,
	"period_start" timestamp with time zone,
	"period_end" timestamp with time zone,
	"cycle" TEXT,
	"allowance" bigint,
	"allowance_used" bigint,
	"grants" jsonb,
	"held" bigint,
	"overage_limit" bigint,
	"overage_used" bigint,
	"kind" TEXT,
	"next_reset" timestamp with time zone,
	"value" jsonb,
	"limits" jsonb
)
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'usage_overview_wrapper';
COMMENT ON FUNCTION quota.usage_overview(bigint) IS
    'Every catalog feature of a user in one call: limit, usage, remaining, percentage, unit and '
    'current period (has_quota false and no period without an active subscription), the '
    'grants included; allowance and allowance_used are the period''s own, and grants lists the '
    'grants that count in use order (id, source, amount, remaining, priority, expires_at); '
    'held is what the period''s active holds claim, part of current_usage; overage_limit the '
    'overage allowed beyond the limit (NULL or 0: none, -1: unlimited) and overage_used what '
    'the period took of it; kind is metered, gauge, boolean or config, next_reset when the '
    'usage starts again from zero (the end of the period in force; NULL when it never resets), '
    'value a boolean feature''s true or false or a config feature''s JSON value (has_quota: on, '
    'or a value other than JSON null; no period). limits lists every limit of the feature, the '
    'main one first, then the further windows (window, limit, used, remaining, window_start, '
    'next_reset); with several, the figures of the row are the tightest''s.';
CREATE FUNCTION quota.sync_granted_storage() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'sync_granted_storage_wrapper';

-- Grants, booster packs and their ledger (sql/grants.sql), with the privileges and comments of
-- a fresh install; verify_ledger() above subtracts what records drew from grants.
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

CREATE FUNCTION quota.announce("channel" TEXT, "payload" TEXT) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'announce_wrapper';

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
-- On a Citus cluster the catalog triggers raise their events through quota.announce, as the
-- role that changes the catalog: no more than pg_notify, which every role may call.
GRANT EXECUTE ON FUNCTION quota.announce(text, text) TO quota_admin;
-- quota.local_shards takes Citus' placement lock on a node's shards until the transaction ends,
-- which holds shard moves back: for the catalog triggers, which run as the role that changes the
-- catalog, only.
REVOKE EXECUTE ON FUNCTION quota.local_shards(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION quota.local_shards(text[]) TO quota_admin;

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

REVOKE EXECUTE ON FUNCTION
    quota.grant_quota(bigint, text, bigint, timestamptz, integer, text, text, text),
    quota.void_grant(bigint, text),
    quota.buy_booster(bigint, text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION quota.buy_booster(bigint, text, text) TO quota_app, quota_admin;
GRANT EXECUTE ON FUNCTION
    quota.grant_quota(bigint, text, bigint, timestamptz, integer, text, text, text),
    quota.void_grant(bigint, text)
TO quota_admin;
GRANT SELECT ON quota.grants TO quota_app;
GRANT SELECT ON quota.grants, quota.grant_uses TO quota_reader, quota_admin;
GRANT USAGE ON SEQUENCE quota.grants_id_seq TO quota_admin;

COMMENT ON TABLE quota.grants IS
    'Extra quota per user and feature beside the period''s allowance (top-ups, booster packs, '
    'promotions, rollovers): a use draws from the allowance first, then from the grants that '
    'count, lower priority first, then the one that expires soonest, then the oldest. Written '
    'by grant_quota(), void_grant(), buy_booster() and the uses only.';

COMMENT ON TABLE quota.grant_uses IS
    'What each usage record drew from each grant (positive) and what each refund gave back '
    '(negative): for every grant, amount - remaining is the sum of its rows (verify_grants()).';

COMMENT ON FUNCTION quota.grant_counts(quota.grants) IS
    'Whether a grant counts now: not voided, and effective_from <= now() < expires_at.';

COMMENT ON FUNCTION quota.grant_event(text, quota.grants) IS
    'Internal: sends a grant''s event (added, exhausted, voided) on channel quota_grant, '
    'delivered at commit.';

COMMENT ON FUNCTION quota.grant_quota(bigint, text, bigint, timestamptz, integer, text, text, text) IS
    'quota_admin. Grants a user extra units of a feature, counting from now until expires_at '
    '(NULL: never), drawn after the period''s allowance in priority order. A repeated '
    'idempotency_key returns the grant it named and adds nothing. Announced on quota_grant.';

COMMENT ON FUNCTION quota.void_grant(bigint, text) IS
    'quota_admin. Stops what is left of a grant from counting, at once, with the reason and '
    'the caller''s login role kept on the grant; units it gave stay used. Idempotent.';

COMMENT ON FUNCTION quota.buy_booster(bigint, text, text) IS
    'quota_app, quota_admin. Buys a booster pack (a plan of plan_kind ''booster''): one grant '
    'per feature of the plan with a value above 0, expiring at 23:59:59 of the day '
    'duration_days after today in the configured time zone. Needs an active base '
    'subscription; a repeated idempotency_key returns the grants of the first purchase.';

COMMENT ON FUNCTION quota.verify_grants(bigint) IS
    'The grants whose used units (amount - remaining) differ from the sum of their rows in '
    'quota.grant_uses; none, always.';

COMMENT ON FUNCTION quota.sync_granted_storage() IS
    'Trigger: after a storage grant is added, voided or its window or amount changes, keeps the '
    'user''s storage_quota_bytes equal to get_user_storage_quota(), which adds the storage '
    'grants that count.';

-- Reservations (sql/reservations.sql): reserve(), settle() and release(), the holds' table,
-- what each counter's holds claim (user_usage.held) and its ledger check, with the privileges
-- and comments of a fresh install.
CREATE FUNCTION quota.reserve("user_id" bigint, "feature_code" TEXT, "amount" INT,
                              "ttl" interval DEFAULT '10 minutes',
                              "idempotency_key" TEXT DEFAULT NULL)
RETURNS TABLE ("allowed" bool, "reservation_id" bigint, "remaining" INT,
               "expires_at" timestamp with time zone)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'reserve_wrapper';
CREATE FUNCTION quota.settle("reservation_id" bigint, "actual_amount" INT,
                             "resource_type" TEXT DEFAULT NULL, "resource_id" bigint DEFAULT NULL,
                             "metadata" jsonb DEFAULT NULL)
RETURNS TABLE ("settled" bool, "usage_record_id" bigint, "released_amount" bigint)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'settle_wrapper';
CREATE FUNCTION quota.release("reservation_id" bigint) RETURNS bool
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'release_wrapper';
CREATE FUNCTION quota.settle("user_id" bigint, "reservation_id" bigint, "actual_amount" INT,
                             "resource_type" TEXT DEFAULT NULL, "resource_id" bigint DEFAULT NULL,
                             "metadata" jsonb DEFAULT NULL)
RETURNS TABLE ("settled" bool, "usage_record_id" bigint, "released_amount" bigint)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'settle_of_user_wrapper';
CREATE FUNCTION quota.release("user_id" bigint, "reservation_id" bigint) RETURNS bool
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'release_of_user_wrapper';
CREATE FUNCTION quota.refund_usage("user_id" bigint, "usage_record_id" bigint)
RETURNS TABLE ("refund_id" bigint, "refunded_amount" INT,
               "period_start" timestamp with time zone, "newly_refunded" bool)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'refund_usage_of_user_wrapper';

ALTER TABLE quota.user_usage
    ADD COLUMN held bigint NOT NULL DEFAULT 0 CHECK (held >= 0);

CREATE TABLE quota.reservations (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    -- The period (its counter) the hold was granted in; a settled hold counts there.
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    expires_at timestamptz NOT NULL,
    -- held: counts while expires_at > now(); settled, released: ended by the call; expired:
    -- found past expires_at while still held.
    state text NOT NULL DEFAULT 'held'
        CHECK (state IN ('held', 'settled', 'released', 'expired')),
    -- The actual use settle() recorded, and its usage record (none for 0).
    settled_amount bigint CHECK (settled_amount >= 0),
    record_id bigint,
    idempotency_key quota.idempotency_key,
    -- The login role of the session that reserved.
    actor text NOT NULL DEFAULT session_user,
    created_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    PRIMARY KEY (user_id, id),
    CHECK (expires_at > created_at),
    CHECK ((state = 'held') = (ended_at IS NULL)),
    CHECK ((state = 'settled') = (settled_amount IS NOT NULL))
);
-- The holds a counter's uses reclaim and its reads add up.
CREATE INDEX reservations_held_idx ON quota.reservations (user_id, feature_code, period_start)
    WHERE state = 'held';
-- settle(reservation_id) and release(reservation_id) find a hold by its id alone.
CREATE INDEX reservations_id_idx ON quota.reservations (id);
CREATE UNIQUE INDEX reservations_idempotency_key_idx
    ON quota.reservations (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('quota.reservations', '');
SELECT pg_catalog.pg_extension_config_dump('quota.reservations_id_seq', '');

-- The holds' ledger: for every counter, held equals the sum of the amounts of its holds of state
-- 'held'. Returns the counters that disagree: none, always. It reads the tables the functions
-- use: the extension's own user_usage, or the one quota.attach() bound.
CREATE FUNCTION quota.verify_holds(for_user bigint DEFAULT NULL)
RETURNS TABLE (user_id bigint, feature_code text, period_start timestamptz, held bigint,
               ledger bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tables name := coalesce((SELECT st.attached_schema FROM quota.settings st), 'quota');
    -- An attached application's period_start without time zone holds its local time.
    local_zone text := (SELECT st.attached_time_zone FROM quota.settings st
                         WHERE (SELECT a.atttypid FROM pg_attribute a
                                 WHERE a.attrelid = to_regclass(format('%I.user_usage', tables))
                                   AND a.attname = 'period_start' AND NOT a.attisdropped)
                               = 'timestamp'::regtype);
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute a
                    WHERE a.attrelid = to_regclass(format('%I.user_usage', tables))
                      AND a.attname = 'held' AND NOT a.attisdropped) THEN
        -- Without the column no hold is granted.
        RETURN QUERY SELECT r.user_id, r.feature_code, r.period_start, 0::bigint, r.amount
                       FROM quota.reservations r
                      WHERE r.state = 'held' AND (for_user IS NULL OR r.user_id = for_user);
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT coalesce(u.user_id, r.user_id)::bigint, coalesce(u.feature_code, r.feature_code)::text,
               coalesce(u.period_start, r.period_start)::timestamptz,
               coalesce(u.held, 0)::bigint, coalesce(r.total, 0)::bigint
          FROM (SELECT x.user_id, x.feature_code, %2$s AS period_start, x.held
                  FROM %1$I.user_usage x
                 WHERE x.held <> 0 AND ($1 IS NULL OR x.user_id = $1)) u
          FULL JOIN (SELECT x.user_id, x.feature_code, x.period_start, sum(x.amount) AS total
                       FROM quota.reservations x
                      WHERE x.state = 'held' AND ($1 IS NULL OR x.user_id = $1)
                      GROUP BY 1, 2, 3) r
            ON u.user_id = r.user_id AND u.feature_code = r.feature_code
           AND u.period_start = r.period_start
         WHERE coalesce(u.held, 0) IS DISTINCT FROM coalesce(r.total, 0)
         ORDER BY 1, 2, 3$q$, tables,
        CASE WHEN local_zone IS NULL THEN 'x.period_start::timestamptz'
             ELSE format('x.period_start AT TIME ZONE %L', local_zone) END)
    USING for_user;
END
$$;

REVOKE EXECUTE ON FUNCTION
    quota.reserve(bigint, text, integer, interval, text),
    quota.settle(bigint, integer, text, bigint, jsonb),
    quota.release(bigint),
    quota.settle(bigint, bigint, integer, text, bigint, jsonb),
    quota.release(bigint, bigint),
    quota.refund_usage(bigint, bigint)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    quota.reserve(bigint, text, integer, interval, text),
    quota.settle(bigint, integer, text, bigint, jsonb),
    quota.release(bigint),
    quota.settle(bigint, bigint, integer, text, bigint, jsonb),
    quota.release(bigint, bigint),
    quota.refund_usage(bigint, bigint)
TO quota_app;
GRANT SELECT ON quota.reservations TO quota_app, quota_reader, quota_admin;
GRANT USAGE ON SEQUENCE quota.reservations_id_seq TO quota_admin;

COMMENT ON TABLE quota.reservations IS
    'Holds taken by reserve() before slow work: an active hold (state held, expires_at still '
    'ahead) counts against what is left until settle(), release() or its expiry. Written by '
    'reserve(), settle(), release() and the uses only.';

COMMENT ON COLUMN quota.user_usage.held IS
    'What the period''s holds of state held claim (quota.reservations), expired ones until a '
    'use reclaims them; every use sees it under the counter''s lock. verify_holds() checks it.';

COMMENT ON FUNCTION quota.reserve(bigint, text, integer, interval, text) IS
    'quota_app. Holds amount units for ttl (10 minutes by default) when what is left (the '
    'allowance, then the grants, less the active holds) covers them: (allowed, reservation_id, '
    'remaining, expires_at). Under any concurrency the holds and uses of a period never exceed '
    'what it allows. A repeated idempotency_key returns its hold and holds nothing more. '
    'Announced on quota_reservation (granted).';

COMMENT ON FUNCTION quota.settle(bigint, integer, text, bigint, jsonb) IS
    'quota_app. Records the actual use of a hold as a usage record in the hold''s period and '
    'gives the rest back: (settled, usage_record_id, released_amount). Up to the held amount it '
    'always counts while the hold is active; beyond it, or once the hold expired, only when '
    'what is left allows (settled false otherwise, nothing recorded). Settling again with the '
    'same amount returns the first outcome. Announced on quota_reservation (settled).';

COMMENT ON FUNCTION quota.release(bigint) IS
    'quota_app. Gives a hold''s units back at once: true when it ended an active hold, false '
    'for one that had expired or was settled or released. Announced on quota_reservation '
    '(released).';

COMMENT ON FUNCTION quota.refund_usage(bigint, bigint) IS
    'Refunds one usage record of the user named, by its id; see refund_usage(bigint). Naming '
    'the user lets a Citus cluster send the call to the user''s worker.';

COMMENT ON FUNCTION quota.settle(bigint, bigint, integer, text, bigint, jsonb) IS
    'quota_app. settle(reservation_id, ...) of a hold of the user named (user_id first); a hold '
    'of another user is not found. Naming the user lets a Citus cluster send the call to the '
    'user''s worker.';

COMMENT ON FUNCTION quota.release(bigint, bigint) IS
    'quota_app. release(reservation_id) of a hold of the user named (user_id first); a hold of '
    'another user is not found. Naming the user lets a Citus cluster send the call to the '
    'user''s worker.';

COMMENT ON FUNCTION quota.announce(text, text) IS
    'pg_notify(channel, payload) for the events the extension raises: at once on one server; on a '
    'Citus cluster held by the backend until the transaction commits (after COMMIT PREPARED for '
    'a transaction Citus commits in two phases), and dropped with a rollback.';

COMMENT ON FUNCTION quota.verify_holds(bigint) IS
    'The counters whose held differs from the sum of their holds of state held in '
    'quota.reservations; none, always.';

-- Soft limits (sql/soft_limits.sql), with the privileges and comments of a fresh install.
ALTER TABLE quota.features
    ADD COLUMN overage_limit integer CHECK (overage_limit >= -1);
ALTER TABLE quota.plan_features
    ADD COLUMN overage_limit integer CHECK (overage_limit >= -1);

-- What each usage record took beyond the limit as overage (amount > 0), and what its refund
-- gave back of it (< 0). record_id is the id of the usage record in the usage_records table the
-- functions use (the extension's own, or an attached application's), so it has no foreign key.
CREATE TABLE quota.overage_uses (
    user_id bigint NOT NULL,
    record_id bigint NOT NULL,
    feature_code text NOT NULL,
    -- The period of the counter the units counted on.
    period_start timestamptz NOT NULL,
    amount bigint NOT NULL CHECK (amount <> 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, record_id)
);
-- What a user's feature took as overage in a period: usage_overview and billing sum it.
CREATE INDEX overage_uses_period_idx ON quota.overage_uses (user_id, feature_code, period_start);

SELECT pg_catalog.pg_extension_config_dump('quota.overage_uses', '');
GRANT SELECT ON quota.overage_uses TO quota_app, quota_reader, quota_admin;

COMMENT ON COLUMN quota.features.overage_limit IS
    'Soft limit: the overage allowed beyond the limit each period, unless the plan feature sets '
    'its own (NULL or 0: none, the default; -1: unlimited). Uses beyond the limit and the '
    'grants but within it are allowed and marked in quota.overage_uses.';

COMMENT ON COLUMN quota.plan_features.overage_limit IS
    'Soft limit of this plan: the overage allowed beyond the limit each period (NULL: the '
    'catalog''s features.overage_limit; 0: none; -1: unlimited).';

COMMENT ON TABLE quota.overage_uses IS
    'What each usage record took beyond the limit as allowed overage (positive), and what its '
    'refund gave back of it (negative), per period: what billing charges.';

-- Whether a feature was ever granted (sql/granted.sql): set for the features granted so far.
ALTER TABLE quota.features ADD COLUMN granted boolean NOT NULL DEFAULT false;

CREATE FUNCTION quota.mark_granted_features()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- On a Citus cluster the trigger fires on a shard of the grants, from where the catalog (a
    -- reference table) cannot be written; quota.distribute() marks every feature instead.
    IF TG_RELID <> 'quota.grants'::regclass THEN
        RETURN NULL;
    END IF;
    UPDATE quota.features f SET granted = true
     WHERE NOT f.granted AND f.code IN (SELECT n.feature_code FROM new_grants n);
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION quota.mark_granted_features() FROM PUBLIC;
CREATE TRIGGER pg_entitlements_mark_granted
    AFTER INSERT ON quota.grants REFERENCING NEW TABLE AS new_grants
    FOR EACH STATEMENT EXECUTE FUNCTION quota.mark_granted_features();

CREATE FUNCTION quota.keep_granted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.granted := OLD.granted OR NEW.granted;
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION quota.keep_granted() FROM PUBLIC;
CREATE TRIGGER keep_granted BEFORE UPDATE OF granted ON quota.features
    FOR EACH ROW EXECUTE FUNCTION quota.keep_granted();
UPDATE quota.features f SET granted = true
 WHERE EXISTS (SELECT FROM quota.grants g WHERE g.feature_code = f.code);
COMMENT ON COLUMN quota.features.granted IS
    'Whether any user was ever granted this feature: set by the first grant, never cleared. A '
    'check of a feature nobody was granted reads no grant.';

COMMENT ON FUNCTION quota.mark_granted_features() IS
    'Trigger: marks the features of new grants as granted (quota.features.granted).';

COMMENT ON FUNCTION quota.keep_granted() IS
    'Trigger: keeps quota.features.granted set once it is: a feature marked as never granted '
    'while it has grants would hide them from the checks.';

-- Limit windows (sql/windows.sql): calendar hours, days, weeks, months and years, per feature
-- or per plan feature, and their arithmetic alone.
CREATE FUNCTION quota.calendar_window("window" TEXT, "at" timestamp with time zone,
                                      "time_zone" TEXT DEFAULT 'UTC')
RETURNS TABLE ("window_start" timestamp with time zone, "window_end" timestamp with time zone)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'calendar_window_wrapper';
COMMENT ON FUNCTION quota.calendar_window(text, timestamptz, text) IS
    'The calendar window (hour, day, ISO week from Monday, month or year) that contains at, in '
    'local time of time_zone: the windows a reset_rule of that name counts usage in.';

ALTER TABLE quota.features DROP CONSTRAINT features_reset_rule_check,
    ADD CONSTRAINT features_reset_rule_check CHECK (reset_rule IN ('billing_cycle', 'hour', 'day', 'week', 'month', 'year', 'subscription', 'never'));
ALTER TABLE quota.plan_features
    ADD COLUMN reset_rule text CHECK (reset_rule IN ('billing_cycle', 'hour', 'day', 'week', 'month', 'year', 'subscription', 'never'));
COMMENT ON COLUMN quota.plan_features.reset_rule IS
    'When this plan''s usage of the feature resets (NULL: the catalog''s features.reset_rule): '
    'billing_cycle, a calendar hour, day, week (ISO, from Monday), month or year in '
    'quota.settings.time_zone, subscription or never.';

-- Several limits on one feature (sql/windows.sql).
CREATE FUNCTION quota.valid_window_limits("window_limits" jsonb) RETURNS bool
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'valid_window_limits_wrapper';
ALTER TABLE quota.features
    ADD COLUMN window_limits jsonb CHECK (quota.valid_window_limits(window_limits));
ALTER TABLE quota.plan_features
    ADD COLUMN window_limits jsonb CHECK (quota.valid_window_limits(window_limits));
CREATE TABLE quota.window_usage (
    user_id bigint NOT NULL,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    window_name text NOT NULL CHECK (window_name IN ('hour', 'day', 'week', 'month', 'year', 'billing_cycle')),
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    usage_count bigint NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, feature_code, window_name, window_start)
);
SELECT pg_catalog.pg_extension_config_dump('quota.window_usage', '');
GRANT SELECT ON quota.window_usage TO quota_app, quota_reader, quota_admin;
COMMENT ON COLUMN quota.features.window_limits IS
    'Further limits of a metered feature over other windows, for plans that set none: a JSON '
    'object from window (hour, day, week, month, year, billing_cycle) to limit, such as '
    '{"day": 100}. A use must fit every limit; check_user_quota reports the tightest.';

COMMENT ON COLUMN quota.plan_features.window_limits IS
    'This plan''s further limits of the feature over other windows (NULL: the catalog''s '
    'features.window_limits), such as {"day": 100} beside 1000 per billing month.';

COMMENT ON TABLE quota.window_usage IS
    'What each further window of a feature with several limits counted, per user and window '
    'start; uses count in it, refunds of uses made in the window give back.';

COMMENT ON FUNCTION quota.valid_window_limits(jsonb) IS
    'The CHECK of window_limits: true for an object from windows to limits, an error naming '
    'the problem otherwise.';

-- Feature kinds (sql/kinds.sql): running counts, counted down by release_usage.
ALTER TABLE quota.features
    ADD COLUMN kind text NOT NULL DEFAULT 'metered'
        CHECK (kind IN ('metered', 'gauge', 'boolean', 'config')),
    -- The value of a feature of kind config for subscriptions whose plan sets none (NULL: none).
    ADD COLUMN default_value jsonb;
-- The value a plan gives a feature of kind config (NULL: the catalog's default_value).
ALTER TABLE quota.plan_features ADD COLUMN config_value jsonb;

-- What release_usage took off a running count: a row of its own, as in the ledger a negative
-- amount is a refund and only that. For every counter, usage_count equals its usage records,
-- less what they drew from grants, less its releases (quota.verify_ledger()). Here also when
-- an application's tables are attached.
CREATE TABLE quota.releases (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    -- The period of the counter it counted down (-infinity for a running count).
    period_start timestamptz NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    idempotency_key quota.idempotency_key,
    resource_type text,
    resource_id bigint,
    metadata jsonb,
    -- The login role of the session that released.
    actor text NOT NULL DEFAULT session_user,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id)
);
CREATE INDEX releases_counter_idx ON quota.releases (user_id, feature_code, period_start);
CREATE UNIQUE INDEX releases_idempotency_key_idx
    ON quota.releases (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('quota.releases', '');
SELECT pg_catalog.pg_extension_config_dump('quota.releases_id_seq', '');
GRANT SELECT ON quota.releases TO quota_reader, quota_admin;
GRANT USAGE ON SEQUENCE quota.releases_id_seq TO quota_admin;
CREATE FUNCTION quota.release_usage("user_id" bigint, "feature_code" TEXT, "amount" INT DEFAULT 1,
                                    "idempotency_key" TEXT DEFAULT NULL,
                                    "resource_type" TEXT DEFAULT NULL,
                                    "resource_id" bigint DEFAULT NULL, "metadata" jsonb DEFAULT NULL)
RETURNS TABLE ("released" bigint, "current_usage" INT, "quota_limit" INT, "remaining" INT)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'release_usage_wrapper';
REVOKE EXECUTE ON FUNCTION quota.release_usage(bigint, text, integer, text, text, bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION quota.release_usage(bigint, text, integer, text, text, bigint, jsonb) TO quota_app;
CREATE FUNCTION quota.has_feature("user_id" bigint, "feature_code" TEXT) RETURNS bool
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'has_feature_wrapper';
CREATE FUNCTION quota.feature_value("user_id" bigint, "feature_code" TEXT) RETURNS jsonb
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'feature_value_wrapper';
COMMENT ON COLUMN quota.features.kind IS
    'metered (the default): uses counted per period; gauge: a running count (seats, connected '
    'accounts) that goes up with the uses and down with release_usage, never resets, and is '
    'checked on the way up only; boolean: on or off (has_feature; a plan''s feature_value or '
    'default_limit 0 is off, any other value on; custom_quotas true/false or 1/0); config: a '
    'JSON value (feature_value; plan_features.config_value, features.default_value, any JSON '
    'in custom_quotas). Boolean and config features are not used up.';

COMMENT ON COLUMN quota.features.default_value IS
    'The value of a config feature for subscriptions whose plan sets none (NULL or JSON null: none).';

COMMENT ON COLUMN quota.plan_features.config_value IS
    'The value this plan gives a config feature (NULL or JSON null: the catalog''s default_value).';

COMMENT ON FUNCTION quota.has_feature(bigint, text) IS
    'Whether the user has the feature now: a boolean feature that is on, a config feature whose '
    'value is not JSON null, a metered or gauge feature whose limit is not 0 (used up or not). '
    'False without an active subscription.';

COMMENT ON FUNCTION quota.feature_value(bigint, text) IS
    'The user''s value of a feature now, by custom_quotas, then the plan, then the catalog: a '
    'config feature''s JSON value, a boolean feature''s true or false, a metered or gauge '
    'feature''s limit (-1: unlimited). NULL without an active subscription or any value.';

COMMENT ON FUNCTION quota.release_usage(bigint, text, integer, text, text, bigint, jsonb) IS
    'quota_app. Counts a running count (a feature of kind gauge) down by amount, never below '
    'zero, with a usage record of the units released (negative): (released, current_usage, '
    'quota_limit, remaining). A retry with the same idempotency_key returns what its release '
    'released and releases nothing more.';

COMMENT ON TABLE quota.releases IS
    'What release_usage took off a running count (kind gauge), with its key and resource: for '
    'every counter, usage_count = its usage records - what they drew from grants - its '
    'releases (verify_ledger()).';

-- Rollover (sql/rollover.sql), with the comments of a fresh install.
ALTER TABLE quota.features
    ADD COLUMN rollover_max integer CHECK (rollover_max >= -1),
    ADD COLUMN rollover_periods integer NOT NULL DEFAULT 1 CHECK (rollover_periods >= 1);
ALTER TABLE quota.plan_features
    ADD COLUMN rollover_max integer CHECK (rollover_max >= -1),
    ADD COLUMN rollover_periods integer CHECK (rollover_periods >= 1);

ALTER TABLE quota.grants
    ADD COLUMN rollover_from timestamptz CHECK (rollover_from IS NULL OR source = 'rollover');
CREATE UNIQUE INDEX grants_rollover_idx ON quota.grants (user_id, feature_code, rollover_from)
    WHERE rollover_from IS NOT NULL;

COMMENT ON COLUMN quota.features.rollover_max IS
    'Rollover: the most of a period''s unused allowance that becomes a grant of the next '
    'period (NULL or 0: none, the default; -1: all of it), unless the plan feature sets its own.';

COMMENT ON COLUMN quota.features.rollover_periods IS
    'How many periods a rollover grant lasts, the one it starts in included.';

COMMENT ON COLUMN quota.plan_features.rollover_max IS
    'Rollover of this plan (NULL: the catalog''s features.rollover_max; 0: none; -1: all).';

COMMENT ON COLUMN quota.plan_features.rollover_periods IS
    'How many periods this plan''s rollover grants last (NULL: the catalog''s).';

COMMENT ON COLUMN quota.grants.rollover_from IS
    'For a rollover grant: the start of the period whose unused allowance it holds; one per '
    'user, feature and period.';

-- A restored dump's edits of a built-in feature keep its soft limit and rollover too.
CREATE OR REPLACE FUNCTION quota.features_restore_builtin() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE quota.features f
       SET name = NEW.name, unit = NEW.unit, reset_rule = NEW.reset_rule,
           default_limit = NEW.default_limit, alert_thresholds = NEW.alert_thresholds,
           overage_limit = NEW.overage_limit, rollover_max = NEW.rollover_max,
           rollover_periods = NEW.rollover_periods, granted = f.granted OR NEW.granted,
           kind = NEW.kind, default_value = NEW.default_value
     WHERE f.code = NEW.code AND f.builtin;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

-- Time-driven lifecycle (issue 18; sql/lifecycle.sql), with the comments of a fresh install.
-- Whether the tables are laid out over a Citus cluster: the tick then goes user by user (src/api.rs).
CREATE FUNCTION quota.distributed() RETURNS bool
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'distributed_wrapper';
-- The rollover grants the tick creates, as the first write of a period would (src/api.rs).
CREATE FUNCTION quota.create_due_rollover("user_id" bigint, "feature_code" TEXT) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_due_rollover_wrapper';

-- Settings of the tick. fallback_plan_code: the plan (of kind 'base') a user whose subscription
-- ended without another one gets from that instant (NULL: none, the user has no subscription);
-- grant_warning_days: how long before a grant expires its 'expiring' event is sent;
-- tick_batch_size: how many rows of each kind one call handles at most, so that a backlog
-- drains over several calls without one long transaction.
ALTER TABLE quota.settings
    ADD COLUMN fallback_plan_code text,
    ADD COLUMN grant_warning_days integer NOT NULL DEFAULT 3 CHECK (grant_warning_days >= 0),
    ADD COLUMN tick_batch_size integer NOT NULL DEFAULT 1000 CHECK (tick_batch_size > 0);

-- A trial is an active subscription marked as one: it counts like any active subscription
-- (the reads and their partial index know status 'active' only), and at its end_date the tick
-- ends it with event trial_ended, into the plan scheduled for that instant or the fallback.
ALTER TABLE quota.user_subscriptions ADD COLUMN trial boolean NOT NULL DEFAULT false;

-- The subscriptions the tick expires: status 'active', end_date passed, soonest first.
CREATE INDEX user_subscriptions_end_idx ON quota.user_subscriptions (end_date)
    WHERE status = 'active';
-- The subscriptions whose start the storage resync follows (pre-created renewals).
CREATE INDEX user_subscriptions_start_idx ON quota.user_subscriptions (start_date)
    WHERE status = 'active';
-- The grants whose warning is due, and those that expire.
CREATE INDEX grants_expires_idx ON quota.grants (expires_at) WHERE expires_at IS NOT NULL;
-- The holds the tick expires.
CREATE INDEX reservations_expires_idx ON quota.reservations (expires_at) WHERE state = 'held';

-- A plan change to apply at due_at (schedule_plan_change): at most one pending per user.
-- Applying it ends the subscription that counts up to due_at there and starts one on plan_id
-- from due_at until that subscription's end (the rest of what was paid for), or, when it
-- ended at due_at, for one cycle of the plan.
CREATE TABLE quota.scheduled_changes (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    plan_id bigint NOT NULL REFERENCES quota.subscription_plans (id),
    due_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'applied', 'cancelled')),
    -- The subscription applying it started.
    subscription_id bigint,
    -- Free text the caller passes (its current_user by default); session_role is the login
    -- role of the session whatever it says.
    actor text NOT NULL,
    session_role text NOT NULL DEFAULT session_user,
    created_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    PRIMARY KEY (user_id, id),
    CHECK ((state = 'pending') = (ended_at IS NULL)),
    CHECK ((state = 'applied') = (subscription_id IS NOT NULL))
);
CREATE UNIQUE INDEX scheduled_changes_pending_idx ON quota.scheduled_changes (user_id)
    WHERE state = 'pending';
CREATE INDEX scheduled_changes_due_idx ON quota.scheduled_changes (due_at)
    WHERE state = 'pending';

-- The audit of the lifecycle: one row per change of a subscription made by pause, resume,
-- scheduling or the tick, which is also the event announced on channel quota_subscription.
CREATE TABLE quota.subscription_changes (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    subscription_id bigint,
    change text NOT NULL
        CHECK (change IN ('paused', 'resumed', 'change_scheduled', 'change_cancelled',
                          'plan_changed', 'expired', 'trial_ended', 'fallback_started')),
    plan_id bigint,
    -- The instant the change takes effect (a tick's changes: the instant they were due).
    effective_at timestamptz NOT NULL,
    -- What else the event says (the plan before a change, how long a pause lasted, ...).
    details jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    reason text,
    actor text NOT NULL,
    session_role text NOT NULL DEFAULT session_user,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id)
);

-- The grants' 'expiring' warnings sent: once per grant.
CREATE TABLE quota.grant_notices (
    user_id bigint NOT NULL,
    grant_id bigint NOT NULL,
    notice text NOT NULL CHECK (notice IN ('expiring')),
    sent_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, grant_id, notice),
    FOREIGN KEY (user_id, grant_id) REFERENCES quota.grants (user_id, id)
);

-- How far the tick got in the things it finds by their instant alone, without a row of its
-- own to mark: the grants that expired (announced up to (grants_expired_to, grants_expired_id)),
-- the instants that move a storage quota (resynced up to (storage_synced_to,
-- storage_synced_user)) and the ends of periods a rollover may come from. No row: nothing yet, so the first tick after an install or a restore
-- resyncs every storage row, in batches.
CREATE TABLE quota.tick_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    grants_expired_to timestamptz NOT NULL DEFAULT '-infinity',
    grants_expired_id bigint NOT NULL DEFAULT 0,
    storage_synced_to timestamptz NOT NULL DEFAULT '-infinity',
    storage_synced_user bigint NOT NULL DEFAULT -9223372036854775808,
    -- The counters whose period's end was looked at for a rollover due from it.
    rollover_checked_to timestamptz NOT NULL DEFAULT '-infinity',
    rollover_checked_user bigint NOT NULL DEFAULT -9223372036854775808,
    rollover_checked_feature text NOT NULL DEFAULT '',
    -- The at of the last tick that ran.
    ticked_at timestamptz
);

SELECT pg_catalog.pg_extension_config_dump('quota.scheduled_changes', '');
SELECT pg_catalog.pg_extension_config_dump('quota.subscription_changes', '');
SELECT pg_catalog.pg_extension_config_dump('quota.grant_notices', '');
SELECT pg_catalog.pg_extension_config_dump('quota.tick_state', '');
SELECT pg_catalog.pg_extension_config_dump('quota.scheduled_changes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('quota.subscription_changes_id_seq', '');

-- Announced on channel quota_subscription (quota.announce): version 1 of the payload, one per
-- audit row.
CREATE FUNCTION quota.subscription_event(c quota.subscription_changes)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT quota.announce('quota_subscription', (jsonb_build_object(
        'version', 1, 'event', c.change, 'user_id', c.user_id,
        'subscription_id', c.subscription_id, 'plan_id', c.plan_id,
        'effective_at', c.effective_at) || c.details)::text)
$$;
REVOKE EXECUTE ON FUNCTION quota.subscription_event(quota.subscription_changes) FROM PUBLIC;

-- The first end of a subscription started at `start` that lies after `after`: start plus one
-- or more cycles of its plan, whose duration_days is `days` and billing_cycle `cycle`, in the
-- zone `zone`. A monthly or yearly plan's cycles are its anniversary periods from start
-- (quota.anniversary_period, the rule of every billing period: month ends clamp without
-- drift); a plan of duration_days, whole spans of that many local days. A fallback that starts
-- long ago (a tick after downtime) thus lasts past the tick, instead of a chain of ended
-- subscriptions. It reads no table: the tick's statements pass the plan's and the settings'
-- values, since on a Citus cluster they run on a shard, where a read of the catalog would be a
-- distributed query Citus refuses.
CREATE FUNCTION quota.cycle_end(days integer, cycle text, zone text, start timestamptz,
                                after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    local timestamp;
    since interval;
BEGIN
    IF zone IS NULL OR start IS NULL OR after IS NULL THEN
        RETURN NULL;
    END IF;
    IF NOT (isfinite(start) AND isfinite(after)) THEN
        RAISE EXCEPTION 'cycle_end: no cycle ends after % counting from %', after, start
            USING ERRCODE = '22008';
    END IF;
    IF days < 1 THEN
        RAISE EXCEPTION 'cycle_end: a cycle of % days', days USING ERRCODE = '22023';
    END IF;
    IF days IS NULL THEN
        RETURN (SELECT a.period_end
                  FROM quota.anniversary_period(
                           start, CASE WHEN cycle = 'yearly' THEN 'yearly' ELSE 'monthly' END,
                           greatest(start, after), zone) a);
    END IF;
    local := start AT TIME ZONE zone;
    since := (greatest(start, after) AT TIME ZONE zone) - local;
    RETURN (local + make_interval(days => days * (floor(extract(epoch FROM since) / 86400 / days)::integer + 1)))
           AT TIME ZONE zone;
END
$$;

-- Refuses the lifecycle functions that write subscriptions while an application's tables are
-- attached: its own jobs manage its subscriptions.
CREATE FUNCTION quota.require_own_subscriptions(caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tables name := (SELECT st.attached_schema FROM quota.settings st);
BEGIN
    IF tables IS NOT NULL THEN
        RAISE EXCEPTION '%: not available while the tables of schema "%" are attached', caller, tables
            USING ERRCODE = '0A000',
                  HINT = 'The lifecycle functions write quota.user_subscriptions; the application''s own jobs manage its subscriptions.';
    END IF;
END
$$;

-- One audited change of a subscription, announced: the row of quota.subscription_changes.
CREATE FUNCTION quota.subscription_changed(user_id bigint, subscription_id bigint, change text,
                                           plan_id bigint, effective_at timestamptz,
                                           details jsonb, actor text)
RETURNS quota.subscription_changes
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c quota.subscription_changes;
BEGIN
    INSERT INTO quota.subscription_changes AS x
           (user_id, subscription_id, change, plan_id, effective_at, details, actor)
    VALUES (user_id, subscription_id, change, plan_id, effective_at, details, actor)
    RETURNING x.* INTO c;
    PERFORM quota.subscription_event(c);
    RETURN c;
END
$$;
REVOKE EXECUTE ON FUNCTION quota.subscription_changed(bigint, bigint, text, bigint, timestamptz, jsonb, text) FROM PUBLIC;

-- Pauses every subscription of the user with status 'active' that has not ended (the one that
-- counts and any pre-created renewal): status 'paused', paused_at = now(). While paused the
-- user has no active subscription: has_quota is false, consume is refused and
-- record_feature_usage raises 'no active subscription'; counters, gauges and grants are kept.
-- The triggers resync the storage quota and announce the limits that moved.
CREATE FUNCTION quota.pause_subscription(user_id bigint, reason text, actor text DEFAULT current_user)
RETURNS SETOF quota.user_subscriptions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    IF user_id IS NULL OR actor IS NULL THEN
        RAISE EXCEPTION 'pause_subscription: user_id and actor must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF coalesce(btrim(reason), '') = '' THEN
        RAISE EXCEPTION 'pause_subscription: user %: a reason is required', user_id
            USING ERRCODE = '22023', HINT = 'Say why the subscription is paused; it is kept in quota.subscription_changes.';
    END IF;
    PERFORM quota.require_own_subscriptions('pause_subscription');
    RETURN QUERY
    WITH paused AS (
        UPDATE quota.user_subscriptions s SET status = 'paused', paused_at = now()
         WHERE s.user_id = pause_subscription.user_id AND s.status = 'active'
           AND s.end_date > now()
        RETURNING s.*
    ), audit AS (
        INSERT INTO quota.subscription_changes AS c
               (user_id, subscription_id, change, plan_id, effective_at, reason, actor)
        SELECT p.user_id, p.id, 'paused', p.plan_id, now(), pause_subscription.reason,
               pause_subscription.actor
          FROM paused p ORDER BY p.id
        RETURNING ROW(c.*)::quota.subscription_changes AS entry
    ), announced AS (
        SELECT count(quota.subscription_event(o.entry)) AS n
          FROM (SELECT a.entry FROM audit a ORDER BY (a.entry).id) o
    )
    SELECT p.* FROM paused p, announced ORDER BY p.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RAISE EXCEPTION 'pause_subscription: user % has no active subscription to pause', user_id
            USING ERRCODE = 'P0002',
                  HINT = 'Only a subscription with status ''active'' whose end_date is still to come can be paused.';
    END IF;
END
$$;

-- Resumes the user's paused subscriptions: status 'active' again. With extend_end_date (the
-- default) each gets the time it was paused added to its end_date, and one that had not
-- started when it was paused to its start_date too, so renewals keep their order, and a plan
-- change pending for after the pause moves with them (the tick leaves it alone while paused);
-- without it the dates stay, and what fell due meanwhile is applied by the next tick.
CREATE FUNCTION quota.resume_subscription(user_id bigint, extend_end_date boolean DEFAULT true,
                                          actor text DEFAULT current_user)
RETURNS SETOF quota.user_subscriptions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    -- When the pause began (pause_subscription pauses all of a user's subscriptions at once).
    since timestamptz;
BEGIN
    IF user_id IS NULL OR extend_end_date IS NULL OR actor IS NULL THEN
        RAISE EXCEPTION 'resume_subscription: user_id, extend_end_date and actor must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    PERFORM quota.require_own_subscriptions('resume_subscription');
    SELECT min(s.paused_at) INTO since FROM quota.user_subscriptions s
     WHERE s.user_id = resume_subscription.user_id AND s.status = 'paused';
    RETURN QUERY
    WITH before AS (
        SELECT s.user_id, s.id, s.paused_at, now() - s.paused_at AS paused_for
          FROM quota.user_subscriptions s
         WHERE s.user_id = resume_subscription.user_id AND s.status = 'paused'
         FOR UPDATE OF s
    ), resumed AS (
        UPDATE quota.user_subscriptions s
           SET status = 'active', paused_at = NULL,
               end_date = CASE WHEN extend_end_date THEN s.end_date + b.paused_for ELSE s.end_date END,
               start_date = CASE WHEN extend_end_date AND s.start_date > b.paused_at
                                 THEN s.start_date + b.paused_for ELSE s.start_date END
          FROM before b
         WHERE s.user_id = b.user_id AND s.id = b.id
        RETURNING s AS sub, b.paused_for
    ), audit AS (
        INSERT INTO quota.subscription_changes AS c
               (user_id, subscription_id, change, plan_id, effective_at, details, actor)
        SELECT (r.sub).user_id, (r.sub).id, 'resumed', (r.sub).plan_id, now(),
               jsonb_build_object('paused_for', r.paused_for::text,
                                  'end_date_extended', extend_end_date,
                                  'end_date', (r.sub).end_date),
               resume_subscription.actor
          FROM resumed r ORDER BY (r.sub).id
        RETURNING ROW(c.*)::quota.subscription_changes AS entry
    ), announced AS (
        SELECT count(quota.subscription_event(o.entry)) AS n
          FROM (SELECT a.entry FROM audit a ORDER BY (a.entry).id) o
    )
    SELECT (r.sub).* FROM resumed r, announced ORDER BY (r.sub).id;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RAISE EXCEPTION 'resume_subscription: user % has no paused subscription', user_id
            USING ERRCODE = 'P0002';
    END IF;
    IF extend_end_date THEN
        UPDATE quota.scheduled_changes c SET due_at = c.due_at + (now() - since)
         WHERE c.user_id = resume_subscription.user_id AND c.state = 'pending'
           AND c.due_at > since;
    END IF;
END
$$;

-- Schedules the user's move to plan_code at `at` (NULL, the default: the end of the current
-- billing period, quota.get_quota_period()), applied by the first tick at or after it. A
-- change pending already is replaced (cancelled, then this one scheduled).
CREATE FUNCTION quota.schedule_plan_change(user_id bigint, plan_code text,
                                           at timestamptz DEFAULT NULL,
                                           actor text DEFAULT current_user)
RETURNS quota.scheduled_changes
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    plan bigint;
    due timestamptz := schedule_plan_change.at;
    ch quota.scheduled_changes;
BEGIN
    IF user_id IS NULL OR plan_code IS NULL OR actor IS NULL THEN
        RAISE EXCEPTION 'schedule_plan_change: user_id, plan_code and actor must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    PERFORM quota.require_own_subscriptions('schedule_plan_change');
    SELECT p.id INTO plan FROM quota.subscription_plans p
     WHERE p.plan_code = schedule_plan_change.plan_code AND p.plan_kind = 'base';
    IF plan IS NULL THEN
        RAISE EXCEPTION 'user %: no base plan with plan_code "%"', user_id, plan_code
            USING ERRCODE = 'P0002';
    END IF;
    IF due IS NULL THEN
        SELECT p.period_end INTO due FROM quota.get_quota_period(schedule_plan_change.user_id) p;
        IF due IS NULL THEN
            RAISE EXCEPTION 'user %: no active subscription, so no current period to end', user_id
                USING ERRCODE = 'P0002', HINT = 'Pass the instant of the change as at.';
        END IF;
    END IF;
    IF due <= now() THEN
        RAISE EXCEPTION 'user %: a plan change at % is not in the future', user_id, due
            USING ERRCODE = '22023',
                  HINT = 'Change the plan now with an UPDATE of the subscription''s plan_id.';
    END IF;
    PERFORM quota.cancel_scheduled_change(schedule_plan_change.user_id, schedule_plan_change.actor);
    INSERT INTO quota.scheduled_changes AS c (user_id, plan_id, due_at, actor)
    VALUES (schedule_plan_change.user_id, plan, due, schedule_plan_change.actor)
    RETURNING * INTO ch;
    PERFORM quota.subscription_changed(ch.user_id, NULL, 'change_scheduled', ch.plan_id, ch.due_at,
                                       jsonb_build_object('scheduled_change_id', ch.id), ch.actor);
    RETURN ch;
END
$$;

-- Cancels the user's pending plan change; returns it, or NULL when none was pending.
CREATE FUNCTION quota.cancel_scheduled_change(user_id bigint, actor text DEFAULT current_user)
RETURNS quota.scheduled_changes
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch quota.scheduled_changes;
BEGIN
    IF user_id IS NULL OR actor IS NULL THEN
        RAISE EXCEPTION 'cancel_scheduled_change: user_id and actor must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    PERFORM quota.require_own_subscriptions('cancel_scheduled_change');
    UPDATE quota.scheduled_changes c SET state = 'cancelled', ended_at = now()
     WHERE c.user_id = cancel_scheduled_change.user_id AND c.state = 'pending'
    RETURNING c.* INTO ch;
    IF FOUND THEN
        PERFORM quota.subscription_changed(ch.user_id, NULL, 'change_cancelled', ch.plan_id,
                                           ch.due_at, jsonb_build_object('scheduled_change_id', ch.id),
                                           cancel_scheduled_change.actor);
    END IF;
    RETURN ch;
END
$$;

-- The rows of the steps of quota.tick() that go by instant, past the tick's progress `since`
-- and up to `upto` (quota.tick_state positions), in their order, at most lim (NULL: all), of
-- one user (only_user) or of all (NULL). quota.tick() reads them with upto at `at` to find how
-- far its batch goes; quota.tick_user() then takes the batch's rows, for every user or on a
-- Citus cluster one user at a time on its worker. These functions are PL/pgSQL, not SQL: Citus
-- plans no statement of an SQL function with parameters.
-- The grants whose expiry is not announced yet.
CREATE FUNCTION quota.tick_expired_grants(at timestamptz, since quota.tick_state,
                                          upto quota.tick_state, only_user bigint, lim integer)
RETURNS SETOF quota.grants
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT g.* FROM quota.grants g
     WHERE (only_user IS NULL OR g.user_id = only_user)
       AND g.expires_at <= tick_expired_grants.at AND g.voided_at IS NULL
       AND (g.expires_at, g.id) > (since.grants_expired_to, since.grants_expired_id)
       AND (g.expires_at, g.id) <= (upto.grants_expired_to, upto.grants_expired_id)
     ORDER BY g.expires_at, g.id
     LIMIT lim;
END
$$;

-- The counters whose period ended, of a feature with a rollover rule (the catalog's or a
-- plan's): a rollover grant may be due from them. Without any rollover rule no counter is
-- read; with one, the counters are (no index on period_end: it would cost every new counter
-- of every use an index entry).
CREATE FUNCTION quota.tick_ended_periods(at timestamptz, since quota.tick_state,
                                         upto quota.tick_state, only_user bigint, lim integer)
RETURNS TABLE (period_end timestamptz, user_id bigint, feature_code text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    -- The features with a rollover rule, read first: on a Citus worker the statement below
    -- must name only the user's shard besides its own values.
    rolling text[] := ARRAY(SELECT f.code FROM quota.features f WHERE f.rollover_max <> 0
                            UNION
                            SELECT pf.feature_code FROM quota.plan_features pf
                             WHERE pf.rollover_max <> 0);
BEGIN
    IF cardinality(rolling) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT u.period_end, u.user_id, u.feature_code
      FROM quota.user_usage u
     WHERE u.feature_code = ANY (rolling)
       AND (only_user IS NULL OR u.user_id = only_user)
       AND u.period_end <= tick_ended_periods.at AND u.period_end >= since.rollover_checked_to
       AND (u.period_end, u.user_id, u.feature_code)
           > (since.rollover_checked_to, since.rollover_checked_user, since.rollover_checked_feature)
       AND (u.period_end, u.user_id, u.feature_code)
           <= (upto.rollover_checked_to, upto.rollover_checked_user, upto.rollover_checked_feature)
     ORDER BY u.period_end, u.user_id, u.feature_code
     LIMIT lim;
END
$$;

-- The instants that move a storage quota by the clock alone: a subscription that starts, a
-- storage grant that starts or ends. An instant that came before its row was written (a
-- subscription inserted once started, as the tick's own are) was synced by the row's trigger.
CREATE FUNCTION quota.tick_storage_instants(at timestamptz, since quota.tick_state,
                                            upto quota.tick_state, only_user bigint, lim integer)
RETURNS TABLE (t timestamptz, user_id bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT y.t, y.user_id
      FROM (SELECT s.start_date AS t, s.user_id FROM quota.user_subscriptions s
             WHERE (only_user IS NULL OR s.user_id = only_user)
               AND s.status = 'active' AND s.start_date <= tick_storage_instants.at
               AND s.start_date >= since.storage_synced_to
               AND s.created_at < s.start_date
            UNION
            SELECT b.t, g.user_id
              FROM quota.grants g, LATERAL (VALUES (g.effective_from), (g.expires_at)) b (t)
             WHERE (only_user IS NULL OR g.user_id = only_user)
               AND g.feature_code = 'storage_space' AND b.t <= tick_storage_instants.at
               AND b.t >= since.storage_synced_to AND g.created_at < b.t) y
     WHERE (y.t, y.user_id) > (since.storage_synced_to, since.storage_synced_user)
       AND (y.t, y.user_id) <= (upto.storage_synced_to, upto.storage_synced_user)
     ORDER BY y.t, y.user_id
     LIMIT lim;
END
$$;

-- The users with something due up to `at` that quota.tick_user() finds by its rows, and the
-- step that finds it (change, expiry, hold, warning), at most lim users of each step, soonest
-- first; the subscription steps only with the extension's own tables (own). quota.tick() asks
-- it whether rows remain, and on a Citus cluster which users to tick, with which steps.
CREATE FUNCTION quota.tick_due_users(at timestamptz, lim integer, warn interval, own boolean)
RETURNS TABLE (user_id bigint, step text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    (SELECT c.user_id, 'change' FROM quota.scheduled_changes c
      WHERE own AND c.state = 'pending' AND c.due_at <= tick_due_users.at
        AND NOT EXISTS (SELECT FROM quota.user_subscriptions p
                         WHERE p.user_id = c.user_id AND p.status = 'paused')
      ORDER BY c.due_at, c.user_id LIMIT lim)
    UNION ALL
    (SELECT s.user_id, 'expiry' FROM quota.user_subscriptions s
      WHERE own AND s.status = 'active' AND s.end_date <= tick_due_users.at
      ORDER BY s.end_date, s.user_id LIMIT lim)
    UNION ALL
    (SELECT r.user_id, 'hold' FROM quota.reservations r
      WHERE own AND r.state = 'held' AND r.expires_at <= tick_due_users.at
      ORDER BY r.expires_at, r.user_id LIMIT lim)
    UNION ALL
    (SELECT g.user_id, 'warning' FROM quota.grants g
      WHERE g.expires_at > tick_due_users.at AND g.expires_at <= tick_due_users.at + warn
        AND g.voided_at IS NULL AND g.remaining > 0
        AND NOT EXISTS (SELECT FROM quota.grant_notices x
                         WHERE x.user_id = g.user_id AND x.grant_id = g.id AND x.notice = 'expiring')
      ORDER BY g.expires_at, g.user_id LIMIT lim);
END
$$;

-- The steps of quota.tick() (below) for one user (user_id), or for every user (NULL): what
-- became due up to at, at most lim rows of each kind, and the rows of the steps that go by
-- instant past `since` and up to `upto` (the batch quota.tick() chose); only the steps named
-- in `steps` (NULL: all): change, expiry, hold, warning, grant_expiry, rollover, storage, so
-- that a user's call plans no statement of a step with nothing due. Returns the counts
-- {plan_changes, expired, trials_ended, fallbacks, reservations_expired, grants_warned,
-- grants_expired, rollovers, storage_resynced}. Internal to quota.tick(): on a Citus cluster
-- it is delegated to each due user's worker, and every statement names the user, so that
-- Citus finds the user's shards there.
CREATE FUNCTION quota.tick_user(user_id bigint, at timestamptz, lim integer, fallback bigint,
                                warn interval, since quota.tick_state, upto quota.tick_state,
                                steps text[])
RETURNS integer[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    one bigint := tick_user.user_id;
    every boolean := steps IS NULL;
    own boolean := (SELECT st.attached_schema FROM quota.settings st) IS NULL;
    zone text := coalesce((SELECT st.time_zone FROM quota.settings st), 'UTC');
    plan_changes integer := 0;
    expired integer := 0;
    trials_ended integer := 0;
    fallbacks integer := 0;
    reservations_expired integer := 0;
    grants_warned integer := 0;
    grants_expired integer := 0;
    rollovers integer := 0;
    storage_resynced integer := 0;
    -- Rows a statement announced (each row of its audit, pulled so that every event is sent).
    -- An event is pulled as "event IS NULL": a column of type void could not be kept by Citus,
    -- which stores the rows of a CTE on a worker.
    n integer;
    trials integer;
    users bigint[];
    -- The (user, feature) pairs whose period ended, for the rollover step.
    ended_periods jsonb;
BEGIN
    IF own AND (every OR 'change' = ANY (steps)) THEN
        -- 1. Scheduled plan changes. The subscription that counts up to due_at (active, started
        -- before it, not ended before it; the latest end, then the highest id, as
        -- entitlements_core::subscription orders them) ends there; the new one runs until its
        -- end, or for a cycle of the new plan when it ended at due_at (or none counted).
        -- A paused user's change waits for the resume, which moves it with the end date.
        WITH due AS (
            SELECT c.user_id, c.id, c.plan_id, c.due_at
              FROM quota.scheduled_changes c
             WHERE (one IS NULL OR c.user_id = one)
               AND c.state = 'pending' AND c.due_at <= tick_user.at
               AND NOT EXISTS (SELECT FROM quota.user_subscriptions p
                                WHERE p.user_id = c.user_id AND p.status = 'paused')
             ORDER BY c.due_at, c.user_id
             LIMIT lim
               FOR UPDATE OF c
        ), prior AS (
            SELECT DISTINCT ON (d.user_id) d.user_id, s.id, s.plan_id, s.end_date, s.trial
              FROM due d
              JOIN quota.user_subscriptions s
                ON s.user_id = d.user_id AND s.status = 'active'
               AND s.start_date < d.due_at AND s.end_date >= d.due_at
             WHERE (one IS NULL OR s.user_id = one)
             ORDER BY d.user_id, s.end_date DESC, s.id DESC
        ), ended AS (
            UPDATE quota.user_subscriptions s SET status = 'expired', end_date = d.due_at
              FROM prior p, due d
             WHERE (one IS NULL OR s.user_id = one)
               AND s.user_id = p.user_id AND s.id = p.id AND d.user_id = p.user_id
            RETURNING s.user_id
        ), next AS (
            SELECT d.user_id, d.plan_id, d.due_at,
                   CASE WHEN p.end_date > d.due_at THEN p.end_date
                        ELSE quota.cycle_end(np.duration_days, np.billing_cycle, zone,
                                             d.due_at, d.due_at) END AS end_date
              FROM due d
              JOIN quota.subscription_plans np ON np.id = d.plan_id
              LEFT JOIN prior p ON p.user_id = d.user_id
        ), started AS (
            INSERT INTO quota.user_subscriptions AS s (user_id, plan_id, start_date, end_date)
            SELECT n.user_id, n.plan_id, n.due_at, n.end_date FROM next n
            RETURNING s.user_id, s.id, s.plan_id, s.start_date
        ), applied AS (
            UPDATE quota.scheduled_changes c
               SET state = 'applied', ended_at = now(), subscription_id = st.id
              FROM due d, started st
             WHERE (one IS NULL OR c.user_id = one)
               AND c.user_id = d.user_id AND c.id = d.id AND st.user_id = d.user_id
            RETURNING c.id
        ), audit AS (
            INSERT INTO quota.subscription_changes AS c
                   (user_id, subscription_id, change, plan_id, effective_at, details, actor)
            SELECT x.user_id, x.subscription_id, x.change, x.plan_id, x.effective_at, x.details,
                   'quota.tick'
              FROM (SELECT p.user_id, p.id AS subscription_id, 'trial_ended' AS change,
                           p.plan_id, d.due_at AS effective_at,
                           jsonb_build_object('next_plan_id', d.plan_id) AS details, 0 AS step
                      FROM prior p JOIN due d ON d.user_id = p.user_id
                     WHERE p.trial
                    UNION ALL
                    SELECT st.user_id, st.id, 'plan_changed', st.plan_id, st.start_date,
                           jsonb_build_object('previous_plan_id', p.plan_id,
                                              'previous_subscription_id', p.id,
                                              'scheduled_change_id', d.id), 1
                      FROM started st JOIN due d ON d.user_id = st.user_id
                      LEFT JOIN prior p ON p.user_id = st.user_id
                     ORDER BY 1, 7) x
            -- As the table's row type: on a Citus worker the statement writes a shard, whose
            -- row type is its own.
            RETURNING ROW(c.*)::quota.subscription_changes AS entry
        ), announced AS (
            SELECT quota.subscription_event(o.entry) IS NULL AS pulled
              FROM (SELECT a.entry FROM audit a ORDER BY (a.entry).id) o
        )
        SELECT (SELECT count(*) FROM applied),
               (SELECT count(*) FROM prior WHERE prior.trial),
               (SELECT count(*) FROM announced)
          INTO plan_changes, trials_ended, n;
    END IF;

    IF own AND (every OR 'expiry' = ANY (steps)) THEN
        -- 2. Expiries, and the fallback. A user whose change is due by the end waits for step 1.
        WITH due AS (
            SELECT s.user_id, s.id
              FROM quota.user_subscriptions s
             WHERE (one IS NULL OR s.user_id = one)
               AND s.status = 'active' AND s.end_date <= tick_user.at
               AND NOT EXISTS (SELECT FROM quota.scheduled_changes c
                                WHERE c.user_id = s.user_id AND c.state = 'pending'
                                  AND c.due_at <= s.end_date)
             ORDER BY s.end_date, s.user_id, s.id
             LIMIT lim
               FOR UPDATE OF s
        ), ended AS (
            UPDATE quota.user_subscriptions s SET status = 'expired'
              FROM due d
             WHERE (one IS NULL OR s.user_id = one) AND s.user_id = d.user_id AND s.id = d.id
            RETURNING s.user_id, s.id, s.plan_id, s.end_date, s.trial
        ), latest AS (
            -- Per user, the one that ended last; the others ended while it counted.
            SELECT DISTINCT ON (e.user_id) e.user_id, e.id, e.end_date
              FROM ended e ORDER BY e.user_id, e.end_date DESC, e.id DESC
        ), covered AS (
            -- The users another subscription counts for at that end. (A join, not NOT EXISTS:
            -- Citus refuses a correlated subquery beside a CTE.)
            SELECT DISTINCT l.user_id
              FROM latest l
              JOIN quota.user_subscriptions o
                ON o.user_id = l.user_id AND o.status IN ('active', 'paused')
               AND o.start_date <= l.end_date AND o.end_date > l.end_date
             WHERE (one IS NULL OR o.user_id = one)
        ), next AS (
            SELECT l.user_id, l.end_date AS start_date,
                   quota.cycle_end(fp.duration_days, fp.billing_cycle, zone, l.end_date,
                                   tick_user.at) AS end_date
              FROM latest l
              JOIN quota.subscription_plans fp ON fp.id = fallback
               AND l.user_id NOT IN (SELECT c.user_id FROM covered c)
        ), started AS (
            INSERT INTO quota.user_subscriptions AS s (user_id, plan_id, start_date, end_date)
            SELECT n.user_id, fallback, n.start_date, n.end_date FROM next n
            RETURNING s.user_id, s.id, s.plan_id, s.start_date
        ), audit AS (
            INSERT INTO quota.subscription_changes AS c
                   (user_id, subscription_id, change, plan_id, effective_at, details, actor)
            SELECT x.user_id, x.subscription_id, x.change, x.plan_id, x.effective_at, x.details,
                   'quota.tick'
              FROM (SELECT e.user_id, e.id AS subscription_id,
                           CASE WHEN e.trial THEN 'trial_ended' ELSE 'expired' END AS change,
                           e.plan_id, e.end_date AS effective_at, '{}'::jsonb AS details,
                           0 AS step
                      FROM ended e
                    UNION ALL
                    SELECT st.user_id, st.id, 'fallback_started', st.plan_id, st.start_date,
                           jsonb_build_object('previous_subscription_id', l.id), 1
                      FROM started st JOIN latest l ON l.user_id = st.user_id
                     ORDER BY 5, 1, 7, 2) x
            RETURNING ROW(c.*)::quota.subscription_changes AS entry
        ), announced AS (
            SELECT quota.subscription_event(o.entry) IS NULL AS pulled
              FROM (SELECT a.entry FROM audit a ORDER BY (a.entry).id) o
        )
        SELECT (SELECT count(*) FILTER (WHERE NOT e.trial) FROM ended e),
               (SELECT count(*) FILTER (WHERE e.trial) FROM ended e),
               (SELECT count(*) FROM started),
               (SELECT count(*) FROM announced)
          INTO expired, trials, fallbacks, n;
        trials_ended := trials_ended + trials;
    END IF;

    IF own AND (every OR 'hold' = ANY (steps)) THEN
        -- 3. Holds past their expiry. Their counters are locked first, in the order a use
        -- locks them, so that no use is between reading held and its hold's state; then the
        -- holds end and their counters give their units back.
        PERFORM FROM quota.user_usage u
         WHERE (one IS NULL OR u.user_id = one)
           AND (u.user_id, u.feature_code, u.period_start) IN (
                   SELECT r.user_id, r.feature_code, r.period_start
                     FROM quota.reservations r
                    WHERE (one IS NULL OR r.user_id = one)
                      AND r.state = 'held' AND r.expires_at <= tick_user.at
                    ORDER BY r.expires_at, r.user_id, r.id LIMIT lim)
         ORDER BY u.user_id, u.feature_code, u.period_start
           FOR UPDATE OF u;
        WITH due AS (
            SELECT r.user_id, r.id
              FROM quota.reservations r
             WHERE (one IS NULL OR r.user_id = one)
               AND r.state = 'held' AND r.expires_at <= tick_user.at
             ORDER BY r.expires_at, r.user_id, r.id
             LIMIT lim
               FOR UPDATE OF r
        ), ended AS (
            UPDATE quota.reservations r SET state = 'expired', ended_at = r.expires_at
              FROM due d
             WHERE (one IS NULL OR r.user_id = one)
               AND r.user_id = d.user_id AND r.id = d.id AND r.state = 'held'
            RETURNING r
        ), given_back AS (
            UPDATE quota.user_usage u SET held = u.held - e.amount
              FROM (SELECT (e.r).user_id, (e.r).feature_code, (e.r).period_start,
                           sum((e.r).amount) AS amount
                      FROM ended e GROUP BY 1, 2, 3) e
             WHERE (one IS NULL OR u.user_id = one)
               AND u.user_id = e.user_id AND u.feature_code = e.feature_code
               AND u.period_start = e.period_start
            RETURNING u.user_id
        ), sent AS (
            -- The payload of the hold's other events (src/reservations.rs): keys in
            -- serde_json's order, expires_at as PostgreSQL prints it.
            SELECT quota.announce('quota_reservation', format(
                       '{"amount":%s,"event":"expired","expires_at":%s,"feature_code":%s,"reservation_id":%s,"user_id":%s,"version":1}',
                       e.amount, to_json(e.expires_at::text), to_json(e.feature_code), e.id,
                       e.user_id)) IS NULL AS pulled
              FROM (SELECT (x.r).* FROM ended x ORDER BY (x.r).expires_at, (x.r).user_id, (x.r).id) e
        )
        SELECT count(*) INTO reservations_expired FROM sent;
    END IF;

    -- 4. Grants: the warning ahead of the expiry, then the expiry. A grant voided, or spent
    -- to its last unit, loses nothing: no warning.
    IF every OR 'warning' = ANY (steps) THEN
        -- due is materialized: on a Citus worker, an INSERT from a statement on the distributed
        -- table would not be known to stay on the user's shard, and the delegated call is refused.
        WITH due AS MATERIALIZED (
            SELECT g.user_id, g.id FROM quota.grants g
             WHERE (one IS NULL OR g.user_id = one)
               AND g.expires_at > tick_user.at AND g.expires_at <= tick_user.at + warn
               AND g.voided_at IS NULL AND g.remaining > 0
               AND NOT EXISTS (SELECT FROM quota.grant_notices x
                                WHERE x.user_id = g.user_id AND x.grant_id = g.id
                                  AND x.notice = 'expiring')
             ORDER BY g.expires_at, g.user_id, g.id
             LIMIT lim
        ), noted AS (
            INSERT INTO quota.grant_notices AS x (user_id, grant_id, notice, sent_at)
            SELECT d.user_id, d.id, 'expiring', tick_user.at FROM due d
            ON CONFLICT DO NOTHING
            RETURNING x.user_id, x.grant_id
        ), sent AS (
            SELECT quota.grant_event('expiring', o.g) IS NULL AS pulled
              FROM (SELECT ROW(g.*)::quota.grants AS g FROM quota.grants g
                      JOIN noted ON noted.user_id = g.user_id AND noted.grant_id = g.id
                     WHERE (one IS NULL OR g.user_id = one)
                     ORDER BY g.expires_at, g.user_id, g.id) o
        )
        SELECT count(*) INTO grants_warned FROM sent;
    END IF;
    -- Every grant expires once, at expires_at, which lies after its creation: the grants
    -- past since's position and up to upto's are the ones of this batch.
    IF every OR 'grant_expiry' = ANY (steps) THEN
        WITH sent AS (
            SELECT quota.grant_event('expired', g) IS NULL AS pulled
              FROM quota.tick_expired_grants(tick_user.at, since, upto, one, NULL) g
        )
        SELECT count(*) INTO grants_expired FROM sent;
    END IF;

    IF own AND (every OR 'rollover' = ANY (steps)) THEN
        -- 5. Rollover grants: a counter whose period ended, of a feature with a rollover rule,
        -- may leave a grant to the period after it. Each is created as the period's first
        -- write would create it (quota.create_due_rollover); the reads count it from the
        -- period's first instant before it exists. A period without a counter (nothing used)
        -- gets its grant at its first write.
        SELECT jsonb_agg(jsonb_build_object('user_id', x.user_id, 'feature_code', x.feature_code)
                         ORDER BY x.period_end, x.user_id, x.feature_code)
          INTO ended_periods
          FROM quota.tick_ended_periods(tick_user.at, since, upto, one, NULL) x;
        IF ended_periods IS NOT NULL THEN
            SELECT count(*) INTO rollovers
              FROM jsonb_to_recordset(ended_periods) AS c (user_id bigint, feature_code text)
              JOIN quota.grants g ON g.user_id = c.user_id AND g.feature_code = c.feature_code
             WHERE (one IS NULL OR g.user_id = one) AND g.source = 'rollover';
            PERFORM quota.create_due_rollover(c.user_id, c.feature_code)
               FROM jsonb_to_recordset(ended_periods) AS c (user_id bigint, feature_code text);
            SELECT count(*) - rollovers INTO rollovers
              FROM jsonb_to_recordset(ended_periods) AS c (user_id bigint, feature_code text)
              JOIN quota.grants g ON g.user_id = c.user_id AND g.feature_code = c.feature_code
             WHERE (one IS NULL OR g.user_id = one) AND g.source = 'rollover';
        END IF;
    END IF;

    IF own AND (every OR 'storage' = ANY (steps)) THEN
        -- 6. The users whose storage quota the clock alone moved get it written; the changes
        -- of steps 1 and 2 are resynced by the subscription triggers as they are written.
        SELECT array_agg(x.user_id) INTO users
          FROM quota.tick_storage_instants(tick_user.at, since, upto, one, NULL) x;
        IF users IS NOT NULL THEN
            EXECUTE format(
                'WITH affected AS (SELECT DISTINCT u AS user_id FROM pg_catalog.unnest($1) u
                 ), announce AS (SELECT NULL::text AS payload WHERE false)%s',
                quota.resync_storage_sql('quota.user_storage_usage', 'true',
                                         CASE WHEN one IS NOT NULL THEN '$2' END))
              INTO n, storage_resynced USING users, one;
        END IF;
    END IF;
    RETURN ARRAY[plan_changes, expired, trials_ended, fallbacks, reservations_expired,
                 grants_warned, grants_expired, rollovers, storage_resynced];
END
$$;

-- One maintenance step: applies what became due up to `at` (now(), the default; never later,
-- since the reads would not agree yet), at most batch_size rows of each kind (NULL:
-- quota.settings.tick_batch_size), and returns what it did. One runner at a time: a call made
-- while another runs returns at once with ran = false. Idempotent: what it applied is marked
-- (a status, a state, a notice, how far it got), so a second call finds nothing; more = true
-- says that rows due remain for the next call. In order (quota.tick_user()):
--   1. scheduled plan changes due (before the expiries, so that a subscription ending into one
--      gets no fallback);
--   2. active subscriptions whose end_date passed: 'expired' (a trial: event trial_ended), and
--      when quota.settings.fallback_plan_code names a plan and no other subscription counts
--      at that end, a subscription to it from that instant (usage, gauges and grants belong
--      to the user and stay);
--   3. holds past expires_at: 'expired', their units given back to their counter;
--   4. grants: the 'expiring' warning grant_warning_days before expires_at (once per grant,
--      quota.grant_notices), and 'expired' once at expires_at;
--   5. rollover grants due from the periods that ended (for the users who used the feature in
--      them: the others' at their next write; every read counts them before);
--   6. storage_quota_bytes of the users whose storage quota the clock alone moved (a
--      pre-created subscription that started, a storage grant that started or expired); the
--      changes of steps 1 and 2 are resynced by the subscription triggers as they are written.
-- On a Citus cluster (quota.distribute()) the steps run user by user, each on the user's
-- worker: the users with rows due, at most batch_size per kind, and those of the batch of
-- the steps that go by instant.
CREATE FUNCTION quota.tick(at timestamptz DEFAULT now(), batch_size integer DEFAULT NULL)
RETURNS TABLE (ran boolean, plan_changes integer, expired integer, trials_ended integer,
               fallbacks integer, reservations_expired integer, grants_warned integer,
               grants_expired integer, rollovers integer, storage_resynced integer,
               more boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    lim integer;
    own boolean := (SELECT st.attached_schema FROM quota.settings st) IS NULL;
    fallback_code text := (SELECT st.fallback_plan_code FROM quota.settings st);
    fallback bigint;
    warn interval := make_interval(days => coalesce((SELECT st.grant_warning_days FROM quota.settings st), 3));
    progress quota.tick_state;
    upto quota.tick_state;
    -- Each user's counts, and their sum.
    counts integer[];
    total integer[] := array_fill(0, ARRAY[9]);
    -- The users of the batch of each step that goes by instant, and on a Citus cluster each
    -- due user with its steps.
    expiring_users bigint[];
    rolling_users bigint[];
    storage_users bigint[];
    due jsonb;
    item jsonb;
    grants_batch integer;
    candidates integer := 0;
    instants integer := 0;
BEGIN
    IF tick.at IS NULL THEN
        RAISE EXCEPTION 'tick: at must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF tick.at > now() THEN
        RAISE EXCEPTION 'tick: % is later than now (%)', tick.at, now()
            USING ERRCODE = '22023',
                  HINT = 'A tick applies what is due up to an instant that has come: the reads would not agree yet.';
    END IF;
    lim := coalesce(tick.batch_size, (SELECT st.tick_batch_size FROM quota.settings st), 1000);
    IF lim < 1 THEN
        RAISE EXCEPTION 'tick: batch_size % is below 1', lim USING ERRCODE = '22023';
    END IF;
    ran := false; plan_changes := 0; expired := 0; trials_ended := 0; fallbacks := 0;
    reservations_expired := 0; grants_warned := 0; grants_expired := 0; rollovers := 0;
    storage_resynced := 0;
    more := false;
    -- One runner at a time, until its transaction ends; the other does not wait.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('pg_entitlements tick', 0)) THEN
        RETURN NEXT;
        RETURN;
    END IF;
    ran := true;
    IF fallback_code IS NOT NULL THEN
        SELECT p.id INTO fallback FROM quota.subscription_plans p
         WHERE p.plan_code = fallback_code AND p.plan_kind = 'base';
        IF fallback IS NULL THEN
            RAISE EXCEPTION 'tick: quota.settings.fallback_plan_code "%" names no base plan', fallback_code
                USING ERRCODE = '23503',
                      HINT = 'Set it to the plan_code of a plan of kind ''base'', or to NULL for no fallback.';
        END IF;
    END IF;
    INSERT INTO quota.tick_state DEFAULT VALUES ON CONFLICT (singleton) DO NOTHING;
    SELECT * INTO progress FROM quota.tick_state FOR UPDATE;

    -- The batch of the steps that go by instant: up to lim rows of each past the progress. A
    -- batch that is not full takes every row up to at: the next starts after at.
    upto := progress;
    upto.grants_expired_to := tick.at;
    upto.grants_expired_id := 9223372036854775807;
    upto.rollover_checked_to := tick.at;
    upto.rollover_checked_user := 9223372036854775807;
    upto.rollover_checked_feature := '';
    upto.storage_synced_to := tick.at;
    upto.storage_synced_user := 9223372036854775807;
    SELECT count(*), array_agg(DISTINCT g.user_id),
           CASE WHEN count(*) < lim THEN upto.grants_expired_to ELSE max(g.expires_at) END,
           CASE WHEN count(*) < lim THEN upto.grants_expired_id
                ELSE (array_agg(g.id ORDER BY g.expires_at DESC, g.id DESC))[1] END
      INTO grants_batch, expiring_users, upto.grants_expired_to, upto.grants_expired_id
      FROM quota.tick_expired_grants(tick.at, progress, upto, NULL, lim) g;
    IF own THEN
        SELECT count(*), array_agg(DISTINCT x.user_id),
               CASE WHEN count(*) < lim THEN upto.rollover_checked_to
                    ELSE (array_agg(x.period_end ORDER BY x.period_end DESC, x.user_id DESC, x.feature_code DESC))[1] END,
               CASE WHEN count(*) < lim THEN upto.rollover_checked_user
                    ELSE (array_agg(x.user_id ORDER BY x.period_end DESC, x.user_id DESC, x.feature_code DESC))[1] END,
               CASE WHEN count(*) < lim THEN upto.rollover_checked_feature
                    ELSE (array_agg(x.feature_code ORDER BY x.period_end DESC, x.user_id DESC, x.feature_code DESC))[1] END
          INTO candidates, rolling_users, upto.rollover_checked_to, upto.rollover_checked_user,
               upto.rollover_checked_feature
          FROM quota.tick_ended_periods(tick.at, progress, upto, NULL, lim) x;
        SELECT count(*), array_agg(DISTINCT x.user_id),
               CASE WHEN count(*) < lim THEN upto.storage_synced_to ELSE max(x.t) END,
               CASE WHEN count(*) < lim THEN upto.storage_synced_user
                    ELSE (array_agg(x.user_id ORDER BY x.t DESC, x.user_id DESC))[1] END
          INTO instants, storage_users, upto.storage_synced_to, upto.storage_synced_user
          FROM quota.tick_storage_instants(tick.at, progress, upto, NULL, lim) x;
    END IF;

    IF quota.distributed()
       OR coalesce(current_setting('pg_entitlements.tick_by_user', true), 'off')::boolean THEN
        -- Each user's steps in turn; on a Citus cluster on the user's worker.
        SELECT jsonb_agg(jsonb_build_object('user_id', x.user_id, 'steps', x.steps) ORDER BY x.user_id)
          INTO due
          FROM (SELECT y.user_id, array_agg(DISTINCT y.step) AS steps
                  FROM (SELECT d.user_id, d.step FROM quota.tick_due_users(tick.at, lim, warn, own) d
                        UNION ALL
                        SELECT g, 'grant_expiry' FROM unnest(expiring_users) g
                        UNION ALL
                        SELECT r, 'rollover' FROM unnest(rolling_users) r
                        UNION ALL
                        SELECT s, 'storage' FROM unnest(storage_users) s) y
                 GROUP BY y.user_id) x;
        FOR item IN SELECT * FROM jsonb_array_elements(coalesce(due, '[]')) LOOP
            -- Delegated (so that the user's events are raised on the worker, as the user's
            -- other events are) only when called in FROM with constant arguments.
            EXECUTE format('SELECT c FROM quota.tick_user(%s, %L, %s, %L, %L, %L::quota.tick_state, %L::quota.tick_state, %L::text[]) c',
                           item ->> 'user_id', tick.at, lim, fallback, warn, progress, upto,
                           ARRAY(SELECT jsonb_array_elements_text(item -> 'steps')))
               INTO counts;
            total := ARRAY(SELECT a + b FROM unnest(total, counts) AS z (a, b));
        END LOOP;
    ELSE
        total := quota.tick_user(NULL, tick.at, lim, fallback, warn, progress, upto, NULL);
    END IF;
    plan_changes := total[1]; expired := total[2]; trials_ended := total[3];
    fallbacks := total[4]; reservations_expired := total[5]; grants_warned := total[6];
    grants_expired := total[7]; rollovers := total[8]; storage_resynced := total[9];

    UPDATE quota.tick_state t
       SET grants_expired_to = upto.grants_expired_to, grants_expired_id = upto.grants_expired_id
     WHERE (upto.grants_expired_to, upto.grants_expired_id)
           > (t.grants_expired_to, t.grants_expired_id);
    UPDATE quota.tick_state t
       SET rollover_checked_to = upto.rollover_checked_to,
           rollover_checked_user = upto.rollover_checked_user,
           rollover_checked_feature = upto.rollover_checked_feature
     WHERE own
       AND (upto.rollover_checked_to, upto.rollover_checked_user, upto.rollover_checked_feature)
           > (t.rollover_checked_to, t.rollover_checked_user, t.rollover_checked_feature);
    UPDATE quota.tick_state t
       SET storage_synced_to = upto.storage_synced_to, storage_synced_user = upto.storage_synced_user
     WHERE own
       AND (upto.storage_synced_to, upto.storage_synced_user)
           > (t.storage_synced_to, t.storage_synced_user);
    UPDATE quota.tick_state t SET ticked_at = tick.at;
    more := grants_batch >= lim OR candidates >= lim OR instants >= lim
         OR EXISTS (SELECT FROM quota.tick_due_users(tick.at, 1, warn, own));
    RETURN NEXT;
END
$$;

-- Privileges (the roles of sql/privileges.sql). The tick and the lifecycle changes are admin
-- work: quota_admin, and the role a scheduler runs the tick as (pg_cron: the job's owner).
REVOKE EXECUTE ON FUNCTION
    quota.tick(timestamptz, integer),
    quota.tick_user(bigint, timestamptz, integer, bigint, interval, quota.tick_state, quota.tick_state, text[]),
    quota.tick_due_users(timestamptz, integer, interval, boolean),
    quota.tick_expired_grants(timestamptz, quota.tick_state, quota.tick_state, bigint, integer),
    quota.tick_ended_periods(timestamptz, quota.tick_state, quota.tick_state, bigint, integer),
    quota.tick_storage_instants(timestamptz, quota.tick_state, quota.tick_state, bigint, integer),
    quota.create_due_rollover(bigint, text),
    quota.pause_subscription(bigint, text, text),
    quota.resume_subscription(bigint, boolean, text),
    quota.schedule_plan_change(bigint, text, timestamptz, text),
    quota.cancel_scheduled_change(bigint, text),
    quota.cycle_end(integer, text, text, timestamptz, timestamptz),
    quota.require_own_subscriptions(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    quota.tick(timestamptz, integer),
    quota.pause_subscription(bigint, text, text),
    quota.resume_subscription(bigint, boolean, text),
    quota.schedule_plan_change(bigint, text, timestamptz, text),
    quota.cancel_scheduled_change(bigint, text)
TO quota_admin;
-- Written by the functions above only. An app server shows a pending change or a pause.
GRANT SELECT ON quota.scheduled_changes, quota.subscription_changes TO quota_app;
GRANT SELECT ON quota.scheduled_changes, quota.subscription_changes, quota.grant_notices,
                quota.tick_state
   TO quota_reader, quota_admin;
GRANT INSERT (fallback_plan_code, grant_warning_days, tick_batch_size),
      UPDATE (fallback_plan_code, grant_warning_days, tick_batch_size)
   ON quota.settings TO quota_admin;

COMMENT ON FUNCTION quota.tick(timestamptz, integer) IS
    'quota_admin; run every minute by pg_cron. Applies what became due up to at (default now(), '
    'never later): scheduled plan changes, expiries (status expired, trial_ended for a trial) '
    'with the fallback plan of quota.settings, holds past their expiry, grant warnings '
    'grant_warning_days ahead and expiries, rollover grants due from the periods that ended, '
    'and storage_quota_bytes moved by the clock; at '
    'most batch_size rows of each kind (default quota.settings.tick_batch_size). One runner at '
    'a time (ran false: another was running); idempotent; more true: rows due remain.';

COMMENT ON FUNCTION quota.distributed() IS
    'Whether the extension''s tables are laid out over a Citus cluster (quota.distribute()).';

COMMENT ON FUNCTION quota.tick_user(bigint, timestamptz, integer, bigint, interval, quota.tick_state, quota.tick_state, text[]) IS
    'Internal to quota.tick(): its steps (those named, NULL: all) for one user (NULL: every '
    'user), delegated to the user''s worker on a Citus cluster; returns the counts {plan_changes, expired, '
    'trials_ended, fallbacks, reservations_expired, grants_warned, grants_expired, rollovers, '
    'storage_resynced}.';

COMMENT ON FUNCTION quota.tick_due_users(timestamptz, integer, interval, boolean) IS
    'Internal to quota.tick(): the users with scheduled changes, expiries, holds or grant '
    'warnings due, and which, at most lim of each kind.';

COMMENT ON FUNCTION quota.tick_expired_grants(timestamptz, quota.tick_state, quota.tick_state, bigint, integer) IS
    'Internal to quota.tick(): the grants whose expiry is not announced yet, between two '
    'positions of quota.tick_state, in order.';

COMMENT ON FUNCTION quota.tick_ended_periods(timestamptz, quota.tick_state, quota.tick_state, bigint, integer) IS
    'Internal to quota.tick(): the counters whose period ended, of a feature with a rollover '
    'rule, between two positions of quota.tick_state, in order.';

COMMENT ON FUNCTION quota.tick_storage_instants(timestamptz, quota.tick_state, quota.tick_state, bigint, integer) IS
    'Internal to quota.tick(): the instants that move a storage quota by the clock alone (a '
    'subscription or a storage grant that starts, a storage grant that ends), between two '
    'positions of quota.tick_state, in order.';

COMMENT ON FUNCTION quota.pause_subscription(bigint, text, text) IS
    'quota_admin. Pauses the user''s active subscriptions that have not ended (status paused, '
    'paused_at now()): no quota while paused, usage, gauges and grants kept. Audited in '
    'quota.subscription_changes and announced on quota_subscription (paused).';

COMMENT ON FUNCTION quota.resume_subscription(bigint, boolean, text) IS
    'quota_admin. Resumes the user''s paused subscriptions; extend_end_date (default true) adds '
    'the paused time to end_date (and to the start of one that had not started). Audited and '
    'announced on quota_subscription (resumed).';

COMMENT ON FUNCTION quota.schedule_plan_change(bigint, text, timestamptz, text) IS
    'quota_admin. Schedules the user''s move to a base plan at at (default: the end of the '
    'current billing period), applied by quota.tick(); replaces a pending change. Announced on '
    'quota_subscription (change_scheduled).';

COMMENT ON FUNCTION quota.cancel_scheduled_change(bigint, text) IS
    'quota_admin. Cancels the user''s pending plan change and returns it (NULL: none). '
    'Announced on quota_subscription (change_cancelled).';

COMMENT ON FUNCTION quota.create_due_rollover(bigint, text) IS
    'Internal to quota.tick(): creates the rollover grant the user''s current period of the '
    'feature starts with, when one is due and not created yet, as the period''s first write '
    'would.';

COMMENT ON FUNCTION quota.cycle_end(integer, text, text, timestamptz, timestamptz) IS
    'The first end after a given instant of a subscription started at start: start plus whole '
    'cycles of its plan (days: its duration_days, else a month or a year by cycle, its '
    'billing_cycle), in the time zone zone.';

COMMENT ON FUNCTION quota.require_own_subscriptions(text) IS
    'Refuses (0A000) the lifecycle functions while an application''s tables are attached.';

COMMENT ON FUNCTION quota.subscription_event(quota.subscription_changes) IS
    'Sends one change of quota.subscription_changes on channel quota_subscription (version 1).';

COMMENT ON FUNCTION quota.subscription_changed(bigint, bigint, text, bigint, timestamptz, jsonb, text) IS
    'Audits one change of a subscription in quota.subscription_changes and announces it.';

COMMENT ON TABLE quota.scheduled_changes IS
    'Plan changes scheduled by schedule_plan_change(), at most one pending per user; the tick '
    'applies them at due_at (state applied, subscription_id the subscription it started).';

COMMENT ON TABLE quota.subscription_changes IS
    'Audit of the lifecycle: pauses, resumes, scheduled and applied plan changes, expiries, '
    'trial ends and fallbacks, with who (actor, session_role; quota.tick for the tick) and '
    'when it took effect; each row is the event sent on quota_subscription.';

COMMENT ON TABLE quota.grant_notices IS
    'The expiring warnings the tick sent: once per grant.';

COMMENT ON TABLE quota.tick_state IS
    'How far quota.tick() got in the instants it has no row to mark: grant expiries announced '
    'and storage quotas resynced (no row: nothing yet).';

COMMENT ON COLUMN quota.user_subscriptions.trial IS
    'A trial: counts as an active subscription; at its end the tick sends trial_ended and '
    'moves the user to the plan scheduled for then, or to the fallback plan.';

COMMENT ON COLUMN quota.settings.fallback_plan_code IS
    'The base plan a user gets from the instant a subscription of theirs expires with no other '
    'one counting (NULL: none).';

COMMENT ON COLUMN quota.settings.grant_warning_days IS
    'Days before a grant expires that the tick sends its expiring event (default 3).';

COMMENT ON COLUMN quota.settings.tick_batch_size IS
    'The most rows of each kind one quota.tick() call handles (default 1000).';
-- Scale-out with Citus

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

COMMENT ON FUNCTION quota.distribute() IS
    'Citus: lays the extension out over the cluster, on the coordinator, idempotently: tables '
    'without user_id as reference tables, those with user_id distributed by it in one '
    'colocation group, every function whose first argument is user_id delegated to the node '
    'holding that user (writers with force_delegation), and a range of row ids of its own for '
    'each node (quota.own_id_range()). Without Citus it raises 55000.';

COMMENT ON FUNCTION quota.own_id_range() IS
    'Citus: gives this node''s identity sequences of the extension the range of row ids of its '
    'node group (2^48 ids from group id * 2^48 + 1), so that no two nodes give the same id; '
    'nothing without Citus. quota.distribute() runs it on every node, and CREATE EXTENSION on '
    'the node a worker Citus adds later.';

-- This node's range of row ids on a Citus cluster (quota.own_id_range()), once every sequence
-- of the extension exists: on a worker Citus adds after quota.distribute(), Citus creates the
-- extension with the node's group id already set.
SELECT quota.own_id_range();
