-- Part (b): consume 1 for a random user among :users (user ids 1001 .. 1000 + :users).
\set uid random(1001, 1000 + :users)
SELECT allowed FROM quota.consume(:uid, 'articles_per_month');
