#!/usr/bin/env bash
# Hostile inputs: tests/ops/hostile_inputs.sql sweeps every function of pg_entitlements with
# NULLs in every argument position, the extremes of every integer type, empty, 1 MB and odd
# Unicode strings, every JSON type and nesting (metadata, custom_quotas), extreme dates and
# time zones (quota.settings, subscriptions, anniversary_period), odd units and catalog values,
# and counters forged beyond the integer limits. Each case runs in a subtransaction that is
# rolled back. Passes when no case raised an internal error (XX000) or missed its documented
# outcome, no successful case broke the ledger, nothing escaped a rollback, the postmaster did
# not restart and no backend was terminated by a signal.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cluster.sh
source scripts/ops/common.sh

DIR=/tmp/pg_entitlements-ops-fuzz
PORT=55454
DB=fuzz_db

suite_cluster "$DIR" "$PORT" timezone=UTC
echo "==> hostile inputs (cluster in $DIR, port $PORT)"
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" "$DB"

started=$(sql_value "$DIR" "$PORT" "$DB" "SELECT pg_postmaster_start_time()")
check "tests/ops/hostile_inputs.sql: every case returns or raises an ERROR other than XX000, without partial writes"
status=0
sql "$DIR" "$PORT" "$DB" -f tests/ops/hostile_inputs.sql >"$DIR/hostile_inputs.out" 2>"$DIR/hostile_inputs.err" \
  || status=$?
sed -n '/^== outcomes/,/^== failures/p' "$DIR/hostile_inputs.out" | sed '$d'
if [ "$status" -ne 0 ]; then
  sed -n '/^== failures/,$p' "$DIR/hostile_inputs.out"
  grep -v '^psql:[^:]*:[0-9]*: NOTICE:  case [0-9]*$' "$DIR/hostile_inputs.err" | tail -20
  last=$(grep -o 'NOTICE:  case [0-9]*' "$DIR/hostile_inputs.err" | tail -1 || true)
  fail "the hostile-input sweep failed (psql exit $status; last case started: ${last#NOTICE:  })"
fi
passed=$(grep -o 'all [0-9]* hostile-input cases passed' "$DIR/hostile_inputs.err") \
  || fail "the sweep did not report its result (see $DIR/hostile_inputs.err)"
ok "$passed"

check "the server survived"
now_started=$(sql_value "$DIR" "$PORT" "$DB" "SELECT pg_postmaster_start_time()")
[ "$now_started" = "$started" ] \
  || fail "the postmaster restarted during the sweep (started $started, now $now_started)"
if grep -E 'terminated by signal|was terminated by exception|server process .* exited with exit code [^0]|PANIC' \
    "$DIR/server.log"; then
  fail "the server log shows a backend that crashed (above)"
fi
ok "same postmaster start time ($started); no backend terminated by a signal in the server log"

echo "==> hostile inputs: all checks passed"
