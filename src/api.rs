//! The SQL functions. Each one only converts arguments, calls [`crate::quota`] and converts
//! the answer back. Arguments are `Option`s, so the functions are not STRICT on purpose: a NULL
//! user or feature is an error (22004) that names the argument, not a silent NULL result.

use crate::error::OrRaise;
use crate::jsonb::RawJsonb;
use crate::one_row;
use crate::placement::{self, Access};
use crate::quota::{self, Recording};
use crate::reservations::{self, Reserving, Settling};
use crate::store::RecordRef;
use entitlements_core::{period, Error, QuotaStatus, Subject};
use pgrx::datum::{AnyNumeric, Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::GucSetting;

fn required<T>(value: Option<T>, function: &'static str, argument: &'static str) -> T {
    value.ok_or(Error::NullArgument { function, argument }).or_raise()
}

/// The percentage as a numeric of scale 2 (`12.50`), built from its hundredths the way
/// PostgreSQL builds one from an integer: no text in between (4,380 instructions per call
/// through `numeric_in`, see BENCHMARKS.md).
fn percentage(status: &QuotaStatus) -> Option<AnyNumeric> {
    let hundredths = status.percentage_hundredths;
    // SAFETY: int64_div_fast_to_numeric returns a palloc'd numeric of scale 2 in the call's
    // memory context; it raises no error for any int64.
    unsafe {
        let n = pg_sys::int64_div_fast_to_numeric(hundredths, 2);
        AnyNumeric::from_datum(pg_sys::Datum::from(n), false)
    }
}

fn subject(function: &'static str, user_id: Option<i64>, feature: Option<&str>) -> Subject {
    Subject {
        user_id: required(user_id, function, "user_id"),
        feature: required(feature, function, "feature_code").to_owned(),
    }
}

/// `f` with SPI at the place of `user_id`'s rows ([`crate::placement`]), for a call that reads.
fn reading<R>(
    user_id: i64,
    function: &'static str,
    f: impl FnOnce(&SpiClient<'_>) -> Result<R, Error>,
) -> Result<R, Error> {
    Spi::connect(|client| {
        let _here = placement::enter(client, user_id, Access::Read, function)?;
        f(client)
    })
}

/// `f` with SPI at the place of `user_id`'s rows, for a call that writes.
fn writing<R>(
    user_id: i64,
    function: &'static str,
    f: impl FnOnce(&mut SpiClient<'_>) -> Result<R, Error>,
) -> Result<R, Error> {
    Spi::connect_mut(|client| {
        let _here = placement::enter(client, user_id, Access::Write, function)?;
        f(client)
    })
}

/// Reads only (read-only SPI, no transaction id), so it is STABLE, PARALLEL SAFE and works on
/// a hot standby.
#[pg_extern(stable, parallel_safe)]
fn check_user_quota(
    user_id: Option<i64>,
    feature_code: Option<&str>,
) -> one_row::TableIterator<(
    name!(has_quota, bool),
    name!(current_usage, i32),
    name!(quota_limit, i32),
    name!(remaining, i32),
    name!(percentage, Option<AnyNumeric>),
)> {
    crate::error::guard(|| {
        let subject = subject("check_user_quota", user_id, feature_code);
        let status =
            reading(subject.user_id, "check_user_quota", |client| quota::check(client, &subject))
                .or_raise();
        let (usage, limit, remaining) = status.int4_figures();
        one_row::TableIterator::once((
            status.has_quota,
            usage,
            limit,
            remaining,
            percentage(&status),
        ))
    })
}

/// Whether the user has the feature now: a boolean feature that is on, a config feature with a
/// value other than JSON null, a metered or gauge feature whose limit is not 0 (however much
/// of it is used). False without an active subscription. Reads as [`check_user_quota`] does.
#[pg_extern(stable, parallel_safe)]
fn has_feature(user_id: Option<i64>, feature_code: Option<&str>) -> bool {
    crate::error::guard(|| {
        let subject = subject("has_feature", user_id, feature_code);
        let value = reading(subject.user_id, "has_feature", |client| {
            quota::entitlement_of(client, &subject)
        })
        .or_raise();
        value.is_some_and(|e| e.is_on())
    })
}

/// The user's value of a feature now, by the precedence of its kind: a config feature's JSON
/// value, a boolean feature's true or false, a metered or gauge feature's limit (-1:
/// unlimited). NULL without an active subscription or where no source gives a value.
#[pg_extern(stable, parallel_safe)]
fn feature_value(user_id: Option<i64>, feature_code: Option<&str>) -> Option<pgrx::JsonB> {
    crate::error::guard(|| {
        let subject = subject("feature_value", user_id, feature_code);
        let value = reading(subject.user_id, "feature_value", |client| {
            quota::entitlement_of(client, &subject)
        })
        .or_raise();
        value.map(|e| pgrx::JsonB(e.to_json()))
    })
}

/// How the reading functions reach each table at this point of this transaction: `cache` (the
/// backend's copy), `index` (read through an index, no statement) or `sql` (a statement), with
/// the reason.
#[pg_extern(stable, parallel_safe)]
fn read_paths() -> TableIterator<
    'static,
    (name!(table_name, String), name!(read_by, String), name!(detail, String)),
> {
    crate::error::guard(|| TableIterator::new(Spi::connect(crate::read::paths)))
}

#[pg_extern(stable, parallel_safe)]
fn get_user_storage_quota(user_id: Option<i64>) -> i64 {
    crate::error::guard(|| {
        let user_id = required(user_id, "get_user_storage_quota", "user_id");
        reading(user_id, "get_user_storage_quota", |client| quota::storage_bytes(client, user_id))
            .or_raise()
    })
}

/// VOLATILE and PARALLEL UNSAFE: it writes. The writers are SECURITY DEFINER with a pinned
/// search_path, so an app role needs EXECUTE on them and no write privilege on any table
/// (sql/privileges.sql); every name they use is schema-qualified besides.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_feature_usage(
    user_id: Option<i64>,
    feature_code: Option<&str>,
    resource_type: default!(Option<&str>, "NULL"),
    resource_id: default!(Option<i64>, "NULL"),
    amount: default!(Option<i32>, 1),
    metadata: default!(Option<RawJsonb>, "NULL"),
    idempotency_key: default!(Option<&str>, "NULL"),
) -> bool {
    crate::error::guard(|| {
        let subject = subject("record_feature_usage", user_id, feature_code);
        let recording = Recording {
            subject: &subject,
            amount: required(amount, "record_feature_usage", "amount"),
            idempotency_key,
            resource_type,
            resource_id,
            metadata,
        };
        writing(subject.user_id, "record_feature_usage", |client| quota::record(client, recording))
            .or_raise();
        true
    })
}

/// Check and record in one atomic step: never exceeds the limit, whatever the concurrency.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn consume(
    user_id: Option<i64>,
    feature_code: Option<&str>,
    amount: default!(Option<i32>, 1),
    idempotency_key: default!(Option<&str>, "NULL"),
    resource_type: default!(Option<&str>, "NULL"),
    resource_id: default!(Option<i64>, "NULL"),
    metadata: default!(Option<RawJsonb>, "NULL"),
) -> one_row::TableIterator<(
    name!(allowed, bool),
    name!(current_usage, i32),
    name!(quota_limit, i32),
    name!(remaining, i32),
)> {
    crate::error::guard(|| {
        let subject = subject("consume", user_id, feature_code);
        let recording = Recording {
            subject: &subject,
            amount: required(amount, "consume", "amount"),
            idempotency_key,
            resource_type,
            resource_id,
            metadata,
        };
        let consumed =
            writing(subject.user_id, "consume", |client| quota::consume(client, recording))
                .or_raise();
        let (usage, limit, remaining) = consumed.status.int4_figures();
        one_row::TableIterator::once((consumed.allowed, usage, limit, remaining))
    })
}

/// Holds units for work that runs outside any transaction, when what is left covers them: an
/// active hold counts against every check, use and reserve until it is settled, released or
/// expires.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn reserve(
    user_id: Option<i64>,
    feature_code: Option<&str>,
    amount: Option<i32>,
    ttl: default!(Option<Interval>, "'10 minutes'"),
    idempotency_key: default!(Option<&str>, "NULL"),
) -> one_row::TableIterator<(
    name!(allowed, bool),
    name!(reservation_id, Option<i64>),
    name!(remaining, i32),
    name!(expires_at, Option<TimestampWithTimeZone>),
)> {
    crate::error::guard(|| {
        let subject = subject("reserve", user_id, feature_code);
        let reserving = Reserving {
            subject: &subject,
            amount: required(amount, "reserve", "amount"),
            ttl: required(ttl, "reserve", "ttl"),
            idempotency_key,
        };
        let r =
            writing(subject.user_id, "reserve", |client| reservations::reserve(client, reserving))
                .or_raise();
        let (_, _, remaining) = r.status.int4_figures();
        one_row::TableIterator::once((r.allowed, r.id, remaining, r.expires_at))
    })
}

