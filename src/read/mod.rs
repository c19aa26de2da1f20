//! How the quota functions read. This module alone decides, per call, whether the tables are
//! read from the backend's copy and through their indexes ([`copy`], [`probe`]) or by the
//! statements of [`crate::store`], and turns what either path found into the same rows by the
//! same rules ([`entitlements_core::subscription`], [`subscription_row`]). Neither path trusts a
//! row: a NULL, a JSON value of the wrong kind or a missing plan becomes the same answer or the
//! same error on both.

pub mod copy;
pub mod probe;

use crate::store;
use entitlements_core::binding::Lacks;
use entitlements_core::grants::Totals;
use entitlements_core::subscription::{self, Candidate};
use entitlements_core::{Error, Kind};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::spi::{SpiClient, SpiHeapTupleData, SpiTupleTable};
use probe::JsonbField;

/// A feature's row of `quota.features`.
#[derive(Clone)]
pub struct Catalog {
    pub name: String,
    pub reset_rule: String,
    pub unit: String,
    pub default_limit: Option<i32>,
    /// `features.overage_limit` ([`entitlements_core::overage`]).
    pub overage_limit: Option<i32>,
    /// `features.rollover_max` and `rollover_periods` ([`entitlements_core::rollover`]).
    pub rollover: (Option<i32>, Option<i32>),
    /// `features.granted`: false only when no user was ever granted the feature.
    pub granted: bool,
    /// `features.kind`.
    pub kind: Kind,
    /// `features.default_value` as JSON text: a config feature's value without a plan's.
    pub default_value: Option<String>,
    /// `features.window_limits` as JSON text ([`entitlements_core::windows`]).
    pub window_limits: Option<String>,
}

/// The subscription that counts, as both paths read it, before any rule about its plan.
pub struct Chosen {
    pub tid: pg_sys::ItemPointerData,
    pub id: Option<i64>,
    pub plan_id: Option<i64>,
    pub start: TimestampWithTimeZone,
    pub end: TimestampWithTimeZone,
    pub anchor: Option<TimestampWithTimeZone>,
    /// The subscription's own `quota_cycle_type`.
    pub own_cycle: Option<String>,
    /// `custom_quotas -> feature` (absent when no feature was asked for).
    pub custom: JsonbField,
}

/// The subscription's plan: its cycles and its row for the feature asked for.
pub struct PlanRow {
    pub quota_cycle: Option<String>,
    pub billing_cycle: Option<String>,
    pub value: Option<i32>,
    pub unit: Option<String>,
    /// `plan_features.overage_limit`.
    pub overage: Option<i32>,
    /// `plan_features.rollover_max` and `rollover_periods`.
    pub rollover: (Option<i32>, Option<i32>),
    /// `plan_features.reset_rule`: the plan's own window (NULL: the catalog's).
    pub reset_rule: Option<String>,
    /// `plan_features.config_value` as JSON text.
    pub config: Option<String>,
    /// `plan_features.window_limits` as JSON text.
    pub window_limits: Option<String>,
}

/// The active subscription, with what its plan says about one feature.
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
    pub plan_overage: Option<i32>,
    pub plan_rollover: (Option<i32>, Option<i32>),
    pub plan_reset_rule: Option<String>,
    pub plan_config: Option<String>,
    pub plan_window_limits: Option<String>,
}

/// The zone periods are computed in (`quota.settings`), and the last change of it.
#[derive(Clone)]
pub struct Zone {
    pub name: String,
    /// `previous_time_zone` and `time_zone_changed_at`, when the settings remember a change.
    pub change: Option<(String, TimestampWithTimeZone)>,
}

impl Zone {
    /// The zone `name`, changed from `previous` at `since`; a previous zone equal to the
    /// current one (or a change at -infinity) is no change in force.
    pub fn new(
        name: String,
        previous: Option<String>,
        since: Option<TimestampWithTimeZone>,
    ) -> Zone {
        let change =
            previous.zip(since).filter(|(previous, since)| *previous != name && since.is_finite());
        Zone { name, change }
    }
}

pub struct FeatureRow {
    /// `None` only when no feature was asked for.
    pub catalog: Option<Catalog>,
    pub subscription: Option<SubscriptionRow>,
    pub zone: Zone,
    pub now: TimestampWithTimeZone,
    /// `quota.features.alert_thresholds` (empty without a named feature).
    pub alert_thresholds: Vec<i32>,
}

