-- \df+ quota.* explains every public function.

COMMENT ON SCHEMA quota IS
    'pg_entitlements: plan quotas with per-user overrides, anniversary periods and exact counters';

COMMENT ON FUNCTION quota.check_user_quota(bigint, text) IS
    'Quota of a user for a feature in the current period: (has_quota, current_usage, quota_limit, '
    'remaining, percentage). Limit precedence: the active subscription''s custom_quotas, then '
    'plan_features, then quota.features.default_limit; -1 is unlimited. No active subscription: '
    '(false,0,0,0,0). Read-only; works on a hot standby.';

COMMENT ON FUNCTION quota.get_user_storage_quota(bigint) IS
    'Storage quota of a user in bytes (-1 unlimited, 0 without an active subscription), from '
    'storage_space with the same precedence as check_user_quota, converted from the unit in '
    'plan_features.feature_unit or quota.features.unit (MB by default, 1 MB = 1048576 bytes).';

COMMENT ON FUNCTION quota.record_feature_usage(bigint, text, text, bigint, integer, jsonb, text) IS
    'Records amount (>= 1) units of a feature used by a user: adds it to the current period''s '
    'counter in quota.user_usage and writes a row to quota.usage_records, in the caller''s '
    'transaction. Records after the fact and does not enforce the limit (use consume for that). '
    'A repeated idempotency_key counts nothing twice. Returns true; raises an error without an '
    'active subscription.';

COMMENT ON FUNCTION quota.consume(bigint, text, integer, text, text, bigint, jsonb) IS
    'Checks and records in one atomic step: (allowed, current_usage, quota_limit, remaining). '
    'Under any concurrency the committed usage of a period never exceeds its limit; a refused '
    'call writes nothing; -1 (unlimited) always succeeds and still records. A retry with the '
    'same idempotency_key returns the original outcome and counts nothing; the same key with '
    'another feature or amount raises 23505. A rollback of the caller''s transaction refunds.';

COMMENT ON FUNCTION quota.refund_usage(bigint) IS
    'Refunds one usage record: posts a compensating record to the period the use counted '
    'toward (not the current one) and lowers that counter. Never refunds twice: a second call '
    'returns the first refund with newly_refunded = false.';

COMMENT ON FUNCTION quota.refund_usage(bigint, text) IS
    'Refunds the usage a user recorded under an idempotency key; see refund_usage(bigint).';

COMMENT ON FUNCTION quota.refund_usage(bigint, bigint) IS
    'Refunds one usage record of the user named, by its id; see refund_usage(bigint). Naming '
    'the user lets a Citus cluster send the call to the user''s worker.';

COMMENT ON FUNCTION quota.adjust_quota(bigint, text, bigint, text, text) IS
    'Sets one custom quota (integer >= -1) of the user''s active subscription, with an audit '
    'row in quota.quota_adjustments (actor, reason, old and new value). Takes effect at once; a '
    'limit below current usage is allowed and makes has_quota false at once.';

COMMENT ON FUNCTION quota.clear_custom_quota(bigint, text, text, text) IS
    'Removes one custom quota of the user''s active subscription, so the plan value (or the '
    'catalog default) applies again; audited in quota.quota_adjustments.';

COMMENT ON FUNCTION quota.verify_ledger(bigint) IS
    'The (user, feature, period) counters that differ from the sum of their usage records, '
    'for one user or (NULL) all: none, always.';

COMMENT ON FUNCTION quota.get_quota_period(bigint, text) IS
    'The period the user''s usage counts toward now: (period_start, period_end, cycle). '
    'Anniversary periods of the anchor (quota_reset_anchor, else start_date), clamped to the '
    'subscription, computed in quota.settings.time_zone (UTC by default). Without a feature: the '
    'billing-cycle period. No row without an active subscription.';

COMMENT ON FUNCTION quota.anniversary_period(timestamptz, text, timestamptz, text) IS
    'The unclamped anniversary period of anchor (cycle monthly or yearly) that contains at, '
    'computed in time_zone. Month ends clamp without drift: Jan 31 gives Feb 28/29, then Mar 31.';

