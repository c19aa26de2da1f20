-- 28_tick_by_user: quota.tick() user by user, the way it runs on a Citus cluster (each due
-- user's steps in quota.tick_user(), on the user's worker there), against the same tick in
-- one statement per step: the same rows written and the same counts. In a database of its
-- own, so that the ticks meet only its users (28xx). The instants the story sets are offsets
-- from t0; a hold and a storage grant expire by the clock a second after it, and both ticks
-- run at t1, after that.
CREATE DATABASE tick_by_user;
\c tick_by_user
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET client_min_messages = warning;
CREATE EXTENSION pg_entitlements;
CREATE TABLE public.clock AS SELECT now() - interval '1 minute' AS t0;
CREATE TABLE public.tick_at (t1 timestamptz);
CREATE FUNCTION public.t(offset_ interval) RETURNS timestamptz LANGUAGE sql STABLE
    RETURN (SELECT t0 FROM public.clock) + offset_;
CREATE FUNCTION public.plan_id(code text) RETURNS bigint LANGUAGE sql STABLE
    RETURN (SELECT id FROM quota.subscription_plans WHERE plan_code = code);
-- What a tick writes, without the ids it draws (a rolled-back tick does not give them back)
-- and with instants as offsets from t0 (or compared with t1).
CREATE FUNCTION public.written() RETURNS SETOF text LANGUAGE sql STABLE AS $$
    SELECT format('subscription %s %s %s %s..%s%s', s.user_id, p.plan_code, s.status,
                  s.start_date - c.t0, s.end_date - c.t0, CASE WHEN s.trial THEN ' trial' END)
      FROM quota.user_subscriptions s JOIN quota.subscription_plans p ON p.id = s.plan_id, public.clock c
    UNION ALL
    SELECT format('change %s %s %s at %s by %s %s', x.user_id, x.change, p.plan_code,
                  x.effective_at - c.t0, x.actor, x.details - 'previous_subscription_id')
      FROM quota.subscription_changes x JOIN quota.subscription_plans p ON p.id = x.plan_id, public.clock c
    UNION ALL
    SELECT format('scheduled %s %s', x.user_id, x.state) FROM quota.scheduled_changes x
    UNION ALL
    SELECT format('hold %s %s %s', r.user_id, r.state, r.ended_at = r.expires_at)
      FROM quota.reservations r
    UNION ALL
    SELECT format('counter %s %s used %s held %s', u.user_id, u.feature_code, u.usage_count, u.held)
      FROM quota.user_usage u
    UNION ALL
    SELECT format('grant %s %s %s %s left %s', g.user_id, g.feature_code, g.source, g.amount, g.remaining)
      FROM quota.grants g
    UNION ALL
    SELECT format('notice %s %s at the tick %s', n.user_id, n.notice, n.sent_at = a.t1)
      FROM quota.grant_notices n, public.tick_at a
    UNION ALL
    SELECT format('storage %s %s', s.user_id, s.storage_quota_bytes) FROM quota.user_storage_usage s
    UNION ALL
    SELECT format('tick_state up to the tick: %s', ARRAY[t.grants_expired_to, t.rollover_checked_to,
                                                          t.storage_synced_to, t.ticked_at] <@ ARRAY[a.t1])
      FROM quota.tick_state t, public.tick_at a
    ORDER BY 1
$$;

INSERT INTO quota.subscription_plans (plan_code, plan_name, price, duration_days, billing_cycle)
VALUES ('free', 'Free', 0, 30, 'monthly'), ('professional', 'Professional', 99, NULL, 'monthly');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, feature_unit)
VALUES (plan_id('free'), 'articles_per_month', 10, NULL),
       (plan_id('free'), 'storage_space', 100, 'MB'),
       (plan_id('professional'), 'articles_per_month', 100, NULL),
       (plan_id('professional'), 'storage_space', 1024, 'MB');
INSERT INTO quota.settings (fallback_plan_code) VALUES ('free');
UPDATE quota.features SET rollover_max = 5 WHERE code = 'articles_per_month';

