-- The ledger invariant: for every (user, feature, period) the counter equals the sum of its
-- usage records. Returns the rows that disagree: none, always.
CREATE FUNCTION quota.verify_ledger(user_id bigint DEFAULT NULL)
RETURNS TABLE (user_id bigint, feature_code text, period_start timestamptz,
               counter bigint, ledger bigint)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(u.user_id, r.user_id), coalesce(u.feature_code, r.feature_code),
           coalesce(u.period_start, r.period_start),
           coalesce(u.usage_count, 0), coalesce(r.total, 0)
      FROM (SELECT * FROM quota.user_usage x
             WHERE $1 IS NULL OR x.user_id OPERATOR(pg_catalog.=) $1) u
      FULL JOIN (SELECT x.user_id, x.feature_code, x.period_start,
                        pg_catalog.sum(x.amount)::bigint AS total
                   FROM quota.usage_records x
                  WHERE $1 IS NULL OR x.user_id OPERATOR(pg_catalog.=) $1
                  GROUP BY 1, 2, 3) r
        ON u.user_id OPERATOR(pg_catalog.=) r.user_id
       AND u.feature_code OPERATOR(pg_catalog.=) r.feature_code
       AND u.period_start OPERATOR(pg_catalog.=) r.period_start
     WHERE coalesce(u.usage_count, 0) IS DISTINCT FROM coalesce(r.total, 0)
$$;
