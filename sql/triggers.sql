-- Triggers the extension attaches to its own quota.user_subscriptions, and the checks that
-- need the extension's functions.

-- Only zone names the period arithmetic knows (a name from pg_timezone_names, not an
-- abbreviation such as 'PST' or a POSIX string such as 'UTC+8').
ALTER TABLE quota.settings ADD CONSTRAINT settings_time_zone_known
    CHECK (quota.is_valid_time_zone(time_zone));

-- The extension's triggers on a user_subscriptions table: the extension's own (below) and,
-- through quota.attach(schema), an application's. One definition, so both fire alike.
--   pg_entitlements_validate_custom_quotas: malformed custom_quotas never reach a reader,
--     rejected at write time with the user, feature and value named.
--   pg_entitlements_sync_storage_quota: user_storage_usage.storage_quota_bytes follows every
--     change that can move the storage quota, creating the row when it is missing; every change
--     of a limit is announced with pg_notify.
--   pg_entitlements_wait_for_uses: a change of what decides a limit or a period locks the row
--     FOR UPDATE first, so it waits for the user's open uses (which hold it FOR KEY SHARE) and
--     later uses wait for it; an UPDATE that changes nothing of that takes no such lock.
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
                              start_date, end_date, user_id ON %s
                        FOR EACH ROW EXECUTE FUNCTION quota.sync_storage_quota()',
                   subscriptions);
    EXECUTE format('CREATE TRIGGER pg_entitlements_wait_for_uses
                        BEFORE UPDATE OF custom_quotas, plan_id, status, start_date, end_date,
                              quota_reset_anchor, quota_cycle_type, user_id ON %s
                        FOR EACH ROW
                        WHEN ((OLD.custom_quotas, OLD.plan_id, OLD.status, OLD.start_date,
                               OLD.end_date, OLD.quota_reset_anchor, OLD.quota_cycle_type,
                               OLD.user_id)
                              IS DISTINCT FROM
                              (NEW.custom_quotas, NEW.plan_id, NEW.status, NEW.start_date,
                               NEW.end_date, NEW.quota_reset_anchor, NEW.quota_cycle_type,
                               NEW.user_id))
                        EXECUTE FUNCTION quota.wait_for_uses()',
                   subscriptions);
END
$$;
REVOKE EXECUTE ON FUNCTION quota.install_triggers(regclass) FROM PUBLIC;

SELECT quota.install_triggers('quota.user_subscriptions');
