-- Part (h): every client consumes 1 to 3 of user 8's searches, limited per month and per day,
-- far beyond the day's 300; one call in eight refunds the client's previous use when it had one.
\set amount random(1, 3)
\set refund random(1, 8)
SELECT allowed FROM quota.consume(8, 'searches', :amount, 'h-' || :client_id || '-' || :scale || '-' || random());
SELECT count(*) FROM (SELECT quota.refund_usage(r.id)
                        FROM quota.usage_records r
                       WHERE r.user_id = 8 AND :refund = 1 AND r.refund_of IS NULL
                         AND r.idempotency_key LIKE 'h-' || :client_id || '-%'
                         AND NOT EXISTS (SELECT FROM quota.usage_records x
                                          WHERE x.user_id = 8 AND x.refund_of = r.id)
                       ORDER BY r.id DESC LIMIT 1) q;
