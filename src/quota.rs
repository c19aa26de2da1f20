//! The quota operations: the rules of `entitlements-core` applied to rows that [`crate::read`]
//! reads, written through [`crate::store`].

use crate::grants;
use crate::holds;
use crate::jsonb::RawJsonb;
use crate::read::{self, Catalog, FeatureRow, SubscriptionRow};
use crate::store::{self, Use};
use crate::time::{check_range, from_pg, to_pg};
use entitlements_core::kind::{self, ValueSources};
use entitlements_core::limit::{self, LimitSources};
use entitlements_core::period::{self, Subscription, ZoneChange};
use entitlements_core::{alerts, keys};
use entitlements_core::{
    units, Cycle, Entitlement, Error, Kind, Limit, Period, QuotaStatus, ResetRule, Resolved,
    Source, Subject,
};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// The feature whose limit `get_user_storage_quota` converts to bytes.
pub const STORAGE_FEATURE: &str = "storage_space";

/// What the precedence gives the user, whatever the feature's kind.
fn entitlement(
    subject: &Subject,
    catalog: &Catalog,
    sub: &SubscriptionRow,
) -> Result<Option<(Entitlement, Source)>, Error> {
    let sources = ValueSources {
        custom: sub.custom_value.as_deref(),
        plan: sub.plan_value.map(i64::from),
        plan_config: sub.plan_config.as_deref(),
        default: catalog.default_limit.map(i64::from),
        default_config: catalog.default_value.as_deref(),
    };
    kind::resolve(subject, catalog.kind, &sources)
}

/// The limit of a feature that is used up (kind metered or gauge); the others have none.
fn resolve(
    subject: &Subject,
    catalog: &Catalog,
    sub: &SubscriptionRow,
) -> Result<Option<Resolved>, Error> {
    if !catalog.kind.is_counted() {
        return Err(Error::NotCounted { subject: subject.clone(), kind: catalog.kind.as_str() });
    }
    limit::resolve(
        subject,
        &LimitSources {
            custom: sub.custom_value.as_deref(),
            plan: sub.plan_value.map(i64::from),
            default: catalog.default_limit.map(i64::from),
        },
    )
}

/// When the usage resets: never for a running count (kind gauge) nor for what is not used up,
/// else the plan feature's own window when it sets one, else the catalog's.
fn reset_rule_of(catalog: &Catalog, sub: &SubscriptionRow) -> Result<ResetRule, Error> {
    if catalog.kind != Kind::Metered {
        return Ok(ResetRule::Never);
    }
    sub.plan_reset_rule.as_deref().unwrap_or(&catalog.reset_rule).parse()
}

/// The overage allowed beyond the limit ([`entitlements_core::overage::resolve`]).
fn overage_of(
    subject: &Subject,
    catalog: &Catalog,
    sub: &SubscriptionRow,
) -> Result<Option<Limit>, Error> {
    entitlements_core::overage::resolve(
        subject,
        sub.plan_overage.map(i64::from),
        catalog.overage_limit.map(i64::from),
    )
}

/// One further limit of a feature with several ([`entitlements_core::windows`]), with the
/// bounds of its window now.
#[derive(Clone)]
pub(crate) struct WindowNow {
    pub(crate) limit: Limit,
    pub(crate) period: Period,
}

impl WindowNow {
    fn counter<'a>(&self, subject: &'a Subject) -> Result<crate::windows::Counter<'a>, Error> {
        Ok(crate::windows::Counter {
            user_id: subject.user_id,
            feature: &subject.feature,
            window: self.period.rule.as_str(),
            start: to_pg(self.period.start, true)?,
            end: to_pg(self.period.end, false)?,
        })
    }
}

/// The further limits of the feature for the subscription, each with its window now.
fn windows_now(
    row: &FeatureRow,
    catalog: &Catalog,
    sub: &SubscriptionRow,
) -> Result<Vec<WindowNow>, Error> {
    let metered = catalog.kind == Kind::Metered;
    let plan = sub.plan_window_limits.as_deref();
    entitlements_core::windows::resolve(metered, plan, catalog.window_limits.as_deref())?
        .into_iter()
        .map(|w| Ok(WindowNow { limit: w.limit, period: period_of(row, w.window, sub)? }))
        .collect()
}

/// Each further window's figures now, from its counter (none yet: nothing used).
fn window_figures(
    client: &SpiClient<'_>,
    subject: &Subject,
    windows: &[WindowNow],
    now: TimestampWithTimeZone,
) -> Result<Vec<QuotaStatus>, Error> {
    if windows.is_empty() {
        return Ok(Vec::new());
    }
    let counted = crate::windows::usage(client, subject.user_id, &subject.feature, now)?;
    windows
        .iter()
        .map(|w| {
            let start = to_pg(w.period.start, true)?;
            let name = w.period.rule.as_str();
            let usage = counted
                .iter()
                .find(|(n, s, _)| n == name && *s == start)
                .map_or(0, |(_, _, usage)| *usage);
            Ok(QuotaStatus::evaluate(Some(w.limit), usage))
        })
        .collect()
}

/// The figures a check reports for a feature with several limits: the tightest of the main
/// limit's and the windows' ([`entitlements_core::windows::tightest`]).
fn tightest(main: QuotaStatus, windows: &[QuotaStatus]) -> QuotaStatus {
    let all: Vec<QuotaStatus> = std::iter::once(main).chain(windows.iter().copied()).collect();
    all[entitlements_core::windows::tightest(&all)]
}

/// The figures of a check: the period's allowance and usage, then the grants, the allowed
/// overage and the active holds.
fn figures(
    limit: Option<Limit>,
    overage: Option<Limit>,
    usage: i64,
    totals: entitlements_core::grants::Totals,
    held: i64,
) -> QuotaStatus {
    QuotaStatus::evaluate(limit, usage)
        .with_grants(limit, totals)
        .with_overage(limit, overage, usage)
        .with_held(held)
}

/// Reads a named feature: its catalog row is then always present.
fn named_feature(
    client: &SpiClient<'_>,
    subject: &Subject,
) -> Result<(FeatureRow, Catalog), Error> {
    let mut row = read::feature_row(client, subject.user_id, Some(&subject.feature))?;
    let catalog = take_catalog(&mut row, subject)?;
    Ok((row, catalog))
}

/// The catalog row of a named feature: [`read::feature_row`] errs when the catalog lacks it.
fn take_catalog(row: &mut FeatureRow, subject: &Subject) -> Result<Catalog, Error> {
    row.catalog.take().ok_or_else(|| Error::UnknownFeature {
        user_id: Some(subject.user_id),
        feature: subject.feature.clone(),
    })
}

/// What the periods of a subscription are computed from: its dates and cycle, the zone and
/// the last change of zone.
struct PeriodInputs {
    subscription: Subscription,
    tz: jiff::tz::TimeZone,
    change: Option<ZoneChange>,
    now: jiff::Timestamp,
}

fn period_inputs(row: &FeatureRow, sub: &SubscriptionRow) -> Result<PeriodInputs, Error> {
    let subscription = Subscription {
        start: from_pg(sub.start)?,
        end: if sub.end.is_infinity() { None } else { Some(from_pg(sub.end)?) },
        anchor: sub.anchor.map(from_pg).transpose()?,
        cycle: sub.cycle.parse()?,
    };
    let tz = period::time_zone(&row.zone.name)?;
    let change = match &row.zone.change {
        Some((previous, since)) => {
            Some(ZoneChange { previous: period::time_zone(previous)?, since: from_pg(*since)? })
        }
        None => None,
    };
    Ok(PeriodInputs { subscription, tz, change, now: from_pg(row.now)? })
}