COMMENT ON FUNCTION quota.usage_overview(bigint) IS
    'Every catalog feature of a user in one call: limit, usage, remaining, percentage, unit and '
    'current period (has_quota false and no period without an active subscription), the '
    'grants included; allowance and allowance_used are the period''s own, and grants lists the '
    'grants that count in use order (id, source, amount, remaining, priority, expires_at); '
    'held is what the period''s active holds claim, part of current_usage; overage_limit the '
    'overage allowed beyond the limit (NULL or 0: none, -1: unlimited) and overage_used what '
    'the period took of it; kind is metered, gauge, boolean or config, next_reset when the '
    'usage starts again from zero (the end of the period in force; NULL when it never resets), '
    'value a boolean feature''s true or false or a config feature''s JSON value (has_quota: on, '
    'or a value other than JSON null; no period). limits lists every limit of the feature, the '
    'main one first, then the further windows (window, limit, used, remaining, window_start, '
    'next_reset); with several, the figures of the row are the tightest''s.';

COMMENT ON FUNCTION quota.calendar_window(text, timestamptz, text) IS
    'The calendar window (hour, day, ISO week from Monday, month or year) that contains at, in '
    'local time of time_zone: the windows a reset_rule of that name counts usage in.';

COMMENT ON FUNCTION quota.is_valid_time_zone(text) IS
    'Whether a time zone name can be used in quota.settings.time_zone.';

COMMENT ON FUNCTION quota.validate_custom_quotas() IS
    'Trigger: rejects malformed user_subscriptions.custom_quotas at write time.';

COMMENT ON FUNCTION quota.sync_storage_quota() IS
    'Trigger: keeps user_storage_usage.storage_quota_bytes equal to get_user_storage_quota(user_id), '
    'creating the row when missing, announces changes on channels quota_updated and '
    'storage_quota_changed (pg_notify, sent at commit only), and carries the usage counted so far '
    'into the current billing period when a change moves it (see quota.carry_usage).';

COMMENT ON FUNCTION quota.follow_time_zone() IS
    'Trigger on quota.settings: after a change of time_zone, makes sure every user''s current '
    'billing-cycle usage is in the current period (a change applies from the next boundary).';

COMMENT ON FUNCTION quota.wait_for_uses() IS
    'Trigger: before a change of what decides a limit or a period of a subscription, locks the '
    'user''s counters of the features it can move (current periods), so that the change waits '
    'for their open uses and uses that come while it is open wait for it.';

COMMENT ON FUNCTION quota.hold_current_periods(bigint) IS
    'Internal to the trigger pg_entitlements_wait_for_uses: creates, empty, the missing counters '
    'of the user''s current billing period, so that a change that can move the period locks them '
    'and a first use of the period in flight is waited for.';

COMMENT ON FUNCTION quota.row_is_current(oid, tid) IS
    'Whether a row version (ctid) of a table is still the committed one now, whatever the '
    'caller''s snapshot; the writers ask it of the subscription they read, once their counter '
    'is locked.';

COMMENT ON FUNCTION quota.settings_remember_zone() IS
    'Trigger on quota.settings: remembers the zone before a change of time_zone and when it '
    'changed, so that the period the change falls in keeps its bounds.';

COMMENT ON FUNCTION quota.carry_usage(bigint) IS
    'Moves the user''s billing-cycle counters whose period contains now() but which another '
    'period start names (the period a change of anchor, cycle or time zone ended) to the current '
    'period, adding up, with their usage records. The triggers do it after every change they see; '
    'call it after a period moved by the clock alone. With pg_entitlements.carry_usage off, those '
    'counters end at now() instead and the current period starts empty.';

COMMENT ON FUNCTION quota.attach_problems(name, text) IS
    'What the tables of a schema lack for quota.attach(), each with a fix that only adds '
    '(a nullable or constant-default column, a unique index built CONCURRENTLY), the lock it '
    'takes and whether it reads or rewrites the table; no fix, and why, where the only one would '
    'rewrite the table or change what its data means; and the rows the functions cannot rely on, '
    'with their user and row ids and a query that shows them. needed_for names the optional '
    'feature (idempotency_keys, refunds, alerts, booster_packs) a problem alone concerns: '
    'attach() goes on without that feature. local_time_zone: the zone of the application''s '
    'timestamp without time zone columns, as quota.attach() takes it.';

