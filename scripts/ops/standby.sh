#!/usr/bin/env bash
# Hot standby: a primary (wal_level=replica) and a streaming replica made with
# pg_basebackup -R, both on this machine. With the data of tests/ops/dump_restore_data.sql
# loaded on the primary and replayed on the replica:
#   * the replica is in recovery and the reading functions (check_user_quota,
#     get_user_storage_quota, usage_overview, get_quota_period, verify_ledger) answer there
#     exactly as on the primary (tests/ops/snapshot.sql on both, compared with diff);
#   * every writing function (record_feature_usage, consume, refund_usage by id and by key,
#     adjust_quota, clear_custom_quota) fails on the replica with SQLSTATE 25006 and a message
#     saying it cannot write on a server in recovery;
#   * in a read-only transaction on the primary (default_transaction_read_only, as a pooler
#     routing reads may set it) the readers answer and the writers fail with 25006 as well;
#   * a use recorded on the primary afterwards is seen by check_user_quota on the replica.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cluster.sh
source scripts/ops/common.sh

BASE=/tmp/pg_entitlements-ops-standby
PRIMARY=$BASE/primary
REPLICA=$BASE/replica
PRIMARY_PORT=55452
REPLICA_PORT=55453
DB=standby_db

install_extension
trap 'cluster_stop "$REPLICA"; cluster_stop "$PRIMARY"' EXIT
rm -rf "$BASE" && mkdir -p "$BASE"
cluster_start "$PRIMARY" "$PRIMARY_PORT" timezone=UTC wal_level=replica max_wal_senders=4
echo "==> hot standby (primary: $PRIMARY port $PRIMARY_PORT; replica: $REPLICA port $REPLICA_PORT)"
as_postgres "$PG_BIN/createdb" -h "$PRIMARY" -p "$PRIMARY_PORT" "$DB"
sql "$PRIMARY" "$PRIMARY_PORT" "$DB" -c 'CREATE EXTENSION pg_entitlements'
sql "$PRIMARY" "$PRIMARY_PORT" "$DB" -v with_grants=1 -f tests/ops/dump_restore_data.sql >"$BASE/data.log" 2>&1 \
  || { cat "$BASE/data.log"; fail "loading tests/ops/dump_restore_data.sql on the primary failed"; }

check "a streaming replica from pg_basebackup -R"
mkdir -p "$REPLICA" && chown postgres: "$REPLICA"
as_postgres "$PG_BIN/pg_basebackup" -h "$PRIMARY" -p "$PRIMARY_PORT" -U postgres \
  -D "$REPLICA/data" -R -X stream -c fast >"$REPLICA/basebackup.log" 2>&1 \
  || { cat "$REPLICA/basebackup.log"; fail "pg_basebackup failed"; }
as_postgres "$PG_BIN/pg_ctl" -D "$REPLICA/data" -l "$REPLICA/server.log" \
  -o "-p $REPLICA_PORT -k $REPLICA -c listen_addresses=localhost -c hot_standby=on" -w start \
  >/dev/null || { cat "$REPLICA/server.log"; fail "the replica did not start"; }
[ "$(sql_value "$REPLICA" "$REPLICA_PORT" "$DB" "SELECT pg_is_in_recovery()")" = t ] \
  || fail "the replica is not in recovery"
ok "the replica runs in recovery (hot standby)"

# wait_for_replay: until the replica has replayed everything the primary has written so far.
wait_for_replay() {
  local lsn caught
  lsn=$(sql_value "$PRIMARY" "$PRIMARY_PORT" "$DB" "SELECT pg_current_wal_lsn()")
  for _ in $(seq 1 600); do
    caught=$(sql_value "$REPLICA" "$REPLICA_PORT" "$DB" \
      "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")
    [ "$caught" = t ] && return 0
    sleep 0.1
  done
  fail "the replica did not replay up to $lsn within a minute"
}
wait_for_replay
state=$(sql_value "$PRIMARY" "$PRIMARY_PORT" "$DB" \
  "SELECT state FROM pg_stat_replication WHERE application_name = 'walreceiver'")
[ "$state" = streaming ] || fail "the replica is not streaming (pg_stat_replication.state: '$state')"
ok "the replica streams from the primary and has replayed the data"

check "the reading functions answer on the replica exactly as on the primary"
sql "$PRIMARY" "$PRIMARY_PORT" "$DB" -f tests/ops/snapshot.sql >"$BASE/primary.snapshot" 2>"$BASE/snapshot.err" \
  || { cat "$BASE/snapshot.err"; fail "reading the quota answers on the primary failed"; }
sql "$REPLICA" "$REPLICA_PORT" "$DB" -f tests/ops/snapshot.sql >"$BASE/replica.snapshot" 2>"$BASE/snapshot.err" \
  || { cat "$BASE/snapshot.err"; fail "a reading function failed on the replica (above)"; }
same_files "$BASE/primary.snapshot" "$BASE/replica.snapshot" \
  "the replica answers differently from the primary (diff above: - primary, + replica)"
