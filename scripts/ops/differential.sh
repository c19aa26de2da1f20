#!/usr/bin/env bash
# Differential test of the two read paths. The reading functions (check_user_quota,
# get_user_storage_quota, get_quota_period with and without a feature, usage_overview,
# has_feature, feature_value) read
# either through SQL statements or directly (a per-backend copy of the catalog and btree
# probes), switched by pg_entitlements.direct_reads. Both must give the same rows or the same
# SQLSTATE for every row the tables can hold, in two databases:
#   own_db  quota's own tables, random rows loaded through their constraints and triggers;
#   app_db  the seed application's schema (tests/fixtures/seed_app.sql) with nullable dates and
#           no foreign keys on plan ids, random rows written BEFORE attaching that break every
#           assumption the constraints of quota's tables would give (custom_quotas that are not
#           objects or hold non-limits, NULL dates, statuses, plans and counters, deleted plans,
#           odd cycles), then the fixes of quota.attach_problems, an index on
#           user_subscriptions (user_id) and quota.attach('public').
# Rows: tests/ops/differential_data.sql (setseed: the same seed gives the same rows, dates
# relative to now()), loaded by differential_own.sql and differential_app.sql; the comparing
# functions and the catalog churn: differential_setup.sql.
#
# First the three reproductions of issue 13 as named cases, each in its own session: a JSON
# array in an attached custom_quotas (22P02 on both paths), a NULL start_date of an attached
# subscription (not active), and a plan deleted (own_db) or moved to another id (app_db) by
# another session while one statement runs, made deterministic with an advisory lock: the
# statement answers, waits for the other session's commit, answers again, and must give the
# same answer both times on both paths.
# Then, per database, every reading function for every user and feature on both paths, each
# pair within one statement snapshot (diff.compare, STABLE), while a second session commits
# catalog changes about every ten milliseconds (diff.churn). Fails on any disagreement (user,
# feature and both answers printed), on SQLSTATE XX000 on either path or in a catalog change,
# on a Rust backtrace in an error, when fewer than half of the calls read directly
# (read_paths() says 'index' for user_subscriptions; a statement whose snapshot is older than
# the backend's copy rightly reads by statements) or a call with direct_reads off did not read
# by statements, and when the server log
# shows a backend terminated by a signal, an XX000 error or a Rust backtrace (the server runs
# with RUST_BACKTRACE=1, so that a panic shows one).
# Last, app_db's rows as local times: copied into schema app_local with every time column
# timestamp without time zone (Asia/Shanghai local times) and attached with local_time_zone, every
# reading function must answer as on the timestamptz tables (tests/ops/differential_local.sql).
# DIFFERENTIAL_SEED (default 0.4242) and DIFFERENTIAL_USERS (default 3000) change the rows.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cluster.sh
source scripts/ops/common.sh

DIR=/tmp/pg_entitlements-ops-differential
PORT=55457
SEED=${DIFFERENTIAL_SEED:-0.4242}
USERS=${DIFFERENTIAL_USERS:-3000}
# Users per comparing statement: each statement runs a second or two, long enough for the
# churn to commit many changes while it runs.
CHUNK=100

# %e: every server log line carries its SQLSTATE, so that an XX000 shows.
# No autovacuum: no transaction commits but the suite's own (the named cases expect the
# direct path, which a commit between a statement's snapshot and a rebuild of the backend's
# copy rightly closes for that statement).
suite_cluster "$DIR" "$PORT" timezone=UTC "log_line_prefix=%m [%p] %e " autovacuum=off
# cluster_start sets RUST_BACKTRACE=1 for the server; without it a panic shows no backtrace.
as_postgres cat "/proc/$(head -1 "$DIR/data/postmaster.pid")/environ" | tr '\0' '\n' \
  | grep -qx RUST_BACKTRACE=1 || fail "the server does not run with RUST_BACKTRACE=1"
echo "==> differential test of the read paths (cluster in $DIR, port $PORT, seed $SEED, $USERS users)"

FAILURES=()
# failed MESSAGE: a check failed; the suite goes on and fails at the end.
failed() {
  echo "  FAIL: $*"
  FAILURES+=("$*")
}

# quoted TEXT: TEXT as an SQL string literal.
quoted() {
  printf "'%s'" "${1//\'/\'\'}"
}

# wait_for_server: after a backend crash the postmaster restarts every backend; wait until it
# accepts connections again.
wait_for_server() {
  for _ in $(seq 1 600); do
    "$PG_BIN/pg_isready" -q -h "$DIR" -p "$PORT" && return 0
    sleep 0.1
  done
  fail "the server does not accept connections any more"
}

