-- Time-driven lifecycle (issue 18): what must happen when the clock passes an instant, applied
-- by quota.tick(at), which pg_cron (or any scheduler) runs every minute.
--
-- Every reading function is already exact at every instant: it compares with the clock. What
-- waits for the tick is only what is written or sent: a subscription's status, the fallback
-- subscription and the plan a scheduled change starts, the materialized
-- user_storage_usage.storage_quota_bytes, and the events. The tick writes each due thing dated
-- at the instant it was due (a fallback starts when the subscription ended, not when the tick
-- ran), so a late tick writes what a punctual one would have.
--
-- The subscription steps (expiry, fallback, scheduled changes, trials, pause) and the holds'
-- expiry write the extension's own tables: with an application's tables attached
-- (quota.attach()), its own jobs keep its subscriptions, pause_subscription and the scheduling
-- functions refuse (0A000), and the tick announces grants only (they are always quota's).

-- Settings of the tick. fallback_plan_code: the plan (of kind 'base') a user whose subscription
-- ended without another one gets from that instant (NULL: none, the user has no subscription);
-- grant_warning_days: how long before a grant expires its 'expiring' event is sent;
-- tick_batch_size: how many rows of each kind one call handles at most, so that a backlog
-- drains over several calls without one long transaction.
ALTER TABLE quota.settings
    ADD COLUMN fallback_plan_code text,
    ADD COLUMN grant_warning_days integer NOT NULL DEFAULT 3 CHECK (grant_warning_days >= 0),
    ADD COLUMN tick_batch_size integer NOT NULL DEFAULT 1000 CHECK (tick_batch_size > 0);

-- A trial is an active subscription marked as one: it counts like any active subscription
-- (the reads and their partial index know status 'active' only), and at its end_date the tick
-- ends it with event trial_ended, into the plan scheduled for that instant or the fallback.
ALTER TABLE quota.user_subscriptions ADD COLUMN trial boolean NOT NULL DEFAULT false;

-- The subscriptions the tick expires: status 'active', end_date passed, soonest first.
CREATE INDEX user_subscriptions_end_idx ON quota.user_subscriptions (end_date)
    WHERE status = 'active';
-- The subscriptions whose start the storage resync follows (pre-created renewals).
CREATE INDEX user_subscriptions_start_idx ON quota.user_subscriptions (start_date)
    WHERE status = 'active';
-- The grants whose warning is due, and those that expire.
CREATE INDEX grants_expires_idx ON quota.grants (expires_at) WHERE expires_at IS NOT NULL;
-- The holds the tick expires.
CREATE INDEX reservations_expires_idx ON quota.reservations (expires_at) WHERE state = 'held';

-- A plan change to apply at due_at (schedule_plan_change): at most one pending per user.
-- Applying it ends the subscription that counts up to due_at there and starts one on plan_id
-- from due_at until that subscription's end (the rest of what was paid for), or, when it
-- ended at due_at, for one cycle of the plan.
CREATE TABLE quota.scheduled_changes (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    plan_id bigint NOT NULL REFERENCES quota.subscription_plans (id),
    due_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'applied', 'cancelled')),
    -- The subscription applying it started.
    subscription_id bigint,
    -- Free text the caller passes (its current_user by default); session_role is the login
    -- role of the session whatever it says.
    actor text NOT NULL,
    session_role text NOT NULL DEFAULT session_user,
    created_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    PRIMARY KEY (user_id, id),
    CHECK ((state = 'pending') = (ended_at IS NULL)),
    CHECK ((state = 'applied') = (subscription_id IS NOT NULL))
);
CREATE UNIQUE INDEX scheduled_changes_pending_idx ON quota.scheduled_changes (user_id)
    WHERE state = 'pending';
CREATE INDEX scheduled_changes_due_idx ON quota.scheduled_changes (due_at)
    WHERE state = 'pending';

-- The audit of the lifecycle: one row per change of a subscription made by pause, resume,
-- scheduling or the tick, which is also the event announced on channel quota_subscription.
CREATE TABLE quota.subscription_changes (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    subscription_id bigint,
    change text NOT NULL
        CHECK (change IN ('paused', 'resumed', 'change_scheduled', 'change_cancelled',
                          'plan_changed', 'expired', 'trial_ended', 'fallback_started')),
    plan_id bigint,
    -- The instant the change takes effect (a tick's changes: the instant they were due).
    effective_at timestamptz NOT NULL,
    -- What else the event says (the plan before a change, how long a pause lasted, ...).
    details jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    reason text,
    actor text NOT NULL,
    session_role text NOT NULL DEFAULT session_user,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id)
);

-- The grants' 'expiring' warnings sent: once per grant.
CREATE TABLE quota.grant_notices (
    user_id bigint NOT NULL,
    grant_id bigint NOT NULL,
    notice text NOT NULL CHECK (notice IN ('expiring')),
    sent_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, grant_id, notice),
    FOREIGN KEY (user_id, grant_id) REFERENCES quota.grants (user_id, id)
);

-- How far the tick got in the things it finds by their instant alone, without a row of its
-- own to mark: the grants that expired (announced up to (grants_expired_to, grants_expired_id)),
-- the instants that move a storage quota (resynced up to (storage_synced_to,
-- storage_synced_user)) and the ends of periods a rollover may come from. No row: nothing yet, so the first tick after an install or a restore
-- resyncs every storage row, in batches.
CREATE TABLE quota.tick_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    grants_expired_to timestamptz NOT NULL DEFAULT '-infinity',
    grants_expired_id bigint NOT NULL DEFAULT 0,
    storage_synced_to timestamptz NOT NULL DEFAULT '-infinity',
    storage_synced_user bigint NOT NULL DEFAULT -9223372036854775808,
    -- The counters whose period's end was looked at for a rollover due from it.
    rollover_checked_to timestamptz NOT NULL DEFAULT '-infinity',
    rollover_checked_user bigint NOT NULL DEFAULT -9223372036854775808,
    rollover_checked_feature text NOT NULL DEFAULT '',
    -- The at of the last tick that ran.
    ticked_at timestamptz
);

