//! Billing periods: usage resets on the subscription's anniversary, not the calendar month.
//!
//! The anchor is `quota_reset_anchor`, else the subscription's `start_date`. Boundary `k` is the
//! anchor's local date and time plus `k` cycles (1 or 12 months), always counted from the
//! anchor itself, so month ends clamp without drifting: an anchor on Jan 31 gives Feb 28 (29 in
//! leap years), then Mar 31 again. Local times are taken in one configured time zone (never the
//! session's), so a period starts at the same wall-clock time across daylight-saving changes;
//! a wall-clock time that does not exist on a given day (a spring-forward gap) resolves the way
//! PostgreSQL's own `timestamp AT TIME ZONE` does, to the later side of the gap. Periods are
//! half-open `[start, end)`.
//!
//! A period belongs to the anchor, not to a subscription row: its start is the anniversary
//! itself, even when the subscription started later, because the start is what names the
//! period's usage counter. A renewal or upgrade written as a new row that keeps the anchor
//! therefore continues the same period and counter, where a start clamped to the new row's
//! `start_date` would name a fresh, empty one. Only the end is clamped, to the subscription's
//! `end_date`: the quota in force ends with the subscription. Usage that never resets
//! (`subscription` and `never` rules) has one period for good, across every subscription of
//! the user.

use crate::error::{Error, Result};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use std::str::FromStr;

/// How long one billing cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cycle {
    Monthly,
    Yearly,
}

impl Cycle {
    fn months(self) -> i64 {
        match self {
            Cycle::Monthly => 1,
            Cycle::Yearly => 12,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cycle::Monthly => "monthly",
            Cycle::Yearly => "yearly",
        }
    }
}

impl FromStr for Cycle {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "monthly" | "month" => Ok(Cycle::Monthly),
            "yearly" | "year" | "annual" | "annually" => Ok(Cycle::Yearly),
            _ => Err(Error::InvalidCycle { value: s.to_owned() }),
        }
    }
}

/// When a feature's usage counter starts again from zero (`quota.features.reset_rule`, or a
/// plan feature's own `reset_rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetRule {
    /// Every billing cycle, on the anniversary of the anchor.
    BillingCycle,
    /// Every calendar hour, day, ISO week, month or year in the configured time zone.
    Calendar(Window),
    /// Storage and connected platform accounts: like `Never`, one counter for good, kept
    /// across every subscription of the user (the name is the seed application's).
    Subscription,
    /// Never: one counter for the user's whole life.
    Never,
}

/// A calendar window, in local time of the configured zone: an hour, a day from midnight, an
/// ISO week from Monday's midnight, a month from the 1st, a year from January 1st.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl ResetRule {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetRule::BillingCycle => "billing_cycle",
            ResetRule::Calendar(Window::Hour) => "hour",
            ResetRule::Calendar(Window::Day) => "day",
            ResetRule::Calendar(Window::Week) => "week",
            ResetRule::Calendar(Window::Month) => "month",
            ResetRule::Calendar(Window::Year) => "year",
            ResetRule::Subscription => "subscription",
            ResetRule::Never => "never",
        }
    }

    /// Whether the usage resets at all (a period before the current one exists).
    pub fn resets(self) -> bool {
        matches!(self, ResetRule::BillingCycle | ResetRule::Calendar(_))
    }
}

impl FromStr for ResetRule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "billing_cycle" => Ok(ResetRule::BillingCycle),
            "hour" => Ok(ResetRule::Calendar(Window::Hour)),
            "day" => Ok(ResetRule::Calendar(Window::Day)),
            "week" => Ok(ResetRule::Calendar(Window::Week)),
            "month" => Ok(ResetRule::Calendar(Window::Month)),
            "year" => Ok(ResetRule::Calendar(Window::Year)),
            "subscription" => Ok(ResetRule::Subscription),
            "never" => Ok(ResetRule::Never),
            _ => Err(Error::InvalidResetRule { value: s.to_owned() }),
        }
    }
}

/// What the period computation needs to know about a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub start: Timestamp,
    /// `None`: open-ended (`end_date = 'infinity'`).
    pub end: Option<Timestamp>,
    /// `quota_reset_anchor`; `None` means the start date.
    pub anchor: Option<Timestamp>,
    pub cycle: Cycle,
}

