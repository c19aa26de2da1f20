//! Limits, the JSON values that carry them, and the precedence that picks one.
//!
//! Precedence: the active subscription's `custom_quotas ->> feature` when the key is present
//! (even if the plan has no row for the feature), then the plan's `plan_features.feature_value`,
//! then the catalog default `quota.features.default_limit`; with none of them there is no quota.

use crate::error::{Error, Result, Subject};
use serde_json::Value;

/// A quota limit. `-1` in the data means [`Limit::Unlimited`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    /// At most this many units per period (0 ..= i32::MAX, so that it fits the int4 columns).
    Max(i32),
}

impl Limit {
    /// The stored form: `-1` for unlimited.
    pub fn as_i64(self) -> i64 {
        match self {
            Limit::Unlimited => -1,
            Limit::Max(n) => i64::from(n),
        }
    }

    /// Whether `usage + amount` stays within the limit.
    pub fn allows(self, usage: i64, amount: i64) -> bool {
        match self {
            Limit::Unlimited => true,
            Limit::Max(n) => usage.checked_add(amount).is_some_and(|total| total <= i64::from(n)),
        }
    }
}

/// Where a limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Custom,
    Plan,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Custom => "custom_quotas",
            Source::Plan => "plan_features",
            Source::Default => "features.default_limit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub limit: Limit,
    pub source: Source,
}

/// Why a raw value is not a limit; the caller adds who and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueProblem {
    /// Not valid JSON at all.
    NotJson,
    /// A JSON string, boolean, null, object or array.
    NotANumber(&'static str),
    /// A number with a fraction or an exponent (`6.5`, `1e3`).
    NotWhole,
    /// Below -1.
    Negative,
    /// Beyond int4.
    OutOfRange,
    /// Not `true`, `false`, `1` or `0` (a boolean feature's value).
    NotASwitch,
}

impl ValueProblem {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            ValueProblem::NotJson => "not valid JSON",
            ValueProblem::NotANumber("string") => "a string is not a number",
            ValueProblem::NotANumber("boolean") => "a boolean is not a number",
            ValueProblem::NotANumber("null") => "null is not a number; remove the key instead",
            ValueProblem::NotANumber("object") => "an object is not a number",
            ValueProblem::NotANumber(_) => "an array is not a number",
            ValueProblem::NotWhole => "not a whole number",
            ValueProblem::Negative => "negative limits other than -1 (unlimited) are not allowed",
            ValueProblem::OutOfRange => "out of range for integer",
            ValueProblem::NotASwitch => "a boolean feature is true or false (or 1 or 0)",
        }
    }
}

/// A whole number as a limit: -1 is unlimited, 0 ..= i32::MAX a maximum.
pub fn limit_from_i64(n: i64) -> std::result::Result<Limit, ValueProblem> {
    match n {
        -1 => Ok(Limit::Unlimited),
        n if n < -1 => Err(ValueProblem::Negative),
        n => i32::try_from(n).map(Limit::Max).map_err(|_| ValueProblem::OutOfRange),
    }
}

/// A JSON value (one value of `custom_quotas`) as a limit. Only JSON integers are limits: a
/// string such as `"10"` is refused rather than guessed at, as are `6.5`, `true` and `null`.
pub fn limit_from_json(value: &Value) -> std::result::Result<Limit, ValueProblem> {
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => limit_from_i64(i),
            (None, Some(_)) => Err(ValueProblem::OutOfRange),
            // Not an integer literal: a whole value beyond i64 (99999999999999999999, 1e30,
            // 1e400 which is infinite as f64) is out of range; the rest are fractions.
            (None, None) => {
                let f: f64 = n.to_string().parse().unwrap_or(f64::INFINITY);
                if f.is_infinite() || (f.fract() == 0.0 && f.abs() > i64::MAX as f64) {
                    Err(ValueProblem::OutOfRange)
                } else {
                    Err(ValueProblem::NotWhole)
                }
            }
        },
        Value::String(_) => Err(ValueProblem::NotANumber("string")),
        Value::Bool(_) => Err(ValueProblem::NotANumber("boolean")),
        Value::Null => Err(ValueProblem::NotANumber("null")),
        Value::Object(_) => Err(ValueProblem::NotANumber("object")),
        Value::Array(_) => Err(ValueProblem::NotANumber("array")),
    }
}

