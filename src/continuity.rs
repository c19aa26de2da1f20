//! Usage continuity: a renewal, a plan change or a change of the time zone never resets usage.
//!
//! A billing-cycle counter is named by the start of its period ([`entitlements_core::period`]),
//! and a period belongs to the anchor, so a new subscription row that keeps the anchor already
//! continues the counter. A change that moves the start of the current period (a new anchor, a
//! yearly plan in place of a monthly one, another time zone) would leave the usage counted so
//! far behind, under the old start, and give the limit again. The triggers on
//! `user_subscriptions` and `quota.settings` call [`follow`] after such a change: the user's
//! counters whose period contains now() move to the current period, adding up, with their
//! usage records. Counters and records are never lost or duplicated: quota.verify_ledger() stays
//! empty. A reset is asked for, never implied: `pg_entitlements.carry_usage = off` (SET LOCAL in
//! the transaction of the change) ends those counters at the change instead.

use crate::placement;
use crate::quota::period_of;
use crate::read::{self, Zone};
use crate::store;
use crate::time::to_pg;
use entitlements_core::period::ResetRule;
use entitlements_core::Error;
use pgrx::spi::SpiClient;
use pgrx::GucSetting;

/// `pg_entitlements.carry_usage`: on (the default), a change that starts another current period
/// carries the usage counted so far into it; off, the new period starts empty.
pub static CARRY_USAGE: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Carries the user's current usage into the current period of the billing cycle, computed in
/// `zone` when given (the settings are being changed by the calling statement), else in the
/// configured one. Without an active subscription there is no current period: nothing
/// moves, and the counters stay where a later change (the insert of a renewal, say) finds them.
pub fn follow(client: &SpiClient<'_>, user_id: i64, zone: Option<&Zone>) -> Result<(), Error> {
    store::ensure_binding(client)?;
    let mut row = read::feature_row(client, user_id, None)?;
    if let Some(zone) = zone {
        row.zone = zone.clone();
    }
    let Some(sub) = row.subscription.as_ref() else {
        return Ok(());
    };
    let period = match period_of(&row, ResetRule::BillingCycle, sub) {
        // A subscription whose period falls outside the range of timestamptz (a start_date of
        // -infinity, say) counts no usage, and every read of it says so (22008): there is no
        // period to carry into. The change that fixes the row carries.
        Err(Error::PeriodOutOfRange { .. }) => return Ok(()),
        other => other?,
    };
    let (start, end) = (to_pg(period.start, true)?, to_pg(period.end, false)?);
    store::carry_usage(client, user_id, start, end, CARRY_USAGE.get())
}

/// Before a change that can move the user's period (sql/triggers.sql, quota.wait_for_uses):
/// makes sure the counters of the current period exist, creating them empty, so that the change
/// can lock them. A use that reads the period before the change and creates the counter of its
/// first use then conflicts with the change's counter: it waits for the change and reads again,
/// or the change waits for it; either way its usage is there when the change carries the
/// usage into a moved period. A subscription whose period cannot be computed has no counter to
/// hold (its reads refuse): the change goes on.
pub fn hold(client: &SpiClient<'_>, user_id: i64) -> Result<(), Error> {
    store::ensure_binding(client)?;
    let Ok(row) = read::feature_row(client, user_id, None) else {
        return Ok(());
    };
    let Some(sub) = row.subscription.as_ref() else {
        return Ok(());
    };
    let Ok(period) = period_of(&row, ResetRule::BillingCycle, sub) else {
        return Ok(());
    };
    let (start, end) = (to_pg(period.start, true)?, to_pg(period.end, false)?);
    store::hold_counters(client, user_id, start, end)
}

/// After a change of the settings' zone: [`follow`] for every user with current usage. The
/// change applies from each user's next boundary, so this moves nothing unless the settings
/// forgot a change still in force (a second change within one period, or a removed settings
/// row, which means UTC at once). On a Citus cluster each node follows the users of the shards
/// it holds ([`placement::served_here`]).
pub fn follow_time_zone(client: &SpiClient<'_>, zone: &Zone) -> Result<(), Error> {
    for place in placement::served_here(client, "a change of the time zone")? {
        let _here = place.enter();
        for user_id in store::users_with_current_usage(client)? {
            follow(client, user_id, Some(zone))?;
        }
    }
    Ok(())
}
