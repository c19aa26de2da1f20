-- The ledger invariant: for every (user, feature, period) the counter equals the sum of its
-- usage records, less what they drew from grants (quota.grant_uses; the grants' own ledger is
-- quota.verify_grants()), less what release_usage took off it (quota.releases). Returns the
-- rows that disagree: none, always. It reads the tables the functions use: the extension's own,
-- or those quota.attach() bound.
CREATE FUNCTION quota.verify_ledger(for_user bigint DEFAULT NULL)
RETURNS TABLE (user_id bigint, feature_code text, period_start timestamptz,
               counter bigint, ledger bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tables name := coalesce((SELECT st.attached_schema FROM quota.settings st), 'quota');
    -- An attached application's period_start without time zone holds its local time.
    local_zone text := (SELECT st.attached_time_zone FROM quota.settings st
                         WHERE (SELECT a.atttypid FROM pg_attribute a
                                 WHERE a.attrelid = to_regclass(format('%I.user_usage', tables))
                                   AND a.attname = 'period_start' AND NOT a.attisdropped)
                               = 'timestamp'::regtype);
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT coalesce(u.user_id, r.user_id)::bigint, coalesce(u.feature_code, r.feature_code)::text,
               %2$s,
               coalesce(u.usage_count, 0)::bigint, coalesce(r.total, 0)::bigint
          FROM (SELECT x.user_id, x.feature_code, x.period_start, x.usage_count
                  FROM %1$I.user_usage x WHERE $1 IS NULL OR x.user_id = $1) u
          FULL JOIN (SELECT e.user_id, e.feature_code, e.period_start, sum(e.amount) AS total
                       FROM (SELECT x.user_id::bigint AS user_id, x.feature_code::text AS feature_code,
                                    x.period_start, x.amount - coalesce(g.drawn, 0) AS amount
                               FROM %1$I.usage_records x
                               LEFT JOIN (SELECT d.user_id, d.record_id, sum(d.amount) AS drawn
                                            FROM quota.grant_uses d
                                           WHERE $1 IS NULL OR d.user_id = $1
                                           GROUP BY 1, 2) g
                                      ON g.user_id = x.user_id AND g.record_id = x.id
                              WHERE ($1 IS NULL OR x.user_id = $1) AND x.period_start IS NOT NULL
                             UNION ALL
                             SELECT l.user_id, l.feature_code, %3$s, -l.amount
                               FROM quota.releases l
                              WHERE $1 IS NULL OR l.user_id = $1) e
                      GROUP BY 1, 2, 3) r
            ON u.user_id = r.user_id AND u.feature_code = r.feature_code
           AND u.period_start = r.period_start
         WHERE coalesce(u.usage_count, 0) IS DISTINCT FROM coalesce(r.total, 0)
         ORDER BY 1, 2, 3$q$, tables,
        CASE WHEN local_zone IS NULL THEN 'coalesce(u.period_start, r.period_start)::timestamptz'
             ELSE format('coalesce(u.period_start, r.period_start) AT TIME ZONE %L', local_zone) END,
        -- A release's period as the bound tables hold it.
        CASE WHEN local_zone IS NULL THEN 'l.period_start'
             ELSE format('l.period_start AT TIME ZONE %L', local_zone) END)
    USING for_user;
END
$$;
