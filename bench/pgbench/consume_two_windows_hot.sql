\set rid random(1, 2000000000)
SELECT * FROM quota.consume(:hot, 'searches', 1, NULL, 'search', :rid, '{"terms": 3}');