-- 2801..2803: subscriptions that ended (one a trial); 2804: a plan change due; 2805: a hold
-- past its expiry; 2806: a grant in its warning days and one that expired; 2807: a storage
-- grant that expired; 2808: a period that ended with 3 of 100 articles used (rollover).
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, trial)
VALUES (2801, plan_id('professional'), t('-40 days'), t('-2 hours'), false),
       (2802, plan_id('professional'), t('-40 days'), t('-3 days'), false),
       (2803, plan_id('professional'), t('-10 days'), t('-1 hour'), true);
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT u, plan_id('professional'), t('-5 days'), t('300 days') FROM generate_series(2804, 2807) u;
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor)
VALUES (2808, plan_id('professional'), t('-40 days'), t('300 days'), t('-1 minute'));
INSERT INTO quota.scheduled_changes (user_id, plan_id, due_at, actor)
VALUES (2804, plan_id('free'), t('-30 minutes'), 'regress');
SELECT allowed FROM quota.reserve(2805, 'articles_per_month', 5, interval '1 second');
SELECT amount FROM quota.grant_quota(2806, 'articles_per_month', 7, t('2 days'));
SELECT amount FROM quota.grant_quota(2806, 'articles_per_month', 9, now() + interval '1 day');
UPDATE quota.grants SET created_at = t('-2 days'), effective_from = t('-1 day'),
                        expires_at = t('-5 minutes')
 WHERE user_id = 2806 AND amount = 9;
SELECT amount FROM quota.grant_quota(2807, 'storage_space', 500, now() + interval '1 second');
SELECT storage_quota_bytes FROM quota.user_storage_usage WHERE user_id = 2807;
INSERT INTO quota.user_usage (user_id, feature_code, period_start, period_end, usage_count,
                              last_reset_at, updated_at)
SELECT 2808, 'articles_per_month', p.period_start, p.period_end, 3, t('-2 days'), t('-2 days')
  FROM quota.anniversary_period(t('-1 minute'), 'monthly', t('-2 minutes')) p;
INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, created_at)
SELECT u.user_id, u.feature_code, u.period_start, 3, t('-2 days') FROM quota.user_usage u
 WHERE u.user_id = 2808;

SELECT pg_sleep(1.2);
INSERT INTO public.tick_at VALUES (now());

-- The tick in one statement per step, then user by user, each in a transaction rolled back.
BEGIN;
SELECT * FROM quota.tick((SELECT t1 FROM public.tick_at));
SELECT string_agg(w, E'\n') AS by_step FROM public.written() w \gset
ROLLBACK;
BEGIN;
SET LOCAL pg_entitlements.tick_by_user = on;
SELECT * FROM quota.tick((SELECT t1 FROM public.tick_at));
SELECT string_agg(w, E'\n') AS by_user FROM public.written() w \gset
ROLLBACK;
SELECT :'by_step' = :'by_user' AS same_rows;
SELECT regexp_split_to_table(:'by_user', E'\n') AS written_by_the_tick;

-- Two at a time until nothing is left: the same rows in the end.
BEGIN;
SELECT more FROM quota.tick((SELECT t1 FROM public.tick_at), 2);
SELECT more FROM quota.tick((SELECT t1 FROM public.tick_at), 2);
SELECT more FROM quota.tick((SELECT t1 FROM public.tick_at), 2);
SELECT more FROM quota.tick((SELECT t1 FROM public.tick_at), 2);
SELECT string_agg(w, E'\n') AS by_step FROM public.written() w \gset
ROLLBACK;
BEGIN;
SET LOCAL pg_entitlements.tick_by_user = on;
SELECT more FROM quota.tick((SELECT t1 FROM public.tick_at), 2);
SELECT more FROM quota.tick((SELECT t1 FROM public.tick_at), 2);
SELECT more FROM quota.tick((SELECT t1 FROM public.tick_at), 2);
SELECT more FROM quota.tick((SELECT t1 FROM public.tick_at), 2);
SELECT string_agg(w, E'\n') AS by_user FROM public.written() w \gset
ROLLBACK;
SELECT :'by_step' = :'by_user' AS same_rows_in_batches;

-- quota.tick_user() is the tick's own: nobody else may call it.
SET ROLE quota_admin;
SELECT quota.tick_user(2801, now(), 10, NULL, interval '1 day', NULL, NULL, NULL);
RESET ROLE;
\c pge_regress
DROP DATABASE tick_by_user;
