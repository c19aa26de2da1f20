//! What a backend keeps between quota calls: a copy of the nearly constant tables (settings,
//! features, plans, plan features) and how to read the per-user tables through their indexes
//! ([`super::probe`]). With both, `check_user_quota` runs no statement at all.
//!
//! A stale limit is the bug this project exists to end, so the copy follows every committed
//! change at once: each of the copied tables has a statement trigger (sql/cache.sql) that
//! queues a relcache invalidation of the table, which PostgreSQL delivers to every backend when
//! the change commits, and to no one when it rolls back. A backend takes delivery at the start
//! of every quota call (`AcceptInvalidationMessages`), before its answer, so a call that starts
//! after the change's COMMIT returned sees the change. DDL on any of the tables (a dropped
//! index, a GRANT) invalidates the same way without a trigger.
//!
//! # One snapshot per answer
//! The per-user rows are read with the calling statement's snapshot, the copy with the snapshot
//! it was built from; an answer may combine the two only when the statement's snapshot sees
//! every transaction the copy's saw. The copy is built from the newest committed rows
//! (`GetLatestSnapshot`: built from an older snapshot, a change that committed in between and
//! whose invalidation already arrived would stay out of it until the next change) and remembers
//! where that snapshot stood ([`Horizon`]). Snapshots are ordered in time by their `xmax`
//! (which only grows) and, for equal `xmax`, by how many transactions below it were still
//! running (a set that only shrinks). (`snapXactCompletionCount` would say the same more
//! cheaply, but PostgreSQL zeroes it in every copied snapshot, which the active one is.)
//!
//! A statement's snapshot that is not older than the copy's sees everything the copy saw, and
//! any change of the copied tables committed after the copy was built has sent an invalidation
//! that this call accepted before using the copy. A snapshot older than the copy (a statement
//! running while the copy was rebuilt) gets a copy of its own, read with that snapshot, for its
//! calls only. A statement keeps the copy its first direct call used for all its calls
//! ([`PINNED`]), so a STABLE function gives one answer per statement even when a change commits
//! while the statement runs. Left open is the window PostgreSQL's own caches share: a commit is
//! visible to new snapshots a moment before its invalidation is queued; a change is guaranteed
//! to be seen by the statements that start after its COMMIT returned.

use super::probe::{
    IntColumn, JsonbColumn, JsonbField, Key, KeyColumn, KeyKind, Probe, TextColumn, TimeColumn,
};
use super::{Catalog, Chosen, PlanRow};
use crate::binding;
use crate::spi;
use crate::time::micros;
use entitlements_core::grants::{self, Totals};
use entitlements_core::subscription::{Candidate, ACTIVE};
use entitlements_core::Error;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::{self, Oid};
use pgrx::spi::{SpiClient, SpiHeapTupleData, SpiTupleTable};
use pgrx::{pg_guard, GucSetting};
use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// `pg_entitlements.direct_reads`: off sends every read through the SQL statements, for
/// comparison and diagnosis.
pub static DIRECT_READS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// A feature of the catalog.
pub struct FeatureEntry {
    pub catalog: Catalog,
    pub alert_thresholds: Vec<i32>,
}

struct PlanFeature {
    value: Option<i32>,
    unit: Option<String>,
    overage: Option<i32>,
    rollover: (Option<i32>, Option<i32>),
    reset_rule: Option<String>,
    config: Option<String>,
    window_limits: Option<String>,
}

/// A plan as the copy keeps it.
struct Plan {
    quota_cycle: Option<String>,
    billing_cycle: Option<String>,
    features: HashMap<String, PlanFeature>,
}

/// The columns of user_subscriptions a quota call reads.
struct Subscriptions {
    probe: Probe,
    id: IntColumn,
    plan_id: IntColumn,
    status: TextColumn,
    start: TimeColumn,
    end: TimeColumn,
    anchor: TimeColumn,
    cycle: TextColumn,
    custom: JsonbColumn,
}

struct Usage {
    probe: Probe,
    count: IntColumn,
    /// What the counter's holds claim; `None` where the table goes without reservations.
    held: Option<IntColumn>,
}

