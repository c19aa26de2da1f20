-- Everything pg_entitlements puts in a database's catalogs, as sorted text lines
-- "<object> :: <property> = <value>", so that two databases (one upgraded with ALTER EXTENSION
-- UPDATE, one installed fresh) compare with diff (scripts/ops/upgrade.sh). Generic: no list of
-- the extension's objects, they are found through pg_depend (deptype 'e'):
--   * every member, by pg_describe_object, and the extension's schema;
--   * the extension: version, schema, relocatable, config tables with their conditions;
--   * functions: pg_get_functiondef line by line, kind, volatility, parallel, strict, security
--     definer, leakproof, cost, rows, SET options, result and arguments (defaults included);
--   * tables, views, sequences: kind, persistence, reloptions, row security, replica identity,
--     access method, partitioning, inheritance; every column in order (position, type and
--     typmod, not null, default, identity, generated, collation, storage, compression, options),
--     constraints (pg_get_constraintdef), indexes (pg_get_indexdef), triggers (pg_get_triggerdef
--     and enabled), policies, rules, statistics objects; views line by line; sequence settings
--     and the column owning it;
--   * types: enum labels in order, domains (base type, not null, default, constraints),
--     composite attributes, ranges;
--   * on all of those: comments, owner (as the extension's owner or by name), ACLs (explicit, or
--     the built-in default when NULL) with grantor, initial privileges (pg_init_privs, which
--     decide what pg_dump dumps), security labels;
--   * default privileges in the schema; event triggers of the database, member or not;
--   * objects in the extension's schema that are not members: a bug, printed as NOT A MEMBER.
-- Roles are cluster-wide, so two databases of one cluster see the same ones: here they are
-- compared through the privileges granted on the extension's objects (upgrade.sh compares the
-- roles themselves, each install made in a cluster without them). No OID, no row data.
-- Column position is the rank among live columns: a column dropped by an upgrade leaves a
-- hole in attnum that a fresh install does not have, and is not a difference a user can see.
-- Run with psql -At; it creates two pg_temp functions and changes nothing else.
SET search_path = pg_catalog;   -- every name outside pg_catalog printed schema-qualified

