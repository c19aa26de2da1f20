\set rid random(1, 2000000000)
WITH counter AS (
    UPDATE quota.user_usage SET usage_count = usage_count + 1, updated_at = now()
     WHERE user_id = :hot AND feature_code = 'articles_per_month' AND period_start = :ps
       AND usage_count + 1 <= :lim
    RETURNING usage_count
), rec AS (
    INSERT INTO quota.usage_records (user_id, feature_code, period_start, resource_type,
                                     resource_id, amount, metadata, created_at)
    SELECT :hot, 'articles_per_month', :ps, 'article', :rid, 1, '{"words": 1200}', now()
      FROM counter
)
SELECT usage_count FROM counter;