COMMENT ON FUNCTION quota.attach(name, text, boolean) IS
    'Superusers only. Binds every quota function and the storage trigger to the application '
    'tables of a schema (user_subscriptions, subscription_plans, plan_features, user_usage, '
    'usage_records, user_storage_usage), or refuses with one message listing each problem and '
    'its fix. The writers then run as the tables'' owner, which is granted what they need in '
    'schema quota; a NOTICE names each trigger and rule of the application''s on the tables. '
    'local_time_zone is required when a time column is timestamp without time zone (never '
    'guessed); rows the functions cannot rely on are refused unless accept_bad_rows, and then '
    'the calls that meet them fail. What only an optional feature needs does not stop it: the '
    'feature is recorded in quota.settings.attached_lacks and its calls are refused.';

COMMENT ON FUNCTION quota.detach() IS
    'Superusers only. Binds the quota functions to the extension''s own tables again, removes '
    'the triggers attach() installed and revokes what it granted. The application''s tables keep '
    'their rows and the columns and unique indexes added for attaching; nothing else of theirs '
    'changed.';

COMMENT ON COLUMN quota.settings.attached_owner IS
    'Written by quota.attach() and quota.detach() only: the owner of the attached tables, as '
    'whom the writers run.';

COMMENT ON COLUMN quota.settings.attached_grants IS
    'Written by quota.attach() and quota.detach() only: the privileges attach() granted '
    'attached_owner in schema quota, which detach() revokes.';

COMMENT ON COLUMN quota.settings.attached_time_zone IS
    'Written by quota.attach() and quota.detach() only: the zone of the local times the attached '
    'tables hold in their timestamp without time zone columns; NULL when they hold none.';

COMMENT ON COLUMN quota.settings.attached_lacks IS
    'Written by quota.attach() and quota.detach() only: the optional features (idempotency_keys, '
    'refunds, alerts, booster_packs) the attached tables lack the columns of; the calls that '
    'need them are refused (0A000).';

COMMENT ON COLUMN quota.settings.previous_time_zone IS
    'Set by the trigger pg_entitlements_remember_zone: the zone before the last change of '
    'time_zone. The period that change falls in keeps the bounds it had in this zone.';

COMMENT ON COLUMN quota.settings.time_zone_changed_at IS
    'Set by the trigger pg_entitlements_remember_zone: when time_zone last changed.';

COMMENT ON COLUMN quota.quota_adjustments.actor IS
    'Free text the caller of adjust_quota or clear_custom_quota passed (its current_user by '
    'default): who it says acted. session_role is who did.';

COMMENT ON COLUMN quota.quota_adjustments.session_role IS
    'The login role (session_user) of the session that made the change; neither the SECURITY '
    'DEFINER writer nor SET ROLE changes it, and the caller cannot choose it.';

COMMENT ON FUNCTION quota.install_triggers(regclass) IS
    'Creates the extension''s triggers pg_entitlements_validate_custom_quotas, '
    'pg_entitlements_sync_storage_quota and pg_entitlements_wait_for_uses on a '
    'user_subscriptions table (used by CREATE EXTENSION and quota.attach()).';

COMMENT ON FUNCTION quota.read_paths() IS
    'How the reading functions reach each table now, in this transaction: cache (the backend''s '
    'copy of a nearly constant table, reloaded by every committed change), index (read through '
    'the named index without an SQL statement) or sql (a statement), with the reason. '
    'SET pg_entitlements.direct_reads = off sends every read through statements.';

COMMENT ON FUNCTION quota.invalidate_cache() IS
    'Trigger: tells every backend, at commit, that its copy of settings, features, plans or plan '
    'features is stale.';

COMMENT ON FUNCTION quota.install_cache_trigger(regclass) IS
    'Creates the trigger pg_entitlements_invalidate_cache (ENABLE ALWAYS) on a table the backends '
    'keep a copy of (used by CREATE EXTENSION and quota.attach()).';