pub(crate) fn period_of(
    row: &FeatureRow,
    rule: ResetRule,
    sub: &SubscriptionRow,
) -> Result<Period, Error> {
    let p = period_inputs(row, sub)?;
    let period = period::current_period(rule, &p.subscription, p.now, &p.tz, p.change.as_ref())?;
    check_range(&period)?;
    Ok(period)
}

/// The rollover a period starts with ([`entitlements_core::rollover`]): what the period before
/// left unused, as a grant not created yet.
pub(crate) struct Rollover {
    /// The start of the period it comes from: it names the grant.
    from: TimestampWithTimeZone,
    amount: i64,
    effective_from: TimestampWithTimeZone,
    expires_at: TimestampWithTimeZone,
}

/// The rollover the current period `period` starts with, when the feature has a rule and the
/// period one before it under the same subscription; `None` otherwise, or when it passes
/// nothing on. Whether its grant exists already is the caller's question.
fn rollover(
    client: &SpiClient<'_>,
    subject: &Subject,
    (row, catalog, sub): (&FeatureRow, &Catalog, &SubscriptionRow),
    limit: Option<Limit>,
    period: &Period,
) -> Result<Option<Rollover>, Error> {
    use entitlements_core::rollover::{self as r, RuleSources};
    let sources = RuleSources {
        plan_max: sub.plan_rollover.0.map(i64::from),
        plan_periods: sub.plan_rollover.1.map(i64::from),
        catalog_max: catalog.rollover.0.map(i64::from),
        catalog_periods: catalog.rollover.1.map(i64::from),
    };
    let Some(rule) = r::resolve(subject, &sources)? else {
        return Ok(None);
    };
    let p = period_inputs(row, sub)?;
    let reset = reset_rule_of(catalog, sub)?;
    let Some(previous) = r::previous(reset, &p.subscription, period, &p.tz, p.change.as_ref())
    else {
        return Ok(None);
    };
    let from = to_pg(previous.start, true)?;
    let usage = read::period_usage(client, subject.user_id, &subject.feature, from)?;
    let amount = r::amount(&rule, limit, usage);
    let expiry = r::expiry(reset, &p.subscription, period, rule.periods, &p.tz, p.change.as_ref());
    if amount <= 0 {
        return Ok(None);
    }
    Ok(Some(Rollover {
        from,
        amount,
        effective_from: to_pg(period.start, true)?,
        expires_at: to_pg(expiry, false)?,
    }))
}

/// `check_user_quota`: the limit, the current period's usage and what remains.
pub fn check(client: &SpiClient<'_>, subject: &Subject) -> Result<QuotaStatus, Error> {
    check_with_period(client, subject).map(|c| c.status)
}

/// What [`check`] finds, with its parts.
struct Checked {
    /// With the grants.
    status: QuotaStatus,
    /// The period's allowance alone (the grants and holds left out).
    allowance: QuotaStatus,
    /// What the period's active holds claim.
    held: i64,
    /// The overage allowed beyond the limit.
    overage: Option<Limit>,
    /// The rollover the period starts with, when its grant is not created yet.
    pending: Option<Rollover>,
    /// `None` without an active subscription, or for a feature that is not used up.
    period: Option<Period>,
    catalog: Catalog,
    /// A boolean or config feature's value.
    value: Option<serde_json::Value>,
    /// The further limits, each with its figures now.
    windows: Vec<(WindowNow, QuotaStatus)>,
    /// The main limit's figures (`status` is the tightest of them and the windows').
    main: QuotaStatus,
}

impl Checked {
    /// What a check finds without a period: no active subscription, or a feature that is not
    /// used up (its `value`).
    fn without_usage(
        status: QuotaStatus,
        catalog: Catalog,
        value: Option<serde_json::Value>,
    ) -> Checked {
        Checked {
            main: status,
            status,
            allowance: status,
            held: 0,
            overage: None,
            pending: None,
            period: None,
            catalog,
            value,
            windows: Vec::new(),
        }
    }
}

/// [`check`], with the period and the catalog row.
fn check_with_period(client: &SpiClient<'_>, subject: &Subject) -> Result<Checked, Error> {
    let (row, catalog) = named_feature(client, subject)?;
    let Some(sub) = row.subscription.as_ref() else {
        return Ok(Checked::without_usage(QuotaStatus::NONE, catalog, None));
    };
    if !catalog.kind.is_counted() {
        let value = entitlement(subject, &catalog, sub)?.map(|(e, _)| e);
        let status = QuotaStatus::of_switch(value.as_ref().is_some_and(Entitlement::is_on));
        return Ok(Checked::without_usage(status, catalog, value.map(|e| e.to_json())));
    }
    let limit = resolve(subject, &catalog, sub)?.map(|r| r.limit);
    let overage = overage_of(subject, &catalog, sub)?;
    let period = period_of(&row, reset_rule_of(&catalog, sub)?, sub)?;
    let start = to_pg(period.start, true)?;
    let feature = (subject.feature.as_str(), catalog.granted);
    let c = read::usage_and_grants(client, subject.user_id, feature, start)?;
    // A rollover not created yet counts from the period's first instant, as it will.
    let (user_id, feature) = (subject.user_id, subject.feature.as_str());
    let pending = match rollover(client, subject, (&row, &catalog, sub), limit, &period)? {
        Some(r) if !grants::rollover_exists(client, user_id, feature, r.from)? => Some(r),
        _ => None,
    };
    let mut totals = c.totals;
    if let Some(r) = &pending {
        totals.granted = totals.granted.saturating_add(r.amount);
        totals.left = totals.left.saturating_add(r.amount);
    }
    let allowance = QuotaStatus::evaluate(limit, c.usage);
    let main = figures(limit, overage, c.usage, totals, c.held);
    let windows = windows_now(&row, &catalog, sub)?;
    let window_status = window_figures(client, subject, &windows, row.now)?;
    let status = tightest(main, &window_status);
    let windows = windows.into_iter().zip(window_status).collect();
    let (period, value, held) = (Some(period), None, c.held);
    Ok(Checked { main, status, allowance, held, overage, pending, period, catalog, value, windows })
}

/// `limit_source`: where the user's limit of a feature comes from now (`custom_quotas`,
/// `plan_features` or `features.default_limit`), `None` without an active subscription or
/// without any limit.
pub fn limit_source(
    client: &SpiClient<'_>,
    subject: &Subject,
) -> Result<Option<&'static str>, Error> {
    let (row, catalog) = named_feature(client, subject)?;
    let Some(sub) = row.subscription.as_ref() else {
        return Ok(None);
    };
    Ok(entitlement(subject, &catalog, sub)?.map(|(_, source)| match (catalog.kind, source) {
        (Kind::Config, Source::Default) => "features.default_value",
        (_, source) => source.as_str(),
    }))
}

/// `has_feature` and `feature_value`: what the precedence of the feature's kind gives the user
/// now; `None` without an active subscription or where no source says anything.
pub fn entitlement_of(
    client: &SpiClient<'_>,
    subject: &Subject,
) -> Result<Option<Entitlement>, Error> {
    let (row, catalog) = named_feature(client, subject)?;
    let Some(sub) = row.subscription.as_ref() else {
        return Ok(None);
    };
    Ok(entitlement(subject, &catalog, sub)?.map(|(e, _)| e))
}

