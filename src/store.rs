//! The SQL the extension runs, each statement prepared once per backend and kept
//! (`SPI_keepplan`), so a call pays no parse or plan. Every name is schema-qualified: a call
//! delegated to another node or run under a hostile search_path resolves the same objects.
//! Which of these statements a read needs is decided by [`crate::read`].

use crate::binding::bind;
use crate::jsonb::RawJsonb;
use crate::spi::failed;
use entitlements_core::alerts::Announced;
use entitlements_core::binding::{Lacks, Optional};
use entitlements_core::grants::Totals;
use entitlements_core::subscription::{self, Candidate};
use entitlements_core::{Error, Kind, Subject};
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::pg_sys::BuiltinOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData, SpiTupleTable};
use pgrx::{pg_sys, PgOid, PgSqlErrorCode, PgTryBuilder};
use std::ffi::{CStr, CString};
use std::panic::AssertUnwindSafe;

/// Everything a quota function needs about one user and feature, in one round trip: the
/// catalog row, the settings, and one row per subscription of the user with status 'active'
/// (or one row without a subscription), each with its plan's cycles and value for the feature.
/// Always at least one row; f.code is NULL when the catalog lacks the feature (or none was
/// asked for). Which subscription counts is decided in Rust by the rules of
/// `entitlements_core::subscription`, for this statement and the direct reads alike; the
/// status condition only narrows the rows down (and lets the partial index of active
/// subscriptions serve). The columns are listed, by position, in `read::column`.
/// `settings` are the settings' columns of the last change of zone, the attached tables'
/// local zone and the features they lack, or NULLs where the table lacks them (an installation whose library is newer than
/// its SQL, before ALTER EXTENSION UPDATE); `overage` the overage limits of the catalog and
/// the plan feature, likewise.
fn feature_sql(settings: &str, overage: &str) -> String {
    format!(
        "
SELECT f.code, f.reset_rule, f.unit, f.default_limit, f.alert_thresholds, f.name,
       coalesce(st.time_zone, 'UTC'), st.attached_schema::pg_catalog.text, pg_catalog.now(),
       s.ctid, s.id::pg_catalog.int8, s.plan_id::pg_catalog.int8, s.status::pg_catalog.text,
       s.start_date::pg_catalog.timestamptz, s.end_date::pg_catalog.timestamptz,
       s.quota_reset_anchor::pg_catalog.timestamptz, s.quota_cycle_type::pg_catalog.text,
       CASE WHEN f.code IS NOT NULL
             AND pg_catalog.jsonb_typeof(s.custom_quotas) OPERATOR(pg_catalog.<>) 'object'
            THEN s.custom_quotas::pg_catalog.text END,
       (s.custom_quotas OPERATOR(pg_catalog.->) f.code)::pg_catalog.text,
       p.id IS NOT NULL, p.quota_cycle_type::pg_catalog.text, p.billing_cycle::pg_catalog.text,
       pf.feature_value, pf.feature_unit::pg_catalog.text, {settings}, {overage}
  FROM (SELECT) AS one
  LEFT JOIN quota.settings st ON true
  LEFT JOIN quota.features f ON f.code OPERATOR(pg_catalog.=) $2
  LEFT JOIN LATERAL (
        SELECT us.ctid, us.id, us.plan_id, us.status, us.start_date, us.end_date,
               us.quota_reset_anchor, us.quota_cycle_type, us.custom_quotas
          FROM quota.user_subscriptions us
         WHERE us.user_id OPERATOR(pg_catalog.=) $1 AND us.status = 'active') s ON true
  LEFT JOIN quota.subscription_plans p ON p.id OPERATOR(pg_catalog.=) s.plan_id
  LEFT JOIN quota.plan_features pf
         ON pf.plan_id OPERATOR(pg_catalog.=) s.plan_id
        AND pf.feature_code OPERATOR(pg_catalog.=) f.code"
    )
}

/// Which snapshot [`select_feature`] reads with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Snapshot {
    /// The caller's: read-only SPI, which runs on a hot standby.
    Current,
    /// One taken when the statement starts: a writer whose first read went stale reads what
    /// the change committed.
    New,
}

/// The period's counter and what its holds claim (`held`, as in [`use_sql`]).
fn usage_sql(held: &str) -> String {
    format!(
        "
SELECT u.usage_count::pg_catalog.int8, {held}::pg_catalog.int8 FROM quota.user_usage u
 WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_start = $3"
    )
}

/// One period's counter, locked: its usage, what its holds claim and its end, for a settle or
/// release of a hold on it, which must not move the end of a counter a change ended.
fn lock_one_counter_sql(held: &str) -> String {
    format!(
        "
SELECT u.usage_count::pg_catalog.int8, {held}::pg_catalog.int8,
       u.period_end::pg_catalog.timestamptz
  FROM quota.user_usage u
 WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_start = $3
   FOR UPDATE OF u"
    )
}

/// Counts a running count down by $4 units once its counter is locked ([`lock_counter`]), never
/// below zero: no row when the count holds less. The release's row is in quota.releases
/// ([`crate::releases`]).
const COUNT_DOWN: &str = "
UPDATE quota.user_usage u
   SET usage_count = u.usage_count OPERATOR(pg_catalog.-) $4, updated_at = pg_catalog.now()
 WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_start = $3 AND u.usage_count >= $4
RETURNING u.usage_count::pg_catalog.int8";

/// Adds $4 (< 0: takes away) to what the period's holds claim, once the counter is locked
/// ([`crate::holds`]).
const ADD_HELD: &str = "
UPDATE quota.user_usage u SET held = u.held OPERATOR(pg_catalog.+) $4
 WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_start = $3";

/// Adds to the period's counter and writes the usage record, in one statement. The record
/// holds the use's amount ($5), the counter moves by what the allowance covers ($12: the whole
/// amount, but for a use that draws from grants, [`crate::grants`]); the last column is the
/// record's id. With a limit ($6), the counter moves only while `usage_count + $12 <= limit`,
/// and the record is written only when it moved: a refused use writes nothing.
///
/// Why a conditional upsert and not advisory locks or SELECT ... FOR UPDATE: concurrent uses of
/// one counter queue on its row lock, and under READ COMMITTED the waiting upsert re-evaluates
/// its WHERE against the version the previous one committed, so the check and the increment
/// are one atomic step with no extra lock and no extra round trip; a first use inserts through
/// speculative insertion, which sends concurrent inserts of the same key to the update branch.
/// now() goes in the VALUES and the update takes EXCLUDED's values: an ON CONFLICT DO UPDATE on
/// a distributed table may not call a non-immutable function.
///
/// A use takes one lock, its counter's row, which the upsert locks (or inserts) until the
/// transaction ends: another use of that counter waits there, then re-checks the limit against
/// what the first one committed. It locks nothing of the subscription, so an open use holds up
/// no use of another feature and no UPDATE of the subscription row. What changes a limit or a
/// period locks the counters of the features it moves first, FOR UPDATE (adjust_quota's
/// [`LOCK_COUNTERS`]; for any UPDATE or DELETE of the row the trigger
/// `pg_entitlements_wait_for_uses`, sql/triggers.sql): it waits for their open uses, and a use
/// that comes while it is open waits for it at the counter.
///
/// The use was judged by the subscription version it read ($11, its ctid), maybe with an older
/// snapshot than this statement's, and this statement's snapshot may be older than the commit
/// of a change it waited for at the counter. So `current` asks, once the counter is locked,
/// whether that version is still the committed one, whatever the snapshots
/// ([`crate::read::probe::is_current`]): it is first referenced from the conflict's WHERE,
/// which runs after the lock, or, for a first use of the period, which inserts the counter,
/// from `rec`, after the insert. When it is not, the third column says false and nothing is
/// written, but for a counter inserted by a first use, which the writer deletes again
/// ([`Applied::Stale`]); the writer then reads again and judges the use again. Once the counter
/// is locked, a change that commits later has waited for the use; a change that locked nothing
/// (the counter did not exist yet) and commits later comes after the use, which counted under
/// what was committed when it counted.
///
/// Where row_is_current() does not exist yet ([`HAS_ROW_IS_CURRENT`]), `current` locks the
/// version read FOR NO KEY UPDATE instead: the lock waits for a change of the row in flight and
/// then follows it to the newest version, which no longer stands at $11.
///
/// `memory` is what the counter remembers of the alerts announced (the columns, or NULLs where
/// the table lacks them: [`Memory`]); `keyed`: the records have idempotency keys ($10 is
/// unused where they have none).
/// `with_id`: the fifth column is the record's id, which a use that draws from grants needs
/// (RETURNING, which an application's rule on usage_records may refuse: the plain use does
/// without it). The last two are what the user's grants of the feature that count gave and have
/// left (as this statement's snapshot sees them; NULL without `grants`, where the table does not
/// exist yet), for the answer of `consume`, without a statement more.
///
/// `held` is the counter's column of what the period's holds claim (`u.held`, or `0` where the
/// table lacks it, [`Optional::Reservations`]): a use counts only while the usage, the holds
/// and the use fit the limit. The column counts a hold from when it is granted until it ends or
/// a use finds it expired ([`crate::holds`]), so this condition may refuse a use that an expired
/// hold still blocks; the eighth column then says what the counter holds (as this statement's
/// snapshot sees it), and the writer decides again with the expired holds reclaimed.
fn use_sql(
    row_is_current: bool,
    memory: Memory,
    keyed: bool,
    with_id: bool,
    grants: bool,
    held: &str,
) -> String {
    let current = current_sql(row_is_current, "$11");
    let (alerted_percent, alerted_limit) = memory.columns();
    let (key_column, key) = if keyed { (", idempotency_key", ", $10") } else { ("", "") };
    let totals = if grants {
        concat!(
            "LEFT JOIN LATERAL (
        SELECT pg_catalog.sum(g.amount)::pg_catalog.int8 AS granted,
               pg_catalog.sum(g.remaining)::pg_catalog.int8 AS left_over
          FROM quota.grants g
         WHERE g.user_id OPERATOR(pg_catalog.=) $1 AND g.feature_code OPERATOR(pg_catalog.=) $2
           AND ",
            crate::grants::grant_counts!(),
            ") AS g ON true"
        )
    } else {
        "LEFT JOIN (SELECT NULL::pg_catalog.int8 AS granted, NULL::pg_catalog.int8 AS left_over)
            AS g ON true"
    };
    let (id_column, id_value) = crate::placement::identity("usage_records");
    let (returning, id) = if with_id {
        ("\n    RETURNING id", "(SELECT rec.id::pg_catalog.int8 FROM rec)")
    } else {
        ("", "NULL::pg_catalog.int8")
    };
    format!(
        "
WITH current AS MATERIALIZED (
    SELECT {current} AS yes
), counter AS (
    INSERT INTO quota.user_usage AS u
           (user_id, feature_code, period_start, period_end, usage_count, last_reset_at,
            updated_at)
    SELECT $1, $2, $3, $4, $12, pg_catalog.now(), pg_catalog.now()
     WHERE $6::pg_catalog.int8 IS NULL OR $12 <= $6
    ON CONFLICT (user_id, feature_code, period_start) DO UPDATE
       SET usage_count = u.usage_count OPERATOR(pg_catalog.+) EXCLUDED.usage_count,
           period_end = EXCLUDED.period_end,
           updated_at = EXCLUDED.updated_at
     WHERE ($6::pg_catalog.int8 IS NULL
            OR u.usage_count OPERATOR(pg_catalog.+) {held} OPERATOR(pg_catalog.+)
               EXCLUDED.usage_count <= $6)
       AND (SELECT current.yes FROM current)
    RETURNING u.usage_count::pg_catalog.int8, {alerted_percent} AS alerted_percent,
              {alerted_limit} AS alerted_limit, {held}::pg_catalog.int8 AS held
), rec AS (
    INSERT INTO quota.usage_records
           ({id_column}user_id, feature_code, period_start, resource_type, resource_id, amount,
            metadata, created_at{key_column})
    SELECT {id_value}$1, $2, $3, $7, $8, $5, $9, pg_catalog.now(){key} FROM counter
     WHERE (SELECT current.yes FROM current){returning}
)
SELECT counter.usage_count, counter.alerted_percent, (SELECT current.yes FROM current),
       counter.alerted_limit, {id}, g.granted, g.left_over,
       CASE WHEN counter.usage_count IS NOT NULL THEN counter.held
            ELSE (SELECT {held}::pg_catalog.int8 FROM quota.user_usage u
                   WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_start = $3) END
  FROM (SELECT) AS one LEFT JOIN counter ON true {totals}"
    )
}

