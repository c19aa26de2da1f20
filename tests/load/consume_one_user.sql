-- Part (a): every client consumes 1 of user 1's articles_per_month, far beyond its limit.
SELECT allowed FROM quota.consume(1, 'articles_per_month');
