//! Reservations in the use, reserve, settle and release paths (sql/reservations.sql): the
//! statements on quota.reservations, prepared once per backend. It is the extension's own table
//! whatever quota.attach() bound, so the SECURITY DEFINER writers write it as the extension's
//! owner; what the holds of a counter claim (`user_usage.held`) is written by
//! [`crate::store::add_held`] on the bound tables. What a hold lets a use take is decided by
//! [`entitlements_core::holds`].

use crate::spi::{self, failed};
use crate::store::must;
use crate::time::micros;
use entitlements_core::Error;
use pgrx::datum::{DatumWithOid, Interval, TimestampWithTimeZone};
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};

/// What the active holds of a counter ($1, $2, $3) claim.
const ACTIVE: &str = "
SELECT pg_catalog.sum(r.amount)::pg_catalog.int8
  FROM quota.reservations r
 WHERE r.user_id OPERATOR(pg_catalog.=) $1 AND r.feature_code OPERATOR(pg_catalog.=) $2
   AND r.period_start OPERATOR(pg_catalog.=) $3 AND r.state OPERATOR(pg_catalog.=) 'held'
   AND r.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()";

/// Marks the holds of a counter found past their expiry 'expired', once the counter is locked,
/// and returns what they claimed, and what the holds still active claim, leaving out one hold
/// ($4, or none): the one being settled. Both as a new statement after the counter's lock sees
/// them: every hold is granted under that lock, so none is in flight.
const RECLAIM: &str = "
WITH expired AS (
    UPDATE quota.reservations r SET state = 'expired', ended_at = pg_catalog.now()
     WHERE r.user_id OPERATOR(pg_catalog.=) $1 AND r.feature_code OPERATOR(pg_catalog.=) $2
       AND r.period_start OPERATOR(pg_catalog.=) $3 AND r.state OPERATOR(pg_catalog.=) 'held'
       AND r.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now()
    RETURNING r.amount
)
SELECT (SELECT pg_catalog.sum(e.amount) FROM expired e)::pg_catalog.int8,
       (SELECT pg_catalog.sum(r.amount)
          FROM quota.reservations r
         WHERE r.user_id OPERATOR(pg_catalog.=) $1 AND r.feature_code OPERATOR(pg_catalog.=) $2
           AND r.period_start OPERATOR(pg_catalog.=) $3
           AND r.state OPERATOR(pg_catalog.=) 'held'
           AND r.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()
           AND r.id IS DISTINCT FROM $4)::pg_catalog.int8";

/// The columns of a hold, as [`hold`] reads them.
const COLUMNS: &str = "r.user_id, r.id, r.feature_code, r.period_start, r.amount,
       r.expires_at, r.state, r.settled_amount, r.record_id";

/// A new hold, returned as [`hold`] reads it.
fn insert_sql() -> String {
    let (id_column, id_value) = crate::placement::identity("reservations");
    format!(
        "INSERT INTO quota.reservations AS r
                ({id_column}user_id, feature_code, period_start, period_end, amount, expires_at,
                 idempotency_key)
         VALUES ({id_value}$1, $2, $3, $4, $5, pg_catalog.now() OPERATOR(pg_catalog.+) $6, $7)
         RETURNING {COLUMNS}"
    )
}

/// A hold by its id, of user $2 when it is not NULL, unlocked: which counter to lock before it.
fn find_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM quota.reservations r
          WHERE r.id OPERATOR(pg_catalog.=) $1
            AND ($2::pg_catalog.int8 IS NULL OR r.user_id OPERATOR(pg_catalog.=) $2)"
    )
}

/// A hold, locked until the transaction ends, once its counter is.
fn lock_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM quota.reservations r
          WHERE r.user_id OPERATOR(pg_catalog.=) $1 AND r.id OPERATOR(pg_catalog.=) $2
            FOR UPDATE OF r"
    )
}

/// The hold of an idempotency key, once the key's lock is taken.
fn by_key_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM quota.reservations r
          WHERE r.user_id OPERATOR(pg_catalog.=) $1
            AND r.idempotency_key OPERATOR(pg_catalog.=) $2"
    )
}

/// Ends a locked hold ($3 the new state, $4 what was settled, $5 its usage record) and returns
/// the state it had: 'held' when its units still counted on its counter.
const END: &str = "
WITH old AS MATERIALIZED (
    SELECT r.state FROM quota.reservations r
     WHERE r.user_id OPERATOR(pg_catalog.=) $1 AND r.id OPERATOR(pg_catalog.=) $2
)
UPDATE quota.reservations r
   SET state = $3, settled_amount = $4, record_id = $5, ended_at = pg_catalog.now()
 WHERE r.user_id OPERATOR(pg_catalog.=) $1 AND r.id OPERATOR(pg_catalog.=) $2
RETURNING (SELECT old.state FROM old)";

/// Serializes the reserves of one idempotency key, as store::LOCK_KEY does for uses (in a
/// space of its own: a use and a hold may have the same key).
const LOCK_KEY: &str = "
SELECT pg_catalog.pg_advisory_xact_lock(
           pg_catalog.hashtextextended('reservation ' OPERATOR(pg_catalog.||) $2, $1))";

