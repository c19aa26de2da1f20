#!/usr/bin/env bash
# Where the time goes: callgrind profiles of case 1 (check_user_quota), case 4 (triggers) and case 3's
# writes on a single-user backend of the bench cluster, which must be stopped. Called by scripts/bench.sh:
#
#   bench/profile.sh DIR INLINED_SQL     -> prints a markdown section on stdout
#
# This machine has no hardware counters (`perf stat -e instructions` is "not supported"), so the
# profile counts instructions under valgrind's callgrind instead of sampling time: exact,
# repeatable, and independent of the noise of the machine (memory stalls are not counted).
# Figures are instructions (Ir) per call: the inclusive cost of a function divided by the calls.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh

DIR=$1
INLINED=$(echo "$2" | tr '\n' ' ')
N=${PROFILE_CALLS:-3000}      # calls of check_user_quota per profile
ROWS=${PROFILE_ROWS:-500}     # rows updated per trigger profile
WN=${PROFILE_WRITES:-500}     # calls per write profile
W=$DIR/work
command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null || {
  echo "valgrind is not installed" >&2; exit 1; }

# single_user NAME SQL-LINE...: runs the lines on a single-user backend under callgrind. Costs are
# zeroed whenever a statement starts (PortalRun), so the profile holds the last statement only:
# warm-ups before it (plan preparation, caches) are not counted.
single_user() {
  local name=$1; shift
  printf '%s\n' "$@" >"$W/profile-$name.sql"
  as_postgres valgrind --tool=callgrind --callgrind-out-file="$W/callgrind-$name.out" --zero-before=PortalRun \
    "$PG_BIN/postgres" --single -D "$DIR/data" -c "dynamic_library_path=$DIR/lib:\$libdir" \
    -c shared_buffers=128MB -c jit=off -c max_parallel_workers_per_gather=0 -c timezone=UTC \
    bench <"$W/profile-$name.sql" >"$W/profile-$name.log" 2>&1
  grep -q "ERROR" "$W/profile-$name.log" && { grep ERROR "$W/profile-$name.log" >&2; return 1; }
  # "Ir<TAB>function<TAB>object", inclusive costs
  callgrind_annotate --inclusive=yes --threshold=100 "$W/callgrind-$name.out" 2>/dev/null \
    | sed -n '/file:function/,$p' \
    | sed -nE 's/^ *([0-9,]+) \([^)]*\) +[^:]*:(.*) \[(.*)\]$/\1\t\2\t\3/p' | tr -d ',' \
    >"$W/inclusive-$name.tsv"
}

# Each profile: a warm-up statement on other users, then the measured one (the transaction of
# the trigger profiles is rolled back when the backend exits).
check() { # NAME LATERAL-EXPRESSION COUNT
  single_user "$1" "SELECT $3 FROM generate_series(99901, 100000) g, LATERAL $2 q" \
                   "SELECT $3 FROM generate_series(1, $N) g, LATERAL $2 q"
}
update() { echo "UPDATE quota.user_subscriptions SET custom_quotas = coalesce(custom_quotas, '{}') || '{\"storage_space\": 8192}' WHERE user_id $1"; }
EXT_OFF="ALTER TABLE quota.user_subscriptions DISABLE TRIGGER pg_entitlements_validate_custom_quotas, DISABLE TRIGGER pg_entitlements_sync_storage_quota"
check native "quota.check_user_quota(g, 'articles_per_month')" "count(*)"
check plpgsql "seed.check_user_quota(g, 'articles_per_month')" "count(*)"
check inlined "($INLINED)" "count(q.*)"
check empty "(SELECT g AS x OFFSET 0)" "count(*)"
single_user trig_native "BEGIN" "$(update "> 99990")" "$(update "<= $ROWS")"
single_user trig_plpgsql "BEGIN" "$EXT_OFF" "ALTER TABLE quota.user_subscriptions ENABLE TRIGGER trigger_sync_storage_quota" \
  "$(update "> 99990")" "$(update "<= $ROWS")"
