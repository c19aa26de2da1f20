#!/usr/bin/env bash
# The online migration of a live seed application to pg_entitlements (README, "Adopting in an
# existing database"), under load. The seed's schema (tests/fixtures/seed_app.sql: local times
# in timestamp columns, Asia/Shanghai) and its own quota functions (tests/migration/
# seed_functions.sql) serve pgbench clients making the seed's calls at a steady rate
# (tests/migration/calls.sql: check, record, the storage update) for the whole run, while
# another session installs the extension, applies the additive fixes attach_problems proposes
# and switches (tests/migration/switch.sql). Checks:
#   * no client call failed, and calls ran before and after the switch;
#   * no column was retyped and no date moved: the subscriptions are as they were;
#   * every use the clients sent is recorded, once: records and counters equal the calls, and
#     quota.check_user_quota counts them all in the current period (the seed's counters
#     continue under the extension);
#   * quota.verify_ledger() is empty.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cluster.sh
source scripts/ops/common.sh

DIR=/tmp/pg_entitlements-ops-migration
PORT=55458
DB=app
SECONDS_UNDER_LOAD=${MIGRATION_SECONDS:-15}
# The application's sessions live in Shanghai: its local times are Shanghai times.
export PGTZ=Asia/Shanghai

suite_cluster "$DIR" "$PORT" timezone=UTC max_connections=40
echo "==> online migration under load (cluster in $DIR, port $PORT)"
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" "$DB"
app() { PGTZ=Asia/Shanghai psql -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres -d "$DB" "$@"; }
app -f tests/fixtures/seed_app.sql -f tests/migration/seed_functions.sql >/dev/null
subscriptions_before=$(app -At -c "SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM public.user_subscriptions s")
columns_before=$(app -At -c "SELECT string_agg(attrelid::regclass || '.' || attname || ' ' || format_type(atttypid, atttypmod), ',' ORDER BY attrelid, attnum)
                               FROM pg_attribute WHERE attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r') AND attnum > 0 AND NOT attisdropped")
records_before=$(app -At -c "SELECT count(*) FROM public.usage_records")
usage_before=$(app -At -c "SELECT sum(usage_count) FROM public.user_usage WHERE feature_code = 'articles_per_month'")

log="$DIR/pgbench.log"
pgbench -n -h "$DIR" -p "$PORT" -U postgres -c 8 -j 2 -R 100 -T "$SECONDS_UNDER_LOAD" \
  -f tests/migration/calls.sql "$DB" >"$log" 2>&1 &
clients=$!

check "step 1: CREATE EXTENSION, the zone of the application's periods"
sleep 2
app -c 'CREATE EXTENSION pg_entitlements' \
    -c "INSERT INTO quota.settings (time_zone, previous_time_zone) VALUES ('Asia/Shanghai', 'Asia/Shanghai')"
ok "installed while the application serves"

check "step 2: the additive fixes attach_problems proposes, each as it says (CONCURRENTLY outside a transaction)"
sleep 1
app -At -c "SELECT problem FROM quota.attach_problems('public', 'Asia/Shanghai') WHERE fix IS NULL" >"$DIR/unfixable"
[ ! -s "$DIR/unfixable" ] || { cat "$DIR/unfixable"; fail "attach_problems reports problems without an additive fix"; }
app -e >"$DIR/fixes.log" <<'SQL'
SELECT fix FROM quota.attach_problems('public', 'Asia/Shanghai') WHERE fix IS NOT NULL \gexec
SQL
remaining=$(app -At -c "SELECT count(*) FROM quota.attach_problems('public', 'Asia/Shanghai')")
[ "$remaining" = 0 ] || fail "$remaining problem(s) left after the fixes"
ok "$(grep -c . "$DIR/fixes.log" || true) statement(s) run; no problem left"

check "step 3: attach and switch the calls, in one transaction"
sleep 2
switched_at=$(app -At -c "SELECT LOCALTIMESTAMP")
app -f tests/migration/switch.sql >/dev/null
ok "switched"

clients_ok=true
wait "$clients" || clients_ok=false
$clients_ok || { cat "$log"; fail "pgbench clients failed (a call of the application failed during the migration)"; }
grep -q "aborted\|failed: [1-9]" "$log" && { cat "$log"; fail "pgbench reports failed or aborted clients"; }

check "the application's calls and data"
IFS='|' read -r sent before after < <(app -At -c "
  SELECT count(*), count(*) FILTER (WHERE at < '$switched_at'), count(*) FILTER (WHERE at >= '$switched_at')
    FROM public.migration_sent")
[ "$before" -gt 0 ] && [ "$after" -gt 0 ] || fail "calls before ($before) and after ($after) the switch expected"
ok "$sent calls, $before before the switch and $after after it, none failed"
[ "$(app -At -c "SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM public.user_subscriptions s")" = "$subscriptions_before" ] \
  || fail "the subscriptions changed"
columns_after=$(app -At -c "SELECT string_agg(attrelid::regclass || '.' || attname || ' ' || format_type(atttypid, atttypmod), ',' ORDER BY attrelid, attnum)
                              FROM pg_attribute WHERE attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r') AND attnum > 0 AND NOT attisdropped")
retyped=$(comm -23 <(tr ',' '\n' <<<"$columns_before" | sort) <(tr ',' '\n' <<<"$columns_after" | sort))
[ -z "$retyped" ] || fail "columns retyped or dropped: $retyped"
ok "no column retyped, no subscription date moved"
IFS='|' read -r records usage current ledger < <(app -At -c "
  SELECT (SELECT count(*) FROM public.usage_records),
         (SELECT sum(usage_count) FROM public.user_usage WHERE feature_code = 'articles_per_month'),
         (SELECT sum(q.current_usage) FROM generate_series(1, 3) u,
                 quota.check_user_quota(u, 'articles_per_month') q),
         (SELECT count(*) FROM quota.verify_ledger())")
[ "$records" = $((records_before + sent)) ] || fail "usage records: $records, expected $records_before + $sent"
[ "$usage" = $((usage_before + sent)) ] || fail "counters: $usage, expected $usage_before + $sent"
[ "$current" = $((usage_before + sent)) ] || fail "check_user_quota counts $current in the current periods, expected $usage_before + $sent"
[ "$ledger" = 0 ] || fail "quota.verify_ledger() returns $ledger rows"
ok "every use recorded once ($records records, counters $usage); the current periods count them all; verify_ledger() empty"
echo "==> online migration: all checks passed"