/// A usage period. `None` bounds are infinite (`-infinity` / `infinity` in PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub rule: ResetRule,
    /// The cycle, for billing-cycle periods.
    pub cycle: Option<Cycle>,
}

impl Period {
    /// The name of the period kind as `get_quota_period` reports it.
    pub fn kind(&self) -> &'static str {
        match self.cycle {
            Some(c) => c.as_str(),
            None => self.rule.as_str(),
        }
    }
}

/// Looks a time zone up in the system time zone database (the one Debian's PostgreSQL uses).
pub fn time_zone(name: &str) -> Result<TimeZone> {
    if name.eq_ignore_ascii_case("UTC") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| Error::InvalidTimeZone { value: name.to_owned() })
}

fn out_of_range(e: jiff::Error) -> Error {
    Error::PeriodOutOfRange { detail: e.to_string() }
}

/// Boundary `k` after the anchor, in UTC.
fn boundary(anchor_local: DateTime, cycle: Cycle, k: i64, tz: &TimeZone) -> Result<Timestamp> {
    let local = anchor_local.checked_add((k * cycle.months()).months()).map_err(out_of_range)?;
    // `compatible` moves a time inside a spring-forward gap forward by the gap and takes the
    // earlier of two times in a fall-back fold, as PostgreSQL does.
    tz.to_ambiguous_timestamp(local).compatible().map_err(out_of_range)
}

/// The anniversary period `[start, end)` that contains `at`, before clamping.
pub fn anniversary_period(
    anchor: Timestamp,
    cycle: Cycle,
    at: Timestamp,
    tz: &TimeZone,
) -> Result<(Timestamp, Timestamp)> {
    let anchor_local = tz.to_datetime(anchor);
    let at_local = tz.to_datetime(at);
    let months = i64::from(at_local.year() - anchor_local.year()) * 12
        + i64::from(at_local.month() - anchor_local.month());
    let mut k = months.div_euclid(cycle.months());
    // The estimate is off by at most one cycle (day and time of month, DST); settle it.
    while boundary(anchor_local, cycle, k, tz)? > at {
        k -= 1;
    }
    while boundary(anchor_local, cycle, k + 1, tz)? <= at {
        k += 1;
    }
    Ok((boundary(anchor_local, cycle, k, tz)?, boundary(anchor_local, cycle, k + 1, tz)?))
}

/// The calendar window `[start, end)` of `window` that contains `at`, in local time of `tz`. A
/// local time that does not exist (a spring-forward gap) resolves to the later side of the
/// gap and one that exists twice (a fall-back fold) to the earlier, as PostgreSQL does: a day
/// of a daylight-saving change lasts 23 or 25 hours, and the windows tile time without gaps or
/// overlaps.
pub fn calendar_window(
    window: Window,
    at: Timestamp,
    tz: &TimeZone,
) -> Result<(Timestamp, Timestamp)> {
    use jiff::civil::Time;
    let local = tz.to_datetime(at);
    let date = local.date();
    let midnight = |d: jiff::civil::Date| d.to_datetime(Time::midnight());
    let (start, end) = match window {
        Window::Hour => {
            let start = date.to_datetime(Time::new(local.hour(), 0, 0, 0).map_err(out_of_range)?);
            (start, start.checked_add(1.hour()).map_err(out_of_range)?)
        }
        Window::Day => (midnight(date), midnight(date.tomorrow().map_err(out_of_range)?)),
        Window::Week => {
            let back = i64::from(date.weekday().to_monday_zero_offset());
            let monday = date.checked_sub(back.days()).map_err(out_of_range)?;
            (midnight(monday), midnight(monday.checked_add(7.days()).map_err(out_of_range)?))
        }
        Window::Month => {
            let first = date.first_of_month();
            (midnight(first), midnight(first.checked_add(1.month()).map_err(out_of_range)?))
        }
        Window::Year => {
            let first = date.first_of_year();
            (midnight(first), midnight(first.checked_add(1.year()).map_err(out_of_range)?))
        }
    };
    let instant =
        |local: DateTime| tz.to_ambiguous_timestamp(local).compatible().map_err(out_of_range);
    Ok((instant(start)?, instant(end)?))
}