single_user trig_none "BEGIN" "$EXT_OFF" "$(update "> 99990")" "$(update "<= $ROWS")"
# Writes as case 3 runs them: each call a transaction of its own, commit included
# (synchronous_commit off: the CPU, not the WAL flush), in prepared statements like pgbench's.
# The calls run between two marker statements, SELECT pg_sleep(0): callgrind writes a part of
# its profile at each (--dump-before), so the second part holds exactly the measured calls
# (reading each command, running it, committing), without the warm-up calls before (plans
# prepared, caches filled) or the shutdown checkpoint after.
HOT=${PROFILE_HOT_USER:-7}
transactions() { # NAME PREPARE-STATEMENT EXECUTE-LINE-WITH-@ (@ = the call's number)
  local name=$1 prepare=$2 line=$3 i
  {
    echo "$prepare"
    for i in $(seq 1 10); do echo "${line//@/$((100000 - i))}"; done
    echo "SELECT pg_sleep(0)"
    for i in $(seq 1 "$WN"); do echo "${line//@/$i}"; done
    echo "SELECT pg_sleep(0)"
  } >"$W/profile-$name.sql"
  rm -f "$W/callgrind-$name.out"*
  as_postgres valgrind --tool=callgrind --callgrind-out-file="$W/callgrind-$name.out" \
    --dump-before=pg_sleep \
    "$PG_BIN/postgres" --single -D "$DIR/data" -c "dynamic_library_path=$DIR/lib:\$libdir" \
    -c shared_buffers=128MB -c jit=off -c timezone=UTC -c synchronous_commit=off \
    bench <"$W/profile-$name.sql" >"$W/profile-$name.log" 2>&1
  grep -q "ERROR" "$W/profile-$name.log" && { grep ERROR "$W/profile-$name.log" >&2; return 1; }
  # The whole of part 2 is the calls: its total is written as the pseudo-function "ALL".
  { awk '/^(summary|totals):/ {print $2 "\tALL\t"; exit}' "$W/callgrind-$name.out.2"
    callgrind_annotate --inclusive=yes --threshold=100 "$W/callgrind-$name.out.2" 2>/dev/null \
      | sed -n '/file:function/,$p' \
      | sed -nE 's/^ *([0-9,]+) \([^)]*\) +[^:]*:(.*) \[(.*)\]$/\1\t\2\t\3/p' | tr -d ','
  } >"$W/inclusive-$name.tsv"
}
# The hot user's current period, for the floors (an EXECUTE parameter cannot be a subquery).
PS=$(echo "SELECT period_start FROM quota.get_quota_period($HOT, 'articles_per_month')" \
  | as_postgres "$PG_BIN/postgres" --single -D "$DIR/data" -c "dynamic_library_path=$DIR/lib:\$libdir" bench 2>/dev/null \
  | sed -nE 's/^[[:space:]]*1: period_start = "([^"]+)".*/\1/p')
[ -n "$PS" ] || { echo "no current period for user $HOT" >&2; exit 1; }
PS="'$PS'"
transactions w_consume \
  "PREPARE w(bigint, bigint) AS SELECT * FROM quota.consume(\$1, 'articles_per_month', 1, NULL, 'article', \$2, '{\"words\": 1200}')" \
  "EXECUTE w($HOT, @)"
transactions w_floor \
  "PREPARE w(bigint, timestamptz) AS UPDATE quota.user_usage SET usage_count = usage_count + 1 WHERE user_id = \$1 AND feature_code = 'articles_per_month' AND period_start = \$2 AND usage_count + 1 <= 2000000000 RETURNING usage_count" \
  "EXECUTE w($HOT, $PS)"
transactions w_floor_ledger \
  "PREPARE w(bigint, timestamptz, bigint) AS WITH c AS (UPDATE quota.user_usage SET usage_count = usage_count + 1, updated_at = now() WHERE user_id = \$1 AND feature_code = 'articles_per_month' AND period_start = \$2 AND usage_count + 1 <= 2000000000 RETURNING usage_count), r AS (INSERT INTO quota.usage_records (user_id, feature_code, period_start, resource_type, resource_id, amount, metadata, created_at) SELECT \$1, 'articles_per_month', \$2, 'article', \$3, 1, '{\"words\": 1200}', now() FROM c) SELECT usage_count FROM c" \
  "EXECUTE w($HOT, $PS, @)"
# record_feature_usage over users that change with every call, and on the hot user alone.
for impl in quota seed; do
  record="PREPARE w(int, int) AS SELECT $impl.record_feature_usage(\$1, 'articles_per_month', 'article', \$2, 1, '{\"words\": 1200}')"
  transactions "w_record_$impl" "$record" "EXECUTE w(@, @)"
  transactions "w_record_hot_$impl" "$record" "EXECUTE w($HOT, @)"
