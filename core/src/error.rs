//! The one error type of pg_entitlements.
//!
//! Every variant knows its [`ErrorKind`] (which the extension maps to a SQLSTATE in exactly
//! one place), a message naming the user, feature and value involved, and a hint.

use std::fmt;

/// Who and what an error is about; printed in every message that concerns a user's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub user_id: i64,
    pub feature: String,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user {} feature \"{}\"", self.user_id, clip(&self.feature))
    }
}

/// The class of an error, one per SQLSTATE the extension raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 22023 invalid_parameter_value
    InvalidParameter,
    /// 22004 null_value_not_allowed
    NullValue,
    /// 22003 numeric_value_out_of_range
    OutOfRange,
    /// P0002 no_data_found
    NoData,
    /// 22008 datetime_field_overflow
    DatetimeOverflow,
    /// 22P02 invalid_text_representation
    InvalidText,
    /// 25006 read_only_sql_transaction
    ReadOnly,
    /// 23505 unique_violation
    Conflict,
    /// 23503 foreign_key_violation
    MissingReference,
    /// 23502 not_null_violation
    NullColumn,
    /// 23514 check_violation
    CheckViolation,
    /// 22001 string_data_right_truncation
    TooLong,
    /// 42804 datatype_mismatch
    ColumnType,
    /// 55000 object_not_in_prerequisite_state
    NotReady,
    /// 0A000 feature_not_supported
    NotSupported,
    /// 40001 serialization_failure
    SerializationFailure,
    /// XX000 internal_error: a statement of the extension failed in a way no row or argument
    /// can cause (an SPI protocol error).
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A required argument was NULL.
    NullArgument { function: &'static str, argument: &'static str },
    /// The feature code is not in `quota.features`.
    UnknownFeature { user_id: Option<i64>, feature: String },
    /// Recording usage needs an active subscription.
    NoActiveSubscription { subject: Subject },
    /// A quota value (from `custom_quotas`, `plan_features` or the catalog) is malformed.
    InvalidQuotaValue {
        subject: Subject,
        origin: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A quota value is a whole number beyond the int4 range.
    QuotaValueOutOfRange { subject: Subject, origin: &'static str, value: String },
    /// `custom_quotas` cannot be parsed (nested beyond the parser's limit of 128 levels).
    CustomQuotasUnreadable { user_id: i64, reason: String },
    /// `custom_quotas` is not a JSON object.
    CustomQuotasNotObject { user_id: i64, value: String },
    /// A usage amount of zero, a negative amount, or one beyond int4.
    InvalidAmount { subject: Subject, amount: i64 },
    /// Counting a use overflowed a column (an attached application's integer `usage_count`):
    /// `detail` is PostgreSQL's own message.
    CounterOutOfRange { subject: Subject, amount: i64, schema: String, detail: String },
    /// A unit that is not a unit of bytes, where bytes are needed.
    UnknownUnit { subject: Subject, unit: String },
    /// Bytes beyond bigint.
    BytesOverflow { subject: Subject, value: i64, unit: String },
    /// A cycle name that is neither monthly nor yearly.
    InvalidCycle { value: String },
    /// A reset rule that is not one of billing_cycle, subscription, never.
    InvalidResetRule { value: String },
    /// A time zone name the time zone database does not know.
    InvalidTimeZone { value: String },
    /// A period computation left the range of representable times.
    PeriodOutOfRange { detail: String },
    /// The instant asked about lies outside the subscription.
    OutsideSubscription { at: String, start: String, end: String },
    /// A subscription that ends before it starts.
    EmptySubscription { start: String, end: String },
    /// A writing function called where nothing can be written (a hot standby).
    ReadOnlyServer { function: &'static str },
    /// An idempotency key reused for a different feature or amount.
    IdempotencyConflict { subject: Subject, key: String, original: String, amount: i64 },
    /// A retry with an idempotency key whose use was refunded: the key cannot count again.
    KeyRefunded { subject: Subject, key: String, record_id: i64, refund_id: i64 },
    /// No usage record with that id or key.
    UsageRecordNotFound { what: String },
    /// A refund record cannot itself be refunded.
    RefundOfRefund { record_id: i64 },
    /// An adjustment needs a non-empty reason.
    EmptyReason { subject: Subject },
    /// A new limit below -1.
    InvalidLimit { subject: Subject, value: i64 },
    /// The active subscription names no plan, or a plan that does not exist.
    PlanMissing { user_id: i64, subscription_id: Option<i64>, plan_id: Option<i64> },
    /// Neither the subscription nor its plan says which cycle its periods follow.
    NoCycle { user_id: i64, subscription_id: Option<i64>, plan_id: i64 },
    /// An idempotency key that is empty.
    EmptyIdempotencyKey { subject: Subject },
    /// An idempotency key longer than [`MAX_IDEMPOTENCY_KEY_BYTES`].
    IdempotencyKeyTooLong { subject: Subject, bytes: usize },
    /// A column of an attached table whose type the extension cannot read.
    ColumnType { what: String, detail: String },
    /// A usage record written without a period (before quota.attach()) cannot be refunded.
    RecordWithoutPeriod { record_id: i64 },
    /// A usage record without an amount (an attached application's) cannot be refunded.
    RecordWithoutAmount { record_id: i64 },
    /// Every unit of a record came from grants that no longer count: nothing can be given back.
    NothingToRefund { record_id: i64, grants: String },
    /// A refund would take a counter below zero: it was lowered outside the ledger.
    RefundBelowZero { subject: Subject, record_id: i64, amount: i64 },
    /// The subscription a use was judged by changed before the use could count, and the
    /// transaction cannot read what changed (its snapshot is older), or it kept changing.
    SubscriptionChanged { subject: Subject },
    /// A call needs an optional feature the attached tables go without.
    NotAttachedFor { feature: crate::binding::Optional, schema: String, function: &'static str },
    /// `release_usage` of a feature that is not a running count.
    NotGauge { subject: Subject },
    /// A use, grant or hold of a feature that is not counted (kind boolean or config).
    NotCounted { subject: Subject, kind: &'static str },
    /// A feature kind that is not metered, gauge, boolean or config.
    InvalidKind { value: String },
    /// A `window_limits` document that is not an object from windows to limits.
    InvalidWindowLimits { origin: &'static str, value: String, reason: &'static str },
    /// A call that does not support a feature with several limits.
    SeveralLimits { subject: Subject, function: &'static str },
    /// No reservation has this id.
    ReservationNotFound { id: i64 },
    /// A hold's time to live that is not positive.
    InvalidTtl { subject: Subject, ttl: String },
    /// A settled amount below zero.
    InvalidSettleAmount { id: i64, amount: i64 },
    /// A hold that was released, or settled with another amount, cannot be settled (again).
    HoldEnded { id: i64, state: String },
    /// A table of the installed version is missing: the library was replaced and
    /// ALTER EXTENSION ... UPDATE has not created it yet.
    UpdatePending { table: &'static str },
    /// A call that writes ran on a node of a Citus cluster that does not hold the user's
    /// shards: Citus routes a writer whole only when it delegates the call.
    NotOnShard { function: &'static str, user_id: i64 },
    /// Citus moved or split shards this node served while a call that writes to them was sent
    /// here or waited for them (`user_id`: the call's user; none: a catalog trigger's work on
    /// every user the node serves).
    ShardsMoved { function: &'static str, user_id: Option<i64> },
    /// DROP EXTENSION on a Citus coordinator could not drop the shards a move or split left
    /// for Citus to drop later (each with the node's error).
    ShardsLeftBehind { detail: String },
    /// A statement of the extension failed at the SPI level.
    Statement { what: &'static str, detail: String },
}

/// The longest idempotency key accepted, in bytes: a key is stored in a btree index, whose
/// entries PostgreSQL limits to about a third of a page.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 1000;

impl Error {
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            NullArgument { .. } => ErrorKind::NullValue,
            UnknownFeature { .. }
            | NoActiveSubscription { .. }
            | UsageRecordNotFound { .. }
            | ReservationNotFound { .. } => ErrorKind::NoData,
            IdempotencyConflict { .. } => ErrorKind::Conflict,
            PlanMissing { .. } => ErrorKind::MissingReference,
            NoCycle { .. } => ErrorKind::NullColumn,
            RefundBelowZero { .. } => ErrorKind::CheckViolation,
            SubscriptionChanged { .. } | ShardsMoved { .. } => ErrorKind::SerializationFailure,
            IdempotencyKeyTooLong { .. } => ErrorKind::TooLong,
            ColumnType { .. } => ErrorKind::ColumnType,
            RecordWithoutPeriod { .. }
            | RecordWithoutAmount { .. }
            | NothingToRefund { .. }
            | HoldEnded { .. }
            | KeyRefunded { .. }
            | UpdatePending { .. }
            | ShardsLeftBehind { .. } => ErrorKind::NotReady,
            Statement { .. } => ErrorKind::Internal,
            NotAttachedFor { .. } | SeveralLimits { .. } | NotOnShard { .. } => {
                ErrorKind::NotSupported
            }
            QuotaValueOutOfRange { .. } | CounterOutOfRange { .. } | BytesOverflow { .. } => {
                ErrorKind::OutOfRange
            }
            PeriodOutOfRange { .. } => ErrorKind::DatetimeOverflow,
            ReadOnlyServer { .. } => ErrorKind::ReadOnly,
            InvalidQuotaValue { .. }
            | CustomQuotasNotObject { .. }
            | CustomQuotasUnreadable { .. } => ErrorKind::InvalidText,
            InvalidAmount { .. }
            | UnknownUnit { .. }
            | InvalidCycle { .. }
            | InvalidResetRule { .. }
            | InvalidTimeZone { .. }
            | OutsideSubscription { .. }
            | EmptySubscription { .. }
            | RefundOfRefund { .. }
            | EmptyReason { .. }
            | EmptyIdempotencyKey { .. }
            | InvalidTtl { .. }
            | NotGauge { .. }
            | NotCounted { .. }
            | InvalidKind { .. }
            | InvalidWindowLimits { .. }
            | InvalidSettleAmount { .. }
            | InvalidLimit { .. } => ErrorKind::InvalidParameter,
        }
    }

    pub fn hint(&self) -> String {
        use Error::*;
        match self {
            NullArgument { argument, .. } => format!("Pass a non-NULL value for {argument}."),
            UnknownFeature { .. } => {
                "Known features are listed in quota.features; add the feature there first.".into()
            }
            NoActiveSubscription { .. } => "The user needs a subscription with status 'active' \
                 whose start_date <= now() < end_date."
                .into(),
            InvalidQuotaValue { .. } | QuotaValueOutOfRange { .. } | InvalidLimit { .. } => {
                "A quota is a whole number from -1 (unlimited) to 2147483647; a boolean feature \
                 is true or false (or 1 or 0); a config feature any JSON value."
                    .into()
            }
            CustomQuotasNotObject { .. } | CustomQuotasUnreadable { .. } => {
                "custom_quotas is a JSON object such as {\"articles_per_month\": 10}.".into()
            }
            InvalidAmount { .. } => "The amount is a whole number from 1 to 2147483647.".into(),
            CounterOutOfRange { schema, .. } => format!(
                "An integer usage_count holds at most 2147483647: ALTER TABLE {schema}.user_usage \
                 ALTER COLUMN usage_count TYPE bigint."
            ),
            UnknownUnit { .. } => "Byte units are B, KB, MB, GB and TB (binary multiples of \
                 1024); set quota.features.unit or plan_features.feature_unit."
                .into(),
            BytesOverflow { .. } => "Use -1 for unlimited storage.".into(),
            InvalidCycle { .. } => "A quota cycle is 'monthly' or 'yearly'.".into(),
            InvalidResetRule { .. } => {
                "A reset rule is 'billing_cycle', a calendar window ('hour', 'day', 'week', \
                 'month', 'year'), 'subscription' or 'never'."
                    .into()
            }
            InvalidTimeZone { .. } => "Use a name from pg_timezone_names, such as \
                 'UTC' or 'Asia/Shanghai', in quota.settings.time_zone."
                .into(),
            PeriodOutOfRange { .. } => {
                "Check the subscription's dates and quota_reset_anchor.".into()
            }
            OutsideSubscription { .. } | EmptySubscription { .. } => {
                "A subscription covers start_date <= t < end_date, with start_date < end_date."
                    .into()
            }
            ReadOnlyServer { .. } => "Send writes to the primary; check_user_quota, \
                 get_user_storage_quota and get_quota_period work on a standby."
                .into(),
            IdempotencyConflict { .. } => "An idempotency key names one use for good; \
                 a retry must repeat the feature and amount, a new use needs a new key."
                .into(),
            KeyRefunded { .. } => "A key names one use for good, and a refund ends that use: \
                 a new attempt needs a new key."
                .into(),
            UsageRecordNotFound { .. } => "Usage records are in quota.usage_records.".into(),
            RefundOfRefund { .. } => "Refund the original usage record instead.".into(),
            EmptyReason { .. } => "Say why the quota changes; the reason is audited in \
                 quota.quota_adjustments."
                .into(),
            PlanMissing { .. } => "Point the subscription's plan_id at an existing plan, or \
                 end the subscription."
                .into(),
            NoCycle { .. } => "Set the plan's billing_cycle, or quota_cycle_type on the \
                 subscription or the plan ('monthly' or 'yearly')."
                .into(),
            EmptyIdempotencyKey { .. } | IdempotencyKeyTooLong { .. } => format!(
                "An idempotency key is 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes, or NULL for a use \
                 without one."
            ),
            ColumnType { .. } => "SELECT * FROM quota.attach_problems(schema) lists the types \
                 the extension reads."
                .into(),
            RecordWithoutAmount { .. } => "Correct the record's amount, or the counter in \
                 user_usage."
                .into(),
            NothingToRefund { .. } => "Units of a grant that expired or was voided are not \
                 revived; grant_quota() gives new ones."
                .into(),
            UpdatePending { .. } => "Run ALTER EXTENSION pg_entitlements UPDATE.".into(),
            NotOnShard { function, .. } => format!(
                "Call it on its own on the coordinator, as SELECT quota.{function}(...) with the \
                 user id a constant or a parameter, so that Citus sends it to that worker; \
                 docs/scaling.md."
            ),
            ShardsMoved { .. } => "Retry: Citus sends the call to the node that holds the \
                 rows now. A writer inside a larger query is not sent there by Citus: call it on \
                 its own (docs/scaling.md)."
                .into(),
            ShardsLeftBehind { .. } => "Citus drops them itself within \
                 citus.defer_shard_delete_interval: drop the extension again then, or after \
                 CALL citus_cleanup_orphaned_resources() on the coordinator."
                .into(),
            RecordWithoutPeriod { .. } => "Records written before quota.attach() are not tied \
                 to a counter; correct the counter in user_usage instead."
                .into(),
            RefundBelowZero { .. } => "quota.verify_ledger() lists counters that differ from \
                 their records."
                .into(),
            SubscriptionChanged { .. } => "Retry the transaction, as after any serialization \
                 failure: under REPEATABLE READ or SERIALIZABLE a use cannot count under a limit \
                 that changed after the transaction's snapshot."
                .into(),
            NotAttachedFor { feature, schema, .. } => format!(
                "SELECT * FROM quota.attach_problems({}) WHERE needed_for = '{}' lists what it \
                 needs; add it, then run quota.attach() again.",
                quote_literal(schema),
                feature.name()
            ),
            ReservationNotFound { .. } => "Reservations are in quota.reservations.".into(),
            NotGauge { .. } => "Only a feature of kind 'gauge' (quota.features.kind) counts down; \
                 refund_usage gives back a metered use."
                .into(),
            NotCounted { .. } => "Ask has_feature() about a boolean feature and feature_value() \
                 about a config feature; only metered and gauge features are used up."
                .into(),
            InvalidKind { .. } => {
                "A feature kind is 'metered', 'gauge', 'boolean' or 'config'.".into()
            }
            InvalidWindowLimits { .. } => "Window limits map windows (hour, day, week, month, \
                 year, billing_cycle) to limits: {\"day\": 100, \"hour\": 20}."
                .into(),
            SeveralLimits { .. } => "Use consume() for a feature limited over several windows; \
                 reservations hold units of one limit only."
                .into(),
            InvalidTtl { .. } => "A hold lasts a positive interval, such as '10 minutes'.".into(),
            InvalidSettleAmount { .. } => {
                "Settle with what the work used, 0 or more; release() gives everything back.".into()
            }
            HoldEnded { .. } => {
                "A hold is settled or released once; reserve() takes a new one.".into()
            }
            Statement { .. } => "This is a bug in pg_entitlements; please report it.".into(),
        }
    }
}

/// A value as an error message shows it: whole up to 200 characters, else its start and its
/// length (a 1 MB bad value must not become a 1 MB message and log line).
/// `value` as an SQL string literal, for a statement a hint shows.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn clip(value: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 200;
    match value.char_indices().nth(MAX) {
        None => value.into(),
        Some((cut, _)) => format!("{}... ({} bytes)", &value[..cut], value.len()).into(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            NullArgument { function, argument } => {
                write!(f, "{function}: argument {argument} must not be NULL")
            }
            UnknownFeature { user_id: Some(u), feature } => {
                write!(f, "unknown feature \"{}\" (asked for user {u})", clip(feature))
            }
            UnknownFeature { user_id: None, feature } => {
                write!(f, "unknown feature \"{}\"", clip(feature))
            }
            NoActiveSubscription { subject } => {
                write!(f, "{subject}: no active subscription")
            }
            InvalidQuotaValue { subject, origin, value, reason } => {
                write!(f, "{subject}: invalid quota value {} in {origin}: {reason}", clip(value))
            }
            QuotaValueOutOfRange { subject, origin, value } => {
                let value = clip(value);
                write!(f, "{subject}: quota value {value} in {origin} is out of range for integer")
            }
            CustomQuotasNotObject { user_id, value } => {
                write!(
                    f,
                    "user {user_id}: custom_quotas must be a JSON object, not {}",
                    clip(value)
                )
            }
            CustomQuotasUnreadable { user_id, reason } => {
                write!(f, "user {user_id}: custom_quotas cannot be read: {reason}")
            }
            InvalidAmount { subject, amount } => {
                write!(f, "{subject}: amount {amount} is invalid, it must be at least 1")
            }
            CounterOutOfRange { subject, amount, schema, detail } => write!(
                f,
                "{subject}: counting amount {amount} in {schema}.user_usage is out of range: \
                 {detail}"
            ),
            UnknownUnit { subject, unit } => {
                write!(f, "{subject}: unit \"{unit}\" is not a unit of bytes")
            }
            BytesOverflow { subject, value, unit } => {
                write!(f, "{subject}: {value} {unit} is out of range for bigint bytes")
            }
            InvalidCycle { value } => write!(f, "invalid quota cycle \"{value}\""),
            InvalidResetRule { value } => write!(f, "invalid reset rule \"{value}\""),
            InvalidTimeZone { value } => write!(f, "invalid time zone \"{}\"", clip(value)),
            PeriodOutOfRange { detail } => write!(f, "quota period out of range: {detail}"),
            OutsideSubscription { at, start, end } => {
                write!(f, "{at} lies outside the subscription [{start}, {end})")
            }
            EmptySubscription { start, end } => {
                write!(f, "subscription ends ({end}) before it starts ({start})")
            }
            ReadOnlyServer { function } => {
                write!(f, "{function} cannot write on a server in recovery (hot standby)")
            }
            IdempotencyConflict { subject, key, original, amount } => write!(
                f,
                "{subject}: idempotency key \"{key}\" was already used for {original}, \
                 not for amount {amount} of this feature"
            ),
            KeyRefunded { subject, key, record_id, refund_id } => write!(
                f,
                "{subject}: idempotency key \"{}\" names usage record {record_id}, which \
                 refund {refund_id} gave back; a refunded use is not counted again",
                clip(key)
            ),
            UsageRecordNotFound { what } => write!(f, "no usage record {what}"),
            RefundOfRefund { record_id } => {
                write!(f, "usage record {record_id} is a refund and cannot be refunded")
            }
            EmptyReason { subject } => write!(f, "{subject}: a quota adjustment needs a reason"),
            InvalidLimit { subject, value } => {
                write!(
                    f,
                    "{subject}: {value} is not a limit (-1 is unlimited, below that is invalid)"
                )
            }
            PlanMissing { user_id, subscription_id, plan_id } => {
                let sub = subscription_id.map_or("?".into(), |i| i.to_string());
                match plan_id {
                    Some(p) => write!(
                        f,
                        "user {user_id}: subscription {sub} names plan {p}, which does not exist"
                    ),
                    None => write!(f, "user {user_id}: subscription {sub} has no plan_id"),
                }
            }
            NoCycle { user_id, subscription_id, plan_id } => {
                let sub = subscription_id.map_or("?".into(), |i| i.to_string());
                write!(
                    f,
                    "user {user_id}: subscription {sub} has no quota cycle (its quota_cycle_type, \
                     and plan {plan_id}'s quota_cycle_type and billing_cycle are NULL)"
                )
            }
            EmptyIdempotencyKey { subject } => {
                write!(f, "{subject}: the idempotency key must not be empty")
            }
            IdempotencyKeyTooLong { subject, bytes } => write!(
                f,
                "{subject}: the idempotency key is {bytes} bytes long, more than \
                 {MAX_IDEMPOTENCY_KEY_BYTES}"
            ),
            ColumnType { what, detail } => write!(f, "{what}: {detail}"),
            RecordWithoutAmount { record_id } => {
                write!(f, "usage record {record_id} has no amount: there is nothing to refund")
            }
            NothingToRefund { record_id, grants } => write!(
                f,
                "usage record {record_id}: every unit came from grants that no longer count \
                 ({grants}): nothing is given back"
            ),
            UpdatePending { table } => write!(
                f,
                "{table} does not exist yet: the library is newer than the extension's SQL objects"
            ),
            NotOnShard { function, user_id } => write!(
                f,
                "{function} for user {user_id} ran on a node that does not hold the user's rows"
            ),
            ShardsMoved { function, user_id: Some(user_id) } => write!(
                f,
                "{function} for user {user_id} reached a node that no longer holds the user's rows"
            ),
            ShardsMoved { function, user_id: None } => write!(
                f,
                "{function}: shards this node served moved to another node while it waited for them"
            ),
            ShardsLeftBehind { detail } => write!(
                f,
                "the shards a shard move left behind could not be dropped: {}",
                clip(detail)
            ),
            RecordWithoutPeriod { record_id } => write!(
                f,
                "usage record {record_id} has no period_start: it was written before \
                 quota.attach() and counts toward no counter"
            ),
            RefundBelowZero { subject, record_id, amount } => write!(
                f,
                "{subject}: refunding usage record {record_id} (amount {amount}) would take its \
                 period's counter below zero"
            ),
            SubscriptionChanged { subject } => write!(
                f,
                "{subject}: the subscription changed after the use read it, and the use could \
                 not follow (the transaction reads one snapshot, or it kept changing); nothing \
                 was counted"
            ),
            NotAttachedFor { feature, schema, function } => write!(
                f,
                "{function}: {feature} are not available: the tables of the attached schema \
                 \"{}\" were attached without the columns they need",
                clip(schema)
            ),
            ReservationNotFound { id } => write!(f, "no reservation with id {id}"),
            NotGauge { subject } => {
                write!(f, "{subject}: release_usage counts down running counts only (kind gauge)")
            }
            NotCounted { subject, kind } => {
                write!(f, "{subject} is of kind {kind}: it is not used up, it has a value")
            }
            InvalidKind { value } => write!(f, "invalid feature kind \"{}\"", clip(value)),
            InvalidWindowLimits { origin, value, reason } => {
                write!(f, "invalid window limits {} in {origin}: {reason}", clip(value))
            }
            SeveralLimits { subject, function } => {
                write!(f, "{subject}: {function} does not support a feature with several limits")
            }
            InvalidTtl { subject, ttl } => {
                write!(f, "{subject}: a hold for {} is invalid, it must be positive", clip(ttl))
            }
            InvalidSettleAmount { id, amount } => {
                write!(f, "reservation {id}: settling {amount} is invalid, it must be at least 0")
            }
            HoldEnded { id, state } => write!(f, "reservation {id} was {state}"),
            Statement { what, detail } => write!(f, "pg_entitlements: {what} failed: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_values_are_clipped_in_messages() {
        let e = Error::InvalidTimeZone { value: "x".repeat(1_000_000) };
        let msg = e.to_string();
        assert!(msg.len() < 300, "{}", msg.len());
        assert!(msg.ends_with("... (1000000 bytes)\""), "{msg}");
        let short = Error::InvalidTimeZone { value: "Mars/Olympus".into() };
        assert_eq!(short.to_string(), "invalid time zone \"Mars/Olympus\"");
    }
}
