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
#   (d) one user with limit 1000000, LOAD_CLIENTS clients consuming and recording for
#       LOAD_RENEW_SECONDS while another session renews the subscription LOAD_RENEWALS times
#       (cancel + insert, in one transaction): no refusal, no P0002, counter = records;
#   (e) one user with limit LOAD_HOT_LIMIT, LOAD_CLIENTS clients consuming for
#       LOAD_RENEW_SECONDS while another session renews it LOAD_RENEWALS times as a new row that
#       starts at the renewal with an approximate anchor: the renewals continue the period, so
#       exactly the limit is allowed in all (before 0.3.0: the limit once per renewal);
#   (f) one user with an allowance of 100 and three grants (250 units in all): LOAD_CLIENTS clients
#       x LOAD_GRANT_TX consumes of 3, each split across the allowance and the grants in use
#       order: exactly 83 allowed (249 units), 1 unit left, no grant below zero;
#   (g) twenty clients each holding 75 of one user's 500 at once (each hold uncommitted for a
#       moment): exactly 6 holds granted; then LOAD_CLIENTS clients x LOAD_HOLD_TX holds of 8
#       settled with 0 to 12 beside uses of 3, against 500 and a grant of 100: never more than
#       600 units used, no hold left, every counter's held equal to its holds;
#   (h) one user limited to 10000 a billing month and 300 a day, with a grant of 50: LOAD_CLIENTS
#       clients x LOAD_WINDOW_TX uses of 1 to 3, one in eight with a refund of the client's last
#       use: the day's counter ends at most 300 and equal to what the records (refunds
#       deducted) add up to, as does the month's; nothing is drawn from the grant;
# and quota.verify_ledger() (and, after (f), quota.verify_grants(); after (g),
# quota.verify_holds()) returns no row after each part.
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
RENEWALS=${LOAD_RENEWALS:-150}
RENEW_SECONDS=${LOAD_RENEW_SECONDS:-5}  # the uses run this long; the renewals take about 2 s
GRANT_TX=${LOAD_GRANT_TX:-40}       # per client: 16 x 40 = 640 attempts for 83 uses
HOLD_TX=${LOAD_HOLD_TX:-40}         # per client: 16 x 40 = 640 holds, settles and uses
WINDOW_TX=${LOAD_WINDOW_TX:-60}     # per client: 16 x 60 = 960 uses of 1 to 3 for the day's 300

suite_cluster "$DIR" "$PORT" timezone=UTC max_connections=$((CLIENTS + 20))
"$PG_BIN/createdb" -h "$DIR" -p "$PORT" -U postgres "$DB"
sql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres -d "$DB" -At "$@"; }
sql -c "CREATE EXTENSION pg_entitlements"
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

echo "==> load (d): $CLIENTS clients consuming and recording for ${RENEW_SECONDS}s while $RENEWALS renewals run"
renew_log="$DIR/pgbench-renewal.log"
"$PG_BIN/pgbench" -n -h "$DIR" -p "$PORT" -U postgres -c 1 -t "$RENEWALS" \
  -f tests/load/renewal.sql "$DB" >"$renew_log" 2>&1 &
renewer=$!
uses_log="$DIR/pgbench-renewal_use.log"
uses_ok=true
"$PG_BIN/pgbench" -n -h "$DIR" -p "$PORT" -U postgres -c "$CLIENTS" -j 4 -T "$RENEW_SECONDS" \
  -f tests/load/renewal_use.sql "$DB" >"$uses_log" 2>&1 || uses_ok=false
