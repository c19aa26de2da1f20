#!/usr/bin/env bash
# The #[pg_test]s: cargo pgrx test against the PostgreSQL of PG_MAJOR (default 15, Debian's),
# as the postgres user.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_MAJOR=${PG_MAJOR:-15}
DIR=${PGE_PGTEST_DIR:-/tmp/pg_entitlements-pgtest}
rm -rf "$DIR" && mkdir -p "$DIR" && chown postgres: "$DIR"
cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$DIR/data"
