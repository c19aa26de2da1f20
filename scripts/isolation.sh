#!/usr/bin/env bash
# Concurrency proofs: isolationtester specs (tests/isolation/specs) against a throwaway cluster
# with the extension installed. Each spec interleaves sessions step by step and prints what
# proves the property: who waits (<waiting ...>), who is refused, the counters and
# quota.verify_ledger(). Assumes scripts/setup.sh has run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh

DIR=${PGE_ISOLATION_DIR:-/tmp/pg_entitlements-isolation}
PORT=${PGE_ISOLATION_PORT:-55433}
DB=pge_isolation
ISOLATION_REGRESS=$PGXS_DIR/src/test/isolation/pg_isolation_regress

trap 'cluster_stop "$DIR"' EXIT
# Specs print no timestamps; the server's time zone is fixed anyway for stable periods.
cluster_start "$DIR" "$PORT" timezone=UTC
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres)
as_postgres "${PSQL[@]}" -d postgres \
  -c "ALTER SYSTEM SET dynamic_library_path = '$DIR/lib:\$libdir'" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 50); do   # the reload is asynchronous: wait until new sessions see the setting
  [ "$(as_postgres "${PSQL[@]}" -d postgres -At -c "SHOW dynamic_library_path")" = "$DIR/lib:\$libdir" ] && break
  sleep 0.1
done
# --use-existing neither drops nor creates the database: create it here (the cluster is new),
# with the extension, once: the specs' setup (CREATE EXTENSION IF NOT EXISTS) then finds it and
# their teardown only removes rows, so the SQL files are read once, next to the .so below.
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" -U postgres "$DB"
# Built and installed right before its .so is copied and CREATE EXTENSION reads its SQL files:
# other people install their builds into the same PostgreSQL at any time, and this keeps the
# window in which one could slip in between the two as small as possible. The cluster loads
# its own copy of the .so (module_pathname has no $libdir, so dynamic_library_path decides):
# a build installed into $libdir later cannot replace the library under the running backends.
install_extension
mkdir -p "$DIR/lib" && cp "$("$PG_CONFIG" --pkglibdir)/pg_entitlements.so" "$DIR/lib/"
chmod 755 "$DIR/lib" && chmod 644 "$DIR/lib/pg_entitlements.so"
as_postgres "${PSQL[@]}" -d "$DB" -c "CREATE EXTENSION pg_entitlements"
loaded=$(as_postgres "${PSQL[@]}" -d "$DB" -At \
  -c "SELECT count(*) FROM quota.check_user_quota(1, 'articles_per_month')" \
  -c "SELECT DISTINCT substring(l FROM '(/\S*pg_entitlements\.so)')
        FROM pg_catalog.regexp_split_to_table(pg_catalog.pg_read_file('/proc/self/maps'), E'\n') l
       WHERE l LIKE '%pg_entitlements.so%'" | tail -n +2)
if [ "$loaded" != "$DIR/lib/pg_entitlements.so" ]; then
  echo "the backends load '$loaded', not the copy $DIR/lib/pg_entitlements.so"; exit 1
fi

out="$DIR/out"; mkdir -p "$out"; chown postgres: "$out"
specs=$(cd tests/isolation/specs && ls *.spec | sed 's/\.spec$//' | sort)
echo "==> pg_isolation_regress: $(echo $specs | wc -w) isolation specs"
# pg_isolation_regress runs the isolationtester installed next to it (same folder).
if ! as_postgres "$ISOLATION_REGRESS" \
    --host="$DIR" --port="$PORT" --use-existing --dbname="$DB" \
    --inputdir="$PWD/tests/isolation" --outputdir="$out" $specs; then
  cat "$out/regression.diffs" 2>/dev/null || true
  exit 1
fi