/// Records the actual use of a hold and gives the rest back.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn settle(
    reservation_id: Option<i64>,
    actual_amount: Option<i32>,
    resource_type: default!(Option<&str>, "NULL"),
    resource_id: default!(Option<i64>, "NULL"),
    metadata: default!(Option<RawJsonb>, "NULL"),
) -> one_row::TableIterator<(
    name!(settled, bool),
    name!(usage_record_id, Option<i64>),
    name!(released_amount, i64),
)> {
    crate::error::guard(|| {
        settled(None, reservation_id, actual_amount, resource_type, resource_id, metadata)
    })
}

/// Both forms of `settle`: by the hold's id alone (`user` None), or with the user it must be of,
/// at the place of that user's rows.
fn settled(
    user: Option<i64>,
    reservation_id: Option<i64>,
    actual_amount: Option<i32>,
    resource_type: Option<&str>,
    resource_id: Option<i64>,
    metadata: Option<RawJsonb>,
) -> one_row::TableIterator<(bool, Option<i64>, i64)> {
    let settling = Settling {
        user,
        id: required(reservation_id, "settle", "reservation_id"),
        amount: required(actual_amount, "settle", "actual_amount"),
        resource_type,
        resource_id,
        metadata,
    };
    let settle = |client: &mut SpiClient<'_>| reservations::settle(client, settling);
    let s = match user {
        Some(user_id) => writing(user_id, "settle", settle),
        None => Spi::connect_mut(settle),
    }
    .or_raise();
    one_row::TableIterator::once((s.settled, s.record_id, s.released))
}