renew_ok=true
wait "$renewer" || renew_ok=false
$uses_ok || { cat "$uses_log" >&2; fail "pgbench renewal_use.sql exited with an error"; }
$renew_ok || { cat "$renew_log" >&2; fail "pgbench renewal.sql exited with an error"; }
IFS='|' read -r calls refused no_sub other renewed counter records < <(sql -c "
  SELECT (SELECT count(*) FROM public.load_renewal_answers),
         (SELECT count(*) FROM public.load_renewal_answers WHERE call = 'consume' AND NOT allowed),
         (SELECT count(*) FROM public.load_renewal_answers WHERE sqlstate = 'P0002'),
         (SELECT count(*) FROM public.load_renewal_answers
           WHERE sqlstate IS DISTINCT FROM 'P0002' AND call = 'record' AND NOT allowed),
         (SELECT count(*) FROM quota.user_subscriptions WHERE user_id = 3 AND status = 'cancelled'),
         (SELECT sum(usage_count) FROM quota.user_usage WHERE user_id = 3),
         (SELECT count(*) FROM quota.usage_records WHERE user_id = 3)")
echo "    $calls calls, $renewed renewals, counter $counter"
expect "renewals" "$renewed" "$RENEWALS"
expect "consume refused" "$refused" "0"
expect "record_feature_usage raising P0002" "$no_sub" "0"
expect "record_feature_usage raising anything else" "$other" "0"
expect "counter" "$counter" "$records"
expect "calls counted" "$records" "$calls"
expect "verify_ledger() rows" "$(ledger_rows)" "0"

echo "==> load (e): $CLIENTS clients consuming for ${RENEW_SECONDS}s while $RENEWALS renewals restart the row"
restart_log="$DIR/pgbench-restart.log"
"$PG_BIN/pgbench" -n -h "$DIR" -p "$PORT" -U postgres -c 1 -t "$RENEWALS" \
  -f tests/load/restart.sql "$DB" >"$restart_log" 2>&1 &
renewer=$!
restart_uses_log="$DIR/pgbench-restart_use.log"
uses_ok=true
"$PG_BIN/pgbench" -n -h "$DIR" -p "$PORT" -U postgres -c "$CLIENTS" -j 4 -T "$RENEW_SECONDS" \
  -f tests/load/restart_use.sql "$DB" >"$restart_uses_log" 2>&1 || uses_ok=false
renew_ok=true
wait "$renewer" || renew_ok=false
$uses_ok || { cat "$restart_uses_log" >&2; fail "pgbench restart_use.sql exited with an error"; }
$renew_ok || { cat "$restart_log" >&2; fail "pgbench restart.sql exited with an error"; }
IFS='|' read -r calls allowed renewed usage current < <(sql -c "
  SELECT (SELECT count(*) FROM public.load_restart_answers),
         (SELECT count(*) FROM public.load_restart_answers WHERE allowed),
         (SELECT count(*) FROM quota.user_subscriptions WHERE user_id = 4 AND status = 'cancelled'),
         (SELECT current_usage FROM quota.check_user_quota(4, 'articles_per_month')),
         (SELECT count(*) FROM quota.user_usage WHERE user_id = 4 AND feature_code = 'articles_per_month' AND period_end > now())")
echo "    $calls calls, $renewed renewals, $allowed allowed"
expect "renewals" "$renewed" "$RENEWALS"
expect "uses allowed over all renewals" "$allowed" "$HOT_LIMIT"
expect "current usage" "$usage" "$HOT_LIMIT"
expect "current counters" "$current" "1"
expect "verify_ledger() rows" "$(ledger_rows)" "0"

echo "==> load (f): one user, allowance 100 and grants of 30, 50 and 70, $CLIENTS clients x $GRANT_TX consumes of 3"
attempts=$(run_pgbench tests/load/consume_grants.sql "$GRANT_TX")
IFS='|' read -r allowed counter drawn left usage remaining < <(sql -c "
  SELECT (SELECT count(*) FROM quota.usage_records WHERE user_id = 5),
         (SELECT sum(usage_count) FROM quota.user_usage WHERE user_id = 5),
         (SELECT sum(amount - remaining) FROM quota.grants WHERE user_id = 5),
         (SELECT sum(remaining) FROM quota.grants WHERE user_id = 5),
         q.current_usage, q.remaining
    FROM quota.check_user_quota(5, 'articles_per_month') q")
echo "    $attempts attempts, $allowed allowed, $((attempts - allowed)) refused"
expect "uses allowed" "$allowed" "83"
expect "allowance used" "$counter" "100"
expect "units drawn from grants" "$drawn" "149"
expect "units left in grants" "$left" "1"
expect "check_user_quota current_usage" "$usage" "249"
expect "check_user_quota remaining" "$remaining" "1"
expect "verify_ledger() rows" "$(ledger_rows)" "0"
expect "verify_grants() rows" "$(sql -c "SELECT count(*) FROM quota.verify_grants()")" "0"

echo "==> load (g): twenty holds of 75 against 500 at once"
CLIENTS=20 run_pgbench tests/load/reserve_75.sql 1 >/dev/null
IFS='|' read -r granted held < <(sql -c "
  SELECT count(*), sum(amount) FROM quota.reservations WHERE user_id = 6 AND state = 'held'")
expect "holds granted" "$granted" "6"
expect "units held" "$held" "450"
expect "check_user_quota remaining" \
  "$(sql -c "SELECT remaining FROM quota.check_user_quota(6, 'articles_per_month')")" "50"

echo "==> load (g): $CLIENTS clients x $HOLD_TX holds of 8 settled with 0 to 12, beside uses of 3"
run_pgbench tests/load/reserve_settle.sql "$HOLD_TX" >/dev/null
IFS="|" read -r used open_holds settled beyond released < <(sql -c "
  SELECT (SELECT sum(usage_count) FROM quota.user_usage WHERE user_id = 7)
           + (SELECT sum(amount - remaining) FROM quota.grants WHERE user_id = 7),
         (SELECT count(*) FROM quota.reservations WHERE user_id = 7 AND state = 'held'),
         (SELECT count(*) FROM quota.reservations WHERE user_id = 7 AND state = 'settled'),
         (SELECT count(*) FROM quota.reservations WHERE user_id = 7 AND settled_amount > amount),
         (SELECT count(*) FROM quota.reservations WHERE user_id = 7 AND state = 'released')")
echo "    $settled holds settled ($beyond beyond what they held), $released released, $used units used"
if [ "$used" -gt 600 ]; then fail "units used = $used, more than the 600 there are"; fi
expect "holds left open" "$open_holds" "0"
expect "verify_holds() rows" "$(sql -c "SELECT count(*) FROM quota.verify_holds()")" "0"
expect "verify_grants() rows" "$(sql -c "SELECT count(*) FROM quota.verify_grants()")" "0"
expect "verify_ledger() rows" "$(ledger_rows)" "0"

echo "==> load (h): two windows (10000 a month, 300 a day), $CLIENTS clients x $WINDOW_TX uses and refunds"
run_pgbench tests/load/consume_two_windows.sql "$WINDOW_TX" >/dev/null
IFS='|' read -r day_count records month drawn remaining < <(sql -c "
  SELECT (SELECT sum(usage_count) FROM quota.window_usage
           WHERE user_id = 8 AND window_name = 'day' AND window_end > now()),
         (SELECT sum(amount) FROM quota.usage_records WHERE user_id = 8),
         (SELECT sum(usage_count) FROM quota.user_usage WHERE user_id = 8),
         (SELECT sum(amount - remaining) FROM quota.grants WHERE user_id = 8),
         q.remaining
    FROM quota.check_user_quota(8, 'searches') q")
echo "    the day counted $day_count, the records add up to $records, $remaining left today"
if [ "$day_count" -gt 300 ]; then fail "the day counted $day_count, more than its 300"; fi
expect "the day's counter against the records" "$day_count" "$records"
expect "the month's counter against the records" "$month" "$records"
expect "units drawn from the grant (the month had room)" "$drawn" "0"
expect "verify_ledger() rows" "$(ledger_rows)" "0"

if [ "$failures" -gt 0 ]; then
  echo "load test FAILED: $failures assertion(s)"; exit 1
fi
echo "==> load test passed"
