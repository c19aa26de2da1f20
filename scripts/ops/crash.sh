#!/usr/bin/env bash
# Crash safety: concurrent consume / record_feature_usage / refund load from pgbench, every use
# with a unique idempotency key, and the postmaster killed with SIGKILL in the middle of it.
# After crash recovery:
#   * quota.verify_ledger() is empty (every counter equals the sum of its usage records),
#   * no idempotency key is counted twice, no key of a rolled-back transaction exists, no
#     transaction is half there (a consume and a record made in one transaction),
#   * counters of the consume-only features never exceed their limit,
#   * the B-tree indexes of schema quota agree with their tables (amcheck, heapallindexed),
#   * retrying every committed key (same user, feature, amount) counts nothing (a key whose use
#     was refunded is refused with 55000),
#   * a new load after the restart keeps all of the above.
# pgbench scripts and checks: tests/ops/crash_*.sql.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cluster.sh
source scripts/ops/common.sh

DIR=/tmp/pg_entitlements-ops-crash
PORT=55451
DB=crash_db
CLIENTS=8
# fsync on: what a crash may lose is decided by PostgreSQL, not by a setting of the test.
SETTINGS="timezone=UTC fsync=on max_connections=40"

suite_cluster "$DIR" "$PORT" $SETTINGS
echo "==> crash safety (cluster in $DIR, port $PORT)"
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" "$DB"
sql "$DIR" "$PORT" "$DB" -c 'CREATE EXTENSION pg_entitlements' -c 'CREATE EXTENSION amcheck'
sql "$DIR" "$PORT" "$DB" -f tests/ops/crash_setup.sql

# pgbench RUN [pgbench options...]: the load, keys prefixed with the run number.
load() {
  local run=$1; shift
  pgbench -n -h "$DIR" -p "$PORT" -U postgres -c "$CLIENTS" -j 2 -D k=0 -D run="$run" \
    -f tests/ops/crash_consume.sql@5 -f tests/ops/crash_record.sql@3 \
    -f tests/ops/crash_mixed.sql@2 -f tests/ops/crash_rollback.sql@1 "$@" "$DB"
}

# run_checks WHEN: tests/ops/crash_checks.sql and amcheck; fails on any violation.
run_checks() {
  local when=$1 line name value
  while IFS='|' read -r name value; do
    case $name in
      count*) [ "$value" -gt 0 ] || fail "$when: $name is $value, expected more than 0"
              ok "$when: $name: $value" ;;
      *)      [ "$value" = 0 ] || fail "$when: $name: $value violations"
              ok "$when: $name" ;;
    esac
  done < <(sql "$DIR" "$PORT" "$DB" -At -F '|' -f tests/ops/crash_checks.sql)
  sql "$DIR" "$PORT" "$DB" -At -c "
    SELECT bt_index_check(c.oid, true) FROM pg_class c JOIN pg_am a ON a.oid = c.relam
     WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind = 'i' AND a.amname = 'btree'" \
    >/dev/null 2>"$DIR/amcheck.log" || { cat "$DIR/amcheck.log"; fail "$when: amcheck found index corruption"; }
  ok "$when: amcheck: every B-tree index of schema quota matches its table"
}

check "load from $CLIENTS pgbench clients, then SIGKILL to the postmaster mid-load"
load 1 -T 300 >"$DIR/pgbench-1.log" 2>&1 &
PGBENCH=$!
# Wait until the load has committed a good number of uses (not a timing assertion: the kill
# only has to land while the clients are busy).
for _ in $(seq 1 600); do
  n=$(sql_value "$DIR" "$PORT" "$DB" "SELECT count(*) FROM quota.usage_records" 2>/dev/null || echo 0)
  [ "$n" -ge 3000 ] && break
  kill -0 "$PGBENCH" 2>/dev/null || { cat "$DIR/pgbench-1.log"; fail "pgbench stopped before the kill"; }
  sleep 0.2
done
[ "$n" -ge 3000 ] || fail "the load committed only $n uses in 2 minutes"
POSTMASTER=$(head -1 "$DIR/data/postmaster.pid")
CHILDREN=$(ps -o pid= --ppid "$POSTMASTER" | tr -d ' ' | tr '\n' ' ')
active=$(sql_value "$DIR" "$PORT" "$DB" \
  "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND state <> 'idle'")