answers=$(grep -c '^ *[0-9]* | [a-z_]* *| [tf] ' "$BASE/replica.snapshot" || true)
[ "$answers" -ge 40 ] || fail "expected at least 40 check_user_quota answers, found $answers"
ok "check_user_quota, get_user_storage_quota, usage_overview, get_quota_period, anniversary_period, verify_ledger and every table agree ($answers check_user_quota answers)"

check "every writing function fails on the replica with SQLSTATE 25006"
id=$(sql_value "$REPLICA" "$REPLICA_PORT" "$DB" \
  "SELECT id FROM quota.usage_records WHERE refund_of IS NULL AND idempotency_key = 'u1-articles-1'")
[ -n "$id" ] || fail "the replica has no usage record with key u1-articles-1"
before=$(sql_value "$REPLICA" "$REPLICA_PORT" "$DB" "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM quota.usage_records t")
while IFS= read -r call; do
  [ -n "$call" ] || continue
  out=$(sql "$REPLICA" "$REPLICA_PORT" "$DB" -v VERBOSITY=verbose -c "$call" 2>&1) \
    && fail "on the replica, $call succeeded: $out"
  echo "$out" | grep -q '^ERROR:  25006: ' \
    || fail "on the replica, $call did not fail with SQLSTATE 25006: $out"
  echo "$out" | grep -q "cannot write on a server in recovery (hot standby)" \
    || fail "on the replica, $call failed without saying why: $out"
  ok "$call -> $(echo "$out" | head -1)"
done <<EOF_CALLS
SELECT * FROM quota.record_feature_usage(1, 'articles_per_month', 'article', 1, 1, NULL, 'standby-1')
SELECT * FROM quota.record_feature_usage(1, 'articles_per_month')
SELECT * FROM quota.consume(1, 'articles_per_month', 1, 'standby-2')
SELECT * FROM quota.consume(1, 'articles_per_month')
SELECT * FROM quota.consume(1, 'articles_per_month', 3, 'u1-articles-1')
SELECT * FROM quota.refund_usage($id)
SELECT * FROM quota.refund_usage(1, 'u1-articles-1')
SELECT * FROM quota.adjust_quota(1, 'articles_per_month', 50, 'standby test', 'ops')
SELECT * FROM quota.clear_custom_quota(1, 'articles_per_month', 'standby test', 'ops')
EOF_CALLS
after=$(sql_value "$REPLICA" "$REPLICA_PORT" "$DB" "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM quota.usage_records t")
[ "$before" = "$after" ] || fail "the usage records changed on the replica"

check "in a read-only transaction on the primary, reads work and writers fail with 25006"
read_only="SET default_transaction_read_only = on"
sql "$PRIMARY" "$PRIMARY_PORT" "$DB" -c "$read_only" \
  -c "SELECT * FROM quota.check_user_quota(1, 'articles_per_month')" \
  -c "SELECT quota.get_user_storage_quota(1)" -c "SELECT * FROM quota.usage_overview(1)" \
  -c "SELECT * FROM quota.get_quota_period(1, 'articles_per_month')" >/dev/null 2>"$BASE/ro.err" \
  || { cat "$BASE/ro.err"; fail "a reading function failed in a read-only transaction"; }
for call in "SELECT * FROM quota.consume(1, 'articles_per_month')" \
            "SELECT quota.record_feature_usage(1, 'articles_per_month')" \
            "SELECT * FROM quota.refund_usage($id)" \
            "SELECT * FROM quota.adjust_quota(1, 'articles_per_month', 50, 'read-only test')"; do
  out=$(sql "$PRIMARY" "$PRIMARY_PORT" "$DB" -v VERBOSITY=verbose -c "$read_only" -c "$call" 2>&1) \
    && fail "in a read-only transaction, $call succeeded: $out"
  echo "$out" | grep -q '^ERROR:  25006: ' \
    || fail "in a read-only transaction, $call did not fail with SQLSTATE 25006: $out"
done
ok "check_user_quota, get_user_storage_quota, usage_overview, get_quota_period answer; consume, record_feature_usage, refund_usage, adjust_quota fail with 25006"

check "a use recorded on the primary is seen on the replica"
sql_value "$PRIMARY" "$PRIMARY_PORT" "$DB" "SELECT allowed FROM quota.consume(6, 'articles_per_month', 2, 'standby-after')" >/dev/null
wait_for_replay
primary=$(sql_value "$PRIMARY" "$PRIMARY_PORT" "$DB" "SELECT current_usage FROM quota.check_user_quota(6, 'articles_per_month')")
replica=$(sql_value "$REPLICA" "$REPLICA_PORT" "$DB" "SELECT current_usage FROM quota.check_user_quota(6, 'articles_per_month')")
# 25 of the allowance, 5 of a promotion grant, the booster pack's 20, 1 beyond the limit and a
# hold of 1 (tests/ops/dump_restore_data.sql), then these 2 beyond the limit, which allows 4.
[ "$primary" = 54 ] || fail "user 6 has used $primary articles on the primary, expected 54"
[ "$replica" = "$primary" ] || fail "check_user_quota on the replica says $replica, the primary $primary"
ok "check_user_quota(6, 'articles_per_month') is $replica on both"

echo "==> hot standby: all checks passed"
