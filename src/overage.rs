//! Soft limits in the use, refund and overview paths (sql/soft_limits.sql): the statements on
//! quota.overage_uses, prepared once per backend. It is the extension's own table whatever
//! quota.attach() bound, so the SECURITY DEFINER writers write it as the extension's owner.
//! How much of a use is overage is decided by [`entitlements_core::holds::split`].

use crate::spi::{self, failed};
use entitlements_core::Error;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};

/// Marks $5 units of usage record $2 (of feature $3, period $4) as overage; a refund record
/// gives back with $5 < 0.
const MARK: &str = "
INSERT INTO quota.overage_uses (user_id, record_id, feature_code, period_start, amount)
VALUES ($1, $2, $3, $4, $5)";

/// What a user's feature took as overage in a period, refunds deducted.
const USED: &str = "
SELECT pg_catalog.sum(o.amount)::pg_catalog.int8 FROM quota.overage_uses o
 WHERE o.user_id OPERATOR(pg_catalog.=) $1 AND o.feature_code OPERATOR(pg_catalog.=) $2
   AND o.period_start OPERATOR(pg_catalog.=) $3";

/// Whether the table exists: the library is replaced before ALTER EXTENSION ... UPDATE creates
/// it. Asked again by every call until it exists.
const EXIST: &str = "SELECT pg_catalog.to_regclass('quota.overage_uses') IS NOT NULL";

struct Plans {
    mark: OwnedPreparedStatement,
    used: OwnedPreparedStatement,
}

thread_local! {
    // Prepared once per backend and kept for its life, like the statements of crate::store.
    static PLANS: spi::Kept<Plans> = const { spi::Kept::new() };
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(
    row: &SpiHeapTupleData<'_>,
    n: usize,
) -> Result<Option<T>, Error> {
    spi::column(row, n, " on quota.overage_uses")
}

/// The statements, or `None` while the table does not exist yet ([`EXIST`]).
fn plans(client: &SpiClient<'_>) -> Result<Option<&'static Plans>, Error> {
    use spi::oid::{INT8, TEXT, TSTZ};
    spi::kept(&PLANS, client, Some(EXIST), |prepare| {
        Ok(Plans {
            mark: prepare(MARK, &[INT8, INT8, TEXT, TSTZ, INT8], true)?,
            used: prepare(USED, &[INT8, TEXT, TSTZ], false)?,
        })
    })
}

/// Marks `amount` units of a usage record as overage (< 0: a refund's record gives them back).
pub fn mark(
    client: &SpiClient<'_>,
    user_id: i64,
    record_id: i64,
    (feature, period_start): (&str, TimestampWithTimeZone),
    amount: i64,
) -> Result<(), Error> {
    if amount == 0 {
        return Ok(());
    }
    let Some(plans) = plans(client)? else {
        return Err(Error::UpdatePending { table: "quota.overage_uses" });
    };
    let args: [DatumWithOid; 5] =
        [user_id.into(), record_id.into(), feature.into(), period_start.into(), amount.into()];
    client.select(&plans.mark, None, &args).map_err(failed("marking overage"))?;
    Ok(())
}

/// What a user's feature took as overage in the period starting at `period_start`.
pub fn used(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    period_start: TimestampWithTimeZone,
) -> Result<i64, Error> {
    let Some(plans) = plans(client)? else {
        return Ok(0);
    };
    let args: [DatumWithOid; 3] = [user_id.into(), feature.into(), period_start.into()];
    let table = client.select(&plans.used, Some(1), &args).map_err(failed("overage"))?;
    Ok(match table.into_iter().next() {
        Some(row) => col::<i64>(&row, 1)?.unwrap_or(0),
        None => 0,
    })
}
