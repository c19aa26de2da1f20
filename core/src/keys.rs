//! Idempotency keys: what a writer accepts before anything is locked or written; and the key
//! of the lock that orders the uses and the limit changes of one user's feature.

use crate::error::{Error, Subject, MAX_IDEMPOTENCY_KEY_BYTES};

/// A key names one use for good; an empty key names nothing, and a key is stored in a btree
/// index, whose entries PostgreSQL limits in size.
pub fn validate_idempotency_key(subject: &Subject, key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::EmptyIdempotencyKey { subject: subject.clone() });
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(Error::IdempotencyKeyTooLong { subject: subject.clone(), bytes: key.len() });
    }
    Ok(())
}

/// The two-int4 advisory lock key of (user, feature): `pg_advisory_xact_lock(int4, int4)`,
/// whose key space is apart from the one-int8 form the idempotency lock uses. A use takes it
/// before it counts, and every change of that feature's limit takes it too, so the two order.
/// A 64-bit FNV-1a hash over the user id's bytes and the code's: fixed by this code alone (not
/// by a hasher seeded per process), so every backend and the triggers compute the same key
/// for the same pair. Two pairs that collide merely share a lock.
pub fn feature_lock_key(user_id: i64, feature: &str) -> (i32, i32) {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = user_id
        .to_le_bytes()
        .iter()
        .chain(feature.as_bytes())
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    let [a, b, c, d, e, f, g, h] = hash.to_be_bytes();
    (i32::from_be_bytes([a, b, c, d]), i32::from_be_bytes([e, f, g, h]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    #[test]
    fn lock_keys_are_fixed_and_tell_pairs_apart() {
        // Fixed: a backend of another build, or the trigger, must take the same lock.
        assert_eq!(
            feature_lock_key(1, "articles_per_month"),
            feature_lock_key(1, "articles_per_month")
        );
        assert_ne!(
            feature_lock_key(1, "articles_per_month"),
            feature_lock_key(2, "articles_per_month")
        );
        assert_ne!(
            feature_lock_key(1, "articles_per_month"),
            feature_lock_key(1, "publish_per_month")
        );
        // FNV-1a of the empty input is its offset basis.
        let hash = 0xcbf2_9ce4_8422_2325_u64;
        let zero_id = (0..8).fold(hash, |h, _| h.wrapping_mul(0x0000_0100_0000_01b3));
        assert_eq!(feature_lock_key(0, ""), ((zero_id >> 32) as u32 as i32, zero_id as u32 as i32));
    }

    proptest! {
        #[test]
        fn lock_keys_of_one_user_rarely_collide(user in any::<i64>(), a in "[a-z_]{1,20}", b in "[a-z_]{1,20}") {
            prop_assume!(a != b);
            prop_assert_ne!(feature_lock_key(user, &a), feature_lock_key(user, &b));
        }
    }

    #[test]
    fn empty_and_long_keys_are_refused() {
        let s = Subject { user_id: 1, feature: "f".into() };
        assert_eq!(
            validate_idempotency_key(&s, "").unwrap_err().kind(),
            ErrorKind::InvalidParameter
        );
        assert!(validate_idempotency_key(&s, "job-1").is_ok());
        assert!(validate_idempotency_key(&s, &"k".repeat(MAX_IDEMPOTENCY_KEY_BYTES)).is_ok());
        let long = validate_idempotency_key(&s, &"k".repeat(6400)).unwrap_err();
        assert_eq!(long.kind(), ErrorKind::TooLong);
        assert!(long.to_string().contains("6400 bytes"), "{long}");
    }
}
