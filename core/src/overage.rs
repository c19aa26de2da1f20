//! Soft limits: an allowed overage beyond the limit (none by default, N units, or unlimited),
//! per catalog feature or per plan feature. A use beyond the limit and the grants but within
//! the overage is allowed, counted on the period's counter beyond the limit, and its units are
//! marked as overage in the ledger, so billing can charge them.

use crate::error::{Result, Subject};
use crate::limit::{limit_from_i64, value_error, Limit};

/// The overage in force: the plan feature's when it sets one, else the catalog's (`None`, or
/// `Max(0)`: none). Values are those of a limit: `-1` unlimited, else 0 to 2147483647.
pub fn resolve(
    subject: &Subject,
    plan: Option<i64>,
    catalog: Option<i64>,
) -> Result<Option<Limit>> {
    for (value, origin) in
        [(plan, "plan_features.overage_limit"), (catalog, "features.overage_limit")]
    {
        if let Some(n) = value {
            return limit_from_i64(n)
                .map(Some)
                .map_err(|p| value_error(subject, origin, n.to_string(), p));
        }
    }
    Ok(None)
}

/// What is left of the overage when the period's counter holds `usage` against a limit of
/// `limit` units: the units already beyond the limit used it. `None`: unlimited.
pub fn left(overage: Option<Limit>, limit: i64, usage: i64) -> Option<i64> {
    match overage {
        None => Some(0),
        Some(Limit::Unlimited) => None,
        Some(Limit::Max(n)) => Some((i64::from(n) - (usage - limit).max(0)).max(0)),
    }
}

/// How many units of a use that moved the period's counter from `before` to `after` are
/// overage: those it took beyond the limit and within the overage. Marked so, the overage of a
/// period always adds up to where its counter stands beyond the limit, up to the overage,
/// whatever order uses and holds came in.
pub fn marked(overage: Option<Limit>, limit: i64, before: i64, after: i64) -> i64 {
    let beyond = |usage: i64| {
        let over = (usage - limit).max(0);
        match overage {
            None => 0,
            Some(Limit::Unlimited) => over,
            Some(Limit::Max(n)) => over.min(i64::from(n)),
        }
    };
    beyond(after) - beyond(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject { user_id: 1, feature: "api_calls".into() }
    }

    #[test]
    fn the_plan_feature_wins_over_the_catalog() {
        assert_eq!(resolve(&subject(), Some(5), Some(-1)).unwrap(), Some(Limit::Max(5)));
        assert_eq!(resolve(&subject(), None, Some(-1)).unwrap(), Some(Limit::Unlimited));
        assert_eq!(resolve(&subject(), None, None).unwrap(), None);
        assert!(resolve(&subject(), Some(-2), None).is_err());
    }

    #[test]
    fn overage_is_where_the_counter_goes_beyond_the_limit() {
        let ten = Some(Limit::Max(10));
        assert_eq!(marked(ten, 100, 0, 100), 0);
        assert_eq!(marked(ten, 100, 98, 104), 4);
        assert_eq!(marked(ten, 100, 104, 125), 6);
        assert_eq!(marked(None, 100, 98, 104), 0);
        assert_eq!(marked(Some(Limit::Unlimited), 100, 98, 125), 25);
    }

    #[test]
    fn units_beyond_the_limit_use_the_overage() {
        assert_eq!(left(Some(Limit::Max(10)), 100, 90), Some(10));
        assert_eq!(left(Some(Limit::Max(10)), 100, 104), Some(6));
        assert_eq!(left(Some(Limit::Max(10)), 100, 130), Some(0));
        assert_eq!(left(None, 100, 50), Some(0));
        assert_eq!(left(Some(Limit::Unlimited), 100, 1_000), None);
    }
}