COMMENT ON FUNCTION quota.guard_drop() IS
'Event trigger function of pg_entitlements_guard_drop: refuses DROP EXTENSION pg_entitlements and DROP SCHEMA quota while the extension''s tables hold subscriptions, counters, usage records or adjustments, unless pg_entitlements.allow_drop_with_data is on; on a Citus coordinator, a drop that goes ahead first drops the shards of the extension''s tables on every node.';
COMMENT ON EVENT TRIGGER pg_entitlements_guard_drop IS
'Refuses to drop pg_entitlements with its data in one command; see quota.guard_drop().';

COMMENT ON FUNCTION quota.counting_plan(bigint) IS
'The plan of the subscription that counts for the user now (status active, start_date <= now() < end_date, latest end_date, then highest id), NULL without one; the rules every read follows, for SQL that needs them (the catalog triggers).';
COMMENT ON FUNCTION quota.limit_source(bigint, text) IS
'Where the user''s limit of a feature comes from now: custom_quotas, plan_features or features.default_limit; NULL without an active subscription or without any limit.';
COMMENT ON FUNCTION quota.counting_subscriptions_sql(regclass, text) IS
'Internal to the catalog triggers: the query of the plan that counts for each user with an active subscription (on the given plans).';
COMMENT ON FUNCTION quota.resync_storage_sql(regclass, text, text) IS
'Internal to the catalog triggers: the statement tail that resyncs storage_quota_bytes and announces the change.';
COMMENT ON FUNCTION quota.local_shards(text[]) IS
'On a Citus cluster, for each hash range this node serves on its own, the names of the shards there of the tables of schema quota named (a reference table: this node''s copy): where the catalog triggers act on a node. It holds Citus'' placement lock on those shards until the transaction ends, so that a shard move waits for their work (40001 when one moved away meanwhile). No row on one server.';
COMMENT ON FUNCTION quota.bound_table(text) IS
'The table of that name the functions use: the attached application''s after quota.attach(), else quota''s.';
COMMENT ON FUNCTION quota.plan_features_changed() IS
'Statement trigger on plan_features: resyncs the storage quota of the users a plan change decides and announces the change.';
COMMENT ON FUNCTION quota.custom_quotas_tables() IS
'The user_subscriptions tables whose custom_quotas name catalog features: quota''s and the attached application''s.';
COMMENT ON FUNCTION quota.features_delete_guard() IS
'Refuses to delete a feature while a subscription still overrides it in custom_quotas.';
COMMENT ON FUNCTION quota.features_changed() IS
'Row trigger on quota.features: a rename rewrites custom_quotas keys (audited); a change of what decides limits is announced and resyncs storage.';
COMMENT ON FUNCTION quota.install_plan_features_triggers(regclass) IS
'Installs the three statement triggers that follow changes of a plan_features table.';

COMMENT ON TABLE quota.grants IS
    'Extra quota per user and feature beside the period''s allowance (top-ups, booster packs, '
    'promotions, rollovers): a use draws from the allowance first, then from the grants that '
    'count, lower priority first, then the one that expires soonest, then the oldest. Written '
    'by grant_quota(), void_grant(), buy_booster() and the uses only.';

COMMENT ON TABLE quota.grant_uses IS
    'What each usage record drew from each grant (positive) and what each refund gave back '
    '(negative): for every grant, amount - remaining is the sum of its rows (verify_grants()).';

COMMENT ON FUNCTION quota.grant_counts(quota.grants) IS
    'Whether a grant counts now: not voided, and effective_from <= now() < expires_at.';

COMMENT ON FUNCTION quota.grant_event(text, quota.grants) IS
    'Internal: sends a grant''s event (added, exhausted, voided) on channel quota_grant, '
    'delivered at commit.';

COMMENT ON FUNCTION quota.grant_quota(bigint, text, bigint, timestamptz, integer, text, text, text) IS
    'quota_admin. Grants a user extra units of a feature, counting from now until expires_at '
    '(NULL: never), drawn after the period''s allowance in priority order. A repeated '
    'idempotency_key returns the grant it named and adds nothing. Announced on quota_grant.';