kill -9 "$POSTMASTER"
echo "  killed postmaster $POSTMASTER with SIGKILL after $n committed uses ($active pgbench sessions busy)"
wait "$PGBENCH" && fail "pgbench finished normally: the postmaster was not killed mid-load" || true
# Backends notice the postmaster's death and exit; the shared memory is free when they are gone.
for pid in $CHILDREN; do
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
done

check "restart: crash recovery"
as_postgres "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" \
  -o "-p $PORT -k $DIR -c listen_addresses=localhost $(printf -- '-c %s ' $SETTINGS)" -w start >"$DIR/restart.log" 2>&1 \
  || { cat "$DIR/restart.log"; tail -30 "$DIR/server.log"; fail "the server did not restart after the crash"; }
grep -q 'database system was interrupted\|not properly shut down; automatic recovery in progress' \
  "$DIR/server.log" || fail "the server log shows no crash recovery"
grep -q 'redo done\|redo is not required' "$DIR/server.log" || fail "the server log shows no end of redo"
ok "the server ran crash recovery and accepts connections"

check "invariants after the crash"
run_checks "after the crash"

check "after the restart, retrying every committed key counts nothing"
state="SELECT (SELECT count(*) FROM quota.usage_records) || ' records, ' ||
              (SELECT sum(usage_count) FROM quota.user_usage) || ' counted, ' ||
              (SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM quota.user_usage t)"
before=$(sql_value "$DIR" "$PORT" "$DB" "$state")
retried=$(sql_value "$DIR" "$PORT" "$DB" "
  CREATE TEMP TABLE retried (key text, refunded boolean, allowed boolean, sqlstate text);
  DO \$\$
  DECLARE r record; allowed boolean; state text;
  BEGIN
      FOR r IN SELECT o.user_id, o.feature_code, o.amount, o.idempotency_key,
                      EXISTS (SELECT FROM quota.usage_records x WHERE x.refund_of = o.id) AS refunded
                 FROM quota.usage_records o
                WHERE o.idempotency_key IS NOT NULL ORDER BY o.user_id, o.id LOOP
          BEGIN
              IF r.idempotency_key LIKE 'r-%' OR r.idempotency_key LIKE 'm-%-r' THEN
                  PERFORM quota.record_feature_usage(r.user_id, r.feature_code, NULL, NULL, r.amount,
                                                     NULL, r.idempotency_key);
                  allowed := true;
              ELSE
                  SELECT c.allowed INTO allowed
                    FROM quota.consume(r.user_id, r.feature_code, r.amount, r.idempotency_key) c;
              END IF;
              state := NULL;
          EXCEPTION WHEN OTHERS THEN
              allowed := false; state := SQLSTATE;
          END;
          INSERT INTO retried VALUES (r.idempotency_key, r.refunded, allowed, state);
      END LOOP;
  END
  \$\$;
  SELECT count(*) || ' ' || count(*) FILTER (WHERE NOT refunded AND NOT allowed) || ' '
         || count(*) FILTER (WHERE refunded) || ' '
         || count(*) FILTER (WHERE refunded AND sqlstate IS DISTINCT FROM '55000')
    FROM retried;")
read -r calls refused refunded not_refused <<<"$retried"
after=$(sql_value "$DIR" "$PORT" "$DB" "$state")
[ "$refused" = 0 ] || fail "$refused of $calls retried keys whose use stands were refused instead of replayed"
[ "$not_refused" = 0 ] || fail "$not_refused of $refunded retried keys whose use was refunded were not refused with 55000"
[ "$before" = "$after" ] || fail "retried keys counted again: before [$before], after [$after]"
ok "$calls committed keys retried: replayed, the $refunded refunded ones refused (55000), nothing counted ($after)"

check "a new load after the restart"
load 2 -t 150 >"$DIR/pgbench-2.log" 2>&1 || { cat "$DIR/pgbench-2.log"; fail "pgbench failed after the restart"; }
run_checks "after a new load"

echo "==> crash safety: all checks passed"
