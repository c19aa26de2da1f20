//! Grants in the use and refund paths (sql/grants.sql): the statements on quota.grants and
//! quota.grant_uses, prepared once per backend. These are the extension's own tables whatever
//! quota.attach() bound, so the SECURITY DEFINER writers write them as the extension's owner.
//! Which grant a use draws from is decided by [`entitlements_core::grants`].

use crate::spi::{self, failed};
use crate::store::must;
use crate::time::micros;
use entitlements_core::grants::{Balance, Totals};
use entitlements_core::Error;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};
use pgrx::PgOid;

/// Whether grant `g` counts now: the condition of the SQL function quota.grant_counts(grants),
/// written out. A statement calling that function with the whole row fails on a Citus cluster,
/// where the routed statement names the shard and its row type (`function
/// quota.grant_counts(quota.grants_102255) does not exist`).
macro_rules! grant_counts {
    () => {
        "(g.voided_at IS NULL AND g.effective_from OPERATOR(pg_catalog.<=) pg_catalog.now()
     AND (g.expires_at IS NULL OR g.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()))"
    };
}
pub(crate) use grant_counts;

/// What the active grants of a user's feature gave, and what is left of them.
const TOTALS: &str = concat!(
    "
SELECT pg_catalog.sum(g.amount)::pg_catalog.int8, pg_catalog.sum(g.remaining)::pg_catalog.int8
  FROM quota.grants g
 WHERE g.user_id OPERATOR(pg_catalog.=) $1 AND g.feature_code OPERATOR(pg_catalog.=) $2
   AND ",
    grant_counts!()
);

/// The active grants of a user's feature, for usage_overview.
const LIST: &str = concat!(
    "
SELECT g.id, g.remaining, g.priority, g.expires_at, g.created_at, g.amount, g.source
  FROM quota.grants g
 WHERE g.user_id OPERATOR(pg_catalog.=) $1 AND g.feature_code OPERATOR(pg_catalog.=) $2
   AND ",
    grant_counts!()
);

/// The active grants of a user's feature with something left, locked. A grant voided or
/// expired by a change committed while the lock waited is left out (the condition is checked
/// again on the row's newest version). Locked in id order, whatever the use order: two uses lock
/// the same grants in the same order.
const LOCK: &str = concat!(
    "
SELECT g.id, g.remaining, g.priority, g.expires_at, g.created_at
  FROM quota.grants g
 WHERE g.user_id OPERATOR(pg_catalog.=) $1 AND g.feature_code OPERATOR(pg_catalog.=) $2
   AND g.remaining OPERATOR(pg_catalog.>) 0 AND ",
    grant_counts!(),
    "
 ORDER BY g.id
   FOR UPDATE OF g"
);

/// Takes what a use drew ($3 grants, $4 units) off the grants, in the ledger beside its usage
/// record ($2); announces each grant it spent.
fn draw_sql() -> String {
    format!(
        "
WITH drawn AS (
    UPDATE quota.grants g SET remaining = g.remaining OPERATOR(pg_catalog.-) d.amount
      FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.int8[]),
                      pg_catalog.unnest($4::pg_catalog.int8[])) AS d (id, amount)
     WHERE g.user_id OPERATOR(pg_catalog.=) $1 AND g.id OPERATOR(pg_catalog.=) d.id
    RETURNING g
), uses AS (
    INSERT INTO quota.grant_uses (user_id, record_id, grant_id, amount)
    SELECT $1, $2, d.id, d.amount
      FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.int8[]),
                      pg_catalog.unnest($4::pg_catalog.int8[])) AS d (id, amount)
)
SELECT pg_catalog.count(quota.grant_event('exhausted', {}))
  FROM drawn WHERE (drawn.g).remaining OPERATOR(pg_catalog.=) 0",
        as_grant("drawn.g")
    )
}

/// What a usage record ($2) drew from each grant, and whether that grant still counts, with
/// the grants locked (a refund gives back to them).
const PARTS: &str = concat!(
    "
SELECT u.grant_id, u.amount, ",
    grant_counts!(),
    ",
       COALESCE(g.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now(), false),
       g.voided_at IS NOT NULL
  FROM quota.grant_uses u
  JOIN quota.grants g ON g.user_id OPERATOR(pg_catalog.=) u.user_id
                     AND g.id OPERATOR(pg_catalog.=) u.grant_id
 WHERE u.user_id OPERATOR(pg_catalog.=) $1 AND u.record_id OPERATOR(pg_catalog.=) $2
 ORDER BY u.grant_id
   FOR UPDATE OF g"
);

