//! The figures `check_user_quota` returns, computed from a limit and the period's usage.

use crate::limit::Limit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    pub has_quota: bool,
    pub current_usage: i64,
    /// `-1` for unlimited, `0` when no source defines a limit.
    pub quota_limit: i64,
    /// `-1` for unlimited; never negative otherwise, even when usage exceeds a lowered limit.
    pub remaining: i64,
    /// Usage as a percentage of the limit in hundredths of a percent (`1234` is 12.34%),
    /// rounded half away from zero like `round(numeric, 2)`; 0 for unlimited or no limit.
    pub percentage_hundredths: i64,
}

impl QuotaStatus {
    /// No active subscription: `(false, 0, 0, 0, 0)`.
    pub const NONE: QuotaStatus = QuotaStatus {
        has_quota: false,
        current_usage: 0,
        quota_limit: 0,
        remaining: 0,
        percentage_hundredths: 0,
    };

    /// The status of a feature that is not used up (kind boolean or config, `on` as
    /// [`crate::Entitlement::is_on`] says): on answers as an unlimited quota with no usage, off
    /// as no quota.
    pub fn of_switch(on: bool) -> QuotaStatus {
        if on {
            QuotaStatus::evaluate(Some(Limit::Unlimited), 0)
        } else {
            QuotaStatus::NONE
        }
    }

    /// The status for a limit (`None`: no source defines one) and the usage of the period.
    pub fn evaluate(limit: Option<Limit>, usage: i64) -> QuotaStatus {
        match limit {
            None => QuotaStatus { current_usage: usage, ..QuotaStatus::NONE },
            Some(Limit::Unlimited) => QuotaStatus {
                has_quota: true,
                current_usage: usage,
                quota_limit: -1,
                remaining: -1,
                percentage_hundredths: 0,
            },
            Some(Limit::Max(n)) => {
                let n = i64::from(n);
                QuotaStatus {
                    has_quota: usage < n,
                    current_usage: usage,
                    quota_limit: n,
                    remaining: (n - usage).max(0),
                    percentage_hundredths: percentage(usage, n),
                }
            }
        }
    }

    /// The status with the active grants of the feature (`totals`) added: an unlimited
    /// allowance stays unlimited; otherwise (no limit counts as an allowance of 0)
    /// `quota_limit` is the allowance plus what the grants gave, `current_usage` the period's
    /// usage plus what was drawn from them, and `remaining` what the allowance has left plus
    /// what they have left, so `remaining = quota_limit - current_usage` while the usage is
    /// within the allowance. Without grants, the status is unchanged.
    pub fn with_grants(self, limit: Option<Limit>, totals: crate::grants::Totals) -> QuotaStatus {
        if totals.granted == 0 || limit == Some(Limit::Unlimited) {
            return self;
        }
        let allowance = match limit {
            Some(Limit::Max(n)) => i64::from(n),
            _ => 0,
        };
        let used = totals.granted - totals.left;
        let quota_limit = allowance.saturating_add(totals.granted);
        let current_usage = self.current_usage.saturating_add(used);
        let remaining = (allowance - self.current_usage).max(0).saturating_add(totals.left);
        QuotaStatus {
            has_quota: remaining > 0,
            current_usage,
            quota_limit,
            remaining,
            percentage_hundredths: percentage(current_usage, quota_limit),
        }
    }

