#!/usr/bin/env bash
# Upgrades: ALTER EXTENSION pg_entitlements UPDATE from every released version gives what a fresh
# install of the current version gives. The released versions are the install scripts archived
# in sql/archive/pg_entitlements--<version>.sql (archiving a release extends this test). Checks
#   (a) every released version has an update path to the current default_version, made of the
#       scripts sql/pg_entitlements--X--Y.sql of this repository;
#   (b) the roles: after an update from each released version the cluster has the roles,
#       attributes, memberships and role settings a fresh install leaves (roles belong to the
#       cluster: each install is made in a cluster without the extension's roles);
#   (c) per released version, a database created with that version and filled with data
#       (tests/ops/dump_restore_data.sql: every quota table) takes ALTER EXTENSION ... UPDATE and
#       then reports the current version; a database "fresh" gets the current version and the
#       same data;
#   (d) the catalogs of each equal fresh's (tests/ops/catalog.sql, found through pg_depend, no
#       list): every member and its definition, columns in order, constraints, indexes,
#       triggers, comments, owners, ACLs and initial privileges, configuration tables; and no
#       object of schema quota outside the extension;
#   (e) the data, the answers of every reading function and the identity sequences equal
#       fresh's (tests/ops/snapshot.sql);
#   (f) the same writes on each and on fresh (consume, record_feature_usage, refund_usage,
#       adjust_quota, clear_custom_quota, the triggers; tests/ops/upgrade_writes.sql) give the
#       same answers, errors and LISTEN/NOTIFY events and leave the same data; verify_ledger()
#       is empty everywhere.
# The fixture's now() is pinned to one instant so that both databases hold the same dates; the
# stamps now() writes inside the functions are set to that instant before each comparison
# (tests/ops/upgrade_stamps.sql).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cluster.sh
source scripts/ops/common.sh

DIR=/tmp/pg_entitlements-ops-upgrade
PORT=55455

suite_cluster "$DIR" "$PORT" timezone=UTC
echo "==> upgrades (cluster in $DIR, port $PORT)"
EXTDIR=$("$PG_CONFIG" --sharedir)/extension

q() { sql_value "$DIR" "$PORT" postgres "$1"; }