/// Gives units back to grants ($3 grants, $4 units) for a refund record ($2).
const GIVE_BACK: &str = "
WITH given AS (
    UPDATE quota.grants g SET remaining = g.remaining OPERATOR(pg_catalog.+) d.amount
      FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.int8[]),
                      pg_catalog.unnest($4::pg_catalog.int8[])) AS d (id, amount)
     WHERE g.user_id OPERATOR(pg_catalog.=) $1 AND g.id OPERATOR(pg_catalog.=) d.id
    RETURNING g.id
)
INSERT INTO quota.grant_uses (user_id, record_id, grant_id, amount)
SELECT $1, $2, d.id, OPERATOR(pg_catalog.-) d.amount
  FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.int8[]),
                  pg_catalog.unnest($4::pg_catalog.int8[])) AS d (id, amount)";

/// Whether the rollover grant from the period starting at $3 exists (voided or expired too).
const ROLLOVER_EXISTS: &str = "
SELECT EXISTS (SELECT FROM quota.grants g
                WHERE g.user_id OPERATOR(pg_catalog.=) $1
                  AND g.feature_code OPERATOR(pg_catalog.=) $2
                  AND g.rollover_from OPERATOR(pg_catalog.=) $3)";

/// Creates the rollover grant from the period starting at $6 ($3 units from $4 until $5), once:
/// a second write touching the new period finds it (or waits for the first one's insert and
/// then finds it) and adds nothing. Announced as added.
fn rollover_create_sql() -> String {
    let (id_column, id_value) = crate::placement::identity("grants");
    format!(
        "
WITH created AS (
    INSERT INTO quota.grants AS g
           ({id_column}user_id, feature_code, amount, remaining, effective_from, expires_at,
            source, reason, actor, rollover_from)
    VALUES ({id_value}$1, $2, $3, $3, $4, $5, 'rollover',
            'unused allowance of the period from ' OPERATOR(pg_catalog.||) $6::pg_catalog.text,
            'pg_entitlements', $6)
    ON CONFLICT (user_id, feature_code, rollover_from) WHERE rollover_from IS NOT NULL
    DO NOTHING
    RETURNING g
)
SELECT pg_catalog.count(quota.grant_event('added', {})) FROM created",
        as_grant("created.g")
    )
}

/// The grant row `g` as the type `quota.grant_event` takes. On a Citus worker the statements
/// name the user's shard of quota.grants, whose rows are of the shard's own row type; the type
/// is written quoted so that [`crate::placement::bind`] leaves it the extension's.
fn as_grant(g: &str) -> String {
    format!("ROW(({g}).*)::quota.\"grants\"")
}

/// Whether the grants exist: the library is replaced before ALTER EXTENSION ... UPDATE creates
/// them, and the uses and checks must go on meanwhile, as they did without grants. Asked again
/// by every call until they exist.
const EXIST: &str = "
SELECT CASE WHEN pg_catalog.to_regclass('quota.grants') IS NULL THEN false
            ELSE pg_catalog.to_regprocedure('quota.grant_counts(quota.grants)') IS NOT NULL END";

/// Whether the grants name the period a rollover came from (added by the same version as
/// rollover; a library newer than its SQL goes without until ALTER EXTENSION UPDATE).
const HAS_ROLLOVER: &str = "
SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = 'quota.grants'::pg_catalog.regclass
                  AND a.attname = 'rollover_from' AND NOT a.attisdropped)";

struct Plans {
    totals: OwnedPreparedStatement,
    list: OwnedPreparedStatement,
    lock: OwnedPreparedStatement,
    draw: OwnedPreparedStatement,
    parts: OwnedPreparedStatement,
    give_back: OwnedPreparedStatement,
    /// `None` before ALTER EXTENSION UPDATE adds grants.rollover_from.
    rollover_exists: Option<OwnedPreparedStatement>,
    rollover_create: Option<OwnedPreparedStatement>,
}

thread_local! {
    // Prepared once per backend and kept for its life, like the statements of crate::store.
    static PLANS: spi::Kept<Plans> = const { spi::Kept::new() };
}

/// Whether the grants exist ([`EXIST`]).
pub fn exist(client: &SpiClient<'_>) -> Result<bool, Error> {
    spi::ask(client, EXIST, &[])
}

