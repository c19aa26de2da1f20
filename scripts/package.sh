#!/usr/bin/env bash
# Debian packages of pg_entitlements, one per PostgreSQL major, the way DBAs install
# extensions: target/debian/postgresql-NN-pg-entitlements_<version>-1_amd64.deb, holding the
# release library (usr/lib/postgresql/NN/lib), the control file, the install script and every
# update script (usr/share/postgresql/NN/extension), made by `cargo pgrx package` against that
# major's pg_config (scripts/envs.sh says where each comes from: 17 and 18 are built inside
# their Debian root, with that suite's glibc). Depends on postgresql-NN.
#
#   ./scripts/package.sh                  every major of PG_VERSIONS (default: 15 16 17 18)
#   PG_VERSIONS=15 ./scripts/package.sh   only those named
#
# Assumes scripts/setup.sh has run. Install with `dpkg -i FILE.deb`, then CREATE EXTENSION.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/envs.sh
check_pg_versions

OUT=$PWD/target/debian
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
DEB_VERSION=$VERSION-1

# build_here MAJOR: the package of MAJOR, built with the pg_config of this environment.
build_here() {
  local major=$1 pg_config name stage root pkglibdir sharedir
  pg_config=$(pg_bin "$major")/pg_config
  name=postgresql-$major-pg-entitlements
  stage=${CARGO_TARGET_DIR:-$PWD/target}/package-pg$major
  root=$OUT/${name}_${DEB_VERSION}_amd64
  echo "==> $name $DEB_VERSION: cargo pgrx package --pg-config $pg_config"
  rm -rf "$stage" "$root"
  cargo pgrx package --pg-config "$pg_config" --out-dir "$stage" >"$stage.log" 2>&1 \
    || { tail -40 "$stage.log"; return 1; }
  pkglibdir=$("$pg_config" --pkglibdir)
  sharedir=$("$pg_config" --sharedir)
  # Debian's layout for PostgreSQL NN, whatever the building pg_config's own paths (16's wheel
  # lives elsewhere).
  install -d "$root/DEBIAN" "$root/usr/lib/postgresql/$major/lib" \
    "$root/usr/share/postgresql/$major/extension" "$root/usr/share/doc/$name"
  install -m 644 "$stage$pkglibdir/pg_entitlements.so" "$root/usr/lib/postgresql/$major/lib/"
  install -m 644 "$stage$sharedir/extension/"pg_entitlements* "$root/usr/share/postgresql/$major/extension/"
  local ext=$root/usr/share/postgresql/$major/extension update
  [ -f "$ext/pg_entitlements.control" ] && [ -f "$ext/pg_entitlements--$VERSION.sql" ] \
    || { echo "cargo pgrx package left no control file or install script in $stage" >&2; return 1; }
  for update in sql/pg_entitlements--*--*.sql; do
    [ -f "$ext/$(basename "$update")" ] || { echo "$update is missing from the package" >&2; return 1; }
  done
  strip --strip-unneeded "$root/usr/lib/postgresql/$major/lib/pg_entitlements.so"
  install -m 644 README.md CHANGELOG.md "$root/usr/share/doc/$name/"
  cat >"$root/usr/share/doc/$name/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pg_entitlements

Files: *
License: PostgreSQL
EOF

  # The shared libraries the library needs, as Debian packages: glibc (at least the newest
  # symbol version it uses) and libgcc_s (Rust's unwinding).
  local needed glibc depends="postgresql-$major"
  glibc=$(objdump -T "$root/usr/lib/postgresql/$major/lib/pg_entitlements.so" \
            | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
  for needed in $(objdump -p "$root/usr/lib/postgresql/$major/lib/pg_entitlements.so" | awk '$1 == "NEEDED" {print $2}'); do
    case $needed in
      libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|ld-linux-x86-64.so.2) ;;
      libgcc_s.so.1) depends="$depends, libgcc-s1" ;;
      *) echo "the library needs $needed: name its Debian package in scripts/package.sh" >&2; return 1 ;;
    esac
  done
  depends="$depends, libc6 (>= $glibc)"
  cat >"$root/DEBIAN/control" <<EOF
Package: $name
Version: $DEB_VERSION
Architecture: amd64
Maintainer: pg_entitlements maintainers <pg-entitlements@localhost>
Depends: $depends
Section: database
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Description: SaaS plan quotas for PostgreSQL $major (extension pg_entitlements)
 Per-user overrides, plan limits, anniversary periods and exact counters,
 in schema quota: CREATE EXTENSION pg_entitlements in each database.
 Built from pg_entitlements $VERSION for PostgreSQL $major.
EOF
  mkdir -p "$OUT"
  dpkg-deb --build --root-owner-group "$root" "$root.deb" >/dev/null
  rm -rf "$root"
  echo "==> $root.deb ($(du -h "$root.deb" | cut -f1); Depends: $depends)"
}

if [ -n "${PGE_PACKAGE_MAJOR:-}" ]; then
  # That major only, built in this environment (inside its root for 17 and 18: below).
  build_here "$PGE_PACKAGE_MAJOR"
  exit
fi
for major in $PG_VERSIONS; do
  kind=$(env_kind "$major")
  case $kind in
    # 15 shares the release build of target/ with scripts/bench.sh.
    host) CARGO_TARGET_DIR=$PWD/target build_here "$major" ;;
    wheel) CARGO_TARGET_DIR=$PWD/target/pg$major-$kind build_here "$major" ;;
    *) PGE_PACKAGE_MAJOR=$major CARGO_TARGET_DIR=$PWD/target/pg$major-$kind in_root "$kind" ./scripts/package.sh ;;
  esac
done
