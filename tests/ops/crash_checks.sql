-- The invariants scripts/ops/crash.sh checks after crash recovery, one row per check:
-- (check, bad), where bad is the number of violations (0 when the invariant holds) or, for the
-- rows whose name starts with "count", a figure that must be above 0.
SELECT "check", bad FROM (
SELECT 1 AS n, 'verify_ledger: counters equal the sum of their usage records' AS "check",
       count(*) AS bad FROM quota.verify_ledger()
UNION ALL
SELECT 2 AS n, 'no idempotency key counted twice (count = count distinct)',
       count(idempotency_key) - count(DISTINCT idempotency_key) FROM quota.usage_records
UNION ALL
SELECT 3 AS n, 'no key of a rolled-back transaction (x-...)',
       count(*) FROM quota.usage_records WHERE idempotency_key LIKE 'x-%'
UNION ALL
SELECT 4 AS n, 'no half transaction: every committed m-...-c has its m-...-r',
       count(*) FROM quota.usage_records c
 WHERE c.idempotency_key LIKE 'm-%-c'
   AND NOT EXISTS (SELECT FROM quota.usage_records r
                    WHERE r.user_id = c.user_id
                      AND r.idempotency_key = left(c.idempotency_key, -1) || 'r')
UNION ALL
SELECT 5 AS n, 'consume-only counters never above their limit',
       count(*) FROM quota.user_usage u
 CROSS JOIN LATERAL quota.check_user_quota(u.user_id, u.feature_code) q
 WHERE u.feature_code IN ('articles_per_month', 'keyword_distillation')
   AND u.usage_count > q.quota_limit
UNION ALL
SELECT 6 AS n, 'every refund refunds a keyed consume of the same user, once',
       count(*) FROM quota.usage_records f
  LEFT JOIN quota.usage_records o ON o.user_id = f.user_id AND o.id = f.refund_of
 WHERE f.refund_of IS NOT NULL
   AND (o.id IS NULL OR o.idempotency_key NOT LIKE 'c-%' OR o.amount <> -f.amount)
UNION ALL
SELECT 7 AS n, 'count of committed keyed uses', count(idempotency_key) FROM quota.usage_records
UNION ALL
SELECT 8 AS n, 'count of counters at their limit (the limits were reached)',
       count(*) FROM quota.user_usage u
 CROSS JOIN LATERAL quota.check_user_quota(u.user_id, u.feature_code) q
 WHERE u.feature_code IN ('articles_per_month', 'keyword_distillation')
   AND q.remaining < 3
) AS checks ORDER BY n;
