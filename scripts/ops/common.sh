# Helpers shared by the operations checks in scripts/ops. Sourced after scripts/cluster.sh.

# fail MESSAGE...: the check failed; say which and stop (the caller's trap stops the clusters).
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# ok MESSAGE...: one check passed.
ok() {
  echo "  ok: $*"
}

# check MESSAGE...: announce the check that follows.
check() {
  echo "--> $*"
}

# sql DIR PORT DB [psql args...]: psql against the cluster in DIR, quiet, stopping on the first
# error, with UTC and ISO dates so that printed answers compare byte for byte.
sql() {
  local dir=$1 port=$2 db=$3; shift 3
  PGTZ=UTC PGDATESTYLE=ISO,YMD psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres \
    -d "$db" "$@"
}

# sql_value DIR PORT DB QUERY: one value, unaligned, no headers.
sql_value() {
  local dir=$1 port=$2 db=$3 query=$4
  sql "$dir" "$port" "$db" -At -c "$query"
}