/// What the subscription that counts means, whichever path read it: it must name a plan that
/// exists (`plan` is `None` when it does not) and have a cycle, and its `custom_quotas` must
/// be an object.
fn subscription_row(
    user_id: i64,
    chosen: Chosen,
    plan: Option<PlanRow>,
) -> Result<SubscriptionRow, Error> {
    let missing =
        || Error::PlanMissing { user_id, subscription_id: chosen.id, plan_id: chosen.plan_id };
    let (Some(plan_id), Some(plan)) = (chosen.plan_id, plan) else {
        return Err(missing());
    };
    let cycle = subscription::cycle(
        chosen.own_cycle.as_deref(),
        plan.quota_cycle.as_deref(),
        plan.billing_cycle.as_deref(),
    )
    .ok_or(Error::NoCycle { user_id, subscription_id: chosen.id, plan_id })?
    .to_owned();
    let custom_value = match chosen.custom {
        JsonbField::Absent => None,
        JsonbField::Value(v) => Some(v),
        JsonbField::NotObject(document) => {
            return Err(Error::CustomQuotasNotObject { user_id, value: document })
        }
    };
    Ok(SubscriptionRow {
        tid: chosen.tid,
        start: chosen.start,
        end: chosen.end,
        anchor: chosen.anchor,
        cycle,
        custom_value,
        plan_value: plan.value,
        plan_unit: plan.unit,
        plan_overage: plan.overage,
        plan_rollover: plan.rollover,
        plan_reset_rule: plan.reset_rule,
        plan_config: plan.config,
        plan_window_limits: plan.window_limits,
    })
}

/// Reads the feature (if one is named), the active subscription and the settings, without a
/// statement where [`copy::direct`] allows it, otherwise with read-only SPI. Either way it runs
/// on a hot standby and takes no transaction id. `Err(UnknownFeature)` when the catalog lacks
/// the named feature.
pub fn feature_row(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: Option<&str>,
) -> Result<FeatureRow, Error> {
    if let Some(config) = copy::direct(client).ok().filter(|c| c.can_read_subscriptions()) {
        // The statements that may still run (usage, when that table cannot be probed) must
        // use the same tables.
        store::bind_to(client, &config.binding)?;
        if let Some(row) = direct_feature_row(&config, user_id, feature)? {
            return Ok(row);
        }
    }
    statement_feature_row(client, user_id, feature, store::Snapshot::Current)
}

/// [`feature_row`] for a writer whose first read went stale: a statement with a snapshot of
/// its own, taken after the change that made the first read stale committed.
pub fn feature_row_again(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
) -> Result<FeatureRow, Error> {
    statement_feature_row(client, user_id, Some(feature), store::Snapshot::New)
}

/// The row from the copy and the subscription index; `Ok(None)` when the copy lacks the
/// subscription's plan, which the statements then look for with the statement's snapshot.
fn direct_feature_row(
    config: &copy::Config,
    user_id: i64,
    feature: Option<&str>,
) -> Result<Option<FeatureRow>, Error> {
    let entry = feature
        .map(|f| {
            config.feature(f).ok_or_else(|| Error::UnknownFeature {
                user_id: Some(user_id),
                feature: f.to_owned(),
            })
        })
        .transpose()?;
    let now = pgrx::datum::now();
    let subscription = match config.active_subscription(user_id, feature, now)? {
        None => None,
        Some(chosen) => {
            let plan = match chosen.plan_id {
                None => None,
                Some(id) => match config.plan(id, feature) {
                    Some(plan) => Some(plan),
                    None => return Ok(None),
                },
            };
            Some(subscription_row(user_id, chosen, plan)?)
        }
    };
    Ok(Some(FeatureRow {
        catalog: entry.map(|e| e.catalog.clone()),
        subscription,
        zone: config.zone.clone(),
        now,
        alert_thresholds: entry.map(|e| e.alert_thresholds.clone()).unwrap_or_default(),
    }))
}

fn col<T: pgrx::FromDatum + pgrx::IntoDatum>(
    row: &SpiHeapTupleData<'_>,
    n: usize,
    what: &'static str,
) -> Result<Option<T>, Error> {
    row.get::<T>(n).map_err(|e| Error::ColumnType { what: what.into(), detail: e.to_string() })
}