    /// The status with the allowed overage beyond the limit ([`crate::overage`]) added, for a
    /// period whose counter holds `usage`: unlimited overage makes the figures those of an
    /// unlimited feature (`consume` always allows); N units add what is left of them to
    /// `remaining` and N to `quota_limit`, so `remaining = quota_limit - current_usage` still
    /// holds. Without an overage, or for an unlimited allowance, the status is unchanged.
    pub fn with_overage(
        self,
        limit: Option<Limit>,
        overage: Option<Limit>,
        usage: i64,
    ) -> QuotaStatus {
        let allowance = match limit {
            Some(Limit::Unlimited) => return self,
            Some(Limit::Max(n)) => i64::from(n),
            None => 0,
        };
        match overage {
            None | Some(Limit::Max(0)) => self,
            Some(Limit::Unlimited) => QuotaStatus {
                has_quota: true,
                quota_limit: -1,
                remaining: -1,
                percentage_hundredths: 0,
                ..self
            },
            Some(Limit::Max(n)) => {
                let left = crate::overage::left(overage, allowance, usage).unwrap_or(0);
                let quota_limit = self.quota_limit.saturating_add(i64::from(n));
                let remaining = self.remaining.saturating_add(left);
                QuotaStatus {
                    has_quota: remaining > 0,
                    quota_limit,
                    remaining,
                    percentage_hundredths: percentage(self.current_usage, quota_limit),
                    ..self
                }
            }
        }
    }

    /// The status with `held` units of active holds ([`crate::holds`]) counted: they are part of
    /// `current_usage` and no longer `remaining`, so `remaining = quota_limit - current_usage`
    /// still holds. Unlimited stays unlimited; without holds the status is unchanged.
    pub fn with_held(self, held: i64) -> QuotaStatus {
        if held <= 0 || self.quota_limit == -1 {
            return self;
        }
        let current_usage = self.current_usage.saturating_add(held);
        let remaining = (self.remaining - held).max(0);
        QuotaStatus {
            has_quota: remaining > 0,
            current_usage,
            remaining,
            percentage_hundredths: percentage(current_usage, self.quota_limit),
            ..self
        }
    }

    /// `current_usage`, `quota_limit` and `remaining` as the int4 columns of the seed's result,
    /// each saturated at 2147483647 (`usage_overview` gives the exact bigint figures). A limit
    /// is at most 2147483647, so only usage beyond it saturates (and `remaining` of an unlimited
    /// feature, -1, never does): an unlimited feature's counter grows past int4, and a limited
    /// one can be beyond its limit after `record_feature_usage`, which does not enforce, or a
    /// lowered limit. An error there would make a check fail for a user who may use the feature
    /// without bound, and a lowered limit's refusal is still told by `has_quota` = false and
    /// `remaining` = 0.
    pub fn int4_figures(&self) -> (i32, i32, i32) {
        let saturate = |value: i64| i32::try_from(value).unwrap_or(i32::MAX);
        (saturate(self.current_usage), saturate(self.quota_limit), saturate(self.remaining))
    }
}

