//! Threshold alerts: which configured fractions of a limit a use has just crossed.
//!
//! Thresholds are whole percentages (`quota.features.alert_thresholds`, default 80, 95, 100).
//! Each fires at most once per period: the counter row remembers the highest one already
//! announced, so a refund that drops usage below a threshold and a later use that crosses it
//! again announce nothing new.

use crate::limit::Limit;

/// The thresholds above `already_announced` that `usage` has reached, in increasing order.
pub fn crossed(thresholds: &[i32], already_announced: i32, usage: i64, limit: Limit) -> Vec<i32> {
    let Limit::Max(max) = limit else {
        return Vec::new();
    };
    if max == 0 {
        return Vec::new();
    }
    let mut hit: Vec<i32> = thresholds
        .iter()
        .copied()
        .filter(|&t| t > already_announced)
        // usage / max >= t / 100, in integers (i128: usage * 100 cannot overflow).
        .filter(|&t| i128::from(usage) * 100 >= i128::from(t) * i128::from(max))
        .collect();
    hit.sort_unstable();
    hit.dedup();
    hit
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEFAULT: [i32; 3] = [80, 95, 100];

    #[test]
    fn crossing_80_then_95_and_100_together() {
        assert_eq!(crossed(&DEFAULT, 0, 7, Limit::Max(10)), Vec::<i32>::new());
        assert_eq!(crossed(&DEFAULT, 0, 8, Limit::Max(10)), vec![80]);
        assert_eq!(crossed(&DEFAULT, 80, 10, Limit::Max(10)), vec![95, 100]);
    }

    #[test]
    fn each_threshold_fires_once_per_period() {
        assert_eq!(crossed(&DEFAULT, 100, 12, Limit::Max(10)), Vec::<i32>::new());
        assert_eq!(crossed(&DEFAULT, 80, 9, Limit::Max(10)), Vec::<i32>::new());
    }

    #[test]
    fn unlimited_and_zero_limits_never_alert() {
        assert!(crossed(&DEFAULT, 0, 1_000_000, Limit::Unlimited).is_empty());
        assert!(crossed(&DEFAULT, 0, 5, Limit::Max(0)).is_empty());
    }

    proptest! {
        #[test]
        fn announcing_in_steps_equals_announcing_at_once(steps in proptest::collection::vec(1i64..50, 1..20), max in 1i32..500) {
            let mut announced = 0;
            let mut all = Vec::new();
            let mut usage = 0;
            for s in steps {
                usage += s;
                let hit = crossed(&DEFAULT, announced, usage, Limit::Max(max));
                if let Some(&top) = hit.last() { announced = top; }
                all.extend(hit);
            }
            prop_assert_eq!(all, crossed(&DEFAULT, 0, usage, Limit::Max(max)));
        }
    }
}