/// Gives a hold's units back at once: true when it ended an active hold.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn release(reservation_id: Option<i64>) -> bool {
    crate::error::guard(|| {
        let id = required(reservation_id, "release", "reservation_id");
        Spi::connect_mut(|client| reservations::release(client, None, id)).or_raise()
    })
}

/// settle(reservation_id, ...) of a hold of the user named, so that a Citus cluster sends the
/// call to the user's worker.
#[pg_extern(volatile, parallel_unsafe, security_definer, name = "settle")]
#[search_path(pg_catalog, pg_temp)]
fn settle_of_user(
    user_id: Option<i64>,
    reservation_id: Option<i64>,
    actual_amount: Option<i32>,
    resource_type: default!(Option<&str>, "NULL"),
    resource_id: default!(Option<i64>, "NULL"),
    metadata: default!(Option<RawJsonb>, "NULL"),
) -> one_row::TableIterator<(
    name!(settled, bool),
    name!(usage_record_id, Option<i64>),
    name!(released_amount, i64),
)> {
    crate::error::guard(|| {
        let user = Some(required(user_id, "settle", "user_id"));
        settled(user, reservation_id, actual_amount, resource_type, resource_id, metadata)
    })
}

/// release(reservation_id) of a hold of the user named, so that a Citus cluster sends the call
/// to the user's worker.
#[pg_extern(volatile, parallel_unsafe, security_definer, name = "release")]
#[search_path(pg_catalog, pg_temp)]
fn release_of_user(user_id: Option<i64>, reservation_id: Option<i64>) -> bool {
    crate::error::guard(|| {
        let user_id = required(user_id, "release", "user_id");
        let id = required(reservation_id, "release", "reservation_id");
        writing(user_id, "release", |client| reservations::release(client, Some(user_id), id))
            .or_raise()
    })
}