SELECT pg_catalog.pg_extension_config_dump('quota.scheduled_changes', '');
SELECT pg_catalog.pg_extension_config_dump('quota.subscription_changes', '');
SELECT pg_catalog.pg_extension_config_dump('quota.grant_notices', '');
SELECT pg_catalog.pg_extension_config_dump('quota.tick_state', '');
SELECT pg_catalog.pg_extension_config_dump('quota.scheduled_changes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('quota.subscription_changes_id_seq', '');

-- Announced on channel quota_subscription (quota.announce): version 1 of the payload, one per
-- audit row.
CREATE FUNCTION quota.subscription_event(c quota.subscription_changes)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT quota.announce('quota_subscription', (jsonb_build_object(
        'version', 1, 'event', c.change, 'user_id', c.user_id,
        'subscription_id', c.subscription_id, 'plan_id', c.plan_id,
        'effective_at', c.effective_at) || c.details)::text)
$$;
REVOKE EXECUTE ON FUNCTION quota.subscription_event(quota.subscription_changes) FROM PUBLIC;

-- The first end of a subscription started at `start` that lies after `after`: start plus one
-- or more cycles of its plan, whose duration_days is `days` and billing_cycle `cycle`, in the
-- zone `zone`. A monthly or yearly plan's cycles are its anniversary periods from start
-- (quota.anniversary_period, the rule of every billing period: month ends clamp without
-- drift); a plan of duration_days, whole spans of that many local days. A fallback that starts
-- long ago (a tick after downtime) thus lasts past the tick, instead of a chain of ended
-- subscriptions. It reads no table: the tick's statements pass the plan's and the settings'
-- values, since on a Citus cluster they run on a shard, where a read of the catalog would be a
-- distributed query Citus refuses.
CREATE FUNCTION quota.cycle_end(days integer, cycle text, zone text, start timestamptz,
                                after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    local timestamp;
    since interval;
BEGIN
    IF zone IS NULL OR start IS NULL OR after IS NULL THEN
        RETURN NULL;
    END IF;
    IF NOT (isfinite(start) AND isfinite(after)) THEN
        RAISE EXCEPTION 'cycle_end: no cycle ends after % counting from %', after, start
            USING ERRCODE = '22008';
    END IF;
    IF days < 1 THEN
        RAISE EXCEPTION 'cycle_end: a cycle of % days', days USING ERRCODE = '22023';
    END IF;
    IF days IS NULL THEN
        RETURN (SELECT a.period_end
                  FROM quota.anniversary_period(
                           start, CASE WHEN cycle = 'yearly' THEN 'yearly' ELSE 'monthly' END,
                           greatest(start, after), zone) a);
    END IF;
    local := start AT TIME ZONE zone;
    since := (greatest(start, after) AT TIME ZONE zone) - local;
    RETURN (local + make_interval(days => days * (floor(extract(epoch FROM since) / 86400 / days)::integer + 1)))
           AT TIME ZONE zone;
END
$$;

-- Refuses the lifecycle functions that write subscriptions while an application's tables are
-- attached: its own jobs manage its subscriptions.
CREATE FUNCTION quota.require_own_subscriptions(caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tables name := (SELECT st.attached_schema FROM quota.settings st);
BEGIN
    IF tables IS NOT NULL THEN
        RAISE EXCEPTION '%: not available while the tables of schema "%" are attached', caller, tables
            USING ERRCODE = '0A000',
                  HINT = 'The lifecycle functions write quota.user_subscriptions; the application''s own jobs manage its subscriptions.';
    END IF;
END
$$;

-- One audited change of a subscription, announced: the row of quota.subscription_changes.
CREATE FUNCTION quota.subscription_changed(user_id bigint, subscription_id bigint, change text,
                                           plan_id bigint, effective_at timestamptz,
                                           details jsonb, actor text)
RETURNS quota.subscription_changes
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c quota.subscription_changes;
BEGIN
    INSERT INTO quota.subscription_changes AS x
           (user_id, subscription_id, change, plan_id, effective_at, details, actor)
    VALUES (user_id, subscription_id, change, plan_id, effective_at, details, actor)
    RETURNING x.* INTO c;
    PERFORM quota.subscription_event(c);
    RETURN c;
END
$$;
REVOKE EXECUTE ON FUNCTION quota.subscription_changed(bigint, bigint, text, bigint, timestamptz, jsonb, text) FROM PUBLIC;

-- Pauses every subscription of the user with status 'active' that has not ended (the one that
-- counts and any pre-created renewal): status 'paused', paused_at = now(). While paused the
-- user has no active subscription: has_quota is false, consume is refused and
-- record_feature_usage raises 'no active subscription'; counters, gauges and grants are kept.
-- The triggers resync the storage quota and announce the limits that moved.
CREATE FUNCTION quota.pause_subscription(user_id bigint, reason text, actor text DEFAULT current_user)
RETURNS SETOF quota.user_subscriptions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    IF user_id IS NULL OR actor IS NULL THEN
        RAISE EXCEPTION 'pause_subscription: user_id and actor must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF coalesce(btrim(reason), '') = '' THEN
        RAISE EXCEPTION 'pause_subscription: user %: a reason is required', user_id
            USING ERRCODE = '22023', HINT = 'Say why the subscription is paused; it is kept in quota.subscription_changes.';
    END IF;
    PERFORM quota.require_own_subscriptions('pause_subscription');
    RETURN QUERY
    WITH paused AS (
        UPDATE quota.user_subscriptions s SET status = 'paused', paused_at = now()
         WHERE s.user_id = pause_subscription.user_id AND s.status = 'active'
           AND s.end_date > now()
        RETURNING s.*
    ), audit AS (
        INSERT INTO quota.subscription_changes AS c
               (user_id, subscription_id, change, plan_id, effective_at, reason, actor)
        SELECT p.user_id, p.id, 'paused', p.plan_id, now(), pause_subscription.reason,
               pause_subscription.actor
          FROM paused p ORDER BY p.id
        RETURNING ROW(c.*)::quota.subscription_changes AS entry
    ), announced AS (
        SELECT count(quota.subscription_event(o.entry)) AS n
          FROM (SELECT a.entry FROM audit a ORDER BY (a.entry).id) o
    )
    SELECT p.* FROM paused p, announced ORDER BY p.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RAISE EXCEPTION 'pause_subscription: user % has no active subscription to pause', user_id
            USING ERRCODE = 'P0002',
                  HINT = 'Only a subscription with status ''active'' whose end_date is still to come can be paused.';
    END IF;
END
$$;

-- Resumes the user's paused subscriptions: status 'active' again. With extend_end_date (the
-- default) each gets the time it was paused added to its end_date, and one that had not
-- started when it was paused to its start_date too, so renewals keep their order, and a plan
-- change pending for after the pause moves with them (the tick leaves it alone while paused);
-- without it the dates stay, and what fell due meanwhile is applied by the next tick.
CREATE FUNCTION quota.resume_subscription(user_id bigint, extend_end_date boolean DEFAULT true,
                                          actor text DEFAULT current_user)
RETURNS SETOF quota.user_subscriptions
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    -- When the pause began (pause_subscription pauses all of a user's subscriptions at once).
    since timestamptz;
BEGIN
    IF user_id IS NULL OR extend_end_date IS NULL OR actor IS NULL THEN
        RAISE EXCEPTION 'resume_subscription: user_id, extend_end_date and actor must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    PERFORM quota.require_own_subscriptions('resume_subscription');
    SELECT min(s.paused_at) INTO since FROM quota.user_subscriptions s
     WHERE s.user_id = resume_subscription.user_id AND s.status = 'paused';
    RETURN QUERY
    WITH before AS (
        SELECT s.user_id, s.id, s.paused_at, now() - s.paused_at AS paused_for
          FROM quota.user_subscriptions s
         WHERE s.user_id = resume_subscription.user_id AND s.status = 'paused'
         FOR UPDATE OF s
    ), resumed AS (
        UPDATE quota.user_subscriptions s
           SET status = 'active', paused_at = NULL,
               end_date = CASE WHEN extend_end_date THEN s.end_date + b.paused_for ELSE s.end_date END,
               start_date = CASE WHEN extend_end_date AND s.start_date > b.paused_at
                                 THEN s.start_date + b.paused_for ELSE s.start_date END
          FROM before b
         WHERE s.user_id = b.user_id AND s.id = b.id
        RETURNING s AS sub, b.paused_for
    ), audit AS (
        INSERT INTO quota.subscription_changes AS c
               (user_id, subscription_id, change, plan_id, effective_at, details, actor)
        SELECT (r.sub).user_id, (r.sub).id, 'resumed', (r.sub).plan_id, now(),
               jsonb_build_object('paused_for', r.paused_for::text,
                                  'end_date_extended', extend_end_date,
                                  'end_date', (r.sub).end_date),
               resume_subscription.actor
          FROM resumed r ORDER BY (r.sub).id
        RETURNING ROW(c.*)::quota.subscription_changes AS entry
    ), announced AS (
        SELECT count(quota.subscription_event(o.entry)) AS n
          FROM (SELECT a.entry FROM audit a ORDER BY (a.entry).id) o
    )
    SELECT (r.sub).* FROM resumed r, announced ORDER BY (r.sub).id;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RAISE EXCEPTION 'resume_subscription: user % has no paused subscription', user_id
            USING ERRCODE = 'P0002';
    END IF;
    IF extend_end_date THEN
        UPDATE quota.scheduled_changes c SET due_at = c.due_at + (now() - since)
         WHERE c.user_id = resume_subscription.user_id AND c.state = 'pending'
           AND c.due_at > since;
    END IF;
END
$$;

-- Schedules the user's move to plan_code at `at` (NULL, the default: the end of the current
-- billing period, quota.get_quota_period()), applied by the first tick at or after it. A
-- change pending already is replaced (cancelled, then this one scheduled).
CREATE FUNCTION quota.schedule_plan_change(user_id bigint, plan_code text,
                                           at timestamptz DEFAULT NULL,
                                           actor text DEFAULT current_user)
RETURNS quota.scheduled_changes
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    plan bigint;
    due timestamptz := schedule_plan_change.at;
    ch quota.scheduled_changes;
BEGIN
    IF user_id IS NULL OR plan_code IS NULL OR actor IS NULL THEN
        RAISE EXCEPTION 'schedule_plan_change: user_id, plan_code and actor must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    PERFORM quota.require_own_subscriptions('schedule_plan_change');
    SELECT p.id INTO plan FROM quota.subscription_plans p
     WHERE p.plan_code = schedule_plan_change.plan_code AND p.plan_kind = 'base';
    IF plan IS NULL THEN
        RAISE EXCEPTION 'user %: no base plan with plan_code "%"', user_id, plan_code
            USING ERRCODE = 'P0002';
    END IF;
    IF due IS NULL THEN
        SELECT p.period_end INTO due FROM quota.get_quota_period(schedule_plan_change.user_id) p;
        IF due IS NULL THEN
            RAISE EXCEPTION 'user %: no active subscription, so no current period to end', user_id
                USING ERRCODE = 'P0002', HINT = 'Pass the instant of the change as at.';
        END IF;
    END IF;
    IF due <= now() THEN
        RAISE EXCEPTION 'user %: a plan change at % is not in the future', user_id, due
            USING ERRCODE = '22023',
                  HINT = 'Change the plan now with an UPDATE of the subscription''s plan_id.';
    END IF;
    PERFORM quota.cancel_scheduled_change(schedule_plan_change.user_id, schedule_plan_change.actor);
    INSERT INTO quota.scheduled_changes AS c (user_id, plan_id, due_at, actor)
    VALUES (schedule_plan_change.user_id, plan, due, schedule_plan_change.actor)
    RETURNING * INTO ch;
    PERFORM quota.subscription_changed(ch.user_id, NULL, 'change_scheduled', ch.plan_id, ch.due_at,
                                       jsonb_build_object('scheduled_change_id', ch.id), ch.actor);
    RETURN ch;
END
$$;

-- Cancels the user's pending plan change; returns it, or NULL when none was pending.
CREATE FUNCTION quota.cancel_scheduled_change(user_id bigint, actor text DEFAULT current_user)
RETURNS quota.scheduled_changes
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch quota.scheduled_changes;
BEGIN
    IF user_id IS NULL OR actor IS NULL THEN
        RAISE EXCEPTION 'cancel_scheduled_change: user_id and actor must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    PERFORM quota.require_own_subscriptions('cancel_scheduled_change');
    UPDATE quota.scheduled_changes c SET state = 'cancelled', ended_at = now()
     WHERE c.user_id = cancel_scheduled_change.user_id AND c.state = 'pending'
    RETURNING c.* INTO ch;
    IF FOUND THEN
        PERFORM quota.subscription_changed(ch.user_id, NULL, 'change_cancelled', ch.plan_id,
                                           ch.due_at, jsonb_build_object('scheduled_change_id', ch.id),
                                           cancel_scheduled_change.actor);
    END IF;
    RETURN ch;
END
$$;

-- The rows of the steps of quota.tick() that go by instant, past the tick's progress `since`
-- and up to `upto` (quota.tick_state positions), in their order, at most lim (NULL: all), of
-- one user (only_user) or of all (NULL). quota.tick() reads them with upto at `at` to find how
-- far its batch goes; quota.tick_user() then takes the batch's rows, for every user or on a
-- Citus cluster one user at a time on its worker. These functions are PL/pgSQL, not SQL: Citus
-- plans no statement of an SQL function with parameters.
-- The grants whose expiry is not announced yet.
CREATE FUNCTION quota.tick_expired_grants(at timestamptz, since quota.tick_state,
                                          upto quota.tick_state, only_user bigint, lim integer)
RETURNS SETOF quota.grants
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT g.* FROM quota.grants g
     WHERE (only_user IS NULL OR g.user_id = only_user)
       AND g.expires_at <= tick_expired_grants.at AND g.voided_at IS NULL
       AND (g.expires_at, g.id) > (since.grants_expired_to, since.grants_expired_id)
       AND (g.expires_at, g.id) <= (upto.grants_expired_to, upto.grants_expired_id)
     ORDER BY g.expires_at, g.id
     LIMIT lim;
END
$$;

-- The counters whose period ended, of a feature with a rollover rule (the catalog's or a
-- plan's): a rollover grant may be due from them. Without any rollover rule no counter is
-- read; with one, the counters are (no index on period_end: it would cost every new counter
-- of every use an index entry).
CREATE FUNCTION quota.tick_ended_periods(at timestamptz, since quota.tick_state,
                                         upto quota.tick_state, only_user bigint, lim integer)
RETURNS TABLE (period_end timestamptz, user_id bigint, feature_code text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    -- The features with a rollover rule, read first: on a Citus worker the statement below
    -- must name only the user's shard besides its own values.
    rolling text[] := ARRAY(SELECT f.code FROM quota.features f WHERE f.rollover_max <> 0
                            UNION
                            SELECT pf.feature_code FROM quota.plan_features pf
                             WHERE pf.rollover_max <> 0);
BEGIN
    IF cardinality(rolling) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT u.period_end, u.user_id, u.feature_code
      FROM quota.user_usage u
     WHERE u.feature_code = ANY (rolling)
       AND (only_user IS NULL OR u.user_id = only_user)
       AND u.period_end <= tick_ended_periods.at AND u.period_end >= since.rollover_checked_to
       AND (u.period_end, u.user_id, u.feature_code)
           > (since.rollover_checked_to, since.rollover_checked_user, since.rollover_checked_feature)
       AND (u.period_end, u.user_id, u.feature_code)
           <= (upto.rollover_checked_to, upto.rollover_checked_user, upto.rollover_checked_feature)
     ORDER BY u.period_end, u.user_id, u.feature_code
     LIMIT lim;
END
$$;

-- The instants that move a storage quota by the clock alone: a subscription that starts, a
-- storage grant that starts or ends. An instant that came before its row was written (a
-- subscription inserted once started, as the tick's own are) was synced by the row's trigger.
CREATE FUNCTION quota.tick_storage_instants(at timestamptz, since quota.tick_state,
                                            upto quota.tick_state, only_user bigint, lim integer)
RETURNS TABLE (t timestamptz, user_id bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT y.t, y.user_id
      FROM (SELECT s.start_date AS t, s.user_id FROM quota.user_subscriptions s
             WHERE (only_user IS NULL OR s.user_id = only_user)
               AND s.status = 'active' AND s.start_date <= tick_storage_instants.at
               AND s.start_date >= since.storage_synced_to
               AND s.created_at < s.start_date
            UNION
            SELECT b.t, g.user_id
              FROM quota.grants g, LATERAL (VALUES (g.effective_from), (g.expires_at)) b (t)
             WHERE (only_user IS NULL OR g.user_id = only_user)
               AND g.feature_code = 'storage_space' AND b.t <= tick_storage_instants.at
               AND b.t >= since.storage_synced_to AND g.created_at < b.t) y
     WHERE (y.t, y.user_id) > (since.storage_synced_to, since.storage_synced_user)
       AND (y.t, y.user_id) <= (upto.storage_synced_to, upto.storage_synced_user)
     ORDER BY y.t, y.user_id
     LIMIT lim;
END
$$;

-- The users with something due up to `at` that quota.tick_user() finds by its rows, and the
-- step that finds it (change, expiry, hold, warning), at most lim users of each step, soonest
-- first; the subscription steps only with the extension's own tables (own). quota.tick() asks
-- it whether rows remain, and on a Citus cluster which users to tick, with which steps.
CREATE FUNCTION quota.tick_due_users(at timestamptz, lim integer, warn interval, own boolean)
RETURNS TABLE (user_id bigint, step text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    (SELECT c.user_id, 'change' FROM quota.scheduled_changes c
      WHERE own AND c.state = 'pending' AND c.due_at <= tick_due_users.at
        AND NOT EXISTS (SELECT FROM quota.user_subscriptions p
                         WHERE p.user_id = c.user_id AND p.status = 'paused')
      ORDER BY c.due_at, c.user_id LIMIT lim)
    UNION ALL
    (SELECT s.user_id, 'expiry' FROM quota.user_subscriptions s
      WHERE own AND s.status = 'active' AND s.end_date <= tick_due_users.at
      ORDER BY s.end_date, s.user_id LIMIT lim)
    UNION ALL
    (SELECT r.user_id, 'hold' FROM quota.reservations r
      WHERE own AND r.state = 'held' AND r.expires_at <= tick_due_users.at
      ORDER BY r.expires_at, r.user_id LIMIT lim)
    UNION ALL
    (SELECT g.user_id, 'warning' FROM quota.grants g
      WHERE g.expires_at > tick_due_users.at AND g.expires_at <= tick_due_users.at + warn
        AND g.voided_at IS NULL AND g.remaining > 0
        AND NOT EXISTS (SELECT FROM quota.grant_notices x
                         WHERE x.user_id = g.user_id AND x.grant_id = g.id AND x.notice = 'expiring')
      ORDER BY g.expires_at, g.user_id LIMIT lim);
END
$$;

-- The steps of quota.tick() (below) for one user (user_id), or for every user (NULL): what
-- became due up to at, at most lim rows of each kind, and the rows of the steps that go by
-- instant past `since` and up to `upto` (the batch quota.tick() chose); only the steps named
-- in `steps` (NULL: all): change, expiry, hold, warning, grant_expiry, rollover, storage, so
-- that a user's call plans no statement of a step with nothing due. Returns the counts
-- {plan_changes, expired, trials_ended, fallbacks, reservations_expired, grants_warned,
-- grants_expired, rollovers, storage_resynced}. Internal to quota.tick(): on a Citus cluster
-- it is delegated to each due user's worker, and every statement names the user, so that
-- Citus finds the user's shards there.
CREATE FUNCTION quota.tick_user(user_id bigint, at timestamptz, lim integer, fallback bigint,
                                warn interval, since quota.tick_state, upto quota.tick_state,
                                steps text[])
RETURNS integer[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    one bigint := tick_user.user_id;
    every boolean := steps IS NULL;
    own boolean := (SELECT st.attached_schema FROM quota.settings st) IS NULL;
    zone text := coalesce((SELECT st.time_zone FROM quota.settings st), 'UTC');
    plan_changes integer := 0;
    expired integer := 0;
    trials_ended integer := 0;
    fallbacks integer := 0;
    reservations_expired integer := 0;
    grants_warned integer := 0;
    grants_expired integer := 0;
    rollovers integer := 0;
    storage_resynced integer := 0;
    -- Rows a statement announced (each row of its audit, pulled so that every event is sent).
    -- An event is pulled as "event IS NULL": a column of type void could not be kept by Citus,
    -- which stores the rows of a CTE on a worker.
    n integer;
    trials integer;
    users bigint[];
    -- The (user, feature) pairs whose period ended, for the rollover step.
    ended_periods jsonb;
BEGIN
    IF own AND (every OR 'change' = ANY (steps)) THEN
        -- 1. Scheduled plan changes. The subscription that counts up to due_at (active, started
        -- before it, not ended before it; the latest end, then the highest id, as
        -- entitlements_core::subscription orders them) ends there; the new one runs until its
        -- end, or for a cycle of the new plan when it ended at due_at (or none counted).
        -- A paused user's change waits for the resume, which moves it with the end date.
        WITH due AS (
            SELECT c.user_id, c.id, c.plan_id, c.due_at
              FROM quota.scheduled_changes c
             WHERE (one IS NULL OR c.user_id = one)
               AND c.state = 'pending' AND c.due_at <= tick_user.at
               AND NOT EXISTS (SELECT FROM quota.user_subscriptions p
                                WHERE p.user_id = c.user_id AND p.status = 'paused')
             ORDER BY c.due_at, c.user_id
             LIMIT lim
               FOR UPDATE OF c
        ), prior AS (
            SELECT DISTINCT ON (d.user_id) d.user_id, s.id, s.plan_id, s.end_date, s.trial
              FROM due d
              JOIN quota.user_subscriptions s
                ON s.user_id = d.user_id AND s.status = 'active'
               AND s.start_date < d.due_at AND s.end_date >= d.due_at
             WHERE (one IS NULL OR s.user_id = one)
             ORDER BY d.user_id, s.end_date DESC, s.id DESC
        ), ended AS (
            UPDATE quota.user_subscriptions s SET status = 'expired', end_date = d.due_at
              FROM prior p, due d
             WHERE (one IS NULL OR s.user_id = one)
               AND s.user_id = p.user_id AND s.id = p.id AND d.user_id = p.user_id
            RETURNING s.user_id
        ), next AS (
            SELECT d.user_id, d.plan_id, d.due_at,
                   CASE WHEN p.end_date > d.due_at THEN p.end_date
                        ELSE quota.cycle_end(np.duration_days, np.billing_cycle, zone,
                                             d.due_at, d.due_at) END AS end_date
              FROM due d
              JOIN quota.subscription_plans np ON np.id = d.plan_id
              LEFT JOIN prior p ON p.user_id = d.user_id
        ), started AS (
            INSERT INTO quota.user_subscriptions AS s (user_id, plan_id, start_date, end_date)
            SELECT n.user_id, n.plan_id, n.due_at, n.end_date FROM next n
            RETURNING s.user_id, s.id, s.plan_id, s.start_date
        ), applied AS (
            UPDATE quota.scheduled_changes c
               SET state = 'applied', ended_at = now(), subscription_id = st.id
              FROM due d, started st
             WHERE (one IS NULL OR c.user_id = one)
               AND c.user_id = d.user_id AND c.id = d.id AND st.user_id = d.user_id
            RETURNING c.id
        ), audit AS (
            INSERT INTO quota.subscription_changes AS c
                   (user_id, subscription_id, change, plan_id, effective_at, details, actor)
            SELECT x.user_id, x.subscription_id, x.change, x.plan_id, x.effective_at, x.details,
                   'quota.tick'
              FROM (SELECT p.user_id, p.id AS subscription_id, 'trial_ended' AS change,
                           p.plan_id, d.due_at AS effective_at,
                           jsonb_build_object('next_plan_id', d.plan_id) AS details, 0 AS step
                      FROM prior p JOIN due d ON d.user_id = p.user_id
                     WHERE p.trial
                    UNION ALL
                    SELECT st.user_id, st.id, 'plan_changed', st.plan_id, st.start_date,
                           jsonb_build_object('previous_plan_id', p.plan_id,
                                              'previous_subscription_id', p.id,
                                              'scheduled_change_id', d.id), 1
                      FROM started st JOIN due d ON d.user_id = st.user_id
                      LEFT JOIN prior p ON p.user_id = st.user_id
                     ORDER BY 1, 7) x
            -- As the table's row type: on a Citus worker the statement writes a shard, whose
            -- row type is its own.
            RETURNING ROW(c.*)::quota.subscription_changes AS entry
        ), announced AS (
            SELECT quota.subscription_event(o.entry) IS NULL AS pulled
              FROM (SELECT a.entry FROM audit a ORDER BY (a.entry).id) o
        )
        SELECT (SELECT count(*) FROM applied),
               (SELECT count(*) FROM prior WHERE prior.trial),
               (SELECT count(*) FROM announced)
          INTO plan_changes, trials_ended, n;
    END IF;

    IF own AND (every OR 'expiry' = ANY (steps)) THEN
        -- 2. Expiries, and the fallback. A user whose change is due by the end waits for step 1.
        WITH due AS (
            SELECT s.user_id, s.id
              FROM quota.user_subscriptions s
             WHERE (one IS NULL OR s.user_id = one)
               AND s.status = 'active' AND s.end_date <= tick_user.at
               AND NOT EXISTS (SELECT FROM quota.scheduled_changes c
                                WHERE c.user_id = s.user_id AND c.state = 'pending'
                                  AND c.due_at <= s.end_date)
             ORDER BY s.end_date, s.user_id, s.id
             LIMIT lim
               FOR UPDATE OF s
        ), ended AS (
            UPDATE quota.user_subscriptions s SET status = 'expired'
              FROM due d
             WHERE (one IS NULL OR s.user_id = one) AND s.user_id = d.user_id AND s.id = d.id
            RETURNING s.user_id, s.id, s.plan_id, s.end_date, s.trial
        ), latest AS (
            -- Per user, the one that ended last; the others ended while it counted.
            SELECT DISTINCT ON (e.user_id) e.user_id, e.id, e.end_date
              FROM ended e ORDER BY e.user_id, e.end_date DESC, e.id DESC
        ), covered AS (
            -- The users another subscription counts for at that end. (A join, not NOT EXISTS:
            -- Citus refuses a correlated subquery beside a CTE.)
            SELECT DISTINCT l.user_id
              FROM latest l
              JOIN quota.user_subscriptions o
                ON o.user_id = l.user_id AND o.status IN ('active', 'paused')
               AND o.start_date <= l.end_date AND o.end_date > l.end_date
             WHERE (one IS NULL OR o.user_id = one)
        ), next AS (
            SELECT l.user_id, l.end_date AS start_date,
                   quota.cycle_end(fp.duration_days, fp.billing_cycle, zone, l.end_date,
                                   tick_user.at) AS end_date
              FROM latest l
              JOIN quota.subscription_plans fp ON fp.id = fallback
               AND l.user_id NOT IN (SELECT c.user_id FROM covered c)
        ), started AS (
            INSERT INTO quota.user_subscriptions AS s (user_id, plan_id, start_date, end_date)
            SELECT n.user_id, fallback, n.start_date, n.end_date FROM next n
            RETURNING s.user_id, s.id, s.plan_id, s.start_date
        ), audit AS (
            INSERT INTO quota.subscription_changes AS c
                   (user_id, subscription_id, change, plan_id, effective_at, details, actor)
            SELECT x.user_id, x.subscription_id, x.change, x.plan_id, x.effective_at, x.details,
                   'quota.tick'
              FROM (SELECT e.user_id, e.id AS subscription_id,
                           CASE WHEN e.trial THEN 'trial_ended' ELSE 'expired' END AS change,
                           e.plan_id, e.end_date AS effective_at, '{}'::jsonb AS details,
                           0 AS step
                      FROM ended e
                    UNION ALL
                    SELECT st.user_id, st.id, 'fallback_started', st.plan_id, st.start_date,
                           jsonb_build_object('previous_subscription_id', l.id), 1
                      FROM started st JOIN latest l ON l.user_id = st.user_id
                     ORDER BY 5, 1, 7, 2) x
            RETURNING ROW(c.*)::quota.subscription_changes AS entry
        ), announced AS (
            SELECT quota.subscription_event(o.entry) IS NULL AS pulled
              FROM (SELECT a.entry FROM audit a ORDER BY (a.entry).id) o
        )
        SELECT (SELECT count(*) FILTER (WHERE NOT e.trial) FROM ended e),
               (SELECT count(*) FILTER (WHERE e.trial) FROM ended e),
               (SELECT count(*) FROM started),
               (SELECT count(*) FROM announced)
          INTO expired, trials, fallbacks, n;
        trials_ended := trials_ended + trials;
    END IF;

    IF own AND (every OR 'hold' = ANY (steps)) THEN
        -- 3. Holds past their expiry. Their counters are locked first, in the order a use
        -- locks them, so that no use is between reading held and its hold's state; then the
        -- holds end and their counters give their units back.
        PERFORM FROM quota.user_usage u
         WHERE (one IS NULL OR u.user_id = one)
           AND (u.user_id, u.feature_code, u.period_start) IN (
                   SELECT r.user_id, r.feature_code, r.period_start
                     FROM quota.reservations r
                    WHERE (one IS NULL OR r.user_id = one)
                      AND r.state = 'held' AND r.expires_at <= tick_user.at
                    ORDER BY r.expires_at, r.user_id, r.id LIMIT lim)
         ORDER BY u.user_id, u.feature_code, u.period_start
           FOR UPDATE OF u;
        WITH due AS (
            SELECT r.user_id, r.id
              FROM quota.reservations r
             WHERE (one IS NULL OR r.user_id = one)
               AND r.state = 'held' AND r.expires_at <= tick_user.at
             ORDER BY r.expires_at, r.user_id, r.id
             LIMIT lim
               FOR UPDATE OF r
        ), ended AS (
            UPDATE quota.reservations r SET state = 'expired', ended_at = r.expires_at
              FROM due d
             WHERE (one IS NULL OR r.user_id = one)
               AND r.user_id = d.user_id AND r.id = d.id AND r.state = 'held'
            RETURNING r
        ), given_back AS (
            UPDATE quota.user_usage u SET held = u.held - e.amount
              FROM (SELECT (e.r).user_id, (e.r).feature_code, (e.r).period_start,
                           sum((e.r).amount) AS amount
                      FROM ended e GROUP BY 1, 2, 3) e
             WHERE (one IS NULL OR u.user_id = one)
               AND u.user_id = e.user_id AND u.feature_code = e.feature_code
               AND u.period_start = e.period_start
            RETURNING u.user_id
        ), sent AS (
            -- The payload of the hold's other events (src/reservations.rs): keys in
            -- serde_json's order, expires_at as PostgreSQL prints it.
            SELECT quota.announce('quota_reservation', format(
                       '{"amount":%s,"event":"expired","expires_at":%s,"feature_code":%s,"reservation_id":%s,"user_id":%s,"version":1}',
                       e.amount, to_json(e.expires_at::text), to_json(e.feature_code), e.id,
                       e.user_id)) IS NULL AS pulled
              FROM (SELECT (x.r).* FROM ended x ORDER BY (x.r).expires_at, (x.r).user_id, (x.r).id) e
        )
        SELECT count(*) INTO reservations_expired FROM sent;
    END IF;

    -- 4. Grants: the warning ahead of the expiry, then the expiry. A grant voided, or spent
    -- to its last unit, loses nothing: no warning.
    IF every OR 'warning' = ANY (steps) THEN
        -- due is materialized: on a Citus worker, an INSERT from a statement on the distributed
        -- table would not be known to stay on the user's shard, and the delegated call is refused.
        WITH due AS MATERIALIZED (
            SELECT g.user_id, g.id FROM quota.grants g
             WHERE (one IS NULL OR g.user_id = one)
               AND g.expires_at > tick_user.at AND g.expires_at <= tick_user.at + warn
               AND g.voided_at IS NULL AND g.remaining > 0
               AND NOT EXISTS (SELECT FROM quota.grant_notices x
                                WHERE x.user_id = g.user_id AND x.grant_id = g.id
                                  AND x.notice = 'expiring')
             ORDER BY g.expires_at, g.user_id, g.id
             LIMIT lim
        ), noted AS (
            INSERT INTO quota.grant_notices AS x (user_id, grant_id, notice, sent_at)
            SELECT d.user_id, d.id, 'expiring', tick_user.at FROM due d
            ON CONFLICT DO NOTHING
            RETURNING x.user_id, x.grant_id
        ), sent AS (
            SELECT quota.grant_event('expiring', o.g) IS NULL AS pulled
              FROM (SELECT ROW(g.*)::quota.grants AS g FROM quota.grants g
                      JOIN noted ON noted.user_id = g.user_id AND noted.grant_id = g.id
                     WHERE (one IS NULL OR g.user_id = one)
                     ORDER BY g.expires_at, g.user_id, g.id) o
        )
        SELECT count(*) INTO grants_warned FROM sent;
    END IF;
    -- Every grant expires once, at expires_at, which lies after its creation: the grants
    -- past since's position and up to upto's are the ones of this batch.
    IF every OR 'grant_expiry' = ANY (steps) THEN
        WITH sent AS (
            SELECT quota.grant_event('expired', g) IS NULL AS pulled
              FROM quota.tick_expired_grants(tick_user.at, since, upto, one, NULL) g
        )
        SELECT count(*) INTO grants_expired FROM sent;
    END IF;

    IF own AND (every OR 'rollover' = ANY (steps)) THEN
        -- 5. Rollover grants: a counter whose period ended, of a feature with a rollover rule,
        -- may leave a grant to the period after it. Each is created as the period's first
        -- write would create it (quota.create_due_rollover); the reads count it from the
        -- period's first instant before it exists. A period without a counter (nothing used)
        -- gets its grant at its first write.
        SELECT jsonb_agg(jsonb_build_object('user_id', x.user_id, 'feature_code', x.feature_code)
                         ORDER BY x.period_end, x.user_id, x.feature_code)
          INTO ended_periods
          FROM quota.tick_ended_periods(tick_user.at, since, upto, one, NULL) x;
        IF ended_periods IS NOT NULL THEN
            SELECT count(*) INTO rollovers
              FROM jsonb_to_recordset(ended_periods) AS c (user_id bigint, feature_code text)
              JOIN quota.grants g ON g.user_id = c.user_id AND g.feature_code = c.feature_code
             WHERE (one IS NULL OR g.user_id = one) AND g.source = 'rollover';
            PERFORM quota.create_due_rollover(c.user_id, c.feature_code)
               FROM jsonb_to_recordset(ended_periods) AS c (user_id bigint, feature_code text);
            SELECT count(*) - rollovers INTO rollovers
              FROM jsonb_to_recordset(ended_periods) AS c (user_id bigint, feature_code text)
              JOIN quota.grants g ON g.user_id = c.user_id AND g.feature_code = c.feature_code
             WHERE (one IS NULL OR g.user_id = one) AND g.source = 'rollover';
        END IF;
    END IF;

    IF own AND (every OR 'storage' = ANY (steps)) THEN
        -- 6. The users whose storage quota the clock alone moved get it written; the changes
        -- of steps 1 and 2 are resynced by the subscription triggers as they are written.
        SELECT array_agg(x.user_id) INTO users
          FROM quota.tick_storage_instants(tick_user.at, since, upto, one, NULL) x;
        IF users IS NOT NULL THEN
            EXECUTE format(
                'WITH affected AS (SELECT DISTINCT u AS user_id FROM pg_catalog.unnest($1) u
                 ), announce AS (SELECT NULL::text AS payload WHERE false)%s',
                quota.resync_storage_sql('quota.user_storage_usage', 'true',
                                         CASE WHEN one IS NOT NULL THEN '$2' END))
              INTO n, storage_resynced USING users, one;
        END IF;
    END IF;
    RETURN ARRAY[plan_changes, expired, trials_ended, fallbacks, reservations_expired,
                 grants_warned, grants_expired, rollovers, storage_resynced];
END
$$;

-- One maintenance step: applies what became due up to `at` (now(), the default; never later,
-- since the reads would not agree yet), at most batch_size rows of each kind (NULL:
-- quota.settings.tick_batch_size), and returns what it did. One runner at a time: a call made
-- while another runs returns at once with ran = false. Idempotent: what it applied is marked
-- (a status, a state, a notice, how far it got), so a second call finds nothing; more = true
-- says that rows due remain for the next call. In order (quota.tick_user()):
--   1. scheduled plan changes due (before the expiries, so that a subscription ending into one
--      gets no fallback);
--   2. active subscriptions whose end_date passed: 'expired' (a trial: event trial_ended), and
--      when quota.settings.fallback_plan_code names a plan and no other subscription counts
--      at that end, a subscription to it from that instant (usage, gauges and grants belong
--      to the user and stay);
--   3. holds past expires_at: 'expired', their units given back to their counter;
--   4. grants: the 'expiring' warning grant_warning_days before expires_at (once per grant,
--      quota.grant_notices), and 'expired' once at expires_at;
--   5. rollover grants due from the periods that ended (for the users who used the feature in
--      them: the others' at their next write; every read counts them before);
--   6. storage_quota_bytes of the users whose storage quota the clock alone moved (a
--      pre-created subscription that started, a storage grant that started or expired); the
--      changes of steps 1 and 2 are resynced by the subscription triggers as they are written.
-- On a Citus cluster (quota.distribute()) the steps run user by user, each on the user's
-- worker: the users with rows due, at most batch_size per kind, and those of the batch of
-- the steps that go by instant.
CREATE FUNCTION quota.tick(at timestamptz DEFAULT now(), batch_size integer DEFAULT NULL)
RETURNS TABLE (ran boolean, plan_changes integer, expired integer, trials_ended integer,
               fallbacks integer, reservations_expired integer, grants_warned integer,
               grants_expired integer, rollovers integer, storage_resynced integer,
               more boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    lim integer;
    own boolean := (SELECT st.attached_schema FROM quota.settings st) IS NULL;
    fallback_code text := (SELECT st.fallback_plan_code FROM quota.settings st);
    fallback bigint;
    warn interval := make_interval(days => coalesce((SELECT st.grant_warning_days FROM quota.settings st), 3));
    progress quota.tick_state;
    upto quota.tick_state;
    -- Each user's counts, and their sum.
    counts integer[];
    total integer[] := array_fill(0, ARRAY[9]);
    -- The users of the batch of each step that goes by instant, and on a Citus cluster each
    -- due user with its steps.
    expiring_users bigint[];
    rolling_users bigint[];
    storage_users bigint[];
    due jsonb;
    item jsonb;
    grants_batch integer;
    candidates integer := 0;
    instants integer := 0;
BEGIN
    IF tick.at IS NULL THEN
        RAISE EXCEPTION 'tick: at must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF tick.at > now() THEN
        RAISE EXCEPTION 'tick: % is later than now (%)', tick.at, now()
            USING ERRCODE = '22023',
                  HINT = 'A tick applies what is due up to an instant that has come: the reads would not agree yet.';
    END IF;
    lim := coalesce(tick.batch_size, (SELECT st.tick_batch_size FROM quota.settings st), 1000);
    IF lim < 1 THEN
        RAISE EXCEPTION 'tick: batch_size % is below 1', lim USING ERRCODE = '22023';
    END IF;
    ran := false; plan_changes := 0; expired := 0; trials_ended := 0; fallbacks := 0;
    reservations_expired := 0; grants_warned := 0; grants_expired := 0; rollovers := 0;
    storage_resynced := 0;
    more := false;
    -- One runner at a time, until its transaction ends; the other does not wait.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('pg_entitlements tick', 0)) THEN
        RETURN NEXT;
        RETURN;
    END IF;
    ran := true;
    IF fallback_code IS NOT NULL THEN
        SELECT p.id INTO fallback FROM quota.subscription_plans p
         WHERE p.plan_code = fallback_code AND p.plan_kind = 'base';
        IF fallback IS NULL THEN
            RAISE EXCEPTION 'tick: quota.settings.fallback_plan_code "%" names no base plan', fallback_code
                USING ERRCODE = '23503',
                      HINT = 'Set it to the plan_code of a plan of kind ''base'', or to NULL for no fallback.';
        END IF;
    END IF;
    INSERT INTO quota.tick_state DEFAULT VALUES ON CONFLICT (singleton) DO NOTHING;
    SELECT * INTO progress FROM quota.tick_state FOR UPDATE;

    -- The batch of the steps that go by instant: up to lim rows of each past the progress. A
    -- batch that is not full takes every row up to at: the next starts after at.
    upto := progress;
    upto.grants_expired_to := tick.at;
    upto.grants_expired_id := 9223372036854775807;
    upto.rollover_checked_to := tick.at;
    upto.rollover_checked_user := 9223372036854775807;
    upto.rollover_checked_feature := '';
    upto.storage_synced_to := tick.at;
    upto.storage_synced_user := 9223372036854775807;
    SELECT count(*), array_agg(DISTINCT g.user_id),
           CASE WHEN count(*) < lim THEN upto.grants_expired_to ELSE max(g.expires_at) END,
           CASE WHEN count(*) < lim THEN upto.grants_expired_id
                ELSE (array_agg(g.id ORDER BY g.expires_at DESC, g.id DESC))[1] END
      INTO grants_batch, expiring_users, upto.grants_expired_to, upto.grants_expired_id
      FROM quota.tick_expired_grants(tick.at, progress, upto, NULL, lim) g;
    IF own THEN
        SELECT count(*), array_agg(DISTINCT x.user_id),
               CASE WHEN count(*) < lim THEN upto.rollover_checked_to
                    ELSE (array_agg(x.period_end ORDER BY x.period_end DESC, x.user_id DESC, x.feature_code DESC))[1] END,
               CASE WHEN count(*) < lim THEN upto.rollover_checked_user
                    ELSE (array_agg(x.user_id ORDER BY x.period_end DESC, x.user_id DESC, x.feature_code DESC))[1] END,
               CASE WHEN count(*) < lim THEN upto.rollover_checked_feature
                    ELSE (array_agg(x.feature_code ORDER BY x.period_end DESC, x.user_id DESC, x.feature_code DESC))[1] END
          INTO candidates, rolling_users, upto.rollover_checked_to, upto.rollover_checked_user,
               upto.rollover_checked_feature
          FROM quota.tick_ended_periods(tick.at, progress, upto, NULL, lim) x;
        SELECT count(*), array_agg(DISTINCT x.user_id),
               CASE WHEN count(*) < lim THEN upto.storage_synced_to ELSE max(x.t) END,
               CASE WHEN count(*) < lim THEN upto.storage_synced_user
                    ELSE (array_agg(x.user_id ORDER BY x.t DESC, x.user_id DESC))[1] END
          INTO instants, storage_users, upto.storage_synced_to, upto.storage_synced_user
          FROM quota.tick_storage_instants(tick.at, progress, upto, NULL, lim) x;
    END IF;

    IF quota.distributed()
       OR coalesce(current_setting('pg_entitlements.tick_by_user', true), 'off')::boolean THEN
        -- Each user's steps in turn; on a Citus cluster on the user's worker.
        SELECT jsonb_agg(jsonb_build_object('user_id', x.user_id, 'steps', x.steps) ORDER BY x.user_id)
          INTO due
          FROM (SELECT y.user_id, array_agg(DISTINCT y.step) AS steps
                  FROM (SELECT d.user_id, d.step FROM quota.tick_due_users(tick.at, lim, warn, own) d
                        UNION ALL
                        SELECT g, 'grant_expiry' FROM unnest(expiring_users) g
                        UNION ALL
                        SELECT r, 'rollover' FROM unnest(rolling_users) r
                        UNION ALL
                        SELECT s, 'storage' FROM unnest(storage_users) s) y
                 GROUP BY y.user_id) x;
        FOR item IN SELECT * FROM jsonb_array_elements(coalesce(due, '[]')) LOOP
            -- Delegated (so that the user's events are raised on the worker, as the user's
            -- other events are) only when called in FROM with constant arguments.
            EXECUTE format('SELECT c FROM quota.tick_user(%s, %L, %s, %L, %L, %L::quota.tick_state, %L::quota.tick_state, %L::text[]) c',
                           item ->> 'user_id', tick.at, lim, fallback, warn, progress, upto,
                           ARRAY(SELECT jsonb_array_elements_text(item -> 'steps')))
               INTO counts;
            total := ARRAY(SELECT a + b FROM unnest(total, counts) AS z (a, b));
        END LOOP;
    ELSE
        total := quota.tick_user(NULL, tick.at, lim, fallback, warn, progress, upto, NULL);
    END IF;
    plan_changes := total[1]; expired := total[2]; trials_ended := total[3];
    fallbacks := total[4]; reservations_expired := total[5]; grants_warned := total[6];
    grants_expired := total[7]; rollovers := total[8]; storage_resynced := total[9];

    UPDATE quota.tick_state t
       SET grants_expired_to = upto.grants_expired_to, grants_expired_id = upto.grants_expired_id
     WHERE (upto.grants_expired_to, upto.grants_expired_id)
           > (t.grants_expired_to, t.grants_expired_id);
    UPDATE quota.tick_state t
       SET rollover_checked_to = upto.rollover_checked_to,
           rollover_checked_user = upto.rollover_checked_user,
           rollover_checked_feature = upto.rollover_checked_feature
     WHERE own
       AND (upto.rollover_checked_to, upto.rollover_checked_user, upto.rollover_checked_feature)
           > (t.rollover_checked_to, t.rollover_checked_user, t.rollover_checked_feature);
    UPDATE quota.tick_state t
       SET storage_synced_to = upto.storage_synced_to, storage_synced_user = upto.storage_synced_user
     WHERE own
       AND (upto.storage_synced_to, upto.storage_synced_user)
           > (t.storage_synced_to, t.storage_synced_user);
    UPDATE quota.tick_state t SET ticked_at = tick.at;
    more := grants_batch >= lim OR candidates >= lim OR instants >= lim
         OR EXISTS (SELECT FROM quota.tick_due_users(tick.at, 1, warn, own));
    RETURN NEXT;
END
$$;

-- Privileges (the roles of sql/privileges.sql). The tick and the lifecycle changes are admin
-- work: quota_admin, and the role a scheduler runs the tick as (pg_cron: the job's owner).
REVOKE EXECUTE ON FUNCTION
    quota.tick(timestamptz, integer),
    quota.tick_user(bigint, timestamptz, integer, bigint, interval, quota.tick_state, quota.tick_state, text[]),
    quota.tick_due_users(timestamptz, integer, interval, boolean),
    quota.tick_expired_grants(timestamptz, quota.tick_state, quota.tick_state, bigint, integer),
    quota.tick_ended_periods(timestamptz, quota.tick_state, quota.tick_state, bigint, integer),
    quota.tick_storage_instants(timestamptz, quota.tick_state, quota.tick_state, bigint, integer),
    quota.create_due_rollover(bigint, text),
    quota.pause_subscription(bigint, text, text),
    quota.resume_subscription(bigint, boolean, text),
    quota.schedule_plan_change(bigint, text, timestamptz, text),
    quota.cancel_scheduled_change(bigint, text),
    quota.cycle_end(integer, text, text, timestamptz, timestamptz),
    quota.require_own_subscriptions(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    quota.tick(timestamptz, integer),
    quota.pause_subscription(bigint, text, text),
    quota.resume_subscription(bigint, boolean, text),
    quota.schedule_plan_change(bigint, text, timestamptz, text),
    quota.cancel_scheduled_change(bigint, text)
TO quota_admin;
-- Written by the functions above only. An app server shows a pending change or a pause.
GRANT SELECT ON quota.scheduled_changes, quota.subscription_changes TO quota_app;
GRANT SELECT ON quota.scheduled_changes, quota.subscription_changes, quota.grant_notices,
                quota.tick_state
   TO quota_reader, quota_admin;
GRANT INSERT (fallback_plan_code, grant_warning_days, tick_batch_size),
      UPDATE (fallback_plan_code, grant_warning_days, tick_batch_size)
   ON quota.settings TO quota_admin;