done
# Case 2's reads the same way, one call per transaction: what the 8-client targets compare,
# without the client and the kernel. Users in a scattered order, as case 2's random ones.
READS_FLOOR=$(sed -n 's/:uid/$1/; /^SELECT/p' bench/pgbench/check_reads_floor.sql)
transactions r_select1 "PREPARE w(int) AS SELECT 1" "EXECUTE w(1 + @::bigint * 48271 % 100000)"
transactions r_floor "PREPARE w(bigint) AS ${READS_FLOOR%;}" "EXECUTE w(1 + @::bigint * 48271 % 100000)"
for impl in quota seed; do
  transactions "r_check_$impl" "PREPARE w(int) AS SELECT * FROM $impl.check_user_quota(\$1, 'articles_per_month')" \
    "EXECUTE w(1 + @::bigint * 48271 % 100000)"
done

# inc PROFILE REGEX: the largest inclusive cost among functions whose name matches (0 if none).
inc() { awk -F'\t' -v re="$2" '$2 ~ re && $1 > m {m = $1} END {print m + 0}' "$W/inclusive-$1.tsv"; }
per() { awk -v a="$1" -v n="$2" 'BEGIN {printf "%.0f", a / n}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "–"; else printf "%.0f%%", 100 * a / b}'; }
fmt() { echo "$1" | sed -E ':a; s/^([0-9]+)([0-9]{3})/\1,\2/; ta'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {d = a - b; print (d < 0 ? 0 : d)}'; }
x() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "–"; else printf "%.2f×", a / b}'; }

# Totals.
nat=$(inc native '^check_user_quota_wrapper$')
plp=$(inc plpgsql '^plpgsql_call_handler$')
run_inl=$(inc inlined '^standard_ExecutorRun$'); run_empty=$(inc empty '^standard_ExecutorRun$')
inl=$(sub "$run_inl" "$run_empty")
upd_none=$(inc trig_none '^standard_ExecutorRun$')
tn_sync=$(inc trig_native '^sync_storage_quota_wrapper$')
tn_val=$(inc trig_native '^validate_custom_quotas_wrapper$')
tn=$((tn_sync + tn_val))
tp=$(inc trig_plpgsql '^plpgsql_call_handler$')
wc=$(inc w_consume '^ALL$')
wf=$(inc w_floor '^ALL$')
wfl=$(inc w_floor_ledger '^ALL$')
wrn=$(inc w_record_quota '^ALL$')
wrp=$(inc w_record_seed '^ALL$')
wrhn=$(inc w_record_hot_quota '^ALL$')
wrhp=$(inc w_record_hot_seed '^ALL$')
rs1=$(inc r_select1 '^ALL$'); rfl=$(inc r_floor '^ALL$')
rcn=$(inc r_check_quota '^ALL$'); rcp=$(inc r_check_seed '^ALL$')

# One native check, by phase.
n_spi=$(inc native '^SPI_execute_plan')
n_start=$(inc native '^standard_ExecutorStart$')
n_run=$(inc native "^standard_ExecutorRun'2$")
n_end=$(inc native '^standard_ExecutorEnd$')
n_spi_rest=$(sub "$n_spi" $((n_start + n_run + n_end)))
n_rows=$(( $(inc native 'SpiTupleTable as .*Iterator>::next$') + $(inc native '::store::col$') ))
n_srf_exec=$(sub "$(inc native '^ExecMakeTableFunctionResult$')" "$nat")
n_srf_mat=$(( $(inc native '^InitMaterializedSRF$') + $(inc native '^tuplestore_puttuple$') ))
n_num=$(inc native '^int64_div_fast_to_numeric$|AnyNumeric|::api::percentage$')
n_json=$(inc native 'serde_json|^jsonb_|^JsonbToCString$|^getKeyJsonValueFromContainer$|^JsonbValueToJsonb$')
n_period=$(inc native '::quota::period_of$|^entitlements_core::period::current_period$')
n_probe=$(inc native '::probe::Probe::scan')
n_inval=$(( $(inc native '^AcceptInvalidationMessages$') + $(inc native '::cache::privileged$') ))
n_other=$(sub "$nat" $((n_spi + n_rows + n_srf_mat + n_num + n_json + n_period + n_probe + n_inval)))
p_start=$(inc plpgsql '^standard_ExecutorStart$')
c_start=$(inc w_consume '^standard_ExecutorStart$')
budget=$(awk -v p="$(per "$plp" "$N")" -v i="$(per "$inl" "$N")" 'BEGIN {b = p / 4; if (i < b) b = i; printf "%.0f", b}')