COMMENT ON FUNCTION quota.void_grant(bigint, text) IS
    'quota_admin. Stops what is left of a grant from counting, at once, with the reason and '
    'the caller''s login role kept on the grant; units it gave stay used. Idempotent.';

COMMENT ON FUNCTION quota.buy_booster(bigint, text, text) IS
    'quota_app, quota_admin. Buys a booster pack (a plan of plan_kind ''booster''): one grant '
    'per feature of the plan with a value above 0, expiring at 23:59:59 of the day '
    'duration_days after today in the configured time zone. Needs an active base '
    'subscription; a repeated idempotency_key returns the grants of the first purchase.';

COMMENT ON FUNCTION quota.verify_grants(bigint) IS
    'The grants whose used units (amount - remaining) differ from the sum of their rows in '
    'quota.grant_uses; none, always.';

COMMENT ON COLUMN quota.features.overage_limit IS
    'Soft limit: the overage allowed beyond the limit each period, unless the plan feature sets '
    'its own (NULL or 0: none, the default; -1: unlimited). Uses beyond the limit and the '
    'grants but within it are allowed and marked in quota.overage_uses.';

COMMENT ON COLUMN quota.plan_features.overage_limit IS
    'Soft limit of this plan: the overage allowed beyond the limit each period (NULL: the '
    'catalog''s features.overage_limit; 0: none; -1: unlimited).';

COMMENT ON TABLE quota.overage_uses IS
    'What each usage record took beyond the limit as allowed overage (positive), and what its '
    'refund gave back of it (negative), per period: what billing charges.';

COMMENT ON COLUMN quota.features.granted IS
    'Whether any user was ever granted this feature: set by the first grant, never cleared. A '
    'check of a feature nobody was granted reads no grant.';

COMMENT ON COLUMN quota.plan_features.reset_rule IS
    'When this plan''s usage of the feature resets (NULL: the catalog''s features.reset_rule): '
    'billing_cycle, a calendar hour, day, week (ISO, from Monday), month or year in '
    'quota.settings.time_zone, subscription or never.';

COMMENT ON FUNCTION quota.mark_granted_features() IS
    'Trigger: marks the features of new grants as granted (quota.features.granted).';

COMMENT ON FUNCTION quota.keep_granted() IS
    'Trigger: keeps quota.features.granted set once it is: a feature marked as never granted '
    'while it has grants would hide them from the checks.';

COMMENT ON COLUMN quota.features.rollover_max IS
    'Rollover: the most of a period''s unused allowance that becomes a grant of the next '
    'period (NULL or 0: none, the default; -1: all of it), unless the plan feature sets its own.';

COMMENT ON COLUMN quota.features.rollover_periods IS
    'How many periods a rollover grant lasts, the one it starts in included.';

COMMENT ON COLUMN quota.plan_features.rollover_max IS
    'Rollover of this plan (NULL: the catalog''s features.rollover_max; 0: none; -1: all).';

COMMENT ON COLUMN quota.plan_features.rollover_periods IS
    'How many periods this plan''s rollover grants last (NULL: the catalog''s).';

COMMENT ON COLUMN quota.grants.rollover_from IS
    'For a rollover grant: the start of the period whose unused allowance it holds; one per '
    'user, feature and period.';

COMMENT ON COLUMN quota.features.kind IS
    'metered (the default): uses counted per period; gauge: a running count (seats, connected '
    'accounts) that goes up with the uses and down with release_usage, never resets, and is '
    'checked on the way up only; boolean: on or off (has_feature; a plan''s feature_value or '
    'default_limit 0 is off, any other value on; custom_quotas true/false or 1/0); config: a '
    'JSON value (feature_value; plan_features.config_value, features.default_value, any JSON '
    'in custom_quotas). Boolean and config features are not used up.';

COMMENT ON COLUMN quota.features.default_value IS
    'The value of a config feature for subscriptions whose plan sets none (NULL or JSON null: none).';

