//! Where one user's rows are read and written, decided once per call.
//!
//! On one server: in the tables of schema quota (or an attached application's,
//! [`crate::binding`]). On a Citus cluster laid out by `quota.distribute()`, the per-user tables
//! are split into shards by `user_id` and the catalog is copied to every node. A call that runs
//! on the node holding the user's shards (the worker a delegated call is sent to) prepares its
//! statements against those shards and the node's copies of the catalog, under their own names:
//! PostgreSQL plans them as on one server and Citus has nothing to plan or route. A call that
//! runs elsewhere (the coordinator, a worker without the user) names the distributed tables and
//! Citus plans each statement: reading works that way; writing is refused with a hint, for
//! Citus routes a writer whole only when it delegates the call (docs/scaling.md).
//!
//! [`enter`] sets the place for the call and puts it back when the call ends; the modules that
//! keep statements ([`crate::spi::kept`], [`crate::store`]) keep one set per place and name
//! tables through [`bind`].

use crate::spi::{self, failed};
use entitlements_core::placement::{Layout, Shard, ShardRow};
use entitlements_core::Error;
use pgrx::pg_sys::{self, Oid};
use pgrx::spi::SpiClient;
use std::cell::Cell;

thread_local! {
    /// What this node serves, from Citus' catalog; leaked when the layout changes (rarely,
    /// and a `&'static` to it may still be in use up the stack).
    static LAYOUT: Cell<Option<&'static Layout>> = const { Cell::new(None) };
    /// The oid of quota.user_subscriptions: Citus invalidates its relcache entry whenever a
    /// shard of its colocation group is created, moved, split or dropped, and so does
    /// `quota.distribute()`.
    static WATCHED: Cell<Oid> = const { Cell::new(pg_sys::InvalidOid) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// Citus' `lock_shard_metadata(integer, bigint[])`, when Citus is installed.
    static LOCKER: Cell<Oid> = const { Cell::new(pg_sys::InvalidOid) };
    /// The owner of the extension's tables, who may take that lock on their shards.
    static OWNER: Cell<Oid> = const { Cell::new(pg_sys::InvalidOid) };
    /// The place of the call running, `None`: the tables by their names.
    static HERE: Cell<Option<&'static Shard>> = const { Cell::new(None) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, relid: Oid) {
    if relid == pg_sys::InvalidOid || relid == WATCHED.get() {
        LAYOUT.set(None);
    }
}

/// Whether Citus is installed in this database (its catalog exists).
const HAS_CITUS: &str = "
SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL
   AND pg_catalog.to_regproc('pg_catalog.shard_name') IS NOT NULL";

/// quota.user_subscriptions and its owner, and Citus' lock_shard_metadata (NULL without Citus).
const WATCHED_TABLE: &str = "
SELECT c.oid, c.relowner,
       pg_catalog.to_regprocedure('pg_catalog.lock_shard_metadata(integer, bigint[])')
       ::pg_catalog.oid
  FROM pg_catalog.pg_class c
 WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('quota.user_subscriptions')";

/// Every shard of the extension's Citus tables: the table, whether it is distributed by hash
/// (else a reference table), the shard's hash range and qualified name, how many nodes hold it,
/// whether this node does, and the table's identity sequence.
const SHARDS: &str = "
SELECT c.relname::pg_catalog.text, p.partmethod OPERATOR(pg_catalog.=) 'h', s.shardid,
       s.shardminvalue::pg_catalog.int4, s.shardmaxvalue::pg_catalog.int4,
       pg_catalog.shard_name(p.logicalrelid, s.shardid),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_dist_placement a
         WHERE a.shardid OPERATOR(pg_catalog.=) s.shardid),
       EXISTS (SELECT FROM pg_catalog.pg_dist_placement a, pg_catalog.pg_dist_local_group l
                WHERE a.shardid OPERATOR(pg_catalog.=) s.shardid
                  AND a.groupid OPERATOR(pg_catalog.=) l.groupid),
       (SELECT pg_catalog.pg_get_serial_sequence(
                   pg_catalog.format('%I.%I', 'quota', c.relname), a.attname)::pg_catalog.regclass
                   ::pg_catalog.oid
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attidentity OPERATOR(pg_catalog.<>) ''
           AND a.attname OPERATOR(pg_catalog.=) 'id')
  FROM pg_catalog.pg_dist_partition p
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) p.logicalrelid
  JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid OPERATOR(pg_catalog.=) p.logicalrelid
 WHERE c.relnamespace OPERATOR(pg_catalog.=) 'quota'::pg_catalog.regnamespace";