# named_case DB LABEL QUERY: QUERY (diff.expect or diff.around_a_change) in a session of its
# own; it prints lines starting "ok:" or holding "FAIL:".
named_case() {
  local db=$1 label=$2 query=$3 out status=0
  out=$(sql "$DIR" "$PORT" "$db" -At -c "$query" 2>&1) || status=$?
  sed 's/^/    /' <<<"$out"
  if [ "$status" -ne 0 ]; then
    failed "$label: the session ended with psql exit $status"
    wait_for_server
  elif grep -q 'FAIL:' <<<"$out"; then
    failed "$label"
  fi
}

# changed_mid_statement DB LABEL CALL BEFORE AFTER CHANGE KEY: another session holds advisory
# lock KEY, waits until this one's statement waits for it, commits CHANGE and releases the
# lock. The statement (diff.around_a_change) must answer BEFORE on both paths, before and after
# the change; the next statement must see the change: AFTER on both paths.
changed_mid_statement() {
  local db=$1 label=$2 call=$3 before=$4 after=$5 change=$6 key=$7 other held=0 status=0
  check "$label"
  sql "$DIR" "$PORT" "$db" -At \
    -c "SELECT pg_advisory_lock($key)" \
    -c "DO \$\$ BEGIN
          FOR i IN 1..6000 LOOP
            EXIT WHEN EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objid = $key AND NOT granted);
            PERFORM pg_sleep(0.01);
          END LOOP;
        END \$\$" \
    -c "$change" -c "SELECT pg_advisory_unlock($key)" >"$DIR/change-$key.out" 2>&1 &
  other=$!
  for _ in $(seq 1 600); do
    held=$(sql_value "$DIR" "$PORT" "$db" \
      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $key AND granted")
    [ "$held" = 1 ] && break
    sleep 0.1
  done
  [ "$held" = 1 ] || fail "$label: the other session did not take advisory lock $key"
  named_case "$db" "$label" \
    "SELECT diff.around_a_change($(quoted "$call"), $(quoted "$before"), $key)"
  wait "$other" || status=$?
  if [ "$status" -ne 0 ]; then
    sed 's/^/    /' "$DIR/change-$key.out"
    failed "$label: the session that changes the plan ended with psql exit $status"
    wait_for_server
    return
  fi
  named_case "$db" "$label: the next statement sees the change" \
    "SELECT diff.expect($(quoted "$call"), $(quoted "$after"))"
}