/// The JSON text of one value (as `jsonb -> key` prints it) as a limit.
pub fn limit_from_json_text(text: &str) -> std::result::Result<Limit, ValueProblem> {
    let value: Value = serde_json::from_str(text).map_err(|_| ValueProblem::NotJson)?;
    limit_from_json(&value)
}

pub(crate) fn value_error(
    subject: &Subject,
    origin: &'static str,
    value: String,
    p: ValueProblem,
) -> Error {
    match p {
        ValueProblem::OutOfRange => {
            Error::QuotaValueOutOfRange { subject: subject.clone(), origin, value }
        }
        p => {
            Error::InvalidQuotaValue { subject: subject.clone(), origin, value, reason: p.reason() }
        }
    }
}

/// The sources of one feature's limit for one subscription, as read from the tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitSources<'a> {
    /// `custom_quotas -> feature` as JSON text, when the key is present.
    pub custom: Option<&'a str>,
    /// `plan_features.feature_value`, when the plan has the feature.
    pub plan: Option<i64>,
    /// `features.default_limit`, when the catalog has a default.
    pub default: Option<i64>,
}

/// Applies the precedence rule. `Ok(None)` means no source has a limit: no quota.
/// A present but malformed value is an error, never a silent fall-through to the next source.
pub fn resolve(subject: &Subject, sources: &LimitSources<'_>) -> Result<Option<Resolved>> {
    if let Some(text) = sources.custom {
        let limit = limit_from_json_text(text)
            .map_err(|p| value_error(subject, "custom_quotas", text.to_owned(), p))?;
        return Ok(Some(Resolved { limit, source: Source::Custom }));
    }
    for (value, source, origin) in [
        (sources.plan, Source::Plan, "plan_features"),
        (sources.default, Source::Default, "features.default_limit"),
    ] {
        if let Some(n) = value {
            let limit =
                limit_from_i64(n).map_err(|p| value_error(subject, origin, n.to_string(), p))?;
            return Ok(Some(Resolved { limit, source }));
        }
    }
    Ok(None)
}