COMMENT ON COLUMN quota.plan_features.config_value IS
    'The value this plan gives a config feature (NULL or JSON null: the catalog''s default_value).';

COMMENT ON COLUMN quota.features.window_limits IS
    'Further limits of a metered feature over other windows, for plans that set none: a JSON '
    'object from window (hour, day, week, month, year, billing_cycle) to limit, such as '
    '{"day": 100}. A use must fit every limit; check_user_quota reports the tightest.';

COMMENT ON COLUMN quota.plan_features.window_limits IS
    'This plan''s further limits of the feature over other windows (NULL: the catalog''s '
    'features.window_limits), such as {"day": 100} beside 1000 per billing month.';

COMMENT ON TABLE quota.window_usage IS
    'What each further window of a feature with several limits counted, per user and window '
    'start; uses count in it, refunds of uses made in the window give back.';

COMMENT ON FUNCTION quota.valid_window_limits(jsonb) IS
    'The CHECK of window_limits: true for an object from windows to limits, an error naming '
    'the problem otherwise.';

COMMENT ON FUNCTION quota.has_feature(bigint, text) IS
    'Whether the user has the feature now: a boolean feature that is on, a config feature whose '
    'value is not JSON null, a metered or gauge feature whose limit is not 0 (used up or not). '
    'False without an active subscription.';

COMMENT ON FUNCTION quota.feature_value(bigint, text) IS
    'The user''s value of a feature now, by custom_quotas, then the plan, then the catalog: a '
    'config feature''s JSON value, a boolean feature''s true or false, a metered or gauge '
    'feature''s limit (-1: unlimited). NULL without an active subscription or any value.';

COMMENT ON FUNCTION quota.release_usage(bigint, text, integer, text, text, bigint, jsonb) IS
    'quota_app. Counts a running count (a feature of kind gauge) down by amount, never below '
    'zero, with a usage record of the units released (negative): (released, current_usage, '
    'quota_limit, remaining). A retry with the same idempotency_key returns what its release '
    'released and releases nothing more.';

COMMENT ON TABLE quota.releases IS
    'What release_usage took off a running count (kind gauge), with its key and resource: for '
    'every counter, usage_count = its usage records - what they drew from grants - its '
    'releases (verify_ledger()).';

COMMENT ON TABLE quota.reservations IS
    'Holds taken by reserve() before slow work: an active hold (state held, expires_at still '
    'ahead) counts against what is left until settle(), release() or its expiry. Written by '
    'reserve(), settle(), release() and the uses only.';

COMMENT ON COLUMN quota.user_usage.held IS
    'What the period''s holds of state held claim (quota.reservations), expired ones until a '
    'use reclaims them; every use sees it under the counter''s lock. verify_holds() checks it.';

COMMENT ON FUNCTION quota.reserve(bigint, text, integer, interval, text) IS
    'quota_app. Holds amount units for ttl (10 minutes by default) when what is left (the '
    'allowance, then the grants, less the active holds) covers them: (allowed, reservation_id, '
    'remaining, expires_at). Under any concurrency the holds and uses of a period never exceed '
    'what it allows. A repeated idempotency_key returns its hold and holds nothing more. '
    'Announced on quota_reservation (granted).';

COMMENT ON FUNCTION quota.settle(bigint, integer, text, bigint, jsonb) IS
    'quota_app. Records the actual use of a hold as a usage record in the hold''s period and '
    'gives the rest back: (settled, usage_record_id, released_amount). Up to the held amount it '
    'always counts while the hold is active; beyond it, or once the hold expired, only when '
    'what is left allows (settled false otherwise, nothing recorded). Settling again with the '
    'same amount returns the first outcome. Announced on quota_reservation (settled).';

COMMENT ON FUNCTION quota.release(bigint) IS
    'quota_app. Gives a hold''s units back at once: true when it ended an active hold, false '
    'for one that had expired or was settled or released. Announced on quota_reservation '
    '(released).';

COMMENT ON FUNCTION quota.settle(bigint, bigint, integer, text, bigint, jsonb) IS
    'quota_app. settle(reservation_id, ...) of a hold of the user named (user_id first); a hold '
    'of another user is not found. Naming the user lets a Citus cluster send the call to the '
    'user''s worker.';

