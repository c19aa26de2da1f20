//! The quota operations: the rules of `entitlements-core` applied to rows from [`crate::store`].

use crate::store::{self, Catalog, FeatureRow, SubscriptionRow, Use};
use crate::time::{from_pg, to_pg};
use entitlements_core::limit::{self, LimitSources};
use entitlements_core::period::{self, Subscription};
use entitlements_core::{units, Error, Period, QuotaStatus, ResetRule, Resolved, Source, Subject};
use pgrx::datum::{JsonB, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// The feature whose limit `get_user_storage_quota` converts to bytes.
pub const STORAGE_FEATURE: &str = "storage_space";

fn resolve(
    subject: &Subject,
    catalog: &Catalog,
    sub: &SubscriptionRow,
) -> Result<Option<Resolved>, Error> {
    limit::resolve(
        subject,
        &LimitSources {
            custom: sub.custom_value.as_deref(),
            plan: sub.plan_value.map(i64::from),
            default: catalog.default_limit.map(i64::from),
        },
    )
}

/// Reads a named feature: its catalog row is then always present.
fn named_feature(
    client: &SpiClient<'_>,
    subject: &Subject,
) -> Result<(FeatureRow, Catalog), Error> {
    let mut row = store::feature_row(client, subject.user_id, Some(&subject.feature))?;
    let catalog = row
        .catalog
        .take()
        .expect("feature_row errs on unknown features");
    Ok((row, catalog))
}

fn period_of(row: &FeatureRow, rule: ResetRule, sub: &SubscriptionRow) -> Result<Period, Error> {
    let subscription = Subscription {
        start: from_pg(sub.start)?,
        end: from_pg(sub.end)?,
        anchor: sub.anchor.map(from_pg).transpose()?,
        cycle: sub.cycle.parse()?,
    };
    let tz = period::time_zone(&row.time_zone)?;
    period::current_period(rule, &subscription, from_pg(row.now)?, &tz)
}

/// `check_user_quota`: the limit, the current period's usage and what remains.
pub fn check(client: &SpiClient<'_>, subject: &Subject) -> Result<QuotaStatus, Error> {
    let (row, catalog) = named_feature(client, subject)?;
    let Some(sub) = row.subscription.as_ref() else {
        return Ok(QuotaStatus::NONE);
    };
    let limit = resolve(subject, &catalog, sub)?.map(|r| r.limit);
    let period = period_of(&row, catalog.reset_rule.parse()?, sub)?;
    let usage = store::usage(
        client,
        subject.user_id,
        &subject.feature,
        to_pg(period.start, true),
    );
    Ok(QuotaStatus::evaluate(limit, usage))
}

/// `get_user_storage_quota`: the storage limit in bytes, `-1` unlimited, 0 without an active
/// subscription or any storage limit. Custom and default values are in the catalog's unit;
/// a plan's value is in `plan_features.feature_unit` when that is set.
pub fn storage_bytes(client: &SpiClient<'_>, user_id: i64) -> Result<i64, Error> {
    let subject = Subject {
        user_id,
        feature: STORAGE_FEATURE.to_owned(),
    };
    let (row, catalog) = named_feature(client, &subject)?;
    let Some(sub) = row.subscription.as_ref() else {
        return Ok(0);
    };
    let Some(resolved) = resolve(&subject, &catalog, sub)? else {
        return Ok(0);
    };
    let unit = match (resolved.source, sub.plan_unit.as_deref()) {
        (Source::Plan, Some(plan_unit)) => plan_unit,
        _ => catalog.unit.as_str(),
    };
    units::limit_to_bytes(&subject, resolved.limit, unit)
}

/// `get_quota_period`: the period the user's usage of `feature` counts toward now, or `None`
/// without an active subscription. Without a feature: the billing-cycle period.
pub fn current_period(
    client: &SpiClient<'_>,
    user_id: i64,
    feature: Option<&str>,
) -> Result<Option<Period>, Error> {
    let row = store::feature_row(client, user_id, feature)?;
    let rule = match &row.catalog {
        Some(c) => c.reset_rule.parse()?,
        None => ResetRule::BillingCycle,
    };
    row.subscription
        .as_ref()
        .map(|sub| period_of(&row, rule, sub))
        .transpose()
}

/// Writing on a standby fails deep inside the executor with a message about transaction ids;
/// say what is wrong instead.
fn ensure_writable(function: &'static str) -> Result<(), Error> {
    // SAFETY: RecoveryInProgress only reads shared memory state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(Error::ReadOnlyServer { function });
    }
    Ok(())
}

/// An amount of usage: at least 1.
pub fn validate_amount(subject: &Subject, amount: i32) -> Result<i32, Error> {
    if amount < 1 {
        return Err(Error::InvalidAmount {
            subject: subject.clone(),
            amount: i64::from(amount),
        });
    }
    Ok(amount)
}

pub struct Recording<'a> {
    pub subject: &'a Subject,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<i64>,
    pub amount: i32,
    pub metadata: Option<JsonB>,
}

/// `record_feature_usage`: adds the amount to the current period's counter and writes a
/// usage record, in the caller's transaction. Records after the fact; does not enforce.
pub fn record(client: &mut SpiClient<'_>, r: Recording<'_>) -> Result<i64, Error> {
    ensure_writable("record_feature_usage")?;
    let amount = validate_amount(r.subject, r.amount)?;
    let (row, catalog) = named_feature(client, r.subject)?;
    let Some(sub) = row.subscription.as_ref() else {
        return Err(Error::NoActiveSubscription {
            subject: r.subject.clone(),
        });
    };
    // A malformed limit is reported here too, so that a bad value never goes unnoticed.
    resolve(r.subject, &catalog, sub)?;
    let period = period_of(&row, catalog.reset_rule.parse()?, sub)?;
    Ok(store::record(
        client,
        Use {
            subject: r.subject,
            period_start: to_pg(period.start, true),
            period_end: to_pg(period.end, false),
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            amount,
            metadata: r.metadata,
        },
    ))
}

/// Brings `user_storage_usage.storage_quota_bytes` in line with [`storage_bytes`].
pub fn sync_storage(client: &mut SpiClient<'_>, user_id: i64) -> Result<(), Error> {
    let bytes = storage_bytes(client, user_id)?;
    store::upsert_storage_quota(client, user_id, bytes);
    Ok(())
}

/// Validates a `custom_quotas` document against the catalog.
pub fn validate_custom_quotas(
    client: &SpiClient<'_>,
    user_id: i64,
    value: &serde_json::Value,
) -> Result<(), Error> {
    let keys = match value {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let known = if keys.is_empty() {
        Vec::new()
    } else {
        store::known_features(client, keys)
    };
    limit::validate_custom_quotas(user_id, value, |f| known.iter().any(|k| k == f)).map(|_| ())
}

/// A timestamptz for a period bound, as [`crate::api`] returns it.
pub fn period_bounds(p: &Period) -> (TimestampWithTimeZone, TimestampWithTimeZone) {
    (to_pg(p.start, true), to_pg(p.end, false))
}