/// The columns of [`store::FEATURE`], by position.
mod column {
    pub const CODE: usize = 1;
    pub const RESET_RULE: usize = 2;
    pub const UNIT: usize = 3;
    pub const DEFAULT_LIMIT: usize = 4;
    pub const ALERT_THRESHOLDS: usize = 5;
    pub const NAME: usize = 6;
    pub const TIME_ZONE: usize = 7;
    pub const BINDING: usize = 8;
    pub const NOW: usize = 9;
    pub const TID: usize = 10;
    pub const ID: usize = 11;
    pub const PLAN_ID: usize = 12;
    pub const STATUS: usize = 13;
    pub const START: usize = 14;
    pub const END: usize = 15;
    pub const ANCHOR: usize = 16;
    pub const OWN_CYCLE: usize = 17;
    pub const NOT_OBJECT: usize = 18;
    pub const CUSTOM: usize = 19;
    pub const PLAN_FOUND: usize = 20;
    pub const PLAN_QUOTA_CYCLE: usize = 21;
    pub const PLAN_BILLING_CYCLE: usize = 22;
    pub const PLAN_VALUE: usize = 23;
    pub const PLAN_UNIT: usize = 24;
    pub const PREVIOUS_TIME_ZONE: usize = 25;
    pub const TIME_ZONE_CHANGED_AT: usize = 26;
    pub const LOCAL_ZONE: usize = 27;
    pub const LACKS: usize = 28;
    pub const OVERAGE: usize = 29;
    pub const PLAN_OVERAGE: usize = 30;
    pub const ROLLOVER_MAX: usize = 31;
    pub const ROLLOVER_PERIODS: usize = 32;
    pub const PLAN_ROLLOVER_MAX: usize = 33;
    pub const PLAN_ROLLOVER_PERIODS: usize = 34;
    pub const GRANTED: usize = 35;
    pub const PLAN_RESET_RULE: usize = 36;
    pub const KIND: usize = 37;
    pub const DEFAULT_VALUE: usize = 38;
    pub const PLAN_CONFIG: usize = 39;
    pub const WINDOW_LIMITS: usize = 40;
    pub const PLAN_WINDOW_LIMITS: usize = 41;
}

/// A candidate row of the statement: one of the user's subscriptions with status 'active'.
struct StatementCandidate {
    status: Option<String>,
    start: Option<TimestampWithTimeZone>,
    end: Option<TimestampWithTimeZone>,
    id: Option<i64>,
    row: usize,
}

/// The statement path of [`feature_row`]: one row per subscription of the user with status
/// 'active' (or one row without any), the rules of [`entitlements_core::subscription`] choose.
/// The statements follow `quota.settings.attached_schema`: when quota.attach() or detach()
/// changed it since this backend prepared them, they are prepared again and run again.
fn statement_feature_row(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: Option<&str>,
    snapshot: store::Snapshot,
) -> Result<FeatureRow, Error> {
    parse_feature_rows(&statement_rows(client, user_id, feature, snapshot)?, user_id, feature)
}

/// The rows of [`store::select_feature`], run again when quota.attach() or detach() changed
/// the binding since this backend prepared the statements.
fn statement_rows<'c>(
    client: &'c SpiClient<'_>,
    user_id: i64,
    feature: Option<&str>,
    snapshot: store::Snapshot,
) -> Result<Vec<SpiHeapTupleData<'c>>, Error> {
    loop {
        let (table, bound_to) = store::select_feature(client, user_id, feature, snapshot)?;
        let rows: Vec<SpiHeapTupleData<'_>> = table.collect();
        let Some(first) = rows.first() else {
            return Err(Error::Statement { what: "the quota lookup", detail: "no row".into() });
        };
        let binding = store::Binding {
            schema: col(first, column::BINDING, "attached_schema")?,
            local_zone: col(first, column::LOCAL_ZONE, "attached_time_zone")?,
            lacks: Lacks::from_json(
                col::<String>(first, column::LACKS, "attached_lacks")?.as_deref(),
            ),
        };
        if binding != bound_to {
            store::bind_to(client, &binding)?;
            continue;
        }
        return Ok(rows);
    }
}

/// The candidate of the statement's rows that counts at `now`, by the rules of
/// [`entitlements_core::subscription`].
fn counting_candidate(
    rows: &[SpiHeapTupleData<'_>],
    now: TimestampWithTimeZone,
) -> Result<Option<StatementCandidate>, Error> {
    use column::*;
    let mut candidates = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if col::<pg_sys::ItemPointerData>(row, TID, "ctid")?.is_none() {
            continue;
        }
        candidates.push(StatementCandidate {
            status: col(row, STATUS, "user_subscriptions.status")?,
            start: col(row, START, "user_subscriptions.start_date")?,
            end: col(row, END, "user_subscriptions.end_date")?,
            id: col(row, ID, "user_subscriptions.id")?,
            row: i,
        });
    }
    let chosen = subscription::active_index(
        candidates.iter().map(|c| Candidate {
            status: c.status.as_deref(),
            start: c.start.map(crate::time::micros),
            end: c.end.map(crate::time::micros),
            id: c.id,
        }),
        crate::time::micros(now),
    );
    Ok(chosen.and_then(|i| candidates.into_iter().nth(i)))
}

