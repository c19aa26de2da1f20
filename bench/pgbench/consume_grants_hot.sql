\set rid random(1, 2000000000)
SELECT * FROM quota.consume(:grant_user, 'articles_per_month', 1, NULL, 'article', :rid, '{"words": 1200}');