/// Moves the holds of the counters a change of the billing period emptied ($4 features, $5
/// starts) to the current period ($2, $3), with what they claim ([`crate::store::carry_usage`]).
const CARRY: &str = "
UPDATE quota.reservations r SET period_start = $2, period_end = $3
  FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.text[]),
                  pg_catalog.unnest($5::pg_catalog.timestamptz[])) AS m (feature_code, period_start)
 WHERE r.user_id OPERATOR(pg_catalog.=) $1 AND r.state OPERATOR(pg_catalog.=) 'held'
   AND r.feature_code OPERATOR(pg_catalog.=) m.feature_code
   AND r.period_start OPERATOR(pg_catalog.=) m.period_start";

/// Whether the reservations exist: the library is replaced before ALTER EXTENSION ... UPDATE
/// creates them. Asked again by every call until they exist.
const EXIST: &str = "SELECT pg_catalog.to_regclass('quota.reservations') IS NOT NULL";

struct Plans {
    active: OwnedPreparedStatement,
    reclaim: OwnedPreparedStatement,
    insert: OwnedPreparedStatement,
    find: OwnedPreparedStatement,
    lock: OwnedPreparedStatement,
    by_key: OwnedPreparedStatement,
    end: OwnedPreparedStatement,
    lock_key: OwnedPreparedStatement,
    carry: OwnedPreparedStatement,
}

thread_local! {
    // Prepared once per backend and kept for its life, like the statements of crate::store.
    static PLANS: spi::Kept<Plans> = const { spi::Kept::new() };
}

