//! The counters of the further windows of a feature with several limits (sql/windows.sql,
//! [`entitlements_core::windows`]): the statements on quota.window_usage, prepared once per
//! backend. It is the extension's own table whatever quota.attach() bound, so the SECURITY
//! DEFINER writers write it as the extension's owner. Every statement is on that one table and
//! names the user, so a sharded installation routes it to the user's shard.

use crate::spi::{self, failed};
use crate::store::must;
use entitlements_core::Error;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};

/// Creates the counter of window $3 starting at $4 where missing and locks it until the
/// transaction ends: what it counted, as the last committed use left it.
const LOCK: &str = "
INSERT INTO quota.window_usage AS w (user_id, feature_code, window_name, window_start, window_end)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id, feature_code, window_name, window_start) DO UPDATE
   SET window_end = EXCLUDED.window_end
RETURNING w.usage_count";

/// Counts $5 units in a window counter the use locked ([`LOCK`]).
const COUNT: &str = "
UPDATE quota.window_usage w
   SET usage_count = w.usage_count OPERATOR(pg_catalog.+) $5, updated_at = pg_catalog.now()
 WHERE w.user_id OPERATOR(pg_catalog.=) $1 AND w.feature_code OPERATOR(pg_catalog.=) $2
   AND w.window_name OPERATOR(pg_catalog.=) $3 AND w.window_start OPERATOR(pg_catalog.=) $4";

/// The user's window counters of a feature that have not ended at $3.
const USAGE: &str = "
SELECT w.window_name, w.window_start, w.usage_count FROM quota.window_usage w
 WHERE w.user_id OPERATOR(pg_catalog.=) $1 AND w.feature_code OPERATOR(pg_catalog.=) $2
   AND w.window_end OPERATOR(pg_catalog.>) $3";

/// A refund: takes the $4 units of a use made at $3 off every window that counted it, never
/// below zero (a window set up after the use never counted it).
const UNCOUNT: &str = "
UPDATE quota.window_usage w
   SET usage_count = w.usage_count OPERATOR(pg_catalog.-) pg_catalog.int8smaller(w.usage_count, $4),
       updated_at = pg_catalog.now()
 WHERE w.user_id OPERATOR(pg_catalog.=) $1 AND w.feature_code OPERATOR(pg_catalog.=) $2
   AND w.window_start OPERATOR(pg_catalog.<=) $3 AND w.window_end OPERATOR(pg_catalog.>) $3";

/// Whether the table exists: the library is replaced before ALTER EXTENSION ... UPDATE creates
/// it. Asked again by every call until it exists.
const EXIST: &str = "SELECT pg_catalog.to_regclass('quota.window_usage') IS NOT NULL";

struct Plans {
    lock: OwnedPreparedStatement,
    count: OwnedPreparedStatement,
    usage: OwnedPreparedStatement,
    uncount: OwnedPreparedStatement,
}

thread_local! {
    // Prepared once per backend and kept for its life, like the statements of crate::store.
    static PLANS: spi::Kept<Plans> = const { spi::Kept::new() };
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(
    row: &SpiHeapTupleData<'_>,
    n: usize,
) -> Result<Option<T>, Error> {
    spi::column(row, n, " on quota.window_usage")
}

/// The statements, or `None` while the table does not exist yet ([`EXIST`]).
fn plans(client: &SpiClient<'_>) -> Result<Option<&'static Plans>, Error> {
    use spi::oid::{INT8, TEXT, TSTZ};
    spi::kept(&PLANS, client, Some(EXIST), |prepare| {
        Ok(Plans {
            lock: prepare(LOCK, &[INT8, TEXT, TEXT, TSTZ, TSTZ], true)?,
            count: prepare(COUNT, &[INT8, TEXT, TEXT, TSTZ, INT8], true)?,
            usage: prepare(USAGE, &[INT8, TEXT, TSTZ], false)?,
            uncount: prepare(UNCOUNT, &[INT8, TEXT, TSTZ, INT8], true)?,
        })
    })
}

fn missing() -> Error {
    Error::UpdatePending { table: "quota.window_usage" }
}

/// One window counter: the user, the feature, the window's name and bounds.
pub struct Counter<'a> {
    pub user_id: i64,
    pub feature: &'a str,
    pub window: &'static str,
    pub start: TimestampWithTimeZone,
    pub end: TimestampWithTimeZone,
}

/// Locks (creating it where missing) a window counter; what it counted.
pub fn lock(client: &SpiClient<'_>, c: &Counter<'_>) -> Result<i64, Error> {
    let plans = plans(client)?.ok_or_else(missing)?;
    let args: [DatumWithOid; 5] =
        [c.user_id.into(), c.feature.into(), c.window.into(), c.start.into(), c.end.into()];
    let table =
        client.select(&plans.lock, Some(1), &args).map_err(failed("locking a window counter"))?;
    // INSERT ... ON CONFLICT DO UPDATE returns its row, whose usage_count is NOT NULL.
    let usage = match table.into_iter().next() {
        Some(row) => col::<i64>(&row, 1)?,
        None => None,
    };
    must(usage, "window_usage.usage_count")
}

/// Counts `amount` units in a window counter locked by [`lock`].
pub fn count(client: &SpiClient<'_>, c: &Counter<'_>, amount: i64) -> Result<(), Error> {
    let plans = plans(client)?.ok_or_else(missing)?;
    let args: [DatumWithOid; 5] =
        [c.user_id.into(), c.feature.into(), c.window.into(), c.start.into(), amount.into()];
    client.select(&plans.count, None, &args).map_err(failed("counting in a window"))?;
    Ok(())
}

/// The user's window counters of `feature` that have not ended at `now`: window name, start,
/// usage.
pub fn usage(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    now: TimestampWithTimeZone,
) -> Result<Vec<(String, TimestampWithTimeZone, i64)>, Error> {
    let Some(plans) = plans(client)? else {
        return Ok(Vec::new());
    };
    let args: [DatumWithOid; 3] = [user_id.into(), feature.into(), now.into()];
    let table = client.select(&plans.usage, None, &args).map_err(failed("window usage"))?;
    table
        .into_iter()
        .map(|row| {
            Ok((
                must(col(&row, 1)?, "window_usage.window_name")?,
                must(col(&row, 2)?, "window_usage.window_start")?,
                must(col(&row, 3)?, "window_usage.usage_count")?,
            ))
        })
        .collect()
}

/// A refund of `amount` units of a use made at `at`: every window that counted it gives them
/// back.
pub fn uncount(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    at: TimestampWithTimeZone,
    amount: i64,
) -> Result<(), Error> {
    let Some(plans) = plans(client)? else {
        return Ok(());
    };
    let args: [DatumWithOid; 4] = [user_id.into(), feature.into(), at.into(), amount.into()];
    client.select(&plans.uncount, None, &args).map_err(failed("refund in the windows"))?;
    Ok(())
}