/// Whether the subscription version a use was judged by (the ctid `tid`, of user $1) still
/// stands, asked once the counter is locked ([`use_sql`]).
fn current_sql(row_is_current: bool, tid: &str) -> String {
    if row_is_current {
        format!("quota.row_is_current('quota.user_subscriptions'::pg_catalog.regclass, {tid})")
    } else {
        format!(
            "EXISTS (SELECT FROM quota.user_subscriptions us
                  WHERE us.ctid OPERATOR(pg_catalog.=) {tid} AND us.user_id = $1
                    FOR NO KEY UPDATE OF us)"
        )
    }
}

/// Deletes the counter that a first use of its period inserted, in [`use_sql`], before it found
/// the subscription version it was judged by no longer standing: the counter is that
/// statement's own insert, which no other transaction can see or change, and no usage record
/// was written for it.
const WITHDRAW_COUNTER: &str = "
DELETE FROM quota.user_usage u
 WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_start = $3";

/// Locks the period's counter for a use that the allowance alone does not cover, creating it
/// empty where missing, and returns its usage, once [`use_sql`]'s `current` says the
/// subscription version the use was judged by ($5) still stands; otherwise the usage is NULL
/// (the second column says false), and a counter this statement inserted is withdrawn as there.
/// The third column is what the period's holds claim (`held`, as in [`use_sql`]).
fn lock_counter_sql(row_is_current: bool, held: &str) -> String {
    let current = current_sql(row_is_current, "$5");
    format!(
        "
WITH current AS MATERIALIZED (
    SELECT {current} AS yes
), counter AS (
    INSERT INTO quota.user_usage AS u
           (user_id, feature_code, period_start, period_end, usage_count, last_reset_at,
            updated_at)
    SELECT $1, $2, $3, $4, 0, pg_catalog.now(), pg_catalog.now()
    ON CONFLICT (user_id, feature_code, period_start) DO UPDATE
       SET period_end = EXCLUDED.period_end
     WHERE (SELECT current.yes FROM current)
    RETURNING u.usage_count::pg_catalog.int8, {held}::pg_catalog.int8 AS held
)
SELECT counter.usage_count, (SELECT current.yes FROM current), counter.held
  FROM (SELECT) AS one LEFT JOIN counter ON true"
    )
}

/// Remembers the highest alert threshold announced for a period and the limit it was judged
/// against ($5; `set_limit` is empty where the table lacks the column, [`HAS_COLUMN`]).
/// Unconditional: the use that just counted holds the counter row's lock until it commits, so
/// what it read in RETURNING is still the row's memory, and after a limit change the new
/// memory may hold a lower threshold than the old one.
fn mark_alerted_sql(set_limit: &str) -> String {
    format!(
        "
UPDATE quota.user_usage u SET alerted_percent = $4{set_limit}
 WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_start = $3"
    )
}

/// What a counter row remembers of the alerts announced in its period.
#[derive(Clone, Copy, PartialEq)]
enum Memory {
    /// alerted_percent and alerted_limit.
    Full,
    /// alerted_percent alone: the library is replaced before ALTER EXTENSION ... UPDATE adds
    /// alerted_limit to the tables of 0.1.0 and 0.2.0, and it must keep counting there
    /// meanwhile. The memory then has no limit and applies to any limit, as in 0.2.0. A backend
    /// keeps what it found until it prepares its statements again.
    PercentOnly,
    /// Nothing: the attached tables lack the columns ([`Optional::Alerts`]); no alert is
    /// announced, for none could be announced only once.
    None,
}

impl Memory {
    /// The values of alerted_percent and alerted_limit as a statement reads them from `u`.
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            Memory::Full => ("u.alerted_percent", "u.alerted_limit"),
            Memory::PercentOnly => ("u.alerted_percent", "NULL::pg_catalog.int8"),
            Memory::None => ("NULL::pg_catalog.int4", "NULL::pg_catalog.int8"),
        }
    }
}

/// Whether a table ($1, a name as `bind` prints it) has a column ($2): the writers and readers
/// work on tables an older version of the SQL created, until ALTER EXTENSION UPDATE adds it.
const HAS_COLUMN: &str = "
SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = pg_catalog.to_regclass($1)
                  AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped)";

/// Whether quota.row_is_current() exists. The library is replaced before ALTER EXTENSION ...
/// UPDATE creates it, with the trigger pg_entitlements_wait_for_uses, and it must keep counting
/// meanwhile: without them, a use locks the subscription row version it read FOR NO KEY UPDATE
/// until it commits, as 0.2.0 did, and every writer of the user waits for it ([`use_sql`]). A
/// backend keeps what it found until it prepares its statements again.
const HAS_ROW_IS_CURRENT: &str =
    "SELECT pg_catalog.to_regprocedure('quota.row_is_current(oid, tid)') IS NOT NULL";

/// The value sources of every feature for a plan and a custom_quotas document; `kind` and
/// `plan_config` as in [`feature_sql`].
fn limits_for_sql(kind: &str, plan_config: &str) -> String {
    format!(
        "
SELECT f.code, ($2 OPERATOR(pg_catalog.->) f.code)::pg_catalog.text, pf.feature_value,
       f.default_limit, {kind}, {plan_config}
  FROM quota.features f
  LEFT JOIN quota.plan_features pf ON pf.plan_id = $1 AND pf.feature_code = f.code
 ORDER BY f.code"
    )
}

const FEATURE_CODES: &str = "SELECT f.code FROM quota.features f ORDER BY f.code";

/// Serializes the uses of one idempotency key: a retry that arrives while the first call is
/// still running waits for it and then sees its record. Taken in its own statement, so that
/// the lookup after it gets a snapshot taken after the wait.
const LOCK_KEY: &str = "
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($2, $1))";

/// The record of a key, locked FOR SHARE until the retry's transaction ends: a refund of it
/// (which locks it FOR UPDATE) in flight is waited for, and a refund that comes later waits
/// for the retry, so a retry never answers from a use that a refund is ending meanwhile. The
/// lock also gives the transaction an id, so the refund lookup after it is a statement of its
/// own with a snapshot taken after the wait.
const RECORD_BY_KEY: &str = "
SELECT r.id::pg_catalog.int8, r.feature_code::pg_catalog.text, r.amount::pg_catalog.int4
  FROM quota.usage_records r
 WHERE r.user_id = $1 AND r.idempotency_key = $2 FOR SHARE OF r";

/// A usage record to refund, locked so that two refunds of it queue.
const RECORD_FOR_REFUND_BY_ID: &str = "
SELECT r.user_id::pg_catalog.int8, r.id::pg_catalog.int8, r.refund_of::pg_catalog.int8,
       r.period_start IS NOT NULL, r.amount::pg_catalog.int4,
       r.created_at::pg_catalog.timestamptz, r.feature_code::pg_catalog.text
  FROM quota.usage_records r
 WHERE r.id = $1 AND ($2::pg_catalog.int8 IS NULL OR r.user_id = $2)
   FOR UPDATE";

const RECORD_FOR_REFUND_BY_KEY: &str = "
SELECT r.user_id::pg_catalog.int8, r.id::pg_catalog.int8, r.refund_of::pg_catalog.int8,
       r.period_start IS NOT NULL, r.amount::pg_catalog.int4,
       r.created_at::pg_catalog.timestamptz, r.feature_code::pg_catalog.text
  FROM quota.usage_records r
 WHERE r.user_id = $1 AND r.idempotency_key = $2 FOR UPDATE";

/// The counter of the period a usage record ($2) counted toward, locked: a refund locks it
/// before the grants the record drew from, in the order a use locks them.
const LOCK_RECORD_COUNTER: &str = "
SELECT FROM quota.user_usage u, quota.usage_records r
 WHERE r.user_id = $1 AND r.id = $2
   AND u.user_id = r.user_id AND u.feature_code = r.feature_code
   AND u.period_start = r.period_start
   FOR UPDATE OF u";

const REFUND_OF: &str = "
SELECT r.id::pg_catalog.int8, -r.amount, r.period_start::pg_catalog.timestamptz
  FROM quota.usage_records r
 WHERE r.user_id = $1 AND r.refund_of = $2";

