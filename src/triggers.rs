//! Trigger functions on `quota.user_subscriptions`.

use crate::error::OrRaise;
use crate::quota;
use pgrx::datum::TryFromDatumError;
use pgrx::prelude::*;
use pgrx::{AllocatedByPostgres, JsonB};

type TriggerResult<'a> = Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, TryFromDatumError>;

fn user_id(tuple: &PgHeapTuple<'_, AllocatedByPostgres>) -> i64 {
    tuple
        .get_by_name::<i64>("user_id")
        .expect("user_subscriptions.user_id is a bigint")
        .expect("user_subscriptions.user_id is NOT NULL")
}

/// BEFORE INSERT OR UPDATE OF custom_quotas: rejects a document that is not an object, names
/// an unknown feature, or holds a value that is not a whole number from -1 to 2147483647.
#[pg_trigger]
fn validate_custom_quotas<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    let new = trigger
        .new()
        .expect("validate_custom_quotas runs BEFORE INSERT OR UPDATE");
    if let Some(JsonB(value)) = new.get_by_name::<JsonB>("custom_quotas")? {
        let user_id = user_id(&new);
        Spi::connect(|client| quota::validate_custom_quotas(client, user_id, &value)).or_raise();
    }
    Ok(Some(new))
}

/// AFTER INSERT, DELETE or UPDATE of the columns that decide the storage quota: keeps
/// `user_storage_usage.storage_quota_bytes` equal to `get_user_storage_quota(user_id)` for
/// the old and the new owner of the row, creating the row when it is missing. It touches only
/// rows of those users, so on a cluster sharded by user it stays on one shard.
#[pg_trigger]
fn sync_storage_quota<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    let mut users: Vec<i64> = trigger
        .new()
        .iter()
        .chain(trigger.old().iter())
        .map(user_id)
        .collect();
    users.dedup();
    Spi::connect_mut(|client| {
        for user in users {
            quota::sync_storage(client, user).or_raise();
        }
    });
    Ok(None)
}
