\set uid random(1, 100000)
SELECT * FROM generate_series(:uid::bigint, :uid::bigint) g(user_id);