fn layout(client: &SpiClient<'_>) -> Result<&'static Layout, Error> {
    if let Some(l) = LAYOUT.get() {
        return Ok(l);
    }
    if !REGISTERED.replace(true) {
        // SAFETY: registered once per backend, for its lifetime; the callback only clears a
        // thread-local.
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(relcache_invalidated),
                pg_sys::Datum::from(0),
            );
        }
    }
    // The newest placement: a writer reloads the layout after it waited for a shard move
    // (locked), and its statement's snapshot, taken before the wait, still shows the old one.
    let _latest = spi::LatestSnapshot::push();
    let mut found = [None; 3];
    if let Some(row) =
        client.select(WATCHED_TABLE, Some(1), &[]).map_err(failed("placement lookup"))?.next()
    {
        for (i, oid) in found.iter_mut().enumerate() {
            *oid = spi::column::<Oid>(&row, i + 1, "")?;
        }
    }
    let [watched, owner, locker] = found.map(|oid| oid.unwrap_or(pg_sys::InvalidOid));
    WATCHED.set(watched);
    OWNER.set(owner);
    LOCKER.set(locker);
    let mut rows = Vec::new();
    if spi::ask(client, HAS_CITUS, &[])? {
        let on = " on pg_dist_shard";
        for row in client.select(SHARDS, None, &[]).map_err(failed("placement lookup"))? {
            let min = spi::column::<i32>(&row, 4, on)?;
            let max = spi::column::<i32>(&row, 5, on)?;
            rows.push(ShardRow {
                table: spi::column::<String>(&row, 1, on)?.unwrap_or_default(),
                hashed: spi::column::<bool>(&row, 2, on)?.unwrap_or(false),
                key: spi::column::<i64>(&row, 3, on)?.unwrap_or(0),
                range: min.zip(max),
                name: spi::column::<String>(&row, 6, on)?.unwrap_or_default(),
                placements: spi::column::<i64>(&row, 7, on)?.unwrap_or(0),
                here: spi::column::<bool>(&row, 8, on)?.unwrap_or(false),
                sequence: spi::column::<Oid>(&row, 9, on)?.map(|o| o.to_u32()),
            });
        }
    }
    let layout: &'static Layout = Box::leak(Box::new(Layout::of(&rows)));
    LAYOUT.set(Some(layout));
    Ok(layout)
}

/// The hash Citus places a `bigint` user id by: PostgreSQL's `hashint8`.
fn hash(user_id: i64) -> Result<i32, Error> {
    use pgrx::IntoDatum;
    // SAFETY: hashint8 reads its one non-NULL int8 argument and returns an int4.
    unsafe { pgrx::direct_function_call::<i32>(pg_sys::hashint8, &[user_id.into_datum()]) }
        .ok_or(Error::Statement { what: "hashing a user id", detail: "NULL".into() })
}

/// Whether the call writes: a writer cannot run away from the user's shards.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The place of a call, until it is dropped.
pub struct Here {
    before: Option<&'static Shard>,
}

impl Drop for Here {
    fn drop(&mut self) {
        HERE.set(self.before);
    }
}

/// Sets where the call for `user_id` reads and writes, until the returned guard is dropped.
/// `function` names the call in the error of a writer that runs away from the user's shards.
pub fn enter(
    client: &SpiClient<'_>,
    user_id: i64,
    access: Access,
    function: &'static str,
) -> Result<Here, Error> {
    let mut layout = layout(client)?;
    let here = if layout.distributed {
        let hash = hash(user_id)?;
        if access == Access::Write {
            let wanted = |l: &Layout| l.find(hash).map(|s| vec![s.key]).unwrap_or_default();
            layout = locked(client, wanted)?
                .ok_or(Error::ShardsMoved { function, user_id: Some(user_id) })?;
        }
        match (layout.find(hash), access) {
            (Some(shard), _) => Some(shard),
            (None, Access::Read) => None,
            // Citus sent the call here on a placement that has changed since (a shard move
            // committed in between), or the call runs inside a query of this worker.
            (None, Access::Write) if !layout.local.is_empty() => {
                return Err(Error::ShardsMoved { function, user_id: Some(user_id) })
            }
            (None, Access::Write) => return Err(Error::NotOnShard { function, user_id }),
        }
    } else {
        None
    };
    Ok(Here { before: HERE.replace(here) })
}

