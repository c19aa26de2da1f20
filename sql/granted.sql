-- Whether any user was ever granted a feature (quota.features.granted): a check of a feature
-- nobody was granted reads no grant, so the feature's checks cost what they cost before grants
-- existed. Set by the first grant of the feature and never cleared, by any role: a feature
-- marked as never granted while it has grants would hide them.
ALTER TABLE quota.features ADD COLUMN granted boolean NOT NULL DEFAULT false;

CREATE FUNCTION quota.mark_granted_features()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- On a Citus cluster the trigger fires on a shard of the grants, from where the catalog (a
    -- reference table) cannot be written; quota.distribute() marks every feature instead.
    IF TG_RELID <> 'quota.grants'::regclass THEN
        RETURN NULL;
    END IF;
    UPDATE quota.features f SET granted = true
     WHERE NOT f.granted AND f.code IN (SELECT n.feature_code FROM new_grants n);
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION quota.mark_granted_features() FROM PUBLIC;
CREATE TRIGGER pg_entitlements_mark_granted
    AFTER INSERT ON quota.grants REFERENCING NEW TABLE AS new_grants
    FOR EACH STATEMENT EXECUTE FUNCTION quota.mark_granted_features();

CREATE FUNCTION quota.keep_granted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.granted := OLD.granted OR NEW.granted;
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION quota.keep_granted() FROM PUBLIC;
CREATE TRIGGER keep_granted BEFORE UPDATE OF granted ON quota.features
    FOR EACH ROW EXECUTE FUNCTION quota.keep_granted();
