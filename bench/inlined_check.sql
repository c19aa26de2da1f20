-- Baseline (b): the best single hand-written SQL statement that computes what
-- quota.check_user_quota(user, feature) returns, written to be inlined in the caller's query
-- (no function call). scripts/bench.sh substitutes __UID__ (an expression: `g` in the
-- in-server case, `:uid` under pgbench) and __FEATURE__ (a quoted literal) and wraps it as
-- `LATERAL (...) q`.
--
-- Same rules as the extension: the active subscription (status 'active', started, not ended,
-- latest end_date first); limit = custom_quotas ->> feature, else the plan's value, else the
-- catalog default, -1 unlimited, none = no quota; the usage counter of the current period:
-- the anniversary of coalesce(quota_reset_anchor, start_date) in quota.settings' time zone,
-- counted from the anchor, clamped to the subscription (reset_rule 'subscription': the
-- subscription's start; 'never': -infinity). One index probe per table, no function call
-- beyond built-in operators; the settings lookup is an InitPlan, evaluated once per query.
SELECT CASE WHEN c.lim IS NULL THEN false WHEN c.lim = -1 THEN true ELSE c.used < c.lim END
           AS has_quota,
       coalesce(c.used, 0)::int AS current_usage,
       coalesce(c.lim, 0) AS quota_limit,
       CASE WHEN c.lim IS NULL THEN 0 WHEN c.lim = -1 THEN -1
            ELSE greatest(c.lim - c.used, 0)::int END AS remaining,
       CASE WHEN c.lim IS NULL OR c.lim <= 0 THEN 0::numeric
            ELSE round(c.used * 100::numeric / c.lim, 2) END AS percentage
  FROM (SELECT) AS one
  LEFT JOIN LATERAL (
        SELECT coalesce((s.custom_quotas ->> f.code)::int, pf.feature_value, f.default_limit) AS lim,
               coalesce((SELECT u.usage_count FROM quota.user_usage u
                          WHERE u.user_id = s.user_id AND u.feature_code = f.code
                            AND u.period_start = CASE f.reset_rule
                                  WHEN 'never' THEN '-infinity'::timestamptz
                                  WHEN 'subscription' THEN s.start_date
                                  ELSE greatest(s.start_date,
                                         (s.al + make_interval(months => s.m *
                                            (k.k0 - (s.al + make_interval(months => s.m * k.k0)
                                                     > s.nl)::int)))
                                         AT TIME ZONE s.tz) END), 0) AS used
          FROM quota.features f
          JOIN LATERAL (
                SELECT us.user_id, us.plan_id, us.start_date, us.custom_quotas, t.tz,
                       coalesce(us.quota_reset_anchor, us.start_date) AT TIME ZONE t.tz AS al,
                       now() AT TIME ZONE t.tz AS nl,
                       CASE coalesce(us.quota_cycle_type, sp.quota_cycle_type, sp.billing_cycle)
                            WHEN 'yearly' THEN 12 ELSE 1 END AS m
                  FROM quota.user_subscriptions us
                  JOIN quota.subscription_plans sp ON sp.id = us.plan_id,
                       (SELECT coalesce((SELECT st.time_zone FROM quota.settings st), 'UTC') AS tz) t
                 WHERE us.user_id = __UID__ AND us.status = 'active'
                   AND us.start_date <= now() AND us.end_date > now()
                 ORDER BY us.end_date DESC, us.id DESC
                 LIMIT 1) s ON true
          LEFT JOIN quota.plan_features pf ON pf.plan_id = s.plan_id AND pf.feature_code = f.code
          CROSS JOIN LATERAL (
                SELECT floor(((extract(year FROM s.nl) - extract(year FROM s.al)) * 12
                              + extract(month FROM s.nl) - extract(month FROM s.al)) / s.m)::int
                       AS k0) k
         WHERE f.code = __FEATURE__) c ON true
