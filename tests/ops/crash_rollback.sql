-- pgbench script of scripts/ops/crash.sh: uses that are rolled back. Their keys ('x-...') must
-- never be found, before or after the crash.
\set uid random(1, 40)
\set k :k + 1
BEGIN;
SELECT * FROM quota.consume(:uid, 'articles_per_month', 1, 'x-' || :run || '-' || :client_id || '-' || :k || '-c');
SELECT quota.record_feature_usage(:uid, 'publish_per_month', NULL, NULL, 1, NULL, 'x-' || :run || '-' || :client_id || '-' || :k || '-r');
ROLLBACK;
