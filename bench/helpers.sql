-- Measurement helpers of the benchmark (schema bench), loaded by scripts/bench.sh.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE SCHEMA bench;

-- Wall time of one statement inside the server, in microseconds (no client round trip).
CREATE FUNCTION bench.time_sql(sql text) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE sql;
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6;
END;
$$;

-- Memory of the calling backend, from /proc/<pid>/status (kB): VmRSS and its parts.
CREATE FUNCTION bench.rss(OUT vmrss_kb bigint, OUT rssanon_kb bigint, OUT rssshmem_kb bigint)
LANGUAGE sql AS $$
    WITH s AS (
        SELECT pg_read_file('/proc/' || pg_backend_pid() || '/status') AS t
    )
    SELECT (substring(t FROM 'VmRSS:\s+(\d+)'))::bigint,
           (substring(t FROM 'RssAnon:\s+(\d+)'))::bigint,
           (substring(t FROM 'RssShmem:\s+(\d+)'))::bigint
      FROM s
$$;

-- The shared object files this backend has mapped whose name contains `pattern`.
CREATE FUNCTION bench.mapped_files(pattern text) RETURNS SETOF text
LANGUAGE sql AS $$
    SELECT DISTINCT substring(line FROM '(/\S+)$')
      FROM regexp_split_to_table(pg_read_file('/proc/' || pg_backend_pid() || '/maps'), '\n') AS line
     WHERE line LIKE '%' || pattern || '%'
$$;