/// Posts the compensating record ($3 units given back) to the original's period (not the current
/// one) and takes the allowance's share of them ($4: all of them, but for a use that drew from
/// grants, [`crate::grants`]) off that period's counter, only while the counter stays at or
/// above zero; the fourth column says whether it did. A counter lowered outside the ledger (an admin's UPDATE) would
/// otherwise go negative, and an attached application's counter has no type that stops it.
fn refund_sql() -> String {
    let (id_column, id_value) = crate::placement::identity("usage_records");
    format!(
        "
WITH refund AS (
    INSERT INTO quota.usage_records
           ({id_column}user_id, feature_code, period_start, resource_type, resource_id, amount,
            refund_of, created_at)
    SELECT {id_value}o.user_id, o.feature_code, o.period_start, o.resource_type, o.resource_id,
           OPERATOR(pg_catalog.-) $3::pg_catalog.int4, o.id, pg_catalog.now()
      FROM quota.usage_records o
     WHERE o.user_id = $1 AND o.id = $2
    RETURNING id, feature_code, period_start, amount
), counter AS (
    UPDATE quota.user_usage u
       SET usage_count = u.usage_count OPERATOR(pg_catalog.-) $4::pg_catalog.int4,
           updated_at = pg_catalog.now()
      FROM refund
     WHERE u.user_id = $1 AND u.feature_code = refund.feature_code
       AND u.period_start = refund.period_start
       AND u.usage_count OPERATOR(pg_catalog.-) $4::pg_catalog.int4 >= 0
    RETURNING 1
)
SELECT refund.id::pg_catalog.int8, OPERATOR(pg_catalog.-) refund.amount,
       refund.period_start::pg_catalog.timestamptz,
       EXISTS (SELECT FROM counter), refund.feature_code::pg_catalog.text
  FROM refund"
    )
}

/// The counters of one user's feature in their current periods, locked until the transaction
/// ends: an adjustment of that feature takes this first, before the subscription row, so that
/// it waits for the feature's open uses holding nothing a use could wait for (a transaction
/// that consumed and then adjusts locks the subscription row after its counter too). A counter
/// that does not exist yet is not created: a first use that creates it meanwhile is judged by
/// what is committed when it counts (see [`use_sql`]). The same lock as the trigger
/// `pg_entitlements_wait_for_uses` takes, which the adjustment's UPDATE fires as well.
const LOCK_COUNTERS: &str = "
SELECT FROM quota.user_usage u
 WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_end > pg_catalog.now()
 ORDER BY u.period_start FOR UPDATE OF u";

/// The user's subscriptions with status 'active', locked against concurrent changes, with what
/// decides which one counts ([`entitlements_core::subscription`]) and its current custom value.
const ADJUST_LOCK: &str = "
SELECT us.id::pg_catalog.int8, (us.custom_quotas OPERATOR(pg_catalog.->) $2)::pg_catalog.text,
       us.status::pg_catalog.text, us.start_date::pg_catalog.timestamptz,
       us.end_date::pg_catalog.timestamptz, pg_catalog.now(),
       CASE WHEN pg_catalog.jsonb_typeof(us.custom_quotas) OPERATOR(pg_catalog.<>) 'object'
            THEN us.custom_quotas::pg_catalog.text END
  FROM quota.user_subscriptions us
 WHERE us.user_id = $1 AND us.status = 'active'
   FOR NO KEY UPDATE";

/// Sets ($4 not NULL) or removes ($4 NULL) one custom quota, with its audit row.
fn adjust_apply_sql() -> String {
    let (id_column, id_value) = crate::placement::identity("quota_adjustments");
    format!(
        "
WITH changed AS (
    UPDATE quota.user_subscriptions us
       SET custom_quotas = CASE WHEN $4::pg_catalog.int4 IS NULL
               THEN us.custom_quotas OPERATOR(pg_catalog.-) $3::pg_catalog.text
               ELSE coalesce(us.custom_quotas, '{{}}'::pg_catalog.jsonb)
                    OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object($3, $4) END
     WHERE us.user_id = $1 AND us.id = $2
    RETURNING us.id::pg_catalog.int8 AS id
)
INSERT INTO quota.quota_adjustments
       ({id_column}user_id, subscription_id, feature_code, old_value, new_value, reason, actor,
        created_at)
SELECT {id_value}$1, changed.id, $3, $5, $4, $6, $7, pg_catalog.now() FROM changed"
    )
}

/// Locks the user's storage row, if there is one, and reads its quota before
/// [`STORAGE_UPSERT`] changes it (which it skips when the quota is already the one to write). Two single-table statements filtered by user_id, not one with
/// a CTE: Citus routes each to the user's shard, while the one statement it replaces, whose
/// RETURNING read a CTE, failed there with `relation "old" does not exist`.
const STORAGE_LOCK: &str = "
SELECT s.storage_quota_bytes FROM quota.user_storage_usage s WHERE s.user_id = $1 FOR UPDATE";

/// Creates the storage row when missing; touches it only when the quota really changes, and
/// then returns a row.
const STORAGE_UPSERT: &str = "
INSERT INTO quota.user_storage_usage AS s (user_id, storage_quota_bytes, updated_at)
VALUES ($1, $2, pg_catalog.now())
ON CONFLICT (user_id) DO UPDATE
   SET storage_quota_bytes = EXCLUDED.storage_quota_bytes, updated_at = EXCLUDED.updated_at
 WHERE s.storage_quota_bytes IS DISTINCT FROM EXCLUDED.storage_quota_bytes
RETURNING true";

/// Which of the given codes the catalog knows.
/// The end of the current period ($2, $3) on the user's billing-cycle counters already named by
/// its start: a renewal or an upgrade that keeps the anchor moves the end, not the counter.
const CARRY_END: &str = "
UPDATE quota.user_usage u SET period_end = $3
  FROM quota.features f
 WHERE u.user_id = $1 AND u.period_start = $2 AND u.period_end <> $3
   AND f.code = u.feature_code AND f.reset_rule = 'billing_cycle'";

/// The user's billing-cycle counters whose period contains now() but which another start than
/// the current period's ($2) names (the period before a change of the anchor, the cycle or the
/// time zone), locked, as they stand once the uses in flight on them have committed.
/// The fifth column is what their holds claim (`held`, as in [`use_sql`]).
fn carry_lock_sql(memory: Memory, held: &str) -> String {
    let (alerted_percent, _) = memory.columns();
    format!(
        "
SELECT u.feature_code::pg_catalog.text, u.period_start::pg_catalog.timestamptz,
       u.usage_count::pg_catalog.int8, {alerted_percent}, {held}::pg_catalog.int8
  FROM quota.user_usage u JOIN quota.features f ON f.code = u.feature_code
 WHERE u.user_id = $1 AND f.reset_rule = 'billing_cycle'
   AND u.period_start <= pg_catalog.now() AND u.period_end > pg_catalog.now()
   AND u.period_start <> $2
 ORDER BY u.feature_code, u.period_start
   FOR UPDATE OF u"
    )
}

/// Empties the counters [`carry_lock_sql`] locked ($2 features, $3 starts) and ends them at now():
/// what they counted moves to the current period ([`carry_sql`]). They stay, not deleted: a use
/// that read the period before the change and waits for one of them then finds it changed,
/// reads again and counts in the current period, where a deleted counter would let it create
/// a new one under the old start. What their holds claim moves with the holds
/// ([`crate::holds::carry`]), where the counters keep it (`held_to_zero`: `, held = 0`).
fn carry_empty_sql(held_to_zero: &str) -> String {
    format!(
        "
UPDATE quota.user_usage u SET usage_count = 0{held_to_zero}, period_end = pg_catalog.now()
  FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]),
                  pg_catalog.unnest($3::pg_catalog.timestamptz[])) AS m (feature_code, period_start)
 WHERE u.user_id = $1 AND u.feature_code = m.feature_code AND u.period_start = m.period_start"
    )
}

/// Adds what the emptied counters counted ($4 features, $5 amounts, $6 highest alerts
/// announced, one per feature: unused where the counters remember none; $7 what their holds
/// claim, unused where the counters keep no holds) to the current period's counters ($2, $3).
fn carry_sql(memory: Memory, has_held: bool) -> String {
    let (held_column, held_value, held_set) = if has_held {
        (" held,", " m.held,", "\n       held = u.held OPERATOR(pg_catalog.+) EXCLUDED.held,")
    } else {
        ("", "", "")
    };
    let (column, value, set) = match memory {
        Memory::None => ("", "", ""),
        Memory::Full | Memory::PercentOnly => (
            " alerted_percent,",
            " m.alerted,",
            "
       alerted_percent = GREATEST(u.alerted_percent, EXCLUDED.alerted_percent),",
        ),
    };
    format!(
        "
INSERT INTO quota.user_usage AS u
       (user_id, feature_code, period_start, period_end, usage_count,{column}{held_column}
        last_reset_at, updated_at)
SELECT $1, m.feature_code, $2, $3, m.amount,{value}{held_value} pg_catalog.now(), pg_catalog.now()
  FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.int8[]),
                  pg_catalog.unnest($6::pg_catalog.int4[]), pg_catalog.unnest($7::pg_catalog.int8[]))
       AS m (feature_code, amount, alerted, held)
ON CONFLICT (user_id, feature_code, period_start) DO UPDATE
   SET usage_count = u.usage_count OPERATOR(pg_catalog.+) EXCLUDED.usage_count,{set}{held_set}
       period_end = EXCLUDED.period_end,
       updated_at = EXCLUDED.updated_at"
    )
}

/// Moves the usage records of the counters [`CARRY_EMPTY`] emptied ($3 features, $4 old starts) to
/// the current period's start ($2): each (user, feature, period) keeps a counter equal to the sum
/// of its records (quota.verify_ledger()), and a refund finds the counter its use moved to.
const CARRY_RECORDS: &str = "
UPDATE quota.usage_records r SET period_start = $2
  FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]),
                  pg_catalog.unnest($4::pg_catalog.timestamptz[])) AS m (feature_code, period_start)
 WHERE r.user_id = $1 AND r.feature_code = m.feature_code AND r.period_start = m.period_start";

/// With pg_entitlements.carry_usage off: ends at now() the user's billing-cycle counters whose
/// period contains now() but which another start than the current period's ($2) names. They
/// stay as the history of the period the change ended; the new period starts empty.
const CARRY_CLOSE: &str = "
UPDATE quota.user_usage u SET period_end = pg_catalog.now()
  FROM quota.features f
 WHERE u.user_id = $1 AND f.code = u.feature_code AND f.reset_rule = 'billing_cycle'
   AND u.period_start <= pg_catalog.now() AND u.period_end > pg_catalog.now()
   AND u.period_start <> $2";

