//! The SQL the extension runs, each statement prepared once per backend and kept
//! (`SPI_keepplan`), so a call pays no parse or plan. Every name is schema-qualified: a call
//! delegated to another node or run under a hostile search_path resolves the same objects.

use crate::cache;
use crate::jsonb::RawJsonb;
use entitlements_core::{Error, Subject};
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::BuiltinOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};
use pgrx::{pg_sys, PgOid};
use std::cell::Cell;

/// Everything a quota function needs about one user and feature, in one round trip: the
/// catalog row, the active subscription (the one with status 'active', start_date <= now() <
/// end_date, latest end_date first), its plan's value for the feature and the settings.
/// Always one row; f.code is NULL when the catalog lacks the feature (or none was asked for).
/// `lock` is appended to the subscription lookup (see [`feature_row_for_use`]).
fn feature_sql(lock: &str) -> String {
    format!(
        "
SELECT f.code, f.reset_rule, f.unit, f.default_limit,
       s.id::pg_catalog.int8, s.start_date, s.end_date, s.quota_reset_anchor,
       coalesce(s.quota_cycle_type, p.quota_cycle_type, p.billing_cycle)::pg_catalog.text,
       (s.custom_quotas OPERATOR(pg_catalog.->) f.code)::pg_catalog.text,
       pf.feature_value, pf.feature_unit::pg_catalog.text,
       coalesce((SELECT st.time_zone FROM quota.settings st), 'UTC'),
       pg_catalog.now(), f.alert_thresholds, f.name,
       (SELECT st.attached_schema::pg_catalog.text FROM quota.settings st), s.ctid
  FROM (SELECT) AS one
  LEFT JOIN quota.features f ON f.code = $2
  LEFT JOIN LATERAL (
        SELECT us.ctid, us.id, us.plan_id, us.start_date, us.end_date, us.quota_reset_anchor,
               us.quota_cycle_type, us.custom_quotas
          FROM quota.user_subscriptions us
         WHERE us.user_id = $1 AND us.status = 'active'
           AND us.start_date <= pg_catalog.now() AND us.end_date > pg_catalog.now()
         ORDER BY us.end_date DESC, us.id DESC
         LIMIT 1 {lock}) s ON true
  LEFT JOIN quota.subscription_plans p ON p.id = s.plan_id
  LEFT JOIN quota.plan_features pf ON pf.plan_id = s.plan_id AND pf.feature_code = f.code"
    )
}

const USAGE: &str = "
SELECT u.usage_count::pg_catalog.int8 FROM quota.user_usage u
 WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_start = $3";

/// Adds to the period's counter and writes the usage record, in one statement. With a limit
/// ($6), the counter moves only while `usage_count + amount <= limit`, and the record is written
/// only when it moved: a refused use writes nothing.
///
/// Why a conditional upsert and not advisory locks or SELECT ... FOR UPDATE: concurrent uses of
/// one counter queue on its row lock, and under READ COMMITTED the waiting upsert re-evaluates
/// its WHERE against the version the previous one committed, so the check and the increment
/// are one atomic step with no extra lock and no extra round trip; a first use inserts through
/// speculative insertion, which sends concurrent inserts of the same key to the update branch.
/// now() goes in the VALUES and the update takes EXCLUDED's values: an ON CONFLICT DO UPDATE on
/// a distributed table may not call a non-immutable function.
///
/// `sub` is the subscription lock. After [`feature_row_for_use`] it is already held and `sub`
/// is one empty row. After a read without a lock ([`feature_row`]), it locks the version read
/// ($11, its ctid) FOR NO KEY UPDATE: the lock waits for a concurrent change of the row and
/// then follows it to the newest version, which no longer stands at $11, so `sub` comes back
/// empty, nothing is written and the last column says false. The limit the use was judged by is
/// then stale, and the writer reads again under the lock. Locking last keeps one user's writers
/// queued for this statement and their commit only, not for their whole call.
fn use_sql(late_lock: bool) -> String {
    let sub = if late_lock {
        "SELECT FROM quota.user_subscriptions us
     WHERE us.ctid OPERATOR(pg_catalog.=) $11 AND us.user_id = $1 FOR NO KEY UPDATE OF us"
    } else {
        "SELECT"
    };
    format!(
        "
WITH sub AS MATERIALIZED (
    {sub}
), counter AS (
    INSERT INTO quota.user_usage AS u
           (user_id, feature_code, period_start, period_end, usage_count, last_reset_at,
            updated_at)
    SELECT $1, $2, $3, $4, $5, pg_catalog.now(), pg_catalog.now() FROM sub
     WHERE $6::pg_catalog.int8 IS NULL OR $5 <= $6
    ON CONFLICT (user_id, feature_code, period_start) DO UPDATE
       SET usage_count = u.usage_count OPERATOR(pg_catalog.+) EXCLUDED.usage_count,
           period_end = EXCLUDED.period_end,
           updated_at = EXCLUDED.updated_at
     WHERE $6::pg_catalog.int8 IS NULL
        OR u.usage_count OPERATOR(pg_catalog.+) EXCLUDED.usage_count <= $6
    RETURNING u.usage_count::pg_catalog.int8, u.alerted_percent
), rec AS (
    INSERT INTO quota.usage_records
           (user_id, feature_code, period_start, resource_type, resource_id, amount, metadata,
            idempotency_key, created_at)
    SELECT $1, $2, $3, $7, $8, $5, $9, $10, pg_catalog.now() FROM counter
)
SELECT counter.usage_count, counter.alerted_percent, EXISTS (SELECT FROM sub)
  FROM (SELECT) AS one LEFT JOIN counter ON true"
    )
}

