#!/usr/bin/env bash
# Every test, on a bare machine: unit and property tests of the core, the #[pg_test]s, the
# pg_regress golden files and the Node.js client. Fails on the first failing suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
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
echo "==> all tests passed"
