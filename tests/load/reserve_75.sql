-- Part (g): a hold of 75 of user 6's 500, kept uncommitted for a moment, so that the other
-- clients' holds are asked for while it is in flight.
BEGIN;
SELECT allowed FROM quota.reserve(6, 'articles_per_month', 75);
SELECT pg_sleep(0.05);
COMMIT;
