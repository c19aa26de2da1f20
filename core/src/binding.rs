//! Re-targets the extension's SQL at an application's own tables (`quota.attach(schema)`),
//! and names the optional features such tables may go without.

use std::fmt;

/// A feature of the extension that needs columns an application's tables may lack: attaching
/// does not require them (`quota.attach_problems(...).needed_for` names the feature), and
/// without them the calls that need the feature are refused, everything else works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optional {
    /// `usage_records.idempotency_key` with its unique index: uses and refunds by key.
    IdempotencyKeys,
    /// `usage_records.refund_of` with its unique index: `refund_usage`.
    Refunds,
    /// `user_usage.alerted_percent` and `alerted_limit`: the memory of the threshold alerts
    /// announced, without which none is announced.
    Alerts,
    /// `user_usage.held`: what the period's active holds claim, which every use must see under
    /// the counter's lock; without it `reserve` is refused.
    Reservations,
    /// `plan_features.overage_limit`: an overage a plan gives; without it only the catalog's
    /// (`features.overage_limit`) applies.
    SoftLimits,
    /// `plan_features.rollover_max` and `rollover_periods`: a rollover a plan gives; without
    /// them only the catalog's applies.
    Rollover,
    /// `plan_features.reset_rule`: a window a plan sets for a feature; without it the
    /// catalog's applies.
    Windows,
    /// `plan_features.config_value`: the value a plan gives a config feature; without it the
    /// catalog's `default_value` applies.
    ConfigValues,
    /// `plan_features.window_limits`: further limits a plan sets for a feature; without it the
    /// catalog's `window_limits` apply.
    WindowLimits,
}

impl Optional {
    const ALL: [Optional; 9] = [
        Optional::IdempotencyKeys,
        Optional::Refunds,
        Optional::Alerts,
        Optional::Reservations,
        Optional::SoftLimits,
        Optional::Rollover,
        Optional::Windows,
        Optional::ConfigValues,
        Optional::WindowLimits,
    ];

    /// The name `quota.settings.attached_lacks` and `attach_problems` use.
    pub fn name(self) -> &'static str {
        match self {
            Optional::IdempotencyKeys => "idempotency_keys",
            Optional::Refunds => "refunds",
            Optional::Alerts => "alerts",
            Optional::Reservations => "reservations",
            Optional::SoftLimits => "soft_limits",
            Optional::Rollover => "rollover",
            Optional::Windows => "windows",
            Optional::ConfigValues => "config_values",
            Optional::WindowLimits => "window_limits",
        }
    }
}

impl fmt::Display for Optional {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Optional::IdempotencyKeys => "idempotency keys",
            Optional::Refunds => "refunds",
            Optional::Alerts => "threshold alerts",
            Optional::Reservations => "reservations",
            Optional::SoftLimits => "plans' soft limits",
            Optional::Rollover => "plans' rollover",
            Optional::Windows => "plans' limit windows",
            Optional::ConfigValues => "plans' config values",
            Optional::WindowLimits => "plans' further limits",
        })
    }
}

/// The optional features the bound tables go without.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lacks {
    idempotency_keys: bool,
    refunds: bool,
    alerts: bool,
    reservations: bool,
    soft_limits: bool,
    rollover: bool,
    windows: bool,
    config_values: bool,
    window_limits: bool,
}

impl Lacks {
    /// From `quota.settings.attached_lacks` as `to_jsonb` prints it (a JSON array of
    /// [`Optional::name`]s; `None` or `null`: nothing lacking). A name it does not know (a
    /// newer version's) lacks nothing here.
    pub fn from_json(text: Option<&str>) -> Lacks {
        let mut lacks = Lacks::default();
        let Some(text) = text else { return lacks };
        for item in text.trim().trim_start_matches('[').trim_end_matches(']').split(',') {
            match item.trim().trim_matches('"') {
                "idempotency_keys" => lacks.idempotency_keys = true,
                "refunds" => lacks.refunds = true,
                "alerts" => lacks.alerts = true,
                "reservations" => lacks.reservations = true,
                "soft_limits" => lacks.soft_limits = true,
                "rollover" => lacks.rollover = true,
                "windows" => lacks.windows = true,
                "config_values" => lacks.config_values = true,
                "window_limits" => lacks.window_limits = true,
                _ => {}
            }
        }
        lacks
    }

