#!/usr/bin/env bash
# pg_cron runs quota.tick() every minute (issue 18): in a cluster with
# shared_preload_libraries = pg_cron, the one-line job of the README is scheduled; a subscription
# ends a few seconds later, and within 75 seconds of its end
#   * it is marked expired and the fallback plan's subscription starts at its end_date,
#   * its storage_quota_bytes follows (the fallback's quota),
#   * a client that LISTENs on quota_subscription received the expired and fallback_started
#     events, and storage_quota_changed,
#   * cron.job_run_details shows the job's runs succeeded.
# Needs Debian's postgresql-15-cron (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cluster.sh
source scripts/ops/common.sh

DIR=/tmp/pg_entitlements-ops-cron
PORT=55471
DB=cron_db

[ -f "$("$PG_CONFIG" --pkglibdir)/pg_cron.so" ] \
  || fail "pg_cron is not installed for PostgreSQL $PG_MAJOR (apt-get install postgresql-$PG_MAJOR-cron)"
# pg_cron runs its jobs in background workers of the database it is configured for.
suite_cluster "$DIR" "$PORT" timezone=UTC shared_preload_libraries=pg_cron \
  cron.database_name=$DB cron.use_background_workers=on
trap 'kill "${listener:-}" 2>/dev/null || true; cluster_stop "$DIR"' EXIT
echo "==> pg_cron runs quota.tick() (cluster in $DIR, port $PORT)"
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" "$DB"
sql "$DIR" "$PORT" "$DB" <<'SQL'
CREATE EXTENSION pg_entitlements;
CREATE EXTENSION pg_cron;
INSERT INTO quota.subscription_plans (plan_code, plan_name, duration_days)
VALUES ('free', 'Free', 30), ('professional', 'Professional', 30);
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, feature_unit)
SELECT id, 'storage_space', CASE plan_code WHEN 'free' THEN 100 ELSE 1024 END, 'MB'
  FROM quota.subscription_plans;
INSERT INTO quota.settings (fallback_plan_code) VALUES ('free');
SQL

check "the README's job: SELECT cron.schedule('pg_entitlements tick', '* * * * *', 'SELECT quota.tick()')"
job=$(sql_value "$DIR" "$PORT" "$DB" "SELECT cron.schedule('pg_entitlements tick', '* * * * *', 'SELECT quota.tick()')")
ok "job $job scheduled every minute"

# The listener: LISTEN, then a statement a second, after which psql prints what arrived.
events=$DIR/events.log
{ echo "LISTEN quota_subscription; LISTEN storage_quota_changed;"
  for _ in $(seq 1 100); do echo "SELECT pg_sleep(1);"; done; } \
  | PGTZ=UTC psql -X -q -h "$DIR" -p "$PORT" -U postgres -d "$DB" >"$events" 2>&1 &
listener=$!

check "a subscription that ends 5 seconds from now: expired, fallback and events within 75 s of its end"
sql "$DIR" "$PORT" "$DB" -c "
  INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
  SELECT 7, id, now() - interval '30 days', now() + interval '5 seconds'
    FROM quota.subscription_plans WHERE plan_code = 'professional'"
[ "$(sql_value "$DIR" "$PORT" "$DB" "SELECT storage_quota_bytes FROM quota.user_storage_usage WHERE user_id = 7")" = 1073741824 ] \
  || fail "user 7 does not start with 1 GB of storage"
ends=$(sql_value "$DIR" "$PORT" "$DB" "SELECT extract(epoch FROM end_date)::bigint FROM quota.user_subscriptions WHERE user_id = 7")
status=
while [ "$(date +%s)" -le $((ends + 75)) ]; do
  status=$(sql_value "$DIR" "$PORT" "$DB" "SELECT string_agg(p.plan_code || ':' || s.status, ',' ORDER BY s.id)
                                            FROM quota.user_subscriptions s JOIN quota.subscription_plans p ON p.id = s.plan_id
                                           WHERE s.user_id = 7")
  if [ "$status" = "professional:expired,free:active" ] \
     && grep -q '"event": "fallback_started"' "$events" \
     && grep -q '"new_bytes":104857600' "$events"; then
    break
  fi
  sleep 1
done
waited=$(( $(date +%s) - ends ))
[ "$status" = "professional:expired,free:active" ] \
  || fail "75 s after the end, user 7's subscriptions are '$status' (cron.job_run_details: $(sql_value "$DIR" "$PORT" "$DB" "SELECT string_agg(status || ' ' || coalesce(return_message, ''), '; ') FROM cron.job_run_details"))"
ok "marked expired, the fallback free from its end ($waited s after the end)"
[ "$(sql_value "$DIR" "$PORT" "$DB" "SELECT bool_and(f.start_date = e.end_date) FROM quota.user_subscriptions e, quota.user_subscriptions f WHERE e.user_id = 7 AND f.user_id = 7 AND e.status = 'expired' AND f.status = 'active'")" = t ] \
  || fail "the fallback does not start at the end of the expired subscription"
[ "$(sql_value "$DIR" "$PORT" "$DB" "SELECT storage_quota_bytes = quota.get_user_storage_quota(7) AND storage_quota_bytes = 104857600 FROM quota.user_storage_usage WHERE user_id = 7")" = t ] \
  || fail "user 7's storage_quota_bytes is not the free plan's 100 MB"
ok "storage_quota_bytes = get_user_storage_quota(7) = 104857600"
for event in '"event": "expired"' '"event": "fallback_started"' '"new_bytes":104857600'; do
  grep -q "$event" "$events" || { cat "$events"; fail "the listener did not receive $event"; }
done
ok "the listener received expired, fallback_started and storage_quota_changed"
failed=$(sql_value "$DIR" "$PORT" "$DB" "SELECT count(*) FROM cron.job_run_details WHERE status <> 'succeeded' AND status <> 'running'")
runs=$(sql_value "$DIR" "$PORT" "$DB" "SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'")
[ "$failed" = 0 ] && [ "$runs" -ge 1 ] || fail "cron.job_run_details: $runs succeeded, $failed failed"
ok "cron.job_run_details: $runs run(s) succeeded, none failed"
echo "==> pg_cron: all checks passed"
