#!/usr/bin/env bash
# The main job on a fresh machine: install the prerequisites, build and install the extension,
# start a throwaway cluster and run the seed application's quota story end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo runs on PostgreSQL 15: no other major's environment.
PG_VERSIONS=15 ./scripts/setup.sh
source scripts/cluster.sh

DIR=${PGE_DEMO_DIR:-/tmp/pg_entitlements-demo}
PORT=${PGE_DEMO_PORT:-55400}
suite_cluster "$DIR" "$PORT"
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" demo
echo "==> demo: the seed scenario (database demo on port $PORT)"
as_postgres "$PG_BIN/psql" -X -h "$DIR" -p "$PORT" -d demo -f - < examples/seed_scenario.sql
