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

-- The extension's two triggers on a user_subscriptions table: the extension's own (below) and,
-- through quota.attach(schema), an application's. One definition, so both fire alike.
--   pg_entitlements_validate_custom_quotas: malformed custom_quotas never reach a reader,
--     rejected at write time with the user, feature and value named.
--   pg_entitlements_sync_storage_quota: user_storage_usage.storage_quota_bytes follows every
--     change that can move the storage quota, creating the row when it is missing; every change
--     of a limit is announced with pg_notify; a change that moves the current billing period
--     (a renewal with another anchor, a plan of another cycle) carries the usage counted so far
--     into it (src/continuity.rs).
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