# compare DB RANGE...: every reading function for the users of each RANGE (FIRST-LAST) on both
# paths, CHUNK users per statement, while diff.churn commits catalog changes in a second
# session; the answers go to $DIR/compare.tsv.
compare() {
  local db=$1 churn range first last lo status=0
  shift
  check "$db: users $*, every reading function on both paths in one snapshot, while another session changes the catalog"
  sql "$DIR" "$PORT" "$db" -c "UPDATE diff.control SET stop = false"
  sql "$DIR" "$PORT" "$db" -c "CALL diff.churn($SEED)" >"$DIR/churn-$db.out" 2>&1 &
  churn=$!
  for range in "$@"; do
    first=${range%-*} last=${range#*-}
    for ((lo = first; lo <= last; lo += CHUNK)); do
      echo "\\copy (SELECT '$db', * FROM diff.compare($lo, $((lo + CHUNK - 1 < last ? lo + CHUNK - 1 : last)))) TO STDOUT"
    done
  done >"$DIR/compare-$db.sql"
  sql "$DIR" "$PORT" "$db" -f "$DIR/compare-$db.sql" >>"$DIR/compare.tsv" 2>"$DIR/compare-$db.err" \
    || status=$?
  if [ "$status" -ne 0 ]; then
    tail -5 "$DIR/compare-$db.err"
    failed "$db: the comparing session ended with psql exit $status"
    wait_for_server
  fi
  sql "$DIR" "$PORT" "$db" -c "UPDATE diff.control SET stop = true"
  status=0
  wait "$churn" || status=$?
  sed -n 's/.*NOTICE:  /    /p; /^  XX000/p' "$DIR/churn-$db.out"
  [ "$status" -eq 0 ] || failed "$db: the session changing the catalog ended with psql exit $status"
  grep -q '^  XX000' "$DIR/churn-$db.out" && failed "$db: a catalog change raised XX000 (above)"
  grep -q 'churn: [1-9][0-9]* changes committed' "$DIR/churn-$db.out" \
    || failed "$db: no catalog change was committed during the comparison"
}

check "own_db: random rows in quota's own tables"
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" own_db
sql "$DIR" "$PORT" own_db -c 'CREATE EXTENSION pg_entitlements' -f tests/ops/differential_setup.sql
sql "$DIR" "$PORT" own_db -v seed="$SEED" -v users="$USERS" -f tests/ops/differential_own.sql 2>&1 \
  | sed 's/.*NOTICE:  /  /'

check "app_db: the seed application's schema, hostile rows written before attach, then attach('public')"
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" app_db
sql "$DIR" "$PORT" app_db -f tests/fixtures/seed_app.sql -c 'CREATE EXTENSION pg_entitlements' \
  -f tests/ops/differential_setup.sql
sql "$DIR" "$PORT" app_db -v seed="$SEED" -v users="$USERS" -f tests/ops/differential_app.sql \
  >"$DIR/attach.out" 2>&1 || { cat "$DIR/attach.out"; fail "loading or attaching app_db failed"; }
ok "$(sql_value "$DIR" "$PORT" app_db "SELECT count(*) FROM public.user_subscriptions") subscriptions attached"

check "issue 13, case 1: a JSON array in an attached custom_quotas (22P02 on both paths)"
named_case app_db "issue 13, case 1: a JSON array in custom_quotas" "SELECT diff.expect($(quoted \
  "SELECT q::text FROM quota.check_user_quota(900001, 'articles_per_month') q"), 'ERROR 22P02')"
check "issue 13, case 2: an attached active subscription whose start_date is NULL is not active"
named_case app_db "issue 13, case 2: a NULL start_date" "SELECT diff.expect($(quoted \
  "SELECT q::text FROM quota.check_user_quota(900002, 'articles_per_month') q"), '(f,0,0,0,0.00)')"
changed_mid_statement own_db \
  "issue 13, case 3: the plan deleted by another session while a statement runs (own_db)" \
  "SELECT q::text FROM quota.check_user_quota(800003, 'articles_per_month') q" \
  "(t,0,11,11,0.00)" "(t,0,22,22,0.00)" \
  "UPDATE quota.user_subscriptions SET plan_id = 800002 WHERE user_id = 800003;
   DELETE FROM quota.subscription_plans WHERE id = 800001" 13001
changed_mid_statement app_db \
  "issue 13, case 3: the plan moved to another id by another session while a statement runs (app_db)" \
  "SELECT q::text FROM quota.check_user_quota(900003, 'articles_per_month') q" \
  "(t,0,33,33,0.00)" "ERROR 23503" \
  "UPDATE public.subscription_plans SET id = 800011 WHERE id = 800010;
   UPDATE public.plan_features SET plan_id = 800011 WHERE plan_id = 800010" 13002

: >"$DIR/compare.tsv"
compare own_db "1-$USERS" 800003-800003
compare app_db "1-$USERS" 900001-900003
# Per user: storage, period and overview, and per feature (and one unknown code) a check, a
# period, and has_feature with feature_value.
features=$(sql_value "$DIR" "$PORT" own_db "SELECT count(*) FROM quota.features")
expected_calls=$(((2 * USERS + 4) * (3 + 3 * (features + 1))))

check "the answers ($DIR/compare.tsv, loaded into own_db's diff.answers)"
sql "$DIR" "$PORT" own_db \
  -c "CREATE TABLE diff.answers (db text, call text, direct_answer text, sql_answer text,
                                 direct_read_by text, sql_read_by text, direct_message text,
                                 sql_message text)" \
  -c "\\copy diff.answers FROM '$DIR/compare.tsv'" \
  -c "CREATE VIEW diff.failures AS
      SELECT *, CASE WHEN direct_answer IS DISTINCT FROM sql_answer THEN 'disagreement'
                     WHEN 'ERROR XX000' IN (direct_answer, sql_answer) THEN 'internal error (XX000)'
                     ELSE 'Rust backtrace in the error' END AS failure
        FROM diff.answers
       WHERE direct_answer IS DISTINCT FROM sql_answer
          OR 'ERROR XX000' IN (direct_answer, sql_answer)
          OR diff.backtrace(concat(direct_message, sql_message))"
sql "$DIR" "$PORT" own_db -c "
  SELECT db, count(*) AS compared,
         count(*) FILTER (WHERE direct_read_by = 'index') AS went_direct,
         count(*) FILTER (WHERE direct_answer LIKE 'ERROR%') AS errors,
         count(*) FILTER (WHERE direct_answer IS DISTINCT FROM sql_answer) AS disagreements,
         count(*) FILTER (WHERE 'ERROR XX000' IN (direct_answer, sql_answer)) AS xx000,
         count(*) FILTER (WHERE diff.backtrace(concat(direct_message, sql_message))) AS backtraces
    FROM diff.answers GROUP BY db ORDER BY db"
echo "  outcomes with direct_reads off, by SQLSTATE:"
sql_value "$DIR" "$PORT" own_db "
  SELECT string_agg(format('%s: %s', outcome, n), ', ' ORDER BY outcome)
    FROM (SELECT CASE WHEN sql_answer LIKE 'ERROR%' THEN sql_answer ELSE 'rows' END AS outcome,
                 count(*) AS n
            FROM diff.answers GROUP BY 1) o" | sed 's/^/    /'