COMMENT ON FUNCTION quota.release(bigint, bigint) IS
    'quota_app. release(reservation_id) of a hold of the user named (user_id first); a hold of '
    'another user is not found. Naming the user lets a Citus cluster send the call to the '
    'user''s worker.';

COMMENT ON FUNCTION quota.announce(text, text) IS
    'pg_notify(channel, payload) for the events the extension raises: at once on one server; on a '
    'Citus cluster held by the backend until the transaction commits (after COMMIT PREPARED for '
    'a transaction Citus commits in two phases), and dropped with a rollback.';

COMMENT ON FUNCTION quota.verify_holds(bigint) IS
    'The counters whose held differs from the sum of their holds of state held in '
    'quota.reservations; none, always.';

COMMENT ON FUNCTION quota.sync_granted_storage() IS
    'Trigger: after a storage grant is added, voided or its window or amount changes, keeps the '
    'user''s storage_quota_bytes equal to get_user_storage_quota(), which adds the storage '
    'grants that count.';

-- Time-driven lifecycle (sql/lifecycle.sql).
COMMENT ON FUNCTION quota.tick(timestamptz, integer) IS
    'quota_admin; run every minute by pg_cron. Applies what became due up to at (default now(), '
    'never later): scheduled plan changes, expiries (status expired, trial_ended for a trial) '
    'with the fallback plan of quota.settings, holds past their expiry, grant warnings '
    'grant_warning_days ahead and expiries, rollover grants due from the periods that ended, '
    'and storage_quota_bytes moved by the clock; at '
    'most batch_size rows of each kind (default quota.settings.tick_batch_size). One runner at '
    'a time (ran false: another was running); idempotent; more true: rows due remain.';

COMMENT ON FUNCTION quota.distributed() IS
    'Whether the extension''s tables are laid out over a Citus cluster (quota.distribute()).';

COMMENT ON FUNCTION quota.tick_user(bigint, timestamptz, integer, bigint, interval, quota.tick_state, quota.tick_state, text[]) IS
    'Internal to quota.tick(): its steps (those named, NULL: all) for one user (NULL: every '
    'user), delegated to the user''s worker on a Citus cluster; returns the counts {plan_changes, expired, '
    'trials_ended, fallbacks, reservations_expired, grants_warned, grants_expired, rollovers, '
    'storage_resynced}.';

COMMENT ON FUNCTION quota.tick_due_users(timestamptz, integer, interval, boolean) IS
    'Internal to quota.tick(): the users with scheduled changes, expiries, holds or grant '
    'warnings due, and which, at most lim of each kind.';

COMMENT ON FUNCTION quota.tick_expired_grants(timestamptz, quota.tick_state, quota.tick_state, bigint, integer) IS
    'Internal to quota.tick(): the grants whose expiry is not announced yet, between two '
    'positions of quota.tick_state, in order.';

COMMENT ON FUNCTION quota.tick_ended_periods(timestamptz, quota.tick_state, quota.tick_state, bigint, integer) IS
    'Internal to quota.tick(): the counters whose period ended, of a feature with a rollover '
    'rule, between two positions of quota.tick_state, in order.';

COMMENT ON FUNCTION quota.tick_storage_instants(timestamptz, quota.tick_state, quota.tick_state, bigint, integer) IS
    'Internal to quota.tick(): the instants that move a storage quota by the clock alone (a '
    'subscription or a storage grant that starts, a storage grant that ends), between two '
    'positions of quota.tick_state, in order.';

COMMENT ON FUNCTION quota.pause_subscription(bigint, text, text) IS
    'quota_admin. Pauses the user''s active subscriptions that have not ended (status paused, '
    'paused_at now()): no quota while paused, usage, gauges and grants kept. Audited in '
    'quota.subscription_changes and announced on quota_subscription (paused).';

COMMENT ON FUNCTION quota.resume_subscription(bigint, boolean, text) IS
    'quota_admin. Resumes the user''s paused subscriptions; extend_end_date (default true) adds '
    'the paused time to end_date (and to the start of one that had not started). Audited and '
    'announced on quota_subscription (resumed).';

