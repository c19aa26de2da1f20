\set uid random(1, 100000)
SELECT * FROM seed.check_user_quota(:uid, 'articles_per_month');