compared=$(sql_value "$DIR" "$PORT" own_db "SELECT count(*) FROM diff.answers")
[ "$compared" -eq "$expected_calls" ] \
  || failed "$compared calls compared, expected $expected_calls (a comparing statement did not finish)"
while IFS='|' read -r db n direct; do
  if [ $((direct * 2)) -lt "$n" ]; then
    failed "$db: only $direct of $n calls with direct_reads on read user_subscriptions through an index"
  else
    ok "$db: $direct of $n calls with direct_reads on read user_subscriptions through an index"
  fi
done < <(sql_value "$DIR" "$PORT" own_db "
  SELECT db, count(*), count(*) FILTER (WHERE direct_read_by = 'index')
    FROM diff.answers GROUP BY db ORDER BY db")
sql_value "$DIR" "$PORT" own_db "
  SELECT format('%s: %s calls with direct_reads on read by %s', db, count(*), direct_read_by)
    FROM diff.answers WHERE direct_read_by <> 'index'
   GROUP BY db, direct_read_by ORDER BY db, count(*) DESC" | sed 's/^/    /'
off_direct=$(sql_value "$DIR" "$PORT" own_db \
  "SELECT count(*) FROM diff.answers WHERE sql_read_by IS DISTINCT FROM 'sql'")
[ "$off_direct" = 0 ] || failed "$off_direct calls with direct_reads off did not read by statements"
bad=$(sql_value "$DIR" "$PORT" own_db "SELECT count(*) FROM diff.failures")
if [ "$bad" != 0 ]; then
  echo "  failures by kind (count | database | failure | direct reads | statements):"
  sql "$DIR" "$PORT" own_db -At -c "
    SELECT count(*), db, failure, direct, statements
      FROM (SELECT db, failure,
                   CASE WHEN direct_answer LIKE 'ERROR%'
                        THEN direct_answer || ' ' || diff.shown(direct_message) ELSE 'rows' END AS direct,
                   CASE WHEN sql_answer LIKE 'ERROR%'
                        THEN sql_answer || ' ' || diff.shown(sql_message) ELSE 'rows' END AS statements
              FROM diff.failures) f
     GROUP BY 2, 3, 4, 5 ORDER BY 2, 1 DESC" | sed 's/^/    /'
  echo "  the first calls of each database and failure:"
  sql "$DIR" "$PORT" own_db -At -c "
    SELECT format(E'%s: %s: %s\n      direct reads: %s%s\n      statements:   %s%s', failure, db, call,
                  direct_answer, coalesce(' (' || diff.shown(direct_message) || ')', ''),
                  sql_answer, coalesce(' (' || diff.shown(sql_message) || ')', ''))
      FROM (SELECT *, row_number() OVER (PARTITION BY db, failure ORDER BY call) AS n
              FROM diff.failures) f
     WHERE n <= 5 ORDER BY db, failure, call" | sed 's/^/    /'
  failed "$bad of $compared calls failed (above)"
else
  ok "the two paths agree on all $compared calls; no XX000, no backtrace"
fi

# The local times of issue 15: the same rows in timestamp without time zone columns.
LOCAL_USERS=$((USERS < 1000 ? USERS : 1000))
check "app_db's rows as Asia/Shanghai local times (schema app_local, attached with local_time_zone): users 1-$LOCAL_USERS, every reading function answers as on the timestamptz tables"
if ! sql "$DIR" "$PORT" app_db -v users="$LOCAL_USERS" -f tests/ops/differential_local.sql \
    >"$DIR/local.out" 2>&1; then
  cat "$DIR/local.out"
  failed "comparing the local-time tables failed"
else
  sed 's/^/    /' "$DIR/local.out"
  local_calls=$(((LOCAL_USERS + 3) * (3 + 3 * (features + 1))))
  if grep -q '^DIFF ' "$DIR/local.out"; then
    failed "answers on local times differ from those on timestamptz (above)"
  elif ! grep -q "^compared $local_calls calls, .* 0 differ\$" "$DIR/local.out"; then
    failed "expected $local_calls calls compared"
  else
    ok "the local-time tables give the timestamptz tables' answers on all $local_calls calls"
  fi
fi

check "the server log: no backend terminated by a signal, no XX000, no Rust backtrace"
if grep -nE 'terminated by signal|was terminated by exception|PANIC|\] XX000 |stack backtrace|rust_begin_unwind|panicked at|^ +[0-9]+: ' \
    "$DIR/server.log" | head -20; then
  failed "the server log shows the lines above"
else
  ok "clean"
fi

if [ "${#FAILURES[@]}" -ne 0 ]; then
  echo "==> differential test: ${#FAILURES[@]} checks failed:"
  printf '  - %s\n' "${FAILURES[@]}"
  exit 1
fi
echo "==> differential test: all checks passed"
