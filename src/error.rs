//! The one place where an [`entitlements_core::Error`] becomes a PostgreSQL ERROR.

use entitlements_core::{Error, ErrorKind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    match kind {
        ErrorKind::InvalidParameter => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::NullValue => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        ErrorKind::OutOfRange => PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        ErrorKind::NoData => PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
        ErrorKind::DatetimeOverflow => PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
        ErrorKind::InvalidText => PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
        ErrorKind::ReadOnly => PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
        ErrorKind::Conflict => PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
    }
}

/// Raises `error` as an ERROR with its SQLSTATE, message and hint. Never returns: PostgreSQL
/// aborts the statement and the transaction, so nothing half-written survives.
pub fn raise(error: Error) -> ! {
    ErrorReport::new(sqlstate(error.kind()), error.to_string(), "pg_entitlements")
        .set_hint(error.hint())
        .report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

pub trait OrRaise<T> {
    /// The value, or the error raised as a PostgreSQL ERROR.
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, Error> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}
