//! pg_entitlements: PostgreSQL as the single source of truth for SaaS plan quotas.
//!
//! Layout: the rules live in the pgrx-free crate `entitlements-core`; [`store`] holds the SPI
//! statements (prepared once per backend and kept); [`quota`] combines the two into the
//! operations; [`api`] and [`triggers`] are the thin `#[pg_extern]` / `#[pg_trigger]` glue;
//! [`error`] is the one place where an error becomes a PostgreSQL ERROR.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod api;
mod error;
mod jsonb;
mod quota;
mod store;
mod time;
mod triggers;

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/ledger.sql", name = "ledger", requires = ["schema"]);
extension_sql_file!(
    "../sql/triggers.sql",
    name = "triggers",
    requires =
        [triggers::validate_custom_quotas, triggers::sync_storage_quota, api::is_valid_time_zone]
);
extension_sql_file!(
    "../sql/attach.sql",
    name = "attach",
    requires = ["triggers", triggers::validate_custom_quotas, triggers::sync_storage_quota]
);
extension_sql_file!(
    "../sql/privileges.sql",
    name = "privileges",
    requires = [
        "ledger",
        api::record_feature_usage,
        api::consume,
        api::refund_usage_by_id,
        api::refund_usage_by_key,
        api::adjust_quota,
        api::clear_custom_quota
    ]
);
extension_sql_file!("../sql/comments.sql", name = "comments", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
