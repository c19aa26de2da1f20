#!/usr/bin/env bash
# pg_upgrade across majors: a PostgreSQL 15 cluster using the extension (subscriptions,
# counters, ledger, alerts, a user-added feature: tests/ops/dump_restore_data.sql; and the seed
# application attached in place with quota.attach) is upgraded with pg_upgrade to the major of
# PG_MAJOR (17). Checks that
#   (a) pg_upgrade accepts the cluster (the new major's library is installed) and finishes,
#   (b) every quota table and every reading function's answer is identical afterwards
#       (tests/ops/snapshot.sql), and so are the attached application's tables and answers,
#   (c) verify_ledger() is empty in both databases, and
#   (d) the extension keeps working: keyed retries count nothing, new uses count once, and
#       ALTER EXTENSION UPDATE has nothing to do.
# Runs where both servers are (scripts/test.sh: inside the trixie root, where scripts/setup.sh
# puts Debian 12's PostgreSQL 15 beside Debian's 17), with the 15 library installed from the
# postgresql-15-pg-entitlements package.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${PG_MAJOR:?PG_MAJOR names the major to upgrade to}"
source scripts/cluster.sh
source scripts/ops/common.sh

OLD_MAJOR=15
OLD_BIN=/usr/lib/postgresql/$OLD_MAJOR/bin
NEW_BIN=$PG_BIN
DIR=/tmp/pg_entitlements-ops-pg-upgrade
PORT=55465
[ -x "$OLD_BIN/postgres" ] || fail "no PostgreSQL $OLD_MAJOR in $OLD_BIN (scripts/setup.sh puts one in the trixie root)"
[ -f "/usr/lib/postgresql/$OLD_MAJOR/lib/pg_entitlements.so" ] \
  || fail "pg_entitlements is not installed for PostgreSQL $OLD_MAJOR (dpkg -x of its package)"

install_extension
trap 'PG_BIN=$OLD_BIN cluster_stop "$DIR/old"; cluster_stop "$DIR/new"' EXIT
rm -rf "$DIR" && mkdir -p "$DIR" && chown postgres: "$DIR"
echo "==> pg_upgrade $OLD_MAJOR -> $PG_MAJOR (clusters in $DIR, port $PORT)"
PG_BIN=$OLD_BIN cluster_start "$DIR/old" "$PORT" timezone=UTC
old_version=$(sql_value "$DIR/old" "$PORT" postgres "SHOW server_version")

check "a $OLD_MAJOR cluster with the extension in use"
as_postgres "$OLD_BIN/createdb" -h "$DIR/old" -p "$PORT" app
sql "$DIR/old" "$PORT" app -c 'CREATE EXTENSION pg_entitlements'
sql "$DIR/old" "$PORT" app -v with_grants=1 -f tests/ops/dump_restore_data.sql >"$DIR/app.log" 2>&1 \
  || { cat "$DIR/app.log"; fail "loading tests/ops/dump_restore_data.sql failed"; }
empty=$(empty_quota_tables "$DIR/old" "$PORT" app)
[ -z "$empty" ] || fail "quota tables without rows: $empty"
# The seed application, attached in place: the fixes attach_problems proposes, then attach,
# then uses through the extension on the application's own tables.
as_postgres "$OLD_BIN/createdb" -h "$DIR/old" -p "$PORT" seed
sql "$DIR/old" "$PORT" seed >"$DIR/seed.log" 2>&1 <<'SQL' || { cat "$DIR/seed.log"; fail "attaching the seed application failed"; }
SET client_min_messages = warning;
\i tests/fixtures/seed_app.sql
\i tests/fixtures/seed_app_timestamptz.sql
CREATE EXTENSION pg_entitlements;
SELECT fix FROM quota.attach_problems('public') WHERE fix IS NOT NULL ORDER BY problem \gexec
SELECT quota.attach('public');
SELECT quota.consume(user_id, 'articles_per_month', 1, 'before-' || user_id)
  FROM public.user_subscriptions ORDER BY user_id;
SQL
ok "database app: data in every quota table; database seed: the seed application attached, with uses"

# seed_snapshot DIR DB: the attached application's tables (md5 of their sorted rows) and the
# answers of check_user_quota for its users and the five features.
seed_snapshot() {
  sql "$1" "$PORT" seed <<'SQL'
\pset footer off
SELECT format('SELECT %L AS "table", count(*) AS rows, md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) AS md5 FROM public.%I t',
              c.relname, ',', '', c.relname)
  FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY c.relname
\gexec
SELECT u.user_id, f, c.*
  FROM (SELECT DISTINCT user_id FROM public.user_subscriptions) u,
       unnest(ARRAY['articles_per_month', 'publish_per_month', 'keyword_distillation',
                    'platform_accounts', 'storage_space']) f,
       LATERAL quota.check_user_quota(u.user_id, f) c
 ORDER BY 1, 2;
SELECT count(*) AS ledger_problems FROM quota.verify_ledger();
SQL
}
snapshots() {
  local side=$1
  sql "$DIR/$side" "$PORT" app -f tests/ops/snapshot.sql >"$DIR/app.$side" 2>"$DIR/app.$side.err" \
    || { cat "$DIR/app.$side.err"; fail "reading app on $side failed"; }
  seed_snapshot "$DIR/$side" >"$DIR/seed.$side" 2>"$DIR/seed.$side.err" \
    || { cat "$DIR/seed.$side.err"; fail "reading seed on $side failed"; }
}
snapshots old
PG_BIN=$OLD_BIN cluster_stop "$DIR/old"