/// Remembers the highest alert threshold announced for a period.
const MARK_ALERTED: &str = "
UPDATE quota.user_usage u SET alerted_percent = $4
 WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_start = $3 AND u.alerted_percent < $4";

/// Transactional: delivered at commit, dropped on rollback.
const NOTIFY: &str = "SELECT pg_catalog.pg_notify($1, $2)";

/// The limit sources of every feature for a plan and a custom_quotas document.
const LIMITS_FOR: &str = "
SELECT f.code, ($2 OPERATOR(pg_catalog.->) f.code)::pg_catalog.text, pf.feature_value,
       f.default_limit
  FROM quota.features f
  LEFT JOIN quota.plan_features pf ON pf.plan_id = $1 AND pf.feature_code = f.code
 ORDER BY f.code";

const FEATURE_CODES: &str = "SELECT f.code FROM quota.features f ORDER BY f.code";

/// Serializes the uses of one idempotency key: a retry that arrives while the first call is
/// still running waits for it and then sees its record. Taken in its own statement, so that
/// the lookup after it gets a snapshot taken after the wait.
const LOCK_KEY: &str = "
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($2, $1))";

const RECORD_BY_KEY: &str = "
SELECT r.id::pg_catalog.int8, r.feature_code::pg_catalog.text, r.amount::pg_catalog.int4
  FROM quota.usage_records r
 WHERE r.user_id = $1 AND r.idempotency_key = $2";

/// A usage record to refund, locked so that two refunds of it queue.
const RECORD_FOR_REFUND_BY_ID: &str = "
SELECT r.user_id::pg_catalog.int8, r.id::pg_catalog.int8, r.refund_of::pg_catalog.int8
  FROM quota.usage_records r WHERE r.id = $1 FOR UPDATE";

const RECORD_FOR_REFUND_BY_KEY: &str = "
SELECT r.user_id::pg_catalog.int8, r.id::pg_catalog.int8, r.refund_of::pg_catalog.int8
  FROM quota.usage_records r
 WHERE r.user_id = $1 AND r.idempotency_key = $2 FOR UPDATE";

const REFUND_OF: &str = "
SELECT r.id::pg_catalog.int8, -r.amount, r.period_start FROM quota.usage_records r
 WHERE r.user_id = $1 AND r.refund_of = $2";

/// Posts the compensating record to the original's period (not the current one) and takes the
/// amount off that period's counter. The counter's type (`quota.usage_total`, never negative)
/// stops it from ever going negative.
const REFUND: &str = "
WITH refund AS (
    INSERT INTO quota.usage_records
           (user_id, feature_code, period_start, resource_type, resource_id, amount, refund_of,
            created_at)
    SELECT o.user_id, o.feature_code, o.period_start, o.resource_type, o.resource_id,
           OPERATOR(pg_catalog.-) o.amount, o.id, pg_catalog.now()
      FROM quota.usage_records o
     WHERE o.user_id = $1 AND o.id = $2
    RETURNING id, feature_code, period_start, amount
), counter AS (
    UPDATE quota.user_usage u
       SET usage_count = u.usage_count OPERATOR(pg_catalog.+) refund.amount,
           updated_at = pg_catalog.now()
      FROM refund
     WHERE u.user_id = $1 AND u.feature_code = refund.feature_code
       AND u.period_start = refund.period_start
)
SELECT refund.id::pg_catalog.int8, OPERATOR(pg_catalog.-) refund.amount, refund.period_start
  FROM refund";