/// Counts a running count (a feature of kind gauge) down, never below zero, ledgered.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn release_usage(
    user_id: Option<i64>,
    feature_code: Option<&str>,
    amount: default!(Option<i32>, 1),
    idempotency_key: default!(Option<&str>, "NULL"),
    resource_type: default!(Option<&str>, "NULL"),
    resource_id: default!(Option<i64>, "NULL"),
    metadata: default!(Option<RawJsonb>, "NULL"),
) -> one_row::TableIterator<(
    name!(released, i64),
    name!(current_usage, i32),
    name!(quota_limit, i32),
    name!(remaining, i32),
)> {
    crate::error::guard(|| {
        let subject = subject("release_usage", user_id, feature_code);
        let recording = Recording {
            subject: &subject,
            amount: required(amount, "release_usage", "amount"),
            idempotency_key,
            resource_type,
            resource_id,
            metadata,
        };
        let r =
            writing(subject.user_id, "release_usage", |client| quota::release(client, recording))
                .or_raise();
        let (usage, limit, remaining) = r.status.int4_figures();
        one_row::TableIterator::once((r.released, usage, limit, remaining))
    })
}

fn refund(target: RecordRef<'_>) -> (i64, i32, TimestampWithTimeZone, bool) {
    let refund = |client: &mut SpiClient<'_>| quota::refund(client, target);
    let (r, newly) = match target {
        RecordRef::Key { user_id, .. } | RecordRef::Id { user_id: Some(user_id), .. } => {
            writing(user_id, "refund_usage", refund)
        }
        // By id alone: no user to place the call by, so it names the tables (one server).
        RecordRef::Id { user_id: None, .. } => Spi::connect_mut(refund),
    }
    .or_raise();
    (r.id, r.amount, r.period_start, newly)
}

/// Refunds one usage record (by id) into the period it counted toward.
#[pg_extern(volatile, parallel_unsafe, security_definer, name = "refund_usage")]
#[search_path(pg_catalog, pg_temp)]
fn refund_usage_by_id(
    usage_record_id: Option<i64>,
) -> one_row::TableIterator<(
    name!(refund_id, i64),
    name!(refunded_amount, i32),
    name!(period_start, TimestampWithTimeZone),
    name!(newly_refunded, bool),
)> {
    crate::error::guard(|| {
        let id = required(usage_record_id, "refund_usage", "usage_record_id");
        one_row::TableIterator::once(refund(RecordRef::Id { user_id: None, id }))
    })
}

/// Refunds one usage record of a user, by its id: as refund_usage(usage_record_id), with the
/// user named, so that a Citus cluster sends the call to the user's worker.
#[pg_extern(volatile, parallel_unsafe, security_definer, name = "refund_usage")]
#[search_path(pg_catalog, pg_temp)]
fn refund_usage_of_user(
    user_id: Option<i64>,
    usage_record_id: Option<i64>,
) -> one_row::TableIterator<(
    name!(refund_id, i64),
    name!(refunded_amount, i32),
    name!(period_start, TimestampWithTimeZone),
    name!(newly_refunded, bool),
)> {
    crate::error::guard(|| {
        one_row::TableIterator::once(refund(RecordRef::Id {
            user_id: Some(required(user_id, "refund_usage", "user_id")),
            id: required(usage_record_id, "refund_usage", "usage_record_id"),
        }))
    })
}

/// Refunds the usage recorded under an idempotency key.
#[pg_extern(volatile, parallel_unsafe, security_definer, name = "refund_usage")]
#[search_path(pg_catalog, pg_temp)]
fn refund_usage_by_key(
    user_id: Option<i64>,
    idempotency_key: Option<&str>,
) -> one_row::TableIterator<(
    name!(refund_id, i64),
    name!(refunded_amount, i32),
    name!(period_start, TimestampWithTimeZone),
    name!(newly_refunded, bool),
)> {
    crate::error::guard(|| {
        one_row::TableIterator::once(refund(RecordRef::Key {
            user_id: required(user_id, "refund_usage", "user_id"),
            key: required(idempotency_key, "refund_usage", "idempotency_key"),
        }))
    })
}

