#!/usr/bin/env bash
# Installs every prerequisite of pg_entitlements on a bare Debian machine, skipping what is
# already present, so that it can run before every build (README, CI, benchmarks).
#
#   ./scripts/setup.sh [PACKAGE...]   extra Debian packages a caller needs (the benchmarks'
#                                     profilers: valgrind, linux-perf)
set -euo pipefail

PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
# cargo-pgrx must be the very same version as the `pgrx` dependency pinned in Cargo.toml.
PGRX_VERSION=0.18.1

need_pkgs=()
pkgs="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang sudo"
# The Node.js client example (examples/node) needs node and npm; most machines have them.
command -v npm >/dev/null || pkgs="$pkgs nodejs npm"
for p in $pkgs "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
  echo "==> installing cargo-pgrx $PGRX_VERSION (about 8 minutes on 2 cores)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# Register Debian's PostgreSQL with pgrx; never let it download a server.
if ! grep -qs "pg$PG_MAJOR" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  echo "==> cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
  cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
fi
echo "==> prerequisites ready: $(cargo pgrx --version), $($PG_CONFIG --version)"