/// One line of `usage_overview`.
pub struct Overview {
    pub feature: String,
    pub name: String,
    pub unit: String,
    pub kind: Kind,
    /// A boolean or config feature's value.
    pub value: Option<serde_json::Value>,
    pub status: QuotaStatus,
    /// The period's allowance and what of it is used, the grants left out.
    pub allowance: QuotaStatus,
    /// The grants that count, in use order.
    pub grants: Vec<grants::Listed>,
    /// What the period's active holds claim.
    pub held: i64,
    /// The overage allowed beyond the limit (`None`: none) and what of it the period used.
    pub overage: Option<Limit>,
    pub overage_used: i64,
    pub period: Option<Period>,
    /// The further limits with their figures now.
    pub windows: Vec<(WindowNow, QuotaStatus)>,
    /// The main limit's figures (`status` is the tightest of them and the windows').
    pub main: QuotaStatus,
}

/// `usage_overview`: every catalog feature's figures and period for one user.
pub fn overview(client: &SpiClient<'_>, user_id: i64) -> Result<Vec<Overview>, Error> {
    store::feature_codes(client)?
        .into_iter()
        .map(|feature| {
            let subject = Subject { user_id, feature };
            let c = check_with_period(client, &subject)?;
            let (mut grants, overage_used) = match &c.period {
                Some(p) => (
                    grants::list(client, user_id, &subject.feature)?,
                    crate::overage::used(client, user_id, &subject.feature, to_pg(p.start, true)?)?,
                ),
                None => (Vec::new(), 0),
            };
            if let Some(r) = &c.pending {
                grants.push(grants::Listed {
                    balance: entitlements_core::grants::Balance {
                        id: 0,
                        remaining: r.amount,
                        priority: 0,
                        expires_at: Some(crate::time::micros(r.expires_at)),
                        created_at: crate::time::micros(r.effective_from),
                    },
                    amount: r.amount,
                    source: "rollover".into(),
                    expires_at: Some(r.expires_at),
                    created: false,
                });
                grants.sort_by(|a, b| entitlements_core::grants::use_order(&a.balance, &b.balance));
            }
            Ok(Overview {
                feature: subject.feature,
                name: c.catalog.name,
                kind: c.catalog.kind,
                value: c.value,
                unit: c.catalog.unit,
                status: c.status,
                allowance: c.allowance,
                grants,
                held: c.held,
                overage: c.overage,
                overage_used,
                period: c.period,
                windows: c.windows,
                main: c.main,
            })
        })
        .collect()
}

/// Every limit of an overview line, the main one first, then the further windows shortest
/// first: each with its window, limit, usage, remaining, start and next reset (NULL where it
/// never resets). Empty without a period (no active subscription, or nothing used up).
pub fn limits_json(o: &Overview) -> Result<serde_json::Value, Error> {
    let Some(period) = &o.period else {
        return Ok(serde_json::Value::Array(Vec::new()));
    };
    let entry = |p: &Period, s: &QuotaStatus| -> Result<serde_json::Value, Error> {
        let (start, end) = period_bounds(p)?;
        Ok(serde_json::json!({
            "window": p.rule.as_str(),
            "limit": s.quota_limit,
            "used": s.current_usage,
            "remaining": s.remaining,
            "window_start": p.start.map(|_| start.to_iso_string()),
            "next_reset": p.rule.resets().then(|| end.to_iso_string()),
        }))
    };
    let mut all = vec![entry(period, &o.main)?];
    for (w, s) in &o.windows {
        all.push(entry(&w.period, s)?);
    }
    Ok(serde_json::Value::Array(all))
}

/// `get_user_storage_quota`: the storage limit in bytes, `-1` unlimited, 0 without an active
/// subscription or any storage limit, plus the active grants of storage (purchased storage).
/// Custom and default values and grants are in the catalog's unit; a plan's value is in
/// `plan_features.feature_unit` when that is set.
pub fn storage_bytes(client: &SpiClient<'_>, user_id: i64) -> Result<i64, Error> {
    let subject = Subject { user_id, feature: STORAGE_FEATURE.to_owned() };
    let (row, catalog) = named_feature(client, &subject)?;
    let Some(sub) = row.subscription.as_ref() else {
        return Ok(0);
    };
    let limit_bytes = match resolve(&subject, &catalog, sub)? {
        None => 0,
        Some(resolved) => {
            let unit = match (resolved.source, sub.plan_unit.as_deref()) {
                (Source::Plan, Some(plan_unit)) => plan_unit,
                _ => catalog.unit.as_str(),
            };
            units::limit_to_bytes(&subject, resolved.limit, unit)?
        }
    };
    // Purchased storage: the active grants of storage_space, in the catalog's unit.
    let granted = read::grant_totals(client, user_id, STORAGE_FEATURE)?.granted;
    units::with_granted_bytes(&subject, limit_bytes, granted, &catalog.unit)
}

/// `get_quota_period`: the period the user's usage of `feature` counts toward now, or `None`
/// without an active subscription. Without a feature: the billing-cycle period.
pub fn current_period(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: Option<&str>,
) -> Result<Option<Period>, Error> {
    let row = read::feature_row(client, user_id, feature)?;
    let Some(sub) = row.subscription.as_ref() else {
        return Ok(None);
    };
    let rule = match &row.catalog {
        Some(c) => reset_rule_of(c, sub)?,
        None => ResetRule::BillingCycle,
    };
    period_of(&row, rule, sub).map(Some)
}

/// Writing on a standby fails deep inside the executor with a message about transaction ids;
/// say what is wrong instead.
pub(crate) fn ensure_writable(function: &'static str) -> Result<(), Error> {
    // SAFETY: RecoveryInProgress only reads shared memory state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(Error::ReadOnlyServer { function });
    }
    Ok(())
}

/// An amount of usage: at least 1.
pub(crate) fn validate_amount(subject: &Subject, amount: i32) -> Result<i32, Error> {
    if amount < 1 {
        return Err(Error::InvalidAmount { subject: subject.clone(), amount: i64::from(amount) });
    }
    Ok(amount)
}

/// A use as `record_feature_usage` and `consume` receive it.
pub struct Recording<'a> {
    pub subject: &'a Subject,
    pub amount: i32,
    pub idempotency_key: Option<&'a str>,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<i64>,
    pub metadata: Option<RawJsonb>,
}

/// The answer of `consume`.
pub struct Consumed {
    pub allowed: bool,
    pub status: QuotaStatus,
}

/// For a retried idempotency key: the original use, when the key was used before. The same
/// key with another feature or amount is an error, and so is a key whose use was refunded: a
/// key names one logical use for good, and counting it again would need a second record under
/// the key, answering as if nothing happened would give the work away for nothing.
fn replay(
    client: &mut SpiClient<'_>,
    function: &'static str,
    r: &Recording<'_>,
) -> Result<bool, Error> {
    let Some(key) = r.idempotency_key else {
        return Ok(false);
    };
    match store::record_by_key(client, function, r.subject.user_id, key)? {
        None => Ok(false),
        Some(rec) if rec.feature == r.subject.feature && rec.amount == r.amount => {
            match store::existing_refund(client, r.subject.user_id, rec.id)? {
                None => Ok(true),
                Some(refund) => Err(Error::KeyRefunded {
                    subject: r.subject.clone(),
                    key: key.to_owned(),
                    record_id: rec.id,
                    refund_id: refund.id,
                }),
            }
        }
        Some(rec) => Err(Error::IdempotencyConflict {
            subject: r.subject.clone(),
            key: key.to_owned(),
            original: format!(
                "usage record {} (amount {} of feature \"{}\")",
                rec.id, rec.amount, rec.feature
            ),
            amount: i64::from(r.amount),
        }),
    }
}

/// What a use is judged by: the limit, the period and the alert thresholds, and the
/// subscription version they came from.
pub(crate) struct UseContext {
    pub(crate) limit: Option<Limit>,
    /// The overage allowed beyond the limit.
    pub(crate) overage: Option<Limit>,
    /// A running count (kind gauge), which `release_usage` counts down.
    gauge: bool,
    pub(crate) period: Period,
    /// The further limits, each over its window ([`entitlements_core::windows`]).
    pub(crate) windows: Vec<WindowNow>,
    alert_thresholds: Vec<i32>,
    pub(crate) read: pg_sys::ItemPointerData,
}