/// The `plan_id` of the user's subscription that counts now, as the row holds it: `None` when
/// none counts or it names no plan. Unlike [`feature_row`], no rule about the plan or the
/// document applies, so that a caller that only needs to know which plan counts (the catalog
/// triggers) is not stopped by another user's broken row.
pub fn counting_plan(client: &SpiClient<'_>, user_id: i64) -> Result<Option<i64>, Error> {
    if let Some(config) = copy::direct(client).ok().filter(|c| c.can_read_subscriptions()) {
        let now = pgrx::datum::now();
        return Ok(config.active_subscription(user_id, None, now)?.and_then(|c| c.plan_id));
    }
    let rows = statement_rows(client, user_id, None, store::Snapshot::Current)?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let now: TimestampWithTimeZone = store::must(col(first, column::NOW, "now()")?, "now()")?;
    match counting_candidate(&rows, now)? {
        Some(c) => col(&rows[c.row], column::PLAN_ID, "user_subscriptions.plan_id"),
        None => Ok(None),
    }
}

fn parse_feature_rows(
    rows: &[SpiHeapTupleData<'_>],
    user_id: i64,
    feature: Option<&str>,
) -> Result<FeatureRow, Error> {
    use column::*;
    let Some(first) = rows.first() else {
        return Err(Error::Statement { what: "the quota lookup", detail: "no row".into() });
    };
    let catalog = match col::<String>(first, CODE, "features.code")? {
        Some(_) => Some(Catalog {
            name: store::must(col(first, NAME, "features.name")?, "features.name")?,
            reset_rule: store::must(col(first, RESET_RULE, "reset_rule")?, "features.reset_rule")?,
            unit: store::must(col(first, UNIT, "features.unit")?, "features.unit")?,
            default_limit: col(first, DEFAULT_LIMIT, "features.default_limit")?,
            overage_limit: col(first, OVERAGE, "features.overage_limit")?,
            rollover: (
                col(first, ROLLOVER_MAX, "features.rollover_max")?,
                col(first, ROLLOVER_PERIODS, "features.rollover_periods")?,
            ),
            granted: col(first, GRANTED, "features.granted")?.unwrap_or(true),
            kind: store::must::<String>(col(first, KIND, "features.kind")?, "features.kind")?
                .parse()?,
            default_value: col(first, DEFAULT_VALUE, "features.default_value")?,
            window_limits: col(first, WINDOW_LIMITS, "features.window_limits")?,
        }),
        None => None,
    };
    if let (Some(feature), None) = (feature, &catalog) {
        return Err(Error::UnknownFeature { user_id: Some(user_id), feature: feature.to_owned() });
    }
    let now: TimestampWithTimeZone = store::must(col(first, NOW, "now()")?, "now()")?;
    let chosen = counting_candidate(rows, now)?;
    let subscription = match chosen {
        None => None,
        Some(c) => {
            let row = &rows[c.row];
            let (Some(start), Some(end)) = (c.start, c.end) else {
                return Err(Error::Statement {
                    what: "the quota lookup",
                    detail: "an active subscription without dates".into(),
                });
            };
            let custom = match (
                feature,
                col::<String>(row, NOT_OBJECT, "custom_quotas")?,
                col::<String>(row, CUSTOM, "custom_quotas")?,
            ) {
                (None, _, _) => JsonbField::Absent,
                (Some(_), Some(document), _) => JsonbField::NotObject(document),
                (Some(_), None, Some(value)) => JsonbField::Value(value),
                (Some(_), None, None) => JsonbField::Absent,
            };
            let chosen = Chosen {
                tid: store::must(col(row, TID, "ctid")?, "ctid")?,
                id: c.id,
                plan_id: col(row, PLAN_ID, "user_subscriptions.plan_id")?,
                start,
                end,
                anchor: col(row, ANCHOR, "user_subscriptions.quota_reset_anchor")?,
                own_cycle: col(row, OWN_CYCLE, "user_subscriptions.quota_cycle_type")?,
                custom,
            };
            let plan_found: bool = col(row, PLAN_FOUND, "subscription_plans.id")?.unwrap_or(false);
            let plan = if plan_found {
                Some(PlanRow {
                    quota_cycle: col(row, PLAN_QUOTA_CYCLE, "subscription_plans.quota_cycle_type")?,
                    billing_cycle: col(
                        row,
                        PLAN_BILLING_CYCLE,
                        "subscription_plans.billing_cycle",
                    )?,
                    value: col(row, PLAN_VALUE, "plan_features.feature_value")?,
                    unit: col(row, PLAN_UNIT, "plan_features.feature_unit")?,
                    overage: col(row, PLAN_OVERAGE, "plan_features.overage_limit")?,
                    rollover: (
                        col(row, PLAN_ROLLOVER_MAX, "plan_features.rollover_max")?,
                        col(row, PLAN_ROLLOVER_PERIODS, "plan_features.rollover_periods")?,
                    ),
                    reset_rule: col(row, PLAN_RESET_RULE, "plan_features.reset_rule")?,
                    config: col(row, PLAN_CONFIG, "plan_features.config_value")?,
                    window_limits: col(row, PLAN_WINDOW_LIMITS, "plan_features.window_limits")?,
                })
            } else {
                None
            };
            Some(subscription_row(user_id, chosen, plan)?)
        }
    };
    let alert_thresholds = col::<Vec<Option<i32>>>(first, ALERT_THRESHOLDS, "alert_thresholds")?
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    Ok(FeatureRow {
        catalog,
        subscription,
        zone: Zone::new(
            store::must(col(first, TIME_ZONE, "time_zone")?, "time_zone")?,
            col(first, PREVIOUS_TIME_ZONE, "previous_time_zone")?,
            col(first, TIME_ZONE_CHANGED_AT, "time_zone_changed_at")?,
        ),
        now,
        alert_thresholds,
    })
}

/// What the active grants of a user's feature gave and have left.
pub fn grant_totals(client: &SpiClient<'_>, user_id: i64, feature: &str) -> Result<Totals, Error> {
    grant_totals_with(copy::direct(client).ok().as_deref(), client, user_id, feature)
}

fn grant_totals_with(
    config: Option<&copy::Config>,
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
) -> Result<Totals, Error> {
    if let Some(config) = config {
        if let Some(totals) = config.grant_totals(user_id, feature, pgrx::datum::now())? {
            return Ok(totals);
        }
    }
    crate::grants::totals(client, user_id, feature)
}

/// The period's counter and what its holds claim, expired ones not yet reclaimed included.
fn usage_with(
    config: Option<&copy::Config>,
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    period_start: TimestampWithTimeZone,
) -> Result<(i64, i64), Error> {
    if let Some(config) = config {
        if let Some(found) = config.usage(user_id, feature, period_start)? {
            return Ok(found);
        }
    }
    let table: SpiTupleTable<'_> = store::select_usage(client, user_id, feature, period_start)?;
    match table.into_iter().next() {
        Some(row) => Ok((
            col::<i64>(&row, 1, "user_usage.usage_count")?.unwrap_or(0),
            col::<i64>(&row, 2, "user_usage.held")?.unwrap_or(0),
        )),
        None => Ok((0, 0)),
    }
}

/// The counter of one period (0 where it does not exist): what a rollover passes on is read
/// from the period before the current one.
pub fn period_usage(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    period_start: TimestampWithTimeZone,
) -> Result<i64, Error> {
    let config = copy::direct(client).ok();
    Ok(usage_with(config.as_deref(), client, user_id, feature, period_start)?.0)
}

/// What a check reads after the subscription, with one look at the backend's copy.
pub struct Counted {
    /// The period's counter: 0 when nothing was recorded in it yet, or it is NULL.
    pub usage: i64,
    /// [`grant_totals`].
    pub totals: Totals,
    /// What the period's active holds claim: the holds are read only when the counter says
    /// some claim anything.
    pub held: i64,
}

/// The period's counter, the grants and the active holds of a user's feature; the grants are
/// read only for a feature some user was granted (`granted`, [`Catalog::granted`]).
pub fn usage_and_grants(
    client: &SpiClient<'_>,
    user_id: i64,
    (feature, granted): (&str, bool),
    period_start: TimestampWithTimeZone,
) -> Result<Counted, Error> {
    let config = copy::direct(client).ok();
    let (usage, held) = usage_with(config.as_deref(), client, user_id, feature, period_start)?;
    let held = active_held(client, user_id, feature, period_start, held)?;
    let totals = if granted {
        grant_totals_with(config.as_deref(), client, user_id, feature)?
    } else {
        Totals::default()
    };
    Ok(Counted { usage, totals, held })
}

/// What the active holds of a counter claim, when its `held` column says that some claim
/// anything (`held`): a hold that expired stops counting at once.
pub fn active_held(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: &str,
    period_start: TimestampWithTimeZone,
    held: i64,
) -> Result<i64, Error> {
    if held <= 0 {
        return Ok(0);
    }
    crate::holds::active(client, user_id, feature, period_start)
}

pub use copy::paths;
