#!/usr/bin/env bash
# The suites every supported PostgreSQL major runs besides 15 (which runs every suite, see
# scripts/test.sh): the #[pg_test]s, the pg_regress golden files, the isolation specs and the
# upgrades from every released version. scripts/test.sh runs this on the host for 16 and inside
# the Debian root of 17 and 18 (scripts/envs.sh).
#
#   PG_MAJOR=17 ./scripts/test-major.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PG_MAJOR:?PG_MAJOR=16 (17, 18) names the major to test}"
export PG_MAJOR
echo "==> PostgreSQL $PG_MAJOR: pg_regress golden files"
./scripts/regress.sh
echo "==> PostgreSQL $PG_MAJOR: isolation specs"
./scripts/isolation.sh
echo "==> PostgreSQL $PG_MAJOR: ALTER EXTENSION UPDATE from every released version equals a fresh install"
./scripts/ops/upgrade.sh
echo "==> PostgreSQL $PG_MAJOR: #[pg_test]s"
./scripts/pgtest.sh
echo "==> PostgreSQL $PG_MAJOR: all suites passed"
