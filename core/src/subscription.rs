//! Which of a user's subscriptions is active, and the cycle its periods follow.
//!
//! Both read paths (statements and direct reads) fetch a user's candidate rows and ask these
//! functions which one counts; the statements only narrow the rows down to the user's
//! subscriptions with status 'active', so neither path states the rule itself.

use std::cmp::Ordering;

/// The status of a subscription that can count.
pub const ACTIVE: &str = "active";

/// What the rule needs of one subscription row. Times are PostgreSQL's timestamptz integers
/// (microseconds, the infinities at the extremes), `None` where the column is NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub status: Option<&'a str>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub id: Option<i64>,
}

impl Candidate<'_> {
    /// Active at `now`: status 'active' and `start <= now < end`. A NULL status or date is not
    /// active, as a comparison with NULL is not true in SQL.
    pub fn is_active(&self, now: i64) -> bool {
        self.status == Some(ACTIVE)
            && self.start.is_some_and(|s| s <= now)
            && self.end.is_some_and(|e| e > now)
    }

    /// Which of two active subscriptions counts: the later `end`, then the higher `id`, a NULL
    /// id above every other (`ORDER BY end_date DESC, id DESC` puts NULLs first).
    pub fn precedence(&self, other: &Candidate<'_>) -> Ordering {
        let key = |c: &Candidate<'_>| (c.end, c.id.is_none(), c.id);
        key(self).cmp(&key(other))
    }
}

/// The index of the candidate that counts at `now`, if any is active. Among candidates that
/// tie on both end and id, the first one wins.
pub fn active_index<'a>(
    candidates: impl IntoIterator<Item = Candidate<'a>>,
    now: i64,
) -> Option<usize> {
    let mut best: Option<(usize, Candidate<'a>)> = None;
    for (i, c) in candidates.into_iter().enumerate() {
        if c.is_active(now) && best.is_none_or(|(_, b)| c.precedence(&b) == Ordering::Greater) {
            best = Some((i, c));
        }
    }
    best.map(|(i, _)| i)
}

/// The cycle a subscription's periods follow: its own `quota_cycle_type`, else its plan's
/// `quota_cycle_type`, else the plan's `billing_cycle`. `None` when all three are NULL.
pub fn cycle<'a>(
    subscription: Option<&'a str>,
    plan_quota_cycle: Option<&'a str>,
    plan_billing_cycle: Option<&'a str>,
) -> Option<&'a str> {
    subscription.or(plan_quota_cycle).or(plan_billing_cycle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(
        status: Option<&str>,
        start: Option<i64>,
        end: Option<i64>,
        id: Option<i64>,
    ) -> Candidate<'_> {
        Candidate { status, start, end, id }
    }

    #[test]
    fn active_means_status_and_half_open_span() {
        let now = 100;
        assert!(c(Some("active"), Some(100), Some(101), Some(1)).is_active(now));
        assert!(!c(Some("active"), Some(101), Some(200), Some(1)).is_active(now));
        assert!(!c(Some("active"), Some(0), Some(100), Some(1)).is_active(now));
        assert!(!c(Some("paused"), Some(0), Some(200), Some(1)).is_active(now));
        assert!(!c(Some("Active"), Some(0), Some(200), Some(1)).is_active(now));
        assert!(!c(None, Some(0), Some(200), Some(1)).is_active(now));
        assert!(!c(Some("active"), None, Some(200), Some(1)).is_active(now));
        assert!(!c(Some("active"), Some(0), None, Some(1)).is_active(now));
        assert!(c(Some("active"), Some(i64::MIN), Some(i64::MAX), None).is_active(now));
    }

    #[test]
    fn latest_end_then_highest_id_then_null_id_wins() {
        let rows = [
            c(Some("active"), Some(0), Some(500), Some(9)),
            c(Some("active"), Some(0), Some(900), Some(1)),
            c(Some("active"), Some(0), Some(900), Some(2)),
            c(Some("cancelled"), Some(0), Some(5000), Some(3)),
        ];
        assert_eq!(active_index(rows, 100), Some(2));
        let with_null = [
            c(Some("active"), Some(0), Some(900), Some(2)),
            c(Some("active"), Some(0), Some(900), None),
        ];
        assert_eq!(active_index(with_null, 100), Some(1));
        assert_eq!(active_index([c(Some("paused"), Some(0), Some(900), Some(2))], 100), None);
        assert_eq!(active_index(std::iter::empty(), 100), None);
    }

    #[test]
    fn cycle_precedence() {
        assert_eq!(cycle(Some("yearly"), Some("monthly"), Some("monthly")), Some("yearly"));
        assert_eq!(cycle(None, Some("yearly"), Some("monthly")), Some("yearly"));
        assert_eq!(cycle(None, None, Some("monthly")), Some("monthly"));
        assert_eq!(cycle(None, None, None), None);
    }

    fn candidate() -> impl Strategy<Value = (Option<bool>, Option<i64>, Option<i64>, Option<i64>)> {
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(-5i64..5),
            proptest::option::of(-5i64..5),
            proptest::option::of(0i64..4),
        )
    }

    proptest! {
        /// The chosen row is what `WHERE status = 'active' AND start <= now AND end > now
        /// ORDER BY end DESC, id DESC LIMIT 1` returns, up to rows that tie on end and id.
        #[test]
        fn matches_the_sql_order(rows in proptest::collection::vec(candidate(), 0..8), now in -5i64..5) {
            let rows: Vec<Candidate<'_>> = rows.iter().map(|&(active, start, end, id)| Candidate {
                status: active.map(|a| if a { "active" } else { "expired" }),
                start, end, id,
            }).collect();
            let mut sql: Vec<&Candidate<'_>> = rows.iter().filter(|r| r.is_active(now)).collect();
            // ORDER BY end DESC, id DESC (NULLS FIRST for DESC), stable.
            sql.sort_by(|a, b| b.precedence(a));
            let chosen = active_index(rows.iter().copied(), now).map(|i| rows[i]);
            match (sql.first(), chosen) {
                (None, None) => {}
                (Some(first), Some(chosen)) => {
                    prop_assert_eq!((first.end, first.id), (chosen.end, chosen.id));
                }
                (a, b) => prop_assert!(false, "sql {:?} vs chosen {:?}", a, b),
            }
        }
    }
}