/// The last change of the configured time zone (`quota.settings`): from `previous` to the zone
/// now configured, at `since`.
#[derive(Debug, Clone)]
pub struct ZoneChange {
    pub previous: TimeZone,
    pub since: Timestamp,
}

/// After this long, every period that contained a change of zone has ended (a cycle is a year
/// at most, and the period that contained it ended within one), so the change decides nothing.
const ZONE_CHANGE_SETTLED: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 800);

/// The anniversary period that contains `at`, in `tz`, after `change`: a change of zone applies
/// from the next boundary. The period that contained the change keeps the bounds it had in the
/// previous zone, so a period that began is never cut short or lengthened; the first period in
/// the new zone starts where that one ended (its own boundary may fall earlier).
/// A calendar window changes zone the same way.
fn zoned_period(
    bounds: impl Fn(Timestamp, &TimeZone) -> Result<(Timestamp, Timestamp)>,
    at: Timestamp,
    tz: &TimeZone,
    change: Option<&ZoneChange>,
) -> Result<(Timestamp, Timestamp)> {
    let Some(change) = change.filter(|c| at.duration_since(c.since) < ZONE_CHANGE_SETTLED) else {
        return bounds(at, tz);
    };
    let (_, switch) = bounds(change.since, &change.previous)?;
    if at < switch {
        return bounds(at, &change.previous);
    }
    let (start, end) = bounds(at, tz)?;
    Ok((start.max(switch), end))
}