COMMENT ON FUNCTION quota.schedule_plan_change(bigint, text, timestamptz, text) IS
    'quota_admin. Schedules the user''s move to a base plan at at (default: the end of the '
    'current billing period), applied by quota.tick(); replaces a pending change. Announced on '
    'quota_subscription (change_scheduled).';

COMMENT ON FUNCTION quota.cancel_scheduled_change(bigint, text) IS
    'quota_admin. Cancels the user''s pending plan change and returns it (NULL: none). '
    'Announced on quota_subscription (change_cancelled).';

COMMENT ON FUNCTION quota.create_due_rollover(bigint, text) IS
    'Internal to quota.tick(): creates the rollover grant the user''s current period of the '
    'feature starts with, when one is due and not created yet, as the period''s first write '
    'would.';

COMMENT ON FUNCTION quota.cycle_end(integer, text, text, timestamptz, timestamptz) IS
    'The first end after a given instant of a subscription started at start: start plus whole '
    'cycles of its plan (days: its duration_days, else a month or a year by cycle, its '
    'billing_cycle), in the time zone zone.';

COMMENT ON FUNCTION quota.require_own_subscriptions(text) IS
    'Refuses (0A000) the lifecycle functions while an application''s tables are attached.';

COMMENT ON FUNCTION quota.subscription_event(quota.subscription_changes) IS
    'Sends one change of quota.subscription_changes on channel quota_subscription (version 1).';

COMMENT ON FUNCTION quota.subscription_changed(bigint, bigint, text, bigint, timestamptz, jsonb, text) IS
    'Audits one change of a subscription in quota.subscription_changes and announces it.';

COMMENT ON TABLE quota.scheduled_changes IS
    'Plan changes scheduled by schedule_plan_change(), at most one pending per user; the tick '
    'applies them at due_at (state applied, subscription_id the subscription it started).';

COMMENT ON TABLE quota.subscription_changes IS
    'Audit of the lifecycle: pauses, resumes, scheduled and applied plan changes, expiries, '
    'trial ends and fallbacks, with who (actor, session_role; quota.tick for the tick) and '
    'when it took effect; each row is the event sent on quota_subscription.';

COMMENT ON TABLE quota.grant_notices IS
    'The expiring warnings the tick sent: once per grant.';

COMMENT ON TABLE quota.tick_state IS
    'How far quota.tick() got in the instants it has no row to mark: grant expiries announced '
    'and storage quotas resynced (no row: nothing yet).';

COMMENT ON COLUMN quota.user_subscriptions.trial IS
    'A trial: counts as an active subscription; at its end the tick sends trial_ended and '
    'moves the user to the plan scheduled for then, or to the fallback plan.';

COMMENT ON COLUMN quota.settings.fallback_plan_code IS
    'The base plan a user gets from the instant a subscription of theirs expires with no other '
    'one counting (NULL: none).';

COMMENT ON COLUMN quota.settings.grant_warning_days IS
    'Days before a grant expires that the tick sends its expiring event (default 3).';

COMMENT ON COLUMN quota.settings.tick_batch_size IS
    'The most rows of each kind one quota.tick() call handles (default 1000).';
COMMENT ON FUNCTION quota.distribute() IS
    'Citus: lays the extension out over the cluster, on the coordinator, idempotently: tables '
    'without user_id as reference tables, those with user_id distributed by it in one '
    'colocation group, every function whose first argument is user_id delegated to the node '
    'holding that user (writers with force_delegation), and a range of row ids of its own for '
    'each node (quota.own_id_range()). Without Citus it raises 55000.';

COMMENT ON FUNCTION quota.own_id_range() IS
    'Citus: gives this node''s identity sequences of the extension the range of row ids of its '
    'node group (2^48 ids from group id * 2^48 + 1), so that no two nodes give the same id; '
    'nothing without Citus. quota.distribute() runs it on every node, and CREATE EXTENSION on '
    'the node a worker Citus adds later.';