/// The statements, or `None` while the reservations do not exist yet ([`EXIST`]).
fn plans(client: &SpiClient<'_>) -> Result<Option<&'static Plans>, Error> {
    use spi::oid::{INT8, INTERVAL, TEXT, TEXTS, TSTZ, TSTZS};
    spi::kept(&PLANS, client, Some(EXIST), |prepare| {
        Ok(Plans {
            active: prepare(ACTIVE, &[INT8, TEXT, TSTZ], false)?,
            reclaim: prepare(RECLAIM, &[INT8, TEXT, TSTZ, INT8], true)?,
            insert: prepare(&insert_sql(), &[INT8, TEXT, TSTZ, TSTZ, INT8, INTERVAL, TEXT], true)?,
            find: prepare(&find_sql(), &[INT8, INT8], false)?,
            lock: prepare(&lock_sql(), &[INT8, INT8], true)?,
            by_key: prepare(&by_key_sql(), &[INT8, TEXT], true)?,
            end: prepare(END, &[INT8, INT8, TEXT, INT8, INT8], true)?,
            lock_key: prepare(LOCK_KEY, &[INT8, TEXT], true)?,
            carry: prepare(CARRY, &[INT8, TSTZ, TSTZ, TEXTS, TSTZS], true)?,
        })
    })
}

/// The statements, or the error that says the reservations do not exist yet.
fn required(client: &SpiClient<'_>) -> Result<&'static Plans, Error> {
    plans(client)?.ok_or(Error::UpdatePending { table: "quota.reservations" })
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(
    row: &SpiHeapTupleData<'_>,
    n: usize,
) -> Result<Option<T>, Error> {
    spi::column(row, n, " on quota.reservations")
}

/// What the active holds of a counter claim, by statement (0 where there are none, or no
/// reservations yet).
pub fn active(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    period_start: TimestampWithTimeZone,
) -> Result<i64, Error> {
    let Some(plans) = plans(client)? else {
        return Ok(0);
    };
    let args: [DatumWithOid; 3] = [user_id.into(), feature.into(), period_start.into()];
    let table = client.select(&plans.active, Some(1), &args).map_err(failed("holds"))?;
    Ok(match table.into_iter().next() {
        Some(row) => col::<i64>(&row, 1)?.unwrap_or(0),
        None => 0,
    })
}

/// Marks the expired holds of a locked counter and returns `(reclaimed, active)`: what they
/// claimed, and what the holds still active claim, `except` one.
pub fn reclaim(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    period_start: TimestampWithTimeZone,
    except: Option<i64>,
) -> Result<(i64, i64), Error> {
    let Some(plans) = plans(client)? else {
        return Ok((0, 0));
    };
    let args: [DatumWithOid; 4] = [
        user_id.into(),
        feature.into(),
        period_start.into(),
        except.map_or_else(DatumWithOid::null::<i64>, Into::into),
    ];
    let table = client.select(&plans.reclaim, Some(1), &args).map_err(failed("holds"))?;
    let row = table.into_iter().next();
    let Some(row) = row else {
        return Ok((0, 0));
    };
    Ok((col::<i64>(&row, 1)?.unwrap_or(0), col::<i64>(&row, 2)?.unwrap_or(0)))
}

/// A hold as the calls read it.
pub struct Hold {
    pub user_id: i64,
    pub id: i64,
    pub feature: String,
    pub period_start: TimestampWithTimeZone,
    pub amount: i64,
    pub expires_at: TimestampWithTimeZone,
    /// `held`, `settled`, `released` or `expired`.
    pub state: String,
    pub settled_amount: Option<i64>,
    pub record_id: Option<i64>,
}

impl Hold {
    /// Whether it counts now ([`entitlements_core::holds::counts`]): now() is the
    /// transaction's start, as in the statements that add the active holds up.
    pub fn counts(&self) -> bool {
        let now = micros(pgrx::datum::now());
        entitlements_core::holds::counts(self.state == "held", micros(self.expires_at), now)
    }
}

fn hold(row: &SpiHeapTupleData<'_>) -> Result<Hold, Error> {
    Ok(Hold {
        user_id: must(col(row, 1)?, "reservations.user_id")?,
        id: must(col(row, 2)?, "reservations.id")?,
        feature: must(col(row, 3)?, "reservations.feature_code")?,
        period_start: must(col(row, 4)?, "reservations.period_start")?,
        amount: must(col(row, 5)?, "reservations.amount")?,
        expires_at: must(col(row, 6)?, "reservations.expires_at")?,
        state: must(col(row, 7)?, "reservations.state")?,
        settled_amount: col(row, 8)?,
        record_id: col(row, 9)?,
    })
}

fn one(
    client: &SpiClient<'_>,
    plan: &OwnedPreparedStatement,
    args: &[DatumWithOid],
) -> Result<Option<Hold>, Error> {
    let table = client.select(plan, Some(1), args).map_err(failed("holds"))?;
    table.into_iter().next().map(|row| hold(&row)).transpose()
}

/// A hold by its id, unlocked.
pub fn find(client: &SpiClient<'_>, user: Option<i64>, id: i64) -> Result<Option<Hold>, Error> {
    let plans = required(client)?;
    one(client, &plans.find, &[id.into(), user.into()])
}

/// A hold, locked until the transaction ends.
pub fn lock(client: &SpiClient<'_>, user_id: i64, id: i64) -> Result<Option<Hold>, Error> {
    let plans = required(client)?;
    one(client, &plans.lock, &[user_id.into(), id.into()])
}

/// The hold of an idempotency key, once the key's lock is taken: a retry that arrives while
/// the first reserve runs waits for it, then finds its hold.
pub fn by_key(client: &SpiClient<'_>, user_id: i64, key: &str) -> Result<Option<Hold>, Error> {
    let plans = required(client)?;
    let args: [DatumWithOid; 2] = [user_id.into(), key.into()];
    client.select(&plans.lock_key, None, &args).map_err(failed("locking the key"))?;
    one(client, &plans.by_key, &args)
}

/// Inserts a hold of `amount` for `ttl` on the counter of `[start, end)`.
#[allow(clippy::too_many_arguments)]
pub fn insert(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    (start, end): (TimestampWithTimeZone, TimestampWithTimeZone),
    amount: i64,
    ttl: Interval,
    key: Option<&str>,
) -> Result<Hold, Error> {
    let plans = required(client)?;
    let args: [DatumWithOid; 7] = [
        user_id.into(),
        feature.into(),
        start.into(),
        end.into(),
        amount.into(),
        ttl.into(),
        key.map_or_else(DatumWithOid::null::<&str>, Into::into),
    ];
    let table = client.select(&plans.insert, Some(1), &args).map_err(failed("holding units"))?;
    let row = table.into_iter().next();
    hold(&must(row, "the new hold")?)
}

/// Ends a locked hold: `settled` (with what was settled and its usage record), `released` or
/// `expired`. Returns whether its units still counted on its counter (state `held` before).
pub fn end(
    client: &SpiClient<'_>,
    hold: &Hold,
    state: &str,
    settled: Option<(i64, Option<i64>)>,
) -> Result<bool, Error> {
    let plans = required(client)?;
    let args: [DatumWithOid; 5] = [
        hold.user_id.into(),
        hold.id.into(),
        state.into(),
        settled.map_or_else(DatumWithOid::null::<i64>, |(n, _)| n.into()),
        settled.and_then(|(_, record)| record).map_or_else(DatumWithOid::null::<i64>, Into::into),
    ];
    let table = client.select(&plans.end, Some(1), &args).map_err(failed("ending a hold"))?;
    let row = table.into_iter().next();
    let row = must(row, "the hold ended")?;
    Ok(col::<String>(&row, 1)?.as_deref() == Some("held"))
}

/// Moves the holds of the counters of `features` starting at `starts` (their periods a change
/// ended) to the period `[start, end)`, whose counters took over what they claim.
pub fn carry(
    client: &SpiClient<'_>,
    user_id: i64,
    (start, end): (TimestampWithTimeZone, TimestampWithTimeZone),
    features: Vec<String>,
    starts: Vec<TimestampWithTimeZone>,
) -> Result<(), Error> {
    let plans = required(client)?;
    let args: [DatumWithOid; 5] =
        [user_id.into(), start.into(), end.into(), features.into(), starts.into()];
    client.select(&plans.carry, None, &args).map_err(failed("carrying holds"))?;
    Ok(())
}