/// The statements, or `None` while the grants do not exist yet ([`EXIST`]).
fn plans(client: &SpiClient<'_>) -> Result<Option<&'static Plans>, Error> {
    use spi::oid::{INT8, INT8S, TEXT, TSTZ};
    spi::kept(&PLANS, client, Some(EXIST), |prepare| {
        let has_rollover = spi::ask(client, HAS_ROLLOVER, &[])?;
        let if_rollover = |sql: &str, args: &[PgOid], mutating: bool| {
            has_rollover.then(|| prepare(sql, args, mutating)).transpose()
        };
        Ok(Plans {
            totals: prepare(TOTALS, &[INT8, TEXT], false)?,
            list: prepare(LIST, &[INT8, TEXT], false)?,
            lock: prepare(LOCK, &[INT8, TEXT], true)?,
            draw: prepare(&draw_sql(), &[INT8, INT8, INT8S, INT8S], true)?,
            parts: prepare(PARTS, &[INT8, INT8], true)?,
            give_back: prepare(GIVE_BACK, &[INT8, INT8, INT8S, INT8S], true)?,
            rollover_exists: if_rollover(ROLLOVER_EXISTS, &[INT8, TEXT, TSTZ], false)?,
            rollover_create: if_rollover(
                &rollover_create_sql(),
                &[INT8, TEXT, INT8, TSTZ, TSTZ, TSTZ],
                true,
            )?,
        })
    })
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(
    row: &SpiHeapTupleData<'_>,
    n: usize,
) -> Result<Option<T>, Error> {
    spi::column(row, n, " on quota.grants")
}

/// What the active grants of a user's feature gave and have left, by statement.
pub fn totals(client: &SpiClient<'_>, user_id: i64, feature: &str) -> Result<Totals, Error> {
    let Some(plans) = plans(client)? else {
        return Ok(Totals::default());
    };
    let args: [DatumWithOid; 2] = [user_id.into(), feature.into()];
    let table = client.select(&plans.totals, Some(1), &args).map_err(failed("grants"))?;
    Ok(match table.into_iter().next() {
        Some(row) => Totals {
            granted: col::<i64>(&row, 1)?.unwrap_or(0),
            left: col::<i64>(&row, 2)?.unwrap_or(0),
        },
        None => Totals::default(),
    })
}

fn balance(row: &SpiHeapTupleData<'_>) -> Result<Balance, Error> {
    Ok(Balance {
        id: must(col(row, 1)?, "grants.id")?,
        remaining: must(col(row, 2)?, "grants.remaining")?,
        priority: must(col(row, 3)?, "grants.priority")?,
        expires_at: col::<TimestampWithTimeZone>(row, 4)?.map(micros),
        created_at: micros(must(col(row, 5)?, "grants.created_at")?),
    })
}

/// A grant that counts, as usage_overview shows it.
pub struct Listed {
    pub balance: Balance,
    pub amount: i64,
    pub source: String,
    pub expires_at: Option<TimestampWithTimeZone>,
    /// False for a rollover that counts but whose grant is not created yet (it has no id).
    pub created: bool,
}

/// The grants of a user's feature that count, in use order.
pub fn list(client: &SpiClient<'_>, user_id: i64, feature: &str) -> Result<Vec<Listed>, Error> {
    let Some(plans) = plans(client)? else {
        return Ok(Vec::new());
    };
    let args: [DatumWithOid; 2] = [user_id.into(), feature.into()];
    let mut listed = client
        .select(&plans.list, None, &args)
        .map_err(failed("grants"))?
        .map(|row| {
            Ok(Listed {
                balance: balance(&row)?,
                amount: must(col(&row, 6)?, "grants.amount")?,
                source: must(col(&row, 7)?, "grants.source")?,
                expires_at: col(&row, 4)?,
                created: true,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    listed.sort_by(|a, b| entitlements_core::grants::use_order(&a.balance, &b.balance));
    Ok(listed)
}

/// The active grants of a user's feature with something left, locked until the transaction
/// ends.
pub fn lock(client: &SpiClient<'_>, user_id: i64, feature: &str) -> Result<Vec<Balance>, Error> {
    let Some(plans) = plans(client)? else {
        return Ok(Vec::new());
    };
    let args: [DatumWithOid; 2] = [user_id.into(), feature.into()];
    client
        .select(&plans.lock, None, &args)
        .map_err(failed("locking the grants"))?
        .map(|row| balance(&row))
        .collect()
}

/// Runs `statement` ([`draw_sql`] or [`GIVE_BACK`]) for `parts` (grant id, units) beside usage record
/// `record_id`; nothing for no part.
fn post_parts(
    client: &SpiClient<'_>,
    statement: fn(&Plans) -> &OwnedPreparedStatement,
    what: &'static str,
    user_id: i64,
    record_id: i64,
    parts: &[(i64, i64)],
) -> Result<(), Error> {
    if parts.is_empty() {
        return Ok(());
    }
    // A use or a refund has parts only when it read them from the grants.
    let Some(plans) = plans(client)? else {
        return Err(Error::Statement { what, detail: "no grants".into() });
    };
    let (ids, amounts): (Vec<i64>, Vec<i64>) = parts.iter().copied().unzip();
    let args: [DatumWithOid; 4] = [user_id.into(), record_id.into(), ids.into(), amounts.into()];
    client.select(statement(plans), None, &args).map_err(failed(what))?;
    Ok(())
}

/// Takes `parts` (grant id, units) off the grants, recorded beside usage record `record_id`.
pub fn draw(
    client: &SpiClient<'_>,
    user_id: i64,
    record_id: i64,
    parts: &[(i64, i64)],
) -> Result<(), Error> {
    post_parts(client, |p| &p.draw, "drawing from grants", user_id, record_id, parts)
}

/// What a usage record drew from one grant.
pub struct Part {
    pub grant_id: i64,
    pub amount: i64,
    /// Whether the grant still counts: only then does a refund give the units back.
    pub counts: bool,
    pub expired: bool,
    pub voided: bool,
}

/// What usage record `record_id` drew from grants, with those grants locked.
pub fn parts(client: &SpiClient<'_>, user_id: i64, record_id: i64) -> Result<Vec<Part>, Error> {
    let Some(plans) = plans(client)? else {
        return Ok(Vec::new());
    };
    let args: [DatumWithOid; 2] = [user_id.into(), record_id.into()];
    client
        .select(&plans.parts, None, &args)
        .map_err(failed("grant uses lookup"))?
        .map(|row| {
            Ok(Part {
                grant_id: must(col(&row, 1)?, "grant_uses.grant_id")?,
                amount: must(col(&row, 2)?, "grant_uses.amount")?,
                counts: col(&row, 3)?.unwrap_or(false),
                expired: col(&row, 4)?.unwrap_or(false),
                voided: col(&row, 5)?.unwrap_or(false),
            })
        })
        .collect()
}

/// Gives `parts` (grant id, units) back to the grants, recorded beside refund record
/// `record_id`.
pub fn give_back(
    client: &SpiClient<'_>,
    user_id: i64,
    record_id: i64,
    parts: &[(i64, i64)],
) -> Result<(), Error> {
    post_parts(client, |p| &p.give_back, "refunding to grants", user_id, record_id, parts)
}

/// Whether the rollover grant from the period starting at `from` exists: a read counts one that
/// does not yet as if it did ([`crate::quota`]).
pub fn rollover_exists(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    from: TimestampWithTimeZone,
) -> Result<bool, Error> {
    let Some(plan) = plans(client)?.and_then(|p| p.rollover_exists.as_ref()) else {
        return Ok(true);
    };
    let args: [DatumWithOid; 3] = [user_id.into(), feature.into(), from.into()];
    let table = client.select(plan, Some(1), &args).map_err(failed("rollover"))?;
    Ok(match table.into_iter().next() {
        Some(row) => col::<bool>(&row, 1)?.unwrap_or(false),
        None => false,
    })
}

/// Creates the rollover grant of `amount` units from the period starting at `from`, counting
/// from `effective_from` until `expires_at`, unless it exists.
pub fn create_rollover(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    amount: i64,
    (effective_from, expires_at): (TimestampWithTimeZone, TimestampWithTimeZone),
    from: TimestampWithTimeZone,
) -> Result<(), Error> {
    let Some(plan) = plans(client)?.and_then(|p| p.rollover_create.as_ref()) else {
        return Ok(());
    };
    let args: [DatumWithOid; 6] = [
        user_id.into(),
        feature.into(),
        amount.into(),
        effective_from.into(),
        expires_at.into(),
        from.into(),
    ];
    client.select(plan, None, &args).map_err(failed("rollover"))?;
    Ok(())
}
