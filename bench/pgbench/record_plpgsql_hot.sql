\set rid random(1, 2000000000)
SELECT seed.record_feature_usage(:hot, 'articles_per_month', 'article', :rid, 1, '{"words": 1200}');
