//! Idempotency keys: what a writer accepts before anything is locked or written.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

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
