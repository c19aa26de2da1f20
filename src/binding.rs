//! Which tables the statements use: the extension's own in schema quota, or an application's
//! after `quota.attach(schema)`.

/// The application tables `quota.attach(schema)` can bind the statements to, in place of the
/// extension's own. The catalog (features), settings and the audit stay in schema quota.
const ATTACHABLE: [&str; 6] = [
    "user_subscriptions",
    "subscription_plans",
    "plan_features",
    "user_usage",
    "usage_records",
    "user_storage_usage",
];

/// `sql` with the attachable tables of schema quota replaced by those of `schema`.
pub fn bind(sql: &str, schema: Option<&str>) -> String {
    let Some(schema) = schema else {
        return sql.to_owned();
    };
    entitlements_core::binding::retarget(sql, &pgrx::spi::quote_identifier(schema), &ATTACHABLE)
}
