-- Step 3 of the migration (README, "Adopting in an existing database"): the switch, in one
-- transaction. The tables are locked first, in the order the application's own statements lock
-- them, so that the switch waits for the requests in flight and holds new ones for the few
-- milliseconds it takes, instead of deadlocking with one of them.
BEGIN;
LOCK TABLE public.user_subscriptions, public.subscription_plans, public.plan_features,
           public.user_usage, public.usage_records, public.user_storage_usage
    IN ACCESS EXCLUSIVE MODE;
SELECT quota.attach('public', local_time_zone => 'Asia/Shanghai');
-- The seed's functions take (integer, varchar): a call with an integer and a string literal
-- would reach them before the extension's whatever the search_path. Renamed, not dropped, so
-- that going back is one rename.
ALTER FUNCTION public.check_user_quota(integer, varchar)
    RENAME TO check_user_quota_before_pg_entitlements;
ALTER FUNCTION public.record_feature_usage(integer, varchar, varchar, integer, integer, jsonb)
    RENAME TO record_feature_usage_before_pg_entitlements;
-- The extension's trigger keeps user_storage_usage from now on (it also creates missing rows).
DROP TRIGGER trigger_sync_storage_quota ON public.user_subscriptions;
COMMIT;
