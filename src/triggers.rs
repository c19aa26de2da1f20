//! Trigger functions on `quota.user_subscriptions`, and the one that keeps every backend's copy
//! of the nearly constant tables current.

use crate::continuity;
use crate::error::{guard, OrRaise};
use crate::jsonb::RawJsonb;
use crate::placement::{self, Access};
use crate::quota::{self, SubscriptionState};
use crate::read::Zone;
use crate::store;
use crate::time::micros;
use entitlements_core::subscription::Candidate;
use entitlements_core::Error;
use pgrx::datum::TryFromDatumError;
use pgrx::datum::{Timestamp, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::AllocatedByPostgres;
use std::cell::OnceCell;

type TriggerResult<'a> = Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, TryFromDatumError>;

/// An integer column as i64: the extension's tables use bigint, an attached application's may
/// use integer.
fn int8_column(
    tuple: &PgHeapTuple<'_, AllocatedByPostgres>,
    name: &str,
) -> Result<Option<i64>, TryFromDatumError> {
    match tuple.get_by_name::<i64>(name) {
        Err(TryFromDatumError::IncompatibleTypes { .. }) => {
            Ok(tuple.get_by_name::<i32>(name)?.map(i64::from))
        }
        other => other,
    }
}

/// A column the row must have: `user_id`, `id`, `plan_id`. An attached application's table may
/// let them be NULL; a trigger then refuses the row with the column named.
fn required_int(tuple: &PgHeapTuple<'_, AllocatedByPostgres>, name: &'static str) -> i64 {
    let problem =
        |detail: String| Error::ColumnType { what: format!("user_subscriptions.{name}"), detail };
    int8_column(tuple, name)
        .map_err(|e| problem(e.to_string()))
        .and_then(|v| {
            v.ok_or_else(|| problem("a subscription needs a value here, not NULL".into()))
        })
        .or_raise()
}

fn user_id(tuple: &PgHeapTuple<'_, AllocatedByPostgres>) -> i64 {
    required_int(tuple, "user_id")
}

/// BEFORE INSERT OR UPDATE OF custom_quotas: rejects a document that is not an object, names
/// an unknown feature, or holds a value that is not a whole number from -1 to 2147483647.
#[pg_trigger]
fn validate_custom_quotas<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    guard(|| {
        // Installed BEFORE INSERT OR UPDATE: there is a new row. Installed otherwise by hand,
        // it has nothing to check.
        let Some(new) = trigger.new() else {
            return Ok(None);
        };
        if let Some(document) = new.get_by_name::<RawJsonb>("custom_quotas")? {
            let user_id = user_id(&new);
            let text = document.to_text();
            Spi::connect(|client| {
                let _here = placement::enter(client, user_id, Access::Read, "custom_quotas")?;
                quota::validate_custom_quotas(client, user_id, &text)
            })
            .or_raise();
        }
        Ok(Some(new))
    })
}

/// A time column as an instant: a timestamptz as it is, a `timestamp without time zone` of an
/// attached application's as a local time in the zone quota.attach() was told (looked up once,
/// and only for such a column), converted the way `timestamp AT TIME ZONE zone` converts it.
fn instant(
    tuple: &PgHeapTuple<'_, AllocatedByPostgres>,
    name: &str,
    local_zone: &OnceCell<Option<String>>,
) -> Result<Option<TimestampWithTimeZone>, TryFromDatumError> {
    match tuple.get_by_name::<TimestampWithTimeZone>(name) {
        Err(e @ TryFromDatumError::IncompatibleTypes { .. }) => {
            let zone = local_zone.get_or_init(|| Spi::connect(store::local_zone).or_raise());
            let Some(zone) = zone else {
                // Not attached with a zone: a column of another type is the row's error.
                return Err(e);
            };
            let Some(local) = tuple.get_by_name::<Timestamp>(name)? else {
                return Ok(None);
            };
            // SAFETY: timestamp_zone(text, timestamp) is the function behind
            // `timestamp AT TIME ZONE text`; both arguments are non-null datums of those types,
            // and an unknown zone raises an ERROR (attach() checked it).
            Ok(unsafe {
                pgrx::direct_function_call::<TimestampWithTimeZone>(
                    pg_sys::timestamp_zone,
                    &[zone.as_str().into_datum(), local.into_datum()],
                )
            })
        }
        other => other,
    }
}

/// The row as the change announcement sees it.
fn state(
    tuple: &PgHeapTuple<'_, AllocatedByPostgres>,
    now: TimestampWithTimeZone,
    local_zone: &OnceCell<Option<String>>,
) -> Result<SubscriptionState, TryFromDatumError> {
    let status = tuple.get_by_name::<String>("status")?;
    let start = instant(tuple, "start_date", local_zone)?.map(micros);
    let end = instant(tuple, "end_date", local_zone)?.map(micros);
    let candidate = Candidate { status: status.as_deref(), start, end, id: None };
    Ok(SubscriptionState {
        user_id: user_id(tuple),
        subscription_id: required_int(tuple, "id"),
        plan_id: int8_column(tuple, "plan_id")?,
        active: candidate.is_active(micros(now)),
        dates: (start, end),
        custom_quotas: tuple.get_by_name::<RawJsonb>("custom_quotas")?,
        period: (
            instant(tuple, "quota_reset_anchor", local_zone)?.map(micros),
            tuple.get_by_name::<String>("quota_cycle_type")?,
        ),
    })
}

