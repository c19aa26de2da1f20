//! `reserve`, `settle` and `release`: holds on what is left, for work that runs outside any
//! transaction (sql/reservations.sql). Each locks the counter of the hold's period first, then
//! the hold, then the grants, the order every use locks them in; what fits is decided by
//! [`entitlements_core::holds`].

use crate::holds::{self, Hold};
use crate::jsonb::RawJsonb;
use crate::quota::{self, Read, Recording, UseContext};
use crate::store::{self, Use};
use crate::time::to_pg;
use entitlements_core::alerts::Announced;
use entitlements_core::binding::Optional;
use entitlements_core::{keys, Error, QuotaStatus, Subject};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::spi::SpiClient;

/// A hold as `reserve` receives it.
pub struct Reserving<'a> {
    pub subject: &'a Subject,
    pub amount: i32,
    pub ttl: Interval,
    pub idempotency_key: Option<&'a str>,
}

/// The answer of `reserve`.
pub struct Reserved {
    pub allowed: bool,
    pub id: Option<i64>,
    /// What is left once the hold counts.
    pub status: QuotaStatus,
    pub expires_at: Option<TimestampWithTimeZone>,
}

/// Sends a hold's event on channel quota_reservation (version 1 of the payload).
fn announce(
    client: &mut SpiClient<'_>,
    event: &str,
    hold: &Hold,
    settled: Option<(i64, Option<i64>)>,
) -> Result<(), Error> {
    let mut payload = serde_json::json!({
        "version": 1,
        "event": event,
        "reservation_id": hold.id,
        "user_id": hold.user_id,
        "feature_code": hold.feature,
        "amount": hold.amount,
        "expires_at": hold.expires_at.to_string(),
    });
    if let Some((amount, record)) = settled {
        payload["settled_amount"] = amount.into();
        payload["usage_record_id"] = record.into();
    }
    crate::notices::announce(client, "quota_reservation", &payload.to_string())
}

/// A time to live must be positive in each of its parts, and not all zero.
fn validate_ttl(subject: &Subject, ttl: &Interval) -> Result<(), Error> {
    let parts = (ttl.months(), ttl.days(), ttl.micros());
    if parts.0 < 0 || parts.1 < 0 || parts.2 < 0 || parts == (0, 0, 0) {
        return Err(Error::InvalidTtl { subject: subject.clone(), ttl: ttl.to_string() });
    }
    Ok(())
}

/// The recording a hold's judgement reads the subscription for (its amount is not written).
fn recording<'a>(subject: &'a Subject, amount: i32, key: Option<&'a str>) -> Recording<'a> {
    Recording {
        subject,
        amount,
        idempotency_key: key,
        resource_type: None,
        resource_id: None,
        metadata: None,
    }
}

/// `reserve`: holds `amount` units for `ttl` when what is left (the allowance, then the grants,
/// less the active holds) covers them. A retried key returns its hold, holding nothing more.
pub fn reserve(client: &mut SpiClient<'_>, h: Reserving<'_>) -> Result<Reserved, Error> {
    const FUNCTION: &str = "reserve";
    quota::ensure_writable(FUNCTION)?;
    let subject = h.subject;
    quota::validate_amount(subject, h.amount)?;
    validate_ttl(subject, &h.ttl)?;
    if let Some(key) = h.idempotency_key {
        keys::validate_idempotency_key(subject, key)?;
    }
    let refused =
        Reserved { allowed: false, id: None, status: QuotaStatus::NONE, expires_at: None };
    let Some(ctx) = quota::judge(client, subject, Read::First)? else {
        return Ok(refused);
    };
    // A hold claims units of one limit; the windows of a feature with several have no holds.
    if !ctx.windows.is_empty() {
        return Err(Error::SeveralLimits { subject: subject.clone(), function: FUNCTION });
    }
    if !store::has_held(client)? {
        return Err(Error::NotAttachedFor {
            feature: Optional::Reservations,
            schema: store::bound_schema(client)?,
            function: FUNCTION,
        });
    }
    let amount = i64::from(h.amount);
    if let Some(key) = h.idempotency_key {
        if let Some(hold) = holds::by_key(client, subject.user_id, key)? {
            if hold.feature != subject.feature || hold.amount != amount {
                return Err(Error::IdempotencyConflict {
                    subject: subject.clone(),
                    key: key.to_owned(),
                    original: format!(
                        "reservation {} (amount {} of feature \"{}\")",
                        hold.id, hold.amount, hold.feature
                    ),
                    amount,
                });
            }
            return Ok(Reserved {
                allowed: true,
                id: Some(hold.id),
                status: quota::current_status(client, subject, &ctx)?,
                expires_at: Some(hold.expires_at),
            });
        }
    }
    let r = recording(subject, h.amount, h.idempotency_key);
    let step = |client: &mut SpiClient<'_>, ctx: &UseContext| {
        let period = (to_pg(ctx.period.start, true)?, to_pg(ctx.period.end, false)?);
        let Some(locked) = quota::lock_sources(client, subject, period, ctx.read, None)? else {
            return Ok(None);
        };
        let split = entitlements_core::holds::split(amount, &locked.sources(ctx));
        if split.uncovered > 0 {
            return Ok(Some(None));
        }
        let granted = holds::insert(
            client,
            subject.user_id,
            &subject.feature,
            period,
            amount,
            h.ttl,
            h.idempotency_key,
        )?;
        store::add_held(client, subject, period.0, amount)?;
        Ok(Some(Some(granted)))
    };
    let Some((granted, ctx)) = quota::judged(client, FUNCTION, &r, ctx, step)? else {
        return Ok(refused);
    };
    let status = quota::current_status(client, subject, &ctx)?;
    let Some(granted) = granted else {
        return Ok(Reserved { status, ..refused });
    };
    announce(client, "granted", &granted, None)?;
    Ok(Reserved {
        allowed: true,
        id: Some(granted.id),
        status,
        expires_at: Some(granted.expires_at),
    })
}

