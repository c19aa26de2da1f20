//! The SQL the extension runs, each statement prepared once per backend and kept
//! (`SPI_keepplan`), so a call pays no parse or plan. Every name is schema-qualified: a call
//! delegated to another node or run under a hostile search_path resolves the same objects.

use entitlements_core::{Error, Subject};
use pgrx::datum::{DatumWithOid, JsonB, TimestampWithTimeZone};
use pgrx::pg_sys::BuiltinOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};
use pgrx::PgOid;
use std::cell::Cell;

/// Everything a quota function needs about one user and feature, in one round trip: the
/// catalog row, the active subscription (the one with status 'active', start_date <= now() <
/// end_date, latest end_date first), its plan's value for the feature and the settings.
/// Always one row; f.code is NULL when the catalog lacks the feature (or none was asked for).
const FEATURE: &str = "
SELECT f.code, f.reset_rule, f.unit, f.default_limit,
       s.id, s.start_date, s.end_date, s.quota_reset_anchor,
       coalesce(s.quota_cycle_type, p.quota_cycle_type, p.billing_cycle),
       (s.custom_quotas OPERATOR(pg_catalog.->) f.code)::pg_catalog.text,
       pf.feature_value, pf.feature_unit,
       coalesce((SELECT st.time_zone FROM quota.settings st), 'UTC'),
       pg_catalog.now()
  FROM (SELECT) AS one
  LEFT JOIN quota.features f ON f.code = $2
  LEFT JOIN LATERAL (
        SELECT us.id, us.plan_id, us.start_date, us.end_date, us.quota_reset_anchor,
               us.quota_cycle_type, us.custom_quotas
          FROM quota.user_subscriptions us
         WHERE us.user_id = $1 AND us.status = 'active'
           AND us.start_date <= pg_catalog.now() AND us.end_date > pg_catalog.now()
         ORDER BY us.end_date DESC, us.id DESC
         LIMIT 1) s ON true
  LEFT JOIN quota.subscription_plans p ON p.id = s.plan_id
  LEFT JOIN quota.plan_features pf ON pf.plan_id = s.plan_id AND pf.feature_code = f.code";

const USAGE: &str = "
SELECT u.usage_count FROM quota.user_usage u
 WHERE u.user_id = $1 AND u.feature_code = $2 AND u.period_start = $3";

/// Adds to the period's counter and writes the usage record in one statement. now() goes in
/// the VALUES list and the update takes EXCLUDED's values: an ON CONFLICT DO UPDATE on a
/// distributed table may not call a non-immutable function.
const RECORD: &str = "
WITH rec AS (
    INSERT INTO quota.usage_records
           (user_id, feature_code, period_start, resource_type, resource_id, amount, metadata,
            created_at)
    VALUES ($1, $2, $3, $5, $6, $7, $8, pg_catalog.now())
)
INSERT INTO quota.user_usage AS u
       (user_id, feature_code, period_start, period_end, usage_count, last_reset_at, updated_at)
VALUES ($1, $2, $3, $4, $7, pg_catalog.now(), pg_catalog.now())
ON CONFLICT (user_id, feature_code, period_start) DO UPDATE
   SET usage_count = u.usage_count OPERATOR(pg_catalog.+) EXCLUDED.usage_count,
       period_end = EXCLUDED.period_end,
       updated_at = EXCLUDED.updated_at
RETURNING u.usage_count";

/// Creates the storage row when missing; touches it only when the quota really changes.
const STORAGE_UPSERT: &str = "
INSERT INTO quota.user_storage_usage AS s (user_id, storage_quota_bytes, updated_at)
VALUES ($1, $2, pg_catalog.now())
ON CONFLICT (user_id) DO UPDATE
   SET storage_quota_bytes = EXCLUDED.storage_quota_bytes, updated_at = EXCLUDED.updated_at
 WHERE s.storage_quota_bytes IS DISTINCT FROM EXCLUDED.storage_quota_bytes";

/// Which of the given codes the catalog knows.
const KNOWN_FEATURES: &str = "
SELECT f.code FROM quota.features f WHERE f.code OPERATOR(pg_catalog.=) ANY ($1)";

struct Plans {
    feature: OwnedPreparedStatement,
    usage: OwnedPreparedStatement,
    record: OwnedPreparedStatement,
    storage_upsert: OwnedPreparedStatement,
    known_features: OwnedPreparedStatement,
}

thread_local! {
    // A backend is single-threaded; the plans live as long as it does.
    static PLANS: Cell<Option<&'static Plans>> = const { Cell::new(None) };
}

fn oid(o: BuiltinOid) -> PgOid {
    PgOid::BuiltIn(o)
}