check "(a) pg_upgrade to $PG_MAJOR"
cluster_init "$DIR/new" timezone=UTC
if ! (cd "$DIR" && as_postgres "$NEW_BIN/pg_upgrade" -b "$OLD_BIN" -B "$NEW_BIN" \
        -d "$DIR/old/data" -D "$DIR/new/data" -p "$PORT" -P "$PORT" -s "$DIR" -U postgres \
        >"$DIR/pg_upgrade.log" 2>&1); then
  cat "$DIR/pg_upgrade.log"
  find "$DIR/new/data/pg_upgrade_output.d" -name '*.log' -exec tail -20 {} + 2>/dev/null || true
  fail "pg_upgrade failed (above)"
fi
cluster_run "$DIR/new" "$PORT"
new_version=$(sql_value "$DIR/new" "$PORT" postgres "SHOW server_version")
ok "pg_upgrade from $old_version to $new_version"

# ledger_empty WHEN: verify_ledger() has no row in either database of the new cluster.
ledger_empty() {
  local db ledger
  for db in app seed; do
    ledger=$(sql_value "$DIR/new" "$PORT" $db "SELECT count(*) FROM quota.verify_ledger()")
    [ "$ledger" = 0 ] || fail "quota.verify_ledger() returns $ledger rows in $db $1"
  done
}

check "(b) every table and answer identical, (c) the ledger holds"
snapshots new
same_files "$DIR/app.old" "$DIR/app.new" "app differs after pg_upgrade (diff above: - $OLD_MAJOR, + $PG_MAJOR)"
same_files "$DIR/seed.old" "$DIR/seed.new" "the attached seed differs after pg_upgrade (diff above: - $OLD_MAJOR, + $PG_MAJOR)"
tables=$(snapshot_tables "$DIR/app.new")
ledger_empty "after pg_upgrade"
ok "app: $tables quota tables and every answer identical; seed: its tables and answers identical; verify_ledger() empty in both"

check "(d) the extension keeps working on $PG_MAJOR"
for db in app seed; do
  sql "$DIR/new" "$PORT" $db -c 'ALTER EXTENSION pg_entitlements UPDATE' >"$DIR/$db.update.log" 2>&1 \
    || { cat "$DIR/$db.update.log"; fail "ALTER EXTENSION UPDATE failed in $db"; }
done
grep -q 'already installed' "$DIR/app.update.log" || { cat "$DIR/app.update.log"; fail "ALTER EXTENSION UPDATE had something to do"; }
counted="SELECT sum(usage_count) FROM public.user_usage"
before=$(sql_value "$DIR/new" "$PORT" seed "$counted")
retried=$(sql_value "$DIR/new" "$PORT" seed "
  SELECT bool_and(allowed) FROM public.user_subscriptions s,
         LATERAL quota.consume(s.user_id, 'articles_per_month', 1, 'before-' || s.user_id) c")
[ "$retried" = t ] || fail "a retry of a use made before the upgrade was refused"
[ "$(sql_value "$DIR/new" "$PORT" seed "$counted")" = "$before" ] || fail "retries of uses made before the upgrade counted again"
users=$(sql_value "$DIR/new" "$PORT" seed "SELECT count(*) FROM public.user_subscriptions")
fresh=$(sql_value "$DIR/new" "$PORT" seed "
  SELECT count(*) FILTER (WHERE allowed) FROM public.user_subscriptions s,
         LATERAL quota.consume(s.user_id, 'articles_per_month', 1, 'after-' || s.user_id) c")
[ "$(sql_value "$DIR/new" "$PORT" seed "$counted")" = $((before + fresh)) ] \
  || fail "new uses after the upgrade did not count once each"
allowed=$(sql_value "$DIR/new" "$PORT" app "SELECT allowed FROM quota.consume(1, 'articles_per_month', 1, 'after-upgrade')")
[ "$allowed" = t ] || fail "a new use in app after the upgrade: expected allowed, got [$allowed]"
ledger_empty "after new uses"
ok "ALTER EXTENSION UPDATE: nothing to do; $users keyed retries counted nothing, $fresh new uses counted once; verify_ledger() empty"
echo "==> pg_upgrade $OLD_MAJOR -> $PG_MAJOR: all checks passed"
