//! Releases of running counts (features of kind gauge) in `release_usage` (sql/kinds.sql): the
//! statements on quota.releases, prepared once per backend. It is the extension's own table
//! whatever quota.attach() bound, so the SECURITY DEFINER writer writes it as the extension's
//! owner; the count itself goes down by [`crate::store::count_down`] on the bound tables. A
//! release is a row of its own, not a negative usage record: in the ledger a negative amount
//! is a refund, and only a refund.

use crate::jsonb::RawJsonb;
use crate::spi::{self, failed};
use crate::store::must;
use entitlements_core::Error;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};

/// Serializes the releases of one idempotency key (in a space of its own).
const LOCK_KEY: &str = "
SELECT pg_catalog.pg_advisory_xact_lock(
           pg_catalog.hashtextextended('release ' OPERATOR(pg_catalog.||) $2, $1))";

/// The release of a key, once the key's lock is taken.
const BY_KEY: &str = "
SELECT r.feature_code, r.amount FROM quota.releases r
 WHERE r.user_id OPERATOR(pg_catalog.=) $1 AND r.idempotency_key OPERATOR(pg_catalog.=) $2";

fn insert_sql() -> String {
    let (id_column, id_value) = crate::placement::identity("releases");
    format!(
        "
INSERT INTO quota.releases
       ({id_column}user_id, feature_code, period_start, amount, idempotency_key, resource_type,
        resource_id, metadata)
VALUES ({id_value}$1, $2, $3, $4, $5, $6, $7, $8)"
    )
}

struct Plans {
    lock_key: OwnedPreparedStatement,
    by_key: OwnedPreparedStatement,
    insert: OwnedPreparedStatement,
}

thread_local! {
    // Prepared once per backend and kept for its life, like the statements of crate::store.
    static PLANS: spi::Kept<Plans> = const { spi::Kept::new() };
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(
    row: &SpiHeapTupleData<'_>,
    n: usize,
) -> Result<Option<T>, Error> {
    spi::column(row, n, " on quota.releases")
}

/// Whether the table exists: the library is replaced before ALTER EXTENSION ... UPDATE creates
/// it. Asked again by every call until it exists.
const EXIST: &str = "SELECT pg_catalog.to_regclass('quota.releases') IS NOT NULL";

/// The statements, or the error that says the table does not exist yet ([`EXIST`]).
fn plans(client: &SpiClient<'_>) -> Result<&'static Plans, Error> {
    use spi::oid::{INT8, JSONB, TEXT, TSTZ};
    let plans = spi::kept(&PLANS, client, Some(EXIST), |prepare| {
        Ok(Plans {
            lock_key: prepare(LOCK_KEY, &[INT8, TEXT], true)?,
            by_key: prepare(BY_KEY, &[INT8, TEXT], true)?,
            insert: prepare(
                &insert_sql(),
                &[INT8, TEXT, TSTZ, INT8, TEXT, TEXT, INT8, JSONB],
                true,
            )?,
        })
    })?;
    plans.ok_or(Error::UpdatePending { table: "quota.releases" })
}

/// The feature and amount of the release of an idempotency key, after waiting for any other
/// transaction releasing under it.
pub fn by_key(
    client: &SpiClient<'_>,
    user_id: i64,
    key: &str,
) -> Result<Option<(String, i64)>, Error> {
    let plans = plans(client)?;
    let args: [DatumWithOid; 2] = [user_id.into(), key.into()];
    client.select(&plans.lock_key, None, &args).map_err(failed("locking the key"))?;
    let table = client.select(&plans.by_key, Some(1), &args).map_err(failed("releases"))?;
    table
        .into_iter()
        .next()
        .map(|row| {
            Ok((must(col(&row, 1)?, "releases.feature_code")?, must(col(&row, 2)?, "amount")?))
        })
        .transpose()
}

/// What a release took off a count, and what it was for.
pub struct Release<'a> {
    pub user_id: i64,
    pub feature: &'a str,
    pub period_start: TimestampWithTimeZone,
    pub amount: i64,
    pub idempotency_key: Option<&'a str>,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<i64>,
    pub metadata: Option<RawJsonb>,
}

/// Writes a release's row.
pub fn insert(client: &SpiClient<'_>, r: Release<'_>) -> Result<(), Error> {
    let plans = plans(client)?;
    let args: [DatumWithOid; 8] = [
        r.user_id.into(),
        r.feature.into(),
        r.period_start.into(),
        r.amount.into(),
        r.idempotency_key.map_or_else(DatumWithOid::null::<&str>, Into::into),
        r.resource_type.map_or_else(DatumWithOid::null::<&str>, Into::into),
        r.resource_id.map_or_else(DatumWithOid::null::<i64>, Into::into),
        r.metadata.map_or_else(DatumWithOid::null::<RawJsonb>, Into::into),
    ];
    client.select(&plans.insert, None, &args).map_err(failed("releasing usage"))?;
    Ok(())
}
