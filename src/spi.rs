//! What every module of SPI statements shares: turning an SPI failure or an unreadable column
//! into the error enum, asking the catalog one yes-or-no question, and preparing a statement
//! once for the backend's life.

use entitlements_core::Error;
use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};
use pgrx::PgOid;

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

/// `sql` prepared and kept for the backend's life (`mutating`: it writes, or must read with a
/// snapshot of its own).
pub(crate) fn keep(
    client: &SpiClient<'_>,
    sql: &str,
    args: &[PgOid],
    mutating: bool,
) -> Result<OwnedPreparedStatement, Error> {
    let stmt = if mutating { client.prepare_mut(sql, args) } else { client.prepare(sql, args) };
    stmt.map(|s| s.keep()).map_err(failed("preparing a statement"))
}
