//! Storage units. `storage_space` is kept in MB in `plan_features` and `custom_quotas` (the
//! seed application's convention) and in bytes in `user_storage_usage`. The unit always comes
//! from data (`plan_features.feature_unit`, else `quota.features.unit`), never from the size
//! of the number. Multiples are binary, as the seed computed them (1 MB = 1024 * 1024 bytes).

use crate::error::{Error, Result, Subject};
use crate::limit::Limit;

/// Bytes per one `unit`, or `None` when the unit is not a unit of bytes.
pub fn bytes_per_unit(unit: &str) -> Option<i64> {
    let exponent = match unit.trim().to_ascii_uppercase().as_str() {
        "B" | "BYTE" | "BYTES" => 0,
        "KB" | "KIB" => 1,
        "MB" | "MIB" => 2,
        "GB" | "GIB" => 3,
        "TB" | "TIB" => 4,
        _ => return None,
    };
    Some(1024i64.pow(exponent))
}

/// A limit in `unit` as bytes; `-1` stays `-1` (unlimited).
pub fn limit_to_bytes(subject: &Subject, limit: Limit, unit: &str) -> Result<i64> {
    let per = bytes_per_unit(unit)
        .ok_or_else(|| Error::UnknownUnit { subject: subject.clone(), unit: unit.to_owned() })?;
    match limit {
        Limit::Unlimited => Ok(-1),
        // 2^31 MB fits a bigint, 2^31 TB (2^71 bytes) does not.
        Limit::Max(n) => i64::from(n).checked_mul(per).ok_or_else(|| Error::BytesOverflow {
            subject: subject.clone(),
            value: i64::from(n),
            unit: unit.to_owned(),
        }),
    }
}

/// A storage limit in bytes (`-1`: unlimited) with `granted` units of `unit` from grants added;
/// unlimited stays unlimited.
pub fn with_granted_bytes(subject: &Subject, bytes: i64, granted: i64, unit: &str) -> Result<i64> {
    if bytes == -1 || granted == 0 {
        return Ok(bytes);
    }
    let per = bytes_per_unit(unit)
        .ok_or_else(|| Error::UnknownUnit { subject: subject.clone(), unit: unit.to_owned() })?;
    granted.checked_mul(per).and_then(|g| g.checked_add(bytes)).ok_or_else(|| {
        Error::BytesOverflow { subject: subject.clone(), value: granted, unit: unit.to_owned() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subject() -> Subject {
        Subject { user_id: 3, feature: "storage_space".into() }
    }

    #[test]
    fn granted_storage_adds_to_a_limit() {
        let s = subject();
        assert_eq!(with_granted_bytes(&s, 104_857_600, 50, "MB").unwrap(), 157_286_400);
        assert_eq!(with_granted_bytes(&s, -1, 50, "MB").unwrap(), -1);
        assert_eq!(with_granted_bytes(&s, 0, 1, "GB").unwrap(), 1_073_741_824);
        assert!(with_granted_bytes(&s, 0, i64::MAX, "MB").is_err());
        assert!(with_granted_bytes(&s, 5, 1, "articles").is_err());
    }

    #[test]
    fn megabytes_are_binary_as_in_the_seed() {
        assert_eq!(limit_to_bytes(&subject(), Limit::Max(100), "MB").unwrap(), 104_857_600);
        assert_eq!(limit_to_bytes(&subject(), Limit::Max(1024), "mb").unwrap(), 1_073_741_824);
        assert_eq!(limit_to_bytes(&subject(), Limit::Max(2), "GiB").unwrap(), 2_147_483_648);
        assert_eq!(limit_to_bytes(&subject(), Limit::Max(7), "bytes").unwrap(), 7);
    }

    #[test]
    fn unlimited_stays_minus_one() {
        assert_eq!(limit_to_bytes(&subject(), Limit::Unlimited, "MB").unwrap(), -1);
    }

    #[test]
    fn non_byte_units_are_errors() {
        let err = limit_to_bytes(&subject(), Limit::Max(5), "articles").unwrap_err();
        assert!(err.to_string().contains("storage_space") && err.to_string().contains("articles"));
        assert!(bytes_per_unit("").is_none());
    }

    proptest! {
        #[test]
        fn converts_exactly_or_reports_overflow(n in 0..=i32::MAX, unit in prop_oneof![Just("B"), Just("KB"), Just("MB"), Just("GB"), Just("TB")]) {
            let exact = i128::from(n) * i128::from(bytes_per_unit(unit).unwrap());
            match limit_to_bytes(&subject(), Limit::Max(n), unit) {
                Ok(bytes) => prop_assert_eq!(i128::from(bytes), exact),
                Err(e) => {
                    prop_assert!(exact > i128::from(i64::MAX));
                    prop_assert!(matches!(e, Error::BytesOverflow { .. }), "{e:?}");
                }
            }
        }
    }
}