/// The layout, once this node holds Citus' lock on the placement of the shards `wanted` picks
/// from it, in share mode until the transaction ends: the lock Citus' executor takes before a
/// write it routes. A shard move or split takes it exclusively before its last catch-up and
/// keeps it until the new placement commits. So a write holding it lands before the move copies
/// its last changes; one that waited for it reads the placement again (the invalidations of the
/// move applied) and writes only if it picks the same shards. `None`: it does not, and what it
/// would have written on the shards it picked first would be lost with them. Nothing to lock
/// where the call picks no shard.
fn locked(
    client: &SpiClient<'_>,
    wanted: impl Fn(&Layout) -> Vec<i64>,
) -> Result<Option<&'static Layout>, Error> {
    let before = layout(client)?;
    let mut keys = wanted(before);
    if keys.is_empty() {
        return Ok(Some(before));
    }
    // Ascending, as Citus locks shards, so that two lockers of several wait in one order.
    keys.sort_unstable();
    hold(&keys)?;
    // SAFETY: applies the invalidations other backends committed, as taking a relation's lock
    // does; the relcache callback above clears the layout when the placement changed.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    let after = layout(client)?;
    if std::ptr::eq(before, after) {
        return Ok(Some(after));
    }
    let mut again = wanted(after);
    again.sort_unstable();
    Ok((again == keys).then_some(after))
}

/// Takes Citus' placement lock on the shards `keys` in share mode, through Citus' own
/// `lock_shard_metadata`, which knows the lock's tag (per colocation group and shard index) and
/// lets only the tables' owner take it: the call is made as that owner, as a SECURITY DEFINER
/// function would be, for a catalog trigger runs as the role that changed the catalog.
fn hold(keys: &[i64]) -> Result<(), Error> {
    use pgrx::IntoDatum;
    let (locker, owner) = (LOCKER.get(), OWNER.get());
    if locker == pg_sys::InvalidOid || owner == pg_sys::InvalidOid {
        return Ok(());
    }
    let keys = keys.to_vec().into_datum().ok_or(Error::Statement {
        what: "locking the shards' placement",
        detail: "no shard ids".into(),
    })?;
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: `locker` is lock_shard_metadata(integer, bigint[]), looked up by its signature
    // with the layout; it takes the lock mode and a non-NULL int8 array and returns void. The
    // user is switched only around the call, and put back after it; on an ERROR the abort of
    // the (sub)transaction puts it back, as it does for a SECURITY DEFINER function.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        pg_sys::OidFunctionCall2Coll(
            locker,
            pg_sys::InvalidOid,
            pg_sys::Datum::from(pg_sys::ShareLock as i32),
            keys,
        );
        pg_sys::SetUserIdAndSecContext(user, context);
    }
    Ok(())
}

/// Every place whose users this node serves, for work on every user from a trigger on the
/// catalog: the tables by their names on one server; on a Citus cluster, where such a trigger
/// fires on each node's copy of the reference table, the user shards this node holds (none on
/// the coordinator), so that the nodes together cover every user once.
pub fn served_here(client: &SpiClient<'_>, function: &'static str) -> Result<Vec<Place>, Error> {
    let layout =
        locked(client, served_keys)?.ok_or(Error::ShardsMoved { function, user_id: None })?;
    Ok(if layout.distributed {
        layout.local.iter().map(|(_, shard)| Place(Some(shard))).collect()
    } else {
        vec![Place(None)]
    })
}

