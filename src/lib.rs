//! pg_entitlements: PostgreSQL as the single source of truth for SaaS plan quotas.
//!
//! Layout: the rules live in the pgrx-free crate `entitlements-core`; [`store`] holds the SPI
//! statements (prepared once per backend and kept, bound by [`binding`] to the extension's or
//! an attached application's tables); [`read`] alone decides how a read goes, by those
//! statements or without them, through a per-backend copy of the nearly constant tables and
//! direct index reads; [`quota`] combines the rules and the rows into the operations; [`api`]
//! and [`triggers`] are the thin `#[pg_extern]` / `#[pg_trigger]` glue, and [`one_row`] hands
//! their one-row results to the executor; [`error`] is the one place where an error becomes a
//! PostgreSQL ERROR.

use pgrx::guc::{GucContext, GucFlags, GucRegistry};
use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod api;
mod binding;
mod continuity;
mod drop_guard;
mod error;
mod grants;
mod holds;
mod jsonb;
mod notices;
mod one_row;
mod overage;
mod pg_version;
mod placement;
mod quota;
mod read;
mod releases;
mod reservations;
mod spi;
mod store;
mod time;
mod triggers;
mod windows;

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/ledger.sql", name = "ledger", requires = ["schema"]);
extension_sql_file!(
    "../sql/triggers.sql",
    name = "triggers",
    requires = [
        triggers::validate_custom_quotas,
        triggers::sync_storage_quota,
        triggers::follow_time_zone,
        api::is_valid_time_zone,
        api::hold_current_periods
    ]
);
extension_sql_file!(
    "../sql/cache.sql",
    name = "cache",
    requires = ["schema", triggers::invalidate_cache]
);
extension_sql_file!(
    "../sql/catalog.sql",
    name = "catalog",
    requires = ["triggers", "cache", api::get_user_storage_quota]
);
extension_sql_file!(
    "../sql/attach.sql",
    name = "attach",
    requires = [
        "triggers",
        "cache",
        "catalog",
        triggers::validate_custom_quotas,
        triggers::sync_storage_quota
    ]
);
extension_sql_file!(
    "../sql/privileges.sql",
    name = "privileges",
    requires = [
        "ledger",
        "grants",
        "reservations",
        "soft_limits",
        "rollover",
        api::record_feature_usage,
        api::release_usage,
        api::consume,
        api::refund_usage_by_id,
        api::refund_usage_by_key,
        api::adjust_quota,
        api::clear_custom_quota,
        api::carry_usage,
        api::local_shards
    ]
);
extension_sql_file!(
    "../sql/grants.sql",
    name = "grants",
    requires = ["schema", "ledger", triggers::sync_granted_storage, api::announce]
);
extension_sql_file!(
    "../sql/reservations.sql",
    name = "reservations",
    requires = ["schema", "ledger", api::reserve, api::settle, api::release]
);
extension_sql_file!("../sql/soft_limits.sql", name = "soft_limits", requires = ["schema"]);
extension_sql_file!(
    "../sql/granted.sql",
    name = "granted",
    requires = ["schema", "grants", "soft_limits"]
);
extension_sql_file!(
    "../sql/windows.sql",
    name = "windows",
    requires = ["schema", "soft_limits", "granted", api::valid_window_limits]
);
extension_sql_file!("../sql/kinds.sql", name = "kinds", requires = ["schema", "windows"]);
extension_sql_file!(
    "../sql/rollover.sql",
    name = "rollover",
    requires = ["schema", "grants", "soft_limits", "granted", "windows", "kinds"]
);
extension_sql_file!(
    "../sql/citus.sql",
    name = "citus",
    requires = ["schema", "catalog", "grants", "reservations", "windows", "kinds", "rollover"]
);
extension_sql_file!("../sql/drop_guard.sql", name = "drop_guard", requires = ["schema", "ledger"]);
extension_sql_file!(
    "../sql/lifecycle.sql",
    name = "lifecycle",
    requires = [
        "schema",
        "triggers",
        "catalog",
        "grants",
        "reservations",
        "privileges",
        api::get_quota_period,
        api::get_user_storage_quota,
        api::create_due_rollover
    ]
);
extension_sql_file!("../sql/own_ids.sql", name = "own_ids", requires = ["citus", "lifecycle"]);
extension_sql_file!("../sql/comments.sql", name = "comments", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    GucRegistry::define_bool_guc(
        c"pg_entitlements.direct_reads",
        c"Reads quotas without SQL statements where that gives the same answer.",
        c"On (the default), check_user_quota and the other reading functions read the nearly \
          constant tables from a per-backend copy and the per-user tables through their indexes \
          (quota.read_paths() shows how). Off, every read is an SQL statement.",
        &read::copy::DIRECT_READS,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_entitlements.allow_drop_with_data",
        c"Lets DROP EXTENSION pg_entitlements drop tables that hold subscriptions, usage or records.",
        c"Off (the default), DROP EXTENSION pg_entitlements and DROP SCHEMA quota refuse while the \
          extension's tables hold subscriptions, counters, usage records or adjustments.",
        &drop_guard::ALLOW_DROP_WITH_DATA,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_entitlements.carry_usage",
        c"Carries the usage counted so far into the period a subscription or time zone change starts.",
        c"On (the default), a renewal, plan change or time-zone change that starts another current \
          billing period moves the usage already counted in the period it ends into it: nothing \
          resets. Off (SET LOCAL in the transaction of the change), that usage stays with the \
          period the change ends, and the new period starts empty.",
        &continuity::CARRY_USAGE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_entitlements.tick_by_user",
        c"Runs quota.tick() user by user, as it always runs on a Citus cluster.",
        c"Off (the default), on one server quota.tick() applies each step to every due user in \
          one statement. On, it runs the steps of each due user in turn (quota.tick_user()), as it \
          does on a Citus cluster, where each user's steps run on the user's worker: the same \
          result, for comparing the two.",
        &api::TICK_BY_USER,
        GucContext::Userset,
        GucFlags::default(),
    );
}

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
