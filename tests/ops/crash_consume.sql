-- pgbench script of scripts/ops/crash.sh: one keyed consume; every 7th allowed one is refunded
-- by its key in a second transaction. Keys are unique: run, client and a per-client counter
-- (:k, started at 0 with pgbench -D k=0; pgbench keeps a client's variables between
-- transactions).
\set uid random(1, 40)
\set amt random(1, 3)
\set k :k + 1
SELECT allowed::int AS allowed FROM quota.consume(:uid, 'articles_per_month', :amt, 'c-' || :run || '-' || :client_id || '-' || :k) \gset
\if :allowed = 1 and :k % 7 = 0
SELECT refunded_amount FROM quota.refund_usage(:uid, 'c-' || :run || '-' || :client_id || '-' || :k);
\endif