/// The active subscription, locked against concurrent changes, and its current custom value.
const ADJUST_LOCK: &str = "
SELECT us.id::pg_catalog.int8, (us.custom_quotas OPERATOR(pg_catalog.->) $2)::pg_catalog.text
  FROM quota.user_subscriptions us
 WHERE us.user_id = $1 AND us.status = 'active'
   AND us.start_date <= pg_catalog.now() AND us.end_date > pg_catalog.now()
 ORDER BY us.end_date DESC, us.id DESC
 LIMIT 1
   FOR NO KEY UPDATE";

/// Sets ($4 not NULL) or removes ($4 NULL) one custom quota, with its audit row.
const ADJUST_APPLY: &str = "
WITH changed AS (
    UPDATE quota.user_subscriptions us
       SET custom_quotas = CASE WHEN $4::pg_catalog.int4 IS NULL
               THEN us.custom_quotas OPERATOR(pg_catalog.-) $3::pg_catalog.text
               ELSE coalesce(us.custom_quotas, '{}'::pg_catalog.jsonb)
                    OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object($3, $4) END
     WHERE us.user_id = $1 AND us.id = $2
    RETURNING us.id::pg_catalog.int8 AS id
)
INSERT INTO quota.quota_adjustments
       (user_id, subscription_id, feature_code, old_value, new_value, reason, actor, created_at)
SELECT $1, changed.id, $3, $5, $4, $6, $7, pg_catalog.now() FROM changed";

/// Creates the storage row when missing; touches it only when the quota really changes, and
/// then returns the previous quota (NULL for a new row). `old` is read (and locked) by the
/// INSERT's source before the row changes: read only from RETURNING, the CTE would run after
/// the update and no longer see the row.
const STORAGE_UPSERT: &str = "
WITH old AS MATERIALIZED (
    SELECT s.storage_quota_bytes FROM quota.user_storage_usage s WHERE s.user_id = $1 FOR UPDATE
)
INSERT INTO quota.user_storage_usage AS s (user_id, storage_quota_bytes, updated_at)
SELECT $1, $2, pg_catalog.now() FROM (SELECT pg_catalog.count(*) FROM old) AS read_first
ON CONFLICT (user_id) DO UPDATE
   SET storage_quota_bytes = EXCLUDED.storage_quota_bytes, updated_at = EXCLUDED.updated_at
 WHERE s.storage_quota_bytes IS DISTINCT FROM EXCLUDED.storage_quota_bytes
RETURNING (SELECT old.storage_quota_bytes FROM old)";

/// Which of the given codes the catalog knows.
const KNOWN_FEATURES: &str = "
SELECT f.code FROM quota.features f WHERE f.code OPERATOR(pg_catalog.=) ANY ($1)";

/// The application tables `quota.attach(schema)` can bind the statements to, in place of the
/// extension's own. The catalog (features), settings and the audit stay in schema quota.
const ATTACHABLE: [&str; 6] = [
    "user_subscriptions",
    "subscription_plans",
    "plan_features",
    "user_usage",
    "usage_records",
    "user_storage_usage",
];

/// `sql` with the attachable tables of schema quota replaced by those of `schema`.
pub fn bind(sql: &str, schema: Option<&str>) -> String {
    let Some(schema) = schema else {
        return sql.to_owned();
    };
    entitlements_core::binding::retarget(sql, &pgrx::spi::quote_identifier(schema), &ATTACHABLE)
}

const BINDING: &str = "SELECT st.attached_schema::pg_catalog.text FROM quota.settings st";

