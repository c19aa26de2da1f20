#!/usr/bin/env bash
# Bounded load test (seconds, not minutes): pgbench clients racing consume and
# record_feature_usage against a throwaway cluster, then exact assertions on the counters and the
# ledger. Fails (exit 1) with a message when any assertion fails; no timing is asserted.
#   (a) one user, limit LOAD_HOT_LIMIT: LOAD_CLIENTS clients x LOAD_HOT_TX consumes of 1;
#       exactly LOAD_HOT_LIMIT uses count (counter = records = limit);
#   (b) LOAD_USERS users with limit LOAD_USER_LIMIT each, a random user per consume: no user
#       above its limit, every counter equal to its records;
#   (c) record_feature_usage with idempotency keys drawn from LOAD_KEYS values: the counter
#       equals the number of distinct keys drawn, one record per key;
# and quota.verify_ledger() returns no row after each part.
# Assumes scripts/setup.sh has run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh

DIR=${PGE_LOAD_DIR:-/tmp/pg_entitlements-load}
PORT=${PGE_LOAD_PORT:-55434}
DB=pge_load
CLIENTS=${LOAD_CLIENTS:-16}
HOT_LIMIT=${LOAD_HOT_LIMIT:-500}
HOT_TX=${LOAD_HOT_TX:-200}          # per client: 16 x 200 = 3200 attempts for 500 uses
USERS=${LOAD_USERS:-200}
USER_LIMIT=${LOAD_USER_LIMIT:-20}
MANY_TX=${LOAD_MANY_TX:-400}        # per client: 16 x 400 = 6400 attempts for 200 x 20 uses
KEYS=${LOAD_KEYS:-50}
KEY_TX=${LOAD_KEY_TX:-200}          # per client: 16 x 200 = 3200 calls over 50 keys

trap 'cluster_stop "$DIR"' EXIT
cluster_start "$DIR" "$PORT" timezone=UTC max_connections=$((CLIENTS + 20))
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres \
  -c "ALTER SYSTEM SET dynamic_library_path = '$DIR/lib:\$libdir'" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 50); do   # the reload is asynchronous: wait until new sessions see the setting
  [ "$("${PSQL[@]}" -d postgres -At -c "SHOW dynamic_library_path")" = "$DIR/lib:\$libdir" ] && break
  sleep 0.1
