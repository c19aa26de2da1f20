#!/usr/bin/env bash
# The Node.js client example against a real server: it must hear every committed quota change
# within a second and none that rolled back. Assumes scripts/setup.sh has run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh

DIR=${PGE_NODE_DIR:-/tmp/pg_entitlements-node}
PORT=${PGE_NODE_PORT:-55445}

suite_cluster "$DIR" "$PORT"
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" quota_events

cd examples/node
npm ci --no-audit --no-fund --loglevel=error
PGHOST=localhost PGPORT=$PORT PGUSER=postgres PGDATABASE=quota_events node --test