struct Plans {
    /// The schema the statements are bound to (`None`: schema quota).
    binding: Option<String>,
    feature: OwnedPreparedStatement,
    feature_for_use: OwnedPreparedStatement,
    usage: OwnedPreparedStatement,
    use_: OwnedPreparedStatement,
    use_late_lock: OwnedPreparedStatement,
    lock_key: OwnedPreparedStatement,
    record_by_key: OwnedPreparedStatement,
    refund_target_by_id: OwnedPreparedStatement,
    refund_target_by_key: OwnedPreparedStatement,
    refund_of: OwnedPreparedStatement,
    refund: OwnedPreparedStatement,
    adjust_lock: OwnedPreparedStatement,
    adjust_apply: OwnedPreparedStatement,
    storage_upsert: OwnedPreparedStatement,
    known_features: OwnedPreparedStatement,
    mark_alerted: OwnedPreparedStatement,
    notify: OwnedPreparedStatement,
    limits_for: OwnedPreparedStatement,
    feature_codes: OwnedPreparedStatement,
    binding_lookup: OwnedPreparedStatement,
}

thread_local! {
    // A backend is single-threaded; the plans live as long as it does. After quota.attach()
    // or quota.detach() a backend prepares a new set and leaks the old one (18 plans, a few
    // hundred kB at most, once per attach): freeing it would need every &'static handed out to
    // be gone, for a saving that does not matter.
    static PLANS: Cell<Option<&'static Plans>> = const { Cell::new(None) };
}

fn oid(o: BuiltinOid) -> PgOid {
    PgOid::BuiltIn(o)
}

fn plans(client: &SpiClient<'_>) -> &'static Plans {
    match PLANS.get() {
        Some(p) => p,
        None => prepare_plans(client, None),
    }
}

/// Prepares every statement for the tables of `binding` and keeps them for this backend.
fn prepare_plans(client: &SpiClient<'_>, binding: Option<String>) -> &'static Plans {
    use BuiltinOid::*;
    let schema = binding.as_deref();
    let prepare = |sql: &str, args: &[PgOid], mutating: bool| {
        let sql = bind(sql, schema);
        let stmt =
            if mutating { client.prepare_mut(&sql, args) } else { client.prepare(&sql, args) };
        stmt.unwrap_or_else(|e| panic!("preparing a pg_entitlements statement failed: {e}")).keep()
    };
    let (int4, int8, text, tstz) = (oid(INT4OID), oid(INT8OID), oid(TEXTOID), oid(TIMESTAMPTZOID));
    let use_args =
        [int8, text, tstz, tstz, int4, int8, text, int8, oid(JSONBOID), text, oid(TIDOID)];
    let plans: &'static Plans = Box::leak(Box::new(Plans {
        binding: binding.clone(),
        feature: prepare(&feature_sql(""), &[int8, text], false),
        // Writers lock the subscription row (FOR NO KEY UPDATE) until they commit, here or in
        // use_late_lock: a change of its limit (adjust_quota, any UPDATE of custom_quotas,
        // plan_id, ...) waits for the use, and a use that meets such a change uncommitted waits
        // for it and then reads the new limit. Not FOR SHARE: a transaction that consumes and
        // then adjusts would have to upgrade its lock, and two such transactions deadlocked
        // (isolation spec consume_vs_adjust); one lock mode for every writer cannot.
        feature_for_use: prepare(&feature_sql("FOR NO KEY UPDATE OF us"), &[int8, text], true),
        usage: prepare(USAGE, &[int8, text, tstz], false),
        use_: prepare(&use_sql(false), &use_args[..10], true),
        use_late_lock: prepare(&use_sql(true), &use_args, true),
        lock_key: prepare(LOCK_KEY, &[int8, text], true),
        record_by_key: prepare(RECORD_BY_KEY, &[int8, text], false),
        refund_target_by_id: prepare(RECORD_FOR_REFUND_BY_ID, &[int8], true),
        refund_target_by_key: prepare(RECORD_FOR_REFUND_BY_KEY, &[int8, text], true),
        refund_of: prepare(REFUND_OF, &[int8, int8], false),
        refund: prepare(REFUND, &[int8, int8], true),
        adjust_lock: prepare(ADJUST_LOCK, &[int8, text], true),
        adjust_apply: prepare(ADJUST_APPLY, &[int8, int8, text, int4, int4, text, text], true),
        storage_upsert: prepare(STORAGE_UPSERT, &[int8, int8], true),
        known_features: prepare(KNOWN_FEATURES, &[oid(TEXTARRAYOID)], false),
        mark_alerted: prepare(MARK_ALERTED, &[int8, text, tstz, int4], true),
        notify: prepare(NOTIFY, &[text, text], true),
        limits_for: prepare(LIMITS_FOR, &[int8, oid(JSONBOID)], false),
        feature_codes: prepare(FEATURE_CODES, &[], false),
        binding_lookup: prepare(BINDING, &[], false),
    }));
    PLANS.set(Some(plans));
    plans
}

