-- Triggers the extension attaches to its own quota.user_subscriptions.

-- Malformed custom_quotas never reach a reader: rejected at write time with the user, feature
-- and value named.
CREATE TRIGGER validate_custom_quotas
    BEFORE INSERT OR UPDATE OF custom_quotas ON quota.user_subscriptions
    FOR EACH ROW EXECUTE FUNCTION quota.validate_custom_quotas();

-- user_storage_usage.storage_quota_bytes follows every change that can move the storage quota,
-- creating the row when it is missing.
CREATE TRIGGER sync_storage_quota
    AFTER INSERT OR DELETE OR UPDATE OF custom_quotas, plan_id, status, start_date, end_date, user_id
    ON quota.user_subscriptions
    FOR EACH ROW EXECUTE FUNCTION quota.sync_storage_quota();
