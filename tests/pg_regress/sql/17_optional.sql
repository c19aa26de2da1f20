-- 17_optional: what an application's tables need only for one feature is optional. The seed
-- application's schema gets only the fixes attach() requires; it then attaches without
-- idempotency keys, refunds and threshold alerts, and everything else works. The calls that
-- need a missing feature are refused with 0A000 and the way to add it; once its columns and
-- index are there, attaching again turns it on, in every session.
CREATE DATABASE optional;
\c optional
SET client_min_messages = notice;
\set VERBOSITY default
\set SHOW_CONTEXT never
SET TimeZone = 'Asia/Shanghai';
\set ECHO none
\i tests/fixtures/seed_app.sql
\set ECHO all
CREATE EXTENSION pg_entitlements;

-- Each problem that concerns one optional feature alone says which.
SELECT needed_for, problem
  FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE needed_for IS NOT NULL ORDER BY needed_for, problem;

-- The DBA runs only the fixes attach() requires.
SELECT fix FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE needed_for IS NULL AND fix IS NOT NULL ORDER BY fix_in_transaction DESC, problem \gexec
SELECT count(*) AS required_left FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE needed_for IS NULL;
SELECT quota.attach('public', local_time_zone => 'Asia/Shanghai');
SELECT attached_schema, attached_lacks FROM quota.settings;

-- Everything that needs none of them works. (A threshold alert would show here as an
-- asynchronous notification: user 1 crosses 80% and 100% of 6.)
LISTEN quota_threshold;
SELECT * FROM quota.check_user_quota(1, 'articles_per_month');
SELECT allowed, current_usage, remaining FROM quota.consume(1, 'articles_per_month', 3);
SELECT quota.record_feature_usage(1, 'articles_per_month', 'article', 106);
SELECT allowed, current_usage, remaining FROM quota.consume(1, 'articles_per_month', 1);
SELECT id, amount, resource_id FROM public.usage_records WHERE user_id = 1 ORDER BY id;
SELECT * FROM quota.verify_ledger();

-- What needs a missing feature is refused before anything is written.
SELECT quota.consume(1, 'publish_per_month', 1, idempotency_key => 'publish-1');
SELECT quota.record_feature_usage(1, 'publish_per_month', idempotency_key => 'publish-1');
SELECT quota.refund_usage((SELECT max(id) FROM public.usage_records));
SELECT quota.refund_usage(1, 'publish-1');
SELECT * FROM quota.reserve(1, 'publish_per_month', 1);
SELECT count(*) AS publish_records FROM public.usage_records
 WHERE feature_code = 'publish_per_month';

-- Idempotency keys: the column, and its unique index built CONCURRENTLY. A key used twice
-- before the index exists is a problem of that feature alone: attach() goes on without it.
SELECT fix FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE needed_for = 'idempotency_keys' AND fix LIKE 'ALTER TABLE%' \gexec
UPDATE public.usage_records SET idempotency_key = 'twice' WHERE id IN (1, 2);
SELECT needed_for, problem, row_ids, note FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE bad_rows IS NOT NULL;
SELECT quota.attach('public', local_time_zone => 'Asia/Shanghai');
SELECT attached_lacks FROM quota.settings;
UPDATE public.usage_records SET idempotency_key = NULL WHERE id = 2;
SELECT fix FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE needed_for = 'idempotency_keys' \gexec
SELECT quota.attach('public', local_time_zone => 'Asia/Shanghai');
SELECT attached_lacks FROM quota.settings;
SELECT allowed, current_usage FROM quota.consume(1, 'publish_per_month', 1, idempotency_key => 'publish-1');
SELECT allowed, current_usage FROM quota.consume(1, 'publish_per_month', 1, idempotency_key => 'publish-1');
SELECT count(*) AS publish_records FROM public.usage_records
 WHERE feature_code = 'publish_per_month';
SELECT quota.refund_usage(1, 'publish-1');

-- Refunds, alerts and reservations: every remaining fix, one attach, and nothing is lacking.
SELECT fix FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE needed_for IS NOT NULL ORDER BY fix_in_transaction DESC, problem \gexec
SELECT quota.attach('public', local_time_zone => 'Asia/Shanghai');
SELECT attached_lacks FROM quota.settings;
SELECT refunded_amount, newly_refunded FROM quota.refund_usage(1, 'publish-1');
SELECT current_usage FROM quota.check_user_quota(1, 'publish_per_month');
-- Reservations: the counters now keep what holds claim.
SELECT allowed, remaining FROM quota.reserve(1, 'publish_per_month', 2);
SELECT settled FROM quota.settle((SELECT max(id) FROM quota.reservations), 0);
SELECT * FROM quota.verify_holds();
-- The counter remembers the alerts it announces now (psql shows a notification with the PID
-- of the server process, so this file shows the memory instead).
UNLISTEN quota_threshold;
SELECT allowed FROM quota.consume(1, 'publish_per_month', 17);
SELECT feature_code, usage_count, alerted_percent, alerted_limit FROM public.user_usage
 WHERE user_id = 1 AND feature_code = 'publish_per_month';
SELECT * FROM quota.verify_ledger();

-- detach() forgets what was lacking with the rest of the binding.
SELECT quota.detach();
SELECT attached_schema, attached_lacks FROM quota.settings;
\c pge_regress
DROP DATABASE optional;
