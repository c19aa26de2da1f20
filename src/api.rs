//! The SQL functions. Each one only converts arguments, calls [`crate::quota`] and converts
//! the answer back. Arguments are `Option`s, so the functions are not STRICT on purpose: a NULL
//! user or feature is an error (22004) that names the argument, not a silent NULL result.

use crate::error::OrRaise;
use crate::quota::{self, Recording};
use entitlements_core::{period, Cycle, Error, Subject};
use pgrx::datum::{AnyNumeric, JsonB, TimestampWithTimeZone};
use pgrx::prelude::*;

fn required<T>(value: Option<T>, function: &'static str, argument: &'static str) -> T {
    value
        .ok_or(Error::NullArgument { function, argument })
        .or_raise()
}

fn subject(function: &'static str, user_id: Option<i64>, feature: Option<&str>) -> Subject {
    Subject {
        user_id: required(user_id, function, "user_id"),
        feature: required(feature, function, "feature_code").to_owned(),
    }
}

/// Reads only (read-only SPI, no transaction id), so it is STABLE, PARALLEL SAFE and works on
/// a hot standby.
#[pg_extern(stable, parallel_safe)]
fn check_user_quota(
    user_id: Option<i64>,
    feature_code: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(has_quota, bool),
        name!(current_usage, i32),
        name!(quota_limit, i32),
        name!(remaining, i32),
        name!(percentage, AnyNumeric),
    ),
> {
    let subject = subject("check_user_quota", user_id, feature_code);
    let status = Spi::connect(|client| quota::check(client, &subject)).or_raise();
    let (usage, limit, remaining) = status.int4_figures(&subject).or_raise();
    let percentage = AnyNumeric::try_from(status.percentage_text().as_str())
        .expect("percentage_text is numeric text");
    TableIterator::once((status.has_quota, usage, limit, remaining, percentage))
}

#[pg_extern(stable, parallel_safe)]
fn get_user_storage_quota(user_id: Option<i64>) -> i64 {
    let user_id = required(user_id, "get_user_storage_quota", "user_id");
    Spi::connect(|client| quota::storage_bytes(client, user_id)).or_raise()
}

/// VOLATILE and PARALLEL UNSAFE: it writes.
#[pg_extern(volatile, parallel_unsafe)]
fn record_feature_usage(
    user_id: Option<i64>,
    feature_code: Option<&str>,
    resource_type: default!(Option<&str>, "NULL"),
    resource_id: default!(Option<i64>, "NULL"),
    amount: default!(Option<i32>, 1),
    metadata: default!(Option<JsonB>, "NULL"),
) -> bool {
    let subject = subject("record_feature_usage", user_id, feature_code);
    let amount = required(amount, "record_feature_usage", "amount");
    Spi::connect_mut(|client| {
        quota::record(
            client,
            Recording {
                subject: &subject,
                resource_type,
                resource_id,
                amount,
                metadata,
            },
        )
    })
    .or_raise();
    true
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
    let user_id = required(user_id, "get_quota_period", "user_id");
    let period =
        Spi::connect(|client| quota::current_period(client, user_id, feature_code)).or_raise();
    TableIterator::new(period.map(|p| {
        let (start, end) = quota::period_bounds(&p);
        (start, end, p.kind().to_owned())
    }))
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
) -> TableIterator<
    'static,
    (
        name!(period_start, TimestampWithTimeZone),
        name!(period_end, TimestampWithTimeZone),
    ),
> {
    let result = (|| {
        let cycle: Cycle = cycle.parse()?;
        let tz = period::time_zone(time_zone)?;
        let (start, end) = period::anniversary_period(
            crate::time::from_pg(anchor)?,
            cycle,
            crate::time::from_pg(at)?,
            &tz,
        )?;
        Ok::<_, Error>((
            crate::time::to_pg(Some(start), true),
            crate::time::to_pg(Some(end), false),
        ))
    })();
    TableIterator::once(result.or_raise())
}