/// The active subscription as [`FEATURE`] returns it.
pub struct SubscriptionRow {
    /// The row version read (`ctid`): what a writer locks, unless it changed meanwhile.
    pub tid: pg_sys::ItemPointerData,
    pub start: TimestampWithTimeZone,
    pub end: TimestampWithTimeZone,
    pub anchor: Option<TimestampWithTimeZone>,
    pub cycle: String,
    /// `custom_quotas -> feature` as JSON text, when the key is present.
    pub custom_value: Option<String>,
    pub plan_value: Option<i32>,
    pub plan_unit: Option<String>,
}

/// A feature's row of `quota.features`.
#[derive(Clone)]
pub struct Catalog {
    pub name: String,
    pub reset_rule: String,
    pub unit: String,
    pub default_limit: Option<i32>,
}

pub struct FeatureRow {
    /// `None` only when no feature was asked for.
    pub catalog: Option<Catalog>,
    pub subscription: Option<SubscriptionRow>,
    pub time_zone: String,
    pub now: TimestampWithTimeZone,
    /// `quota.features.alert_thresholds` (empty without a named feature).
    pub alert_thresholds: Vec<i32>,
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(row: &SpiHeapTupleData<'_>, n: usize) -> Option<T> {
    row.get::<T>(n).unwrap_or_else(|e| panic!("column {n} of a pg_entitlements query: {e}"))
}

fn must<T>(v: Option<T>, what: &str) -> T {
    v.unwrap_or_else(|| panic!("{what} is NOT NULL in the schema"))
}

fn parse_feature_row(
    table: pgrx::spi::SpiTupleTable<'_>,
    user_id: i64,
    feature: Option<&str>,
) -> Result<(FeatureRow, Option<String>), Error> {
    let row = table.into_iter().next().expect("FROM (SELECT) yields one row");
    let binding = col::<String>(&row, 17);
    let catalog = col::<String>(&row, 1).map(|_| Catalog {
        name: must(col(&row, 16), "name"),
        reset_rule: must(col(&row, 2), "reset_rule"),
        unit: must(col(&row, 3), "unit"),
        default_limit: col(&row, 4),
    });
    if let (Some(feature), None) = (feature, &catalog) {
        return Err(Error::UnknownFeature { user_id: Some(user_id), feature: feature.to_owned() });
    }
    let subscription = col::<i64>(&row, 5).map(|_id| SubscriptionRow {
        tid: must(col(&row, 18), "ctid"),
        start: must(col(&row, 6), "start_date"),
        end: must(col(&row, 7), "end_date"),
        anchor: col(&row, 8),
        cycle: must(col(&row, 9), "billing_cycle"),
        custom_value: col(&row, 10),
        plan_value: col(&row, 11),
        plan_unit: col(&row, 12),
    });
    let alert_thresholds =
        col::<Vec<Option<i32>>>(&row, 15).unwrap_or_default().into_iter().flatten().collect();
    let row = FeatureRow {
        catalog,
        subscription,
        time_zone: must(col(&row, 13), "time_zone"),
        now: must(col(&row, 14), "now()"),
        alert_thresholds,
    };
    Ok((row, binding))
}

fn feature_args<'a>(user_id: i64, feature: Option<&'a str>) -> [DatumWithOid<'a>; 2] {
    [user_id.into(), feature.map_or_else(DatumWithOid::null::<&str>, Into::into)]
}

/// Reads the feature (if one is named), active subscription and settings.
/// `Err(UnknownFeature)` when the catalog lacks the named feature. Without a statement where
/// [`cache::direct`] allows it; otherwise read-only SPI. Either way it runs on a hot standby
/// and takes no transaction id.
///
/// The row also says which tables the statements must use: when quota.attach() or detach()
/// changed that since this backend prepared them, it prepares them again and reads again, so
/// a binding change costs nothing on the calls that follow it.
pub fn feature_row(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: Option<&str>,
) -> Result<FeatureRow, Error> {
    if let Some(config) = cache::direct(client).ok().filter(|c| c.can_read_subscriptions()) {
        // The statements that may still run (usage, when that table cannot be probed) must
        // use the same tables.
        if config.binding != plans(client).binding {
            prepare_plans(client, config.binding.clone());
        }
        return config.feature_row(user_id, feature);
    }
    loop {
        let plans = plans(client);
        let table = client
            .select(&plans.feature, Some(1), &feature_args(user_id, feature))
            .unwrap_or_else(|e| panic!("quota lookup failed: {e}"));
        let (row, binding) = parse_feature_row(table, user_id, feature)?;
        if binding == plans.binding {
            return Ok(row);
        }
        prepare_plans(client, binding);
    }
}

