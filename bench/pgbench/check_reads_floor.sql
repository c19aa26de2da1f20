\set uid random(1, 100000)
SELECT s.plan_id, s.custom_quotas ->> 'articles_per_month', (SELECT u.usage_count FROM quota.user_usage u WHERE u.user_id = s.user_id AND u.feature_code = 'articles_per_month' ORDER BY u.period_start DESC LIMIT 1) FROM quota.user_subscriptions s WHERE s.user_id = :uid AND s.status = 'active' ORDER BY s.end_date DESC, s.id DESC LIMIT 1;
