UPDATE quota.user_usage SET usage_count = usage_count + 1
 WHERE user_id = :hot AND feature_code = 'articles_per_month' AND period_start = :ps
   AND usage_count + 1 <= :lim
RETURNING usage_count;
