//! Feature kinds (`quota.features.kind`) and the value each kind's precedence picks.
//!
//! Every kind has the same precedence as a limit ([`crate::limit`]): the active subscription's
//! `custom_quotas -> feature` when the key is present, then the plan's row, then the catalog.
//! What the sources hold depends on the kind:
//!
//! | kind      | custom_quotas value      | plan                          | catalog                 |
//! |-----------|--------------------------|-------------------------------|-------------------------|
//! | `metered` | a limit                  | `feature_value` (a limit)     | `default_limit`         |
//! | `gauge`   | a limit                  | `feature_value` (a limit)     | `default_limit`         |
//! | `boolean` | `true`/`false`, `1`/`0`  | `feature_value`: 0 off, else on | `default_limit` (same) |
//! | `config`  | any JSON                 | `plan_features.config_value`  | `features.default_value` |
//!
//! A boolean feature without any source is off; a config feature without any has no value.

use crate::error::{Error, Result, Subject};
use crate::limit::{self, value_error, Limit, LimitSources, Source, ValueProblem};
use serde_json::Value;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Uses counted per window, reset when the window ends.
    Metered,
    /// A running count that goes up and down and never resets.
    Gauge,
    /// On or off.
    Boolean,
    /// A JSON value.
    Config,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Metered => "metered",
            Kind::Gauge => "gauge",
            Kind::Boolean => "boolean",
            Kind::Config => "config",
        }
    }

    /// Whether uses are counted against a limit (`consume`, grants, holds).
    pub fn is_counted(self) -> bool {
        matches!(self, Kind::Metered | Kind::Gauge)
    }
}

impl FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Kind> {
        match s {
            "metered" => Ok(Kind::Metered),
            "gauge" => Ok(Kind::Gauge),
            "boolean" => Ok(Kind::Boolean),
            "config" => Ok(Kind::Config),
            _ => Err(Error::InvalidKind { value: s.to_owned() }),
        }
    }
}

/// What a feature's precedence gives a user, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entitlement {
    /// A metered feature's or a gauge's limit.
    Limit(Limit),
    /// A boolean feature: on or off.
    Switch(bool),
    /// A config feature's value.
    Config(Value),
}

impl Entitlement {
    /// As JSON, the form `usage_overview`, `feature_value` and the announcements give: a limit
    /// as its number (-1 unlimited), a switch as a boolean, a configuration as itself.
    pub fn to_json(&self) -> Value {
        match self {
            Entitlement::Limit(l) => l.as_i64().into(),
            Entitlement::Switch(on) => (*on).into(),
            Entitlement::Config(v) => v.clone(),
        }
    }

    /// Whether the user has the feature at all (`has_feature`): a limit other than 0, a switch
    /// that is on, a configuration value other than JSON null.
    pub fn is_on(&self) -> bool {
        match self {
            Entitlement::Limit(l) => *l != Limit::Max(0),
            Entitlement::Switch(on) => *on,
            Entitlement::Config(v) => !v.is_null(),
        }
    }
}

/// The sources of one feature's value for one subscription, whatever the kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueSources<'a> {
    /// `custom_quotas -> feature` as JSON text, when the key is present.
    pub custom: Option<&'a str>,
    /// `plan_features.feature_value`, when the plan has the feature.
    pub plan: Option<i64>,
    /// `plan_features.config_value` as JSON text, when set.
    pub plan_config: Option<&'a str>,
    /// `features.default_limit`.
    pub default: Option<i64>,
    /// `features.default_value` as JSON text, when set.
    pub default_config: Option<&'a str>,
}

/// A JSON value as a boolean feature's switch: `true`/`false` or the seed's `1`/`0`.
pub fn switch_from_json(value: &Value) -> std::result::Result<bool, ValueProblem> {
    match value {
        Value::Bool(on) => Ok(*on),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        _ => Err(ValueProblem::NotASwitch),
    }
}

/// A plan's or the catalog's integer as a switch: 0 is off, any other value (1, or -1 which is
/// "unlimited" for a limit) on.
pub fn switch_from_i64(n: i64) -> bool {
    n != 0
}

