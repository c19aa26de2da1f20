# Throwaway PostgreSQL clusters for the demo and the SQL-level tests. Sourced, not run.
# Clusters run as the `postgres` user (initdb refuses root) on a port of their own, with the
# socket inside the cluster's folder, and are stopped again by the caller's trap.

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BIN/pg_config
PGXS_DIR=$("$PG_CONFIG" --pkglibdir)/pgxs

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres -- "$@"; fi
}

# Builds the extension and installs it into the PostgreSQL of $PG_CONFIG.
install_extension() {
  echo "==> building and installing pg_entitlements"
  cargo pgrx install --pg-config "$PG_CONFIG" "$@" >/dev/null
}

# cluster_start DIR PORT [extra postgres -c settings...]: a fresh cluster in DIR.
cluster_start() {
  local dir=$1 port=$2; shift 2
  rm -rf "$dir" && mkdir -p "$dir" && chown postgres: "$dir"
  as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log"; return 1; }
  local opts="-p $port -k $dir -c listen_addresses=localhost -c fsync=off"
  for setting in "$@"; do opts="$opts -c $setting"; done
  as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w start >/dev/null \
    || { cat "$dir/server.log"; return 1; }
}

cluster_stop() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
}