/// [`feature_row`] for a writer whose unlocked read went stale ([`Applied::Stale`]): the active
/// subscription read by a statement that locks it first, until the end of the transaction, so
/// that its limit cannot change under the use.
pub fn feature_row_for_use(
    client: &mut SpiClient<'_>,
    user_id: i64,
    feature: &str,
) -> Result<FeatureRow, Error> {
    loop {
        let plans = plans(client);
        let table = client
            .update(&plans.feature_for_use, Some(1), &feature_args(user_id, Some(feature)))
            .unwrap_or_else(|e| panic!("quota lookup failed: {e}"));
        let (row, binding) = parse_feature_row(table, user_id, Some(feature))?;
        if binding == plans.binding {
            return Ok(row);
        }
        prepare_plans(client, binding);
    }
}

/// Makes sure the statements use the tables quota.settings names, for operations that do not
/// start with [`feature_row`].
pub fn ensure_binding(client: &SpiClient<'_>) {
    let plans = plans(client);
    let binding: Option<String> =
        first(client.select(&plans.binding_lookup, Some(1), &[]), "binding lookup");
    if binding != plans.binding {
        prepare_plans(client, binding);
    }
}

/// The first column of the first row, if any.
fn first<T: pgrx::FromDatum + pgrx::IntoDatum>(
    result: pgrx::spi::SpiResult<pgrx::spi::SpiTupleTable<'_>>,
    what: &str,
) -> Option<T> {
    let table = result.unwrap_or_else(|e| panic!("{what} failed: {e}"));
    table.into_iter().next().and_then(|row| col::<T>(&row, 1))
}

/// The counter of one period; 0 when nothing was recorded in it yet.
pub fn usage(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    period_start: TimestampWithTimeZone,
) -> i64 {
    let direct = cache::direct(client).ok();
    if let Some(n) = direct.and_then(|c| c.usage(user_id, feature, period_start)) {
        return n;
    }
    let args: [DatumWithOid; 3] = [user_id.into(), feature.into(), period_start.into()];
    first(client.select(&plans(client).usage, Some(1), &args), "usage lookup").unwrap_or(0)
}

/// One use, as `record_feature_usage` and `consume` receive it.
pub struct Use<'a> {
    pub subject: &'a Subject,
    pub period_start: TimestampWithTimeZone,
    pub period_end: TimestampWithTimeZone,
    pub amount: i32,
    /// Enforced limit; `None` records without enforcing (unlimited, or record_feature_usage).
    pub limit: Option<i64>,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<i64>,
    pub metadata: Option<RawJsonb>,
    pub idempotency_key: Option<&'a str>,
}

/// What became of a use.
pub enum Applied {
    /// Counted: the new counter and the highest alert already announced for the period.
    Counted { usage: i64, already: i32 },
    /// The limit refused it; nothing was written.
    Refused,
    /// The subscription changed since it was read; nothing was written (see [`use_sql`]).
    Stale,
}

/// Adds the use to its period's counter and the ledger. `read` is the subscription version the
/// use was judged by, when it was read without a lock; `None` when [`feature_row_for_use`]
/// holds the lock.
pub fn apply_use(
    client: &mut SpiClient<'_>,
    u: Use<'_>,
    read: Option<pg_sys::ItemPointerData>,
) -> Applied {
    let args: [DatumWithOid; 11] = [
        u.subject.user_id.into(),
        u.subject.feature.as_str().into(),
        u.period_start.into(),
        u.period_end.into(),
        u.amount.into(),
        u.limit.map_or_else(DatumWithOid::null::<i64>, Into::into),
        u.resource_type.map_or_else(DatumWithOid::null::<&str>, Into::into),
        u.resource_id.map_or_else(DatumWithOid::null::<i64>, Into::into),
        u.metadata.map_or_else(DatumWithOid::null::<RawJsonb>, Into::into),
        u.idempotency_key.map_or_else(DatumWithOid::null::<&str>, Into::into),
        read.map_or_else(DatumWithOid::null::<pg_sys::ItemPointerData>, Into::into),
    ];
    let plans = plans(client);
    // use_ takes no $11.
    let (plan, args) = match read {
        Some(_) => (&plans.use_late_lock, &args[..]),
        None => (&plans.use_, &args[..10]),
    };
    let table = client
        .update(plan, Some(1), args)
        .unwrap_or_else(|e| panic!("recording usage failed: {e}"));
    let row = table.into_iter().next().expect("FROM (SELECT) yields one row");
    match (col::<i64>(&row, 1), must(col::<bool>(&row, 3), "exists")) {
        (Some(usage), _) => {
            Applied::Counted { usage, already: must(col(&row, 2), "alerted_percent") }
        }
        (None, false) => Applied::Stale,
        (None, true) => Applied::Refused,
    }
}

