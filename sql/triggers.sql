-- Triggers the extension attaches to its own quota.user_subscriptions, and the checks that
-- need the extension's functions.

-- Only zone names the period arithmetic knows (a name from pg_timezone_names, not an
-- abbreviation such as 'PST' or a POSIX string such as 'UTC+8').
ALTER TABLE quota.settings ADD CONSTRAINT settings_time_zone_known
    CHECK (quota.is_valid_time_zone(time_zone));
ALTER TABLE quota.settings ADD CONSTRAINT settings_previous_time_zone_known
    CHECK (quota.is_valid_time_zone(previous_time_zone));
ALTER TABLE quota.settings ADD CONSTRAINT settings_attached_time_zone_known
    CHECK (quota.is_valid_time_zone(attached_time_zone));

-- A use (consume, record_feature_usage) locks the counter of its (user, feature, period) until
-- its transaction ends and nothing else (src/store.rs, use_sql). A change of a subscription that
-- can move a feature's limit or period first locks that user's counters of the feature in their
-- current periods, in feature order: it waits for the open uses of those features, and a use
-- of them that comes while it is open waits for it at the counter and then reads what it
-- committed. A change of custom_quotas alone moves the features whose key it changes (a
-- document that is not an object, every feature); any other change (plan, status, dates,
-- anchor, cycle, owner, a DELETE) every feature, of the old owner and the new one. A change of
-- none of them locks nothing, and a counter that does not exist yet is not created: a first
-- use that creates it meanwhile counts under what is committed when it counts. Row locks only,
-- in the counters: nothing in the shared lock table, however many rows a statement changes.
-- SECURITY DEFINER, so that the role that changes a subscription needs no privilege on the
-- counters; the counters are those of the table's own schema (an attached application's).
CREATE FUNCTION quota.wait_for_uses()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- The features whose counters to lock; NULL: every feature.
    features text[];
    users bigint[] := ARRAY[OLD.user_id];
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (OLD.plan_id, OLD.status, OLD.start_date, OLD.end_date, OLD.quota_reset_anchor,
            OLD.quota_cycle_type, OLD.user_id)
           IS NOT DISTINCT FROM
           (NEW.plan_id, NEW.status, NEW.start_date, NEW.end_date, NEW.quota_reset_anchor,
            NEW.quota_cycle_type, NEW.user_id) THEN
            IF OLD.custom_quotas IS NOT DISTINCT FROM NEW.custom_quotas THEN
                RETURN NEW;
            END IF;
            IF coalesce(jsonb_typeof(OLD.custom_quotas), 'object') = 'object'
               AND coalesce(jsonb_typeof(NEW.custom_quotas), 'object') = 'object' THEN
                SELECT coalesce(array_agg(key), '{}') INTO features
                  FROM jsonb_each(coalesce(OLD.custom_quotas, '{}')) o
                  FULL JOIN jsonb_each(coalesce(NEW.custom_quotas, '{}')) n USING (key)
                 WHERE o.value IS DISTINCT FROM n.value;
            END IF;
        ELSIF NEW.user_id IS DISTINCT FROM OLD.user_id THEN
            users := users || NEW.user_id::bigint;
        END IF;
    END IF;
    IF features IS NULL THEN
        -- A change that can move the period: the current period's counters must exist to be
        -- locked, or a first use of the period in flight would count under the period before
        -- the change, where the usage the change carries over would not find it.
        PERFORM quota.hold_current_periods(u) FROM unnest(users) AS u;
    END IF;
    IF TG_TABLE_SCHEMA = 'quota' THEN
        PERFORM FROM quota.user_usage u
         WHERE u.user_id = ANY (users) AND (features IS NULL OR u.feature_code = ANY (features))
           AND u.period_end > now()
         ORDER BY u.user_id, u.feature_code, u.period_start FOR UPDATE OF u;
    ELSE
        -- An attached application's table: its own counters, by the same statement. Its
        -- period_end may be a local time without zone, which now() would be compared with in
        -- the session's zone: a day earlier takes in every current counter whatever the zone
        -- (a few ended ones too, which no use waits for).
        EXECUTE format(
            'SELECT FROM %I.user_usage u
              WHERE u.user_id = ANY ($1) AND ($2 IS NULL OR u.feature_code = ANY ($2))
                AND u.period_end > now() - interval ''1 day''
              ORDER BY u.user_id, u.feature_code, u.period_start FOR UPDATE OF u',
            TG_TABLE_SCHEMA)
        USING users, features;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

