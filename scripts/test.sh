#!/usr/bin/env bash
# Every test, on a bare machine, on every supported PostgreSQL major: on 15 every suite (unit
# and property tests of the core, the #[pg_test]s, the pg_regress golden files, the Node.js
# client, isolation, load and operations, the Debian package installed with dpkg, and the
# Citus check, which skips without a Citus coordinator); on 16, 17
# and 18 the #[pg_test]s, pg_regress, isolation and upgrade suites (scripts/test-major.sh), on
# 17 and 18 their Debian package, and pg_upgrade from 15 to 17.
# Fails on the first failing suite.
#
#   ./scripts/test.sh                  15, 16, 17 and 18
#   PG_VERSIONS=15 ./scripts/test.sh   only those named (spaces or commas: "15 18")
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
./scripts/setup.sh
source scripts/envs.sh
times=("setup: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s")

# timed MAJOR COMMAND...: runs COMMAND and keeps how long it took.
timed() {
  local major=$1 start=$SECONDS; shift
  "$@"
  times+=("PostgreSQL $major: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s")
}

# The suites of 15, left unindented as they stood before the other majors came.
test_15() {
echo "==> PostgreSQL 15: every suite"
echo "==> unit and property tests (entitlements-core)"
cargo test -p entitlements-core
echo "==> #[pg_test]s"
./scripts/pgtest.sh
echo "==> pg_regress golden files"
./scripts/regress.sh
echo "==> Node.js client: LISTEN/NOTIFY events"
./scripts/node-test.sh
echo "==> isolation specs: concurrent consume, adjust, idempotency keys, refunds, period boundary"
./scripts/isolation.sh
echo "==> pgbench load test: no overspend, idempotency keys, ledger"
./scripts/load.sh
echo "==> operations: pg_dump and pg_restore keep every table and answer"
./scripts/ops/dump-restore.sh
echo "==> operations: ALTER EXTENSION UPDATE from every released version equals a fresh install"
./scripts/ops/upgrade.sh
echo "==> operations: pg_cron runs quota.tick() every minute; an ended subscription is expired and announced within 75 s"
./scripts/ops/cron.sh
echo "==> operations: SIGKILL of the postmaster under load, crash recovery, invariants"
./scripts/ops/crash.sh
echo "==> operations: hot standby answers reads, refuses writes with 25006"
./scripts/ops/standby.sh
echo "==> operations: direct and statement reads give the same answers, also on an attached schema's unchecked rows and under concurrent catalog changes"
./scripts/ops/differential.sh
echo "==> operations: a live application migrated to pg_entitlements under load, no call failed, no use lost"
./scripts/ops/migration.sh
echo "==> operations: hostile inputs to every function, no internal error, no crash"
./scripts/ops/fuzz.sh
echo "==> the Debian package: built, installed with dpkg -i, the seed scenario against its files"
./scripts/ops/package-install.sh
echo "==> Citus: the layout and the checks of docs/scaling.md on the coordinator libpq's environment names (skipped without Citus)"
./scripts/citus-check.sh
}

# test_other MAJOR: the suites of scripts/test-major.sh, with a target folder per environment
# (a build script compiled inside a root with a newer glibc does not run outside it).
test_other() {
  local major=$1 kind; kind=$(env_kind "$major")
  echo "==> PostgreSQL $major ($kind): #[pg_test]s, pg_regress, isolation, upgrades"
  if [ "$kind" = wheel ]; then
    CARGO_TARGET_DIR=$PWD/target/pg$major-$kind PG_MAJOR=$major ./scripts/test-major.sh
  else
    CARGO_TARGET_DIR=$PWD/target/pg$major-$kind PG_MAJOR=$major in_root "$kind" ./scripts/test-major.sh
    echo "==> PostgreSQL $major: the Debian package, installed with dpkg -i beside Debian's postgresql-$major"
    CARGO_TARGET_DIR=$PWD/target/pg$major-$kind PG_MAJOR=$major in_root "$kind" ./scripts/ops/package-install.sh
  fi
  if [ "$major" = "$PG_UPGRADE_TO" ]; then
    echo "==> operations: pg_upgrade from 15 to $major keeps every table, answer and the ledger"
    # The 15 library comes from its package, unpacked beside the root's copy of 15.
    PG_VERSIONS=15 ./scripts/package.sh
    dpkg -x "$(ls -t target/debian/postgresql-15-pg-entitlements_*_amd64.deb | head -1)" "$(root_dir "$kind")"
    CARGO_TARGET_DIR=$PWD/target/pg$major-$kind PG_MAJOR=$major in_root "$kind" ./scripts/ops/pg-upgrade.sh
  fi
}

for major in $PG_VERSIONS; do
  if [ "$major" = 15 ]; then timed 15 test_15; else timed "$major" test_other "$major"; fi
done
echo "==> time per PostgreSQL major (and for scripts/setup.sh):"
printf '    %s\n' "${times[@]}"
echo "==> all tests passed ($PG_VERSIONS)"
