//! What every module of SPI statements shares: turning an SPI failure or an unreadable column
//! into the error enum, asking the catalog one yes-or-no question, preparing a statement
//! once for the backend's life, and reading the newest committed rows.

use entitlements_core::Error;
use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};
use pgrx::PgOid;
use std::cell::RefCell;

/// The error of a statement `what` that failed at the SPI level.
pub(crate) fn failed(what: &'static str) -> impl Fn(pgrx::spi::SpiError) -> Error {
    move |e| Error::Statement { what, detail: e.to_string() }
}

/// Column `n` of a row of one of the extension's statements (`on`: the table it reads, for
/// the message, or empty).
pub(crate) fn column<T: pgrx::FromDatum + pgrx::IntoDatum>(
    row: &SpiHeapTupleData<'_>,
    n: usize,
    on: &str,
) -> Result<Option<T>, Error> {
    row.get::<T>(n).map_err(|e| Error::ColumnType {
        what: format!("column {n} of a pg_entitlements statement{on}"),
        detail: e.to_string(),
    })
}

/// The one boolean `sql` answers (false for no row or NULL): whether an object of a newer
/// version of the SQL exists yet.
pub(crate) fn ask(
    client: &SpiClient<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> Result<bool, Error> {
    Ok(client
        .select(sql, Some(1), args)
        .map_err(failed("catalog lookup"))?
        .next()
        .map(|row| column::<bool>(&row, 1, ""))
        .transpose()?
        .flatten()
        .unwrap_or(false))
}

/// `sql`, naming the tables of the place the call runs in ([`crate::placement::bind`]),
/// prepared and kept for the backend's life (`mutating`: it writes, or must read with a
/// snapshot of its own).
pub(crate) fn keep(
    client: &SpiClient<'_>,
    sql: &str,
    args: &[PgOid],
    mutating: bool,
) -> Result<OwnedPreparedStatement, Error> {
    let sql = crate::placement::bind(sql);
    let stmt = if mutating { client.prepare_mut(&sql, args) } else { client.prepare(&sql, args) };
    stmt.map(|s| s.keep()).map_err(failed("preparing a statement"))
}

/// The argument types of the extension's statements.
pub(crate) mod oid {
    use pgrx::pg_sys::BuiltinOid;
    use pgrx::PgOid;

    pub(crate) const INT8: PgOid = PgOid::BuiltIn(BuiltinOid::INT8OID);
    pub(crate) const TEXT: PgOid = PgOid::BuiltIn(BuiltinOid::TEXTOID);
    pub(crate) const TSTZ: PgOid = PgOid::BuiltIn(BuiltinOid::TIMESTAMPTZOID);
    pub(crate) const JSONB: PgOid = PgOid::BuiltIn(BuiltinOid::JSONBOID);
    pub(crate) const INTERVAL: PgOid = PgOid::BuiltIn(BuiltinOid::INTERVALOID);
    pub(crate) const INT8S: PgOid = PgOid::BuiltIn(BuiltinOid::INT8ARRAYOID);
    pub(crate) const TEXTS: PgOid = PgOid::BuiltIn(BuiltinOid::TEXTARRAYOID);
    pub(crate) const TSTZS: PgOid = PgOid::BuiltIn(BuiltinOid::TIMESTAMPTZARRAYOID);
}

/// Prepares statements with [`keep`]: `sql`, its argument types, whether it writes.
pub(crate) type Prepare<'a> =
    dyn Fn(&str, &[PgOid], bool) -> Result<OwnedPreparedStatement, Error> + 'a;

/// A module's statements for each place a call ran in ([`crate::placement`]: the tables by
/// their names, or one user's shards on a Citus worker), each set prepared the first time a call
/// there needs it and kept for the backend's life. A backend is single-threaded: the module's
/// thread-local holds it.
pub(crate) struct Kept<P: 'static>(RefCell<Vec<(i64, &'static P)>>);

impl<P> Kept<P> {
    pub(crate) const fn new() -> Self {
        Kept(RefCell::new(Vec::new()))
    }

    /// The set of the place the call runs in, if prepared.
    pub(crate) fn get(&self) -> Option<&'static P> {
        let key = crate::placement::key();
        self.0.borrow().iter().find(|(k, _)| *k == key).map(|(_, p)| *p)
    }

    /// Keeps `plans` as the set of the place the call runs in, in place of an older one. The
    /// older set is leaked, not freed: a `&'static` to it may still be in use up the stack.
    pub(crate) fn set(&self, plans: P) -> &'static P {
        let key = crate::placement::key();
        let plans: &'static P = Box::leak(Box::new(plans));
        let mut sets = self.0.borrow_mut();
        sets.retain(|(k, _)| *k != key);
        sets.push((key, plans));
        plans
    }
}

/// A module's statements, prepared by `build` the first time the backend needs them in the
/// place the call runs in and kept for its life (in `kept`, the module's thread-local).
/// `exist`: the yes-or-no question whether the table they need exists yet (the library is
/// replaced before ALTER EXTENSION ... UPDATE creates it); `None` while it does not, asked
/// again by every call until it does.
pub(crate) fn kept<P: 'static>(
    kept: &'static std::thread::LocalKey<Kept<P>>,
    client: &SpiClient<'_>,
    exist: Option<&str>,
    build: impl FnOnce(&Prepare<'_>) -> Result<P, Error>,
) -> Result<Option<&'static P>, Error> {
    if let Some(p) = kept.with(Kept::get) {
        return Ok(Some(p));
    }
    if let Some(question) = exist {
        if !ask(client, question, &[])? {
            return Ok(None);
        }
    }
    let prepare = |sql: &str, args: &[PgOid], mutating: bool| keep(client, sql, args, mutating);
    let plans = build(&prepare)?;
    Ok(Some(kept.with(|k| k.set(plans))))
}

/// The newest committed rows as the snapshot of the read-only statements that run until it is
/// dropped (read-only SPI reads with the active snapshot, in a function the statement's, taken
/// before anything the function waited for).
pub struct LatestSnapshot(());

impl LatestSnapshot {
    /// `None` in parallel mode (in a worker, and in the leader while a parallel plan runs),
    /// where PostgreSQL refuses a new snapshot: the statements read with the query's.
    pub fn push() -> Option<LatestSnapshot> {
        // SAFETY: reads the transaction's state; then pushes a snapshot of the newest committed
        // rows as the active one, popped by drop, or by the abort of the (sub)transaction when
        // a statement raises an ERROR.
        unsafe {
            if pgrx::pg_sys::IsInParallelMode() {
                return None;
            }
            pgrx::pg_sys::PushActiveSnapshot(pgrx::pg_sys::GetLatestSnapshot());
        }
        Some(LatestSnapshot(()))
    }
}

impl Drop for LatestSnapshot {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: pops the snapshot push() pushed; while unwinding from an ERROR the abort
            // of the (sub)transaction pops it instead.
            unsafe { pgrx::pg_sys::PopActiveSnapshot() };
        }
    }
}