/// How [`prepare_use`] reads the subscription. Neither locks it: the use finds out, once its
/// counter is locked, whether the version it read still stands ([`store::apply_use`]).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Read {
    /// With the caller's snapshot, without a statement where the reads allow it.
    First,
    /// By a statement with a new snapshot, after the first read went stale.
    Again,
}

fn prepare_use(
    client: &mut SpiClient<'_>,
    function: &'static str,
    r: &Recording<'_>,
    how: Read,
) -> Result<Option<UseContext>, Error> {
    ensure_writable(function)?;
    validate_amount(r.subject, r.amount)?;
    if let Some(key) = r.idempotency_key {
        keys::validate_idempotency_key(r.subject, key)?;
    }
    judge(client, r.subject, how)
}

/// What a use of `subject` is judged by now; `None` without an active subscription.
pub(crate) fn judge(
    client: &SpiClient<'_>,
    subject: &Subject,
    how: Read,
) -> Result<Option<UseContext>, Error> {
    let (user_id, feature) = (subject.user_id, subject.feature.as_str());
    let mut row = match how {
        Read::First => read::feature_row(client, user_id, Some(feature))?,
        Read::Again => read::feature_row_again(client, user_id, feature)?,
    };
    let catalog = take_catalog(&mut row, subject)?;
    let Some(sub) = row.subscription.as_ref() else {
        return Ok(None);
    };
    let limit = resolve(subject, &catalog, sub)?.map(|l| l.limit);
    let overage = overage_of(subject, &catalog, sub)?;
    let period = period_of(&row, reset_rule_of(&catalog, sub)?, sub)?;
    let windows = windows_now(&row, &catalog, sub)?;
    // A write is the first to touch the period, or finds the rollover it starts with created.
    if let Some(r) = rollover(client, subject, (&row, &catalog, sub), limit, &period)? {
        let window = (r.effective_from, r.expires_at);
        grants::create_rollover(client, user_id, feature, r.amount, window, r.from)?;
    }
    Ok(Some(UseContext {
        limit,
        overage,
        gauge: catalog.kind == Kind::Gauge,
        period,
        windows,
        alert_thresholds: row.alert_thresholds,
        read: sub.tid,
    }))
}

/// Announces on channel quota_threshold each alert threshold this use crossed, judged against
/// the limit the use was judged by: once per period while that limit stays the same.
pub(crate) fn announce_thresholds(
    client: &mut SpiClient<'_>,
    subject: &Subject,
    ctx: &UseContext,
    usage: i64,
    announced: Option<alerts::Announced>,
) -> Result<(), Error> {
    let (Some(limit), Some(announced)) = (ctx.limit, announced) else { return Ok(()) };
    let (crossed, remember) = alerts::crossed(&ctx.alert_thresholds, announced, usage, limit);
    let Some(remember) = remember else {
        return Ok(());
    };
    let period_start = to_pg(ctx.period.start, true)?;
    store::mark_alerted(client, subject, period_start, remember)?;
    for threshold in crossed {
        let payload = serde_json::json!({
            "user_id": subject.user_id,
            "feature_code": subject.feature,
            "threshold": threshold,
            "usage": usage,
            "limit": limit.as_i64(),
            "period_start": period_start.to_string(),
        });
        crate::notices::announce(client, "quota_threshold", &payload.to_string())?;
    }
    Ok(())
}

/// The limit on the period's counter: none for unlimited, 0 where no source defines one.
pub(crate) fn counter_limit(limit: Option<Limit>) -> Option<i64> {
    match limit {
        Some(Limit::Unlimited) => None,
        None => Some(0),
        Some(Limit::Max(n)) => Some(i64::from(n)),
    }
}

/// The use as [`store::apply_use`] writes it, the counter moving by the whole amount within
/// `limit`.
fn use_of<'a>(r: &Recording<'a>, ctx: &UseContext, limit: Option<i64>) -> Result<Use<'a>, Error> {
    Ok(Use {
        subject: r.subject,
        period_start: to_pg(ctx.period.start, true)?,
        period_end: to_pg(ctx.period.end, false)?,
        amount: r.amount,
        counted: r.amount,
        limit,
        resource_type: r.resource_type,
        resource_id: r.resource_id,
        metadata: r.metadata.clone(),
        idempotency_key: r.idempotency_key,
    })
}

/// How many times a locking read of the user's active subscriptions runs while it finds none,
/// and how many times a use is judged again while the subscription keeps changing under it.
pub(crate) const LOCKED_READS: usize = 16;

/// Runs a locking read of the user's active subscriptions until it finds one, at most
/// [`LOCKED_READS`] times. Such a read waits for a concurrent change of those rows and then
/// sees only what its own statement's snapshot saw: after a renewal (cancel the active row and
/// insert a new one, in one transaction) it finds the row it waited for cancelled and not the
/// one that replaced it. Each new run is a new statement with a new snapshot, which sees what
/// the renewal committed; it finds nothing again only when another renewal replaced that row
/// too in the meantime, or when the user truly has no active subscription.
fn read_again<T>(mut read: impl FnMut() -> Result<Option<T>, Error>) -> Result<Option<T>, Error> {
    for _ in 1..LOCKED_READS {
        if let Some(found) = read()? {
            return Ok(Some(found));
        }
    }
    read()
}

/// Counts a use judged by `ctx`, or, when the subscription changed since `ctx` was read,
/// judged again by what a read with a new snapshot finds, which the change committed (a use
/// waits at its counter for a change of its limit in flight; see [`store::apply_use`]).
/// Returns the outcome and the context it was judged by; `None` when such a read finds no
/// active subscription. A transaction that reads one snapshot (REPEATABLE READ, SERIALIZABLE)
/// cannot see the change, and gets a serialization failure, as a row it updates would give it;
/// so does a use whose subscription changed [`LOCKED_READS`] times while it was judged.
fn count_use(
    client: &mut SpiClient<'_>,
    function: &'static str,
    r: &Recording<'_>,
    ctx: UseContext,
    enforce: bool,
) -> Result<Option<(Applied, UseContext)>, Error> {
    judged(client, function, r, ctx, |client, ctx| {
        let (applied, windows) = apply(client, r, ctx, enforce, false)?;
        Ok((!matches!(applied, store::Applied::Stale)).then_some((applied, windows)))
    })
}