/// The period of a feature with reset rule `rule` that contains `at`, for subscription `sub`,
/// with periods computed in `tz` after `change`.
pub fn current_period(
    rule: ResetRule,
    sub: &Subscription,
    at: Timestamp,
    tz: &TimeZone,
    change: Option<&ZoneChange>,
) -> Result<Period> {
    let end_text = || sub.end.map_or_else(|| "infinity".to_owned(), |e| e.to_string());
    if sub.end.is_some_and(|end| sub.start >= end) {
        return Err(Error::EmptySubscription { start: sub.start.to_string(), end: end_text() });
    }
    if rule != ResetRule::Never && (at < sub.start || sub.end.is_some_and(|end| at >= end)) {
        return Err(Error::OutsideSubscription {
            at: at.to_string(),
            start: sub.start.to_string(),
            end: end_text(),
        });
    }
    Ok(match rule {
        ResetRule::Never | ResetRule::Subscription => {
            Period { start: None, end: None, rule, cycle: None }
        }
        ResetRule::BillingCycle => {
            let anchor = sub.anchor.unwrap_or(sub.start);
            let bounds = |at, tz: &TimeZone| anniversary_period(anchor, sub.cycle, at, tz);
            let (start, end) = zoned_period(bounds, at, tz, change)?;
            Period {
                start: Some(start),
                end: Some(sub.end.map_or(end, |sub_end| end.min(sub_end))),
                rule,
                cycle: Some(sub.cycle),
            }
        }
        // Like a billing period, a window is named by its start and ends with the subscription.
        ResetRule::Calendar(window) => {
            let bounds = |at, tz: &TimeZone| calendar_window(window, at, tz);
            let (start, end) = zoned_period(bounds, at, tz, change)?;
            Period {
                start: Some(start),
                end: Some(sub.end.map_or(end, |sub_end| end.min(sub_end))),
                rule,
                cycle: None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn window(w: Window, at: &str, zone: &str) -> (Timestamp, Timestamp) {
        calendar_window(w, ts(at), &time_zone(zone).unwrap()).unwrap()
    }

    #[test]
    fn days_of_a_daylight_saving_change_last_23_and_25_hours() {
        let ny = "America/New_York";
        let (s, e) = window(Window::Day, "2026-03-08T12:00:00Z", ny);
        assert_eq!((s, e), (ts("2026-03-08T05:00:00Z"), ts("2026-03-09T04:00:00Z")));
        assert_eq!(e.duration_since(s).as_hours(), 23);
        let (s, e) = window(Window::Day, "2026-11-01T12:00:00Z", ny);
        assert_eq!((s, e), (ts("2026-11-01T04:00:00Z"), ts("2026-11-02T05:00:00Z")));
        assert_eq!(e.duration_since(s).as_hours(), 25);
        // The repeated hour 01:00-02:00 of the fall-back day is one window of two hours.
        let (s, e) = window(Window::Hour, "2026-11-01T06:30:00Z", ny);
        assert_eq!((s, e), (ts("2026-11-01T05:00:00Z"), ts("2026-11-01T07:00:00Z")));
    }

    #[test]
    fn weeks_are_iso_weeks_from_monday_and_months_and_years_calendar_ones() {
        let sh = "Asia/Shanghai";
        // 2026 has an ISO week 53: Monday 28 December 2026 to Monday 4 January 2027.
        let (s, e) = window(Window::Week, "2027-01-02T12:00:00Z", sh);
        assert_eq!((s, e), (ts("2026-12-27T16:00:00Z"), ts("2027-01-03T16:00:00Z")));
        let (s, e) = window(Window::Month, "2026-02-28T17:00:00Z", sh);
        assert_eq!((s, e), (ts("2026-02-28T16:00:00Z"), ts("2026-03-31T16:00:00Z")));
        let (s, e) = window(Window::Year, "2026-12-31T16:30:00Z", sh);
        assert_eq!((s, e), (ts("2026-12-31T16:00:00Z"), ts("2027-12-31T16:00:00Z")));
    }

    proptest! {
        /// Every instant falls in exactly one window of each kind, in zones with daylight-saving
        /// changes of an hour, of half an hour, and at midnight: the window that contains it
        /// starts where the one before it ends and ends where the next one starts.
        #[test]
        fn windows_tile_time(
            secs in 1_577_836_800i64..1_893_456_000,
            w in prop::sample::select(vec![Window::Hour, Window::Day, Window::Week, Window::Month, Window::Year]),
            zone in prop::sample::select(vec![
                "UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe",
                "America/Santiago", "Asia/Kathmandu", "Pacific/Chatham",
            ]),
        ) {
            let tz = time_zone(zone).unwrap();
            let at = Timestamp::from_second(secs).unwrap();
            let (start, end) = calendar_window(w, at, &tz).unwrap();
            prop_assert!(start <= at && at < end, "{at} not in [{start}, {end})");
            prop_assert_eq!(calendar_window(w, end, &tz).unwrap().0, end);
            let before = start - jiff::SignedDuration::from_nanos(1);
            prop_assert_eq!(calendar_window(w, before, &tz).unwrap().1, start);
        }
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn sub(start: &str, end: &str, anchor: Option<&str>, cycle: Cycle) -> Subscription {
        Subscription { start: ts(start), end: Some(ts(end)), anchor: anchor.map(ts), cycle }
    }

    fn period(s: &Subscription, at: &str) -> (Timestamp, Timestamp) {
        let p = current_period(ResetRule::BillingCycle, s, ts(at), &utc(), None).unwrap();
        (p.start.unwrap(), p.end.unwrap())
    }

    #[test]
    fn monthly_anniversary_not_calendar_month() {
        let s = sub("2026-01-15T10:00:00Z", "2027-01-15T10:00:00Z", None, Cycle::Monthly);
        assert_eq!(
            period(&s, "2026-03-01T00:00:00Z"),
            (ts("2026-02-15T10:00:00Z"), ts("2026-03-15T10:00:00Z"))
        );
    }

    #[test]
    fn jan_31_clamps_to_feb_28_then_returns_to_mar_31() {
        let s = sub("2026-01-31T00:00:00Z", "2027-01-31T00:00:00Z", None, Cycle::Monthly);
        assert_eq!(
            period(&s, "2026-02-10T00:00:00Z"),
            (ts("2026-01-31T00:00:00Z"), ts("2026-02-28T00:00:00Z"))
        );
        assert_eq!(
            period(&s, "2026-03-01T00:00:00Z"),
            (ts("2026-02-28T00:00:00Z"), ts("2026-03-31T00:00:00Z"))
        );
        assert_eq!(
            period(&s, "2026-04-15T00:00:00Z"),
            (ts("2026-03-31T00:00:00Z"), ts("2026-04-30T00:00:00Z"))
        );
        // No drift after a run of short months.
        assert_eq!(
            period(&s, "2026-08-01T00:00:00Z"),
            (ts("2026-07-31T00:00:00Z"), ts("2026-08-31T00:00:00Z"))
        );
    }

    #[test]
    fn jan_31_in_a_leap_year_gives_feb_29() {
        let s = sub("2028-01-31T00:00:00Z", "2029-01-31T00:00:00Z", None, Cycle::Monthly);
        assert_eq!(
            period(&s, "2028-02-29T12:00:00Z"),
            (ts("2028-02-29T00:00:00Z"), ts("2028-03-31T00:00:00Z"))
        );
    }

    #[test]
    fn feb_29_yearly_anchor_clamps_in_common_years_and_returns_in_leap_years() {
        let s = sub("2028-02-29T00:00:00Z", "2033-01-01T00:00:00Z", None, Cycle::Yearly);
        assert_eq!(
            period(&s, "2029-06-01T00:00:00Z"),
            (ts("2029-02-28T00:00:00Z"), ts("2030-02-28T00:00:00Z"))
        );
        assert_eq!(
            period(&s, "2032-03-01T00:00:00Z"),
            (ts("2032-02-29T00:00:00Z"), ts("2033-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn periods_are_half_open() {
        let s = sub("2026-01-15T00:00:00Z", "2027-01-15T00:00:00Z", None, Cycle::Monthly);
        assert_eq!(period(&s, "2026-02-15T00:00:00Z").0, ts("2026-02-15T00:00:00Z"));
        assert_eq!(period(&s, "2026-02-14T23:59:59.999999Z").1, ts("2026-02-15T00:00:00Z"));
    }

    #[test]
    fn explicit_anchor_before_the_start_keeps_the_anniversary() {
        let s = sub(
            "2026-03-20T00:00:00Z",
            "2026-12-31T00:00:00Z",
            Some("2025-11-05T00:00:00Z"),
            Cycle::Monthly,
        );
        assert_eq!(
            period(&s, "2026-03-25T00:00:00Z"),
            (ts("2026-03-05T00:00:00Z"), ts("2026-04-05T00:00:00Z"))
        );
    }

    #[test]
    fn a_renewal_that_keeps_the_anchor_continues_the_period() {
        let old = sub("2026-01-10T08:00:00Z", "2026-03-20T00:00:00Z", None, Cycle::Monthly);
        let renewal = sub(
            "2026-03-20T00:00:00Z",
            "2027-03-20T00:00:00Z",
            Some("2026-01-10T08:00:00Z"),
            Cycle::Monthly,
        );
        let before = period(&old, "2026-03-19T23:00:00Z");
        let after = period(&renewal, "2026-03-20T01:00:00Z");
        assert_eq!(before.0, after.0);
        // The old row's period ended with it; the renewal's runs to the anniversary.
        assert_eq!(before.1, ts("2026-03-20T00:00:00Z"));
        assert_eq!(after.1, ts("2026-04-10T08:00:00Z"));
    }

    #[test]
    fn anchor_in_the_future_counts_backwards_from_it() {
        let s = sub(
            "2026-01-01T00:00:00Z",
            "2027-06-01T00:00:00Z",
            Some("2026-09-10T00:00:00Z"),
            Cycle::Monthly,
        );
        assert_eq!(
            period(&s, "2026-03-01T00:00:00Z"),
            (ts("2026-02-10T00:00:00Z"), ts("2026-03-10T00:00:00Z"))
        );
        assert_eq!(
            period(&s, "2026-01-05T00:00:00Z"),
            (ts("2025-12-10T00:00:00Z"), ts("2026-01-10T00:00:00Z"))
        );
    }

    #[test]
    fn subscription_shorter_than_one_period() {
        let s = sub("2026-05-01T00:00:00Z", "2026-05-15T00:00:00Z", None, Cycle::Monthly);
        assert_eq!(
            period(&s, "2026-05-03T00:00:00Z"),
            (ts("2026-05-01T00:00:00Z"), ts("2026-05-15T00:00:00Z"))
        );
        let y = sub("2026-05-01T00:00:00Z", "2026-08-01T00:00:00Z", None, Cycle::Yearly);
        assert_eq!(
            period(&y, "2026-07-31T00:00:00Z"),
            (ts("2026-05-01T00:00:00Z"), ts("2026-08-01T00:00:00Z"))
        );
    }

    #[test]
    fn yearly_cycle() {
        let s = sub("2025-06-30T08:00:00Z", "2028-06-30T08:00:00Z", None, Cycle::Yearly);
        assert_eq!(
            period(&s, "2026-11-25T00:00:00Z"),
            (ts("2026-06-30T08:00:00Z"), ts("2027-06-30T08:00:00Z"))
        );
    }

    #[test]
    fn local_midnight_is_kept_across_daylight_saving_changes() {
        let ny = time_zone("America/New_York").unwrap();
        // 2026-02-10 00:30 EST (UTC-5); DST starts 2026-03-08, so Mar 10 00:30 is EDT (UTC-4).
        let s = sub("2026-02-10T05:30:00Z", "2027-02-10T05:30:00Z", None, Cycle::Monthly);
        let p = current_period(ResetRule::BillingCycle, &s, ts("2026-03-20T00:00:00Z"), &ny, None)
            .unwrap();
        assert_eq!(p.start, Some(ts("2026-03-10T04:30:00Z")));
        assert_eq!(p.end, Some(ts("2026-04-10T04:30:00Z")));
        // Back to standard time in November: Nov 10 00:30 EST again.
        let p = current_period(ResetRule::BillingCycle, &s, ts("2026-11-20T00:00:00Z"), &ny, None)
            .unwrap();
        assert_eq!(p.start, Some(ts("2026-11-10T05:30:00Z")));
    }

    #[test]
    fn a_wall_clock_time_in_the_spring_forward_gap_moves_forward() {
        let ny = time_zone("America/New_York").unwrap();
        // Anchor 2026-02-08 02:30 EST; 2026-03-08 02:30 does not exist in New York -> 03:30 EDT.
        let s = sub("2026-02-08T07:30:00Z", "2027-02-08T07:30:00Z", None, Cycle::Monthly);
        let p = current_period(ResetRule::BillingCycle, &s, ts("2026-03-09T00:00:00Z"), &ny, None)
            .unwrap();
        assert_eq!(p.start, Some(ts("2026-03-08T07:30:00Z")));
        assert_eq!(p.end, Some(ts("2026-04-08T06:30:00Z")));
    }

    #[test]
    fn the_zone_changes_where_the_boundary_falls() {
        // Anchor 2026-01-30 16:00 UTC is Jan 31 00:00 in Shanghai (UTC+8). Counted in Shanghai,
        // January 31 clamps to February 28 local; counted in UTC, January 30 becomes February 28.
        let s = sub("2026-01-30T16:00:00Z", "2027-01-30T16:00:00Z", None, Cycle::Monthly);
        let at = ts("2026-02-28T00:00:00Z");
        let sh = current_period(
            ResetRule::BillingCycle,
            &s,
            at,
            &time_zone("Asia/Shanghai").unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(
            (sh.start, sh.end),
            (Some(ts("2026-02-27T16:00:00Z")), Some(ts("2026-03-30T16:00:00Z")))
        );
        assert_eq!(
            period(&s, "2026-02-28T00:00:00Z"),
            (ts("2026-01-30T16:00:00Z"), ts("2026-02-28T16:00:00Z"))
        );
    }

    #[test]
    fn subscription_and_never_rules() {
        let s = sub("2026-01-15T00:00:00Z", "2027-01-15T00:00:00Z", None, Cycle::Monthly);
        let p =
            current_period(ResetRule::Subscription, &s, ts("2026-06-01T00:00:00Z"), &utc(), None)
                .unwrap();
        assert_eq!((p.start, p.end, p.kind()), (None, None, "subscription"));
        let p =
            current_period(ResetRule::Never, &s, ts("2030-01-01T00:00:00Z"), &utc(), None).unwrap();
        assert_eq!((p.start, p.end, p.kind()), (None, None, "never"));
    }

    #[test]
    fn open_ended_subscriptions() {
        let mut s = sub("2026-01-15T00:00:00Z", "2027-01-15T00:00:00Z", None, Cycle::Monthly);
        s.end = None;
        assert_eq!(
            period(&s, "2040-03-20T00:00:00Z"),
            (ts("2040-03-15T00:00:00Z"), ts("2040-04-15T00:00:00Z"))
        );
        let p =
            current_period(ResetRule::Subscription, &s, ts("2040-03-20T00:00:00Z"), &utc(), None)
                .unwrap();
        assert_eq!((p.start, p.end), (None, None));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let s = sub("2026-01-15T00:00:00Z", "2026-01-15T00:00:00Z", None, Cycle::Monthly);
        assert!(matches!(
            current_period(ResetRule::BillingCycle, &s, s.start, &utc(), None),
            Err(Error::EmptySubscription { .. })
        ));
        let s = sub("2026-01-15T00:00:00Z", "2026-02-15T00:00:00Z", None, Cycle::Monthly);
        assert!(matches!(
            current_period(ResetRule::BillingCycle, &s, ts("2026-02-15T00:00:00Z"), &utc(), None),
            Err(Error::OutsideSubscription { .. })
        ));
        assert!(matches!(time_zone("Mars/Olympus"), Err(Error::InvalidTimeZone { .. })));
        assert!("weekly".parse::<Cycle>().is_err());
        assert!("daily".parse::<ResetRule>().is_err());
    }

    #[test]
    fn a_boundary_beyond_year_9999_is_an_error_not_a_panic() {
        let s = sub("9999-11-29T00:00:00Z", "9999-12-30T00:00:00Z", None, Cycle::Monthly);
        assert!(matches!(
            current_period(ResetRule::BillingCycle, &s, ts("9999-12-29T12:00:00Z"), &utc(), None),
            Err(Error::PeriodOutOfRange { .. })
        ));
    }

    #[test]
    fn a_zone_change_applies_from_the_next_boundary() {
        let ny = time_zone("America/New_York").unwrap();
        let s = sub("2026-01-15T00:00:00Z", "2027-01-15T00:00:00Z", None, Cycle::Monthly);
        let change = ZoneChange { previous: utc(), since: ts("2026-03-20T00:00:00Z") };
        let at = |t: &str| {
            let p = current_period(ResetRule::BillingCycle, &s, ts(t), &ny, Some(&change)).unwrap();
            (p.start.unwrap(), p.end.unwrap())
        };
        // The period the change happened in keeps its UTC bounds, before and after the change.
        assert_eq!(
            at("2026-03-16T00:00:00Z"),
            (ts("2026-03-15T00:00:00Z"), ts("2026-04-15T00:00:00Z"))
        );
        assert_eq!(
            at("2026-04-14T23:30:00Z"),
            (ts("2026-03-15T00:00:00Z"), ts("2026-04-15T00:00:00Z"))
        );
        // The next starts where it ended and ends on the new zone's boundary (19:00 in New York).
        assert_eq!(
            at("2026-04-20T00:00:00Z"),
            (ts("2026-04-15T00:00:00Z"), ts("2026-05-14T23:00:00Z"))
        );
        assert_eq!(
            at("2026-05-20T00:00:00Z"),
            (ts("2026-05-14T23:00:00Z"), ts("2026-06-14T23:00:00Z"))
        );
        // An earlier period is the previous zone's.
        assert_eq!(
            at("2026-02-01T00:00:00Z"),
            (ts("2026-01-15T00:00:00Z"), ts("2026-02-15T00:00:00Z"))
        );
        // Long after, the change no longer decides anything.
        let later =
            |t: &str| current_period(ResetRule::BillingCycle, &s, ts(t), &ny, None).unwrap().start;
        assert_eq!(at("2026-09-20T00:00:00Z").0, later("2026-09-20T00:00:00Z").unwrap());
    }

    proptest! {
        // For any anchor, subscription and instant: the period contains the instant, ends inside
        // the subscription, and is at most one cycle long; any other subscription with the same
        // anchor and cycle that is current at that instant is in the same period.
        #[test]
        fn period_contains_the_instant(
            anchor in 946_684_800i64..4_102_444_800i64,
            start_off in 0i64..400 * 86_400,
            len in 3_600i64..1_500 * 86_400,
            at_frac in 0.0f64..1.0,
            yearly in any::<bool>(),
            zone in prop_oneof![Just("UTC"), Just("America/New_York"), Just("Asia/Shanghai"), Just("Australia/Lord_Howe")],
        ) {
            let tz = time_zone(zone).unwrap();
            let start = Timestamp::from_second(anchor + start_off).unwrap();
            let end = Timestamp::from_second(anchor + start_off + len).unwrap();
            let at = Timestamp::from_second(anchor + start_off + ((len as f64) * at_frac) as i64).unwrap();
            prop_assume!(at < end);
            let cycle = if yearly { Cycle::Yearly } else { Cycle::Monthly };
            let s = Subscription { start, end: Some(end), anchor: Some(Timestamp::from_second(anchor).unwrap()), cycle };
            let p = current_period(ResetRule::BillingCycle, &s, at, &tz, None).unwrap();
            let (ps, pe) = (p.start.unwrap(), p.end.unwrap());
            prop_assert!(ps <= at && at < pe);
            prop_assert!(pe <= end);
            let max_days = if yearly { 367 } else { 32 };
            prop_assert!((pe.as_second() - ps.as_second()) <= max_days * 86_400);
            let renewal = Subscription { start: at, end: None, ..s };
            let q = current_period(ResetRule::BillingCycle, &renewal, at, &tz, None).unwrap();
            prop_assert_eq!(q.start, p.start);
        }

        // Across a change of zone, consecutive periods still tile: no instant in two periods,
        // none in no period, and the period that contained the change keeps its old bounds.
        #[test]
        fn periods_tile_across_a_zone_change(
            anchor_day in 1i8..=31,
            since_days in 0i64..500,
            from in prop_oneof![Just("UTC"), Just("America/New_York"), Just("Asia/Shanghai")],
            to in prop_oneof![Just("UTC"), Just("Europe/Berlin"), Just("Australia/Lord_Howe")],
            yearly in any::<bool>(),
        ) {
            let (from, to) = (time_zone(from).unwrap(), time_zone(to).unwrap());
            let anchor = jiff::civil::date(2026, 1, anchor_day).at(6, 30, 0, 0).to_zoned(TimeZone::UTC).unwrap().timestamp();
            let end = anchor.checked_add(jiff::SignedDuration::from_hours(24 * 1500)).unwrap();
            let cycle = if yearly { Cycle::Yearly } else { Cycle::Monthly };
            let s = Subscription { start: anchor, end: Some(end), anchor: None, cycle };
            let since = anchor.checked_add(jiff::SignedDuration::from_hours(24 * since_days)).unwrap();
            let change = ZoneChange { previous: from.clone(), since };
            let before = current_period(ResetRule::BillingCycle, &s, since, &from, None).unwrap();
            let mut at = anchor;
            while at < end {
                let p = current_period(ResetRule::BillingCycle, &s, at, &to, Some(&change)).unwrap();
                prop_assert_eq!(p.start.unwrap(), at);
                if p.start.unwrap() <= since && since < p.end.unwrap() {
                    prop_assert_eq!(p, before);
                }
                at = p.end.unwrap();
            }
            prop_assert_eq!(at, end);
        }

        // Consecutive periods tile the subscription: the end of one is the start of the next.
        #[test]
        fn periods_tile_without_gaps(anchor_day in 1i8..=31, months in 1i64..40) {
            let tz = time_zone("Europe/Berlin").unwrap();
            let anchor_local = jiff::civil::date(2026, 1, anchor_day.min(31)).at(0, 15, 0, 0);
            let anchor = tz.to_ambiguous_timestamp(anchor_local).compatible().unwrap();
            let end = anchor.checked_add(jiff::SignedDuration::from_hours(24 * 31 * months)).unwrap();
            let s = Subscription { start: anchor, end: Some(end), anchor: None, cycle: Cycle::Monthly };
            let mut at = anchor;
            while at < end {
                let p = current_period(ResetRule::BillingCycle, &s, at, &tz, None).unwrap();
                prop_assert_eq!(p.start.unwrap(), at);
                at = p.end.unwrap();
            }
            prop_assert_eq!(at, end);
        }
    }
}
