//! timestamptz <-> jiff::Timestamp. PostgreSQL counts microseconds from 2000-01-01 UTC.

use entitlements_core::{Error, Period};
use jiff::Timestamp;
use pgrx::datum::TimestampWithTimeZone;

const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

fn out_of_range(t: &TimestampWithTimeZone) -> Error {
    Error::PeriodOutOfRange { detail: format!("{t} is beyond the years -9999 to 9999") }
}

/// A timestamptz as the int64 PostgreSQL compares (microseconds, the infinities at the
/// extremes). pgrx's PartialEq and PartialOrd call timestamp_eq and timestamp_cmp through the
/// function manager: three such comparisons were 1.1% of a check's end-to-end transaction in
/// perf (bench/e2e_profile.sh).
pub fn micros(t: TimestampWithTimeZone) -> i64 {
    t.into()
}

/// A finite timestamptz as a Timestamp; infinities and years beyond ±9999 are errors.
pub fn from_pg(t: TimestampWithTimeZone) -> Result<Timestamp, Error> {
    if !t.is_finite() {
        return Err(out_of_range(&t));
    }
    t.into_inner()
        .checked_add(PG_EPOCH_UNIX_MICROS)
        .and_then(|micros| Timestamp::from_microsecond(micros).ok())
        .ok_or_else(|| out_of_range(&t))
}

fn try_to_pg(t: Timestamp) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(t.as_microsecond() - PG_EPOCH_UNIX_MICROS).ok()
}

/// Checks that a computed period can be stored: jiff reaches back to the year -9999,
/// PostgreSQL's timestamptz only to 4714 BC.
pub fn check_range(period: &Period) -> Result<(), Error> {
    for t in [period.start, period.end].into_iter().flatten() {
        if try_to_pg(t).is_none() {
            return Err(Error::PeriodOutOfRange {
                detail: format!("{t} is before the earliest timestamptz, 4714-11-24 BC"),
            });
        }
    }
    Ok(())
}

/// A period bound as a timestamptz: `None` is `-infinity` for a start, `infinity` for an end.
pub fn to_pg(t: Option<Timestamp>, is_start: bool) -> Result<TimestampWithTimeZone, Error> {
    match t {
        None if is_start => Ok(TimestampWithTimeZone::negative_infinity()),
        None => Ok(TimestampWithTimeZone::positive_infinity()),
        Some(t) => try_to_pg(t).ok_or_else(|| Error::PeriodOutOfRange {
            detail: format!("{t} is beyond the range of timestamptz"),
        }),
    }
}