/// What `settle` gives the work to record.
pub struct Settling<'a> {
    /// The user the hold must be of, when the call names one.
    pub user: Option<i64>,
    pub id: i64,
    pub amount: i32,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<i64>,
    pub metadata: Option<RawJsonb>,
}

/// The answer of `settle`.
pub struct Settled {
    pub settled: bool,
    pub record_id: Option<i64>,
    /// What of the hold went back to what is left.
    pub released: i64,
}

/// `settle`: records the actual use of a hold and gives back the rest. Up to the held amount it
/// always counts while the hold is active; beyond it, and for a hold that expired, only what is
/// left allows (else nothing is recorded: `settled` false). Settling again with the same amount
/// returns the first outcome. It needs an active subscription, as a use does; `release` does
/// not.
pub fn settle(client: &mut SpiClient<'_>, s: Settling<'_>) -> Result<Settled, Error> {
    const FUNCTION: &str = "settle";
    quota::ensure_writable(FUNCTION)?;
    store::ensure_binding(client)?;
    if s.amount < 0 {
        return Err(Error::InvalidSettleAmount { id: s.id, amount: i64::from(s.amount) });
    }
    let Some(found) = holds::find(client, s.user, s.id)? else {
        return Err(Error::ReservationNotFound { id: s.id });
    };
    let subject = Subject { user_id: found.user_id, feature: found.feature.clone() };
    let Some(ctx) = quota::judge(client, &subject, Read::First)? else {
        return Err(Error::NoActiveSubscription { subject });
    };
    // A hold made before the feature got further limits: its use would escape them.
    if !ctx.windows.is_empty() {
        return Err(Error::SeveralLimits { subject, function: FUNCTION });
    }
    let r = Recording {
        subject: &subject,
        amount: s.amount.max(1),
        idempotency_key: None,
        resource_type: s.resource_type,
        resource_id: s.resource_id,
        metadata: s.metadata.clone(),
    };
    let step = |client: &mut SpiClient<'_>, ctx: &UseContext| settle_step(client, &r, ctx, &s);
    let Some(((outcome, announced), ctx)) = quota::judged(client, FUNCTION, &r, ctx, step)? else {
        return Err(Error::NoActiveSubscription { subject });
    };
    if let Some((usage, announced)) = announced {
        quota::announce_thresholds(client, &subject, &ctx, usage, Some(announced))?;
    }
    Ok(outcome)
}

/// What a settle did, and the counter and alert memory a use in the current period left.
type Step = (Settled, Option<(i64, Announced)>);

/// One attempt of [`settle`], judged by `ctx`: `None` when the subscription changed since, or
/// the hold moved to another period meanwhile.
fn settle_step(
    client: &mut SpiClient<'_>,
    r: &Recording<'_>,
    ctx: &UseContext,
    s: &Settling<'_>,
) -> Result<Option<Step>, Error> {
    let subject = r.subject;
    let actual = i64::from(s.amount);
    let Some((counter, hold)) = lock_hold(client, subject, s.id)? else {
        return Ok(None);
    };
    match hold.state.as_str() {
        "settled" => return again(&hold, actual).map(|o| Some((o, None))),
        "released" => return Err(Error::HoldEnded { id: hold.id, state: "released".into() }),
        _ => {}
    }
    if !hold.counts() {
        return settle_expired(client, r, ctx, hold, actual).map(|o| o.map(|o| (o, None)));
    }
    let locked = quota::sources_of_locked(
        client,
        subject,
        hold.period_start,
        counter.usage,
        counter.held,
        Some(hold.id),
    )?;
    let split = entitlements_core::holds::split(actual, &locked.sources(ctx));
    if actual > hold.amount && split.uncovered > 0 {
        return Ok(Some((refused(), None)));
    }
    let (mut record_id, mut announced) = (None, None);
    if actual > 0 {
        let u = Use {
            subject,
            period_start: hold.period_start,
            period_end: counter.period_end,
            amount: s.amount,
            counted: s.amount,
            limit: None,
            resource_type: s.resource_type,
            resource_id: s.resource_id,
            metadata: s.metadata.clone(),
            idempotency_key: None,
        };
        match quota::post(client, u, ctx, counter.usage, &split)? {
            store::Applied::Counted { record_id: id, usage, announced: a, .. } => {
                record_id = id;
                // Threshold alerts, when the hold's period is the one the use is judged in.
                if to_pg(ctx.period.start, true)? == hold.period_start {
                    announced = a.map(|a| (usage, a));
                }
            }
            _ => return Ok(None),
        }
    }
    finish(client, subject, &hold, actual, record_id)?;
    let released = (hold.amount - actual).max(0);
    Ok(Some((Settled { settled: true, record_id, released }, announced)))
}

