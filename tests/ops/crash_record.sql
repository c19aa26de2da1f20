-- pgbench script of scripts/ops/crash.sh: one keyed record_feature_usage (not enforced).
\set uid random(1, 40)
\set amt random(1, 3)
\set k :k + 1
SELECT quota.record_feature_usage(:uid, 'publish_per_month', 'article', :k, :amt, '{"load": "record"}', 'r-' || :run || '-' || :client_id || '-' || :k);
