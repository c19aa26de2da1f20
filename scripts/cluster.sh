# Throwaway PostgreSQL clusters for the demo and the SQL-level tests. Sourced, not run.
# Clusters run as the `postgres` user (initdb refuses root) on a port of their own, with the
# socket inside the cluster's folder, and are stopped again by the caller's trap.

source "$(dirname "${BASH_SOURCE[0]}")/envs.sh"
# PG_MAJOR=16 (17, 18) in the environment: test that major, from where scripts/envs.sh says it
# comes (17 and 18 only inside their roots: scripts/test.sh runs the suites there).
PG_MAJOR=${PG_MAJOR:-15}
# PG_BIN=... in the environment: another PostgreSQL installation (a private copy, say).
PG_BIN=${PG_BIN:-$(pg_bin "$PG_MAJOR")}
PG_CONFIG=$PG_BIN/pg_config
PGXS_DIR=$("$PG_CONFIG" --pkglibdir)/pgxs
# psql and the other client programs of the same major.
export PATH="$PG_BIN:$PATH"

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres -- "$@"; fi
}

# Builds the extension and installs it into the PostgreSQL of $PG_CONFIG.
install_extension() {
  echo "==> building and installing pg_entitlements"
  cargo pgrx install --pg-config "$PG_CONFIG" "$@" >/dev/null
}

# cluster_start DIR PORT [name=value settings...]: a fresh cluster in DIR. The settings go to
# postgresql.conf (quoted there, so values such as '$libdir' need no shell escaping).
cluster_start() {
  local dir=$1 port=$2; shift 2
  cluster_init "$dir" "$@"
  cluster_run "$dir" "$port"
}

# cluster_init DIR [settings...]: a fresh cluster in DIR, not started.
cluster_init() {
  local dir=$1; shift
  rm -rf "$dir" && mkdir -p "$dir" && chown postgres: "$dir"
  as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log"; return 1; }
  local setting
  for setting in listen_addresses=localhost fsync=off "$@"; do
    printf "%s = '%s'\n" "${setting%%=*}" "${setting#*=}" >>"$dir/data/postgresql.conf"
  done
}

# cluster_run DIR PORT: starts the cluster in DIR.
cluster_run() {
  local dir=$1 port=$2
  # RUST_BACKTRACE=1: a Rust backtrace that leaked into an error message would then show in the
  # suites' outputs (sudo does not pass the caller's environment on).
  as_postgres env RUST_BACKTRACE=1 "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "-p $port -k $dir" -w start >/dev/null \
    || { cat "$dir/server.log"; return 1; }
}

# suite_cluster DIR PORT [settings...]: what every suite starts with. Builds and installs the
# extension, starts a fresh cluster in DIR that loads its own copy of the library (the control
# file's module_pathname has no $libdir, so dynamic_library_path decides: a build another suite
# installs meanwhile cannot replace the library under this one's backends), and stops the
# cluster when the calling script exits.
suite_cluster() {
  local dir=$1 port=$2; shift 2
  install_extension
  trap "cluster_stop '$dir'" EXIT
  cluster_start "$dir" "$port" "dynamic_library_path=$dir/lib:\$libdir" "$@"
  mkdir -p "$dir/lib" && cp "$("$PG_CONFIG" --pkglibdir)/pg_entitlements.so" "$dir/lib/"
  chmod 755 "$dir/lib" && chmod 644 "$dir/lib/pg_entitlements.so"
}

cluster_stop() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
}
