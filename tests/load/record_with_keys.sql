-- Part (c): record_feature_usage under idempotency keys drawn from a small space, so that many
-- calls retry a key another client is using at the same moment or used before.
\set k random(1, :keys)
INSERT INTO public.load_keys_drawn VALUES ('key-' || :k);
SELECT quota.record_feature_usage(2, 'publish_per_month', idempotency_key => 'key-' || :k);