    pub fn has(self, feature: Optional) -> bool {
        !match feature {
            Optional::IdempotencyKeys => self.idempotency_keys,
            Optional::Refunds => self.refunds,
            Optional::Alerts => self.alerts,
            Optional::Reservations => self.reservations,
            Optional::SoftLimits => self.soft_limits,
            Optional::Rollover => self.rollover,
            Optional::Windows => self.windows,
            Optional::ConfigValues => self.config_values,
            Optional::WindowLimits => self.window_limits,
        }
    }

    /// The features lacking, in a fixed order.
    pub fn lacking(self) -> impl Iterator<Item = Optional> {
        Optional::ALL.into_iter().filter(move |f| !self.has(*f))
    }
}

/// `sql` with every `quota.<table>` whose table is in `tables` replaced by
/// `<quoted_schema>.<table>`; other names of schema quota (the catalog, settings) stay.
pub fn retarget(sql: &str, quoted_schema: &str, tables: &[&str]) -> String {
    rename(sql, |table| tables.contains(&table).then(|| format!("{quoted_schema}.{table}")))
}

/// `sql` with every whole name `quota.<table>` for which `to` gives a name replaced by it (a
/// qualified, quoted name); the others stay. Names inside string literals move too, so
/// `'quota.user_subscriptions'::regclass` names the same table as the statement around it.
pub fn rename(sql: &str, to: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find("quota.") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let name = &after["quota.".len()..];
        let len =
            name.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(name.len());
        let table = &name[..len];
        match to(table) {
            Some(renamed) => out.push_str(&renamed),
            None => {
                out.push_str("quota.");
                out.push_str(table);
            }
        }
        rest = &name[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lacks_reads_what_to_jsonb_prints() {
        assert_eq!(Lacks::from_json(None), Lacks::default());
        assert_eq!(Lacks::from_json(Some("null")), Lacks::default());
        assert_eq!(Lacks::from_json(Some("[]")), Lacks::default());
        let some = Lacks::from_json(Some(r#"["alerts", "idempotency_keys"]"#));
        assert!(!some.has(Optional::Alerts));
        assert!(!some.has(Optional::IdempotencyKeys));
        assert!(some.has(Optional::Refunds));
        assert_eq!(
            some.lacking().collect::<Vec<_>>(),
            vec![Optional::IdempotencyKeys, Optional::Alerts]
        );
        let all = Lacks::from_json(Some(r#"["refunds","alerts","idempotency_keys","later"]"#));
        assert_eq!(all.lacking().count(), 3);
        assert!(all.has(Optional::Reservations));
        for f in Optional::ALL {
            assert_eq!(
                Lacks::from_json(Some(&format!("[\"{}\"]", f.name())))
                    .lacking()
                    .collect::<Vec<_>>(),
                vec![f]
            );
        }
    }

    const TABLES: [&str; 2] = ["user_usage", "usage_records"];

    #[test]
    fn only_whole_names_of_the_listed_tables_move() {
        let sql = "SELECT 1 FROM quota.user_usage u, quota.user_usage_x, quota.features f
                   WHERE EXISTS (SELECT FROM quota.usage_records\n) AND quota.user_usage.x";
        assert_eq!(
            retarget(sql, "\"App\"", &TABLES),
            "SELECT 1 FROM \"App\".user_usage u, quota.user_usage_x, quota.features f
                   WHERE EXISTS (SELECT FROM \"App\".usage_records\n) AND \"App\".user_usage.x"
        );
    }

    #[test]
    fn text_without_the_schema_is_unchanged() {
        assert_eq!(
            retarget("SELECT pg_catalog.now()", "public", &TABLES),
            "SELECT pg_catalog.now()"
        );
        assert_eq!(retarget("quota.", "public", &TABLES), "quota.");
    }

    #[test]
    fn rename_gives_each_table_its_own_name() {
        let sql = "UPDATE quota.user_usage u SET n = 1 FROM quota.features f
                   WHERE quota.row_is_current('quota.user_usage'::regclass, $1)";
        let shard = |t: &str| (t == "user_usage").then(|| "quota.user_usage_102008".to_owned());
        assert_eq!(
            rename(sql, shard),
            "UPDATE quota.user_usage_102008 u SET n = 1 FROM quota.features f
                   WHERE quota.row_is_current('quota.user_usage_102008'::regclass, $1)"
        );
    }
}