/// Runs `step`, a write judged by `ctx`, again judged by what a read with a new snapshot finds
/// while it says (`None`) that the subscription changed since `ctx` was read, as
/// [`count_use`] does for a use; `None` when such a read finds no active subscription.
pub(crate) fn judged<T>(
    client: &mut SpiClient<'_>,
    function: &'static str,
    r: &Recording<'_>,
    ctx: UseContext,
    mut step: impl FnMut(&mut SpiClient<'_>, &UseContext) -> Result<Option<T>, Error>,
) -> Result<Option<(T, UseContext)>, Error> {
    let mut ctx = ctx;
    for _ in 0..LOCKED_READS {
        if let Some(done) = step(client, &ctx)? {
            return Ok(Some((done, ctx)));
        }
        if uses_one_snapshot() {
            break;
        }
        let Some(again) = prepare_use(client, function, r, Read::Again)? else {
            return Ok(None);
        };
        ctx = again;
    }
    Err(Error::SubscriptionChanged { subject: r.subject.clone() })
}

/// What [`apply`] did, with each further window's figures after it.
pub(crate) type Applied = (store::Applied, Vec<QuotaStatus>);

/// Counts a use judged by `ctx` in its period ([`apply_in_period`]) and in every further window
/// of the feature: with the period's counter locked first, then each window's counter, shortest
/// window first (the order every writer locks them in), a use that `enforce`s is refused
/// unless it fits every window; counted, it counts in each. With the outcome, each window's
/// figures after it, as the locks held them (none without further windows).
pub(crate) fn apply(
    client: &mut SpiClient<'_>,
    r: &Recording<'_>,
    ctx: &UseContext,
    enforce: bool,
    with_id: bool,
) -> Result<Applied, Error> {
    if ctx.windows.is_empty() {
        return Ok((apply_in_period(client, r, ctx, enforce, with_id)?, Vec::new()));
    }
    let (start, end) = (to_pg(ctx.period.start, true)?, to_pg(ctx.period.end, false)?);
    if store::lock_counter(client, r.subject, start, end, ctx.read)?.is_none() {
        return Ok((store::Applied::Stale, Vec::new()));
    }
    let mut counters = Vec::with_capacity(ctx.windows.len());
    let mut counted = Vec::with_capacity(ctx.windows.len());
    for w in &ctx.windows {
        let counter = w.counter(r.subject)?;
        let usage = crate::windows::lock(client, &counter)?;
        let limit =
            entitlements_core::windows::WindowLimit { window: w.period.rule, limit: w.limit };
        counters.push(counter);
        counted.push((limit, usage));
    }
    let amount = i64::from(r.amount);
    let after = |added: i64| -> Vec<QuotaStatus> {
        counted
            .iter()
            .map(|(w, usage)| QuotaStatus::evaluate(Some(w.limit), usage + added))
            .collect()
    };
    if enforce && !entitlements_core::windows::fits(&counted, amount) {
        return Ok((store::Applied::Refused { totals: None, held: 0 }, after(0)));
    }
    let applied = apply_in_period(client, r, ctx, enforce, with_id)?;
    if !matches!(applied, store::Applied::Counted { .. }) {
        return Ok((applied, after(0)));
    }
    for counter in &counters {
        crate::windows::count(client, counter, amount)?;
    }
    Ok((applied, after(amount)))
}

/// Counts a use judged by `ctx` in its period: from the period's allowance when it covers the
/// whole amount (one statement), else split across the allowance and the active grants
/// ([`draw`]). `enforce`: refused beyond both (`consume`); otherwise what neither covers counts
/// on the allowance beyond its limit (`record_feature_usage`). `with_id`: the usage record's id
/// is returned.
fn apply_in_period(
    client: &mut SpiClient<'_>,
    r: &Recording<'_>,
    ctx: &UseContext,
    enforce: bool,
    with_id: bool,
) -> Result<store::Applied, Error> {
    let limit = counter_limit(ctx.limit);
    let first = store::apply_use(client, use_of(r, ctx, limit)?, ctx.read, with_id)?;
    let store::Applied::Refused { totals, held } = first else {
        return Ok(first);
    };
    // The grants as the statement saw them: a grant committed while it waited for the counter
    // comes after this use, as one committed after it. Holds: the statement counted the
    // expired ones too.
    let overage = !matches!(ctx.overage, None | Some(Limit::Max(0)));
    if totals.is_some_and(|t| t.left > 0) || held > 0 || overage {
        return draw(client, r, ctx, enforce);
    }
    if enforce {
        return Ok(first);
    }
    store::apply_use(client, use_of(r, ctx, None)?, ctx.read, with_id)
}

/// What a use, a reserve or a settle decides by, with the counter and the grants locked.
pub(crate) struct Locked {
    /// The period's counter.
    pub(crate) usage: i64,
    /// What the active holds of the period claim, but the one left out.
    pub(crate) held: i64,
    pub(crate) grants: Vec<entitlements_core::grants::Balance>,
}

impl Locked {
    /// What a write judged by `ctx` may take from ([`entitlements_core::holds::split`]).
    pub(crate) fn sources<'a>(&'a self, ctx: &UseContext) -> entitlements_core::holds::Sources<'a> {
        let limit = counter_limit(ctx.limit);
        entitlements_core::holds::Sources {
            allowance_left: limit.map(|limit| limit - self.usage),
            held: self.held,
            grants: &self.grants,
            overage_left: match limit {
                Some(limit) => entitlements_core::overage::left(ctx.overage, limit, self.usage),
                None => None,
            },
        }
    }
}

/// Locks (or creates) the counter of `[start, end)` for a write judged by the subscription
/// version `read`, reclaims the units of its expired holds, and locks the active grants: the
/// order every writer locks them in. `except`: a hold left out of what the holds claim (the one
/// being settled). `None` when that subscription version no longer stands.
pub(crate) fn lock_sources(
    client: &SpiClient<'_>,
    subject: &Subject,
    (start, end): (TimestampWithTimeZone, TimestampWithTimeZone),
    read: pg_sys::ItemPointerData,
    except: Option<i64>,
) -> Result<Option<Locked>, Error> {
    let Some((usage, held)) = store::lock_counter(client, subject, start, end, read)? else {
        return Ok(None);
    };
    sources_of_locked(client, subject, start, usage, held, except).map(Some)
}

/// [`lock_sources`] once the counter of the period starting at `start` is locked, with its
/// usage and what its holds claim (`held`, expired ones included).
pub(crate) fn sources_of_locked(
    client: &SpiClient<'_>,
    subject: &Subject,
    start: TimestampWithTimeZone,
    usage: i64,
    held: i64,
    except: Option<i64>,
) -> Result<Locked, Error> {
    let held = if held > 0 {
        let (user_id, feature) = (subject.user_id, subject.feature.as_str());
        let (reclaimed, active) = holds::reclaim(client, user_id, feature, start, except)?;
        store::add_held(client, subject, start, -reclaimed)?;
        active
    } else {
        0
    };
    let grants = grants::lock(client, subject.user_id, &subject.feature)?;
    Ok(Locked { usage, held, grants })
}

/// A use the allowance alone does not cover (or that a hold's units may block): with the
/// counter and the grants locked ([`lock_sources`]), split by
/// [`entitlements_core::holds::split`].
fn draw(
    client: &mut SpiClient<'_>,
    r: &Recording<'_>,
    ctx: &UseContext,
    enforce: bool,
) -> Result<store::Applied, Error> {
    let (start, end) = (to_pg(ctx.period.start, true)?, to_pg(ctx.period.end, false)?);
    let Some(locked) = lock_sources(client, r.subject, (start, end), ctx.read, None)? else {
        return Ok(store::Applied::Stale);
    };
    let split = entitlements_core::holds::split(i64::from(r.amount), &locked.sources(ctx));
    if enforce && split.uncovered > 0 {
        return Ok(store::Applied::Refused { totals: None, held: locked.held });
    }
    let before = locked.usage;
    post(client, use_of(r, ctx, None)?, ctx, before, &split)
}

/// Writes a use judged by `ctx` and split under the locks of [`lock_sources`], the counter at
/// `before`: the counter moves by the allowance's share, the overage and what nothing covers,
/// the grants by theirs, beside the usage record; what it took beyond the limit within the
/// overage is marked as such ([`entitlements_core::overage::marked`]).
pub(crate) fn post(
    client: &mut SpiClient<'_>,
    mut u: Use<'_>,
    ctx: &UseContext,
    before: i64,
    split: &entitlements_core::grants::Split,
) -> Result<store::Applied, Error> {
    let (user_id, feature, start) = (u.subject.user_id, u.subject.feature.as_str(), u.period_start);
    // At most the amount, an int4.
    let counted = split.allowance + split.overage + split.uncovered;
    u.counted = i32::try_from(counted).unwrap_or(u.amount);
    let applied = store::apply_use(client, u, ctx.read, true)?;
    if let store::Applied::Counted { record_id, .. } = applied {
        let record_id = store::must(record_id, "usage_records.id")?;
        grants::draw(client, user_id, record_id, &split.grants)?;
        if let Some(limit) = counter_limit(ctx.limit) {
            let after = before.saturating_add(counted);
            let marked = entitlements_core::overage::marked(ctx.overage, limit, before, after);
            crate::overage::mark(client, user_id, record_id, (feature, start), marked)?;
        }
    }
    Ok(applied)
}

