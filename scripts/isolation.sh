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

# Specs print no timestamps; the server's time zone is fixed anyway for stable periods.
suite_cluster "$DIR" "$PORT" timezone=UTC
# --use-existing neither drops nor creates the database: create it here (the cluster is new),
# with the extension, once: the specs' setup (CREATE EXTENSION IF NOT EXISTS) then finds it and
# their teardown only removes rows.
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" -U postgres "$DB"
as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres -d "$DB" \
  -c "CREATE EXTENSION pg_entitlements"

out="$DIR/out"; mkdir -p "$out"; chown postgres: "$out"
specs=$(cd tests/isolation/specs && ls *.spec | sed 's/\.spec$//' | sort)
echo "==> pg_isolation_regress: $(echo $specs | wc -w) isolation specs"
# pg_isolation_regress runs the isolationtester installed next to it (same folder).
if ! as_postgres "$ISOLATION_REGRESS" \
    --host="$DIR" --port="$PORT" --use-existing --dbname="$DB" --bindir="$PG_BIN" \
    --inputdir="$PWD/tests/isolation" --outputdir="$out" $specs; then
  cat "$out/regression.diffs" 2>/dev/null || true
  exit 1
fi