/// The counters of the current period ($2, $3) of the user's billing-cycle features, created
/// empty where missing; an existing one is left as it is (see [`crate::continuity::hold`]).
/// `metered` is the condition on `f` of the features counted per period: the other kinds have
/// no billing-cycle counter.
fn hold_sql(metered: &str) -> String {
    format!(
        "
INSERT INTO quota.user_usage AS u
       (user_id, feature_code, period_start, period_end, usage_count, last_reset_at, updated_at)
SELECT $1, f.code, $2, $3, 0, pg_catalog.now(), pg_catalog.now()
  FROM quota.features f
 WHERE f.reset_rule = 'billing_cycle' AND {metered}
 ORDER BY f.code
ON CONFLICT (user_id, feature_code, period_start) DO NOTHING"
    )
}

/// The users with a billing-cycle counter whose period contains now(): those whose current
/// period a change of the time zone can move.
const USERS_WITH_CURRENT_USAGE: &str = "
SELECT DISTINCT u.user_id::pg_catalog.int8
  FROM quota.user_usage u JOIN quota.features f ON f.code = u.feature_code
 WHERE f.reset_rule = 'billing_cycle'
   AND u.period_start <= pg_catalog.now() AND u.period_end > pg_catalog.now()";

/// `kind` as in [`feature_sql`] (its first column).
fn known_features_sql(kind: &str) -> String {
    format!(
        "SELECT f.code, {kind} FROM quota.features f WHERE f.code OPERATOR(pg_catalog.=) ANY ($1)"
    )
}

/// The zone and what the tables lack are read through to_jsonb: the columns are missing from a table an older version of
/// the SQL created, until ALTER EXTENSION UPDATE adds it.
const BINDING: &str = "
SELECT st.attached_schema::pg_catalog.text,
       pg_catalog.to_jsonb(st) OPERATOR(pg_catalog.->>) 'attached_time_zone',
       pg_catalog.to_jsonb(st) OPERATOR(pg_catalog.->>) 'attached_lacks'
  FROM quota.settings st";

/// The tables the statements use, and how their times read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// `quota.settings.attached_schema` (`None`: schema quota).
    pub schema: Option<String>,
    /// `quota.settings.attached_time_zone`: the zone in which the attached tables' `timestamp
    /// without time zone` columns hold local times (`None`: they are timestamptz).
    pub local_zone: Option<String>,
    /// `quota.settings.attached_lacks`: the optional features the attached tables were attached
    /// without, whose statements are not prepared.
    pub lacks: Lacks,
}

struct Plans {
    binding: Binding,
    /// Whether quota.grants exists: [`use_sql`] reads it.
    has_grants: bool,
    /// Whether the counters keep what holds claim (`user_usage.held`, [`crate::holds`]).
    has_held: bool,
    /// `binding.local_zone`, for [`Pinned::local_zone`].
    local_zone: Option<CString>,
    feature: OwnedPreparedStatement,
    feature_new_snapshot: OwnedPreparedStatement,
    usage: OwnedPreparedStatement,
    use_: OwnedPreparedStatement,
    use_with_id: OwnedPreparedStatement,
    lock_counter: OwnedPreparedStatement,
    withdraw_counter: OwnedPreparedStatement,
    add_held: Option<OwnedPreparedStatement>,
    lock_one_counter: OwnedPreparedStatement,
    count_down: OwnedPreparedStatement,
    // The statements of the optional features: `None` where the tables lack them.
    lock_key: Option<OwnedPreparedStatement>,
    record_by_key: Option<OwnedPreparedStatement>,
    refund_target_by_id: Option<OwnedPreparedStatement>,
    refund_target_by_key: Option<OwnedPreparedStatement>,
    refund_of: Option<OwnedPreparedStatement>,
    refund: Option<OwnedPreparedStatement>,
    lock_record_counter: Option<OwnedPreparedStatement>,
    lock_counters: OwnedPreparedStatement,
    adjust_lock: OwnedPreparedStatement,
    adjust_apply: OwnedPreparedStatement,
    storage_lock: OwnedPreparedStatement,
    storage_upsert: OwnedPreparedStatement,
    known_features: OwnedPreparedStatement,
    mark_alerted: Option<OwnedPreparedStatement>,
    limits_for: OwnedPreparedStatement,
    feature_codes: OwnedPreparedStatement,
    binding_lookup: OwnedPreparedStatement,
    carry_end: OwnedPreparedStatement,
    carry_lock: OwnedPreparedStatement,
    carry_empty: OwnedPreparedStatement,
    carry: OwnedPreparedStatement,
    carry_records: OwnedPreparedStatement,
    carry_close: OwnedPreparedStatement,
    users_with_current_usage: OwnedPreparedStatement,
    hold: OwnedPreparedStatement,
}

thread_local! {
    // A backend is single-threaded; the plans live as long as it does. After quota.attach()
    // or quota.detach() a backend prepares a new set and leaks the old one (a few hundred kB
    // at most, once per attach): freeing it would need every &'static handed out to be gone,
    // for a saving that does not matter.
    static PLANS: crate::spi::Kept<Plans> = const { crate::spi::Kept::new() };
}

fn oid(o: BuiltinOid) -> PgOid {
    PgOid::BuiltIn(o)
}

