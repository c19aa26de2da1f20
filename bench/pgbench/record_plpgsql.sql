\set uid random(1, 100000)
\set rid random(1, 2000000000)
SELECT seed.record_feature_usage(:uid, 'articles_per_month', 'article', :rid, 1, '{"words": 1200}');
