-- pgbench script of scripts/ops/crash.sh: a consume and a record in one transaction. After the
-- crash, a committed consume key ('m-...-c') implies its record key ('m-...-r'): never half a
-- transaction.
\set uid random(1, 40)
\set amt random(1, 3)
\set k :k + 1
BEGIN;
SELECT * FROM quota.consume(:uid, 'keyword_distillation', :amt, 'm-' || :run || '-' || :client_id || '-' || :k || '-c');
SELECT quota.record_feature_usage(:uid, 'publish_per_month', 'article', :k, :amt, '{"load": "mixed"}', 'm-' || :run || '-' || :client_id || '-' || :k || '-r');
COMMIT;