fn adjust(
    function: &'static str,
    user_id: Option<i64>,
    feature_code: Option<&str>,
    new_value: Option<i64>,
    reason: Option<&str>,
    actor: Option<&str>,
) -> (Option<i32>, Option<i32>) {
    let subject = subject(function, user_id, feature_code);
    let reason = required(reason, function, "reason");
    let actor = required(actor, function, "actor");
    writing(subject.user_id, function, |client| {
        quota::adjust(client, function, &subject, new_value, reason, actor)
    })
    .or_raise()
}

/// Carries the user's current billing-cycle usage into the current period. The triggers do it
/// after every change of a subscription or the time zone; this is for a period that moved by
/// the clock alone (a pre-created subscription with another anchor that has started).
/// SECURITY INVOKER: it reads with the caller's rights; its writes run as the tables' owner.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn carry_usage(user_id: Option<i64>) {
    let user_id = required(user_id, "carry_usage", "user_id");
    writing(user_id, "carry_usage", |client| crate::continuity::follow(client, user_id, None))
        .or_raise()
}

/// Internal to the trigger pg_entitlements_wait_for_uses: creates, empty, the missing counters
/// of the user's current billing period, before a change that can move it locks them.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn hold_current_periods(user_id: Option<i64>) {
    let user_id = required(user_id, "hold_current_periods", "user_id");
    writing(user_id, "hold_current_periods", |client| crate::continuity::hold(client, user_id))
        .or_raise()
}

/// Internal to quota.tick(): creates the rollover grant the user's current period of a feature
/// starts with, when one is due and not created yet, as the period's first write would
/// (`quota::judge`); nothing otherwise, nor without an active subscription.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn create_due_rollover(user_id: Option<i64>, feature_code: Option<&str>) {
    let subject = subject("create_due_rollover", user_id, feature_code);
    writing(subject.user_id, "create_due_rollover", |client| {
        quota::judge(client, &subject, quota::Read::First).map(|_| ())
    })
    .or_raise()
}

/// Sets one custom quota of the user's active subscription, audited in quota.quota_adjustments.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn adjust_quota(
    user_id: Option<i64>,
    feature_code: Option<&str>,
    new_value: Option<i64>,
    reason: Option<&str>,
    actor: default!(Option<&str>, "current_user"),
) -> one_row::TableIterator<(name!(old_value, Option<i32>), name!(new_value, Option<i32>))> {
    crate::error::guard(|| {
        let value = required(new_value, "adjust_quota", "new_value");
        one_row::TableIterator::once(adjust(
            "adjust_quota",
            user_id,
            feature_code,
            Some(value),
            reason,
            actor,
        ))
    })
}

/// Removes one custom quota, so the plan (or the catalog default) applies again; audited.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn clear_custom_quota(
    user_id: Option<i64>,
    feature_code: Option<&str>,
    reason: Option<&str>,
    actor: default!(Option<&str>, "current_user"),
) -> one_row::TableIterator<(name!(old_value, Option<i32>), name!(new_value, Option<i32>))> {
    crate::error::guard(|| {
        one_row::TableIterator::once(adjust(
            "clear_custom_quota",
            user_id,
            feature_code,
            None,
            reason,
            actor,
        ))
    })
}

#[pg_extern(stable, parallel_safe)]
fn get_quota_period(
    user_id: Option<i64>,
    feature_code: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(period_start, TimestampWithTimeZone),
        name!(period_end, TimestampWithTimeZone),
        name!(cycle, String),
    ),
> {
    crate::error::guard(|| {
        let user_id = required(user_id, "get_quota_period", "user_id");
        let period = reading(user_id, "get_quota_period", |client| {
            quota::current_period(client, user_id, feature_code)
        })
        .or_raise();
        let row = period
            .map(|p| quota::period_bounds(&p).map(|(start, end)| (start, end, p.kind().to_owned())))
            .transpose()
            .or_raise();
        TableIterator::new(row)
    })
}

