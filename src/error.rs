//! The one place where an error becomes a PostgreSQL ERROR.

use entitlements_core::{Error, ErrorKind};
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::{PgLogLevel, PgSqlErrorCode, PgTryBuilder};
use std::panic::AssertUnwindSafe;

fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    use PgSqlErrorCode::*;
    match kind {
        ErrorKind::InvalidParameter => ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::NullValue => ERRCODE_NULL_VALUE_NOT_ALLOWED,
        ErrorKind::OutOfRange => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        ErrorKind::NoData => ERRCODE_NO_DATA_FOUND,
        ErrorKind::DatetimeOverflow => ERRCODE_DATETIME_FIELD_OVERFLOW,
        ErrorKind::InvalidText => ERRCODE_INVALID_TEXT_REPRESENTATION,
        ErrorKind::ReadOnly => ERRCODE_READ_ONLY_SQL_TRANSACTION,
        ErrorKind::Conflict => ERRCODE_UNIQUE_VIOLATION,
        ErrorKind::MissingReference => ERRCODE_FOREIGN_KEY_VIOLATION,
        ErrorKind::NullColumn => ERRCODE_NOT_NULL_VIOLATION,
        ErrorKind::CheckViolation => ERRCODE_CHECK_VIOLATION,
        ErrorKind::TooLong => ERRCODE_STRING_DATA_RIGHT_TRUNCATION,
        ErrorKind::ColumnType => ERRCODE_DATATYPE_MISMATCH,
        ErrorKind::NotReady => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        ErrorKind::NotSupported => ERRCODE_FEATURE_NOT_SUPPORTED,
        ErrorKind::SerializationFailure => ERRCODE_T_R_SERIALIZATION_FAILURE,
        ErrorKind::Internal => ERRCODE_INTERNAL_ERROR,
    }
}

/// Raises `error` as an ERROR with its SQLSTATE, message and hint. Never returns: PostgreSQL
/// aborts the statement and the transaction, so nothing half-written survives.
pub fn raise(error: Error) -> ! {
    ErrorReport::new(sqlstate(error.kind()), error.to_string(), "pg_entitlements")
        .set_hint(error.hint())
        .report(PgLogLevel::ERROR);
    // report(ERROR) unwinds to the function's guard; this line is never reached.
    std::process::abort()
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

/// Runs the body of a function PostgreSQL calls, so that every ERROR leaving it carries its
/// SQLSTATE, message, detail and hint and nothing else.
///
/// pgrx turns an ERROR raised inside PostgreSQL (a constraint, `lock_timeout`, a statement
/// cancelled) into a Rust unwind, and when it reports it again it appends the Rust backtrace
/// the panic hook captured to the DETAIL whenever `RUST_BACKTRACE` is set in the server's
/// environment. A person reading the error needs none of it. The error is raised again from a
/// fresh report, which carries no backtrace; a Rust panic (a bug: nothing reachable from data
/// panics) keeps its message and SQLSTATE XX000, also without a backtrace.
pub fn guard<T>(body: impl FnOnce() -> T) -> T {
    PgTryBuilder::new(AssertUnwindSafe(body))
        .catch_others(|caught| {
            let (code, message, detail, hint) = match &caught {
                CaughtError::PostgresError(e) | CaughtError::ErrorReport(e) => (
                    e.sql_error_code(),
                    e.message().to_owned(),
                    e.detail().map(str::to_owned),
                    e.hint().map(str::to_owned),
                ),
                CaughtError::RustPanic { ereport, .. } => (
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("pg_entitlements: {}", ereport.message()),
                    None,
                    Some("This is a bug in pg_entitlements; please report it.".to_owned()),
                ),
            };
            let mut report = ErrorReport::new(code, message, "pg_entitlements");
            if let Some(detail) = detail {
                report = report.set_detail(detail);
            }
            if let Some(hint) = hint {
                report = report.set_hint(hint);
            }
            report.report(PgLogLevel::ERROR);
            std::process::abort()
        })
        .execute()
}
