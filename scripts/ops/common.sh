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

# same_files EXPECTED ACTUAL MESSAGE [diff args...]: fails with MESSAGE and the unified diff
# (kept in ACTUAL.diff) when the two files differ.
same_files() {
  local expected=$1 actual=$2 message=$3; shift 3
  if ! diff -u "$@" "$expected" "$actual" >"$actual.diff"; then
    cat "$actual.diff"
    fail "$message"
  fi
}

# snapshot_tables FILE: how many quota tables tests/ops/snapshot.sql hashed into FILE; fails
# below 9, which would mean the snapshot no longer covers them.
snapshot_tables() {
  local n
  n=$(grep -c '^ [a-z_]* *| *[0-9]* | [0-9a-f]\{32\}$' "$1" || true)
  [ "$n" -ge 9 ] || fail "expected the md5 of at least 9 quota tables in $1, found $n"
  echo "$n"
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

# empty_quota_tables DIR PORT DB: the quota tables of DB without rows, comma-separated (counted
# by a function of the session, not with query_to_xml: a server may be built without libxml).
empty_quota_tables() {
  sql_value "$1" "$2" "$3" "
    CREATE FUNCTION pg_temp.row_count(relation regclass) RETURNS bigint LANGUAGE plpgsql AS \$\$
    DECLARE n bigint;
    BEGIN EXECUTE format('SELECT count(*) FROM %s', relation) INTO n; RETURN n; END
    \$\$;
    SELECT string_agg(c.relname, ', ' ORDER BY c.relname)
      FROM pg_class c
     WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind = 'r'
       AND pg_temp.row_count(c.oid) = 0"
}