/// The plan of the subscription that counts for the user now, by the rules every read follows;
/// for the catalog triggers (sql/catalog.sql), which must not state those rules again.
#[pg_extern(stable, parallel_safe)]
fn counting_plan(user_id: Option<i64>) -> Option<i64> {
    crate::error::guard(|| {
        let user_id = required(user_id, "counting_plan", "user_id");
        reading(user_id, "counting_plan", |client| crate::read::counting_plan(client, user_id))
            .or_raise()
    })
}

/// Where the user's limit of a feature comes from now: `custom_quotas`, `plan_features` or
/// `features.default_limit` (NULL: no active subscription, or no limit).
#[pg_extern(stable, parallel_safe)]
fn limit_source(user_id: Option<i64>, feature_code: Option<&str>) -> Option<String> {
    crate::error::guard(|| {
        let subject = subject("limit_source", user_id, feature_code);
        reading(subject.user_id, "limit_source", |client| quota::limit_source(client, &subject))
            .or_raise()
            .map(str::to_owned)
    })
}

/// Whether a row version (a ctid) of a table is still the committed one now, whatever the
/// caller's snapshot: the writers ask it of the subscription row they read once their counter
/// is locked (src/store.rs, use_sql). VOLATILE: each call judges the row anew. STRICT: a NULL
/// row version is no version. Needs SELECT on the table.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn row_is_current(rel: pg_sys::Oid, version: pg_sys::ItemPointerData) -> bool {
    crate::error::guard(|| crate::read::probe::is_current(rel, version))
}

/// Every catalog feature's figures for one user in one call.
// pgrx reads the result's column names from the signature itself: no type alias.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
fn usage_overview(
    user_id: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(feature_code, String),
        name!(feature_name, String),
        name!(unit, String),
        name!(has_quota, bool),
        name!(current_usage, i64),
        name!(quota_limit, i64),
        name!(remaining, i64),
        name!(percentage, Option<AnyNumeric>),
        name!(period_start, Option<TimestampWithTimeZone>),
        name!(period_end, Option<TimestampWithTimeZone>),
        name!(cycle, Option<String>),
        name!(allowance, i64),
        name!(allowance_used, i64),
        name!(grants, pgrx::JsonB),
        name!(held, i64),
        name!(overage_limit, Option<i64>),
        name!(overage_used, i64),
        name!(kind, String),
        name!(next_reset, Option<TimestampWithTimeZone>),
        name!(value, Option<pgrx::JsonB>),
        name!(limits, pgrx::JsonB),
    ),
> {
    crate::error::guard(|| {
        let user_id = required(user_id, "usage_overview", "user_id");
        let lines = reading(user_id, "usage_overview", |client| quota::overview(client, user_id))
            .or_raise();
        let rows: Vec<_> = lines
            .into_iter()
            .map(|o| {
                let bounds = o.period.as_ref().map(quota::period_bounds).transpose().or_raise();
                let limits = quota::limits_json(&o).or_raise();
                (
                    o.feature,
                    o.name,
                    o.unit,
                    o.status.has_quota,
                    o.status.current_usage,
                    o.status.quota_limit,
                    o.status.remaining,
                    percentage(&o.status),
                    bounds.map(|b| b.0),
                    bounds.map(|b| b.1),
                    o.period.map(|p| p.kind().to_owned()),
                    o.allowance.quota_limit,
                    o.allowance.current_usage,
                    pgrx::JsonB(serde_json::Value::Array(
                        o.grants
                            .iter()
                            .map(|g| {
                                serde_json::json!({
                                    "grant_id": g.created.then_some(g.balance.id),
                                    "source": g.source,
                                    "amount": g.amount,
                                    "remaining": g.balance.remaining,
                                    "priority": g.balance.priority,
                                    "expires_at": g.expires_at.map(|t| t.to_iso_string()),
                                })
                            })
                            .collect(),
                    )),
                    o.held,
                    o.overage.map(entitlements_core::Limit::as_i64),
                    o.overage_used,
                    o.kind.as_str().to_owned(),
                    // When the usage starts again from zero: the end of a period that resets.
                    o.period.filter(|p| p.rule.resets()).and(bounds).map(|b| b.1),
                    o.value.map(pgrx::JsonB),
                    pgrx::JsonB(limits),
                )
            })
            .collect();
        TableIterator::new(rows)
    })
}

