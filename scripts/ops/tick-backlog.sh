#!/usr/bin/env bash
# A tick after a week of downtime (issue 18): TICK_USERS users (default 100000) whose
# professional subscriptions all ended during the last week, spread over it, none of them
# expired yet, with the free plan as fallback. quota.tick() is called until it says more =
# false, each call in a transaction of its own with the default batch of
# quota.settings.tick_batch_size (1000):
#   * every call handles at most one batch: expired <= 1000 per call, so the backlog drains in
#     ceil(TICK_USERS / 1000) calls, none of them one huge transaction;
#   * afterwards every user has exactly one expired subscription and one fallback starting at
#     its end; every storage_quota_bytes equals get_user_storage_quota(); one expired and one
#     fallback_started row per user in quota.subscription_changes;
#   * a tick after that finds nothing.
# Prints how long each call took (min, median, p95, max, total), which bench/tick_backlog.md records
# (scripts/bench.sh copies it into BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cluster.sh
source scripts/ops/common.sh

DIR=/tmp/pg_entitlements-ops-tick
PORT=55472
DB=tick_db
USERS=${TICK_USERS:-100000}

suite_cluster "$DIR" "$PORT" timezone=UTC
echo "==> a tick after a week of downtime: $USERS users (cluster in $DIR, port $PORT)"
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" "$DB"
sql "$DIR" "$PORT" "$DB" -v users="$USERS" <<'SQL'
CREATE EXTENSION pg_entitlements;
INSERT INTO quota.subscription_plans (plan_code, plan_name, duration_days)
VALUES ('free', 'Free', 30), ('professional', 'Professional', 30);
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, feature_unit)
SELECT id, 'storage_space', CASE plan_code WHEN 'free' THEN 100 ELSE 1024 END, 'MB'
  FROM quota.subscription_plans;
-- The subscriptions as they were a week ago, before the downtime: active, each user's storage
-- row at the professional plan's 1 GB (written as the trigger wrote it then).
ALTER TABLE quota.user_subscriptions DISABLE TRIGGER USER;
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT u, (SELECT id FROM quota.subscription_plans WHERE plan_code = 'professional'),
       now() - interval '37 days' + (u % 604800) * interval '1 second',
       now() - interval '7 days' + (u % 604800) * interval '1 second'
  FROM generate_series(1, :users) u;
ALTER TABLE quota.user_subscriptions ENABLE TRIGGER USER;
INSERT INTO quota.user_storage_usage (user_id, storage_quota_bytes)
SELECT u, 1073741824 FROM generate_series(1, :users) u;
INSERT INTO quota.settings (fallback_plan_code) VALUES ('free');
-- The instants before the downtime were resynced by the ticks of that time.
INSERT INTO quota.tick_state (storage_synced_to, grants_expired_to) VALUES (now() - interval '7 days', now() - interval '7 days');
ANALYZE;
-- One tick and how long it took in the server.
CREATE FUNCTION public.timed_tick(OUT expired integer, OUT fallbacks integer, OUT more boolean,
                                  OUT ms numeric)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    r record;
BEGIN
    SELECT * INTO r FROM quota.tick();
    expired := r.expired; fallbacks := r.fallbacks; more := r.more;
    ms := round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1);
END
$$;
SQL

check "quota.tick() until more = false, one transaction per call"
times=$DIR/times.txt; : >"$times"
calls=0
while :; do
  line=$(sql_value "$DIR" "$PORT" "$DB" "SELECT * FROM public.timed_tick()" | tr '|' ' ')
  read -r expired fallbacks more ms <<<"$line"
  calls=$((calls + 1))
  [ "$expired" -le 1000 ] || fail "call $calls expired $expired subscriptions, more than a batch"
  [ "$fallbacks" = "$expired" ] || fail "call $calls: $expired expired, $fallbacks fallbacks"
  echo "$ms $expired" >>"$times"
  [ "$more" = t ] || break
  [ "$calls" -le $((USERS / 1000 + 5)) ] || fail "still more after $calls calls"
done
expected_calls=$(( (USERS + 999) / 1000 ))
[ "$calls" = "$expected_calls" ] || fail "$calls calls, expected $expected_calls"
ok "$calls calls of at most 1000 each"
sort -n "$times" | awk -v calls="$calls" '
  { ms[NR] = $1; total += $1; n += $2 }
  END {
    printf "  per call (ms): min %.1f, median %.1f, p95 %.1f, max %.1f; total %.1f s for %d subscriptions (%.2f ms each)\n",
      ms[1], ms[int((NR + 1) / 2)], ms[int(NR * 0.95 + 0.999)], ms[NR], total / 1000, n, total / n
  }'

check "every user expired once, with a fallback from the end; storage in sync; events audited"
result=$(sql_value "$DIR" "$PORT" "$DB" "
  SELECT (SELECT count(*) FROM quota.user_subscriptions WHERE status = 'expired') || ' ' ||
         (SELECT count(*) FROM quota.user_subscriptions s JOIN quota.user_subscriptions e
                 ON e.user_id = s.user_id AND e.status = 'expired' AND s.start_date = e.end_date
           WHERE s.status = 'active') || ' ' ||
         (SELECT count(*) FROM quota.user_storage_usage
           WHERE storage_quota_bytes = quota.get_user_storage_quota(user_id)
             AND storage_quota_bytes = 104857600) || ' ' ||
         (SELECT count(*) FROM quota.subscription_changes WHERE change = 'expired') || ' ' ||
         (SELECT count(*) FROM quota.subscription_changes WHERE change = 'fallback_started')")
[ "$result" = "$USERS $USERS $USERS $USERS $USERS" ] \
  || fail "expired, fallbacks from the end, storage in sync, audited expiries and fallbacks: $result (expected $USERS each)"
ok "$USERS expired, $USERS fallbacks from their ends, $USERS storage rows at 100 MB, audited"

check "a tick after the backlog finds nothing"
again=$(sql_value "$DIR" "$PORT" "$DB" "SELECT expired || ' ' || fallbacks || ' ' || storage_resynced || ' ' || more FROM quota.tick()")
[ "$again" = "0 0 0 false" ] || fail "the next tick did: $again"
ok "0 expired, 0 fallbacks, 0 resynced, more = false"
echo "==> tick backlog: all checks passed"
