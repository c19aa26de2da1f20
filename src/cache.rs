//! What a backend keeps between quota calls: a copy of the nearly constant tables (settings,
//! features, plans, plan features) and how to read the per-user tables through their indexes
//! ([`crate::probe`]). With both, `check_user_quota` runs no statement at all.
//!
//! A stale limit is the bug this project exists to end, so the copy follows every committed
//! change at once: each of the copied tables has a statement trigger (sql/cache.sql) that
//! queues a relcache invalidation of the table, which PostgreSQL delivers to every backend when
//! the change commits, and to no one when it rolls back. A backend takes delivery at the start
//! of every quota call (`AcceptInvalidationMessages`), before its answer, so a call that starts
//! after the change's COMMIT returned sees the change. DDL on any of the tables (a dropped
//! index, a GRANT) invalidates the same way without a trigger.
//!
//! The copy is rebuilt from the newest committed rows (`GetLatestSnapshot`), not from the
//! calling statement's older snapshot: rebuilt from the older one, it would keep a change that
//! committed in between out until the next change.

use crate::probe::{Column, Key, KeyColumn, Kind, Probe};
use crate::store::{self, Catalog, FeatureRow, SubscriptionRow};
use crate::time::micros;
use entitlements_core::Error;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::{self, Oid};
use pgrx::spi::{SpiClient, SpiHeapTupleData};
use pgrx::GucSetting;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// `pg_entitlements.direct_reads`: off sends every read through the SQL statements of
/// [`crate::store`], for comparison and diagnosis.
pub static DIRECT_READS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// A feature of the catalog.
pub struct FeatureEntry {
    pub catalog: Catalog,
    pub alert_thresholds: Vec<i32>,
}

struct PlanFeature {
    value: Option<i32>,
    unit: Option<String>,
}

/// The columns of user_subscriptions a quota call reads.
struct Subscriptions {
    probe: Probe,
    id: Column,
    plan_id: Column,
    status: Column,
    start: Column,
    end: Column,
    anchor: Column,
    cycle: Column,
    custom: Column,
}

struct Usage {
    probe: Probe,
    count: Column,
}

/// A table a quota call reads.
struct Table {
    role: &'static str,
    /// Schema-qualified.
    name: String,
    /// InvalidOid when there is no such table.
    relid: Oid,
    /// Why its rows cannot be read without a statement, whatever its indexes: not a plain heap
    /// table, or row level security.
    unreadable: Option<String>,
}

/// The tables a quota call reads, by role; the last four follow quota.attach().
const TABLE_ROLES: [&str; 6] = [
    "settings",
    "features",
    "subscription_plans",
    "plan_features",
    "user_subscriptions",
    "user_usage",
];

pub struct Config {
    pub time_zone: String,
    /// `quota.settings.attached_schema`.
    pub binding: Option<String>,
    features: HashMap<String, FeatureEntry>,
    /// `coalesce(quota_cycle_type, billing_cycle)` of every plan.
    plan_cycles: HashMap<i64, Option<String>>,
    plan_features: HashMap<i64, HashMap<String, PlanFeature>>,
    subscriptions: Result<Subscriptions, String>,
    usage: Result<Usage, String>,
    tables: Vec<Table>,
}

thread_local! {
    /// Bumped by every invalidation of a watched table; a copy built under an older value is
    /// stale.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// The oids of the tables of the copy. While a copy is being built, every invalidation
    /// counts (the oids are not known yet).
    static WATCHED: Cell<[Oid; 6]> = const { Cell::new([pg_sys::InvalidOid; 6]) };
    static BUILDING: Cell<bool> = const { Cell::new(false) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// The role that passed the SELECT privilege checks on every table of the copy; reset by
    /// any change of a role or a membership, and by a GRANT or REVOKE (an invalidation).
    static PRIVILEGED: Cell<Oid> = const { Cell::new(pg_sys::InvalidOid) };
    /// The copy, or why none can be kept, and the generation it was built under.
    static CONFIG: RefCell<Option<(u64, Result<Rc<Config>, String>)>> = const { RefCell::new(None) };
}

unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, relid: Oid) {
    if relid == pg_sys::InvalidOid || BUILDING.get() || WATCHED.get().contains(&relid) {
        GENERATION.set(GENERATION.get() + 1);
        PRIVILEGED.set(pg_sys::InvalidOid);
    }
}