-- An ACL as text: every grant sorted, NULL replaced by the built-in default for its kind, and
-- the object's owner written OWNER so that the text does not depend on who installed it.
CREATE FUNCTION pg_temp.acl_text(acl aclitem[], kind "char", owner oid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(string_agg(g, ', ' ORDER BY g), '(none)')
      FROM (SELECT format('%s %s%s (granted by %s)',
                          CASE a.grantee WHEN 0 THEN 'PUBLIC' WHEN owner THEN 'OWNER'
                                         ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                          a.privilege_type, CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' END,
                          CASE a.grantor WHEN owner THEN 'OWNER'
                                         ELSE pg_catalog.pg_get_userbyid(a.grantor) END)
              FROM pg_catalog.aclexplode(coalesce(acl, pg_catalog.acldefault(kind, owner))) a) AS x(g)
$$;

-- An owner as text: OWNER when it is the extension's owner.
CREATE FUNCTION pg_temp.owner_text(owner oid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN owner = (SELECT e.extowner FROM pg_catalog.pg_extension e
                               WHERE e.extname = 'pg_entitlements')
                THEN 'the extension''s owner' ELSE pg_catalog.pg_get_userbyid(owner) END
$$;

WITH ext AS (
    SELECT e.* FROM pg_extension e WHERE e.extname = 'pg_entitlements'
),
member AS (
    SELECT d.classid, d.objid, d.objsubid
      FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
-- The relations among the members, and their parts (which are not members themselves).
rel AS (
    SELECT c.* FROM pg_class c JOIN member m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
),
part(classid, objid, objsubid) AS (
    SELECT 'pg_class'::regclass, a.attrelid, a.attnum::int
      FROM pg_attribute a JOIN rel ON a.attrelid = rel.oid AND rel.relkind <> 'S'
     WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'pg_constraint'::regclass, co.oid, 0 FROM pg_constraint co JOIN rel ON co.conrelid = rel.oid
    UNION ALL
    SELECT 'pg_class'::regclass, i.indexrelid, 0 FROM pg_index i JOIN rel ON i.indrelid = rel.oid
    UNION ALL
    SELECT 'pg_trigger'::regclass, t.oid, 0 FROM pg_trigger t JOIN rel ON t.tgrelid = rel.oid
     WHERE NOT t.tgisinternal   -- the internal ones are the foreign keys' (names hold an OID)
    UNION ALL
    SELECT 'pg_policy'::regclass, p.oid, 0 FROM pg_policy p JOIN rel ON p.polrelid = rel.oid
    UNION ALL
    SELECT 'pg_rewrite'::regclass, r.oid, 0 FROM pg_rewrite r JOIN rel ON r.ev_class = rel.oid
    UNION ALL
    SELECT 'pg_statistic_ext'::regclass, s.oid, 0 FROM pg_statistic_ext s JOIN rel ON s.stxrelid = rel.oid
    UNION ALL   -- constraints of member domains
    SELECT 'pg_constraint'::regclass, co.oid, 0
      FROM pg_constraint co JOIN member m ON m.classid = 'pg_type'::regclass AND m.objid = co.contypid
    UNION ALL   -- attributes of member composite types
    SELECT 'pg_class'::regclass, a.attrelid, a.attnum::int
      FROM member m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
      JOIN pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
),
-- Objects in the extension's schema that belong to no extension and to no other object.
stray(classid, objid) AS (
    SELECT x.classid, x.objid
      FROM (SELECT 'pg_class'::regclass, c.oid, c.relnamespace FROM pg_class c WHERE c.relkind NOT IN ('i', 'I')
            UNION ALL SELECT 'pg_proc'::regclass, oid, pronamespace FROM pg_proc
            UNION ALL SELECT 'pg_type'::regclass, oid, typnamespace FROM pg_type
            UNION ALL SELECT 'pg_operator'::regclass, oid, oprnamespace FROM pg_operator
            UNION ALL SELECT 'pg_opclass'::regclass, oid, opcnamespace FROM pg_opclass
            UNION ALL SELECT 'pg_opfamily'::regclass, oid, opfnamespace FROM pg_opfamily
            UNION ALL SELECT 'pg_collation'::regclass, oid, collnamespace FROM pg_collation
            UNION ALL SELECT 'pg_conversion'::regclass, oid, connamespace FROM pg_conversion
            UNION ALL SELECT 'pg_ts_config'::regclass, oid, cfgnamespace FROM pg_ts_config
            UNION ALL SELECT 'pg_ts_dict'::regclass, oid, dictnamespace FROM pg_ts_dict
            UNION ALL SELECT 'pg_ts_parser'::regclass, oid, prsnamespace FROM pg_ts_parser
            UNION ALL SELECT 'pg_ts_template'::regclass, oid, tmplnamespace FROM pg_ts_template
            UNION ALL SELECT 'pg_statistic_ext'::regclass, oid, stxnamespace FROM pg_statistic_ext
           ) AS x(classid, objid, nsp), ext
     WHERE x.nsp = ext.extnamespace
       AND NOT EXISTS (SELECT FROM pg_depend d
                        WHERE d.classid = x.classid AND d.objid = x.objid AND d.deptype IN ('e', 'i', 'a'))
),
-- Every object whose properties are printed.
obj(classid, objid, objsubid) AS (
    SELECT classid, objid, objsubid FROM member
    UNION SELECT classid, objid, objsubid FROM part
    UNION SELECT classid, objid, 0 FROM stray
    UNION SELECT 'pg_namespace'::regclass, extnamespace, 0 FROM ext
    UNION SELECT 'pg_extension'::regclass, oid, 0 FROM ext
    UNION SELECT 'pg_event_trigger'::regclass, oid, 0 FROM pg_event_trigger
),
named AS (
    SELECT o.*, pg_describe_object(o.classid, o.objid, o.objsubid) AS name FROM obj o
),
fact(name, prop, val) AS (
    -- membership
    SELECT n.name, 'member of pg_entitlements', NULL FROM named n JOIN member USING (classid, objid, objsubid)
    UNION ALL
    SELECT n.name, 'NOT A MEMBER of pg_entitlements, in its schema', NULL
      FROM named n JOIN stray s ON s.classid = n.classid AND s.objid = n.objid
    UNION ALL
    SELECT n.name, 'NOT A MEMBER of pg_entitlements, an event trigger', NULL
      FROM named n WHERE n.classid = 'pg_event_trigger'::regclass
       AND NOT EXISTS (SELECT FROM member m WHERE m.classid = n.classid AND m.objid = n.objid)

    -- comments, initial privileges and security labels of everything
    UNION ALL
    SELECT n.name, 'comment', d.description
      FROM named n JOIN pg_description d
        ON d.classoid = n.classid AND d.objoid = n.objid AND d.objsubid = n.objsubid
    UNION ALL
    SELECT n.name, format('initial privileges (pg_init_privs, type %s)', ip.privtype),
           pg_temp.acl_text(ip.initprivs, 'r', ext.extowner)   -- kind unused: never NULL
      FROM ext, named n JOIN pg_init_privs ip
        ON ip.classoid = n.classid AND ip.objoid = n.objid AND ip.objsubid = n.objsubid
    UNION ALL
    SELECT n.name, format('security label (%s)', sl.provider), sl.label
      FROM named n JOIN pg_seclabel sl
        ON sl.classoid = n.classid AND sl.objoid = n.objid AND sl.objsubid = n.objsubid

    -- the extension
    UNION ALL
    SELECT n.name, p.prop, p.val
      FROM named n JOIN ext ON n.classid = 'pg_extension'::regclass AND n.objid = ext.oid,
           LATERAL (VALUES ('version', ext.extversion),
                           ('schema', ext.extnamespace::regnamespace::text),
                           ('relocatable', ext.extrelocatable::text),
                           ('owner', pg_temp.owner_text(ext.extowner))) AS p(prop, val)
    UNION ALL
    SELECT n.name, 'configuration table (pg_extension_config_dump)',
           format('%s, condition %L', cfg.rel::regclass, cfg.cond)
      FROM named n JOIN ext ON n.classid = 'pg_extension'::regclass AND n.objid = ext.oid,
           LATERAL unnest(ext.extconfig, ext.extcondition) AS cfg(rel, cond)

    -- the schema
    UNION ALL
    SELECT n.name, p.prop, p.val
      FROM named n JOIN pg_namespace ns ON n.classid = 'pg_namespace'::regclass AND n.objid = ns.oid,
           LATERAL (VALUES ('owner', pg_temp.owner_text(ns.nspowner)),
                           ('acl', pg_temp.acl_text(ns.nspacl, 'n', ns.nspowner))) AS p(prop, val)
    UNION ALL
    SELECT format('default privileges in schema %s', da.defaclnamespace::regnamespace),
           format('for role %s on %s', pg_temp.owner_text(da.defaclrole),
                  CASE da.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences'
                       WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' END),
           pg_temp.acl_text(da.defaclacl, 'r', da.defaclrole)
      FROM pg_default_acl da JOIN ext ON da.defaclnamespace IN (ext.extnamespace, 0)

    -- functions and procedures
    UNION ALL
    SELECT n.name, p.prop, p.val
      FROM named n JOIN pg_proc f ON n.classid = 'pg_proc'::regclass AND n.objid = f.oid,
           LATERAL (VALUES
               ('kind', f.prokind::text),
               ('language', (SELECT lanname FROM pg_language WHERE oid = f.prolang)::text),
               ('arguments', pg_get_function_arguments(f.oid)),
               ('result', pg_get_function_result(f.oid)),
               ('volatility', f.provolatile::text),
               ('parallel', f.proparallel::text),
               ('strict', f.proisstrict::text),
               ('security definer', f.prosecdef::text),
               ('leakproof', f.proleakproof::text),
               ('cost', f.procost::text),
               ('rows', f.prorows::text),
               ('support', f.prosupport::regprocedure::text),
               ('config (SET)', coalesce(f.proconfig::text, '(none)')),
               ('owner', pg_temp.owner_text(f.proowner)),
               ('acl', pg_temp.acl_text(f.proacl, 'f', f.proowner))) AS p(prop, val)
    UNION ALL
    SELECT n.name, format('definition line %s', lpad(l.no::text, 4, '0')), l.text
      FROM named n JOIN pg_proc f ON n.classid = 'pg_proc'::regclass AND n.objid = f.oid AND f.prokind <> 'a',
           LATERAL regexp_split_to_table(pg_get_functiondef(f.oid), E'\n') WITH ORDINALITY AS l(text, no)
    UNION ALL
    SELECT n.name, 'aggregate',
           format('transition %s, final %s, combine %s, state %s, initial %L, sort operator %s, kind %s',
                  ag.aggtransfn::regprocedure, ag.aggfinalfn::regprocedure, ag.aggcombinefn::regprocedure,
                  ag.aggtranstype::regtype, ag.agginitval, ag.aggsortop::regoperator, ag.aggkind)
      FROM named n JOIN pg_aggregate ag ON n.classid = 'pg_proc'::regclass AND n.objid = ag.aggfnoid

    -- relations: tables, views, sequences, indexes
    UNION ALL
    SELECT n.name, p.prop, p.val
      FROM named n JOIN pg_class c ON n.classid = 'pg_class'::regclass AND n.objid = c.oid AND n.objsubid = 0,
           LATERAL (VALUES
               ('kind', c.relkind::text),
               ('persistence', c.relpersistence::text),
               ('access method', (SELECT amname FROM pg_am WHERE oid = c.relam)::text),
               ('options', coalesce(c.reloptions::text, '(none)')),
               ('row level security', CASE WHEN c.relkind IN ('r', 'p') THEN c.relrowsecurity::text END),
               ('forced row level security', CASE WHEN c.relkind IN ('r', 'p') THEN c.relforcerowsecurity::text END),
               ('replica identity', CASE WHEN c.relkind IN ('r', 'p') THEN c.relreplident::text END),
               ('partition key', pg_get_partkeydef(c.oid)),
               ('partition bound', pg_get_expr(c.relpartbound, c.oid)),
               ('owner', pg_temp.owner_text(c.relowner)),
               ('acl', CASE WHEN c.relkind NOT IN ('i', 'I', 'c')
                            THEN pg_temp.acl_text(c.relacl, CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char",
                                                  c.relowner) END),
               ('columns in order', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                       FROM pg_attribute a
                                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                        AND c.relkind NOT IN ('i', 'I', 'S')))
           ) AS p(prop, val)
    UNION ALL
    SELECT n.name, 'inherits from', inh.inhparent::regclass::text
      FROM named n JOIN pg_inherits inh ON n.classid = 'pg_class'::regclass AND n.objid = inh.inhrelid AND n.objsubid = 0
    UNION ALL
    SELECT n.name, format('view definition line %s', lpad(l.no::text, 4, '0')), l.text
      FROM named n JOIN pg_class c ON n.classid = 'pg_class'::regclass AND n.objid = c.oid AND n.objsubid = 0
                                   AND c.relkind IN ('v', 'm'),
           LATERAL regexp_split_to_table(pg_get_viewdef(c.oid, true), E'\n') WITH ORDINALITY AS l(text, no)
    UNION ALL
    SELECT n.name, 'sequence',
           format('type %s, start %s, increment %s, min %s, max %s, cache %s, cycle %s',
                  s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
      FROM named n JOIN pg_sequence s ON n.classid = 'pg_class'::regclass AND n.objid = s.seqrelid AND n.objsubid = 0
    UNION ALL
    SELECT n.name, format('owned by (dependency %s)', d.deptype), pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid)
      FROM named n JOIN pg_sequence s ON n.classid = 'pg_class'::regclass AND n.objid = s.seqrelid AND n.objsubid = 0
      JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    UNION ALL
    SELECT n.name, p.prop, p.val
      FROM named n JOIN pg_index i ON n.classid = 'pg_class'::regclass AND n.objid = i.indexrelid AND n.objsubid = 0,
           LATERAL (VALUES ('definition', pg_get_indexdef(i.indexrelid)),
                           ('valid', i.indisvalid::text),
                           ('clustered', i.indisclustered::text),
                           ('used as replica identity', i.indisreplident::text)) AS p(prop, val)

    -- columns (of tables, views, composite types)
    UNION ALL
    SELECT n.name, p.prop, p.val
      FROM named n
      JOIN pg_class c ON n.classid = 'pg_class'::regclass AND n.objid = c.oid AND n.objsubid > 0
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = n.objsubid
      JOIN pg_type t ON t.oid = a.atttypid,
           LATERAL (VALUES
               ('position', (SELECT count(*) FROM pg_attribute b
                              WHERE b.attrelid = a.attrelid AND b.attnum > 0 AND b.attnum <= a.attnum
                                AND NOT b.attisdropped)::text),
               ('type', format_type(a.atttypid, a.atttypmod)),
               ('not null', a.attnotnull::text),
               ('default', (SELECT pg_get_expr(ad.adbin, ad.adrelid) FROM pg_attrdef ad
                             WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum)),
               ('identity', nullif(a.attidentity, '')::text),
               ('generated', nullif(a.attgenerated, '')::text),
               ('collation', CASE WHEN a.attcollation <> t.typcollation
                                  THEN (SELECT collname FROM pg_collation WHERE oid = a.attcollation)::text END),
               ('storage', CASE WHEN a.attstorage <> t.typstorage THEN a.attstorage::text END),
               ('compression', nullif(a.attcompression, '')::text),
               ('statistics target', nullif(a.attstattarget, -1)::text),
               -- This server stamps every column with the WAL position of its creation
               -- (attoptions pg_attver=<lsn>), which differs between any two databases.
               ('options', (SELECT array_agg(o ORDER BY o)::text FROM unnest(a.attoptions) o
                             WHERE o NOT LIKE 'pg\_attver=%')),
               ('acl', CASE WHEN a.attacl IS NOT NULL THEN pg_temp.acl_text(a.attacl, 'c', c.relowner) END)
           ) AS p(prop, val)

    -- constraints, triggers, policies, rules, statistics objects
    UNION ALL
    SELECT n.name, 'definition', pg_get_constraintdef(co.oid)
      FROM named n JOIN pg_constraint co ON n.classid = 'pg_constraint'::regclass AND n.objid = co.oid
    UNION ALL
    SELECT n.name, p.prop, p.val
      FROM named n JOIN pg_trigger t ON n.classid = 'pg_trigger'::regclass AND n.objid = t.oid,
           LATERAL (VALUES ('definition', pg_get_triggerdef(t.oid)),
                           ('enabled', t.tgenabled::text)) AS p(prop, val)
    UNION ALL
    SELECT n.name, 'definition',
           format('FOR %s %s TO %s USING (%s) WITH CHECK (%s)',
                  pol.polcmd, CASE WHEN pol.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                  (SELECT string_agg(r, ', ' ORDER BY r)
                     FROM unnest(pol.polroles) u,
                          LATERAL (SELECT CASE u WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(u)::text END) AS x(r)),
                  pg_get_expr(pol.polqual, pol.polrelid), pg_get_expr(pol.polwithcheck, pol.polrelid))
      FROM named n JOIN pg_policy pol ON n.classid = 'pg_policy'::regclass AND n.objid = pol.oid
    UNION ALL
    SELECT n.name, 'definition', pg_get_ruledef(r.oid)
      FROM named n JOIN pg_rewrite r ON n.classid = 'pg_rewrite'::regclass AND n.objid = r.oid
    UNION ALL
    SELECT n.name, 'definition', pg_get_statisticsobjdef(s.oid)
      FROM named n JOIN pg_statistic_ext s ON n.classid = 'pg_statistic_ext'::regclass AND n.objid = s.oid

    -- types
    UNION ALL
    SELECT n.name, p.prop, p.val
      FROM named n JOIN pg_type t ON n.classid = 'pg_type'::regclass AND n.objid = t.oid,
           LATERAL (VALUES
               ('type kind', t.typtype::text),
               ('base type (domain)', CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END),
               ('not null (domain)', CASE WHEN t.typtype = 'd' THEN t.typnotnull::text END),
               ('default', t.typdefault),
               ('enum labels in order', (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                                           FROM pg_enum e WHERE e.enumtypid = t.oid)),
               ('range', (SELECT format('subtype %s, opclass %s, canonical %s, diff %s, multirange %s',
                                        r.rngsubtype::regtype, r.rngsubopc, r.rngcanonical, r.rngsubdiff,
                                        r.rngmultitypid::regtype)
                            FROM pg_range r WHERE r.rngtypid = t.oid)),
               ('input/output', CASE WHEN t.typtype = 'b' THEN format('%s %s %s %s', t.typinput, t.typoutput,
                                                                  t.typreceive, t.typsend) END),
               ('owner', pg_temp.owner_text(t.typowner)),
               ('acl', pg_temp.acl_text(t.typacl, 'T', t.typowner))) AS p(prop, val)

    -- event triggers
    UNION ALL
    SELECT n.name, 'definition',
           format('ON %s WHEN TAG IN (%s) EXECUTE FUNCTION %s, enabled %s', et.evtevent,
                  array_to_string(et.evttags, ', '), et.evtfoid::regprocedure, et.evtenabled)
      FROM named n JOIN pg_event_trigger et ON n.classid = 'pg_event_trigger'::regclass AND n.objid = et.oid
)
SELECT line FROM (
SELECT format('%s :: %s%s', name, prop, coalesce(' = ' || val, '')) AS line
  FROM fact
 WHERE val IS NOT NULL OR prop LIKE '%MEMBER%' OR prop LIKE '%member%'   -- NULL: not applicable
) AS lines
 ORDER BY line COLLATE "C";