struct Grants {
    probe: Probe,
    amount: IntColumn,
    remaining: IntColumn,
    voided_at: TimeColumn,
    effective_from: TimeColumn,
    expires_at: TimeColumn,
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

/// The tables a quota call reads, by role; the four after the first two follow quota.attach(),
/// the grants are always the extension's own.
const TABLE_ROLES: [&str; 7] = [
    "settings",
    "features",
    "subscription_plans",
    "plan_features",
    "user_subscriptions",
    "user_usage",
    "grants",
];

/// A copy, or why none can be kept, and the generation it was built under.
type Built = (u64, Result<Rc<Config>, String>);

pub struct Config {
    pub zone: super::Zone,
    /// `quota.settings.attached_schema` and `attached_time_zone`.
    pub binding: crate::store::Binding,
    features: HashMap<String, FeatureEntry>,
    plans: HashMap<i64, Plan>,
    subscriptions: Result<Subscriptions, String>,
    usage: Result<Usage, String>,
    grants: Result<Grants, String>,
    tables: Vec<Table>,
    /// Where the snapshot the copy was built from stood.
    built: Horizon,
}

/// Where a snapshot stands in time: its `xmax` and how many transactions below it it saw
/// running. Of two snapshots, the one with the larger `xmax` was taken later; with equal
/// `xmax`, the one that saw fewer running was (the transactions below a given `xmax` can end
/// but none can start), and equal counts mean they see the same transactions.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Horizon {
    xmax: u32,
    running: u32,
}

impl Horizon {
    /// Whether a snapshot at `self` sees every transaction a snapshot at `other` saw.
    fn covers(self, other: Horizon) -> bool {
        // Transaction ids wrap around: compared as PostgreSQL's TransactionIdPrecedes does.
        let ahead = self.xmax.wrapping_sub(other.xmax) as i32;
        ahead > 0 || (ahead == 0 && self.running <= other.running)
    }

    /// # Safety
    /// `s` is a valid snapshot.
    unsafe fn of(s: pg_sys::Snapshot) -> Horizon {
        // SAFETY: as the caller promises. A snapshot taken during recovery keeps every running
        // transaction in subxip; otherwise xip holds the top-level ones.
        unsafe {
            let running = if (*s).takenDuringRecovery { (*s).subxcnt as u32 } else { (*s).xcnt };
            Horizon { xmax: (*s).xmax.into(), running }
        }
    }
}

/// What identifies a statement's snapshot: the snapshot itself, and what it sees.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SnapshotKey {
    address: usize,
    horizon: Horizon,
    xmin: u32,
    command: u32,
}

