//! Rollover: what a period's allowance left unused becomes a grant of the next period (source
//! `rollover`), capped by a maximum and expiring after a number of periods, per catalog feature
//! or per plan feature (the plan's wins when it sets a maximum). It is created once per user,
//! feature and period, when a write first touches the new period; until then every read counts
//! what it will be, so the answers are those of the period's first instant.

use crate::error::{Result, Subject};
use crate::limit::{limit_from_i64, value_error, Limit};
use crate::period::{current_period, Period, ResetRule, Subscription, ZoneChange};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A rollover rule in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The most a period passes on; `None`: all it left unused.
    pub max: Option<i64>,
    /// How many periods the rollover grant lasts, the one it starts in included (at least 1).
    pub periods: u32,
}

/// The sources of a rule: `rollover_max` (`-1` no cap, `0` or NULL none) and
/// `rollover_periods` of the plan feature and of the catalog.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleSources {
    pub plan_max: Option<i64>,
    pub plan_periods: Option<i64>,
    pub catalog_max: Option<i64>,
    pub catalog_periods: Option<i64>,
}

/// The rule in force: the plan feature's when it sets a maximum, else the catalog's; `None`
/// without rollover.
pub fn resolve(subject: &Subject, s: &RuleSources) -> Result<Option<Rule>> {
    let (max, origin, periods) = match (s.plan_max, s.catalog_max) {
        (Some(m), _) => (m, "plan_features.rollover_max", s.plan_periods.or(s.catalog_periods)),
        (None, Some(m)) => (m, "features.rollover_max", s.catalog_periods),
        (None, None) => return Ok(None),
    };
    let max =
        match limit_from_i64(max).map_err(|p| value_error(subject, origin, max.to_string(), p))? {
            Limit::Max(0) => return Ok(None),
            Limit::Max(n) => Some(i64::from(n)),
            Limit::Unlimited => None,
        };
    let periods = periods.unwrap_or(1);
    let periods = u32::try_from(periods).ok().filter(|p| *p >= 1).ok_or_else(|| {
        value_error(
            subject,
            "rollover_periods",
            periods.to_string(),
            crate::limit::ValueProblem::OutOfRange,
        )
    })?;
    Ok(Some(Rule { max, periods }))
}

/// What a period whose counter ended at `usage` passes on under `limit`: what it left unused,
/// up to the maximum. An unlimited allowance, or none, passes nothing on.
pub fn amount(rule: &Rule, limit: Option<Limit>, usage: i64) -> i64 {
    let Some(Limit::Max(n)) = limit else { return 0 };
    let unused = (i64::from(n) - usage).max(0);
    rule.max.map_or(unused, |m| unused.min(m))
}

/// The period before `current` under the same subscription, or `None` when `current` is the
/// subscription's first (or its reset rule has no periods).
pub fn previous(
    rule: ResetRule,
    sub: &Subscription,
    current: &Period,
    tz: &TimeZone,
    change: Option<&ZoneChange>,
) -> Option<Period> {
    if !rule.resets() {
        return None;
    }
    let before = current.start?.checked_sub(jiff::SignedDuration::from_micros(1)).ok()?;
    current_period(rule, sub, before, tz, change).ok()
}

/// When a rollover grant starting with `current` expires: at the end of its `periods`-th
/// period, or of the subscription when that comes first.
pub fn expiry(
    rule: ResetRule,
    sub: &Subscription,
    current: &Period,
    periods: u32,
    tz: &TimeZone,
    change: Option<&ZoneChange>,
) -> Option<Timestamp> {
    let mut end = current.end?;
    for _ in 1..periods {
        match current_period(rule, sub, end, tz, change) {
            Ok(Period { end: Some(next), .. }) if next > end => end = next,
            _ => break,
        }
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::Cycle;

    fn subject() -> Subject {
        Subject { user_id: 1, feature: "articles_per_month".into() }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_plan_wins_and_zero_means_none() {
        let r = |plan_max, catalog_max| {
            resolve(
                &subject(),
                &RuleSources {
                    plan_max,
                    plan_periods: None,
                    catalog_max,
                    catalog_periods: Some(2),
                },
            )
            .unwrap()
        };
        assert_eq!(r(Some(5), Some(-1)), Some(Rule { max: Some(5), periods: 2 }));
        assert_eq!(r(None, Some(-1)), Some(Rule { max: None, periods: 2 }));
        assert_eq!(r(Some(0), Some(-1)), None);
        assert_eq!(r(None, None), None);
        let bad =
            RuleSources { catalog_max: Some(3), catalog_periods: Some(0), ..Default::default() };
        assert!(resolve(&subject(), &bad).is_err());
    }

    #[test]
    fn unused_allowance_up_to_the_maximum() {
        let capped = Rule { max: Some(5), periods: 1 };
        assert_eq!(amount(&capped, Some(Limit::Max(10)), 3), 5);
        assert_eq!(amount(&capped, Some(Limit::Max(10)), 8), 2);
        assert_eq!(amount(&capped, Some(Limit::Max(10)), 12), 0);
        assert_eq!(amount(&Rule { max: None, periods: 1 }, Some(Limit::Max(10)), 3), 7);
        assert_eq!(amount(&capped, Some(Limit::Unlimited), 0), 0);
        assert_eq!(amount(&capped, None, 0), 0);
    }

    #[test]
    fn previous_period_and_expiry_follow_the_anniversary() {
        let sub = Subscription {
            start: ts("2026-01-31T00:00:00Z"),
            end: None,
            anchor: None,
            cycle: Cycle::Monthly,
        };
        let tz = TimeZone::UTC;
        let rule = ResetRule::BillingCycle;
        let now = ts("2026-03-15T00:00:00Z");
        let current = current_period(rule, &sub, now, &tz, None).unwrap();
        assert_eq!(current.start, Some(ts("2026-02-28T00:00:00Z")));
        let prev = previous(rule, &sub, &current, &tz, None).unwrap();
        assert_eq!((prev.start, prev.end), (Some(ts("2026-01-31T00:00:00Z")), current.start));
        // The first period has none before it.
        assert!(previous(rule, &sub, &prev, &tz, None).is_none());
        assert_eq!(expiry(rule, &sub, &current, 1, &tz, None), current.end);
        assert_eq!(expiry(rule, &sub, &current, 2, &tz, None), Some(ts("2026-04-30T00:00:00Z")));
        // A subscription that ends first ends the grant.
        let ending = Subscription { end: Some(ts("2026-04-10T00:00:00Z")), ..sub };
        let current = current_period(rule, &ending, now, &tz, None).unwrap();
        assert_eq!(expiry(rule, &ending, &current, 3, &tz, None), Some(ts("2026-04-10T00:00:00Z")));
    }
}