/// Whether the transaction reads with one snapshot (REPEATABLE READ or SERIALIZABLE).
fn uses_one_snapshot() -> bool {
    // SAFETY: reads a backend-local variable.
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// `record_feature_usage`: adds the amount to the current period's counter and writes a
/// usage record, in the caller's transaction. Records after the fact; does not enforce.
pub fn record(client: &mut SpiClient<'_>, r: Recording<'_>) -> Result<(), Error> {
    const FUNCTION: &str = "record_feature_usage";
    let no_subscription = || Error::NoActiveSubscription { subject: r.subject.clone() };
    // The subscription check comes first, so that a use without one is an error even on retry.
    let ctx = prepare_use(client, FUNCTION, &r, Read::First)?.ok_or_else(no_subscription)?;
    if replay(client, FUNCTION, &r)? {
        return Ok(());
    }
    match count_use(client, FUNCTION, &r, ctx, false)?.ok_or_else(no_subscription)? {
        ((store::Applied::Counted { usage, announced, .. }, _), ctx) => {
            announce_thresholds(client, r.subject, &ctx, usage, announced)
        }
        // A use without a limit has no condition that can refuse it.
        ((store::Applied::Refused { .. } | store::Applied::Stale, _), _) => Err(Error::Statement {
            what: "record_feature_usage",
            detail: "a use without a limit was not counted".into(),
        }),
    }
}

/// `consume`: checks and records in one atomic step. Refused (or without an active
/// subscription) it writes nothing; a retried key returns the original outcome, counting nothing.
pub fn consume(client: &mut SpiClient<'_>, r: Recording<'_>) -> Result<Consumed, Error> {
    const FUNCTION: &str = "consume";
    let refused = Consumed { allowed: false, status: QuotaStatus::NONE };
    let Some(ctx) = prepare_use(client, FUNCTION, &r, Read::First)? else {
        return Ok(refused);
    };
    let subject = r.subject;
    let (user_id, feature) = (subject.user_id, subject.feature.as_str());
    let grant_totals = |client: &SpiClient<'_>| read::grant_totals(client, user_id, feature);
    if replay(client, FUNCTION, &r)? {
        return Ok(Consumed { allowed: true, status: current_status(client, subject, &ctx)? });
    }
    let Some(((applied, windows), ctx)) = count_use(client, FUNCTION, &r, ctx, true)? else {
        return Ok(refused);
    };
    Ok(match applied {
        store::Applied::Counted { usage, announced, record_id, totals, held } => {
            announce_thresholds(client, subject, &ctx, usage, announced)?;
            let totals = match (record_id, totals) {
                // A use from the allowance alone: the grants as its statement saw them.
                (None, Some(totals)) => totals,
                // One that drew from grants after its statement ([`draw`]): read them again.
                _ => grant_totals(client)?,
            };
            let start = to_pg(ctx.period.start, true)?;
            let held = read::active_held(client, user_id, feature, start, held)?;
            let main = figures(ctx.limit, ctx.overage, usage, totals, held);
            Consumed { allowed: true, status: tightest(main, &windows) }
        }
        // The windows as the use found them under their locks.
        store::Applied::Refused { .. } | store::Applied::Stale => {
            let main = current_main(client, subject, &ctx)?;
            Consumed { allowed: false, status: tightest(main, &windows) }
        }
    })
}

/// The answer of `release_usage`.
pub struct Released {
    /// What was taken off the count: the amount asked, or what the count held when it held less.
    pub released: i64,
    pub status: QuotaStatus,
}

/// `release_usage`: counts a running count (kind gauge) down by `amount`, never below zero,
/// in the caller's transaction, with a row in quota.releases ([`crate::releases`]). A retried
/// key returns what its release released, releasing nothing more; a release of nothing writes
/// nothing, so its key stays free.
pub fn release(client: &mut SpiClient<'_>, r: Recording<'_>) -> Result<Released, Error> {
    const FUNCTION: &str = "release_usage";
    let subject = r.subject;
    let no_subscription = || Error::NoActiveSubscription { subject: subject.clone() };
    let ctx = prepare_use(client, FUNCTION, &r, Read::First)?.ok_or_else(no_subscription)?;
    if !ctx.gauge {
        return Err(Error::NotGauge { subject: subject.clone() });
    }
    if let Some(key) = r.idempotency_key {
        if let Some((feature, amount)) = crate::releases::by_key(client, subject.user_id, key)? {
            if feature != subject.feature {
                return Err(Error::IdempotencyConflict {
                    subject: subject.clone(),
                    key: key.to_owned(),
                    original: format!("a release of {amount} of feature \"{feature}\""),
                    amount: i64::from(r.amount),
                });
            }
            let status = current_status(client, subject, &ctx)?;
            return Ok(Released { released: amount, status });
        }
    }
    let step = |client: &mut SpiClient<'_>, ctx: &UseContext| {
        let period = (to_pg(ctx.period.start, true)?, to_pg(ctx.period.end, false)?);
        let Some((usage, _)) = store::lock_counter(client, subject, period.0, period.1, ctx.read)?
        else {
            return Ok(None);
        };
        let released = i64::from(r.amount).min(usage.max(0));
        if released == 0 {
            return Ok(Some(0));
        }
        // The counter is locked and holds at least `released`: the release counts.
        if !store::count_down(client, subject, period.0, released)? {
            return Err(Error::Statement {
                what: "release_usage",
                detail: "a locked count held less than it did".into(),
            });
        }
        crate::releases::insert(
            client,
            crate::releases::Release {
                user_id: subject.user_id,
                feature: &subject.feature,
                period_start: period.0,
                amount: released,
                idempotency_key: r.idempotency_key,
                resource_type: r.resource_type,
                resource_id: r.resource_id,
                metadata: r.metadata.clone(),
            },
        )?;
        Ok(Some(released))
    };
    let (released, ctx) = judged(client, FUNCTION, &r, ctx, step)?.ok_or_else(no_subscription)?;
    Ok(Released { released, status: current_status(client, subject, &ctx)? })
}

/// The figures of a use judged by `ctx` as they stand now: the period's usage, the grants and
/// the active holds; with further limits, the tightest of those and the windows' (read again).
pub(crate) fn current_status(
    client: &SpiClient<'_>,
    subject: &Subject,
    ctx: &UseContext,
) -> Result<QuotaStatus, Error> {
    let main = current_main(client, subject, ctx)?;
    let windows = window_figures(client, subject, &ctx.windows, pgrx::datum::now())?;
    Ok(tightest(main, &windows))
}

/// The main limit's figures now, judged by `ctx`.
fn current_main(
    client: &SpiClient<'_>,
    subject: &Subject,
    ctx: &UseContext,
) -> Result<QuotaStatus, Error> {
    let start = to_pg(ctx.period.start, true)?;
    let feature = (subject.feature.as_str(), true);
    let c = read::usage_and_grants(client, subject.user_id, feature, start)?;
    Ok(figures(ctx.limit, ctx.overage, c.usage, c.totals, c.held))
}