done
"$PG_BIN/createdb" -h "$DIR" -p "$PORT" -U postgres "$DB"
sql() { "${PSQL[@]}" -d "$DB" -At "$@"; }
# Built and installed right before its .so is copied and CREATE EXTENSION reads its SQL files:
# other people install their builds into the same PostgreSQL at any time, and this keeps the
# window in which one could slip in between the two as small as possible. The cluster loads
# its own copy of the .so (module_pathname has no $libdir, so dynamic_library_path decides):
# a build installed into $libdir later cannot replace the library under the running backends.
install_extension
mkdir -p "$DIR/lib" && cp "$("$PG_CONFIG" --pkglibdir)/pg_entitlements.so" "$DIR/lib/"
chmod 755 "$DIR/lib" && chmod 644 "$DIR/lib/pg_entitlements.so"
sql -c "CREATE EXTENSION pg_entitlements"
loaded=$(sql -c "SELECT count(*) FROM quota.check_user_quota(1, 'articles_per_month')" \
  -c "SELECT DISTINCT substring(l FROM '(/\S*pg_entitlements\.so)')
        FROM pg_catalog.regexp_split_to_table(pg_catalog.pg_read_file('/proc/self/maps'), E'\n') l
       WHERE l LIKE '%pg_entitlements.so%'" | tail -n +2)
if [ "$loaded" != "$DIR/lib/pg_entitlements.so" ]; then
  echo "the backends load '$loaded', not the copy $DIR/lib/pg_entitlements.so"; exit 1
fi
sql -v hot_limit="$HOT_LIMIT" -v users="$USERS" -v user_limit="$USER_LIMIT" -f tests/load/fixtures.sql >/dev/null

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# expect NAME ACTUAL EXPECTED
expect() { if [ "$2" = "$3" ]; then echo "    ok: $1 = $2"; else fail "$1 = $2, expected $3"; fi; }

# run_pgbench SCRIPT TX [-D var=value ...]: CLIENTS clients x TX transactions; prints the number of
# transactions processed. Any failed transaction or aborted client fails the test.
run_pgbench() {
  local script=$1 tx=$2; shift 2
  local log="$DIR/pgbench-$(basename "$script" .sql).log"
  if ! "$PG_BIN/pgbench" -n -h "$DIR" -p "$PORT" -U postgres -c "$CLIENTS" -j 4 -t "$tx" \
      -f "$script" "$@" "$DB" >"$log" 2>&1; then
    cat "$log" >&2; echo "FAIL: pgbench $script exited with an error" >&2; exit 1
  fi
  local processed
  processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
  if [ "$processed" != $((CLIENTS * tx)) ] || grep -q "^number of failed transactions: [1-9]" "$log"; then
    cat "$log" >&2; echo "FAIL: pgbench $script: $processed of $((CLIENTS * tx)) transactions" >&2; exit 1
  fi
  echo "$processed"
}

ledger_rows() { sql -c "SELECT count(*) FROM quota.verify_ledger()"; }

echo "==> load (a): one user, limit $HOT_LIMIT, $CLIENTS clients x $HOT_TX consumes"
attempts=$(run_pgbench tests/load/consume_one_user.sql "$HOT_TX")
IFS='|' read -r counter records recorded usage remaining < <(sql -c "
  SELECT (SELECT sum(usage_count) FROM quota.user_usage WHERE user_id = 1),
         (SELECT count(*) FROM quota.usage_records WHERE user_id = 1),
         (SELECT sum(amount) FROM quota.usage_records WHERE user_id = 1),
         q.current_usage, q.remaining
    FROM quota.check_user_quota(1, 'articles_per_month') q")
echo "    $attempts attempts, $counter allowed, $((attempts - counter)) refused"
expect "counter" "$counter" "$HOT_LIMIT"
expect "usage records" "$records" "$HOT_LIMIT"
expect "sum of usage records" "$recorded" "$HOT_LIMIT"
expect "check_user_quota current_usage" "$usage" "$HOT_LIMIT"
expect "check_user_quota remaining" "$remaining" "0"
expect "verify_ledger() rows" "$(ledger_rows)" "0"

echo "==> load (b): $USERS users, limit $USER_LIMIT each, $CLIENTS clients x $MANY_TX consumes of a random user"
attempts=$(run_pgbench tests/load/consume_many_users.sql "$MANY_TX" -D users="$USERS")
IFS='|' read -r allowed over mismatched full users_used < <(sql -c "
  WITH c AS (
    SELECT u.user_id, sum(u.usage_count) AS counter,
           (SELECT count(*) FROM quota.usage_records r WHERE r.user_id = u.user_id) AS records
      FROM quota.user_usage u WHERE u.user_id BETWEEN 1001 AND 1000 + $USERS
     GROUP BY u.user_id)
  SELECT coalesce(sum(counter), 0),
         count(*) FILTER (WHERE counter > $USER_LIMIT),
         count(*) FILTER (WHERE counter <> records),
         count(*) FILTER (WHERE counter = $USER_LIMIT),
         count(*)
    FROM c")
echo "    $attempts attempts, $allowed allowed, $((attempts - allowed)) refused;" \
     "$full of $users_used users at their limit"
expect "users above their limit" "$over" "0"
expect "users whose counter differs from their records" "$mismatched" "0"
if [ "$allowed" -gt $((USERS * USER_LIMIT)) ]; then fail "$allowed uses allowed, more than $USERS x $USER_LIMIT"; fi
expect "verify_ledger() rows" "$(ledger_rows)" "0"

echo "==> load (c): record_feature_usage, $CLIENTS clients x $KEY_TX calls, idempotency keys drawn from $KEYS"
attempts=$(run_pgbench tests/load/record_with_keys.sql "$KEY_TX" -D keys="$KEYS")
IFS='|' read -r counter records distinct_records drawn < <(sql -c "
  SELECT (SELECT sum(usage_count) FROM quota.user_usage WHERE user_id = 2),
         (SELECT count(*) FROM quota.usage_records WHERE user_id = 2),
         (SELECT count(DISTINCT idempotency_key) FROM quota.usage_records WHERE user_id = 2),
         (SELECT count(DISTINCT key) FROM public.load_keys_drawn)")
echo "    $attempts calls, $drawn distinct keys drawn, counter $counter"
expect "counter" "$counter" "$drawn"
expect "usage records" "$records" "$drawn"
expect "distinct keys in usage records" "$distinct_records" "$drawn"
expect "verify_ledger() rows" "$(ledger_rows)" "0"

if [ "$failures" -gt 0 ]; then
  echo "load test FAILED: $failures assertion(s)"; exit 1
fi
echo "==> load test passed"