-- The extension's triggers on a user_subscriptions table: the extension's own (below) and,
-- through quota.attach(schema), an application's. One definition, so both fire alike.
--   pg_entitlements_validate_custom_quotas: malformed custom_quotas never reach a reader,
--     rejected at write time with the user, feature and value named.
--   pg_entitlements_sync_storage_quota: user_storage_usage.storage_quota_bytes follows every
--     change that can move the storage quota, creating the row when it is missing; every change
--     of a limit is announced with pg_notify; a change that moves the current billing period
--     (a renewal with another anchor, a plan of another cycle) carries the usage counted so far
--     into it (src/continuity.rs).
--   pg_entitlements_wait_for_uses: a change of what decides a limit or a period first locks the
--     counters of the features it can move (quota.wait_for_uses() below).
CREATE FUNCTION quota.install_triggers(subscriptions regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER pg_entitlements_validate_custom_quotas
                        BEFORE INSERT OR UPDATE OF custom_quotas ON %s
                        FOR EACH ROW EXECUTE FUNCTION quota.validate_custom_quotas()',
                   subscriptions);
    EXECUTE format('CREATE TRIGGER pg_entitlements_sync_storage_quota
                        AFTER INSERT OR DELETE OR UPDATE OF custom_quotas, plan_id, status,
                              start_date, end_date, user_id, quota_reset_anchor,
                              quota_cycle_type ON %s
                        FOR EACH ROW EXECUTE FUNCTION quota.sync_storage_quota()',
                   subscriptions);
    EXECUTE format('CREATE TRIGGER pg_entitlements_wait_for_uses
                        BEFORE DELETE OR UPDATE OF custom_quotas, plan_id, status, start_date,
                              end_date, quota_reset_anchor, quota_cycle_type, user_id ON %s
                        FOR EACH ROW EXECUTE FUNCTION quota.wait_for_uses()',
                   subscriptions);
END
$$;
REVOKE EXECUTE ON FUNCTION quota.install_triggers(regclass) FROM PUBLIC;

SELECT quota.install_triggers('quota.user_subscriptions');

-- Periods are computed in quota.settings.time_zone. A change of it applies from each period's
-- next boundary: the settings remember the zone before and when it changed (the period the
-- change falls in keeps the bounds it had), and a row inserted with a time of change (by a
-- restore) keeps it. The trigger after the change makes sure every user's current usage is
-- in the current period (src/continuity.rs): nothing moves unless a change still in force was
-- forgotten (a second change within one period, or a deleted row, which means UTC at once).
CREATE FUNCTION quota.settings_remember_zone() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- No row meant UTC. A row that says when its zone changed (a restored one) is kept.
        IF NEW.time_zone_changed_at = '-infinity' AND NEW.previous_time_zone <> NEW.time_zone THEN
            NEW.time_zone_changed_at := now();
        END IF;
    ELSIF NEW.time_zone IS DISTINCT FROM OLD.time_zone THEN
        NEW.previous_time_zone := OLD.time_zone;
        NEW.time_zone_changed_at := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER pg_entitlements_remember_zone
    BEFORE INSERT OR UPDATE OF time_zone ON quota.settings
    FOR EACH ROW EXECUTE FUNCTION quota.settings_remember_zone();
CREATE TRIGGER pg_entitlements_follow_time_zone
    AFTER INSERT OR DELETE OR UPDATE OF time_zone ON quota.settings
    FOR EACH ROW EXECUTE FUNCTION quota.follow_time_zone();
