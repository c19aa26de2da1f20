-- One request of the application during the migration (scripts/ops/migration.sh): the seed's
-- own calls, by their unqualified names, in one transaction: check, record, the storage
-- update. Before the switch they reach the seed's functions; after it, the extension's.
\set uid random(1, 3)
BEGIN;
SET LOCAL search_path = public, quota;
SELECT has_quota, current_usage FROM check_user_quota(:uid, 'articles_per_month');
SELECT record_feature_usage(:uid, 'articles_per_month', 'article', 1, 1, NULL);
INSERT INTO public.migration_sent (user_id) VALUES (:uid);
UPDATE public.user_storage_usage SET article_storage_bytes = article_storage_bytes + 1
 WHERE user_id = :uid;
COMMIT;