fn plans(client: &SpiClient<'_>) -> Result<&'static Plans, Error> {
    match PLANS.with(crate::spi::Kept::get) {
        Some(p) => Ok(p),
        None => prepare_plans(client, Binding::default()),
    }
}

/// Prepares every statement for the tables of `binding` and keeps them for this backend.
fn prepare_plans(client: &SpiClient<'_>, binding: Binding) -> Result<&'static Plans, Error> {
    use BuiltinOid::*;
    let schema = binding.schema.as_deref();
    let prepare = |sql: &str, args: &[PgOid], mutating: bool| {
        crate::spi::keep(client, &bind(sql, schema), args, mutating)
    };
    let (int4, int8, text, tstz) = (oid(INT4OID), oid(INT8OID), oid(TEXTOID), oid(TIMESTAMPTZOID));
    let use_args =
        [int8, text, tstz, tstz, int4, int8, text, int8, oid(JSONBOID), text, oid(TIDOID), int4];
    let has_column = |table: &str, column: &str| -> Result<bool, Error> {
        let args: [DatumWithOid; 2] = [bind(table, schema).as_str().into(), column.into()];
        crate::spi::ask(client, HAS_COLUMN, &args)
    };
    let has_alerted_limit = has_column("quota.user_usage", "alerted_limit")?;
    let has_row_is_current = crate::spi::ask(client, HAS_ROW_IS_CURRENT, &[])?;
    // The grants are missing from the SQL of an older version until ALTER EXTENSION UPDATE
    // creates them ([`crate::grants`]).
    let has_grants = crate::grants::exist(client)?;
    let zone_change = if has_column("quota.settings", "time_zone_changed_at")? {
        "st.previous_time_zone, st.time_zone_changed_at"
    } else {
        "NULL::pg_catalog.text, NULL::pg_catalog.timestamptz"
    };
    let local_zone = if has_column("quota.settings", "attached_time_zone")? {
        "st.attached_time_zone"
    } else {
        "NULL::pg_catalog.text"
    };
    let lacks = if has_column("quota.settings", "attached_lacks")? {
        "pg_catalog.to_jsonb(st.attached_lacks)::pg_catalog.text"
    } else {
        "NULL::pg_catalog.text"
    };
    // The catalog's and the plan feature's soft limit and rollover, NULL where the table lacks
    // the column (an attached plan_features, an installation before ALTER EXTENSION UPDATE).
    let mut extra = Vec::new();
    for column in ["overage_limit", "rollover_max", "rollover_periods"] {
        for (table, alias) in [("quota.features", "f"), ("quota.plan_features", "pf")] {
            extra.push(if has_column(table, column)? {
                format!("{alias}.{column}")
            } else {
                "NULL::pg_catalog.int4".to_owned()
            });
        }
    }
    // In the order of read::column: both soft limits, then the catalog's rollover, then the
    // plan's.
    let granted = if has_column("quota.features", "granted")? { "f.granted" } else { "true" };
    let plan_rule = if has_column("quota.plan_features", "reset_rule")? {
        "pf.reset_rule::pg_catalog.text"
    } else {
        "NULL::pg_catalog.text"
    };
    // A JSON null in the catalog or a plan is no value, as the copy reads it (to_jsonb cannot
    // tell it from SQL NULL); in custom_quotas it is the user's value.
    let has_kind = has_column("quota.features", "kind")?;
    let kind = if has_kind {
        "f.kind, CASE WHEN pg_catalog.jsonb_typeof(f.default_value) OPERATOR(pg_catalog.<>) 'null'
                      THEN f.default_value::pg_catalog.text END"
    } else {
        "'metered'::pg_catalog.text, NULL::pg_catalog.text"
    };
    // The catalog's and the plan's further limits ([`entitlements_core::windows`]), NULL where
    // the table lacks the column (an attached plan_features without it,
    // Optional::WindowLimits).
    let mut limits = Vec::new();
    for (table, alias) in [("quota.features", "f"), ("quota.plan_features", "pf")] {
        limits.push(if has_column(table, "window_limits")? {
            format!(
                "CASE WHEN pg_catalog.jsonb_typeof({alias}.window_limits) OPERATOR(pg_catalog.<>) 'null'
                      THEN {alias}.window_limits::pg_catalog.text END"
            )
        } else {
            "NULL::pg_catalog.text".to_owned()
        });
    }
    let window_limits = limits.join(", ");
    // An attached plan_features without it gives config features no value of their own
    // (Optional::ConfigValues): the catalog's default_value applies.
    let plan_config = if has_column("quota.plan_features", "config_value")? {
        "CASE WHEN pg_catalog.jsonb_typeof(pf.config_value) OPERATOR(pg_catalog.<>) 'null'
              THEN pf.config_value::pg_catalog.text END"
    } else {
        "NULL::pg_catalog.text"
    };
    let overage = [&extra[0], &extra[1], &extra[2], &extra[4], &extra[3], &extra[5]]
        .map(String::as_str)
        .join(", ")
        + ", "
        + granted
        + ", "
        + plan_rule
        + ", "
        + kind
        + ", "
        + plan_config
        + ", "
        + &window_limits;
    let feature = feature_sql(&format!("{zone_change}, {local_zone}, {lacks}"), &overage);
    let has = |f: Optional| binding.lacks.has(f);
    // Missing from the tables of an older version until ALTER EXTENSION UPDATE adds it.
    let has_held = has(Optional::Reservations) && has_column("quota.user_usage", "held")?;
    let held = if has_held { "u.held" } else { "0" };
    let memory = match (has(Optional::Alerts), has_alerted_limit) {
        (false, _) => Memory::None,
        (true, true) => Memory::Full,
        (true, false) => Memory::PercentOnly,
    };
    let set_limit = if memory == Memory::Full { ", alerted_limit = $5" } else { "" };
    let prepare_if = |f: &[Optional], sql: &str, args: &[PgOid], mutating: bool| {
        if f.iter().all(|f| has(*f)) {
            prepare(sql, args, mutating).map(Some)
        } else {
            Ok(None)
        }
    };
    let (keys, refunds, alerts) =
        ([Optional::IdempotencyKeys], [Optional::Refunds], [Optional::Alerts]);
    let plans = Plans {
        local_zone: binding.local_zone.as_deref().and_then(|z| CString::new(z).ok()),
        binding: binding.clone(),
        has_grants,
        has_held,
        feature: prepare(&feature, &[int8, text], false)?,
        // Prepared as mutating, so that it runs read-write, which takes a new snapshot.
        feature_new_snapshot: prepare(&feature, &[int8, text], true)?,
        usage: prepare(&usage_sql(held), &[int8, text, tstz], false)?,
        use_: prepare(
            &use_sql(
                has_row_is_current,
                memory,
                has(Optional::IdempotencyKeys),
                false,
                has_grants,
                held,
            ),
            &use_args,
            true,
        )?,
        use_with_id: prepare(
            &use_sql(
                has_row_is_current,
                memory,
                has(Optional::IdempotencyKeys),
                true,
                has_grants,
                held,
            ),
            &use_args,
            true,
        )?,
        lock_counter: prepare(
            &lock_counter_sql(has_row_is_current, held),
            &[int8, text, tstz, tstz, oid(TIDOID)],
            true,
        )?,
        withdraw_counter: prepare(WITHDRAW_COUNTER, &[int8, text, tstz], true)?,
        lock_one_counter: prepare(&lock_one_counter_sql(held), &[int8, text, tstz], true)?,
        count_down: prepare(COUNT_DOWN, &[int8, text, tstz, int8], true)?,
        add_held: if has_held {
            Some(prepare(ADD_HELD, &[int8, text, tstz, int8], true)?)
        } else {
            None
        },
        lock_key: prepare_if(&keys, LOCK_KEY, &[int8, text], true)?,
        record_by_key: prepare_if(&keys, RECORD_BY_KEY, &[int8, text], true)?,
        refund_target_by_id: prepare_if(&refunds, RECORD_FOR_REFUND_BY_ID, &[int8, int8], true)?,
        refund_target_by_key: prepare_if(
            &[Optional::Refunds, Optional::IdempotencyKeys],
            RECORD_FOR_REFUND_BY_KEY,
            &[int8, text],
            true,
        )?,
        refund_of: prepare_if(&refunds, REFUND_OF, &[int8, int8], false)?,
        refund: prepare_if(&refunds, &refund_sql(), &[int8, int8, int4, int4], true)?,
        lock_record_counter: prepare_if(&refunds, LOCK_RECORD_COUNTER, &[int8, int8], true)?,
        lock_counters: prepare(LOCK_COUNTERS, &[int8, text], true)?,
        adjust_lock: prepare(ADJUST_LOCK, &[int8, text], true)?,
        adjust_apply: prepare(
            &adjust_apply_sql(),
            &[int8, int8, text, int4, int4, text, text],
            true,
        )?,
        storage_lock: prepare(STORAGE_LOCK, &[int8], true)?,
        storage_upsert: prepare(STORAGE_UPSERT, &[int8, int8], true)?,
        known_features: prepare(&known_features_sql(kind), &[oid(TEXTARRAYOID)], false)?,
        mark_alerted: prepare_if(
            &alerts,
            &mark_alerted_sql(set_limit),
            &[int8, text, tstz, int4, int8],
            true,
        )?,
        limits_for: prepare(&limits_for_sql(kind, plan_config), &[int8, oid(JSONBOID)], false)?,
        feature_codes: prepare(FEATURE_CODES, &[], false)?,
        binding_lookup: prepare(BINDING, &[], false)?,
        carry_end: prepare(CARRY_END, &[int8, tstz, tstz], true)?,
        carry_lock: prepare(&carry_lock_sql(memory, held), &[int8, tstz], true)?,
        carry_empty: prepare(
            &carry_empty_sql(if has_held { ", held = 0" } else { "" }),
            &[int8, oid(TEXTARRAYOID), oid(TIMESTAMPTZARRAYOID)],
            true,
        )?,
        carry: prepare(
            &carry_sql(memory, has_held),
            &[
                int8,
                tstz,
                tstz,
                oid(TEXTARRAYOID),
                oid(INT8ARRAYOID),
                oid(INT4ARRAYOID),
                oid(INT8ARRAYOID),
            ],
            true,
        )?,
        carry_records: prepare(
            CARRY_RECORDS,
            &[int8, tstz, oid(TEXTARRAYOID), oid(TIMESTAMPTZARRAYOID)],
            true,
        )?,
        carry_close: prepare(CARRY_CLOSE, &[int8, tstz], true)?,
        users_with_current_usage: prepare(USERS_WITH_CURRENT_USAGE, &[], false)?,
        hold: prepare(
            &hold_sql(if has_kind { "f.kind = 'metered'" } else { "true" }),
            &[int8, tstz, tstz],
            true,
        )?,
    };
    Ok(PLANS.with(|kept| kept.set(plans)))
}

/// Makes sure the statements use the tables of `binding` (quota.settings as a read found it),
/// preparing them again when quota.attach() or detach() changed it.
pub fn bind_to(client: &SpiClient<'_>, binding: &Binding) -> Result<(), Error> {
    if plans(client)?.binding != *binding {
        prepare_plans(client, binding.clone())?;
    }
    Ok(())
}

/// [`bind_to`] the binding quota.settings names now, for operations that do not start with a
/// read of the feature.
pub fn ensure_binding(client: &SpiClient<'_>) -> Result<(), Error> {
    let plans = plans(client)?;
    let table =
        client.select(&plans.binding_lookup, Some(1), &[]).map_err(failed("binding lookup"))?;
    let binding = match table.into_iter().next() {
        Some(row) => Binding {
            schema: col(&row, 1)?,
            local_zone: col(&row, 2)?,
            lacks: Lacks::from_json(col::<String>(&row, 3)?.as_deref()),
        },
        None => Binding::default(),
    };
    bind_to(client, &binding)
}

/// The zone of the attached tables' local times (quota.settings.attached_time_zone) now.
pub fn local_zone(client: &SpiClient<'_>) -> Result<Option<String>, Error> {
    ensure_binding(client)?;
    Ok(plans(client)?.binding.local_zone.clone())
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(
    row: &SpiHeapTupleData<'_>,
    n: usize,
) -> Result<Option<T>, Error> {
    crate::spi::column(row, n, "")
}

/// A value the statement guarantees (a NOT NULL column, a row `FROM (SELECT)` always yields).
pub(crate) fn must<T>(v: Option<T>, what: &'static str) -> Result<T, Error> {
    v.ok_or(Error::Statement { what, detail: "a value that cannot be NULL was NULL".into() })
}

/// The statement of `read::statement_feature_row`, and the binding its plan was prepared for.
pub fn select_feature<'c>(
    client: &'c SpiClient<'_>,
    user_id: i64,
    feature: Option<&str>,
    snapshot: Snapshot,
) -> Result<(SpiTupleTable<'c>, Binding), Error> {
    let plans = plans(client)?;
    let args: [DatumWithOid; 2] =
        [user_id.into(), feature.map_or_else(DatumWithOid::null::<&str>, Into::into)];
    let _zone = Pinned::local_zone(plans);
    let table = match snapshot {
        Snapshot::Current => client.select(&plans.feature, None, &args),
        Snapshot::New => client.select(&plans.feature_new_snapshot, None, &args),
    }
    .map_err(failed("the quota lookup"))?;
    Ok((table, plans.binding.clone()))
}

/// The counter statement of `read::usage_and_grants`.
pub fn select_usage<'c>(
    client: &'c SpiClient<'_>,
    user_id: i64,
    feature: &str,
    period_start: TimestampWithTimeZone,
) -> Result<SpiTupleTable<'c>, Error> {
    let args: [DatumWithOid; 3] = [user_id.into(), feature.into(), period_start.into()];
    let plans = plans(client)?;
    let _zone = Pinned::local_zone(plans);
    client.select(&plans.usage, Some(1), &args).map_err(failed("usage lookup"))
}

/// Runs a statement that writes (prepared as mutating, so `select` runs it read-write). When the statements are bound to an application's tables, it
/// runs as the owner of those tables, in a security-restricted operation (as REFRESH
/// MATERIALIZED VIEW runs as the view's owner): the application's triggers, rules, defaults and
/// constraints on those tables then run with the rights of the role that owns them and wrote
/// them, never with the rights of the extension's owner, whom the SECURITY DEFINER writers run
/// as. On the extension's own tables, which only a superuser can alter, nothing changes.
fn write<R>(
    client: &SpiClient<'_>,
    statement: impl FnOnce(&'static Plans) -> Result<R, Error>,
) -> Result<R, Error> {
    let plans = plans(client)?;
    let Some(schema) = plans.binding.schema.as_deref() else {
        return statement(plans);
    };
    let Some(owner) = bound_owner(schema) else {
        return Err(Error::Statement {
            what: "the attached tables",
            detail: format!("{schema}.user_subscriptions does not exist; run quota.detach()"),
        });
    };
    let _as_owner = AsOwner::switch(owner);
    let _zone = Pinned::local_zone(plans);
    statement(plans)
}

/// The owner of `schema`.user_subscriptions, from the catalog caches: no statement on a
/// writer's path, and always the owner of the moment (an `ALTER TABLE ... OWNER TO` counts at
/// once). `None` when there is no such table.
fn bound_owner(schema: &str) -> Option<pg_sys::Oid> {
    owner_of(schema, c"user_subscriptions")
}

/// The owner of `schema`.`table`, from the catalog caches; `None` when there is no such table.
fn owner_of(schema: &str, table: &CStr) -> Option<pg_sys::Oid> {
    let schema = std::ffi::CString::new(schema).ok()?;
    // SAFETY: lookups in the catalog caches by NUL-terminated names and an oid; the pg_class
    // tuple is read while the cache holds it and released right after.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(schema.as_ptr(), true);
        if namespace == pg_sys::InvalidOid {
            return None;
        }
        let table = pg_sys::get_relname_relid(table.as_ptr(), namespace);
        if table == pg_sys::InvalidOid {
            return None;
        }
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(table),
        );
        if tuple.is_null() {
            return None;
        }
        let owner = (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple)).relowner;
        pg_sys::ReleaseSysCache(tuple);
        Some(owner)
    }
}

