#!/usr/bin/env bash
# The #[pg_test]s: cargo pgrx test against Debian's PostgreSQL, as the postgres user.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${PGE_PGTEST_DIR:-/tmp/pg_entitlements-pgtest}
rm -rf "$DIR" && mkdir -p "$DIR" && chown postgres: "$DIR"
cargo pgrx test pg15 --runas postgres --pgdata "$DIR/data"
