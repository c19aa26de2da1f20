-- Part (d): consume or record_feature_usage for user 3, half the calls reading through
-- statements (pg_entitlements.direct_reads off), while renewal.sql renews the subscription.
\set direct random(0, 1)
\set call random(0, 1)
SET pg_entitlements.direct_reads = :direct;
\if :call
INSERT INTO public.load_renewal_answers
SELECT 'consume', allowed, quota_limit, NULL FROM quota.consume(3, 'articles_per_month');
\else
SELECT public.load_record_renewed();
\endif