/// Remembers that alerts up to `percent` were announced for the period.
pub fn mark_alerted(
    client: &mut SpiClient<'_>,
    subject: &Subject,
    period_start: TimestampWithTimeZone,
    percent: i32,
) {
    let args: [DatumWithOid; 4] = [
        subject.user_id.into(),
        subject.feature.as_str().into(),
        period_start.into(),
        percent.into(),
    ];
    let plan = &plans(client).mark_alerted;
    client.update(plan, None, &args).unwrap_or_else(|e| panic!("marking an alert failed: {e}"));
}

/// `pg_notify(channel, payload)`: sent at commit, never for a rolled-back change.
pub fn notify(client: &mut SpiClient<'_>, channel: &str, payload: &str) {
    let args: [DatumWithOid; 2] = [channel.into(), payload.into()];
    let plan = &plans(client).notify;
    client.update(plan, None, &args).unwrap_or_else(|e| panic!("pg_notify failed: {e}"));
}

/// One feature's limit sources for a plan and a custom_quotas document.
pub struct FeatureSources {
    pub code: String,
    pub custom: Option<String>,
    pub plan: Option<i32>,
    pub default: Option<i32>,
}

/// The limit sources of every catalog feature for `plan_id` and `custom_quotas`.
pub fn limits_for(
    client: &SpiClient<'_>,
    plan_id: i64,
    custom: Option<RawJsonb>,
) -> Vec<FeatureSources> {
    let args: [DatumWithOid; 2] =
        [plan_id.into(), custom.map_or_else(DatumWithOid::null::<RawJsonb>, Into::into)];
    client
        .select(&plans(client).limits_for, None, &args)
        .unwrap_or_else(|e| panic!("limit lookup failed: {e}"))
        .map(|row| FeatureSources {
            code: must(col(&row, 1), "code"),
            custom: col(&row, 2),
            plan: col(&row, 3),
            default: col(&row, 4),
        })
        .collect()
}

/// Every feature code of the catalog, in order.
pub fn feature_codes(client: &SpiClient<'_>) -> Vec<String> {
    client
        .select(&plans(client).feature_codes, None, &[])
        .unwrap_or_else(|e| panic!("feature list failed: {e}"))
        .map(|row| must(col::<String>(&row, 1), "code"))
        .collect()
}

/// A usage record as an idempotency key finds it.
pub struct KeyedRecord {
    pub id: i64,
    pub feature: String,
    pub amount: i32,
}

/// Waits for any other transaction using the same key, then returns the key's record.
pub fn record_by_key(client: &mut SpiClient<'_>, user_id: i64, key: &str) -> Option<KeyedRecord> {
    let args: [DatumWithOid; 2] = [user_id.into(), key.into()];
    let plan = &plans(client).lock_key;
    client.update(plan, None, &args).unwrap_or_else(|e| panic!("idempotency lock failed: {e}"));
    let table = client
        .select(&plans(client).record_by_key, Some(1), &args)
        .unwrap_or_else(|e| panic!("idempotency lookup failed: {e}"));
    table.into_iter().next().map(|row| KeyedRecord {
        id: must(col(&row, 1), "id"),
        feature: must(col(&row, 2), "feature_code"),
        amount: must(col(&row, 3), "amount"),
    })
}

/// How a refund names the record it refunds.
pub enum RecordRef<'a> {
    Id(i64),
    Key { user_id: i64, key: &'a str },
}

