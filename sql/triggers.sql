-- Triggers the extension attaches to its own quota.user_subscriptions, and the checks that
-- need the extension's functions.

-- Only zone names the period arithmetic knows (a name from pg_timezone_names, not an
-- abbreviation such as 'PST' or a POSIX string such as 'UTC+8').
ALTER TABLE quota.settings ADD CONSTRAINT settings_time_zone_known
    CHECK (quota.is_valid_time_zone(time_zone));

-- Malformed custom_quotas never reach a reader: rejected at write time with the user, feature
-- and value named.
CREATE TRIGGER validate_custom_quotas
    BEFORE INSERT OR UPDATE OF custom_quotas ON quota.user_subscriptions
    FOR EACH ROW EXECUTE FUNCTION quota.validate_custom_quotas();

-- user_storage_usage.storage_quota_bytes follows every change that can move the storage quota,
-- creating the row when it is missing; every change of a limit is announced with pg_notify.
CREATE TRIGGER sync_storage_quota
    AFTER INSERT OR DELETE OR UPDATE OF custom_quotas, plan_id, status, start_date, end_date, user_id
    ON quota.user_subscriptions
    FOR EACH ROW EXECUTE FUNCTION quota.sync_storage_quota();