fn refused() -> Settled {
    Settled { settled: false, record_id: None, released: 0 }
}

/// A hold settled before: the same amount returns the first outcome.
fn again(hold: &Hold, actual: i64) -> Result<Settled, Error> {
    match hold.settled_amount {
        Some(n) if n == actual => Ok(Settled {
            settled: true,
            record_id: hold.record_id,
            released: (hold.amount - actual).max(0),
        }),
        n => Err(Error::HoldEnded {
            id: hold.id,
            state: format!("settled with {}, not {actual}", n.unwrap_or(0)),
        }),
    }
}

/// Ends a hold as settled, takes its units off its counter's holds, and announces it.
fn finish(
    client: &mut SpiClient<'_>,
    subject: &Subject,
    hold: &Hold,
    actual: i64,
    record_id: Option<i64>,
) -> Result<(), Error> {
    if holds::end(client, hold, "settled", Some((actual, record_id)))? {
        store::add_held(client, subject, hold.period_start, -hold.amount)?;
    }
    announce(client, "settled", hold, Some((actual, record_id)))
}

/// A hold past its expiry (its counter and itself locked): its units no longer count, and the
/// actual use counts as a new use in the current period, when what is left allows it. Refused,
/// the hold is marked expired and nothing is recorded.
fn settle_expired(
    client: &mut SpiClient<'_>,
    r: &Recording<'_>,
    ctx: &UseContext,
    hold: Hold,
    actual: i64,
) -> Result<Option<Settled>, Error> {
    let subject = r.subject;
    if actual == 0 {
        finish(client, subject, &hold, 0, None)?;
        return Ok(Some(Settled { settled: true, record_id: None, released: hold.amount }));
    }
    // A feature with several limits has no holds: no window figures come back.
    match quota::apply(client, r, ctx, true, true)?.0 {
        store::Applied::Stale => Ok(None),
        store::Applied::Refused { .. } => {
            if holds::end(client, &hold, "expired", None)? {
                store::add_held(client, subject, hold.period_start, -hold.amount)?;
            }
            Ok(Some(refused()))
        }
        store::Applied::Counted { record_id, .. } => {
            finish(client, subject, &hold, actual, record_id)?;
            Ok(Some(Settled { settled: true, record_id, released: (hold.amount - actual).max(0) }))
        }
    }
}

/// Locks a hold's counter, then the hold: the order of the uses, which lock the counter and then
/// reclaim its expired holds. `None` when a change of the billing period moved the hold to
/// another counter between the two (its state is then read again).
fn lock_hold(
    client: &SpiClient<'_>,
    subject: &Subject,
    id: i64,
) -> Result<Option<(store::CounterRow, Hold)>, Error> {
    let found = store::must(holds::find(client, Some(subject.user_id), id)?, "the hold")?;
    let counter = store::lock_one_counter(client, subject, found.period_start)?;
    let counter = store::must(counter, "the counter of a hold")?;
    let hold = store::must(holds::lock(client, subject.user_id, id)?, "the hold")?;
    Ok((hold.period_start == found.period_start).then_some((counter, hold)))
}

/// `release`: gives a hold's units back at once. True when this call ended an active hold;
/// false for a hold that had expired, or was settled or released already.
pub fn release(client: &mut SpiClient<'_>, user: Option<i64>, id: i64) -> Result<bool, Error> {
    quota::ensure_writable("release")?;
    store::ensure_binding(client)?;
    let Some(found) = holds::find(client, user, id)? else {
        return Err(Error::ReservationNotFound { id });
    };
    let subject = Subject { user_id: found.user_id, feature: found.feature };
    let mut locked = None;
    for _ in 0..quota::LOCKED_READS {
        locked = lock_hold(client, &subject, id)?;
        if locked.is_some() {
            break;
        }
    }
    let Some((_, hold)) = locked else {
        return Err(Error::SubscriptionChanged { subject });
    };
    if hold.state != "held" {
        return Ok(false);
    }
    let active = hold.counts();
    let state = if active { "released" } else { "expired" };
    if holds::end(client, &hold, state, None)? {
        store::add_held(client, &subject, hold.period_start, -hold.amount)?;
    }
    if active {
        announce(client, "released", &hold, None)?;
    }
    Ok(active)
}