unsafe extern "C-unwind" fn roles_invalidated(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    PRIVILEGED.set(pg_sys::InvalidOid);
}

fn register_callbacks() {
    if REGISTERED.replace(true) {
        return;
    }
    // SAFETY: registered once per backend, for its lifetime; the callbacks only set Cells.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_invalidated), pg_sys::Datum::from(0));
        for cache in
            [pg_sys::SysCacheIdentifier::AUTHOID, pg_sys::SysCacheIdentifier::AUTHMEMROLEMEM]
        {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(roles_invalidated),
                pg_sys::Datum::from(0),
            );
        }
    }
}

/// The copy, when this call may read without statements; otherwise why not (the reason
/// `quota.read_paths()` shows).
///
/// Only where read-only SPI would have used the caller's snapshot: in a transaction that has
/// written nothing yet (a statement after a write must see it, so SPI takes a new snapshot
/// then), and under READ COMMITTED (under REPEATABLE READ and SERIALIZABLE every read must see
/// the transaction's one snapshot, and the copy can be newer).
pub fn direct(client: &SpiClient<'_>) -> Result<Rc<Config>, String> {
    if !DIRECT_READS.get() {
        return Err("pg_entitlements.direct_reads is off".into());
    }
    // SAFETY: plain reads of the transaction's state.
    unsafe {
        if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
            return Err(
                "the transaction reads one snapshot (REPEATABLE READ or SERIALIZABLE)".into()
            );
        }
        if pg_sys::GetCurrentTransactionIdIfAny() != pg_sys::InvalidTransactionId {
            return Err("the transaction has written: statements see its own changes".into());
        }
        if !pg_sys::ActiveSnapshotSet() {
            return Err("no active snapshot".into());
        }
    }
    register_callbacks();
    // SAFETY: processes pending invalidations, as taking a lock does; only our callback and
    // PostgreSQL's own caches react.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    let current = CONFIG.with_borrow(|c| match c {
        Some((generation, config)) if *generation == GENERATION.get() => Some(config.clone()),
        _ => None,
    });
    let config = match current {
        Some(found) => found?,
        None => rebuild(client)?,
    };
    privileged(&config)?;
    Ok(config)
}

/// A statement checks the caller's privileges on every table it reads; reading without one
/// must too. Any refusal is left to the statement, which raises the genuine error (or succeeds
/// through column privileges, which are not checked here).
fn privileged(config: &Config) -> Result<(), String> {
    // SAFETY: GetUserId reads the current role.
    let user = unsafe { pg_sys::GetUserId() };
    if PRIVILEGED.get() != user {
        privileged_on(&config.tables)?;
        PRIVILEGED.set(user);
    }
    Ok(())
}

fn privileged_on(tables: &[Table]) -> Result<(), String> {
    // SAFETY: GetUserId and pg_class_aclcheck read the role and the tables' ACLs.
    let user = unsafe { pg_sys::GetUserId() };
    for t in tables {
        let granted = unsafe { pg_sys::pg_class_aclcheck(t.relid, user, pg_sys::ACL_SELECT as _) };
        if granted != pg_sys::AclResult::ACLCHECK_OK {
            return Err(format!("the current role lacks SELECT on {}", t.name));
        }
    }
    Ok(())
}