/// Applies the precedence for a feature of kind `kind`. `Ok(None)`: no source says anything
/// (no quota, a switch that is off, no value). A present but malformed value is an error.
pub fn resolve(
    subject: &Subject,
    kind: Kind,
    sources: &ValueSources<'_>,
) -> Result<Option<(Entitlement, Source)>> {
    let parse = |text: &str| {
        serde_json::from_str::<Value>(text).map_err(|_| {
            value_error(subject, "custom_quotas", text.to_owned(), ValueProblem::NotJson)
        })
    };
    match kind {
        Kind::Metered | Kind::Gauge => {
            let limits = LimitSources {
                custom: sources.custom,
                plan: sources.plan,
                default: sources.default,
            };
            Ok(limit::resolve(subject, &limits)?.map(|r| (Entitlement::Limit(r.limit), r.source)))
        }
        Kind::Boolean => {
            if let Some(text) = sources.custom {
                let on = switch_from_json(&parse(text)?)
                    .map_err(|p| value_error(subject, "custom_quotas", text.to_owned(), p))?;
                return Ok(Some((Entitlement::Switch(on), Source::Custom)));
            }
            Ok([(sources.plan, Source::Plan), (sources.default, Source::Default)]
                .into_iter()
                .find_map(|(v, source)| {
                    v.map(|n| (Entitlement::Switch(switch_from_i64(n)), source))
                }))
        }
        Kind::Config => {
            for (text, source, origin) in [
                (sources.custom, Source::Custom, "custom_quotas"),
                (sources.plan_config, Source::Plan, "plan_features.config_value"),
                (sources.default_config, Source::Default, "features.default_value"),
            ] {
                if let Some(text) = text {
                    let value = serde_json::from_str::<Value>(text).map_err(|_| {
                        value_error(subject, origin, text.to_owned(), ValueProblem::NotJson)
                    })?;
                    return Ok(Some((Entitlement::Config(value), source)));
                }
            }
            Ok(None)
        }
    }
}

/// Checks one `custom_quotas` value against its feature's kind, as the validation trigger does
/// at write time: a limit for metered and gauge, a switch for boolean, anything for config.
pub fn validate_custom_value(subject: &Subject, kind: Kind, value: &Value) -> Result<()> {
    let problem = match kind {
        Kind::Metered | Kind::Gauge => limit::limit_from_json(value).err(),
        Kind::Boolean => switch_from_json(value).err(),
        Kind::Config => None,
    };
    match problem {
        Some(p) => Err(value_error(subject, "custom_quotas", value.to_string(), p)),
        None => Ok(()),
    }
}