/// `pg_notify(channel, payload)` for the events the extension's SQL functions raise: on a Citus
/// cluster held by the backend until the transaction commits ([`crate::notices`]), so that a
/// transaction Citus commits in two phases can be prepared.
#[pg_extern(volatile, parallel_unsafe, strict)]
fn announce(channel: &str, payload: &str) {
    crate::error::guard(|| {
        Spi::connect(|client| crate::notices::announce(client, channel, payload)).or_raise()
    })
}

/// `pg_entitlements.tick_by_user`: quota.tick() runs user by user on one server too, as on a
/// Citus cluster (read by the tick with current_setting()).
pub static TICK_BY_USER: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Whether the extension's tables are laid out over a Citus cluster (quota.distribute()): for
/// quota.tick(), which then runs its steps user by user on the users' workers.
#[pg_extern(stable, parallel_safe)]
fn distributed() -> bool {
    crate::error::guard(|| Spi::connect(crate::placement::distributed).or_raise())
}

/// On a Citus cluster, for each hash range this node serves on its own, the qualified names of
/// the shards there of `tables` (tables of schema quota by name; a reference table: this
/// node's copy): where the catalog triggers, which fire on each node's copy of a reference
/// table, act on that node's users ([`placement::local_shards`]). No row on one server.
/// Volatile: it takes Citus' placement lock on those shards, which blocks shard moves until the
/// transaction ends; not for PUBLIC (privileges.sql).
#[pg_extern(volatile, parallel_unsafe, strict)]
fn local_shards(tables: Vec<Option<String>>) -> SetOfIterator<'static, Vec<Option<String>>> {
    crate::error::guard(|| {
        SetOfIterator::new(
            Spi::connect(|client| placement::local_shards(client, &tables)).or_raise(),
        )
    })
}

/// Whether `time_zone` is a zone name the period arithmetic knows (the CHECK of
/// quota.settings.time_zone). IMMUTABLE like PostgreSQL's own time zone functions.
#[pg_extern(immutable, parallel_safe, strict)]
fn is_valid_time_zone(time_zone: &str) -> bool {
    crate::error::guard(|| period::time_zone(time_zone).is_ok())
}

/// The CHECK of `window_limits` in quota.features and quota.plan_features: true for a document
/// of windows and limits ([`entitlements_core::windows::parse`]), the reason as an error
/// otherwise (a CHECK that only failed would not say what is wrong). STRICT: NULL sets none.
#[pg_extern(immutable, parallel_safe, strict)]
fn valid_window_limits(window_limits: RawJsonb) -> bool {
    crate::error::guard(|| {
        entitlements_core::windows::parse("window_limits", &window_limits.to_text()).or_raise();
        true
    })
}

/// The pure window arithmetic, for previews and tests: the calendar window (`hour`, `day`,
/// `week`, `month` or `year`) containing `at`, in local time of `time_zone`. IMMUTABLE like
/// [`anniversary_period`].
#[pg_extern(immutable, parallel_safe, strict)]
fn calendar_window(
    window: &str,
    at: TimestampWithTimeZone,
    time_zone: default!(&str, "'UTC'"),
) -> one_row::TableIterator<(
    name!(window_start, TimestampWithTimeZone),
    name!(window_end, TimestampWithTimeZone),
)> {
    crate::error::guard(|| {
        one_row::TableIterator::once(quota::calendar_window(window, at, time_zone).or_raise())
    })
}

/// The pure period arithmetic, for previews and tests: the anniversary period of `anchor`
/// containing `at`, before clamping to a subscription. IMMUTABLE like PostgreSQL's own
/// time zone conversions (it depends only on its arguments and the time zone database).
#[pg_extern(immutable, parallel_safe, strict)]
fn anniversary_period(
    anchor: TimestampWithTimeZone,
    cycle: &str,
    at: TimestampWithTimeZone,
    time_zone: default!(&str, "'UTC'"),
) -> one_row::TableIterator<(
    name!(period_start, TimestampWithTimeZone),
    name!(period_end, TimestampWithTimeZone),
)> {
    crate::error::guard(|| {
        one_row::TableIterator::once(quota::anniversary(anchor, cycle, at, time_zone).or_raise())
    })
}