check "(a) every released version has an update path to the current version"
current=$(q "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_entitlements'")
[ -n "$current" ] || fail "pg_entitlements is not installed in $EXTDIR"
released=()
for script in sql/archive/pg_entitlements--*.sql; do
  [ -e "$script" ] || fail "no released version: sql/archive/pg_entitlements--<version>.sql is missing"
  ver=${script#sql/archive/pg_entitlements--}; ver=${ver%.sql}
  [[ $ver =~ ^[0-9A-Za-z._-]+$ && $ver != *--* ]] || fail "$script: not a released version's install script"
  released+=("$ver")
done
mapfile -t released < <(printf '%s\n' "${released[@]}" | sort -V)
older=()
for ver in "${released[@]}"; do
  if [ "$ver" = "$current" ]; then
    # Just released, not yet bumped: the archive is the script this build installs.
    continue
  fi
  [ "$(printf '%s\n' "$ver" "$current" | sort -V | tail -1)" = "$current" ] \
    || fail "released version $ver is newer than the current version $current (Cargo.toml)"
  # cargo pgrx install copies only the update scripts: the released install scripts come from
  # the archive, so that CREATE EXTENSION ... VERSION '$ver' runs exactly what $ver shipped.
  install -m 644 "sql/archive/pg_entitlements--$ver.sql" "$EXTDIR/"
  older+=("$ver")
done
missing=()
for ver in "${older[@]}"; do
  path=$(q "SELECT path FROM pg_extension_update_paths('pg_entitlements')
             WHERE source = '$ver' AND target = '$current'")
  if [ -z "$path" ]; then missing+=("$ver"); continue; fi
  IFS=' ' read -r -a hops <<<"${path//--/ }"
  for ((i = 0; i + 1 < ${#hops[@]}; i++)); do
    step=pg_entitlements--${hops[i]}--${hops[i + 1]}.sql
    [ -f "sql/$step" ] || fail "the update path $path of $ver uses $EXTDIR/$step, which is not in sql/ (a stale file?)"
  done
  echo "     $ver: $path"
done
[ ${#missing[@]} = 0 ] \
  || fail "no update path to $current from released version(s) ${missing[*]}: add sql/pg_entitlements--${missing[0]}--$current.sql"
ok "${#released[@]} released version(s) (${released[*]}), current $current; ${#older[@]} to update from, each with a path"
[ ${#older[@]} -gt 0 ] || { echo "==> upgrades: nothing released before $current, nothing to check"; exit 0; }

# The fixture's dates are relative to now(): pin them to one instant T0, an hour before any
# database is filled, so that every database holds the same dates and the same periods.
T0=$(q "SELECT date_trunc('hour', now()) - interval '1 hour'")
SINCE=$(q "SELECT now()")
load_data() {
  local db=$1
  sed "s/now()/'$T0'::timestamptz/g" tests/ops/dump_restore_data.sql \
    | sql "$DIR" "$PORT" "$db" -f - >"$DIR/$db.data.log" 2>&1 \
    || { cat "$DIR/$db.data.log"; fail "loading tests/ops/dump_restore_data.sql into $db failed"; }
}
# create_at DB [VERSION]: a new database with the extension at VERSION (default: current).
create_at() {
  local db=$1 ver=${2:-}
  as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" "$db"
  sql "$DIR" "$PORT" "$db" -c "CREATE EXTENSION pg_entitlements${ver:+ VERSION '$ver'}" >"$DIR/$db.create.log" 2>&1 \
    || { cat "$DIR/$db.create.log"
         fail "CREATE EXTENSION pg_entitlements${ver:+ VERSION '$ver'} failed (above)${ver:+: the current library must keep every C symbol the SQL of $ver names}"; }
}
# update DB VERSION: ALTER EXTENSION ... UPDATE, which must reach the current version.
update() {
  local db=$1 ver=$2 got
  sql "$DIR" "$PORT" "$db" -c 'ALTER EXTENSION pg_entitlements UPDATE' >"$DIR/$db.update.log" 2>&1 \
    || { cat "$DIR/$db.update.log"; fail "ALTER EXTENSION pg_entitlements UPDATE from $ver failed (above)"; }
  got=$(sql_value "$DIR" "$PORT" "$db" "SELECT extversion FROM pg_extension WHERE extname = 'pg_entitlements'")
  [ "$got" = "$current" ] || fail "$db: ALTER EXTENSION UPDATE from $ver left version $got, not $current"
}

# Roles belong to the cluster, not to a database: each install is made in a cluster without the
# extension's roles (a scratch database, dropped again with every role it created), and the
# cluster's roles, attributes, memberships and role settings afterwards are compared.
roles="SELECT format('%s super=%s inherit=%s createrole=%s createdb=%s login=%s replication=%s bypassrls=%s connlimit=%s valid=%s',
                     rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,
                     rolbypassrls, rolconnlimit, coalesce(rolvaliduntil::text, '-'))
         FROM pg_roles WHERE rolname !~ '^pg_'
       UNION ALL
       SELECT format('%s member of %s admin=%s', member::regrole, roleid::regrole, admin_option)
         FROM pg_auth_members
       UNION ALL
       SELECT format('%s settings %s', setrole::regrole, setconfig) FROM pg_db_role_setting
        WHERE setdatabase = 0
       ORDER BY 1"
baseline=$(q "SELECT array_agg(rolname)::text FROM pg_roles")
# roles_after NAME [VERSION]: the roles after installing the current version, or VERSION updated.
roles_after() {
  local name=$1 ver=${2:-}
  create_at roles_probe "$ver"
  [ -z "$ver" ] || update roles_probe "$ver"
  q "$roles" >"$DIR/roles.$name"
  as_postgres "$PG_BIN/dropdb" -h "$DIR" -p "$PORT" roles_probe
  sql "$DIR" "$PORT" postgres >/dev/null <<SQL
SELECT format('DROP ROLE %I', rolname) FROM pg_roles WHERE rolname <> ALL ('$baseline'::name[])
\gexec
SQL
}

check "(b) per released version, the roles: an update leaves those a fresh install leaves"
roles_after fresh
for ver in "${older[@]}"; do
  roles_after "$ver" "$ver"
  if ! diff -u --label "roles after a fresh install of $current" --label "roles after an update from $ver" \
      "$DIR/roles.fresh" "$DIR/roles.$ver" >"$DIR/roles.$ver.diff"; then
    cat "$DIR/roles.$ver.diff"
    fail "the roles after an update from $ver differ from a fresh install's (diff above: - fresh, + updated)"
  fi
done
ok "$(wc -l <"$DIR/roles.fresh") roles, memberships and settings, each install in a cluster without the extension's roles"

check "(c) per released version: CREATE EXTENSION ... VERSION, data, ALTER EXTENSION ... UPDATE"
dbs=()
for ver in "${older[@]}"; do
  db=upgraded_${ver//[.-]/_}
  create_at "$db" "$ver"
  load_data "$db"
  empty=$(empty_quota_tables "$DIR" "$PORT" "$db")
  [ -z "$empty" ] || fail "tables of $ver without rows after loading the data: $empty"
  update "$db" "$ver"
  ok "$db: $ver with data in every table, updated to $current"
  dbs+=("$db")
done
create_at fresh
load_data fresh
ok "fresh: $current installed by CREATE EXTENSION, the same data"

# compare WHAT FILE: every upgraded database's FILE against fresh's, with a readable diff.
compare() {
  local what=$1 file=$2 db
  for db in "${dbs[@]}"; do
    same_files "$DIR/fresh/$file" "$DIR/$db/$file" \
      "$what: $db differs from a fresh install (diff above: - fresh, + updated; $DIR/$db/$file.diff)" \
      --label "fresh/$file (fresh install of $current)" --label "$db/$file (updated)"
  done
}
# snapshot FILE: every quota table and every reading function's answers, stamps set to T0,
# and the identity sequences.
snapshot() {
  local file=$1 db
  for db in fresh "${dbs[@]}"; do
    sql "$DIR" "$PORT" "$db" -v since="$SINCE" -v stamp="$T0" -f tests/ops/upgrade_stamps.sql >/dev/null
    { sql "$DIR" "$PORT" "$db" -f tests/ops/snapshot.sql
      sql "$DIR" "$PORT" "$db" -c "SELECT sequencename, last_value FROM pg_sequences
                                    WHERE schemaname = 'quota' ORDER BY 1"
    } >"$DIR/$db/$file" 2>"$DIR/$db/$file.err" \
      || { cat "$DIR/$db/$file.err"; fail "reading the tables and answers of $db failed"; }
  done
}
for db in fresh "${dbs[@]}"; do mkdir -p "$DIR/$db"; done

check "(d) the catalogs of every updated database equal a fresh install's"
for db in fresh "${dbs[@]}"; do
  sql "$DIR" "$PORT" "$db" -At -f tests/ops/catalog.sql >"$DIR/$db/catalog" 2>"$DIR/$db/catalog.err" \
    || { cat "$DIR/$db/catalog.err"; fail "reading the catalogs of $db failed"; }
  strays=$(grep 'NOT A MEMBER' "$DIR/$db/catalog" | sed 's/ :: .*//' | sort -u | paste -sd ';' || true)
  [ -z "$strays" ] || fail "$db: objects outside the extension: ${strays//;/; } (created by a script without being members?)"
done
compare "catalogs" catalog
members=$(grep -c ':: member of pg_entitlements$' "$DIR/fresh/catalog" || true)
[ "$members" -ge 30 ] || fail "expected at least 30 members of pg_entitlements, found $members"
ok "$(wc -l <"$DIR/fresh/catalog") catalog lines identical, $members members, nothing outside the extension"

check "(e) the data, the reading functions' answers and the sequences are identical"
snapshot snapshot
compare "data and answers" snapshot
tables=$(snapshot_tables "$DIR/fresh/snapshot")
ok "$tables tables, every row, every answer and every sequence identical"

check "(f) the same writes give the same answers, events and data; the ledger holds"
for db in fresh "${dbs[@]}"; do
  sql "$DIR" "$PORT" "$db" -v t0="$T0" -f tests/ops/upgrade_writes.sql 2>&1 \
    | sed 's/received from server process with PID [0-9]*/received from the server/' >"$DIR/$db/writes" \
    || { cat "$DIR/$db/writes"; fail "the writes failed on $db"; }
done
compare "answers to the writes" writes
events=$(grep -c '^Asynchronous notification' "$DIR/fresh/writes" || true)
[ "$events" -ge 5 ] || fail "expected at least 5 LISTEN/NOTIFY events from the writes, heard $events"
refused=$(grep -c '^ [0-9A-Z]\{5\}: ' "$DIR/fresh/writes" || true)
[ "$refused" -ge 8 ] || fail "expected at least 8 refused writes (SQLSTATE: message), found $refused"
snapshot after-writes
compare "data and answers after the writes" after-writes
for db in fresh "${dbs[@]}"; do
  ledger=$(sql_value "$DIR" "$PORT" "$db" "SELECT count(*) FROM quota.verify_ledger()")
  [ "$ledger" = 0 ] || fail "quota.verify_ledger() returns $ledger rows in $db"
done
ok "$(grep -c . "$DIR/fresh/writes") lines of answers ($events events, $refused refusals) and the data afterwards identical; verify_ledger() empty"

check "(g) usage 0.2.0 left under an old period start (a renewal, a time-zone change) counts again"
create_at continuity 0.2.0
sql "$DIR" "$PORT" continuity -v ON_ERROR_STOP=1 -f tests/ops/upgrade_continuity.sql >"$DIR/continuity.log" 2>&1 \
  || { cat "$DIR/continuity.log"; fail "loading tests/ops/upgrade_continuity.sql into 0.2.0 failed"; }
usage_of() {
  sql_value "$DIR" "$PORT" continuity "SELECT current_usage FROM quota.check_user_quota($1, 'articles_per_month')"
}
update continuity 0.2.0
[ "$(usage_of 9001)/$(usage_of 9002)" = 9/9 ] \
  || fail "after the update, usage should be 9 and 9 (every unit of the period), found $(usage_of 9001) and $(usage_of 9002)"
ledger=$(sql_value "$DIR" "$PORT" continuity "SELECT count(*) FROM quota.verify_ledger()")
[ "$ledger" = 0 ] || fail "quota.verify_ledger() returns $ledger rows after the update"
counters=$(sql_value "$DIR" "$PORT" continuity "SELECT count(*) FROM quota.user_usage WHERE period_end > now()")
[ "$counters" = 2 ] || fail "expected one current counter per user after the update, found $counters"
ok "9 of 10 for both users after the update, in one counter each (0.2.0 left 6 + 3 and 7 + 2 in two); verify_ledger() empty"

echo "==> upgrades: all checks passed"