/// The current user switched to a table owner until dropped.
struct AsOwner {
    user: pg_sys::Oid,
    context: i32,
}

impl AsOwner {
    fn switch(owner: pg_sys::Oid) -> AsOwner {
        let (mut user, mut context) = (pg_sys::InvalidOid, 0);
        // SAFETY: reads and sets the backend's current user and security context, as
        // fmgr_security_definer does; restored by drop, and by the abort of the
        // (sub)transaction when an ERROR unwinds through.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                owner,
                context
                    | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                    | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
        }
        AsOwner { user, context }
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        // SAFETY: restores what switch() read; setting two backend variables is safe at any
        // point, also while unwinding.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs statements that keep usage continuous on behalf of whoever changed a subscription or
/// the settings (triggers): as the owner of the tables they write (the attached application's,
/// or the extension's own), in a security-restricted operation, with search_path pinned to
/// `pg_catalog, pg_temp`. The role that made the change may hold no right on the counters and
/// the ledger (quota_admin does not), and its search_path must not choose the operators of
/// statements that run with the owner's rights.
fn upkeep<R>(
    client: &SpiClient<'_>,
    statement: impl FnOnce(&'static Plans) -> Result<R, Error>,
) -> Result<R, Error> {
    let plans = plans(client)?;
    let schema = plans.binding.schema.as_deref().unwrap_or("quota");
    let Some(owner) = bound_owner(schema) else {
        return Err(Error::Statement {
            what: "the attached tables",
            detail: format!("{schema}.user_subscriptions does not exist; run quota.detach()"),
        });
    };
    let _as_owner = AsOwner::switch(owner);
    let _path = Pinned::search_path();
    let _zone = Pinned::local_zone(plans);
    statement(plans)
}

/// A setting changed until dropped, as a function's `SET` clause changes it
/// (fmgr_security_definer): a new GUC nesting level, undone on drop, and by the abort of the
/// (sub)transaction when an ERROR unwinds through.
struct Pinned {
    level: i32,
}

impl Pinned {
    fn set(name: &CStr, value: &CStr) -> Pinned {
        // SAFETY: the GUC calls fmgr_security_definer makes for a SET clause, with
        // NUL-terminated strings; an invalid value raises an ERROR.
        unsafe {
            let level = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            Pinned { level }
        }
    }

    /// search_path pinned to `pg_catalog, pg_temp`.
    fn search_path() -> Pinned {
        Pinned::set(c"search_path", c"pg_catalog, pg_temp")
    }

    /// TimeZone set to the zone of the attached tables' local times, when they have one: the
    /// statements then read and write `timestamp without time zone` columns through
    /// PostgreSQL's own casts, which take that zone (a read casts to timestamptz, a write of a
    /// timestamptz into such a column and a comparison with one cast the other way).
    fn local_zone(plans: &Plans) -> Option<Pinned> {
        let zone = plans.local_zone.as_ref()?;
        Some(Pinned::set(c"TimeZone", zone))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The (sub)transaction's abort restores it; no call into PostgreSQL while unwinding.
            return;
        }
        // SAFETY: pops the nesting level set() pushed, restoring the previous value.
        unsafe { pg_sys::AtEOXact_GUC(true, self.level) };
    }
}

/// Keeps the user's usage continuous into the current period `[start, end)` of the billing
/// cycle: counters of the period a change ended move there with their records (`carry`), or,
/// with `carry` false, end at now() and stay behind.
pub fn carry_usage(
    client: &SpiClient<'_>,
    user_id: i64,
    start: TimestampWithTimeZone,
    end: TimestampWithTimeZone,
    carry: bool,
) -> Result<(), Error> {
    upkeep(client, |plans| {
        let args: [DatumWithOid; 3] = [user_id.into(), start.into(), end.into()];
        client.select(&plans.carry_end, None, &args).map_err(failed("carrying usage"))?;
        if !carry {
            let args: [DatumWithOid; 2] = [user_id.into(), start.into()];
            client.select(&plans.carry_close, None, &args).map_err(failed("ending usage"))?;
            return Ok(());
        }
        let args: [DatumWithOid; 2] = [user_id.into(), start.into()];
        let (mut features, mut starts) = (Vec::<String>::new(), Vec::new());
        // Per feature: what its counters of ended periods add up to, the highest alert they
        // announced, and what their holds claim.
        let (mut codes, mut sums, mut alerts, mut helds) =
            (Vec::<String>::new(), Vec::<i64>::new(), Vec::new(), Vec::<i64>::new());
        for row in
            client.select(&plans.carry_lock, None, &args).map_err(failed("carrying usage"))?
        {
            let feature = must(col::<String>(&row, 1)?, "feature_code")?;
            starts.push(must(col::<TimestampWithTimeZone>(&row, 2)?, "period_start")?);
            let amount = col::<i64>(&row, 3)?.unwrap_or(0);
            let alerted = col::<i32>(&row, 4)?.unwrap_or(0);
            let held = col::<i64>(&row, 5)?.unwrap_or(0);
            match (codes.last(), sums.last_mut(), alerts.last_mut(), helds.last_mut()) {
                (Some(code), Some(sum), Some(alert), Some(h)) if *code == feature => {
                    *sum = i64::saturating_add(*sum, amount);
                    *alert = i32::max(*alert, alerted);
                    *h = i64::saturating_add(*h, held);
                }
                _ => {
                    codes.push(feature.clone());
                    sums.push(amount);
                    alerts.push(alerted);
                    helds.push(held);
                }
            }
            features.push(feature);
        }
        if features.is_empty() {
            return Ok(());
        }
        let args: [DatumWithOid; 3] =
            [user_id.into(), features.clone().into(), starts.clone().into()];
        client.select(&plans.carry_empty, None, &args).map_err(failed("carrying usage"))?;
        let holds_move = plans.has_held && helds.iter().any(|h| *h > 0);
        let args: [DatumWithOid; 7] = [
            user_id.into(),
            start.into(),
            end.into(),
            codes.into(),
            sums.into(),
            alerts.into(),
            helds.into(),
        ];
        client.select(&plans.carry, None, &args).map_err(failed("carrying usage"))?;
        let args: [DatumWithOid; 4] =
            [user_id.into(), start.into(), features.clone().into(), starts.clone().into()];
        client
            .select(&plans.carry_records, None, &args)
            .map_err(failed("carrying usage records"))?;
        if holds_move {
            // quota.reservations is the extension's own table, whoever owns the bound ones.
            let Some(owner) = owner_of("quota", c"reservations") else {
                return Err(Error::Statement {
                    what: "carrying holds",
                    detail: "quota.reservations does not exist".into(),
                });
            };
            let _as_owner = AsOwner::switch(owner);
            crate::holds::carry(client, user_id, (start, end), features, starts)?;
        }
        Ok(())
    })
}

/// Creates the counters of the current period `[start, end)` of the user's billing-cycle
/// features where missing, empty, as the tables' owner.
pub fn hold_counters(
    client: &SpiClient<'_>,
    user_id: i64,
    start: TimestampWithTimeZone,
    end: TimestampWithTimeZone,
) -> Result<(), Error> {
    upkeep(client, |plans| {
        let args: [DatumWithOid; 3] = [user_id.into(), start.into(), end.into()];
        client.select(&plans.hold, None, &args).map_err(failed("holding the counters"))?;
        Ok(())
    })
}

/// The users whose current billing-cycle usage a change of the time zone can move.
pub fn users_with_current_usage(client: &SpiClient<'_>) -> Result<Vec<i64>, Error> {
    client
        .select(&plans(client)?.users_with_current_usage, None, &[])
        .map_err(failed("counter lookup"))?
        .map(|row| must(col::<i64>(&row, 1)?, "user_id"))
        .collect()
}

/// One use, as `record_feature_usage` and `consume` receive it.
pub struct Use<'a> {
    pub subject: &'a Subject,
    pub period_start: TimestampWithTimeZone,
    pub period_end: TimestampWithTimeZone,
    /// The use's amount, in its usage record.
    pub amount: i32,
    /// What the period's counter moves by: the amount, less what grants cover.
    pub counted: i32,
    /// Enforced limit on the counter; `None` counts without enforcing (unlimited, or a use
    /// whose share of the allowance was decided under the counter's lock).
    pub limit: Option<i64>,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<i64>,
    pub metadata: Option<RawJsonb>,
    pub idempotency_key: Option<&'a str>,
}

/// What became of a use.
pub enum Applied {
    /// Counted: the new counter, what the counter row remembers of the period's alerts
    /// (`None`: the tables keep no such memory, and no alert is announced) and the id of the
    /// usage record, when asked for, and what the grants that count gave and have left as the
    /// statement saw them, before this use (`None` where they do not exist yet).
    Counted {
        usage: i64,
        announced: Option<Announced>,
        record_id: Option<i64>,
        totals: Option<Totals>,
        /// What the counter's holds claim, expired ones not yet reclaimed included.
        held: i64,
    },
    /// The limit refused it; nothing was written. What the grants that count gave and have
    /// left, and what the counter's holds claim, as for `Counted` (as the statement's snapshot
    /// saw them): whether the use may draw from the grants, or from units an expired hold
    /// claimed.
    Refused { totals: Option<Totals>, held: i64 },
    /// The subscription changed since it was read; nothing was written, or what was is
    /// withdrawn (see [`use_sql`]).
    Stale,
}