row() { printf '| %s | %s | %s |\n' "$1" "$(fmt "$(per "$2" "$N")")" "$(pct "$2" "$nat")"; }

# The extension's Rust functions that run statements (inclusive, per call).
statements() { # PROFILE CALLS TOTAL
  awk -F'\t' -v n="$2" -v t="$3" '$2 ~ /^pg_entitlements::(store|quota|triggers)::/ && $2 !~ /::col$|::must$|closure|prepare_plans/ {
      printf "%d\t%s\t%.0f%%\n", $1 / n, $2, 100 * $1 / t }' "$W/inclusive-$1.tsv" \
    | sort -t$'\t' -k1,1 -rn | head -7 \
    | while IFS=$'\t' read -r ir name share; do printf '| `%s` | %s | %s |\n' "$name" "$(fmt "$ir")" "$share"; done
}

cat <<EOF
## Where the time goes

Instruction counts from \`valgrind --tool=callgrind\` on a single-user backend of the same
cluster and data (\`bench/profile.sh\`; this virtual machine exposes no hardware counters, so
\`perf stat -e instructions\` is not supported): $N calls of case 1's query per implementation,
an \`UPDATE\` of custom_quotas on $ROWS subscriptions for the triggers, $WN calls for the writes,
each write a transaction of its own as in case 3; each after warm-up calls that are not counted
(plans prepared, caches filled). Figures are the inclusive cost of a function divided by the
calls. Instructions are not time — cache misses,
lock waits and commit flushes are not counted — but they are exact, immune to the noise of this
machine, and rank the costs as the timings do.

| per call | instructions | ratio |
|---|---|---|
| \`quota.check_user_quota\` (native) | $(fmt "$(per "$nat" "$N")") | $(x "$nat" "$plp") PL/pgSQL, $(x "$nat" "$inl") inlined |
| \`seed.check_user_quota\` (PL/pgSQL reference) | $(fmt "$(per "$plp" "$N")") | |
| inlined SQL (the query's run minus the empty LATERAL's) | $(fmt "$(per "$inl" "$N")") | |
| extension triggers per updated row (validate $(fmt "$(per "$tn_val" "$ROWS")") + sync $(fmt "$(per "$tn_sync" "$ROWS")")) | $(fmt "$(per "$tn" "$ROWS")") | $(x "$tn" "$tp") PL/pgSQL |
| PL/pgSQL reference trigger per updated row | $(fmt "$(per "$tp" "$ROWS")") | |
| the UPDATE itself per row, no triggers | $(fmt "$(per "$upd_none" "$ROWS")") | |
| reads, one call per transaction, commit included (case 2's statements, users in a scattered order): | | |
| \`SELECT * FROM quota.check_user_quota(...)\` | $(fmt "$(per "$rcn" "$WN")") | $(x "$rcp" "$rcn") fewer than PL/pgSQL |
| … of which the function scan's setup (\`ExecInitFunctionScan\`: the result descriptor built from \`pg_proc\`'s OUT arguments, \`get_expr_result_type\`, $(fmt "$(per "$(inc r_check_quota '^get_expr_result_type$')" "$WN")")) | $(fmt "$(per "$(inc r_check_quota '^ExecInitFunctionScan$')" "$WN")") | $(pct "$(inc r_check_quota '^ExecInitFunctionScan$')" "$rcn") of the check |
| \`SELECT * FROM seed.check_user_quota(...)\` (PL/pgSQL reference) | $(fmt "$(per "$rcp" "$WN")") | |
| the check's two index reads, one statement, no function | $(fmt "$(per "$rfl" "$WN")") | the check costs $(x "$rcn" "$rfl") this |
| \`SELECT 1\` | $(fmt "$(per "$rs1" "$WN")") | the check costs $(x "$rcn" "$rs1") this |
| writes, one call per transaction, commit included: | | |
| \`quota.consume\`, hot user | $(fmt "$(per "$wc" "$WN")") | $(x "$wc" "$wf") the bare UPDATE |
| bare conditional UPDATE of the counter | $(fmt "$(per "$wf" "$WN")") | |
| the same UPDATE and its usage record, one statement | $(fmt "$(per "$wfl" "$WN")") | consume is $(x "$wc" "$wfl") this |
| \`quota.record_feature_usage\` (native), a different user each call | $(fmt "$(per "$wrn" "$WN")") | $(x "$wrn" "$wrp") PL/pgSQL |
| \`seed.record_feature_usage\` (PL/pgSQL reference), the same users | $(fmt "$(per "$wrp" "$WN")") | |
| \`quota.record_feature_usage\` (native), hot user | $(fmt "$(per "$wrhn" "$WN")") | $(x "$wrhn" "$wrhp") PL/pgSQL |
| \`seed.record_feature_usage\` (PL/pgSQL reference), hot user | $(fmt "$(per "$wrhp" "$WN")") | |

One native \`check_user_quota\` call:

| where | instructions per call | share of the call |
|---|---|---|
EOF
row "index reads without statements (\`probe::Probe::scan\`: table and index open and lock, btree descent, heap fetch, column reads), subscription and counter" "$n_probe"
row "taking delivery of invalidations and the privilege check (\`AcceptInvalidationMessages\`, \`cache::privileged\`), once per read" "$n_inval"
row "SQL statements (SPI; none while \`quota.read_paths()\` shows no \`sql\`): executor start-up $(fmt "$(per "$n_start" "$N")"), run $(fmt "$(per "$n_run" "$N")"), shut-down $(fmt "$(per "$n_end" "$N")"), the rest $(fmt "$(per "$n_spi_rest" "$N")")" "$n_spi"
row "reading the SPI result into Rust values (pgrx \`SpiHeapTupleData\` deforms every column, \`FromDatum\`)" "$n_rows"
row "the one-row result in materialize mode (\`InitMaterializedSRF\` with the executor's expected descriptor, \`tuplestore_puttuple\`)" "$n_srf_mat"
row "\`percentage\` as \`numeric\` (\`int64_div_fast_to_numeric\`, no text)" "$n_num"
row "JSON (\`custom_quotas\` value: jsonb in SQL, serde_json in Rust)" "$n_json"
row "period arithmetic (jiff)" "$n_period"
row "everything else (pgrx glue and guards, memory contexts, the rest of the Rust code)" "$n_other"
cat <<EOF

Outside the call, the executor's set-returning-function path (\`ExecMakeTableFunctionResult\`:
tuplestore and result slot) adds $(fmt "$(per "$n_srf_exec" "$N")") instructions per call. The
PL/pgSQL reference spends $(fmt "$(per "$p_start" "$N")") instructions per call in executor
start-up ($(pct "$p_start" "$plp") of it); the inlined statement starts its executor once per
query, not once per user — that is its whole advantage.

The extension's Rust functions that run statements (inclusive; nested ones overlap):

| check_user_quota | instructions per call | share of the call |
|---|---|---|
$(statements native "$N" "$nat")

| triggers | instructions per updated row | share of the triggers |
|---|---|---|
$(statements trig_native "$ROWS" "$tn")

| consume, hot user | instructions per call | share of the call |
|---|---|---|
$(statements w_consume "$WN" "$wc")

### Reading

* **check_user_quota.** The targets (≤ 0.25× PL/pgSQL and ≤ 1.0× the inlined SQL) allow about
  $(fmt "$budget") instructions per call against $(fmt "$(per "$nat" "$N")") today. The call runs no
  statement: the nearly constant rows (features, plans, plan features, settings) come from the
  backend's copy (\`src/cache.rs\`, reloaded by a relcache invalidation at every committed
  change), the subscription and the counter from their btree indexes
  ($(fmt "$(per "$n_probe" "$N")") per call, as PostgreSQL's own foreign-key fast path reads),
  with SQL statements kept wherever those would see something else (\`quota.read_paths()\`).
  The one-row result goes to the executor in materialize mode (\`src/one_row.rs\`:
  $(fmt "$(per $((n_srf_mat + n_srf_exec)) "$N")") per call with the executor's side), not
  pgrx's value-per-call, which built the result descriptor from \`pg_proc\` on every call.
  The rest is the work of any answer: two btree descents and heap fetches, the period
  arithmetic, the result tuple.
* **The 8-client targets, server side.** One check transaction costs
  $(fmt "$(per "$rcn" "$WN")") instructions against $(fmt "$(per "$rcp" "$WN")") for the PL/pgSQL
  reference and $(fmt "$(per "$rs1" "$WN")") for \`SELECT 1\`; the two index reads every check
  needs, as one prepared statement with no function and no limit logic, cost
  $(fmt "$(per "$rfl" "$WN")"). Counting the server alone, 2.5× the reference would leave a check
  $(fmt "$(per "$((rcp * 2 / 5))" "$WN")") ($(x "$((rcp * 2 / 5))" "$rfl") the two-read statement) and
  0.6× \`SELECT 1\` would leave it $(fmt "$(per "$((rs1 * 5 / 3))" "$WN")") ($(x "$((rs1 * 5 / 3))" "$rfl")).
  The client and the kernel cost the same for every statement and bring every throughput ratio
  closer to 1, so case 2 measures what is left of those budgets (the floors below). The check
  costs $(x "$rcn" "$rfl") the two-read statement; the function scan's setup is
  $(fmt "$(per "$(inc r_check_quota '^ExecInitFunctionScan$')" "$WN")") of the difference,
  $(fmt "$(per "$(inc r_check_quota '^get_expr_result_type$')" "$WN")") of it the result descriptor,
  which PostgreSQL builds from a \`RETURNS TABLE\` function's OUT arguments in \`pg_proc\` at
  every executor start (a named composite return type would come from the type cache instead,
  at the price of changing the functions' SQL signatures).
* **Triggers.** The extension's triggers cost $(x "$tn" "$tp") the PL/pgSQL trigger per row,
  almost all in \`sync_storage_quota\`. An UPDATE that changes nothing deciding a limit returns
  before any statement (\`decides_the_same_limits_as\` compares OLD and NEW in Rust); this case
  gives every row new custom_quotas, so every row runs the statements in the table above: the
  limits under the old and the new row for the change announcement, and the user's storage
  limit for the sync. Deriving the storage limit from the new row's limits, when that row is
  the user's active subscription, would take one of them per row.
* **Writes** (one call per transaction, as case 3 runs them; CPU only: lock waits and the
  queue of one user's writers are not in instructions). consume on one user costs
  $(x "$wc" "$wf") the bare conditional UPDATE and $(x "$wc" "$wfl") the same UPDATE with its
  usage record in one statement. It reads the subscription, limit and period without a
  statement; what remains is the one statement that locks the subscription version read
  (by \`ctid\`, WAL-logged), upserts the counter and inserts the usage record: its executor
  start-up costs $(fmt "$(per "$c_start" "$WN")") per call against
  $(fmt "$(per "$(inc w_floor '^standard_ExecutorStart$')" "$WN")") for the bare UPDATE, its
  CHECK constraints $(fmt "$(per "$(inc w_consume '^ExecConstraints$')" "$WN")") and its
  foreign-key checks $(fmt "$(per "$(inc w_consume '^AfterTriggerEndQuery$')" "$WN")"). The bare
  UPDATE is not a floor any ledger can reach: the usage record alone (three index insertions, a
  foreign-key check that locks the catalog row of the feature) adds
  $(fmt "$(per "$(sub "$wfl" "$wf")" "$WN")") instructions to the UPDATE's
  $(fmt "$(per "$wf" "$WN")"), and on one hot user the whole statement, record included, runs
  while the counter row is locked, so that user's writers queue for it; case 3 compares both.
  Reaching 0.9× the bare UPDATE would take writing no usage record inside the counter's lock
  (a separate statement before it, two executor start-ups per use, and a delete when the
  counter refuses), or no ledger at all.
* **record_feature_usage against the PL/pgSQL reference.** Both write the same counter and
  record into the same tables; the reference's whole call costs
  $(fmt "$(per "$wrp" "$WN")") instructions, of which the counter UPDATE with its record, as
  one statement with nothing else, is $(fmt "$(per "$wfl" "$WN")")
  ($(pct "$wfl" "$wrp")). 1.5× the reference's throughput would leave a call
  $(fmt "$(per "$((wrp * 2 / 3))" "$WN")") instructions, commit included: $(x "$((wrp * 2 / 3))" "$wfl")
  what those two writes cost alone, so $(fmt "$(per "$(sub "$((wrp * 2 / 3))" "$wfl")" "$WN")") would
  remain for calling the function, reading the subscription and working out the period, whose
  two index reads alone take $(fmt "$(per "$n_probe" "$N")") in a check, before the client's
  share, which is the same for both and brings the ratio closer to 1. No implementation that
  writes the same ledger rows through the executor reaches it. On one hot user the native call also queues for the subscription's
  row lock that keeps a concurrent change from slipping between its read and its write (the
  reference takes none, and counts against whatever period it read).
EOF
