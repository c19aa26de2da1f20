-- Part (f): every client consumes 3 of user 5's articles_per_month, split across the allowance
-- and the grants, far beyond the 250 units there are.
SELECT allowed FROM quota.consume(5, 'articles_per_month', 3);