/// Adds the use to its period's counter and the ledger, unless the subscription version it was
/// judged by (`read`) no longer stands ([`Applied::Stale`]). `with_id`: the usage record's id
/// is returned.
pub fn apply_use(
    client: &mut SpiClient<'_>,
    u: Use<'_>,
    read: pg_sys::ItemPointerData,
    with_id: bool,
) -> Result<Applied, Error> {
    let (subject, period_start) = (u.subject, u.period_start);
    let args: [DatumWithOid; 12] = [
        subject.user_id.into(),
        subject.feature.as_str().into(),
        period_start.into(),
        u.period_end.into(),
        u.amount.into(),
        u.limit.map_or_else(DatumWithOid::null::<i64>, Into::into),
        u.resource_type.map_or_else(DatumWithOid::null::<&str>, Into::into),
        u.resource_id.map_or_else(DatumWithOid::null::<i64>, Into::into),
        u.metadata.map_or_else(DatumWithOid::null::<RawJsonb>, Into::into),
        u.idempotency_key.map_or_else(DatumWithOid::null::<&str>, Into::into),
        read.into(),
        u.counted.into(),
    ];
    let table = write(client, |plans| {
        let schema = plans.binding.schema.as_deref().unwrap_or("quota");
        // An attached application's usage_count may be integer: past 2147483647 its UPDATE
        // raises 22003 "integer out of range", which names neither the user nor the column.
        // Raised again with its SQLSTATE, the user, the feature and the fix.
        PgTryBuilder::new(AssertUnwindSafe(|| {
            let plan = if with_id { &plans.use_with_id } else { &plans.use_ };
            client.select(plan, Some(1), &args).map_err(failed("recording usage"))
        }))
        .catch_when(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, |caught| {
            let detail = match &caught {
                CaughtError::PostgresError(e) | CaughtError::ErrorReport(e) => e.message(),
                CaughtError::RustPanic { ereport, .. } => ereport.message(),
            };
            crate::error::raise(Error::CounterOutOfRange {
                subject: u.subject.clone(),
                amount: i64::from(u.amount),
                schema: schema.to_owned(),
                detail: detail.to_owned(),
            })
        })
        .execute()
    })?;
    let (usage, current, announced, record_id, totals, held) = {
        let Some(row) = table.into_iter().next() else {
            return Err(Error::Statement { what: "recording usage", detail: "no row".into() });
        };
        let announced = col::<i32>(&row, 2)?
            .map(|percent| Ok::<_, Error>(Announced { percent, limit: col(&row, 4)? }))
            .transpose()?;
        // No grant that counts: the sums are NULL.
        let totals = plans(client)?.has_grants.then_some(Totals {
            granted: col::<i64>(&row, 6)?.unwrap_or(0),
            left: col::<i64>(&row, 7)?.unwrap_or(0),
        });
        (
            col::<i64>(&row, 1)?,
            must(col::<bool>(&row, 3)?, "current")?,
            announced,
            col(&row, 5)?,
            totals,
            col::<i64>(&row, 8)?.unwrap_or(0),
        )
    };
    Ok(match (usage, current) {
        (Some(usage), true) => Applied::Counted { usage, announced, record_id, totals, held },
        (Some(_), false) => {
            withdraw_counter(client, subject, period_start)?;
            Applied::Stale
        }
        (None, false) => Applied::Stale,
        (None, true) => Applied::Refused { totals, held },
    })
}

/// Locks (or creates, empty) the counter of the period `[start, end)` for a use judged by the
/// subscription version `read`, and returns its usage; `None` when that version no longer
/// stands, and nothing stays written. With the usage: what the counter's holds claim.
pub fn lock_counter(
    client: &SpiClient<'_>,
    subject: &Subject,
    start: TimestampWithTimeZone,
    end: TimestampWithTimeZone,
    read: pg_sys::ItemPointerData,
) -> Result<Option<(i64, i64)>, Error> {
    let args: [DatumWithOid; 5] = [
        subject.user_id.into(),
        subject.feature.as_str().into(),
        start.into(),
        end.into(),
        read.into(),
    ];
    let table = write(client, |plans| {
        client.select(&plans.lock_counter, Some(1), &args).map_err(failed("locking the counter"))
    })?;
    let Some(row) = table.into_iter().next() else {
        return Err(Error::Statement { what: "locking the counter", detail: "no row".into() });
    };
    let (usage, current) = (col::<i64>(&row, 1)?, must(col::<bool>(&row, 2)?, "current")?);
    if let (Some(_), false) = (usage, current) {
        withdraw_counter(client, subject, start)?;
    }
    let held = col::<i64>(&row, 3)?.unwrap_or(0);
    Ok(if current { usage.map(|u| (u, held)) } else { None })
}

/// Counts a running count down by `n` units (> 0) on its locked counter ([`COUNT_DOWN`]);
/// false when the count holds less.
pub fn count_down(
    client: &SpiClient<'_>,
    subject: &Subject,
    period_start: TimestampWithTimeZone,
    n: i64,
) -> Result<bool, Error> {
    let args: [DatumWithOid; 4] =
        [subject.user_id.into(), subject.feature.as_str().into(), period_start.into(), n.into()];
    let table = write(client, |plans| {
        client.select(&plans.count_down, Some(1), &args).map_err(failed("releasing usage"))
    })?;
    Ok(table.into_iter().next().is_some())
}

/// A period's counter as [`lock_one_counter`] finds it.
pub struct CounterRow {
    pub usage: i64,
    pub held: i64,
    pub period_end: TimestampWithTimeZone,
}

/// Locks one period's counter, as it is: `None` where it does not exist.
pub fn lock_one_counter(
    client: &SpiClient<'_>,
    subject: &Subject,
    start: TimestampWithTimeZone,
) -> Result<Option<CounterRow>, Error> {
    let args: [DatumWithOid; 3] =
        [subject.user_id.into(), subject.feature.as_str().into(), start.into()];
    let table = write(client, |plans| {
        client
            .select(&plans.lock_one_counter, Some(1), &args)
            .map_err(failed("locking the counter"))
    })?;
    table
        .into_iter()
        .next()
        .map(|row| {
            Ok(CounterRow {
                usage: col::<i64>(&row, 1)?.unwrap_or(0),
                held: col::<i64>(&row, 2)?.unwrap_or(0),
                period_end: must(col(&row, 3)?, "user_usage.period_end")?,
            })
        })
        .transpose()
}

/// The schema of the tables the statements use.
pub fn bound_schema(client: &SpiClient<'_>) -> Result<String, Error> {
    Ok(plans(client)?.binding.schema.clone().unwrap_or_else(|| "quota".into()))
}

/// Whether the counters keep what holds claim: `reserve` needs it.
pub fn has_held(client: &SpiClient<'_>) -> Result<bool, Error> {
    Ok(plans(client)?.has_held)
}

/// Adds `delta` (< 0: takes away) to what the holds of a period's locked counter claim.
pub fn add_held(
    client: &SpiClient<'_>,
    subject: &Subject,
    period_start: TimestampWithTimeZone,
    delta: i64,
) -> Result<(), Error> {
    if delta == 0 {
        return Ok(());
    }
    let args: [DatumWithOid; 4] = [
        subject.user_id.into(),
        subject.feature.as_str().into(),
        period_start.into(),
        delta.into(),
    ];
    write(client, |plans| {
        let plan = optional(plans, &plans.add_held, Optional::Reservations, "reserve")?;
        client.select(plan, None, &args).map_err(failed("holding units")).map(|_| ())
    })
}

/// Deletes the counter a statement of this use inserted before it found the subscription
/// version it was judged by no longer standing ([`WITHDRAW_COUNTER`]).
fn withdraw_counter(
    client: &SpiClient<'_>,
    subject: &Subject,
    period_start: TimestampWithTimeZone,
) -> Result<(), Error> {
    let key: [DatumWithOid; 3] =
        [subject.user_id.into(), subject.feature.as_str().into(), period_start.into()];
    write(client, |plans| {
        client.select(&plans.withdraw_counter, None, &key).map_err(failed("withdrawing a counter"))
    })
    .map(|_| ())
}

/// Remembers what was announced for the period ([`entitlements_core::alerts::crossed`]).
pub fn mark_alerted(
    client: &mut SpiClient<'_>,
    subject: &Subject,
    period_start: TimestampWithTimeZone,
    announced: Announced,
) -> Result<(), Error> {
    let args: [DatumWithOid; 5] = [
        subject.user_id.into(),
        subject.feature.as_str().into(),
        period_start.into(),
        announced.percent.into(),
        announced.limit.map_or_else(DatumWithOid::null::<i64>, Into::into),
    ];
    write(client, |plans| match &plans.mark_alerted {
        Some(plan) => {
            client.select(plan, None, &args).map_err(failed("marking an alert")).map(|_| ())
        }
        // Nothing to remember it in: apply_use announced no memory, so nothing was crossed.
        None => Ok(()),
    })
}

/// The statement of an optional feature, or the error that says the tables lack it.
fn optional<'p>(
    plans: &'p Plans,
    statement: &'p Option<OwnedPreparedStatement>,
    feature: Optional,
    function: &'static str,
) -> Result<&'p OwnedPreparedStatement, Error> {
    statement.as_ref().ok_or_else(|| Error::NotAttachedFor {
        feature,
        schema: plans.binding.schema.clone().unwrap_or_else(|| "quota".into()),
        function,
    })
}

/// One feature's limit sources for a plan and a custom_quotas document.
pub struct FeatureSources {
    pub code: String,
    pub kind: Kind,
    pub custom: Option<String>,
    pub plan: Option<i32>,
    pub plan_config: Option<String>,
    pub default: Option<i32>,
    pub default_config: Option<String>,
}

/// The limit sources of every catalog feature for `plan_id` and `custom_quotas`.
pub fn limits_for(
    client: &SpiClient<'_>,
    plan_id: i64,
    custom: Option<RawJsonb>,
) -> Result<Vec<FeatureSources>, Error> {
    let args: [DatumWithOid; 2] =
        [plan_id.into(), custom.map_or_else(DatumWithOid::null::<RawJsonb>, Into::into)];
    client
        .select(&plans(client)?.limits_for, None, &args)
        .map_err(failed("limit lookup"))?
        .map(|row| {
            let kind: String = must(col(&row, 5)?, "kind")?;
            Ok(FeatureSources {
                code: must(col(&row, 1)?, "code")?,
                kind: kind.parse()?,
                custom: col(&row, 2)?,
                plan: col(&row, 3)?,
                default: col(&row, 4)?,
                default_config: col(&row, 6)?,
                plan_config: col(&row, 7)?,
            })
        })
        .collect()
}

/// Every feature code of the catalog, in order.
pub fn feature_codes(client: &SpiClient<'_>) -> Result<Vec<String>, Error> {
    client
        .select(&plans(client)?.feature_codes, None, &[])
        .map_err(failed("feature list"))?
        .map(|row| must(col::<String>(&row, 1)?, "code"))
        .collect()
}

/// A usage record as an idempotency key finds it.
pub struct KeyedRecord {
    pub id: i64,
    pub feature: String,
    pub amount: i32,
}

