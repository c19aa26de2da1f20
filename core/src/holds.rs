//! Reservations (holds): units set aside for work that runs outside any transaction (minutes
//! of generation), granted against what is left and settled once the work is done.
//!
//! An active hold claims what is left before any later use: first what the period's allowance
//! has left, then the grants' total. It claims no particular grant, so the grants keep their use
//! order ([`crate::grants::split`]) for the uses that come while it is held, and the hold, when
//! it is settled, draws from them like a use. A hold counts from the instant it is granted until
//! it is settled, released, or `expires_at` passes (`expires_at` excluded).

use crate::grants::{self, Balance, Split};

/// Whether a hold counts at `now`: still held and not expired. Times in microseconds since the
/// PostgreSQL epoch.
pub fn counts(held: bool, expires_at: i64, now: i64) -> bool {
    held && expires_at > now
}

/// What a use, a hold or a settle may take from, with the counter and the grants locked.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// What the period's allowance has left (below zero beyond a lowered limit); `None`:
    /// unlimited, which covers everything and ignores holds.
    pub allowance_left: Option<i64>,
    /// What the other active holds claim.
    pub held: i64,
    /// The active grants, in any order.
    pub grants: &'a [Balance],
    /// What is left of the allowed overage beyond the limit ([`crate::overage::left`]);
    /// `None`: unlimited.
    pub overage_left: Option<i64>,
}

/// How a use of `amount` units (> 0) splits. What the holds claim is taken out of the allowance
/// first, then out of the grants' total, then out of the overage: the use gets the rest, in
/// the same order, the grants in use order.
pub fn split(amount: i64, sources: &Sources<'_>) -> Split {
    let Some(left) = sources.allowance_left else {
        return grants::split(amount, None, sources.grants);
    };
    let (left, held) = (left.max(0), sources.held.max(0));
    let free = (left - held).max(0);
    let claim_on_grants = (held - left).max(0);
    let total: i64 = sources.grants.iter().map(|g| g.remaining.max(0)).sum();
    let budget = (total - claim_on_grants).max(0);
    let allowance = amount.min(free);
    let from_grants = (amount - allowance).min(budget);
    let mut s = grants::split(allowance + from_grants, Some(allowance), sources.grants);
    let rest = amount - allowance - from_grants;
    let claim_on_overage = (claim_on_grants - total).max(0);
    s.overage = match sources.overage_left {
        None => rest,
        Some(o) => rest.min((o - claim_on_overage).max(0)),
    };
    s.uncovered = rest - s.overage;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grant(id: i64, remaining: i64) -> Balance {
        Balance { id, remaining, priority: 0, expires_at: None, created_at: id }
    }

    fn split(amount: i64, allowance_left: Option<i64>, held: i64, grants: &[Balance]) -> Split {
        super::split(amount, &Sources { allowance_left, held, grants, overage_left: Some(0) })
    }

    #[test]
    fn overage_comes_after_the_grants_and_holds_claim_it_last() {
        // 2 left of the allowance, a grant of 3, 4 of overage: 9 in all.
        let g = [grant(1, 3)];
        let sources =
            Sources { allowance_left: Some(2), held: 0, grants: &g, overage_left: Some(4) };
        let s = super::split(8, &sources);
        assert_eq!(s, Split { allowance: 2, grants: vec![(1, 3)], overage: 3, uncovered: 0 });
        assert_eq!(super::split(10, &sources).uncovered, 1);
        // A hold of 7 claims the allowance, the grant and 2 of the overage: 2 are left.
        let held = Sources { held: 7, ..sources };
        assert_eq!(super::split(2, &held), Split { overage: 2, ..Split::default() });
        assert_eq!(super::split(3, &held).uncovered, 1);
        // Unlimited overage covers everything beyond.
        let open = Sources { overage_left: None, ..held };
        assert_eq!(super::split(1_000, &open).uncovered, 0);
    }

    #[test]
    fn holds_claim_the_allowance_first() {
        // Limit 10, used 2: 8 left, 5 held. A use of 3 fits, a use of 4 does not.
        assert_eq!(split(3, Some(8), 5, &[]).uncovered, 0);
        assert_eq!(split(4, Some(8), 5, &[]).uncovered, 1);
        // With a grant of 10: the hold's claim stays on the allowance, the use takes 3 from it
        // and 1 from the grant.
        let s = split(4, Some(8), 5, &[grant(1, 10)]);
        assert_eq!(s, Split { allowance: 3, grants: vec![(1, 1)], overage: 0, uncovered: 0 });
    }

    #[test]
    fn what_holds_claim_beyond_the_allowance_comes_off_the_grants() {
        // 2 left of the allowance, a hold of 7: it claims 5 of the grants' 10.
        let s = split(6, Some(2), 7, &[grant(1, 4), grant(2, 6)]);
        assert_eq!(
            s,
            Split { allowance: 0, grants: vec![(1, 4), (2, 1)], overage: 0, uncovered: 1 }
        );
    }

    #[test]
    fn unlimited_ignores_holds() {
        assert_eq!(split(5, None, 1_000, &[]).allowance, 5);
    }

    #[test]
    fn twenty_holds_of_75_against_500() {
        // Each hold is granted while it fits: 6 of them.
        let (mut held, mut granted) = (0, 0);
        for _ in 0..20 {
            if split(75, Some(500), held, &[]).uncovered == 0 {
                held += 75;
                granted += 1;
            }
        }
        assert_eq!((granted, held), (6, 450));
    }

    #[test]
    fn a_hold_counts_until_it_expires() {
        assert!(counts(true, 10, 9));
        assert!(!counts(true, 10, 10));
        assert!(!counts(false, 10, 9));
    }

    proptest! {
        /// Holds and uses granted one after another, each only when it fits, never take more
        /// than the allowance, the grants and the overage hold together, and every unit of a
        /// use is placed once.
        #[test]
        fn holds_and_uses_never_overspend(
            limit in 0i64..100,
            overage in 0i32..30,
            grants_left in prop::collection::vec(0i64..40, 0..4),
            steps in prop::collection::vec((any::<bool>(), 1i64..60), 1..20),
        ) {
            let mut balances: Vec<Balance> =
                grants_left.iter().enumerate().map(|(i, r)| grant(i as i64 + 1, *r)).collect();
            let total = limit + grants_left.iter().sum::<i64>() + i64::from(overage);
            let overage = Some(crate::limit::Limit::Max(overage));
            let (mut usage, mut held, mut used) = (0i64, 0i64, 0i64);
            for (is_hold, amount) in steps {
                let sources = Sources {
                    allowance_left: Some(limit - usage),
                    held,
                    grants: &balances,
                    overage_left: crate::overage::left(overage, limit, usage),
                };
                let s = super::split(amount, &sources);
                let drawn: i64 = s.grants.iter().map(|(_, n)| n).sum();
                prop_assert_eq!(s.allowance + drawn + s.overage + s.uncovered, amount);
                if s.uncovered > 0 {
                    continue;
                }
                if is_hold {
                    held += amount;
                } else {
                    usage += s.allowance + s.overage;
                    for (id, n) in &s.grants {
                        let g = balances.iter_mut().find(|g| g.id == *id).unwrap();
                        prop_assert!(*n <= g.remaining);
                        g.remaining -= n;
                    }
                    used += amount;
                }
                prop_assert!(used + held <= total);
            }
        }
    }
}