/// The qualified names of the shards of `tables` (by their names in schema quota; a reference
/// table: this node's copy) in each range this node serves on its own, as [`served_here`]
/// decides: for the catalog triggers, which act there on the shards a node holds. None on one
/// server; a table Citus does not know is NULL.
pub fn local_shards(
    client: &SpiClient<'_>,
    tables: &[Option<String>],
) -> Result<Vec<Vec<Option<String>>>, Error> {
    let layout = locked(client, served_keys)?
        .ok_or(Error::ShardsMoved { function: "quota.local_shards", user_id: None })?;
    Ok(layout
        .local
        .iter()
        .map(|(_, shard)| {
            tables
                .iter()
                .map(|t| t.as_deref().and_then(|t| shard.name(t)).map(str::to_owned))
                .collect()
        })
        .collect())
}

/// The user shards this node serves, for the work of a catalog trigger on each of them.
fn served_keys(layout: &Layout) -> Vec<i64> {
    layout.local.iter().map(|(_, shard)| shard.key).collect()
}

/// A place [`served_here`] names.
pub struct Place(Option<&'static Shard>);

impl Place {
    /// Runs the statements of the call at this place until the guard is dropped.
    pub fn enter(&self) -> Here {
        Here { before: HERE.replace(self.0) }
    }
}

/// Whether the extension's tables are laid out over a Citus cluster.
pub fn distributed(client: &SpiClient<'_>) -> Result<bool, Error> {
    Ok(layout(client)?.distributed)
}

/// Whether this node is the coordinator of the cluster (it holds Citus' catalog for every
/// node, and the statements of a DROP EXTENSION are sent from it to the workers).
const COORDINATOR: &str = "SELECT pg_catalog.citus_is_coordinator()";

/// Drops the shards of every table of the extension on every node, through Citus: the per-user
/// tables first, then the catalog, the tables with more foreign keys first (the ones they
/// reference go after them, so that no drop has to cascade to another shard's constraint).
const DROP_SHARDS: &str = "
SELECT pg_catalog.count(s.dropped)
  FROM (SELECT pg_catalog.citus_drop_all_shards(p.logicalrelid, n.nspname::pg_catalog.text,
                                                c.relname::pg_catalog.text) AS dropped
          FROM pg_catalog.pg_dist_partition p
          JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) p.logicalrelid
          JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
          JOIN pg_catalog.pg_depend d
            ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
           AND d.objid OPERATOR(pg_catalog.=) c.oid AND d.deptype OPERATOR(pg_catalog.=) 'e'
          JOIN pg_catalog.pg_extension e
            ON e.oid OPERATOR(pg_catalog.=) d.refobjid
           AND e.extname OPERATOR(pg_catalog.=) 'pg_entitlements'
         ORDER BY p.partmethod OPERATOR(pg_catalog.=) 'n',
                  (SELECT pg_catalog.count(*) FROM pg_catalog.pg_constraint f
                    WHERE f.conrelid OPERATOR(pg_catalog.=) c.oid
                      AND f.contype OPERATOR(pg_catalog.=) 'f') DESC) s";