fn plans(client: &SpiClient<'_>) -> &'static Plans {
    if let Some(p) = PLANS.get() {
        return p;
    }
    use BuiltinOid::*;
    let prepare = |sql: &str, args: &[PgOid], mutating: bool| {
        let stmt = if mutating {
            client.prepare_mut(sql, args)
        } else {
            client.prepare(sql, args)
        };
        stmt.unwrap_or_else(|e| panic!("preparing a pg_entitlements statement failed: {e}"))
            .keep()
    };
    let (int8, text, tstz) = (oid(INT8OID), oid(TEXTOID), oid(TIMESTAMPTZOID));
    let plans: &'static Plans = Box::leak(Box::new(Plans {
        feature: prepare(FEATURE, &[int8, text], false),
        usage: prepare(USAGE, &[int8, text, tstz], false),
        record: prepare(
            RECORD,
            &[
                int8,
                text,
                tstz,
                tstz,
                text,
                int8,
                oid(INT4OID),
                oid(JSONBOID),
            ],
            true,
        ),
        storage_upsert: prepare(STORAGE_UPSERT, &[int8, int8], true),
        known_features: prepare(KNOWN_FEATURES, &[oid(TEXTARRAYOID)], false),
    }));
    PLANS.set(Some(plans));
    plans
}

/// The active subscription as [`FEATURE`] returns it.
pub struct SubscriptionRow {
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
pub struct Catalog {
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
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(row: &SpiHeapTupleData<'_>, n: usize) -> Option<T> {
    row.get::<T>(n)
        .unwrap_or_else(|e| panic!("column {n} of a pg_entitlements query: {e}"))
}

fn must<T>(v: Option<T>, what: &str) -> T {
    v.unwrap_or_else(|| panic!("{what} is NOT NULL in the schema"))
}

/// Reads the feature (if one is named), active subscription and settings.
/// `Err(UnknownFeature)` when the catalog lacks the named feature. Read-only SPI: it runs on
/// a hot standby and takes no transaction id.
pub fn feature_row(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: Option<&str>,
) -> Result<FeatureRow, Error> {
    let args: [DatumWithOid; 2] = [
        user_id.into(),
        feature.map_or_else(DatumWithOid::null::<&str>, Into::into),
    ];
    let table = client
        .select(&plans(client).feature, Some(1), &args)
        .unwrap_or_else(|e| panic!("quota lookup failed: {e}"));
    let row = table
        .into_iter()
        .next()
        .expect("FROM (SELECT) yields one row");
    let catalog = col::<String>(&row, 1).map(|_| Catalog {
        reset_rule: must(col(&row, 2), "reset_rule"),
        unit: must(col(&row, 3), "unit"),
        default_limit: col(&row, 4),
    });
    if let (Some(feature), None) = (feature, &catalog) {
        return Err(Error::UnknownFeature {
            user_id: Some(user_id),
            feature: feature.to_owned(),
        });
    }
    let subscription = col::<i64>(&row, 5).map(|_id| SubscriptionRow {
        start: must(col(&row, 6), "start_date"),
        end: must(col(&row, 7), "end_date"),
        anchor: col(&row, 8),
        cycle: must(col(&row, 9), "billing_cycle"),
        custom_value: col(&row, 10),
        plan_value: col(&row, 11),
        plan_unit: col(&row, 12),
    });
    Ok(FeatureRow {
        catalog,
        subscription,
        time_zone: must(col(&row, 13), "time_zone"),
        now: must(col(&row, 14), "now()"),
    })
}

/// The counter of one period; 0 when nothing was recorded in it yet.
pub fn usage(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    period_start: TimestampWithTimeZone,
) -> i64 {
    let args: [DatumWithOid; 3] = [user_id.into(), feature.into(), period_start.into()];
    client
        .select(&plans(client).usage, Some(1), &args)
        .and_then(|t| {
            if t.is_empty() {
                Ok(None)
            } else {
                t.first().get_one::<i64>()
            }
        })
        .unwrap_or_else(|e| panic!("usage lookup failed: {e}"))
        .unwrap_or(0)
}

/// One use, as `record_feature_usage` receives it.
pub struct Use<'a> {
    pub subject: &'a Subject,
    pub period_start: TimestampWithTimeZone,
    pub period_end: TimestampWithTimeZone,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<i64>,
    pub amount: i32,
    pub metadata: Option<JsonB>,
}

/// Adds the use to its period's counter and the ledger; returns the new counter.
pub fn record(client: &mut SpiClient<'_>, u: Use<'_>) -> i64 {
    let args: [DatumWithOid; 8] = [
        u.subject.user_id.into(),
        u.subject.feature.as_str().into(),
        u.period_start.into(),
        u.period_end.into(),
        u.resource_type
            .map_or_else(DatumWithOid::null::<&str>, Into::into),
        u.resource_id
            .map_or_else(DatumWithOid::null::<i64>, Into::into),
        u.amount.into(),
        u.metadata
            .map_or_else(DatumWithOid::null::<JsonB>, Into::into),
    ];
    let plan = &plans(client).record;
    client
        .update(plan, Some(1), &args)
        .and_then(|t| t.first().get_one::<i64>())
        .unwrap_or_else(|e| panic!("recording usage failed: {e}"))
        .expect("RETURNING usage_count yields one row")
}

/// Sets `user_storage_usage.storage_quota_bytes`, creating the row when missing.
pub fn upsert_storage_quota(client: &mut SpiClient<'_>, user_id: i64, bytes: i64) {
    let args: [DatumWithOid; 2] = [user_id.into(), bytes.into()];
    let plan = &plans(client).storage_upsert;
    client
        .update(plan, None, &args)
        .unwrap_or_else(|e| panic!("syncing the storage quota failed: {e}"));
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