fn rebuild(client: &SpiClient<'_>) -> Result<Rc<Config>, String> {
    // SAFETY: reads the transaction's state.
    if unsafe { pg_sys::IsInParallelMode() } {
        // GetLatestSnapshot raises an ERROR in parallel mode (in a worker, and in the leader
        // while a parallel plan runs); the statements read instead, with the query's snapshot.
        // Not remembered: the next call outside parallel mode builds the copy.
        return Err("parallel mode: the copy is built from the newest committed rows, which a \
                    parallel query cannot take"
            .into());
    }
    let generation = GENERATION.get();
    BUILDING.set(true);
    // SAFETY: a snapshot of the newest committed rows, active for the statements below (read-
    // only SPI uses the active snapshot); popped again below, or by the abort of the
    // (sub)transaction when a statement raises an ERROR.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
    let built = build(client);
    unsafe { pg_sys::PopActiveSnapshot() };
    BUILDING.set(false);
    let built = match built {
        Ok(config) => {
            let mut watched = [pg_sys::InvalidOid; 6];
            for (slot, t) in watched.iter_mut().zip(&config.tables) {
                *slot = t.relid;
            }
            WATCHED.set(watched);
            Ok(Rc::new(config))
        }
        Err(Refusal::Unusable(why)) => Err(why),
        Err(Refusal::Privileges(why)) => return Err(why),
    };
    CONFIG.set(Some((generation, built.clone())));
    built
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(row: &SpiHeapTupleData<'_>, n: usize) -> Option<T> {
    row.get::<T>(n).unwrap_or_else(|e| panic!("column {n} of a pg_entitlements cache query: {e}"))
}

fn select<'c>(
    client: &'c SpiClient<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> pgrx::spi::SpiTupleTable<'c> {
    client.select(sql, None, args).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

const SETTINGS: &str = "
SELECT coalesce(st.time_zone, 'UTC'), st.attached_schema::pg_catalog.text
  FROM (SELECT) AS one LEFT JOIN quota.settings st ON true";

const FEATURES: &str = "
SELECT f.code, f.name, f.reset_rule, f.unit, f.default_limit, f.alert_thresholds
  FROM quota.features f";

const PLANS: &str = "
SELECT p.id::pg_catalog.int8, coalesce(p.quota_cycle_type, p.billing_cycle)::pg_catalog.text
  FROM quota.subscription_plans p";

const PLAN_FEATURES: &str = "
SELECT pf.plan_id::pg_catalog.int8, pf.feature_code::pg_catalog.text, pf.feature_value,
       pf.feature_unit::pg_catalog.text
  FROM quota.plan_features pf";

const TABLE: &str = "
SELECT c.oid, c.relkind::pg_catalog.text, am.amname::pg_catalog.text, c.relrowsecurity
  FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
 WHERE c.oid = pg_catalog.to_regclass($1)";

/// A column of a domain type (`usage_count` is `quota.usage_total`) is read as the domain's base
/// type: its datums are the base type's.
const COLUMNS: &str = "
SELECT a.attname::pg_catalog.text, a.attnum,
       CASE t.typtype WHEN 'd' THEN t.typbasetype ELSE a.atttypid END
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped";

/// The usable btree indexes of a table, one row per key column: the index, its predicate, the
/// column and how the index compares it (the type its operator class compares, the equality
/// function of its operator family, its collation).
const INDEX_COLUMNS: &str = "
SELECT ic.oid, ic.relname::pg_catalog.text,
       pg_catalog.pg_get_expr(i.indpred, i.indrelid), k.n::pg_catalog.int2,
       a.attname::pg_catalog.text, a.atttypid, opc.opcintype, op.oprcode::pg_catalog.oid, k.coll
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
 CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(i.indkey::pg_catalog.int2[]),
                               pg_catalog.unnest(i.indclass::pg_catalog.oid[]),
                               pg_catalog.unnest(i.indcollation::pg_catalog.oid[]))
       WITH ORDINALITY AS k (attnum, opclass, coll, n)
  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
  JOIN pg_catalog.pg_opclass opc ON opc.oid = k.opclass
  LEFT JOIN pg_catalog.pg_amop amop
         ON amop.amopfamily = opc.opcfamily AND amop.amoplefttype = opc.opcintype
        AND amop.amoprighttype = opc.opcintype AND amop.amopstrategy = 3
  LEFT JOIN pg_catalog.pg_operator op ON op.oid = amop.amopopr
 WHERE i.indrelid = $1 AND i.indisvalid AND i.indisready AND i.indislive
   AND i.indexprs IS NULL AND k.n <= i.indnkeyatts
 ORDER BY ic.relname, k.n";

/// Citus keeps the rows of a distributed table on its workers; the table of that name on the
/// coordinator (and on a worker, next to its shards) holds none, and only a statement, which
/// Citus plans, finds them. Citus lists such tables in pg_dist_partition and invalidates the
/// table's relcache entry when it adds one, which rebuilds the copy.
fn citus_tables(client: &SpiClient<'_>) -> HashSet<Oid> {
    let exists = "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL";
    if !select(client, exists, &[]).first().get_one::<bool>().ok().flatten().unwrap_or(false) {
        return HashSet::new();
    }
    select(client, "SELECT logicalrelid::pg_catalog.oid FROM pg_catalog.pg_dist_partition", &[])
        .filter_map(|row| col::<Oid>(&row, 1))
        .collect()
}

/// Why no copy was built: for this caller only, or for good (until an invalidation).
enum Refusal {
    Privileges(String),
    Unusable(String),
}

/// The table of `role` in `schema`, as [`TABLE`] finds it.
fn table(client: &SpiClient<'_>, role: &'static str, schema: &str) -> Table {
    let name = format!("{schema}.{role}");
    let row = select(client, TABLE, &[name.as_str().into()]).first();
    let relid: Option<Oid> = row.get(1).ok().flatten();
    let (kind, am, rls): (Option<String>, Option<String>, Option<bool>) =
        (row.get(2).ok().flatten(), row.get(3).ok().flatten(), row.get(4).ok().flatten());
    let unreadable = if kind.as_deref() != Some("r") || am.as_deref() != Some("heap") {
        Some(format!("{name} is not a plain heap table"))
    } else if rls == Some(true) {
        Some(format!("{name} has row level security"))
    } else {
        None
    };
    Table { role, name, relid: relid.unwrap_or(pg_sys::InvalidOid), unreadable }
}

/// Rows are read with the caller's rights: a caller who may not read a table gets the
/// statements (and their error), and the copy waits for a caller who may.
fn readable(tables: &[Table]) -> Result<(), Refusal> {
    if let Some(t) = tables.iter().find(|t| t.relid == pg_sys::InvalidOid) {
        return Err(Refusal::Unusable(format!("{} does not exist", t.name)));
    }
    privileged_on(tables).map_err(Refusal::Privileges)
}

fn build(client: &SpiClient<'_>) -> Result<Config, Refusal> {
    let mut tables: Vec<Table> =
        TABLE_ROLES[..2].iter().map(|role| table(client, role, "quota")).collect();
    readable(&tables)?;
    let settings = select(client, SETTINGS, &[]).first();
    let time_zone: String = settings.get(1).ok().flatten().expect("time_zone is NOT NULL");
    let binding: Option<String> = settings.get(2).unwrap_or_else(|e| panic!("binding: {e}"));
    let bound = |sql: &str| store::bind(sql, binding.as_deref());
    let schema = pgrx::spi::quote_identifier(binding.as_deref().unwrap_or("quota")).to_string();
    tables.extend(TABLE_ROLES[2..].iter().map(|role| table(client, role, &schema)));
    readable(&tables)?;
    let citus = citus_tables(client);
    for t in &tables[..4] {
        check_table(t, &citus).map_err(|why| {
            Refusal::Unusable(format!(
                "{}: {why}; the nearly constant tables are read by statements",
                t.role
            ))
        })?;
    }

    let mut features = HashMap::new();
    for row in select(client, FEATURES, &[]) {
        let code: String = col(&row, 1).expect("code is NOT NULL");
        let catalog = Catalog {
            name: col(&row, 2).expect("name is NOT NULL"),
            reset_rule: col(&row, 3).expect("reset_rule is NOT NULL"),
            unit: col(&row, 4).expect("unit is NOT NULL"),
            default_limit: col(&row, 5),
        };
        let alert_thresholds =
            col::<Vec<Option<i32>>>(&row, 6).unwrap_or_default().into_iter().flatten().collect();
        features.insert(code, FeatureEntry { catalog, alert_thresholds });
    }
    let plan_cycles = select(client, &bound(PLANS), &[])
        .map(|row| (col::<i64>(&row, 1).expect("id is NOT NULL"), col::<String>(&row, 2)))
        .collect();
    let mut plan_features: HashMap<i64, HashMap<String, PlanFeature>> = HashMap::new();
    for row in select(client, &bound(PLAN_FEATURES), &[]) {
        let plan: i64 = col(&row, 1).expect("plan_id is NOT NULL");
        let code: String = col(&row, 2).expect("feature_code is NOT NULL");
        let entry = PlanFeature { value: col(&row, 3), unit: col(&row, 4) };
        plan_features.entry(plan).or_default().insert(code, entry);
    }

    let subscriptions = probe_table(client, &tables[4], &citus, &["user_id"]).and_then(|t| {
        Ok(Subscriptions {
            id: t.column("id", &[Kind::Int8, Kind::Int4])?,
            plan_id: t.column("plan_id", &[Kind::Int8, Kind::Int4])?,
            status: t.column("status", &[Kind::Text])?,
            start: t.column("start_date", &[Kind::Timestamptz])?,
            end: t.column("end_date", &[Kind::Timestamptz])?,
            anchor: t.column("quota_reset_anchor", &[Kind::Timestamptz])?,
            cycle: t.column("quota_cycle_type", &[Kind::Text])?,
            custom: t.column("custom_quotas", &[Kind::Jsonb])?,
            probe: t.probe,
        })
    });
    let usage =
        probe_table(client, &tables[5], &citus, &["user_id", "feature_code", "period_start"])
            .and_then(|t| {
                Ok(Usage {
                    count: t.column("usage_count", &[Kind::Int8, Kind::Int4])?,
                    probe: t.probe,
                })
            });
    Ok(Config {
        time_zone,
        binding,
        features,
        plan_cycles,
        plan_features,
        subscriptions,
        usage,
        tables,
    })
}

/// Why a table cannot be read without a statement, if it cannot.
fn check_table(t: &Table, citus: &HashSet<Oid>) -> Result<(), String> {
    if citus.contains(&t.relid) {
        return Err(format!("{} is a Citus table: its rows are on the workers", t.name));
    }
    t.unreadable.clone().map_or(Ok(()), Err)
}

/// A per-user table that passed [`check_table`] and has an index to probe.
struct Probed {
    name: String,
    probe: Probe,
    columns: HashMap<String, (i16, Oid)>,
}

impl Probed {
    fn column(&self, name: &str, kinds: &[Kind]) -> Result<Column, String> {
        let &(attnum, type_oid) =
            self.columns.get(name).ok_or_else(|| format!("{} has no column {name}", self.name))?;
        match Kind::of(type_oid) {
            Some(kind) if kinds.contains(&kind) => Ok(Column { attnum, kind }),
            _ => Err(format!("{}.{name} has a type the index reader does not read", self.name)),
        }
    }
}

/// The table's columns and an index whose leading key columns are exactly `keys` (in any
/// order), with no expression; a partial index only when its predicate is `status = 'active'`
/// (the reader checks status itself, so that predicate only leaves rows out that it would skip).
fn probe_table(
    client: &SpiClient<'_>,
    table: &Table,
    citus: &HashSet<Oid>,
    keys: &[&str],
) -> Result<Probed, String> {
    check_table(table, citus)?;
    let (name, relid) = (&table.name, &table.relid);
    let columns: HashMap<String, (i16, Oid)> = select(client, COLUMNS, &[(*relid).into()])
        .map(|row| {
            (col::<String>(&row, 1).unwrap(), (col::<i16>(&row, 2).unwrap(), col(&row, 3).unwrap()))
        })
        .collect();
    struct Candidate {
        oid: Oid,
        name: String,
        predicate: Option<String>,
        columns: Vec<(String, Oid, Option<KeyColumn>)>,
    }
    let mut candidates: Vec<Candidate> = Vec::new();
    for row in select(client, INDEX_COLUMNS, &[(*relid).into()]) {
        let oid: Oid = col(&row, 1).unwrap();
        if candidates.last().is_none_or(|c| c.oid != oid) {
            candidates.push(Candidate {
                oid,
                name: col(&row, 2).unwrap(),
                predicate: col(&row, 3),
                columns: Vec::new(),
            });
        }
        let (column, type_oid, opcintype): (String, Oid, Oid) =
            (col(&row, 5).unwrap(), col(&row, 6).unwrap(), col(&row, 7).unwrap());
        // The key is built as the operator class's input type; the column must store that type
        // (varchar under text_ops is text on disk).
        let stored_as_compared = type_oid == opcintype
            || (type_oid == pg_sys::VARCHAROID && opcintype == pg_sys::TEXTOID);
        let key = match (Kind::of(opcintype), col::<Oid>(&row, 8), stored_as_compared) {
            (Some(kind), Some(procedure), true) if kind != Kind::Jsonb => Some(KeyColumn {
                index_attno: col(&row, 4).unwrap(),
                procedure,
                collation: col(&row, 9).unwrap_or(pg_sys::InvalidOid),
                kind,
            }),
            _ => None,
        };
        candidates.last_mut().expect("pushed above").columns.push((column, type_oid, key));
    }
    let active_only =
        |p: &str| matches!(p, "(status = 'active'::text)" | "((status)::text = 'active'::text)");
    let usable = |c: &Candidate| -> Option<Vec<KeyColumn>> {
        if c.predicate.as_deref().is_some_and(|p| !active_only(p)) || c.columns.len() < keys.len() {
            return None;
        }
        keys.iter()
            .map(|k| c.columns[..keys.len()].iter().find(|(n, _, _)| n == k).and_then(|col| col.2))
            .collect()
    };
    // A partial index of active subscriptions holds fewer rows than any other.
    candidates.sort_by_key(|c| c.predicate.is_none());
    let (index, key_columns) = candidates
        .iter()
        .find_map(|c| usable(c).map(|k| (c, k)))
        .ok_or_else(|| format!("{name} has no btree index on ({}) to read by", keys.join(", ")))?;
    Ok(Probed {
        name: name.clone(),
        probe: Probe {
            relid: *relid,
            index: index.oid,
            index_name: index.name.clone(),
            keys: key_columns,
        },
        columns,
    })
}

impl Config {
    /// [`store::feature_row`] from the copy and the subscription index.
    pub fn feature_row(&self, user_id: i64, feature: Option<&str>) -> Result<FeatureRow, Error> {
        let Ok(subs) = &self.subscriptions else {
            unreachable!("feature_row is only called when subscriptions can be probed")
        };
        let entry = feature
            .map(|f| {
                self.features.get(f).ok_or_else(|| Error::UnknownFeature {
                    user_id: Some(user_id),
                    feature: f.to_owned(),
                })
            })
            .transpose()?;
        let now = pgrx::datum::now();
        let subscription = self.active_subscription(subs, user_id, feature, now);
        Ok(FeatureRow {
            catalog: entry.map(|e| e.catalog.clone()),
            subscription,
            time_zone: self.time_zone.clone(),
            now,
            alert_thresholds: entry.map(|e| e.alert_thresholds.clone()).unwrap_or_default(),
        })
    }

    pub fn can_read_subscriptions(&self) -> bool {
        self.subscriptions.is_ok()
    }

    /// The user's active subscription: status 'active', start_date <= now < end_date, the
    /// latest end_date first, then the highest id, as the statement orders them.
    fn active_subscription(
        &self,
        s: &Subscriptions,
        user_id: i64,
        feature: Option<&str>,
        now: TimestampWithTimeZone,
    ) -> Option<SubscriptionRow> {
        struct Found {
            order: (i64, i64),
            end: TimestampWithTimeZone,
            tid: pg_sys::ItemPointerData,
            plan_id: i64,
            start: TimestampWithTimeZone,
            anchor: Option<TimestampWithTimeZone>,
            cycle: Option<String>,
            custom_value: Option<String>,
        }
        let mut best: Option<Found> = None;
        s.probe.scan(&[Key::Int(user_id)], |row| {
            let (Some(start), Some(end)) = (row.timestamptz(s.start), row.timestamptz(s.end))
            else {
                unreachable!("start_date and end_date are NOT NULL")
            };
            let (now_us, end_us) = (micros(now), micros(end));
            if !row.text_is(s.status, "active") || micros(start) > now_us || end_us <= now_us {
                return true;
            }
            let order = (end_us, row.int(s.id).expect("id is NOT NULL"));
            if best.as_ref().is_none_or(|b| order > b.order) {
                best = Some(Found {
                    order,
                    end,
                    tid: row.tid(),
                    plan_id: row.int(s.plan_id).expect("plan_id is NOT NULL"),
                    start,
                    anchor: row.timestamptz(s.anchor),
                    cycle: row.text(s.cycle),
                    custom_value: feature.and_then(|f| row.jsonb_field_text(s.custom, f)),
                });
            }
            true
        });
        let found = best?;
        let plan_feature = feature.and_then(|f| self.plan_features.get(&found.plan_id)?.get(f));
        let cycle = found.cycle.or_else(|| self.plan_cycles.get(&found.plan_id).cloned().flatten());
        Some(SubscriptionRow {
            tid: found.tid,
            start: found.start,
            end: found.end,
            anchor: found.anchor,
            cycle: cycle.expect("a subscription's plan exists and has a billing_cycle"),
            custom_value: found.custom_value,
            plan_value: plan_feature.and_then(|pf| pf.value),
            plan_unit: plan_feature.and_then(|pf| pf.unit.clone()),
        })
    }

    /// The counter of one period, `None` when the usage table cannot be probed.
    pub fn usage(
        &self,
        user_id: i64,
        feature: &str,
        period_start: TimestampWithTimeZone,
    ) -> Option<i64> {
        let u = self.usage.as_ref().ok()?;
        let mut count = 0;
        let keys = [Key::Int(user_id), Key::Text(feature), Key::Timestamptz(period_start)];
        u.probe.scan(&keys, |row| {
            count = row.int(u.count).expect("usage_count is NOT NULL");
            false
        });
        Some(count)
    }

    /// How each table is read: `(table, read_by, detail)`.
    pub fn paths(&self) -> Vec<(String, String, String)> {
        self.tables
            .iter()
            .map(|Table { role, name, .. }| {
                let probe = match *role {
                    "user_subscriptions" => Some(self.subscriptions.as_ref().map(|s| &s.probe)),
                    "user_usage" => Some(self.usage.as_ref().map(|u| &u.probe)),
                    _ => None,
                };
                let (by, detail) = match probe {
                    None => (
                        "cache",
                        format!(
                            "{name}: a copy in backend memory, reloaded by every committed change"
                        ),
                    ),
                    Some(Ok(p)) => {
                        ("index", format!("{name}: read through index {}", p.index_name))
                    }
                    Some(Err(why)) => ("sql", why.clone()),
                };
                (role.to_string(), by.to_owned(), detail)
            })
            .collect()
    }
}

/// [`Config::paths`], or every table read by statements and why.
pub fn paths(client: &SpiClient<'_>) -> Vec<(String, String, String)> {
    match direct(client) {
        Ok(config) => config.paths(),
        Err(why) => {
            TABLE_ROLES.iter().map(|t| (t.to_string(), "sql".into(), why.clone())).collect()
        }
    }
}