/// The record to refund, locked: (user_id, id, refund_of).
pub fn lock_refund_target(
    client: &mut SpiClient<'_>,
    target: &RecordRef<'_>,
) -> Option<(i64, i64, Option<i64>)> {
    let plans = plans(client);
    let table = match *target {
        RecordRef::Id(id) => client.update(&plans.refund_target_by_id, Some(1), &[id.into()]),
        RecordRef::Key { user_id, key } => {
            client.update(&plans.refund_target_by_key, Some(1), &[user_id.into(), key.into()])
        }
    }
    .unwrap_or_else(|e| panic!("usage record lookup failed: {e}"));
    table
        .into_iter()
        .next()
        .map(|row| (must(col(&row, 1), "user_id"), must(col(&row, 2), "id"), col(&row, 3)))
}

/// A refund: its record id, the amount given back and the period it went to.
pub struct Refund {
    pub id: i64,
    pub amount: i32,
    pub period_start: TimestampWithTimeZone,
}

fn refund_row(table: pgrx::spi::SpiTupleTable<'_>) -> Option<Refund> {
    table.into_iter().next().map(|row| Refund {
        id: must(col(&row, 1), "id"),
        amount: must(col(&row, 2), "amount"),
        period_start: must(col(&row, 3), "period_start"),
    })
}

/// The refund already posted for record `id`, if any.
pub fn existing_refund(client: &SpiClient<'_>, user_id: i64, id: i64) -> Option<Refund> {
    let args: [DatumWithOid; 2] = [user_id.into(), id.into()];
    refund_row(
        client
            .select(&plans(client).refund_of, Some(1), &args)
            .unwrap_or_else(|e| panic!("refund lookup failed: {e}")),
    )
}

/// Posts the refund of record `id`.
pub fn post_refund(client: &mut SpiClient<'_>, user_id: i64, id: i64) -> Refund {
    let args: [DatumWithOid; 2] = [user_id.into(), id.into()];
    let plan = &plans(client).refund;
    refund_row(client.update(plan, Some(1), &args).unwrap_or_else(|e| panic!("refund failed: {e}")))
        .expect("the locked record exists")
}

/// Locks the user's active subscription; returns its id and `custom_quotas -> feature` as JSON
/// text (`None` when the key is absent), or `None` without an active subscription.
pub fn lock_subscription(
    client: &mut SpiClient<'_>,
    user_id: i64,
    feature: &str,
) -> Option<(i64, Option<String>)> {
    let args: [DatumWithOid; 2] = [user_id.into(), feature.into()];
    let plan = &plans(client).adjust_lock;
    let table = client
        .update(plan, Some(1), &args)
        .unwrap_or_else(|e| panic!("subscription lock failed: {e}"));
    table.into_iter().next().map(|row| (must(col(&row, 1), "id"), col(&row, 2)))
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

pub fn apply_adjustment(client: &mut SpiClient<'_>, a: Adjustment<'_>) {
    let args: [DatumWithOid; 7] = [
        a.subject.user_id.into(),
        a.subscription_id.into(),
        a.subject.feature.as_str().into(),
        a.new.map_or_else(DatumWithOid::null::<i32>, Into::into),
        a.old.map_or_else(DatumWithOid::null::<i32>, Into::into),
        a.reason.into(),
        a.actor.into(),
    ];
    let plan = &plans(client).adjust_apply;
    client.update(plan, None, &args).unwrap_or_else(|e| panic!("adjusting the quota failed: {e}"));
}

/// Sets `user_storage_usage.storage_quota_bytes`, creating the row when missing. Returns
/// `Some(previous)` when the quota changed (`previous` is `None` for a new row).
pub fn upsert_storage_quota(
    client: &mut SpiClient<'_>,
    user_id: i64,
    bytes: i64,
) -> Option<Option<i64>> {
    let args: [DatumWithOid; 2] = [user_id.into(), bytes.into()];
    let plan = &plans(client).storage_upsert;
    let table = client
        .update(plan, None, &args)
        .unwrap_or_else(|e| panic!("syncing the storage quota failed: {e}"));
    table.into_iter().next().map(|row| col::<i64>(&row, 1))
}

/// The subset of `codes` that `quota.features` knows.
pub fn known_features(client: &SpiClient<'_>, codes: Vec<String>) -> Vec<String> {
    let args: [DatumWithOid; 1] = [codes.into()];
    client
        .select(&plans(client).known_features, None, &args)
        .unwrap_or_else(|e| panic!("feature lookup failed: {e}"))
        .map(|row| must(col::<String>(&row, 1), "code"))
        .collect()
}