/// `usage` as a percentage of `limit` in hundredths of a percent, rounded half away from zero
/// like `round(numeric, 2)`; 0 for a limit of 0.
fn percentage(usage: i64, limit: i64) -> i64 {
    if limit == 0 {
        return 0;
    }
    // usage * 10_000 overflows i64 near usage = 9.2e14; i128 cannot.
    let num = i128::from(usage) * 10_000;
    let den = i128::from(limit);
    let rounded = (2 * num + den * num.signum()) / (2 * den);
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_switch_answers_as_unlimited_or_no_quota() {
        let on = QuotaStatus::of_switch(true);
        assert!(on.has_quota);
        assert_eq!((on.quota_limit, on.remaining, on.current_usage), (-1, -1, 0));
        assert_eq!(QuotaStatus::of_switch(false), QuotaStatus::NONE);
    }

    #[test]
    fn grants_add_to_the_figures() {
        use crate::grants::Totals;
        // The booster story: allowance 10 all used, a pack of 20 with 15 used.
        let totals = Totals { granted: 20, left: 5 };
        let s = QuotaStatus::evaluate(Some(Limit::Max(10)), 10)
            .with_grants(Some(Limit::Max(10)), totals);
        assert_eq!((s.has_quota, s.current_usage, s.quota_limit, s.remaining), (true, 25, 30, 5));
        assert_eq!(s.remaining, s.quota_limit - s.current_usage);
        // Unlimited stays unlimited; no grants change nothing.
        let u = QuotaStatus::evaluate(Some(Limit::Unlimited), 3);
        assert_eq!(u.with_grants(Some(Limit::Unlimited), totals), u);
        let plain = QuotaStatus::evaluate(Some(Limit::Max(10)), 4);
        assert_eq!(plain.with_grants(Some(Limit::Max(10)), Totals::default()), plain);
        // No limit anywhere: the grants alone.
        let none = QuotaStatus::evaluate(None, 0).with_grants(None, Totals { granted: 7, left: 7 });
        assert_eq!((none.has_quota, none.quota_limit, none.remaining), (true, 7, 7));
        // A spent pack leaves no quota.
        let spent = QuotaStatus::evaluate(Some(Limit::Max(10)), 10)
            .with_grants(Some(Limit::Max(10)), Totals { granted: 20, left: 0 });
        assert!(!spent.has_quota);
    }

    #[test]
    fn overage_adds_to_what_is_left() {
        // Limit 100, 10 of overage, 104 used: 6 left of the overage.
        let s = QuotaStatus::evaluate(Some(Limit::Max(100)), 104).with_overage(
            Some(Limit::Max(100)),
            Some(Limit::Max(10)),
            104,
        );
        assert_eq!((s.has_quota, s.current_usage, s.quota_limit, s.remaining), (true, 104, 110, 6));
        assert_eq!(s.remaining, s.quota_limit - s.current_usage);
        // Unlimited overage: the figures of an unlimited feature.
        let u = QuotaStatus::evaluate(Some(Limit::Max(100)), 500).with_overage(
            Some(Limit::Max(100)),
            Some(Limit::Unlimited),
            500,
        );
        assert_eq!((u.has_quota, u.quota_limit, u.remaining), (true, -1, -1));
        // No overage, or an unlimited allowance: unchanged.
        let plain = QuotaStatus::evaluate(Some(Limit::Max(100)), 4);
        assert_eq!(plain.with_overage(Some(Limit::Max(100)), None, 4), plain);
        assert_eq!(plain.with_overage(Some(Limit::Max(100)), Some(Limit::Max(0)), 4), plain);
    }

    #[test]
    fn holds_are_usage_until_they_end() {
        use crate::grants::Totals;
        // Limit 500, used 0, six holds of 75: 450 in use, 50 left.
        let s = QuotaStatus::evaluate(Some(Limit::Max(500)), 0).with_held(450);
        assert_eq!((s.has_quota, s.current_usage, s.remaining), (true, 450, 50));
        assert_eq!(s.remaining, s.quota_limit - s.current_usage);
        // With a pack of 20: the holds come off the total.
        let g = QuotaStatus::evaluate(Some(Limit::Max(10)), 10)
            .with_grants(Some(Limit::Max(10)), Totals { granted: 20, left: 20 })
            .with_held(15);
        assert_eq!((g.current_usage, g.quota_limit, g.remaining), (25, 30, 5));
        // Unlimited stays unlimited.
        let u = QuotaStatus::evaluate(Some(Limit::Unlimited), 3);
        assert_eq!(u.with_held(10), u);
    }

    #[test]
    fn the_seed_scenario() {
        // Custom quota 6, used 2: remaining 4. Raised to 10: remaining 8, 3 more articles fit.
        let before = QuotaStatus::evaluate(Some(Limit::Max(6)), 2);
        assert_eq!(
            (before.has_quota, before.remaining, before.percentage_hundredths),
            (true, 4, 3333)
        );
        let after = QuotaStatus::evaluate(Some(Limit::Max(10)), 2);
        assert_eq!(
            (after.quota_limit, after.remaining, after.percentage_hundredths),
            (10, 8, 2000)
        );
        assert!(Limit::Max(10).allows(2, 3));
    }

    #[test]
    fn exhausted_and_lowered_limits() {
        let full = QuotaStatus::evaluate(Some(Limit::Max(5)), 5);
        assert_eq!((full.has_quota, full.remaining, full.percentage_hundredths), (false, 0, 10000));
        let lowered = QuotaStatus::evaluate(Some(Limit::Max(4)), 6);
        assert_eq!(
            (lowered.has_quota, lowered.remaining, lowered.percentage_hundredths),
            (false, 0, 15000)
        );
    }

    #[test]
    fn unlimited_zero_and_absent_limits() {
        let u = QuotaStatus::evaluate(Some(Limit::Unlimited), 42);
        assert_eq!(
            (u.has_quota, u.quota_limit, u.remaining, u.percentage_hundredths),
            (true, -1, -1, 0)
        );
        let z = QuotaStatus::evaluate(Some(Limit::Max(0)), 0);
        assert_eq!(
            (z.has_quota, z.quota_limit, z.remaining, z.percentage_hundredths),
            (false, 0, 0, 0)
        );
        let none = QuotaStatus::evaluate(None, 3);
        assert_eq!((none.has_quota, none.current_usage, none.quota_limit), (false, 3, 0));
        assert_eq!(QuotaStatus::NONE.percentage_hundredths, 0);
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(QuotaStatus::evaluate(Some(Limit::Max(3)), 2).percentage_hundredths, 6667);
        assert_eq!(QuotaStatus::evaluate(Some(Limit::Max(8)), 1).percentage_hundredths, 1250);
        assert_eq!(QuotaStatus::evaluate(Some(Limit::Max(16)), 1).percentage_hundredths, 625);
        assert_eq!(QuotaStatus::evaluate(Some(Limit::Max(80_000)), 1).percentage_hundredths, 0);
        assert_eq!(QuotaStatus::evaluate(Some(Limit::Max(20_000)), 1).percentage_hundredths, 1);
        assert_eq!(QuotaStatus::evaluate(Some(Limit::Max(20_001)), 1).percentage_hundredths, 0);
    }

    #[test]
    fn figures_beyond_int4_saturate() {
        // Issue 14, item 9: unlimited, 2 * 2147483647 used.
        let unlimited = QuotaStatus::evaluate(Some(Limit::Unlimited), 4_294_967_294);
        assert_eq!(unlimited.int4_figures(), (i32::MAX, -1, -1));
        let beyond = QuotaStatus::evaluate(Some(Limit::Max(10)), i64::from(i32::MAX) + 1);
        assert_eq!(beyond.int4_figures(), (i32::MAX, 10, 0));
        let at_edge = QuotaStatus::evaluate(Some(Limit::Max(i32::MAX)), 1);
        assert_eq!(at_edge.int4_figures(), (1, i32::MAX, i32::MAX - 1));
    }

    proptest! {
        #[test]
        fn invariants(limit in proptest::option::of(-1i64..1_000_000), usage in 0i64..i64::MAX) {
            let limit = limit.map(|n| crate::limit::limit_from_i64(n).unwrap());
            let s = QuotaStatus::evaluate(limit, usage);
            prop_assert_eq!(s.current_usage, usage);
            match limit {
                Some(Limit::Max(n)) => {
                    prop_assert_eq!(s.has_quota, usage < i64::from(n));
                    prop_assert_eq!(s.remaining, (i64::from(n) - usage).max(0));
                    prop_assert!(s.percentage_hundredths >= 0);
                }
                Some(Limit::Unlimited) => prop_assert!(s.has_quota && s.remaining == -1),
                None => prop_assert!(!s.has_quota && s.remaining == 0),
            }
        }

        #[test]
        fn int4_figures_are_exact_or_saturated(limit in proptest::option::of(-1i64..=i64::from(i32::MAX)), usage in 0i64..i64::MAX) {
            let limit = limit.map(|n| crate::limit::limit_from_i64(n).unwrap());
            let s = QuotaStatus::evaluate(limit, usage);
            let (u, l, r) = s.int4_figures();
            for (shown, exact) in [(u, s.current_usage), (l, s.quota_limit), (r, s.remaining)] {
                prop_assert!(i64::from(shown) == exact || (shown == i32::MAX && exact > i64::from(i32::MAX)));
            }
            // The limit always fits; what is left of it too.
            prop_assert_eq!(i64::from(l), s.quota_limit);
            prop_assert_eq!(i64::from(r), s.remaining);
        }
    }
}
