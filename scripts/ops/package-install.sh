#!/usr/bin/env bash
# The Debian package is what is tested: scripts/package.sh builds postgresql-NN-pg-entitlements,
# `dpkg -i` installs it (after removing whatever a source build installed, so that only the
# package's files are there), a clean cluster that loads the library from $libdir (no private
# copy, unlike the other suites) runs the seed scenario (examples/seed_scenario.sql), and
# `dpkg -r` removes the package and every file it installed. PG_MAJOR: 15 (default) on the
# host; 17 and 18 inside their Debian root, where Debian's postgresql-17 or -18 satisfies the
# dependency (16 has no Debian package here). Assumes scripts/setup.sh has run.
set -euo pipefail
cd "$(dirname "$0")/../.."
PG_MAJOR=${PG_MAJOR:-15}
source scripts/cluster.sh
source scripts/ops/common.sh

DIR=/tmp/pg_entitlements-ops-package
PORT=55460
NAME=postgresql-$PG_MAJOR-pg-entitlements
LIBDIR=$("$PG_CONFIG" --pkglibdir)
EXTDIR=$("$PG_CONFIG" --sharedir)/extension

# Built here, with this environment's pg_config.
PGE_PACKAGE_MAJOR=$PG_MAJOR ./scripts/package.sh
deb=$(ls -t target/debian/"${NAME}"_*_amd64.deb | head -1)

check "the package's metadata and files"
control=$(dpkg-deb --field "$deb")
for field in "Package: $NAME" "Depends: postgresql-$PG_MAJOR," "Architecture: amd64"; do
  grep -qF "$field" <<<"$control" || fail "$deb: no '$field' in its control file: $control"
done
files=$(dpkg-deb --contents "$deb" | awk '{print $NF}' | sed 's|^\./|/|')
for f in "$LIBDIR/pg_entitlements.so" "$EXTDIR/pg_entitlements.control" \
         "$EXTDIR/pg_entitlements--$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1).sql" \
         $(ls sql/pg_entitlements--*--*.sql | sed "s|^sql/|$EXTDIR/|"); do
  grep -qxF "$f" <<<"$files" || fail "$deb does not install $f"
done
ok "$(basename "$deb"): $(grep -c . <<<"$files") entries, the library, the control file, the install and update scripts"

check "dpkg -i into a PostgreSQL $PG_MAJOR without any pg_entitlements file"
# The package owns these paths; a source build (cargo pgrx install) leaves unowned copies.
dpkg -s "$NAME" >/dev/null 2>&1 && dpkg -r "$NAME" >/dev/null
rm -f "$LIBDIR/pg_entitlements.so" "$EXTDIR"/pg_entitlements.control "$EXTDIR"/pg_entitlements--*.sql
trap 'cluster_stop "$DIR"; dpkg -r "$NAME" >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb" >"$DIR.dpkg.log" 2>&1 || { cat "$DIR.dpkg.log"; fail "dpkg -i $deb failed"; }
dpkg --verify "$NAME" || fail "dpkg --verify $NAME: the installed files differ from the package's"
ok "installed: $(dpkg-query -W -f='${Package} ${Version}' "$NAME"), dpkg --verify clean"

check "a clean cluster runs the seed scenario with the installed files"
cluster_start "$DIR" "$PORT"
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" demo
as_postgres "$PG_BIN/psql" -X -h "$DIR" -p "$PORT" -d demo -f - <examples/seed_scenario.sql >"$DIR/seed.out" 2>&1 \
  || { cat "$DIR/seed.out"; fail "the seed scenario failed against the installed package"; }
grep -q '^== done' "$DIR/seed.out" || { cat "$DIR/seed.out"; fail "the seed scenario did not run to its end"; }
library=$(sql_value "$DIR" "$PORT" demo "SELECT setting FROM pg_settings WHERE name = 'dynamic_library_path'")
[ "$library" = '$libdir' ] || fail "the cluster looks for libraries in $library, not only \$libdir"
loaded=$(sql_value "$DIR" "$PORT" demo "SELECT extversion FROM pg_extension WHERE extname = 'pg_entitlements'")
ledger=$(sql_value "$DIR" "$PORT" demo "SELECT count(*) FROM quota.verify_ledger()")
[ "$ledger" = 0 ] || fail "quota.verify_ledger() returns $ledger rows after the seed scenario"
ok "seed scenario to its end ($(grep -c '^== ' "$DIR/seed.out") steps), extension $loaded from $LIBDIR, verify_ledger() empty"

check "dpkg -r removes every file the package installed"
cluster_stop "$DIR"
dpkg -r "$NAME" >/dev/null
for f in "$LIBDIR/pg_entitlements.so" "$EXTDIR/pg_entitlements.control"; do
  [ ! -e "$f" ] || fail "$f is still there after dpkg -r"
done
ok "removed"
echo "==> the Debian package: all checks passed"
