# The PostgreSQL majors pg_entitlements supports and where each comes from on a Debian 12
# machine that reaches only the package registries. Sourced, not run (scripts/setup.sh,
# scripts/test.sh, scripts/package.sh).
#
#   15  Debian 12's own packages, on the host.
#   16  the PyPI wheel pgserver==0.1.4 (PostgreSQL 16.2 with pg_config, the server headers and
#       pg_regress; built without libxml, ICU and readline), unzipped on the host.
#   17  Debian trixie, 18 Debian forky: a `debootstrap --variant=minbase` root of that suite
#       (their binaries need a newer glibc than Debian 12's), with the host's Rust toolchain
#       bind-mounted while a command runs inside it.
#
# Every mount a root gets lives in a private mount namespace of its own (unshare --mount) that
# ends with the command: nothing stays mounted on the host, so deleting a root can never reach
# the host's ~/.cargo or ~/.rustup. Roots are deleted with rm -rf --one-file-system all the same.

SUPPORTED_PG_VERSIONS="15 16 17 18"
# PG_VERSIONS="15 17" (spaces or commas) in the environment: only those.
PG_VERSIONS=${PG_VERSIONS:-$SUPPORTED_PG_VERSIONS}
PG_VERSIONS=${PG_VERSIONS//,/ }

# pg_upgrade from 15 is tested to this major, inside its root (scripts/ops/pg-upgrade.sh).
PG_UPGRADE_TO=17

# Where the prepared environments are cached between runs on one machine.
PGE_ENVS=${PGE_ENVS:-/var/cache/pg_entitlements}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

PGSERVER_WHEEL=pgserver-0.1.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
PGSERVER_SHA256=d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813

# Checks that every major asked for is supported.
check_pg_versions() {
  local v
  for v in $PG_VERSIONS; do
    case " $SUPPORTED_PG_VERSIONS " in
      *" $v "*) ;;
      *) echo "PG_VERSIONS: $v is not one of the supported majors $SUPPORTED_PG_VERSIONS" >&2; return 1 ;;
    esac
  done
}

# env_kind MAJOR: host, wheel or the Debian suite of the root.
env_kind() {
  case $1 in
    15) echo host ;;
    16) echo wheel ;;
    17) echo trixie ;;
    18) echo forky ;;
    *) echo "no environment for PostgreSQL $1" >&2; return 1 ;;
  esac
}

# The root of a Debian suite.
root_dir() { echo "$PGE_ENVS/roots/$1"; }

# The wheel's PostgreSQL installation.
WHEEL_PG=$PGE_ENVS/pg16/pgserver/pginstall

# pg_bin MAJOR: the folder of the major's server programs, as seen where its tests run (inside
# the root for 17 and 18).
pg_bin() {
  case $(env_kind "$1") in
    host) echo "/usr/lib/postgresql/$1/bin" ;;
    wheel) echo "$WHEEL_PG/bin" ;;
    *) echo "/usr/lib/postgresql/$1/bin" ;;
  esac
}

# in_root SUITE COMMAND...: runs COMMAND as root inside the root of SUITE, in the current
# directory (the repository, bind-mounted at the same path), with the host's ~/.cargo and
# ~/.rustup, /proc and /dev. The mounts belong to a private mount namespace that ends with the
# command. Environment: only what is named here, plus PGE_* and PG_VERSIONS, CARGO_TARGET_DIR.
in_root() {
  local suite=$1; shift
  local root; root=$(root_dir "$suite")
  [ -x "$root/usr/bin/env" ] || { echo "no root for $suite in $root: run ./scripts/setup.sh" >&2; return 1; }
  # sudo inside looks the machine's name up (CI's machines have names of their own).
  local host; host=$(hostname)
  grep -qsw -- "$host" "$root/etc/hosts" || echo "127.0.1.1 $host" >>"$root/etc/hosts"
  local pass=() name
  for name in $(compgen -e); do
    case $name in
      PGE_*|PG_MAJOR|PG_VERSIONS|CARGO_TARGET_DIR|RUST_BACKTRACE) pass+=("$name=${!name}") ;;
    esac
  done
  unshare --mount --propagation private -- bash -euc '
    root=$1 repo=$2; shift 2
    for d in "$HOME/.cargo" "$HOME/.rustup" "$repo"; do
      mkdir -p "$root$d"
      mount --bind "$d" "$root$d"
    done
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    exec chroot "$root" "$@"
  ' in_root "$root" "$PWD" /usr/bin/env -i \
    HOME="$HOME" USER=root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
    PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" \
    "${pass[@]}" bash -c 'cd "$1" && shift && exec "$@"' in_root "$PWD" "$@"
}

# delete_root SUITE: removes a root (a broken or outdated one), never crossing into a mount.
delete_root() {
  local root; root=$(root_dir "$1")
  [ -d "$root" ] || return 0
  if grep -qs " $root/" /proc/mounts; then
    echo "refusing to delete $root: something is mounted inside it (see /proc/mounts)" >&2
    return 1
  fi
  rm -rf --one-file-system "$root"
}
