//! Several limits on one feature: besides its limit per period (the feature's reset rule), a
//! metered feature may be limited over other windows at once, 100 per day and 1000 per billing
//! month. A plan sets them in `plan_features.window_limits`, the catalog for every plan that
//! sets none in `features.window_limits`: a JSON object from window to limit,
//! `{"day": 100, "hour": 20}`. A use counts in every window and is allowed only when it fits
//! every limit; a check reports the tightest ([`tightest`]).

use crate::error::{Error, Result};
use crate::limit::{limit_from_json, Limit};
use crate::period::ResetRule;
use crate::status::QuotaStatus;
use serde_json::Value;

/// One further limit: at most `limit` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    pub window: ResetRule,
    pub limit: Limit,
}

fn problem(origin: &'static str, text: &str, reason: &'static str) -> Error {
    Error::InvalidWindowLimits { origin, value: text.to_owned(), reason }
}

/// A `window_limits` document (JSON text) as limits, ordered from the shortest window to the
/// longest (the order their counters are locked in). Keys are windows that reset (`hour`,
/// `day`, `week`, `month`, `year`, `billing_cycle`), each at most once; values are limits.
pub fn parse(origin: &'static str, text: &str) -> Result<Vec<WindowLimit>> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| problem(origin, text, "not valid JSON"))?;
    let Value::Object(map) = value else {
        return Err(problem(origin, text, "not a JSON object"));
    };
    let mut limits = Vec::with_capacity(map.len());
    for (key, v) in &map {
        let window: ResetRule = match key.parse() {
            Ok(rule) if ResetRule::resets(rule) => rule,
            _ => {
                return Err(problem(
                    origin,
                    text,
                    "a window is hour, day, week, month, year or billing_cycle",
                ))
            }
        };
        let limit = limit_from_json(v).map_err(|p| problem(origin, text, p.reason()))?;
        limits.push(WindowLimit { window, limit });
    }
    limits.sort_by_key(|w| order(w.window));
    Ok(limits)
}

/// Shorter windows first; the billing cycle, about a month, between month and year.
fn order(window: ResetRule) -> u8 {
    use crate::period::Window::*;
    match window {
        ResetRule::Calendar(Hour) => 0,
        ResetRule::Calendar(Day) => 1,
        ResetRule::Calendar(Week) => 2,
        ResetRule::Calendar(Month) => 3,
        ResetRule::BillingCycle => 4,
        ResetRule::Calendar(Year) => 5,
        ResetRule::Subscription | ResetRule::Never => 6,
    }
}

/// The further limits of a feature for one subscription: the plan's `window_limits` when set,
/// else the catalog's. Only metered features have windows: a running count never resets.
pub fn resolve(
    metered: bool,
    plan: Option<&str>,
    catalog: Option<&str>,
) -> Result<Vec<WindowLimit>> {
    if !metered {
        return Ok(Vec::new());
    }
    match (plan, catalog) {
        (Some(text), _) => parse("plan_features.window_limits", text),
        (None, Some(text)) => parse("features.window_limits", text),
        (None, None) => Ok(Vec::new()),
    }
}

/// Which of the figures is the tightest: the main limit's (index 0) or a window's (1..): the one
/// with the least remaining, an unlimited one never; among equals the first. What a check
/// reports for a feature with several limits.
pub fn tightest(figures: &[QuotaStatus]) -> usize {
    let left = |s: &QuotaStatus| if s.remaining < 0 { i64::MAX } else { s.remaining };
    figures.iter().enumerate().min_by_key(|(i, s)| (left(s), *i)).map_or(0, |(i, _)| i)
}

