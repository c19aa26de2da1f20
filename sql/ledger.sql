-- The ledger invariant: for every (user, feature, period) the counter equals the sum of its
-- usage records. Returns the rows that disagree: none, always. It reads the tables the
-- functions use: the extension's own, or those quota.attach() bound.
CREATE FUNCTION quota.verify_ledger(for_user bigint DEFAULT NULL)
RETURNS TABLE (user_id bigint, feature_code text, period_start timestamptz,
               counter bigint, ledger bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tables name := coalesce((SELECT st.attached_schema FROM quota.settings st), 'quota');
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT coalesce(u.user_id, r.user_id)::bigint, coalesce(u.feature_code, r.feature_code)::text,
               coalesce(u.period_start, r.period_start),
               coalesce(u.usage_count, 0)::bigint, coalesce(r.total, 0)::bigint
          FROM (SELECT x.user_id, x.feature_code, x.period_start, x.usage_count
                  FROM %1$I.user_usage x WHERE $1 IS NULL OR x.user_id = $1) u
          FULL JOIN (SELECT x.user_id, x.feature_code, x.period_start, sum(x.amount) AS total
                       FROM %1$I.usage_records x
                      WHERE ($1 IS NULL OR x.user_id = $1) AND x.period_start IS NOT NULL
                      GROUP BY 1, 2, 3) r
            ON u.user_id = r.user_id AND u.feature_code = r.feature_code
           AND u.period_start = r.period_start
         WHERE coalesce(u.usage_count, 0) IS DISTINCT FROM coalesce(r.total, 0)
         ORDER BY 1, 2, 3$q$, tables)
    USING for_user;
END
$$;