/// When `new` is the object `old` with exactly one key renamed (its value unchanged, every
/// other key and value the same): the old key and the new one.
pub fn renamed_key(old: &Value, new: &Value) -> Option<(String, String)> {
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return None;
    };
    if old.len() != new.len() {
        return None;
    }
    let mut gone = old.iter().filter(|(k, _)| !new.contains_key(*k));
    let mut added = new.iter().filter(|(k, _)| !old.contains_key(*k));
    let ((from, value), (to, same)) = (gone.next()?, added.next()?);
    let unchanged = old.iter().filter(|(k, _)| *k != from).all(|(k, v)| new.get(k) == Some(v));
    (gone.next().is_none() && added.next().is_none() && value == same && unchanged)
        .then(|| (from.clone(), to.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_moves_one_value_to_a_new_key() {
        let v = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
        let rename = |a: &str, b: &str| renamed_key(&v(a), &v(b));
        assert_eq!(
            rename(r#"{"exports": 50, "a": 1}"#, r#"{"data_exports": 50, "a": 1}"#),
            Some(("exports".into(), "data_exports".into()))
        );
        assert_eq!(rename(r#"{"exports": 50}"#, r#"{"data_exports": 51}"#), None);
        assert_eq!(rename(r#"{"exports": 50, "a": 1}"#, r#"{"data_exports": 50, "a": 2}"#), None);
        assert_eq!(rename(r#"{"x": 1, "y": 1}"#, r#"{"p": 1, "q": 1}"#), None);
        assert_eq!(rename(r#"{"x": 1}"#, r#"{"x": 1}"#), None);
        assert_eq!(rename(r#"{"x": 1}"#, r#"{"x": 1, "y": 1}"#), None);
        assert_eq!(rename("[1]", "[1]"), None);
    }
    use proptest::prelude::*;

    fn subject() -> Subject {
        Subject { user_id: 7, feature: "articles_per_month".into() }
    }

    #[test]
    fn custom_wins_over_plan_and_default() {
        let s = LimitSources { custom: Some("10"), plan: Some(6), default: Some(100) };
        assert_eq!(
            resolve(&subject(), &s).unwrap(),
            Some(Resolved { limit: Limit::Max(10), source: Source::Custom })
        );
    }

    #[test]
    fn custom_applies_when_plan_lacks_the_feature() {
        let s = LimitSources { custom: Some("3"), plan: None, default: None };
        assert_eq!(resolve(&subject(), &s).unwrap().unwrap().limit, Limit::Max(3));
    }

    #[test]
    fn plan_then_default_then_nothing() {
        let plan = LimitSources { custom: None, plan: Some(6), default: Some(100) };
        assert_eq!(resolve(&subject(), &plan).unwrap().unwrap().source, Source::Plan);
        let default = LimitSources { custom: None, plan: None, default: Some(100) };
        assert_eq!(
            resolve(&subject(), &default).unwrap(),
            Some(Resolved { limit: Limit::Max(100), source: Source::Default })
        );
        assert_eq!(resolve(&subject(), &LimitSources::default()).unwrap(), None);
    }

    #[test]
    fn minus_one_is_unlimited_everywhere() {
        for s in [
            LimitSources { custom: Some("-1"), plan: Some(5), default: None },
            LimitSources { custom: None, plan: Some(-1), default: Some(5) },
            LimitSources { custom: None, plan: None, default: Some(-1) },
        ] {
            assert_eq!(resolve(&subject(), &s).unwrap().unwrap().limit, Limit::Unlimited);
        }
    }

    #[test]
    fn malformed_custom_values_are_errors_naming_user_feature_and_value() {
        for (text, reason) in [
            ("\"abc\"", "a string is not a number"),
            ("\"10\"", "a string is not a number"),
            ("6.5", "not a whole number"),
            ("true", "a boolean is not a number"),
            ("{}", "an object is not a number"),
            ("[1]", "an array is not a number"),
            ("null", "null is not a number; remove the key instead"),
            ("-2", "negative limits other than -1 (unlimited) are not allowed"),
        ] {
            let s = LimitSources { custom: Some(text), plan: Some(6), default: None };
            let err = resolve(&subject(), &s).unwrap_err();
            assert_eq!(
                err,
                Error::InvalidQuotaValue {
                    subject: subject(),
                    origin: "custom_quotas",
                    value: text.into(),
                    reason
                }
            );
            let msg = err.to_string();
            assert!(msg.contains("user 7") && msg.contains("articles_per_month"), "{msg}");
            assert!(msg.contains(text), "{msg}");
        }
    }

    #[test]
    fn values_beyond_int4_are_out_of_range() {
        for text in ["2147483648", "99999999999999999999", "1e300", "1e400", "-1e400"] {
            let s = LimitSources { custom: Some(text), plan: None, default: None };
            assert!(
                matches!(resolve(&subject(), &s), Err(Error::QuotaValueOutOfRange { .. })),
                "{text}"
            );
        }
        assert_eq!(limit_from_json_text("2147483647"), Ok(Limit::Max(i32::MAX)));
    }

    #[test]
    fn a_bad_plan_value_is_an_error_not_a_fallback() {
        let s = LimitSources { custom: None, plan: Some(-5), default: Some(10) };
        assert!(matches!(
            resolve(&subject(), &s),
            Err(Error::InvalidQuotaValue { origin: "plan_features", .. })
        ));
    }

    #[test]
    fn allows_respects_the_limit_and_never_overflows() {
        assert!(Limit::Max(10).allows(7, 3));
        assert!(!Limit::Max(10).allows(8, 3));
        assert!(!Limit::Max(10).allows(i64::MAX, 1));
        assert!(Limit::Unlimited.allows(i64::MAX, 1));
    }

    proptest! {
        #[test]
        fn any_json_integer_in_range_round_trips(n in -1i64..=i64::from(i32::MAX)) {
            let limit = limit_from_json_text(&n.to_string()).unwrap();
            prop_assert_eq!(limit.as_i64(), n);
        }

        #[test]
        fn any_integer_outside_the_range_is_refused(n in prop_oneof![i64::MIN..-1i64, (i64::from(i32::MAX) + 1)..=i64::MAX]) {
            prop_assert!(limit_from_json_text(&n.to_string()).is_err());
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,64}") {
            let _ = limit_from_json_text(&text);
        }

        #[test]
        fn custom_presence_always_decides(custom in -1i64..1000, plan in proptest::option::of(-1i64..1000), default in proptest::option::of(-1i64..1000)) {
            let text = custom.to_string();
            let s = LimitSources { custom: Some(&text), plan, default };
            let r = resolve(&subject(), &s).unwrap().unwrap();
            prop_assert_eq!(r.source, Source::Custom);
            prop_assert_eq!(r.limit.as_i64(), custom);
        }
    }
}