/// Whether a use of `amount` fits every window, given each window's usage.
pub fn fits(windows: &[(WindowLimit, i64)], amount: i64) -> bool {
    windows.iter().all(|(w, usage)| w.limit.allows(*usage, amount))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::Window;
    use proptest::prelude::*;

    #[test]
    fn a_document_becomes_limits_shortest_window_first() {
        let w = parse("o", r#"{"billing_cycle": 1000, "day": 100, "hour": -1}"#).unwrap();
        assert_eq!(
            w,
            vec![
                WindowLimit { window: ResetRule::Calendar(Window::Hour), limit: Limit::Unlimited },
                WindowLimit { window: ResetRule::Calendar(Window::Day), limit: Limit::Max(100) },
                WindowLimit { window: ResetRule::BillingCycle, limit: Limit::Max(1000) },
            ]
        );
        assert_eq!(parse("o", "{}").unwrap(), vec![]);
    }

    #[test]
    fn bad_documents_are_errors() {
        for text in [
            "[1]",
            r#"{"fortnight": 1}"#,
            r#"{"never": 1}"#,
            r#"{"subscription": 1}"#,
            r#"{"day": "100"}"#,
            r#"{"day": -2}"#,
            r#"{"day": 1.5}"#,
            "nope",
        ] {
            assert!(matches!(parse("o", text), Err(Error::InvalidWindowLimits { .. })), "{text}");
        }
        assert!(matches!(
            parse("o", r#"{"day": 3000000000}"#),
            Err(Error::InvalidWindowLimits { reason: "out of range for integer", .. })
        ));
    }

    #[test]
    fn the_plan_wins_and_only_metered_features_have_windows() {
        let r = |metered, plan, catalog| resolve(metered, plan, catalog).unwrap();
        assert_eq!(r(true, Some(r#"{"day": 5}"#), Some(r#"{"day": 9}"#))[0].limit, Limit::Max(5));
        assert_eq!(r(true, None, Some(r#"{"day": 9}"#))[0].limit, Limit::Max(9));
        assert_eq!(r(true, Some("{}"), Some(r#"{"day": 9}"#)), vec![]);
        assert_eq!(r(false, Some(r#"{"day": 5}"#), None), vec![]);
    }

    #[test]
    fn the_tightest_has_the_least_left() {
        let s = |limit: i32, usage: i64| QuotaStatus::evaluate(Some(Limit::Max(limit)), usage);
        let unlimited = QuotaStatus::evaluate(Some(Limit::Unlimited), 50);
        assert_eq!(tightest(&[s(1000, 100), s(100, 100)]), 1);
        assert_eq!(tightest(&[s(1000, 990), s(100, 20)]), 0);
        assert_eq!(tightest(&[unlimited, s(100, 20)]), 1);
        assert_eq!(tightest(&[s(10, 5), s(100, 95)]), 0);
        assert_eq!(tightest(&[unlimited]), 0);
        assert_eq!(tightest(&[]), 0);
    }

    proptest! {
        #[test]
        fn a_use_fits_all_windows_exactly_when_it_fits_each(
            limits in proptest::collection::vec((0i32..50, 0i64..60), 0..4),
            amount in 1i64..20,
        ) {
            let windows: Vec<_> = limits
                .iter()
                .map(|(l, u)| (WindowLimit { window: ResetRule::BillingCycle, limit: Limit::Max(*l) }, *u))
                .collect();
            let each = windows.iter().all(|(w, u)| u + amount <= i64::from(match w.limit { Limit::Max(n) => n, Limit::Unlimited => i32::MAX }));
            prop_assert_eq!(fits(&windows, amount), each);
        }

        #[test]
        fn the_tightest_never_has_more_left_than_another(
            figures in proptest::collection::vec((-1i32..100, 0i64..120), 1..5),
        ) {
            let statuses: Vec<_> = figures
                .iter()
                .map(|(l, u)| {
                    let limit = if *l < 0 { Limit::Unlimited } else { Limit::Max(*l) };
                    QuotaStatus::evaluate(Some(limit), *u)
                })
                .collect();
            let t = &statuses[tightest(&statuses)];
            for s in &statuses {
                prop_assert!(s.remaining < 0 || (t.remaining >= 0 && t.remaining <= s.remaining));
            }
        }

        #[test]
        fn any_text_never_panics(text in ".{0,60}") {
            let _ = parse("o", &text);
        }
    }
}