/// `refund_usage`: posts a compensating record to the period the original use counted toward.
/// A second refund of the same record returns the first one (`newly` false) and changes nothing.
pub fn refund(
    client: &mut SpiClient<'_>,
    target: store::RecordRef<'_>,
) -> Result<(store::Refund, bool), Error> {
    ensure_writable("refund_usage")?;
    store::ensure_binding(client)?;
    let Some(record) = store::lock_refund_target(client, &target)? else {
        let what = match target {
            store::RecordRef::Id { user_id: None, id } => format!("with id {id}"),
            store::RecordRef::Id { user_id: Some(user_id), id } => {
                format!("of user {user_id} with id {id}")
            }
            store::RecordRef::Key { user_id, key } => {
                format!("of user {user_id} with idempotency key \"{key}\"")
            }
        };
        return Err(Error::UsageRecordNotFound { what });
    };
    let (user_id, id) = (record.user_id, record.id);
    if record.refund_of.is_some() {
        return Err(Error::RefundOfRefund { record_id: id });
    }
    if !record.has_period {
        return Err(Error::RecordWithoutPeriod { record_id: id });
    }
    if let Some(existing) = store::existing_refund(client, user_id, id)? {
        return Ok((existing, false));
    }
    let Some(amount) = record.amount else {
        return Err(Error::RecordWithoutAmount { record_id: id });
    };
    // The counter first, then the windows, then the grants: the order a use locks them in.
    store::lock_record_counter(client, user_id, id)?;
    if let Some((at, feature)) = &record.made {
        crate::windows::uncount(client, user_id, feature, *at, i64::from(amount))?;
    }
    let parts = grants::parts(client, user_id, id)?;
    let drawn: i64 = parts.iter().map(|p| p.amount).sum();
    let (back, lost): (Vec<_>, Vec<_>) = parts.iter().partition(|p| p.counts);
    let back: Vec<(i64, i64)> = back.iter().map(|p| (p.grant_id, p.amount)).collect();
    let returned: i64 = back.iter().map(|(_, n)| n).sum();
    // The allowance's share goes back to the counter; a grant's share to the grant, while it
    // counts: the units of a grant that expired or was voided are not revived.
    let counted = i64::from(amount) - drawn;
    let given = counted + returned;
    let lost_text = || {
        lost.iter()
            .map(|p| {
                let why = match (p.voided, p.expired) {
                    (true, _) => "voided",
                    (false, true) => "expired",
                    (false, false) => "not yet effective",
                };
                format!("{} from grant {}, {why}", p.amount, p.grant_id)
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if given <= 0 {
        return Err(Error::NothingToRefund { record_id: id, grants: lost_text() });
    }
    let (given32, counted32) = (i32::try_from(given), i32::try_from(counted));
    let (Ok(given32), Ok(counted32)) = (given32, counted32) else {
        return Err(Error::Statement {
            what: "refund",
            detail: format!("record {id}: shares {given} and {counted} beyond its int4 amount"),
        });
    };
    let (refund, feature) = store::post_refund(client, user_id, id, given32, counted32)?;
    grants::give_back(client, user_id, refund.id, &back)?;
    // What the counter gets back was overage first, whichever use took it: billing charges
    // only what stays beyond the limit.
    let (feature, start) = (feature.as_str(), refund.period_start);
    let overage = crate::overage::used(client, user_id, feature, start)?;
    crate::overage::mark(client, user_id, refund.id, (feature, start), -overage.min(counted))?;
    if !lost.is_empty() {
        pgrx::notice!(
            "usage record {id}: {} of its {amount} units are not given back ({})",
            i64::from(amount) - given,
            lost_text()
        );
    }
    Ok((refund, true))
}

/// `adjust_quota` (`new_value` set) and `clear_custom_quota` (`None`): changes one key of the
/// active subscription's custom_quotas with an audit row; returns the old and new values.
pub fn adjust(
    client: &mut SpiClient<'_>,
    function: &'static str,
    subject: &Subject,
    new_value: Option<i64>,
    reason: &str,
    actor: &str,
) -> Result<(Option<i32>, Option<i32>), Error> {
    ensure_writable(function)?;
    if reason.trim().is_empty() {
        return Err(Error::EmptyReason { subject: subject.clone() });
    }
    // The feature must exist; a bad value is refused before anything is locked. A boolean
    // feature's value is 1 or 0 (on or off); a config feature's JSON value is no integer, it
    // is set in custom_quotas itself.
    let (_, catalog) = named_feature(client, subject)?;
    let kind = catalog.kind;
    if kind == Kind::Config {
        return Err(Error::NotCounted { subject: subject.clone(), kind: kind.as_str() });
    }
    if let (Kind::Boolean, Some(n)) = (kind, new_value) {
        kind::validate_custom_value(subject, kind, &n.into())?;
    }
    let new = new_value
        .map(|n| {
            limit::limit_from_i64(n).map_err(|p| match p {
                limit::ValueProblem::OutOfRange => Error::QuotaValueOutOfRange {
                    subject: subject.clone(),
                    origin: "adjust_quota",
                    value: n.to_string(),
                },
                _ => Error::InvalidLimit { subject: subject.clone(), value: n },
            })
        })
        .transpose()?;
    // The feature's counters first, as its uses lock them (store::LOCK_COUNTERS).
    store::lock_counters(client, subject.user_id, &subject.feature)?;
    let locked =
        read_again(|| store::lock_subscription(client, subject.user_id, &subject.feature))?;
    let Some(locked) = locked else {
        return Err(Error::NoActiveSubscription { subject: subject.clone() });
    };
    if let Some(document) = locked.not_object {
        return Err(Error::CustomQuotasNotObject { user_id: subject.user_id, value: document });
    }
    let (subscription_id, old_text) = (locked.id, locked.custom);
    let old = old_text
        .map(|t| {
            let old = match kind {
                // Audited as 1 (on) or 0 (off).
                Kind::Boolean => serde_json::from_str(&t)
                    .ok()
                    .and_then(|v| kind::switch_from_json(&v).ok())
                    .map(|on| Limit::Max(i32::from(on)))
                    .ok_or(limit::ValueProblem::NotASwitch),
                _ => limit::limit_from_json_text(&t),
            };
            old.map_err(|_| Error::InvalidQuotaValue {
                subject: subject.clone(),
                origin: "custom_quotas",
                value: t.clone(),
                reason: "not a quota",
            })
        })
        .transpose()?;
    let as_i32 = |l: Limit| match l {
        Limit::Unlimited => -1,
        Limit::Max(n) => n,
    };
    let (old, new) = (old.map(as_i32), new.map(as_i32));
    store::apply_adjustment(
        client,
        store::Adjustment { subject, subscription_id, old, new, reason, actor },
    )?;
    Ok((old, new))
}

/// Brings `user_storage_usage.storage_quota_bytes` in line with [`storage_bytes`] and announces
/// a change on channel storage_quota_changed.
pub fn sync_storage(client: &mut SpiClient<'_>, user_id: i64) -> Result<(), Error> {
    let bytes = storage_bytes(client, user_id)?;
    if let Some(old) = store::upsert_storage_quota(client, user_id, bytes)? {
        let payload =
            serde_json::json!({ "user_id": user_id, "old_bytes": old, "new_bytes": bytes });
        crate::notices::announce(client, "storage_quota_changed", &payload.to_string())?;
    }
    Ok(())
}

/// A `user_subscriptions` row as the change announcement sees it.
pub struct SubscriptionState {
    pub user_id: i64,
    pub subscription_id: i64,
    /// NULL only in an attached application's table; such a subscription decides no limit.
    pub plan_id: Option<i64>,
    /// Active now: status 'active' and start_date <= now() < end_date.
    pub active: bool,
    /// start_date and end_date ([`crate::time::micros`]): they also decide which of a user's
    /// active subscriptions counts (latest end first).
    pub dates: (Option<i64>, Option<i64>),
    pub custom_quotas: Option<RawJsonb>,
    /// quota_reset_anchor ([`crate::time::micros`]) and quota_cycle_type: with the plan and
    /// the dates, what decides the billing period.
    pub period: (Option<i64>, Option<String>),
}

impl SubscriptionState {
    /// Whether `other` (the same row after an UPDATE) decides exactly the same limits.
    pub fn decides_the_same_limits_as(&self, other: &SubscriptionState) -> bool {
        let text = |s: &SubscriptionState| s.custom_quotas.as_ref().map(RawJsonb::to_text);
        self.differs_at_most_in_custom_quotas(other) && text(self) == text(other)
    }

    /// Whether `other` (the same row after an UPDATE) decides the same billing period: the
    /// same owner, plan, activity, dates, anchor and cycle.
    pub fn decides_the_same_period_as(&self, other: &SubscriptionState) -> bool {
        self.differs_at_most_in_custom_quotas(other) && self.period == other.period
    }

    /// Whether `other` (the same row after an UPDATE) has the same owner, plan, activity and
    /// dates: custom_quotas alone may differ.
    pub fn differs_at_most_in_custom_quotas(&self, other: &SubscriptionState) -> bool {
        (self.user_id, self.subscription_id, self.plan_id, self.active, self.dates)
            == (other.user_id, other.subscription_id, other.plan_id, other.active, other.dates)
    }
}

/// Whether the only change from `old` to `new` (the same row after an UPDATE) moves one custom
/// value from a key the catalog no longer knows to one it knows: what the rename of a feature
/// does to every document that overrides it (sql/catalog.sql). Such a change decides the same
/// limits under the new code. No other writer can make it: the validation trigger refuses a
/// document with a key the catalog does not know.
pub fn is_feature_rename(
    client: &SpiClient<'_>,
    old: &SubscriptionState,
    new: &SubscriptionState,
) -> Result<bool, Error> {
    if !old.differs_at_most_in_custom_quotas(new) {
        return Ok(false);
    }
    let parse = |s: &SubscriptionState| {
        s.custom_quotas
            .as_ref()
            .and_then(|d| serde_json::from_str::<serde_json::Value>(&d.to_text()).ok())
    };
    let (Some(before), Some(after)) = (parse(old), parse(new)) else {
        return Ok(false);
    };
    let Some((from, to)) = limit::renamed_key(&before, &after) else {
        return Ok(false);
    };
    let known = store::known_features(client, vec![from.clone(), to.clone()])?;
    let is_known = |code: &str| known.iter().any(|(k, _)| k == code);
    Ok(!is_known(&from) && is_known(&to))
}

/// Each feature's entitlement under one subscription row (`None`: nothing from it): a limit,
/// a switch or a configuration value, by the feature's kind.
fn limits_under(
    client: &SpiClient<'_>,
    state: Option<SubscriptionState>,
) -> Result<Vec<(String, Option<Entitlement>)>, Error> {
    let Some((state, plan_id)) =
        state.filter(|s| s.active).and_then(|s| Some((s.plan_id?, s))).map(|(p, s)| (s, p))
    else {
        return Ok(Vec::new());
    };
    store::limits_for(client, plan_id, state.custom_quotas)?
        .into_iter()
        .map(|f| {
            let subject = Subject { user_id: state.user_id, feature: f.code };
            let sources = ValueSources {
                custom: f.custom.as_deref(),
                plan: f.plan.map(i64::from),
                plan_config: f.plan_config.as_deref(),
                default: f.default.map(i64::from),
                default_config: f.default_config.as_deref(),
            };
            let value = kind::resolve(&subject, f.kind, &sources)?.map(|(e, _)| e);
            Ok((subject.feature, value))
        })
        .collect()
}

/// Announces on channel quota_updated the features whose limit a change of one subscription
/// row moved, with their old and new limits (`null`: no quota from this subscription).
pub fn announce_subscription_change(
    client: &mut SpiClient<'_>,
    user_id: i64,
    subscription_id: i64,
    old: Option<SubscriptionState>,
    new: Option<SubscriptionState>,
) -> Result<(), Error> {
    let before = limits_under(client, old)?;
    let after = limits_under(client, new)?;
    let lookup = |list: &[(String, Option<Entitlement>)], code: &str| {
        list.iter().find(|(c, _)| c == code).and_then(|(_, l)| l.clone())
    };
    let mut codes: Vec<&str> = before.iter().chain(after.iter()).map(|(c, _)| c.as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    let (mut changed, mut old_limits, mut new_limits) =
        (Vec::new(), serde_json::Map::new(), serde_json::Map::new());
    for code in codes {
        let (was, is) = (lookup(&before, code), lookup(&after, code));
        if was != is {
            changed.push(code);
            old_limits
                .insert(code.to_owned(), was.map_or(serde_json::Value::Null, |e| e.to_json()));
            new_limits.insert(code.to_owned(), is.map_or(serde_json::Value::Null, |e| e.to_json()));
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    let payload = serde_json::json!({
        "user_id": user_id,
        "subscription_id": subscription_id,
        "features": changed,
        "old": old_limits,
        "new": new_limits,
    });
    crate::notices::announce(client, "quota_updated", &payload.to_string())?;
    Ok(())
}

/// Validates a `custom_quotas` document (as jsonb_out prints it) against the catalog.
pub fn validate_custom_quotas(
    client: &SpiClient<'_>,
    user_id: i64,
    document: &str,
) -> Result<(), Error> {
    let value: serde_json::Value = serde_json::from_str(document)
        .map_err(|e| Error::CustomQuotasUnreadable { user_id, reason: e.to_string() })?;
    let keys = match &value {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let known = if keys.is_empty() { Vec::new() } else { store::known_features(client, keys)? };
    kind::validate_custom_quotas(user_id, &value, |f| {
        known.iter().find(|(k, _)| k == f).map(|(_, kind)| *kind)
    })
}

/// `anniversary_period`: the pure period arithmetic on SQL values.
/// `calendar_window`: the pure window arithmetic on SQL values.
pub fn calendar_window(
    window: &str,
    at: TimestampWithTimeZone,
    time_zone: &str,
) -> Result<(TimestampWithTimeZone, TimestampWithTimeZone), Error> {
    let rule: ResetRule = window.parse()?;
    let ResetRule::Calendar(w) = rule else {
        return Err(Error::InvalidResetRule { value: window.to_owned() });
    };
    let tz = period::time_zone(time_zone)?;
    let (start, end) = period::calendar_window(w, from_pg(at)?, &tz)?;
    let p = Period { start: Some(start), end: Some(end), rule, cycle: None };
    check_range(&p)?;
    period_bounds(&p)
}

pub fn anniversary(
    anchor: TimestampWithTimeZone,
    cycle: &str,
    at: TimestampWithTimeZone,
    time_zone: &str,
) -> Result<(TimestampWithTimeZone, TimestampWithTimeZone), Error> {
    let cycle: Cycle = cycle.parse()?;
    let tz = period::time_zone(time_zone)?;
    let (start, end) = period::anniversary_period(from_pg(anchor)?, cycle, from_pg(at)?, &tz)?;
    let period = Period {
        start: Some(start),
        end: Some(end),
        rule: ResetRule::BillingCycle,
        cycle: Some(cycle),
    };
    check_range(&period)?;
    period_bounds(&period)
}

/// A timestamptz for a period bound, as [`crate::api`] returns it.
pub fn period_bounds(p: &Period) -> Result<(TimestampWithTimeZone, TimestampWithTimeZone), Error> {
    Ok((to_pg(p.start, true)?, to_pg(p.end, false)?))
}