/// Waits for any other transaction using the same key, then returns the key's record.
/// `function` is the caller, for the error when the tables have no idempotency keys.
pub fn record_by_key(
    client: &mut SpiClient<'_>,
    function: &'static str,
    user_id: i64,
    key: &str,
) -> Result<Option<KeyedRecord>, Error> {
    let args: [DatumWithOid; 2] = [user_id.into(), key.into()];
    let plans = plans(client)?;
    let keys = Optional::IdempotencyKeys;
    let lock = optional(plans, &plans.lock_key, keys, function)?;
    let lookup = optional(plans, &plans.record_by_key, keys, function)?;
    client.update(lock, None, &args).map_err(failed("idempotency lock"))?;
    let table = client.update(lookup, Some(1), &args).map_err(failed("idempotency lookup"))?;
    table
        .into_iter()
        .next()
        .map(|row| {
            Ok(KeyedRecord {
                id: must(col(&row, 1)?, "id")?,
                feature: must(col(&row, 2)?, "feature_code")?,
                amount: must(col(&row, 3)?, "amount")?,
            })
        })
        .transpose()
}

/// How a refund names the record it refunds.
#[derive(Clone, Copy)]
pub enum RecordRef<'a> {
    /// By its id, of a user when one is named.
    Id {
        user_id: Option<i64>,
        id: i64,
    },
    Key {
        user_id: i64,
        key: &'a str,
    },
}

/// A record to refund, locked.
pub struct RefundTarget {
    pub user_id: i64,
    pub id: i64,
    pub refund_of: Option<i64>,
    /// Whether the record names the period it counted toward.
    pub has_period: bool,
    pub amount: Option<i32>,
    /// When the use was made, and of which feature: the windows that counted it.
    pub made: Option<(TimestampWithTimeZone, String)>,
}

/// The record to refund, locked.
pub fn lock_refund_target(
    client: &mut SpiClient<'_>,
    target: &RecordRef<'_>,
) -> Result<Option<RefundTarget>, Error> {
    const FUNCTION: &str = "refund_usage";
    let plans = plans(client)?;
    let by_id = optional(plans, &plans.refund_target_by_id, Optional::Refunds, FUNCTION)?;
    // An attached application's created_at without time zone holds its local time.
    let _zone = Pinned::local_zone(plans);
    let table = match *target {
        RecordRef::Id { user_id, id } => {
            client.update(by_id, Some(1), &[id.into(), user_id.into()])
        }
        RecordRef::Key { user_id, key } => {
            let keys = Optional::IdempotencyKeys;
            let by_key = optional(plans, &plans.refund_target_by_key, keys, FUNCTION)?;
            client.update(by_key, Some(1), &[user_id.into(), key.into()])
        }
    }
    .map_err(failed("usage record lookup"))?;
    table
        .into_iter()
        .next()
        .map(|row| {
            Ok(RefundTarget {
                user_id: must(col(&row, 1)?, "user_id")?,
                id: must(col(&row, 2)?, "id")?,
                refund_of: col(&row, 3)?,
                has_period: col(&row, 4)?.unwrap_or(false),
                amount: col(&row, 5)?,
                made: col::<TimestampWithTimeZone>(&row, 6)?.zip(col::<String>(&row, 7)?),
            })
        })
        .transpose()
}

/// A refund: its record id, the amount given back and the period it went to.
pub struct Refund {
    pub id: i64,
    pub amount: i32,
    pub period_start: TimestampWithTimeZone,
}

fn refund_row(row: &SpiHeapTupleData<'_>) -> Result<Refund, Error> {
    Ok(Refund {
        id: must(col(row, 1)?, "id")?,
        amount: must(col(row, 2)?, "amount")?,
        period_start: must(col(row, 3)?, "period_start")?,
    })
}

/// The refund already posted for record `id`, if any (none where the tables have no refunds).
pub fn existing_refund(
    client: &SpiClient<'_>,
    user_id: i64,
    id: i64,
) -> Result<Option<Refund>, Error> {
    let args: [DatumWithOid; 2] = [user_id.into(), id.into()];
    let plans = plans(client)?;
    let Some(refund_of) = &plans.refund_of else {
        return Ok(None);
    };
    let _zone = Pinned::local_zone(plans);
    let table = client.select(refund_of, Some(1), &args).map_err(failed("refund lookup"))?;
    table.into_iter().next().map(|row| refund_row(&row)).transpose()
}

/// Locks the counter record `id` counted toward ([`LOCK_RECORD_COUNTER`]).
pub fn lock_record_counter(client: &mut SpiClient<'_>, user_id: i64, id: i64) -> Result<(), Error> {
    let args: [DatumWithOid; 2] = [user_id.into(), id.into()];
    write(client, |plans| {
        let lock = optional(plans, &plans.lock_record_counter, Optional::Refunds, "refund_usage")?;
        client.select(lock, None, &args).map_err(failed("locking the counter")).map(|_| ())
    })
}

/// Posts the refund of record `id`: `given` units back, of which `counted` come off its period's
/// counter. Refuses when the counter is below that: the ERROR then undoes the refund record
/// too. With the refund: the record's feature.
pub fn post_refund(
    client: &mut SpiClient<'_>,
    user_id: i64,
    id: i64,
    given: i32,
    counted: i32,
) -> Result<(Refund, String), Error> {
    let args: [DatumWithOid; 4] = [user_id.into(), id.into(), given.into(), counted.into()];
    let table = write(client, |plans| {
        let refund = optional(plans, &plans.refund, Optional::Refunds, "refund_usage")?;
        client.select(refund, Some(1), &args).map_err(failed("refund"))
    })?;
    let Some(row) = table.into_iter().next() else {
        return Err(Error::Statement { what: "refund", detail: "no row".into() });
    };
    let refund = refund_row(&row)?;
    let feature: String = must(col(&row, 5)?, "feature_code")?;
    if !col::<bool>(&row, 4)?.unwrap_or(false) {
        return Err(Error::RefundBelowZero {
            subject: Subject { user_id, feature },
            record_id: id,
            amount: i64::from(counted),
        });
    }
    Ok((refund, feature))
}

/// The subscription an adjustment changes, locked.
pub struct LockedSubscription {
    pub id: i64,
    /// `custom_quotas -> feature` as JSON text, `None` when the key is absent.
    pub custom: Option<String>,
    /// The whole document, when it is not a JSON object.
    pub not_object: Option<String>,
}

/// Locks the counters of `feature` of `user_id` in their current periods ([`LOCK_COUNTERS`]).
pub fn lock_counters(client: &mut SpiClient<'_>, user_id: i64, feature: &str) -> Result<(), Error> {
    let args: [DatumWithOid; 2] = [user_id.into(), feature.into()];
    write(client, |plans| {
        client.select(&plans.lock_counters, None, &args).map_err(failed("locking the counters"))
    })
    .map(|_| ())
}

/// Locks the user's subscriptions with status 'active' and returns the one that counts
/// ([`entitlements_core::subscription`]), `None` without one.
pub fn lock_subscription(
    client: &mut SpiClient<'_>,
    user_id: i64,
    feature: &str,
) -> Result<Option<LockedSubscription>, Error> {
    let args: [DatumWithOid; 2] = [user_id.into(), feature.into()];
    let plans = plans(client)?;
    let _zone = Pinned::local_zone(plans);
    let plan = &plans.adjust_lock;
    let rows: Vec<SpiHeapTupleData<'_>> =
        client.update(plan, None, &args).map_err(failed("subscription lock"))?.collect();
    struct Row {
        id: Option<i64>,
        status: Option<String>,
        start: Option<i64>,
        end: Option<i64>,
    }
    let mut now = 0;
    let mut found = Vec::with_capacity(rows.len());
    for row in &rows {
        let time = |n| col::<TimestampWithTimeZone>(row, n).map(|t| t.map(crate::time::micros));
        now = time(6)?.unwrap_or(now);
        found.push(Row { id: col(row, 1)?, status: col(row, 3)?, start: time(4)?, end: time(5)? });
    }
    let candidates = found.iter().map(|r| Candidate {
        status: r.status.as_deref(),
        start: r.start,
        end: r.end,
        id: r.id,
    });
    let Some(i) = subscription::active_index(candidates, now) else {
        return Ok(None);
    };
    let row = &rows[i];
    Ok(Some(LockedSubscription {
        id: must(found[i].id, "user_subscriptions.id")?,
        custom: col(row, 2)?,
        not_object: col(row, 7)?,
    }))
}

/// One audited change of a custom quota.
pub struct Adjustment<'a> {
    pub subject: &'a Subject,
    pub subscription_id: i64,
    pub old: Option<i32>,
    /// `None` removes the key.
    pub new: Option<i32>,
    pub reason: &'a str,
    pub actor: &'a str,
}

pub fn apply_adjustment(client: &mut SpiClient<'_>, a: Adjustment<'_>) -> Result<(), Error> {
    let args: [DatumWithOid; 7] = [
        a.subject.user_id.into(),
        a.subscription_id.into(),
        a.subject.feature.as_str().into(),
        a.new.map_or_else(DatumWithOid::null::<i32>, Into::into),
        a.old.map_or_else(DatumWithOid::null::<i32>, Into::into),
        a.reason.into(),
        a.actor.into(),
    ];
    write(client, |plans| {
        client.select(&plans.adjust_apply, None, &args).map_err(failed("adjusting the quota"))
    })
    .map(|_| ())
}

/// Sets `user_storage_usage.storage_quota_bytes`, creating the row when missing. Returns
/// `Some(previous)` when the quota changed (`previous` is `None` for a new row).
pub fn upsert_storage_quota(
    client: &mut SpiClient<'_>,
    user_id: i64,
    bytes: i64,
) -> Result<Option<Option<i64>>, Error> {
    let lock: [DatumWithOid; 1] = [user_id.into()];
    let args: [DatumWithOid; 2] = [user_id.into(), bytes.into()];
    write(client, |plans| {
        let previous = client
            .select(&plans.storage_lock, None, &lock)
            .map_err(failed("locking the storage quota"))?
            .next()
            .map(|row| col::<i64>(&row, 1))
            .transpose()?
            .flatten();
        // The row, locked, already holds the quota: nothing to write, one statement in all.
        if previous == Some(bytes) {
            return Ok(None);
        }
        let changed = !client
            .select(&plans.storage_upsert, None, &args)
            .map_err(failed("syncing the storage quota"))?
            .is_empty();
        Ok(changed.then_some(previous))
    })
}

/// The subset of `codes` that `quota.features` knows.
pub fn known_features(
    client: &SpiClient<'_>,
    codes: Vec<String>,
) -> Result<Vec<(String, Kind)>, Error> {
    let args: [DatumWithOid; 1] = [codes.into()];
    client
        .select(&plans(client)?.known_features, None, &args)
        .map_err(failed("feature lookup"))?
        .map(|row| {
            let kind: String = must(col(&row, 2)?, "kind")?;
            Ok((must(col::<String>(&row, 1)?, "code")?, kind.parse()?))
        })
        .collect()
}