thread_local! {
    /// Bumped by every invalidation of a watched table; a copy built under an older value is
    /// stale.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// The oids of the tables of the copy. While a copy is being built, every invalidation
    /// counts (the oids are not known yet).
    /// Of every copy built, one per place ([`crate::placement`]): on a Citus worker each
    /// user's shards are tables of their own.
    static WATCHED: RefCell<Vec<Oid>> = const { RefCell::new(Vec::new()) };
    static BUILDING: Cell<bool> = const { Cell::new(false) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// For each place, the role that passed the SELECT privilege checks on every table of its
    /// copy; reset by any change of a role or a membership, and by a GRANT or REVOKE (an
    /// invalidation).
    static PRIVILEGED: RefCell<Vec<(i64, Oid)>> = const { RefCell::new(Vec::new()) };
    /// The copy of each place, or why none can be kept, and the generation it was built under.
    static CONFIG: RefCell<Vec<(i64, Built)>> = const { RefCell::new(Vec::new()) };
    /// The copy the last direct call used, and the snapshot and place it used it with: the
    /// other calls of the same statement there use it too.
    static PINNED: RefCell<Option<(SnapshotKey, i64, Rc<Config>)>> = const { RefCell::new(None) };
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, relid: Oid) {
    if relid == pg_sys::InvalidOid || BUILDING.get() || WATCHED.with_borrow(|w| w.contains(&relid))
    {
        GENERATION.set(GENERATION.get() + 1);
        PRIVILEGED.with_borrow_mut(Vec::clear);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn roles_invalidated(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    PRIVILEGED.with_borrow_mut(Vec::clear);
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

/// The active snapshot's identity. `None` without one.
fn active_snapshot() -> Option<SnapshotKey> {
    // SAFETY: reads the fields of the active snapshot, which stays valid during the call.
    unsafe {
        if !pg_sys::ActiveSnapshotSet() {
            return None;
        }
        let s = pg_sys::GetActiveSnapshot();
        Some(SnapshotKey {
            address: s as usize,
            horizon: Horizon::of(s),
            xmin: (*s).xmin.into(),
            command: (*s).curcid,
        })
    }
}

/// The copy, when this call may read without statements; otherwise why not (the reason
/// `quota.read_paths()` shows).
///
/// Only where read-only SPI would have used the caller's snapshot: in a transaction that has
/// written nothing yet (a statement after a write must see it, so SPI takes a new snapshot
/// then), and under READ COMMITTED (under REPEATABLE READ and SERIALIZABLE every read must see
/// the transaction's one snapshot, and the copy can be newer); and only with a snapshot that
/// sees what the copy sees (module documentation).
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
    }
    let Some(snapshot) = active_snapshot() else {
        return Err("no active snapshot".into());
    };
    register_callbacks();
    // SAFETY: processes pending invalidations, as taking a lock does; only our callback and
    // PostgreSQL's own caches react.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    let place = crate::placement::key();
    let pinned = PINNED.with_borrow(|p| match p {
        Some((key, at, config)) if *key == snapshot && *at == place => Some(config.clone()),
        _ => None,
    });
    let config = match pinned {
        Some(config) => config,
        None => {
            let current = CONFIG.with_borrow(|c| {
                c.iter()
                    .find(|(at, (generation, _))| *at == place && *generation == GENERATION.get())
                    .map(|(_, (_, config))| config.clone())
            });
            let config = match current {
                Some(found) => found?,
                None => rebuild(client)?,
            };
            let config = if snapshot.horizon.covers(config.built) {
                config
            } else {
                // The copy is newer than this statement's snapshot: it was just rebuilt, after
                // the statement began, or by a later statement of this transaction than the
                // one a cursor runs. This statement's calls get a copy of their own, read with
                // their snapshot.
                build_for_statement(client, snapshot.horizon)?
            };
            PINNED.set(Some((snapshot, place, config.clone())));
            config
        }
    };
    privileged(place, &config)?;
    Ok(config)
}

/// A statement checks the caller's privileges on every table it reads; reading without one
/// must too. Any refusal is left to the statement, which raises the genuine error (or succeeds
/// through column privileges, which are not checked here).
fn privileged(place: i64, config: &Config) -> Result<(), String> {
    // SAFETY: GetUserId reads the current role.
    let user = unsafe { pg_sys::GetUserId() };
    if !PRIVILEGED.with_borrow(|p| p.contains(&(place, user))) {
        privileged_on(&config.tables)?;
        PRIVILEGED.with_borrow_mut(|p| {
            p.retain(|(at, _)| *at != place);
            p.push((place, user));
        });
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

/// The newest snapshot pushed as the active one while a copy is built, and the building flag
/// set; both undone when dropped, also when a statement of the build raises an ERROR (a
/// `statement_timeout`, a cancel), so that a failed build cannot leave every later
/// invalidation counted as one of the copy's.
struct Building {
    _flag: BuildingFlag,
    _snapshot: Option<spi::LatestSnapshot>,
}

impl Building {
    /// Returns the guard and where the snapshot pushed stands. Not in parallel mode: `rebuild`
    /// builds no copy there.
    fn start() -> (Building, Horizon) {
        let flag = BuildingFlag::set();
        let snapshot = spi::LatestSnapshot::push();
        // SAFETY: the snapshot just pushed is the active one.
        let horizon = unsafe { Horizon::of(pg_sys::GetActiveSnapshot()) };
        (Building { _flag: flag, _snapshot: snapshot }, horizon)
    }
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
    let built = {
        let (_building, horizon) = Building::start();
        build(client, horizon)
    };
    let built = match built {
        Ok(config) => {
            WATCHED.with_borrow_mut(|w| {
                for t in &config.tables {
                    if !w.contains(&t.relid) {
                        w.push(t.relid);
                    }
                }
            });
            Ok(Rc::new(config))
        }
        Err(Refusal::Unusable(why)) => Err(why),
        Err(Refusal::Privileges(why)) => return Err(why),
    };
    let place = crate::placement::key();
    CONFIG.with_borrow_mut(|c| {
        c.retain(|(at, _)| *at != place);
        c.push((place, (generation, built.clone())));
    });
    built
}

/// A copy read with the statement's own snapshot (read-only SPI uses the active snapshot), for
/// the calls of that statement only: kept as the backend's copy, it would miss what committed
/// after the statement began.
fn build_for_statement(client: &SpiClient<'_>, horizon: Horizon) -> Result<Rc<Config>, String> {
    let _building = BuildingFlag::set();
    match build(client, horizon) {
        Ok(config) => Ok(Rc::new(config)),
        Err(Refusal::Unusable(why) | Refusal::Privileges(why)) => Err(why),
    }
}

/// [`BUILDING`] set until dropped, also when an ERROR unwinds through.
struct BuildingFlag;

impl BuildingFlag {
    fn set() -> BuildingFlag {
        BUILDING.set(true);
        BuildingFlag
    }
}

impl Drop for BuildingFlag {
    fn drop(&mut self) {
        BUILDING.set(false);
    }
}

/// Why no copy was built: for this caller only, or for good (until an invalidation).
enum Refusal {
    Privileges(String),
    Unusable(String),
}

impl From<pgrx::spi::SpiError> for Refusal {
    fn from(e: pgrx::spi::SpiError) -> Self {
        Refusal::Unusable(format!("reading the catalog failed: {e}"))
    }
}

impl From<pgrx::datum::TryFromDatumError> for Refusal {
    fn from(e: pgrx::datum::TryFromDatumError) -> Self {
        Refusal::Unusable(format!("a column has a type the copy does not read: {e}"))
    }
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(
    row: &SpiHeapTupleData<'_>,
    n: usize,
) -> Result<Option<T>, Refusal> {
    Ok(row.get::<T>(n)?)
}

/// A column that a NOT NULL constraint of the extension's own tables guarantees; the attached
/// tables may lack the constraint, and then the copy is not kept.
fn required<T>(value: Option<T>, what: &str) -> Result<T, Refusal> {
    value.ok_or_else(|| Refusal::Unusable(format!("{what} is NULL in a row")))
}

fn select<'c>(
    client: &'c SpiClient<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> Result<SpiTupleTable<'c>, Refusal> {
    Ok(client.select(sql, None, args)?)
}

/// The last change of zone, the attached zone and what the attached tables lack are read
/// through to_jsonb: the columns are missing from a table an older version of the SQL created,
/// until ALTER EXTENSION UPDATE adds them.
const SETTINGS: &str = "
SELECT coalesce(st.time_zone, 'UTC'), st.attached_schema::pg_catalog.text,
       pg_catalog.to_jsonb(st) OPERATOR(pg_catalog.->>) 'previous_time_zone',
       (pg_catalog.to_jsonb(st) OPERATOR(pg_catalog.->>) 'time_zone_changed_at')::pg_catalog.timestamptz,
       pg_catalog.to_jsonb(st) OPERATOR(pg_catalog.->>) 'attached_time_zone',
       pg_catalog.to_jsonb(st) OPERATOR(pg_catalog.->>) 'attached_lacks'
  FROM (SELECT) AS one LEFT JOIN quota.settings st ON true";

/// overage_limit through to_jsonb: the column is missing from a table an older version of the SQL
/// created, until ALTER EXTENSION UPDATE adds it (and from an attached plan_features without
/// it, [`Optional::SoftLimits`](entitlements_core::binding::Optional)).
const FEATURES: &str = "
SELECT f.code, f.name, f.reset_rule, f.unit, f.default_limit, f.alert_thresholds,
       (pg_catalog.to_jsonb(f) OPERATOR(pg_catalog.->>) 'overage_limit')::pg_catalog.int4,
       (pg_catalog.to_jsonb(f) OPERATOR(pg_catalog.->>) 'rollover_max')::pg_catalog.int4,
       (pg_catalog.to_jsonb(f) OPERATOR(pg_catalog.->>) 'rollover_periods')::pg_catalog.int4,
       (pg_catalog.to_jsonb(f) OPERATOR(pg_catalog.->>) 'granted')::pg_catalog.bool,
       coalesce(pg_catalog.to_jsonb(f) OPERATOR(pg_catalog.->>) 'kind', 'metered'),
       CASE WHEN pg_catalog.jsonb_typeof(pg_catalog.to_jsonb(f) OPERATOR(pg_catalog.->) 'default_value')
                 OPERATOR(pg_catalog.<>) 'null'
            THEN (pg_catalog.to_jsonb(f) OPERATOR(pg_catalog.->) 'default_value')::pg_catalog.text END,
       CASE WHEN pg_catalog.jsonb_typeof(pg_catalog.to_jsonb(f) OPERATOR(pg_catalog.->) 'window_limits')
                 OPERATOR(pg_catalog.<>) 'null'
            THEN (pg_catalog.to_jsonb(f) OPERATOR(pg_catalog.->) 'window_limits')::pg_catalog.text END
  FROM quota.features f";

const PLANS: &str = "
SELECT p.id::pg_catalog.int8, p.quota_cycle_type::pg_catalog.text,
       p.billing_cycle::pg_catalog.text
  FROM quota.subscription_plans p";

const PLAN_FEATURES: &str = "
SELECT pf.plan_id::pg_catalog.int8, pf.feature_code::pg_catalog.text, pf.feature_value,
       pf.feature_unit::pg_catalog.text,
       (pg_catalog.to_jsonb(pf) OPERATOR(pg_catalog.->>) 'overage_limit')::pg_catalog.int4,
       (pg_catalog.to_jsonb(pf) OPERATOR(pg_catalog.->>) 'rollover_max')::pg_catalog.int4,
       (pg_catalog.to_jsonb(pf) OPERATOR(pg_catalog.->>) 'rollover_periods')::pg_catalog.int4,
       pg_catalog.to_jsonb(pf) OPERATOR(pg_catalog.->>) 'reset_rule',
       CASE WHEN pg_catalog.jsonb_typeof(pg_catalog.to_jsonb(pf) OPERATOR(pg_catalog.->) 'config_value')
                 OPERATOR(pg_catalog.<>) 'null'
            THEN (pg_catalog.to_jsonb(pf) OPERATOR(pg_catalog.->) 'config_value')::pg_catalog.text END,
       CASE WHEN pg_catalog.jsonb_typeof(pg_catalog.to_jsonb(pf) OPERATOR(pg_catalog.->) 'window_limits')
                 OPERATOR(pg_catalog.<>) 'null'
            THEN (pg_catalog.to_jsonb(pf) OPERATOR(pg_catalog.->) 'window_limits')::pg_catalog.text END
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
fn citus_tables(client: &SpiClient<'_>) -> Result<HashSet<Oid>, Refusal> {
    let exists = "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL";
    let present = select(client, exists, &[])?.first().get_one::<bool>()?.unwrap_or(false);
    if !present {
        return Ok(HashSet::new());
    }
    let sql = "SELECT logicalrelid::pg_catalog.oid FROM pg_catalog.pg_dist_partition";
    let mut tables = HashSet::new();
    for row in select(client, sql, &[])? {
        tables.extend(col::<Oid>(&row, 1)?);
    }
    Ok(tables)
}

/// The table of `role` in `schema`, as [`TABLE`] finds it.
fn table(client: &SpiClient<'_>, role: &'static str, schema: &str) -> Result<Table, Refusal> {
    let name = crate::placement::bind(&format!("{schema}.{role}"));
    let row = select(client, TABLE, &[name.as_str().into()])?.first();
    let relid: Option<Oid> = row.get(1)?;
    let (kind, am, rls): (Option<String>, Option<String>, Option<bool>) =
        (row.get(2)?, row.get(3)?, row.get(4)?);
    let unreadable = if kind.as_deref() != Some("r") || am.as_deref() != Some("heap") {
        Some(format!("{name} is not a plain heap table"))
    } else if rls == Some(true) {
        Some(format!("{name} has row level security"))
    } else {
        None
    };
    Ok(Table { role, name, relid: relid.unwrap_or(pg_sys::InvalidOid), unreadable })
}

/// Rows are read with the caller's rights: a caller who may not read a table gets the
/// statements (and their error), and the copy waits for a caller who may.
fn readable(tables: &[Table]) -> Result<(), Refusal> {
    if let Some(t) = tables.iter().find(|t| t.relid == pg_sys::InvalidOid) {
        return Err(Refusal::Unusable(format!("{} does not exist", t.name)));
    }
    privileged_on(tables).map_err(Refusal::Privileges)
}

fn build(client: &SpiClient<'_>, built: Horizon) -> Result<Config, Refusal> {
    let _visible = crate::placement::ShardsVisible::new();
    let mut tables: Vec<Table> = TABLE_ROLES[..2]
        .iter()
        .map(|role| table(client, role, "quota"))
        .collect::<Result<_, _>>()?;
    readable(&tables)?;
    let here = crate::placement::bind;
    let settings = select(client, &here(SETTINGS), &[])?.first();
    let zone = super::Zone::new(
        required(settings.get(1)?, "quota.settings.time_zone")?,
        settings.get(3)?,
        settings.get(4)?,
    );
    let binding = crate::store::Binding {
        schema: settings.get(2)?,
        local_zone: settings.get(5)?,
        lacks: entitlements_core::binding::Lacks::from_json(settings.get::<String>(6)?.as_deref()),
    };
    let bound = |sql: &str| here(&binding::bind(sql, binding.schema.as_deref()));
    let schema =
        pgrx::spi::quote_identifier(binding.schema.as_deref().unwrap_or("quota")).to_string();
    for role in &TABLE_ROLES[2..6] {
        tables.push(table(client, role, &schema)?);
    }
    // Missing from the SQL of an older version, until ALTER EXTENSION UPDATE creates it: the
    // grants are then read by statement, which finds none.
    let grants_table = table(client, TABLE_ROLES[6], "quota")?;
    if grants_table.relid != pg_sys::InvalidOid {
        tables.push(grants_table);
    }
    readable(&tables)?;
    let citus = citus_tables(client)?;
    for t in &tables[..4] {
        check_table(t, &citus).map_err(|why| {
            Refusal::Unusable(format!(
                "{}: {why}; the nearly constant tables are read by statements",
                t.role
            ))
        })?;
    }

    let mut features = HashMap::new();
    for row in select(client, &here(FEATURES), &[])? {
        let code: String = required(col(&row, 1)?, "features.code")?;
        let catalog = Catalog {
            name: required(col(&row, 2)?, "features.name")?,
            reset_rule: required(col(&row, 3)?, "features.reset_rule")?,
            unit: required(col(&row, 4)?, "features.unit")?,
            default_limit: col(&row, 5)?,
            overage_limit: col(&row, 7)?,
            rollover: (col(&row, 8)?, col(&row, 9)?),
            // Unknown (a table of an older version): read the grants.
            granted: col::<bool>(&row, 10)?.unwrap_or(true),
            kind: required::<String>(col(&row, 11)?, "features.kind")?
                .parse()
                .map_err(|e: entitlements_core::Error| Refusal::Unusable(e.to_string()))?,
            default_value: col(&row, 12)?,
            window_limits: col(&row, 13)?,
        };
        let alert_thresholds =
            col::<Vec<Option<i32>>>(&row, 6)?.unwrap_or_default().into_iter().flatten().collect();
        features.insert(code, FeatureEntry { catalog, alert_thresholds });
    }
    // The statements join a subscription to its plan and the plan to its features: a second
    // row with the same key would make their answer depend on the join order, so a copy that
    // meets one is not kept (quota.attach_problems asks for the unique keys that prevent it).
    let mut plans: HashMap<i64, Plan> = HashMap::new();
    for row in select(client, &bound(PLANS), &[])? {
        let id: i64 = required(col(&row, 1)?, "subscription_plans.id")?;
        let plan = Plan {
            quota_cycle: col(&row, 2)?,
            billing_cycle: col(&row, 3)?,
            features: HashMap::new(),
        };
        if plans.insert(id, plan).is_some() {
            return Err(Refusal::Unusable(format!("two plans have the id {id}")));
        }
    }
    for row in select(client, &bound(PLAN_FEATURES), &[])? {
        // A plan feature of no plan, or of a plan that does not exist, is joined to nothing.
        let Some(plan) = col::<i64>(&row, 1)?.and_then(|id| plans.get_mut(&id)) else {
            continue;
        };
        let Some(code) = col::<String>(&row, 2)? else {
            continue;
        };
        let entry = PlanFeature {
            value: col(&row, 3)?,
            unit: col(&row, 4)?,
            overage: col(&row, 5)?,
            rollover: (col(&row, 6)?, col(&row, 7)?),
            reset_rule: col(&row, 8)?,
            config: col(&row, 9)?,
            window_limits: col(&row, 10)?,
        };
        if plan.features.insert(code.clone(), entry).is_some() {
            return Err(Refusal::Unusable(format!("a plan has two rows for feature {code}")));
        }
    }

    let subscriptions = probe_table(client, &tables[4], &citus, &["user_id"])?.and_then(|t| {
        Ok(Subscriptions {
            id: t.int("id")?,
            plan_id: t.int("plan_id")?,
            status: t.text("status")?,
            start: t.time("start_date")?,
            end: t.time("end_date")?,
            anchor: t.time("quota_reset_anchor")?,
            cycle: t.text("quota_cycle_type")?,
            custom: t.jsonb("custom_quotas")?,
            probe: t.probe,
        })
    });
    let usage =
        probe_table(client, &tables[5], &citus, &["user_id", "feature_code", "period_start"])?
            .and_then(|t| {
                // As the statements read it (crate::store::use_sql): without the feature, none.
                let held = binding
                    .lacks
                    .has(entitlements_core::binding::Optional::Reservations)
                    .then(|| t.int("held").ok())
                    .flatten();
                Ok(Usage { count: t.int("usage_count")?, held, probe: t.probe })
            });
    let grants = match tables.get(6) {
        Some(t) => probe_table(client, t, &citus, &["user_id", "feature_code"])?.and_then(|t| {
            Ok(Grants {
                amount: t.int("amount")?,
                remaining: t.int("remaining")?,
                voided_at: t.time("voided_at")?,
                effective_from: t.time("effective_from")?,
                expires_at: t.time("expires_at")?,
                probe: t.probe,
            })
        }),
        None => Err("quota.grants does not exist".into()),
    };
    Ok(Config { zone, binding, features, plans, subscriptions, usage, grants, tables, built })
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
    fn column(&self, name: &str, types: &[Oid]) -> Result<(i16, Oid), String> {
        let &(attnum, type_oid) =
            self.columns.get(name).ok_or_else(|| format!("{} has no column {name}", self.name))?;
        if types.contains(&type_oid) {
            Ok((attnum, type_oid))
        } else {
            Err(format!("{}.{name} has a type the index reader does not read", self.name))
        }
    }

    fn int(&self, name: &str) -> Result<IntColumn, String> {
        let (attnum, t) = self.column(name, &[pg_sys::INT8OID, pg_sys::INT4OID])?;
        Ok(IntColumn { attnum, wide: t == pg_sys::INT8OID })
    }

    fn time(&self, name: &str) -> Result<TimeColumn, String> {
        Ok(TimeColumn(self.column(name, &[pg_sys::TIMESTAMPTZOID])?.0))
    }

    fn text(&self, name: &str) -> Result<TextColumn, String> {
        Ok(TextColumn(self.column(name, &[pg_sys::TEXTOID, pg_sys::VARCHAROID])?.0))
    }

    fn jsonb(&self, name: &str) -> Result<JsonbColumn, String> {
        Ok(JsonbColumn(self.column(name, &[pg_sys::JSONBOID])?.0))
    }
}

/// One key column of an index, as [`INDEX_COLUMNS`] lists it.
struct IndexColumn {
    name: String,
    key: Option<KeyColumn>,
}

/// An index, as [`INDEX_COLUMNS`] lists it.
struct IndexCandidate {
    oid: Oid,
    name: String,
    predicate: Option<String>,
    columns: Vec<IndexColumn>,
}

/// The table's columns and an index whose leading key columns are exactly `keys` (in any
/// order), with no expression; a partial index only when its predicate is `status = 'active'`
/// (the reader checks status itself, so that predicate only leaves rows out that it would skip).
/// `Ok(Err(why))` when the table cannot be probed.
fn probe_table(
    client: &SpiClient<'_>,
    table: &Table,
    citus: &HashSet<Oid>,
    keys: &[&str],
) -> Result<Result<Probed, String>, Refusal> {
    if let Err(why) = check_table(table, citus) {
        return Ok(Err(why));
    }
    let (name, relid) = (&table.name, table.relid);
    let mut columns: HashMap<String, (i16, Oid)> = HashMap::new();
    for row in select(client, COLUMNS, &[relid.into()])? {
        columns.insert(
            required(col(&row, 1)?, "attname")?,
            (required(col(&row, 2)?, "attnum")?, required(col(&row, 3)?, "atttypid")?),
        );
    }
    let mut candidates: Vec<IndexCandidate> = Vec::new();
    for row in select(client, INDEX_COLUMNS, &[relid.into()])? {
        let oid: Oid = required(col(&row, 1)?, "index oid")?;
        if candidates.last().is_none_or(|c| c.oid != oid) {
            candidates.push(IndexCandidate {
                oid,
                name: required(col(&row, 2)?, "index name")?,
                predicate: col(&row, 3)?,
                columns: Vec::new(),
            });
        }
        let Some(index) = candidates.last_mut() else {
            continue;
        };
        let (type_oid, opcintype): (Option<Oid>, Option<Oid>) = (col(&row, 6)?, col(&row, 7)?);
        // The key is built as the operator class's input type; the column must store that type
        // (varchar under text_ops is text on disk).
        let stored_as_compared = type_oid == opcintype
            || (type_oid == Some(pg_sys::VARCHAROID) && opcintype == Some(pg_sys::TEXTOID));
        let kind = opcintype.and_then(KeyKind::of);
        let key = match (kind, col::<Oid>(&row, 8)?, col::<i16>(&row, 4)?, stored_as_compared) {
            (Some(kind), Some(procedure), Some(index_attno), true) => Some(KeyColumn {
                index_attno,
                procedure,
                collation: col(&row, 9)?.unwrap_or(pg_sys::InvalidOid),
                kind,
            }),
            _ => None,
        };
        index.columns.push(IndexColumn { name: required(col(&row, 5)?, "attname")?, key });
    }
    let active_only =
        |p: &str| matches!(p, "(status = 'active'::text)" | "((status)::text = 'active'::text)");
    let usable = |c: &IndexCandidate| -> Option<Vec<KeyColumn>> {
        if c.predicate.as_deref().is_some_and(|p| !active_only(p)) || c.columns.len() < keys.len() {
            return None;
        }
        keys.iter()
            .map(|k| {
                c.columns[..keys.len()].iter().find(|col| col.name == *k).and_then(|col| col.key)
            })
            .collect()
    };
    // A partial index of active subscriptions holds fewer rows than any other.
    candidates.sort_by_key(|c| c.predicate.is_none());
    let Some((index, key_columns)) = candidates.iter().find_map(|c| usable(c).map(|k| (c, k)))
    else {
        return Ok(Err(format!("{name} has no btree index on ({}) to read by", keys.join(", "))));
    };
    Ok(Ok(Probed {
        name: name.clone(),
        probe: Probe { relid, index: index.oid, index_name: index.name.clone(), keys: key_columns },
        columns,
    }))
}

impl Config {
    pub fn feature(&self, code: &str) -> Option<&FeatureEntry> {
        self.features.get(code)
    }

    pub fn can_read_subscriptions(&self) -> bool {
        self.subscriptions.is_ok()
    }

    /// The subscription of `user_id` that counts at `now` (rules of
    /// [`entitlements_core::subscription`]), read through the index, with `custom_quotas ->
    /// feature`. `Ok(None)` without one; `Err` only when the subscriptions cannot be probed.
    pub fn active_subscription(
        &self,
        user_id: i64,
        feature: Option<&str>,
        now: TimestampWithTimeZone,
    ) -> Result<Option<Chosen>, Error> {
        let Ok(s) = &self.subscriptions else {
            return Err(Error::Statement {
                what: "a direct read",
                detail: "user_subscriptions cannot be probed".into(),
            });
        };
        let now = micros(now);
        let mut best: Option<(Candidate<'static>, Chosen)> = None;
        s.probe.scan(&[Key::Int(user_id)], |row| {
            let (start, end) = (row.timestamptz(s.start), row.timestamptz(s.end));
            let candidate = Candidate {
                status: row.text_is(s.status, ACTIVE).then_some(ACTIVE),
                start: start.map(micros),
                end: end.map(micros),
                id: row.int(s.id),
            };
            // is_active() is false without both dates.
            let (true, Some(start), Some(end)) = (candidate.is_active(now), start, end) else {
                return Ok(true);
            };
            if best.as_ref().is_some_and(|(b, _)| candidate.precedence(b) != Ordering::Greater) {
                return Ok(true);
            }
            let chosen = Chosen {
                tid: row.tid(),
                id: candidate.id,
                plan_id: row.int(s.plan_id),
                start,
                end,
                anchor: row.timestamptz(s.anchor),
                own_cycle: row.text(s.cycle),
                custom: feature.map_or(JsonbField::Absent, |f| row.jsonb_field(s.custom, f)),
            };
            best = Some((candidate, chosen));
            Ok(true)
        })?;
        Ok(best.map(|(_, chosen)| chosen))
    }

    /// The plan `id` and its row for `feature`, `None` when the copy has no such plan.
    pub fn plan(&self, id: i64, feature: Option<&str>) -> Option<PlanRow> {
        let plan = self.plans.get(&id)?;
        let pf = feature.and_then(|f| plan.features.get(f));
        Some(PlanRow {
            quota_cycle: plan.quota_cycle.clone(),
            billing_cycle: plan.billing_cycle.clone(),
            value: pf.and_then(|pf| pf.value),
            unit: pf.and_then(|pf| pf.unit.clone()),
            overage: pf.and_then(|pf| pf.overage),
            rollover: pf.map_or((None, None), |pf| pf.rollover),
            reset_rule: pf.and_then(|pf| pf.reset_rule.clone()),
            config: pf.and_then(|pf| pf.config.clone()),
            window_limits: pf.and_then(|pf| pf.window_limits.clone()),
        })
    }

    /// The counter of one period (a NULL counter counts 0) and what its holds claim, `None`
    /// when the usage table cannot be probed.
    pub fn usage(
        &self,
        user_id: i64,
        feature: &str,
        period_start: TimestampWithTimeZone,
    ) -> Result<Option<(i64, i64)>, Error> {
        let Ok(u) = self.usage.as_ref() else {
            return Ok(None);
        };
        let (mut count, mut held) = (0, 0);
        let keys = [Key::Int(user_id), Key::Text(feature), Key::Timestamptz(period_start)];
        u.probe.scan(&keys, |row| {
            count = row.int(u.count).unwrap_or(0);
            held = u.held.and_then(|c| row.int(c)).unwrap_or(0);
            Ok(false)
        })?;
        Ok(Some((count, held)))
    }

    /// What the active grants of a user's feature gave and have left, by the rule of
    /// [`entitlements_core::grants::counts`]; `None` when the grants cannot be probed.
    pub fn grant_totals(
        &self,
        user_id: i64,
        feature: &str,
        now: TimestampWithTimeZone,
    ) -> Result<Option<Totals>, Error> {
        let Ok(g) = self.grants.as_ref() else {
            return Ok(None);
        };
        let (mut totals, now) = (Totals::default(), micros(now));
        g.probe.scan(&[Key::Int(user_id), Key::Text(feature)], |row| {
            // Only voided_at and expires_at may be NULL (the table's constraints); a NULL
            // elsewhere counts as a grant that does not count, as a comparison with NULL does
            // in the statement.
            let (Some(amount), Some(remaining), Some(from)) =
                (row.int(g.amount), row.int(g.remaining), row.timestamptz(g.effective_from))
            else {
                return Ok(true);
            };
            let voided = row.timestamptz(g.voided_at).is_some();
            let expires = row.timestamptz(g.expires_at).map(micros);
            if grants::counts(voided, micros(from), expires, now) {
                totals.granted = totals.granted.saturating_add(amount);
                totals.left = totals.left.saturating_add(remaining);
            }
            Ok(true)
        })?;
        Ok(Some(totals))
    }

    /// How each table is read: `(table, read_by, detail)`.
    pub fn paths(&self) -> Vec<(String, String, String)> {
        self.tables
            .iter()
            .map(|Table { role, name, .. }| {
                let probe = match *role {
                    "user_subscriptions" => Some(self.subscriptions.as_ref().map(|s| &s.probe)),
                    "user_usage" => Some(self.usage.as_ref().map(|u| &u.probe)),
                    "grants" => Some(self.grants.as_ref().map(|g| &g.probe)),
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