/// Checks a whole `custom_quotas` document: an object (SQL NULL is the caller's to allow) whose
/// keys are known features (`kind_of` gives their kind) and whose values suit their kinds.
/// Returns the first problem.
pub fn validate_custom_quotas(
    user_id: i64,
    document: &Value,
    kind_of: impl Fn(&str) -> Option<Kind>,
) -> Result<()> {
    let Value::Object(map) = document else {
        return Err(Error::CustomQuotasNotObject { user_id, value: document.to_string() });
    };
    for (feature, value) in map {
        let Some(kind) = kind_of(feature) else {
            return Err(Error::UnknownFeature { user_id: Some(user_id), feature: feature.clone() });
        };
        validate_custom_value(&Subject { user_id, feature: feature.clone() }, kind, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subject() -> Subject {
        Subject { user_id: 7, feature: "sso".into() }
    }

    fn sources<'a>(
        custom: Option<&'a str>,
        plan: Option<i64>,
        plan_config: Option<&'a str>,
        default: Option<i64>,
        default_config: Option<&'a str>,
    ) -> ValueSources<'a> {
        ValueSources { custom, plan, plan_config, default, default_config }
    }

    #[test]
    fn kinds_round_trip_and_unknown_names_are_errors() {
        for k in [Kind::Metered, Kind::Gauge, Kind::Boolean, Kind::Config] {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        }
        assert!(matches!("flag".parse::<Kind>(), Err(Error::InvalidKind { .. })));
        assert!(Kind::Gauge.is_counted() && !Kind::Boolean.is_counted());
    }

    #[test]
    fn a_switch_takes_booleans_and_the_seeds_one_and_zero() {
        let on = |t: &str| {
            resolve(&subject(), Kind::Boolean, &sources(Some(t), Some(0), None, None, None))
        };
        assert_eq!(on("true").unwrap(), Some((Entitlement::Switch(true), Source::Custom)));
        assert_eq!(on("1").unwrap(), Some((Entitlement::Switch(true), Source::Custom)));
        assert_eq!(on("false").unwrap(), Some((Entitlement::Switch(false), Source::Custom)));
        assert_eq!(on("0").unwrap(), Some((Entitlement::Switch(false), Source::Custom)));
        for bad in ["2", "-1", "\"yes\"", "null", "{}", "1.0"] {
            assert!(matches!(on(bad), Err(Error::InvalidQuotaValue { .. })), "{bad}");
        }
    }

    #[test]
    fn a_switch_falls_back_to_the_plan_then_the_catalog_then_off() {
        let s = |plan, default| {
            resolve(&subject(), Kind::Boolean, &sources(None, plan, None, default, None)).unwrap()
        };
        assert_eq!(s(Some(1), Some(0)), Some((Entitlement::Switch(true), Source::Plan)));
        assert_eq!(s(Some(0), Some(1)), Some((Entitlement::Switch(false), Source::Plan)));
        assert_eq!(s(Some(-1), None), Some((Entitlement::Switch(true), Source::Plan)));
        assert_eq!(s(None, Some(1)), Some((Entitlement::Switch(true), Source::Default)));
        assert_eq!(s(None, None), None);
    }

    #[test]
    fn a_config_value_is_any_json_by_the_same_precedence() {
        let r = |custom, plan, default| {
            resolve(&subject(), Kind::Config, &sources(custom, Some(1), plan, Some(1), default))
                .unwrap()
                .map(|(e, s)| (e.to_json(), s))
        };
        let v = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        assert_eq!(
            r(Some(r#"{"max_resolution": "4k"}"#), Some("\"1080p\""), None),
            Some((v(r#"{"max_resolution": "4k"}"#), Source::Custom))
        );
        assert_eq!(r(None, Some("\"gpt-4o\""), Some("50")), Some((v("\"gpt-4o\""), Source::Plan)));
        assert_eq!(r(None, None, Some("50")), Some((v("50"), Source::Default)));
        assert_eq!(r(Some("null"), Some("1"), None), Some((Value::Null, Source::Custom)));
        assert_eq!(r(None, None, None), None);
    }

    #[test]
    fn is_on_by_kind() {
        assert!(Entitlement::Limit(Limit::Unlimited).is_on());
        assert!(Entitlement::Limit(Limit::Max(3)).is_on());
        assert!(!Entitlement::Limit(Limit::Max(0)).is_on());
        assert!(!Entitlement::Switch(false).is_on());
        assert!(!Entitlement::Config(Value::Null).is_on());
        assert!(Entitlement::Config(Value::Bool(false)).is_on());
    }

    #[test]
    fn validation_follows_the_kind() {
        let v = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        assert!(validate_custom_value(&subject(), Kind::Metered, &v("10")).is_ok());
        assert!(validate_custom_value(&subject(), Kind::Metered, &v("true")).is_err());
        assert!(validate_custom_value(&subject(), Kind::Gauge, &v("-2")).is_err());
        assert!(validate_custom_value(&subject(), Kind::Boolean, &v("true")).is_ok());
        assert!(validate_custom_value(&subject(), Kind::Boolean, &v("5")).is_err());
        assert!(validate_custom_value(&subject(), Kind::Config, &v(r#"{"a": [1]}"#)).is_ok());
    }

    #[test]
    fn validate_custom_quotas_checks_shape_keys_and_values() {
        let kind_of = |f: &str| match f {
            "articles_per_month" => Some(Kind::Metered),
            "sso" => Some(Kind::Boolean),
            "model" => Some(Kind::Config),
            _ => None,
        };
        let v = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        let check = |t: &str| validate_custom_quotas(1, &v(t), kind_of);
        assert!(check(r#"{"articles_per_month": 10, "sso": true, "model": "gpt-4o"}"#).is_ok());
        assert!(matches!(check("[1,2]"), Err(Error::CustomQuotasNotObject { .. })));
        assert!(matches!(check(r#"{"nope": 1}"#), Err(Error::UnknownFeature { .. })));
        assert!(matches!(
            check(r#"{"articles_per_month": "abc"}"#),
            Err(Error::InvalidQuotaValue { .. })
        ));
        assert!(matches!(check(r#"{"sso": 10}"#), Err(Error::InvalidQuotaValue { .. })));
    }

    proptest! {
        #[test]
        fn arbitrary_documents_never_panic(text in ".{0,64}") {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let _ = validate_custom_quotas(1, &v, |_| Some(Kind::Metered));
                let _ = validate_custom_quotas(1, &v, |_| Some(Kind::Boolean));
            }
        }

        #[test]
        fn custom_always_decides_a_switch(custom: bool, plan in proptest::option::of(-1i64..3), default in proptest::option::of(-1i64..3)) {
            let text = custom.to_string();
            let r = resolve(&subject(), Kind::Boolean, &sources(Some(&text), plan, None, default, None)).unwrap();
            prop_assert_eq!(r, Some((Entitlement::Switch(custom), Source::Custom)));
        }

        #[test]
        fn every_valid_custom_value_resolves(text in ".{0,40}", kind in prop_oneof![Just(Kind::Metered), Just(Kind::Boolean), Just(Kind::Config)]) {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                let valid = validate_custom_value(&subject(), kind, &value).is_ok();
                let resolved = resolve(&subject(), kind, &sources(Some(&text), None, None, None, None));
                prop_assert_eq!(valid, resolved.is_ok());
            }
        }
    }
}
