-- Part (g): a hold of 8 of user 7's publish_per_month, settled with 0 to 12 (beyond the hold
-- only while what is left allows it; a hold that could not be settled so is released), beside
-- a use of 3.
\set actual random(0, 12)
SELECT coalesce(reservation_id, 0) AS hold FROM quota.reserve(7, 'publish_per_month', 8) \gset
\if :hold > 0
SELECT settled::int AS settled FROM quota.settle(:hold, :actual) \gset
\if :settled = 0
SELECT quota.release(:hold);
\endif
\endif
SELECT allowed FROM quota.consume(7, 'publish_per_month', 3);
