#!/usr/bin/env bash
# Where an end-to-end transaction's time goes: perf samples of the one backend serving a 1-client
# `pgbench -M prepared` run, for each script given, on the running bench cluster. Called by
# scripts/bench.sh after case 2:
#
#   bench/e2e_profile.sh DIR PORT LABEL=SCRIPT...   -> prints a markdown section on stdout
#
# Case 2 measures whole transactions, which bench/profile.sh (callgrind, one statement looping
# in a single-user backend) cannot: the protocol, the executor start of each statement, the
# commit, and caches gone cold between calls. There are no hardware counters on these machines,
# so perf samples the software clock (cpu-clock), with DWARF call stacks because PostgreSQL is
# built without frame pointers. Figures are µs of backend CPU per transaction: the share of
# the samples under a function × the backend's CPU time ÷ the transactions run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh

DIR=$1 PORT=$2; shift 2
SECS=${E2E_PROFILE_SECONDS:-6}
HZ=999
W=$DIR/work
command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 1; }

# Inclusive shares (percent of samples with the function anywhere on the stack), by name.
declare -A SHARE CPU_US
# The functions a backend spends a prepared transaction in, PostgresMain's direct work:
# reading the next message and sending the result (secure_read waits in epoll and counts only
# while on the CPU), starting and committing the transaction, starting the executor, running it.
FUNCS="secure_read secure_write StartTransactionCommand CommitTransactionCommand PortalStart PortalRun ExecInitFunctionScan check_user_quota_wrapper index_getnext_slot"

labels=()
for arg in "$@"; do
  label=${arg%%=*} script=${arg#*=}
  labels+=("$label")
  log=$W/e2e-$label.log data=$W/perf-e2e-$label.data
  PGAPPNAME="e2e-$label" "$PG_BIN/pgbench" -n -M prepared -h "$DIR" -p "$PORT" -U postgres -c 1 \
    -T $((SECS + 4)) -f "$script" bench >"$log" 2>&1 &
  bench_pid=$!
  sleep 2
  pid=$("$PG_BIN/psql" -X -At -h "$DIR" -p "$PORT" -U postgres -d bench \
        -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'e2e-$label'")
  [ -n "$pid" ] || { echo "no backend for $label" >&2; exit 1; }
  # The backend's CPU time (utime + stime, in clock ticks) over the window.
  ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
  t0=$(ticks)
  perf record -q -e cpu-clock -F $HZ --call-graph dwarf,16384 -p "$pid" -o "$data" -- sleep "$SECS" \
    >/dev/null 2>&1
  t1=$(ticks)
  wait "$bench_pid" || { cat "$log" >&2; exit 1; }
  tps=$(awk '/^tps = / {print $3; exit}' "$log")
  # µs of backend CPU per transaction: CPU seconds over the window ÷ (tps × window).
  CPU_US[$label]=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v s="$SECS" -v tps="$tps" \
                     'BEGIN { printf "%.1f", 1e6 * (d / hz) / (s * tps) }')
  perf report -i "$data" --children --sort sym -g none --percent-limit 0.01 2>/dev/null \
    | awk '$1 ~ /%$/ && $3 == "[.]" { sub(/%/, "", $1); $2 = $3 = ""; sub(/^ +/, ""); print }' \
    >"$W/perf-e2e-$label.txt"
  for f in $FUNCS; do
    # the line is "PCT  SYMBOL"; keep the largest share of an exact symbol match
    SHARE[$label,$f]=$(awk -v f="$f" '{ p = $1; $1 = ""; sub(/^ +/, ""); if ($0 == f && p > m) m = p } END { printf "%.1f", m + 0 }' \
                         "$W/perf-e2e-$label.txt")
  done
  SHARE[$label,tps]=$tps
  rm -f "$data"
done

us() { awk -v p="${SHARE[$1,$2]}" -v c="${CPU_US[$1]}" 'BEGIN { printf "%.1f", p * c / 100 }'; }
rest() {
  awk -v c="${CPU_US[$1]}" -v a="${SHARE[$1,secure_read]}" -v b="${SHARE[$1,secure_write]}" \
      -v s="${SHARE[$1,StartTransactionCommand]}" -v m="${SHARE[$1,CommitTransactionCommand]}" \
      -v ps="${SHARE[$1,PortalStart]}" -v pr="${SHARE[$1,PortalRun]}" \
      'BEGIN { printf "%.1f", c * (100 - a - b - s - m - ps - pr) / 100 }'
}

cat <<EOF
## Where an end-to-end transaction goes (perf, one client)

\`bench/e2e_profile.sh\`: perf samples (software clock, ${HZ} Hz, DWARF stacks) of the backend
serving a 1-client \`pgbench -M prepared\` run of ${SECS} s per script, right after case 2 on the
same cluster. µs of backend CPU per transaction (the backend's utime + stime over the window ÷
its transactions), split by the inclusive share of the samples under each function. The client
and the kernel's scheduling of it are not in these figures; case 2's tps include them.

EOF
header="| µs of backend CPU per transaction |"; sep="|---|"
for l in "${labels[@]}"; do header="$header $l |"; sep="$sep---|"; done
echo "$header"; echo "$sep"
line() { # TITLE FUNC
  local out="| $1 |" l
  for l in "${labels[@]}"; do out="$out $(us "$l" "$2") |"; done
  echo "$out"
}
out="| tps of the profiled run |"; for l in "${labels[@]}"; do out="$out $(printf '%.0f' "${SHARE[$l,tps]}") |"; done; echo "$out"
out="| **backend CPU, whole transaction** |"; for l in "${labels[@]}"; do out="$out **${CPU_US[$l]}** |"; done; echo "$out"
line "reading the next message (\`secure_read\`, on CPU)" secure_read
line "sending the result (\`secure_write\`)" secure_write
line "transaction start (\`StartTransactionCommand\`)" StartTransactionCommand
line "commit (\`CommitTransactionCommand\`)" CommitTransactionCommand
line "executor start (\`PortalStart\`)" PortalStart
line "… of which the function scan's setup (\`ExecInitFunctionScan\`)" ExecInitFunctionScan
line "execution (\`PortalRun\`)" PortalRun
line "… of which \`check_user_quota\` itself" check_user_quota_wrapper
line "… of which index and heap reads (\`index_getnext_slot\`)" index_getnext_slot
out="| everything else (bind, plan cache, snapshot, main loop) |"; for l in "${labels[@]}"; do out="$out $(rest "$l") |"; done; echo "$out"
