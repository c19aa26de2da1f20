//! Threshold alerts: which configured fractions of a limit a use has just crossed.
//!
//! Thresholds are whole percentages (`quota.features.alert_thresholds`, default 80, 95, 100),
//! judged against the limit in force at the time of the use. The counter row remembers the
//! highest threshold announced in its period and the limit it was judged against: while the
//! limit stays the same, each threshold fires at most once per period (a refund that drops
//! usage below a threshold and a later use that crosses it again announce nothing new); once
//! the limit differs, the memory no longer applies and the thresholds of the new limit fire as
//! usage reaches them (10 of 10 announced 100 %; raised to 100, usage 85 announces 80 %).

use crate::limit::Limit;

/// What a counter row remembers of the alerts of its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The highest threshold announced (0: none).
    pub percent: i32,
    /// The limit that threshold was judged against. `None` for a memory written before limits
    /// were remembered (pg_entitlements 0.2.0): it applies to any limit, so an update never
    /// announces a threshold twice.
    pub limit: Option<i64>,
}

/// The highest threshold of `announced` that still counts for a use judged against `max`.
fn still_announced(announced: Announced, max: i64) -> i32 {
    match announced.limit {
        Some(judged) if judged != max => 0,
        _ => announced.percent,
    }
}

/// The thresholds not yet announced for `limit` that `usage` has reached, in increasing order,
/// and what the counter row remembers afterwards (`None`: nothing to change).
pub fn crossed(
    thresholds: &[i32],
    announced: Announced,
    usage: i64,
    limit: Limit,
) -> (Vec<i32>, Option<Announced>) {
    let Limit::Max(max) = limit else {
        return (Vec::new(), None);
    };
    let max = i64::from(max);
    if max == 0 {
        return (Vec::new(), None);
    }
    let already = still_announced(announced, max);
    let mut hit: Vec<i32> = thresholds
        .iter()
        .copied()
        .filter(|&t| t > already)
        // usage / max >= t / 100, in integers (i128: usage * 100 cannot overflow).
        .filter(|&t| i128::from(usage) * 100 >= i128::from(t) * i128::from(max))
        .collect();
    hit.sort_unstable();
    hit.dedup();
    let remember = hit.last().map(|&percent| Announced { percent, limit: Some(max) });
    (hit, remember)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEFAULT: [i32; 3] = [80, 95, 100];
    const NOTHING: Announced = Announced { percent: 0, limit: None };

    fn at(percent: i32, limit: i64) -> Announced {
        Announced { percent, limit: Some(limit) }
    }

    fn hits(announced: Announced, usage: i64, limit: Limit) -> Vec<i32> {
        crossed(&DEFAULT, announced, usage, limit).0
    }

    #[test]
    fn crossing_80_then_95_and_100_together() {
        assert_eq!(hits(NOTHING, 7, Limit::Max(10)), Vec::<i32>::new());
        assert_eq!(crossed(&DEFAULT, NOTHING, 8, Limit::Max(10)), (vec![80], Some(at(80, 10))));
        assert_eq!(
            crossed(&DEFAULT, at(80, 10), 10, Limit::Max(10)),
            (vec![95, 100], Some(at(100, 10)))
        );
    }

    #[test]
    fn each_threshold_fires_once_per_period_and_limit() {
        assert_eq!(crossed(&DEFAULT, at(100, 10), 12, Limit::Max(10)), (Vec::new(), None));
        assert_eq!(hits(at(80, 10), 9, Limit::Max(10)), Vec::<i32>::new());
    }

    #[test]
    fn a_raised_limit_rearms_the_alerts() {
        // Issue 14, item 8: 100 % of 10 announced, the limit raised to 100.
        assert_eq!(hits(at(100, 10), 11, Limit::Max(100)), Vec::<i32>::new());
        assert_eq!(
            crossed(&DEFAULT, at(100, 10), 85, Limit::Max(100)),
            (vec![80], Some(at(80, 100)))
        );
        assert_eq!(hits(at(80, 100), 100, Limit::Max(100)), vec![95, 100]);
    }

    #[test]
    fn a_lowered_limit_judges_usage_against_the_new_limit() {
        // 80 % of 100 announced; lowered to 50, usage 86 is beyond every threshold of 50.
        assert_eq!(hits(at(80, 100), 86, Limit::Max(50)), vec![80, 95, 100]);
        // Back to the remembered limit: the memory applies again.
        assert_eq!(hits(at(80, 100), 86, Limit::Max(100)), Vec::<i32>::new());
    }

    #[test]
    fn a_memory_without_its_limit_applies_to_any_limit() {
        let old = Announced { percent: 100, limit: None };
        assert_eq!(hits(old, 99, Limit::Max(100)), Vec::<i32>::new());
    }

    #[test]
    fn unlimited_and_zero_limits_never_alert() {
        assert_eq!(crossed(&DEFAULT, NOTHING, 1_000_000, Limit::Unlimited), (vec![], None));
        assert_eq!(crossed(&DEFAULT, at(80, 10), 5, Limit::Max(0)), (vec![], None));
    }

    proptest! {
        #[test]
        fn announcing_in_steps_equals_announcing_at_once(steps in proptest::collection::vec(1i64..50, 1..20), max in 1i32..500) {
            let mut announced = NOTHING;
            let mut all = Vec::new();
            let mut usage = 0;
            for s in steps {
                usage += s;
                let (hit, remember) = crossed(&DEFAULT, announced, usage, Limit::Max(max));
                announced = remember.unwrap_or(announced);
                all.extend(hit);
            }
            prop_assert_eq!(all, hits(NOTHING, usage, Limit::Max(max)));
        }

        #[test]
        fn after_a_limit_change_alerts_are_those_of_a_fresh_period(
            before in 1i32..500, after in 1i32..500, percent in 0i32..=100, usage in 0i64..2000,
        ) {
            prop_assume!(before != after);
            prop_assert_eq!(
                hits(at(percent, i64::from(before)), usage, Limit::Max(after)),
                hits(NOTHING, usage, Limit::Max(after))
            );
        }

        #[test]
        fn under_one_limit_nothing_is_announced_twice(
            usages in proptest::collection::vec(0i64..1000, 1..20), max in 1i32..500,
        ) {
            // Usage may fall (refunds) and rise again: each threshold still fires once.
            let mut announced = NOTHING;
            let mut all = Vec::new();
            for usage in usages {
                let (hit, remember) = crossed(&DEFAULT, announced, usage, Limit::Max(max));
                announced = remember.unwrap_or(announced);
                all.extend(hit);
            }
            prop_assert!(all.windows(2).all(|w| w[0] < w[1]), "{:?}", all);
        }
    }
}