/// The shards of the extension's tables that a finished move or split left on their old node
/// for Citus to drop later (`pg_dist_cleanup`, after `citus.defer_shard_delete_interval`),
/// dropped now, each on its node: through a connection of its own, with CASCADE (the foreign
/// keys between them) and a lock timeout of 1 s, as Citus' cleanup drops them, for no table
/// reads them any more (Citus refuses a change to a shard outside its own connections unless
/// `citus.enable_manual_changes_to_shards`). The ones that could not be dropped, with the
/// error.
const DROP_LEFT_BEHIND: &str = "
SELECT r.object_name, w.result
  FROM pg_catalog.pg_dist_cleanup r
  JOIN pg_catalog.pg_dist_node n ON n.groupid OPERATOR(pg_catalog.=) r.node_group_id
 CROSS JOIN LATERAL pg_catalog.master_run_on_worker(
           ARRAY[n.nodename], ARRAY[n.nodeport],
           ARRAY[pg_catalog.format('SET citus.enable_manual_changes_to_shards TO on;
                                     SET lock_timeout TO ''1s'';
                                     DROP TABLE IF EXISTS %s CASCADE', r.object_name)], false) w
 WHERE r.object_type OPERATOR(pg_catalog.=) 1 AND r.policy_type OPERATOR(pg_catalog.=) 2
   AND r.object_name LIKE 'quota.%' AND NOT w.success";

/// Their cleanup records, in the drop's transaction.
const FORGET_LEFT_BEHIND: &str = "
DELETE FROM pg_catalog.pg_dist_cleanup r
 WHERE r.object_type OPERATOR(pg_catalog.=) 1 AND r.policy_type OPERATOR(pg_catalog.=) 2
   AND r.object_name LIKE 'quota.%'";

/// Before the extension is dropped on a Citus coordinator: drops the shards of its tables on
/// every node, those a move or split left behind first. The shards are not the extension's
/// objects, yet their columns, triggers and checks use its types and functions: left in place,
/// they make `DROP EXTENSION` fail, and with CASCADE they stay behind on every node once their
/// tables are gone. Nothing to do on one server, and on a worker (the coordinator's drop has
/// dropped them everywhere before it reaches a worker).
pub fn drop_shards(client: &mut SpiClient<'_>) -> Result<(), Error> {
    if !distributed(client)? || !spi::ask(client, COORDINATOR, &[])? {
        return Ok(());
    }
    let what = "dropping the shards a move left behind";
    let failures = client
        .select(DROP_LEFT_BEHIND, None, &[])
        .map_err(failed(what))?
        .map(|row| {
            let shard = spi::column::<String>(&row, 1, "")?.unwrap_or_default();
            let error = spi::column::<String>(&row, 2, "")?.unwrap_or_default();
            Ok(format!("{shard}: {error}"))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if !failures.is_empty() {
        return Err(Error::ShardsLeftBehind { detail: failures.join("; ") });
    }
    client.update(FORGET_LEFT_BEHIND, None, &[]).map_err(failed(what))?;
    client.update(DROP_SHARDS, None, &[]).map_err(failed("dropping the shards"))?;
    Ok(())
}

/// The key of the statements of the place the call runs in (0: the tables by their names).
pub fn key() -> i64 {
    HERE.get().map_or(0, |s| s.key)
}

/// `sql` naming the tables of the place the call runs in.
pub fn bind(sql: &str) -> String {
    match HERE.get() {
        None => sql.to_owned(),
        Some(shard) => {
            entitlements_core::binding::rename(sql, |table| shard.name(table).map(str::to_owned))
        }
    }
}

/// For an INSERT into `table`: the column list's start and the values' start that give the
/// identity column its value where the place's table has no identity (a shard), or nothing.
pub fn identity(table: &str) -> (&'static str, String) {
    match HERE.get().and_then(|s| s.sequence(table)) {
        None => ("", String::new()),
        Some(seq) => {
            ("id, ", format!("pg_catalog.nextval({seq}::pg_catalog.oid::pg_catalog.regclass), "))
        }
    }
}

/// Lets the queries of the system catalogs see shards until dropped. Citus hides its shards
/// from a client's queries of pg_class (`citus.override_table_visibility`), and the per-backend
/// copy ([`crate::read::copy`]) looks up the columns and indexes of the user's shards there.
/// The setting is changed at a GUC nest level of its own, as a function's SET clause does, and
/// put back when the guard is dropped (or by the abort of the transaction on an ERROR).
pub struct ShardsVisible {
    level: Option<i32>,
}

impl ShardsVisible {
    pub fn new() -> ShardsVisible {
        const NAME: &std::ffi::CStr = c"citus.override_table_visibility";
        // SAFETY: GetConfigOption with missing_ok reads the setting or returns NULL without
        // Citus; set_config_option then changes an existing setting at the new nest level.
        unsafe {
            if pg_sys::GetConfigOption(NAME.as_ptr(), true, false).is_null() {
                return ShardsVisible { level: None };
            }
            let level = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                NAME.as_ptr(),
                c"off".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            ShardsVisible { level: Some(level) }
        }
    }
}

impl Drop for ShardsVisible {
    fn drop(&mut self) {
        if let (Some(level), false) = (self.level, std::thread::panicking()) {
            // SAFETY: pops the nest level new() pushed; while unwinding from an ERROR the abort
            // of the (sub)transaction pops it instead.
            unsafe { pg_sys::AtEOXact_GUC(true, level) };
        }
    }
}