/// AFTER INSERT, DELETE or UPDATE of the columns that decide a limit or the billing period:
/// keeps `user_storage_usage.storage_quota_bytes` equal to `get_user_storage_quota(user_id)` for
/// the old and the new owner of the row, creating the row when it is missing, announces the
/// change on channels quota_updated and storage_quota_changed, and carries the users' current
/// usage into their current period ([`continuity::follow`]). It touches only rows of those
/// users, so on a cluster sharded by user it stays on one shard.
#[pg_trigger]
fn sync_storage_quota<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    guard(|| {
        let (new, old) = (trigger.new(), trigger.old());
        let mut users: Vec<i64> = new.iter().chain(old.iter()).map(user_id).collect();
        users.dedup();
        let now = pgrx::datum::now();
        let zone = OnceCell::new();
        let new_state = new.as_ref().map(|t| state(t, now, &zone)).transpose()?;
        let old_state = old.as_ref().map(|t| state(t, now, &zone)).transpose()?;
        let (mut same_limits, mut same_period) = (false, false);
        if let (Some(o), Some(n)) = (&old_state, &new_state) {
            // An UPDATE that names a watched column but changes nothing that decides a limit
            // (a bulk job rewriting custom_quotas with the same document, say) announces
            // nothing and resyncs nothing; one that changes neither a limit nor the period runs
            // no statement at all.
            (same_limits, same_period) =
                (o.decides_the_same_limits_as(n), o.decides_the_same_period_as(n));
            if same_limits && same_period {
                return Ok(None);
            }
            if Spi::connect(|client| quota::is_feature_rename(client, o, n)).or_raise() {
                // quota.features_changed (sql/catalog.sql) moving the key of a renamed feature:
                // the old document read against the renamed catalog would show the custom
                // limit as lost, but the same value applies under the new code. The rename is
                // announced once, for the feature.
                return Ok(None);
            }
        }
        // A row trigger has an old or a new row; installed as a statement trigger by hand, it
        // has nothing to follow.
        let Some((user, id)) =
            new_state.as_ref().or(old_state.as_ref()).map(|s| (s.user_id, s.subscription_id))
        else {
            return Ok(None);
        };
        Spi::connect_mut(|client| {
            // On a Citus worker the row is in the user's shard, and so are the rows the
            // trigger writes (the user id, the distribution column, cannot change).
            let _here =
                placement::enter(client, user, Access::Read, "sync_storage_quota").or_raise();
            if !same_limits {
                quota::announce_subscription_change(client, user, id, old_state, new_state)
                    .or_raise();
                for &user in &users {
                    quota::sync_storage(client, user).or_raise();
                }
            }
            if !same_period {
                for &user in &users {
                    continuity::follow(client, user, None).or_raise();
                }
            }
        });
        Ok(None)
    })
}

/// AFTER INSERT or UPDATE of what decides whether it counts, on quota.grants, for grants of
/// storage_space (the trigger's WHEN): keeps the user's `storage_quota_bytes` equal to
/// `get_user_storage_quota(user_id)`, which adds the storage grants that count. A grant that
/// expires by the clock alone is followed by the time-driven maintenance, not here.
#[pg_trigger]
fn sync_granted_storage<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    guard(|| {
        let Some(new) = trigger.new() else {
            return Ok(None);
        };
        let Some(user) = new.get_by_name::<i64>("user_id")? else {
            return Ok(None);
        };
        Spi::connect_mut(|client| {
            let _here = placement::enter(client, user, Access::Read, "sync_granted_storage")?;
            quota::sync_storage(client, user)
        })
        .or_raise();
        Ok(None)
    })
}

/// AFTER INSERT, UPDATE OF time_zone or DELETE on quota.settings: when the zone periods are
/// computed in changes (no row means UTC), makes sure every user's current usage is in the
/// current period ([`continuity::follow_time_zone`]).
#[pg_trigger]
fn follow_time_zone<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    guard(|| {
        let zone =
            |t: &Option<PgHeapTuple<'_, AllocatedByPostgres>>| -> Result<Zone, TryFromDatumError> {
                let Some(t) = t else {
                    return Ok(Zone::new("UTC".into(), None, None));
                };
                let name = t.get_by_name::<String>("time_zone")?.unwrap_or_else(|| "UTC".into());
                let previous = t.get_by_name::<String>("previous_time_zone")?;
                let since = t.get_by_name::<TimestampWithTimeZone>("time_zone_changed_at")?;
                Ok(Zone::new(name, previous, since))
            };
        let (old, new) = (zone(&trigger.old())?, zone(&trigger.new())?);
        if old.name != new.name {
            Spi::connect(|client| continuity::follow_time_zone(client, &new)).or_raise();
        }
        Ok(None)
    })
}

/// AFTER INSERT, UPDATE, DELETE or TRUNCATE, FOR EACH STATEMENT, on settings, features, plans
/// and plan features (sql/cache.sql): queues an invalidation of the table's relcache entry,
/// which PostgreSQL sends to every backend when the transaction commits (and drops when it
/// rolls back); src/read/copy.rs reloads its copy on receipt.
#[pg_trigger]
fn invalidate_cache<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    guard(|| {
        // The relation a trigger fires on is always open; without one there is nothing to do.
        let Ok(relation) = trigger.relation() else {
            return Ok(None);
        };
        let relid = relation.oid();
        // SAFETY: queues a message in the transaction's invalidation list; nothing else.
        unsafe { pgrx::pg_sys::CacheInvalidateRelcacheByRelid(relid) };
        Ok(None)
    })
}
