#!/usr/bin/env bash
# SQL-level tests a DBA can read: pg_regress golden files (tests/pg_regress) against a
# throwaway cluster with the extension installed. Assumes scripts/setup.sh has run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh

DIR=${PGE_REGRESS_DIR:-/tmp/pg_entitlements-regress}
PORT=${PGE_REGRESS_PORT:-55432}

# The tests set the time zone they need themselves; the server's is fixed for stable output.
# A prepared transaction holds a lock without a session (10_untrusted_rows).
suite_cluster "$DIR" "$PORT" timezone=UTC max_prepared_transactions=2
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" pge_regress

out="$DIR/out"; mkdir -p "$out"; chown postgres: "$out"
tests=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
echo "==> pg_regress: $(echo $tests | wc -w) golden-file tests"
if ! as_postgres "$PGXS_DIR/src/test/regress/pg_regress" \
    --host="$DIR" --port="$PORT" --use-existing --dbname=pge_regress --bindir="$PG_BIN" \
    --inputdir="$PWD/tests/pg_regress" --outputdir="$out" $tests; then
  cat "$out/regression.diffs" 2>/dev/null || true
  exit 1
fi
