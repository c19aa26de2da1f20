#!/usr/bin/env bash
# Installs every prerequisite of pg_entitlements on a bare Debian machine, skipping what is
# already present, so that it can run before every build (README, CI, benchmarks): PostgreSQL
# 15 and the build tools on the host, and the environments of PostgreSQL 16, 17 and 18
# (scripts/envs.sh), cached in /var/cache/pg_entitlements.
#
#   ./scripts/setup.sh [PACKAGE...]   extra Debian packages a caller needs (the benchmarks'
#                                     profilers: valgrind, linux-perf)
#   PG_VERSIONS=15 ./scripts/setup.sh only the majors named (default: 15 16 17 18); 15 and the
#                                     host's tools are always prepared
set -euo pipefail
cd "$(dirname "$0")/.."

PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
# cargo-pgrx must be the very same version as the `pgrx` dependency pinned in Cargo.toml.
PGRX_VERSION=0.18.1

need_pkgs=()
pkgs="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang sudo"
# pg_cron, the scheduler that runs quota.tick() every minute (scripts/ops/cron.sh).
pkgs="$pkgs postgresql-$PG_MAJOR-cron"
# The Node.js client example (examples/node) needs node and npm; most machines have them.
command -v npm >/dev/null || pkgs="$pkgs nodejs npm"
# The packages of 16 to 18's environments: debootstrap for the roots, unzip for the wheel.
pkgs="$pkgs debootstrap unzip"
for p in $pkgs "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
apt_install() {
  echo "==> installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
[ ${#need_pkgs[@]} = 0 ] || apt_install "${need_pkgs[@]}"

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
  echo "==> installing cargo-pgrx $PGRX_VERSION (about 8 minutes on 2 cores)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi


# ---------------------------------------------------------------------------------------------
# PostgreSQL 16 to 18 (scripts/envs.sh), for those of PG_VERSIONS (default: all). Each is
# prepared once and cached in $PGE_ENVS: a marker file names what was prepared, so that a run
# with everything in place only reads the markers.
source scripts/envs.sh
check_pg_versions

# The wheel of 16: downloaded by pip (any Python: the wheel is only unzipped), its sha256
# checked, unzipped with unzip (Python's zipfile drops the programs' execute bits).
prepare_wheel() {
  local dir=$PGE_ENVS/pg16 marker=$PGE_ENVS/pg16/.ready-$PGSERVER_SHA256
  [ -f "$marker" ] && return 0
  echo "==> PostgreSQL 16: the wheel $PGSERVER_WHEEL"
  command -v unzip >/dev/null || apt_install unzip
  rm -rf "$dir" "$dir.new" && mkdir -p "$dir.new/download"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux2014_x86_64 -d "$dir.new/download" "pgserver==0.1.4"
  echo "$PGSERVER_SHA256  $dir.new/download/$PGSERVER_WHEEL" | sha256sum -c --quiet - \
    || { echo "the wheel's sha256 is not the pinned $PGSERVER_SHA256" >&2; return 1; }
  unzip -q "$dir.new/download/$PGSERVER_WHEEL" -d "$dir.new"
  rm -rf "$dir.new/download"
  # The postgres user runs the server and the test programs from here.
  chmod -R a+rX "$dir.new"
  mv "$dir.new" "$dir"
  touch "$marker"
}

# The packages a root holds: the server of its major, what pgrx builds with, sudo for
# `cargo pgrx test --runas`.
root_packages() {
  local major=$1
  echo "postgresql-$major postgresql-server-dev-$major libclang-dev clang build-essential sudo ca-certificates"
}

# prepare_root MAJOR: a debootstrap root of the major's suite with its packages installed.
prepare_root() {
  local major=$1 suite root pkgs marker
  suite=$(env_kind "$major"); root=$(root_dir "$suite")
  pkgs=$(root_packages "$major")
  marker="$root/.pge-ready-$(echo "$suite $pkgs" | md5sum | cut -c1-12)"
  [ -f "$marker" ] && return 0
  command -v debootstrap >/dev/null || apt_install debootstrap
  if [ ! -f "$root/.pge-bootstrapped" ]; then
    echo "==> PostgreSQL $major: a minbase root of Debian $suite in $root (about a minute)"
    delete_root "$suite"
    mkdir -p "$(dirname "$root")"
    # debootstrap of Debian 12 knows trixie; later suites use the script of sid.
    debootstrap --variant=minbase "$suite" "$root" "$DEBIAN_MIRROR" /usr/share/debootstrap/scripts/sid \
      >"$root.debootstrap.log" 2>&1 || { tail -20 "$root.debootstrap.log"; return 1; }
    # The mirror's snapshot may be older than the Release files' validity (forky, sid).
    echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99pge-valid-until"
    printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
    # No service starts inside the root, and no main cluster is created: the tests make theirs.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
    mkdir -p "$root/etc/postgresql-common/createcluster.d"
    echo 'create_main_cluster = false' >"$root/etc/postgresql-common/createcluster.d/pge.conf"
    touch "$root/.pge-bootstrapped"
  fi
  echo "==> PostgreSQL $major: installing $pkgs in the $suite root"
  in_root "$suite" bash -c "export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null"
  in_pgrx_init "$major"
  touch "$marker"
}

# old_server_in_root MAJOR: the host's PostgreSQL 15 (Debian 12's packages) copied into the root
# of MAJOR, for pg_upgrade from 15 (scripts/ops/pg-upgrade.sh). No suite reachable here carries
# 15 beside a newer major: trixie has only 17, forky only 18 (`apt-cache search --names-only
# '^postgresql-1[0-9]$'` inside each root). Debian 12's binaries run on the newer glibc; the few shared libraries the
# root has under no soname of theirs (ICU 72, OpenLDAP 2.5, LLVM 14) come from the host as well, into a
# folder of their own on the root's library path (no soname the root has is shadowed).
old_server_in_root() {
  local major=$1 suite root version marker
  suite=$(env_kind "$major"); root=$(root_dir "$suite")
  version=$(dpkg-query -W -f='${Version}' postgresql-15)
  marker="$root/.pge-pg15-$version"
  [ -f "$marker" ] && return 0
  echo "==> PostgreSQL 15 $version from the host into the $suite root, for pg_upgrade to $major"
  rm -rf "$root/usr/lib/postgresql/15" "$root/usr/share/postgresql/15" "$root/usr/local/lib/pge-pg15"
  # Only Debian's files (a source build may have installed pg_entitlements beside them).
  dpkg -L postgresql-15 postgresql-client-15 | grep -E '^/usr/(lib|share)/postgresql/15/' \
    | while read -r f; do [ -d "$f" ] || echo "${f#/}"; done \
    | tar -C / -cf - -T - | tar -C "$root" -xf -
  mkdir -p "$root/usr/local/lib/pge-pg15"
  local round missing lib
  for round in 1 2 3; do
    missing=$(in_root "$suite" bash -c 'ldd /usr/lib/postgresql/15/bin/* /usr/lib/postgresql/15/lib/*.so 2>/dev/null' \
                | awk '/=> not found/ {print $1}' | sort -u)
    [ -n "$missing" ] || break
    for lib in $missing; do
      cp -L "$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')" "$root/usr/local/lib/pge-pg15/$lib"
    done
    echo /usr/local/lib/pge-pg15 >"$root/etc/ld.so.conf.d/pge-pg15.conf"
    in_root "$suite" ldconfig
  done
  [ -z "$missing" ] || { echo "PostgreSQL 15 in the $suite root still misses: $missing" >&2; return 1; }
  in_root "$suite" /usr/lib/postgresql/15/bin/postgres --version >/dev/null
  touch "$marker"
}

# Register the host's PostgreSQL majors with pgrx (15, and 16 from the wheel); never let it
# download a server. `cargo pgrx init` replaces the whole list, so it names every one.
host_pgrx_init() {
  local args=(--pg15 "$PG_CONFIG") config=${PGRX_HOME:-$HOME/.pgrx}/config.toml missing=0 i
  # 16 once its wheel is in place (also when this run asks for fewer majors).
  [ -x "$WHEEL_PG/bin/pg_config" ] && args+=(--pg16 "$WHEEL_PG/bin/pg_config")
  for ((i = 0; i < ${#args[@]}; i += 2)); do
    grep -qsx "${args[i]#--} = \"${args[i + 1]}\"" "$config" || missing=1
  done
  if [ $missing = 1 ]; then
    echo "==> cargo pgrx init ${args[*]}"
    cargo pgrx init "${args[@]}" >/dev/null
  fi
}

# in_pgrx_init MAJOR: registers the root's PostgreSQL with the pgrx inside that root.
in_pgrx_init() {
  local major=$1 suite; suite=$(env_kind "$major")
  in_root "$suite" cargo pgrx init "--pg$major" "/usr/lib/postgresql/$major/bin/pg_config" >/dev/null
}

ready=("$($PG_CONFIG --version)")
for major in $PG_VERSIONS; do
  case $(env_kind "$major") in
    host) ;;
    wheel) prepare_wheel; ready+=("$("$WHEEL_PG/bin/pg_config" --version) (wheel)") ;;
    *) prepare_root "$major"; ready+=("PostgreSQL $major ($(env_kind "$major") root)")
       if [ "$major" = "$PG_UPGRADE_TO" ]; then
         old_server_in_root "$major"; ready+=("PostgreSQL 15 beside it for pg_upgrade")
       fi ;;
  esac
done
host_pgrx_init
echo "==> prerequisites ready: $(cargo pgrx --version), $(IFS=,; echo "${ready[*]}" | sed 's/,/, /g')"
