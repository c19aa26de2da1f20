//! Grants: extra quota beside the period's allowance (top-ups, booster packs, promotions), and
//! the order a use draws from them.
//!
//! A use takes what the period's allowance has left first, then the active grants in use
//! order: lower `priority` first, then the one that expires soonest (a grant that never expires
//! comes last), then the oldest, then the lowest id. One use may be split across the allowance
//! and several grants.

use std::cmp::Ordering;

/// An active grant as a use sees it, once it is locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub id: i64,
    /// What is left of it (never below zero).
    pub remaining: i64,
    pub priority: i32,
    /// Microseconds since the PostgreSQL epoch; `None`: never expires.
    pub expires_at: Option<i64>,
    /// Microseconds since the PostgreSQL epoch.
    pub created_at: i64,
}

/// Whether a grant counts at `now`: not voided, effective from `effective_from` (inclusive)
/// until `expires_at` (exclusive; `None`: never expires). Times in microseconds since the
/// PostgreSQL epoch. The SQL function quota.grant_counts() states the same rule for the
/// statements.
pub fn counts(voided: bool, effective_from: i64, expires_at: Option<i64>, now: i64) -> bool {
    !voided && effective_from <= now && expires_at.is_none_or(|e| e > now)
}

/// The use order of two grants.
pub fn use_order(a: &Balance, b: &Balance) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then_with(|| match (a.expires_at, b.expires_at) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.created_at.cmp(&b.created_at))
        .then_with(|| a.id.cmp(&b.id))
}

/// Where the units of one use come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Units the period's allowance covers.
    pub allowance: i64,
    /// `(grant id, units)` in use order, each at most the grant's `remaining`, none zero.
    pub grants: Vec<(i64, i64)>,
    /// Units of the allowed overage beyond the limit ([`crate::overage`]): counted on the
    /// allowance beyond its limit and marked as overage in the ledger.
    pub overage: i64,
    /// Units nothing covers: a `consume` is refused, a `record_feature_usage` counts them on
    /// the allowance beyond its limit.
    pub uncovered: i64,
}

/// How a use of `amount` units (> 0) splits, when the allowance has `allowance_left` units left
/// (`None`: unlimited, which covers everything) and `grants` are the active grants, in any order.
pub fn split(amount: i64, allowance_left: Option<i64>, grants: &[Balance]) -> Split {
    let Some(left) = allowance_left else {
        return Split { allowance: amount, ..Split::default() };
    };
    let allowance = amount.min(left.max(0));
    let mut need = amount - allowance;
    let mut ordered: Vec<&Balance> = grants.iter().filter(|g| g.remaining > 0).collect();
    ordered.sort_by(|a, b| use_order(a, b));
    let mut taken = Vec::new();
    for g in ordered {
        if need == 0 {
            break;
        }
        let take = need.min(g.remaining);
        taken.push((g.id, take));
        need -= take;
    }
    Split { allowance, grants: taken, overage: 0, uncovered: need }
}

/// The active grants of a user's feature, added up: what they gave and what is left of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub granted: i64,
    pub left: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grant(id: i64, remaining: i64, priority: i32, expires_at: Option<i64>) -> Balance {
        Balance { id, remaining, priority, expires_at, created_at: id * 10 }
    }

    #[test]
    fn the_booster_story() {
        // Allowance 10, used 0; a pack of 20: a use of 25 takes 10 + 15.
        let pack = grant(1, 20, 0, Some(1_000));
        let s = split(25, Some(10), std::slice::from_ref(&pack));
        assert_eq!(s, Split { allowance: 10, grants: vec![(1, 15)], overage: 0, uncovered: 0 });
        // 5 left in the pack, allowance spent: 7 more leave 2 uncovered.
        let pack = Balance { remaining: 5, ..pack };
        assert_eq!(
            split(7, Some(0), &[pack]),
            Split { allowance: 0, grants: vec![(1, 5)], overage: 0, uncovered: 2 }
        );
    }

    #[test]
    fn order_is_priority_then_soonest_expiry_then_oldest() {
        let never = grant(1, 5, 0, None);
        let late = grant(2, 5, 0, Some(2_000));
        let soon = grant(3, 5, 0, Some(1_000));
        let urgent = grant(4, 5, -1, None);
        let older_same_expiry = Balance { created_at: 1, ..grant(5, 5, 0, Some(1_000)) };
        let s = split(25, Some(0), &[never, late, soon, urgent, older_same_expiry]);
        assert_eq!(s.grants, vec![(4, 5), (5, 5), (3, 5), (2, 5), (1, 5)]);
    }

    #[test]
    fn unlimited_takes_nothing_from_grants() {
        let s = split(1_000, None, &[grant(1, 5, 0, None)]);
        assert_eq!(s, Split { allowance: 1_000, grants: vec![], overage: 0, uncovered: 0 });
    }

    #[test]
    fn an_allowance_beyond_its_limit_covers_nothing() {
        // A lowered limit: 12 used of 10.
        let s = split(3, Some(-2), &[grant(1, 1, 0, None)]);
        assert_eq!(s, Split { allowance: 0, grants: vec![(1, 1)], overage: 0, uncovered: 2 });
    }

    prop_compose! {
        fn balances()(v in prop::collection::vec(
            (0i64..50, -2i32..3, prop::option::of(0i64..5), 0i64..5), 0..6))
            -> Vec<Balance> {
            v.into_iter().enumerate().map(|(i, (remaining, priority, expires, created))| Balance {
                id: i as i64 + 1, remaining, priority, expires_at: expires, created_at: created,
            }).collect()
        }
    }

    proptest! {
        #[test]
        fn every_unit_is_placed_once_and_no_grant_goes_below_zero(
            amount in 1i64..200, left in prop::option::of(-5i64..60), grants in balances()
        ) {
            let s = split(amount, left, &grants);
            let drawn: i64 = s.grants.iter().map(|(_, n)| n).sum();
            prop_assert_eq!(s.allowance + drawn + s.uncovered, amount);
            for (id, n) in &s.grants {
                let g = grants.iter().find(|g| g.id == *id).unwrap();
                prop_assert!(*n > 0 && *n <= g.remaining);
            }
            // The allowance first: a grant is drawn only once the allowance is spent.
            if let Some(left) = left {
                prop_assert_eq!(s.allowance, amount.min(left.max(0)));
            }
            // Something is uncovered only when every grant is spent.
            if s.uncovered > 0 {
                prop_assert_eq!(drawn, grants.iter().map(|g| g.remaining).sum::<i64>());
            }
        }

        #[test]
        fn a_grant_is_drawn_only_when_every_grant_before_it_is_spent(
            amount in 1i64..200, grants in balances()
        ) {
            let s = split(amount, Some(0), &grants);
            let mut ordered: Vec<&Balance> = grants.iter().filter(|g| g.remaining > 0).collect();
            ordered.sort_by(|a, b| use_order(a, b));
            // The grants drawn are a prefix of the use order, all spent but maybe the last.
            for (i, (id, n)) in s.grants.iter().enumerate() {
                prop_assert_eq!(ordered[i].id, *id);
                if i + 1 < s.grants.len() {
                    prop_assert_eq!(*n, ordered[i].remaining);
                }
            }
        }
    }
}
