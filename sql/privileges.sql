-- Roles and privileges. Nothing that writes is executable by PUBLIC.
--
--   quota_app     app servers: check, record, consume, refund, reserve, settle, release,
--                 release_usage;
--                 reads the quota tables
--   quota_admin   admin tools: adjust quotas, manage features, plans and subscriptions, and
--                 the time zone of quota.settings (not the binding: attach() only)
--   quota_reader  reporting: reads every table of schema quota
--
-- The writing functions are SECURITY DEFINER with search_path pinned to pg_catalog, pg_temp:
-- an app role calls them without any write privilege of its own, so it cannot change
-- custom_quotas, plans or counters directly. Grant a role to a login role to use it:
--   GRANT quota_app TO my_app_server;
-- Roles belong to the whole cluster: they are created once and left in place by DROP EXTENSION.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['quota_app', 'quota_admin', 'quota_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA quota TO quota_app, quota_admin, quota_reader;

REVOKE EXECUTE ON FUNCTION
    quota.record_feature_usage(bigint, text, text, bigint, integer, jsonb, text),
    quota.consume(bigint, text, integer, text, text, bigint, jsonb),
    quota.refund_usage(bigint),
    quota.refund_usage(bigint, text),
    quota.refund_usage(bigint, bigint),
    quota.adjust_quota(bigint, text, bigint, text, text),
    quota.clear_custom_quota(bigint, text, text, text)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    quota.record_feature_usage(bigint, text, text, bigint, integer, jsonb, text),
    quota.consume(bigint, text, integer, text, text, bigint, jsonb),
    quota.refund_usage(bigint),
    quota.refund_usage(bigint, text),
    quota.refund_usage(bigint, bigint)
TO quota_app;

REVOKE EXECUTE ON FUNCTION quota.carry_usage(bigint) FROM PUBLIC;
-- Internal to the trigger pg_entitlements_wait_for_uses, which runs as the extension's owner.
REVOKE EXECUTE ON FUNCTION quota.hold_current_periods(bigint) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    quota.adjust_quota(bigint, text, bigint, text, text),
    quota.clear_custom_quota(bigint, text, text, text),
    quota.carry_usage(bigint)
TO quota_admin;

-- Grants are written by these functions only, which keep their ledger: no role writes the
-- tables. An app server sells booster packs; admin tools also grant and void.
REVOKE EXECUTE ON FUNCTION
    quota.grant_quota(bigint, text, bigint, timestamptz, integer, text, text, text),
    quota.void_grant(bigint, text),
    quota.buy_booster(bigint, text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION quota.buy_booster(bigint, text, text) TO quota_app, quota_admin;
GRANT EXECUTE ON FUNCTION
    quota.grant_quota(bigint, text, bigint, timestamptz, integer, text, text, text),
    quota.void_grant(bigint, text)
TO quota_admin;
-- On a Citus cluster the catalog triggers raise their events through quota.announce, as the
-- role that changes the catalog: no more than pg_notify, which every role may call.
GRANT EXECUTE ON FUNCTION quota.announce(text, text) TO quota_admin;
-- quota.local_shards takes Citus' placement lock on a node's shards until the transaction ends,
-- which holds shard moves back: for the catalog triggers, which run as the role that changes the
-- catalog, only.
REVOKE EXECUTE ON FUNCTION quota.local_shards(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION quota.local_shards(text[]) TO quota_admin;

-- Running counts (kind gauge) count down through release_usage only.
REVOKE EXECUTE ON FUNCTION quota.release_usage(bigint, text, integer, text, text, bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION quota.release_usage(bigint, text, integer, text, text, bigint, jsonb) TO quota_app;

-- Holds are written by these functions only, which keep user_usage.held equal to them.
REVOKE EXECUTE ON FUNCTION
    quota.reserve(bigint, text, integer, interval, text),
    quota.settle(bigint, integer, text, bigint, jsonb),
    quota.release(bigint),
    quota.settle(bigint, bigint, integer, text, bigint, jsonb),
    quota.release(bigint, bigint)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    quota.reserve(bigint, text, integer, interval, text),
    quota.settle(bigint, integer, text, bigint, jsonb),
    quota.release(bigint),
    quota.settle(bigint, bigint, integer, text, bigint, jsonb),
    quota.release(bigint, bigint)
TO quota_app;

-- The read functions are SECURITY INVOKER (no definer switch on the hot path): their callers
-- read the tables with their own rights.
GRANT SELECT ON quota.settings, quota.features, quota.subscription_plans, quota.plan_features,
                quota.user_subscriptions, quota.user_usage, quota.user_storage_usage,
                quota.grants, quota.reservations, quota.overage_uses, quota.window_usage
   TO quota_app;
GRANT SELECT ON ALL TABLES IN SCHEMA quota TO quota_reader, quota_admin;

-- Admin tools manage the catalog, plans and subscriptions; the triggers on
-- user_subscriptions then keep user_storage_usage with the admin's rights.
GRANT INSERT, UPDATE, DELETE ON quota.features, quota.subscription_plans,
                                quota.plan_features, quota.user_subscriptions
   TO quota_admin;
-- Of the settings, the time zone only: attached_schema decides which tables the SECURITY
-- DEFINER writers write, so only quota.attach() and quota.detach() (superusers) change it, and
-- without DELETE the settings row cannot be removed with the binding in it.
GRANT INSERT (singleton, time_zone), UPDATE (time_zone) ON quota.settings TO quota_admin;
GRANT INSERT, UPDATE ON quota.user_storage_usage TO quota_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA quota TO quota_admin;
-- A feature rename by an admin tool rewrites the custom_quotas keys and audits each rewrite
-- (quota.features_changed runs with the renaming role's rights). session_role is not granted:
-- it keeps its default, the login role of the session, whatever else the row says.
GRANT INSERT (user_id, subscription_id, feature_code, old_value, new_value, reason, actor,
              created_at)
   ON quota.quota_adjustments TO quota_admin;
