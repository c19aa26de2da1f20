-- Run by tests/pg_regress/sql/26_lifecycle.sql, in a database of its own so that its ticks
-- meet only its own users (24xx). Instants are explicit: t(offset) is an offset from the
-- instant the story starts, and the subscriptions, schedules and ticks are placed at such
-- instants in the past (a tick cannot run ahead of now(), which every read compares with).
CREATE DATABASE lifecycle;
\c lifecycle
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET client_min_messages = warning;
-- Errors without the PL/pgSQL line they were raised at.
\set SHOW_CONTEXT never
CREATE EXTENSION pg_entitlements;
SET search_path = quota, public;
CREATE TABLE public.clock AS SELECT now() AS t0;
GRANT SELECT ON public.clock TO PUBLIC;
CREATE FUNCTION public.t(offset_ interval) RETURNS timestamptz LANGUAGE sql STABLE
    RETURN (SELECT t0 FROM public.clock) + offset_;
CREATE FUNCTION public.plan_id(code text) RETURNS bigint LANGUAGE sql STABLE
    RETURN (SELECT id FROM quota.subscription_plans WHERE plan_code = code);
-- A user's subscriptions, their instants as offsets from the start of the story.
CREATE FUNCTION public.story(u bigint)
    RETURNS TABLE (id bigint, plan text, starts interval, ends interval, status text, trial boolean)
    LANGUAGE sql STABLE AS $$
    SELECT s.id, p.plan_code, s.start_date - c.t0, s.end_date - c.t0, s.status, s.trial
      FROM quota.user_subscriptions s JOIN quota.subscription_plans p ON p.id = s.plan_id,
           public.clock c
     WHERE s.user_id = u ORDER BY s.start_date, s.id
$$;
-- The storage quota: the function (the truth, exact at every instant) and the column the
-- tick keeps.
CREATE FUNCTION public.storage(u bigint)
    RETURNS TABLE (quota_bytes bigint, column_bytes bigint, in_sync boolean)
    LANGUAGE sql STABLE AS $$
    SELECT quota.get_user_storage_quota(u), s.storage_quota_bytes,
           quota.get_user_storage_quota(u) = s.storage_quota_bytes
      FROM quota.user_storage_usage s WHERE s.user_id = u
$$;
-- The audit of a user's lifecycle: each row is also the event sent on quota_subscription.
CREATE FUNCTION public.changes(u bigint)
    RETURNS TABLE (change text, plan text, effective interval, actor text, reason text)
    LANGUAGE sql STABLE AS $$
    SELECT x.change, p.plan_code, date_trunc('minute', x.effective_at - c.t0), x.actor, x.reason
      FROM quota.subscription_changes x LEFT JOIN quota.subscription_plans p ON p.id = x.plan_id,
           public.clock c
     WHERE x.user_id = u ORDER BY x.id
$$;

INSERT INTO subscription_plans (plan_code, plan_name, price, duration_days, billing_cycle)
VALUES ('free', 'Free', 0, 30, 'monthly'), ('professional', 'Professional', 99, 30, 'monthly');
INSERT INTO subscription_plans (plan_code, plan_name, duration_days, plan_kind)
VALUES ('boost', 'Booster pack', 2, 'booster');
INSERT INTO plan_features (plan_id, feature_code, feature_value, feature_unit)
VALUES (plan_id('free'), 'articles_per_month', 10, NULL),
       (plan_id('free'), 'storage_space', 100, 'MB'),
       (plan_id('professional'), 'articles_per_month', 100, NULL),
       (plan_id('professional'), 'storage_space', 1024, 'MB'),
       (plan_id('boost'), 'articles_per_month', 50, NULL);

-- The tick is admin work: neither the app nor a reader may run it, nor pause.
SET ROLE quota_app;
SELECT ran FROM tick();
SELECT * FROM pause_subscription(2401, 'x');
SET ROLE quota_reader;
SELECT ran FROM tick();
SELECT count(*) FROM subscription_changes;
RESET ROLE;

-- The admin names the fallback plan (its columns of quota.settings are the admin's to write).
SET ROLE quota_admin;
INSERT INTO settings (fallback_plan_code) VALUES ('free');
SELECT fallback_plan_code, grant_warning_days, tick_batch_size FROM settings;
-- A first tick: nothing is due.
SELECT * FROM tick();
RESET ROLE;

LISTEN quota_subscription;
LISTEN quota_grant;
LISTEN quota_reservation;
LISTEN storage_quota_changed;

-- 2401 Ana: a 14-day trial of professional that ended 5 hours ago, nothing scheduled after it.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, trial)
VALUES (2401, plan_id('professional'), t('-14 days -5 hours'), t('-5 hours'), true);
-- Her storage row as the trigger left it while the trial counted (the rows are written now,
-- after its end): 1 GB, while the truth is already 0.
UPDATE user_storage_usage SET storage_quota_bytes = 1073741824 WHERE user_id = 2401;
SELECT * FROM storage(2401);
SET ROLE quota_admin;
-- A tick at an instant before the trial's end changes nothing of hers.
SELECT * FROM tick(t('-6 hours'));
SELECT * FROM story(2401);
-- The tick at its end: trial_ended, and the fallback plan from that very instant.
SELECT * FROM tick(t('-5 hours'));
SELECT * FROM story(2401);
SELECT * FROM storage(2401);
-- Twice, and again later: nothing more.
SELECT * FROM tick(t('-5 hours'));
SELECT * FROM tick(t('-4 hours'));
-- She upgrades: the admin moves her subscription to professional, at once (the triggers
-- resync her storage and announce the limits).
UPDATE user_subscriptions SET plan_id = plan_id('professional')
 WHERE user_id = 2401 AND status = 'active';
SELECT * FROM storage(2401);
-- And asks for the downgrade at the end of her period: the default instant is the end of the
-- current billing period.
SELECT due_at = (SELECT period_end FROM get_quota_period(2401)) AS at_period_end, state
  FROM schedule_plan_change(2401, 'free');
SELECT count(*) AS pending FROM scheduled_changes WHERE user_id = 2401 AND state = 'pending';
-- Not yet due: a tick now leaves it pending.
SELECT plan_changes FROM tick();
-- Cancelled, and scheduled again (a change already pending is replaced).
SELECT state FROM cancel_scheduled_change(2401);
SELECT * FROM cancel_scheduled_change(2401);
SELECT state FROM schedule_plan_change(2401, 'free', t('1 day'));
SELECT state FROM schedule_plan_change(2401, 'free');
SELECT state, count(*) FROM scheduled_changes WHERE user_id = 2401 GROUP BY state ORDER BY state;
-- Bad schedules.
SELECT * FROM schedule_plan_change(2401, 'boost');
SELECT * FROM schedule_plan_change(2401, 'free', now() - interval '1 minute');
SELECT * FROM schedule_plan_change(NULL, 'free');

-- Pause: no quota while paused, consume refused, record_feature_usage raises; the storage
-- column follows.
SELECT id, status, paused_at IS NOT NULL AS paused FROM pause_subscription(2401, 'parental leave');
RESET ROLE;
SELECT * FROM check_user_quota(2401, 'articles_per_month');
SET ROLE quota_app;
SELECT allowed, current_usage, quota_limit, remaining FROM consume(2401, 'articles_per_month', 1);
SELECT record_feature_usage(2401, 'articles_per_month');
RESET ROLE;
SELECT * FROM storage(2401);
SET ROLE quota_admin;
SELECT * FROM pause_subscription(2401, 'again');
SELECT * FROM pause_subscription(2401, ' ');
-- The tick leaves a paused subscription alone, and her pending change too.
SELECT expired, fallbacks, plan_changes FROM tick();
RESET ROLE;
-- Three hours of pause (paused_at set back as if she had paused then).
UPDATE user_subscriptions SET paused_at = now() - interval '3 hours' WHERE user_id = 2401 AND status = 'paused';
CREATE TEMP TABLE before_resume AS SELECT id, start_date, end_date FROM user_subscriptions WHERE user_id = 2401 AND status = 'paused';
GRANT SELECT ON before_resume TO quota_admin;
SET ROLE quota_admin;
SELECT r.status, r.start_date = b.start_date AS same_start,
       date_trunc('minute', r.end_date - b.end_date) AS extended_by
  FROM resume_subscription(2401) r JOIN before_resume b USING (id);
SELECT * FROM resume_subscription(2401);
RESET ROLE;
-- Her downgrade, pending since before the pause, moved with her period's end.
SELECT date_trunc('minute', due_at - t('0')) AS due FROM scheduled_changes
 WHERE user_id = 2401 AND state = 'pending';
SELECT has_quota, quota_limit FROM check_user_quota(2401, 'articles_per_month');
SELECT * FROM storage(2401);
SELECT * FROM changes(2401);

-- 2402 Bo: professional until 3 hours ago, with a downgrade to free scheduled (a month ago)
-- for the end of that period.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2402, plan_id('professional'), t('-30 days -3 hours'), t('-3 hours'));
INSERT INTO scheduled_changes (user_id, plan_id, due_at, actor, created_at)
VALUES (2402, plan_id('free'), t('-3 hours'), 'bo', t('-20 days'));
UPDATE user_storage_usage SET storage_quota_bytes = 1073741824 WHERE user_id = 2402;
SET ROLE quota_admin;
SELECT * FROM tick(t('-3 hours'));
RESET ROLE;
-- The downgrade, not a fallback: free from the end for a cycle of the plan.
SELECT * FROM story(2402);
SELECT * FROM storage(2402);
SELECT state, subscription_id IS NOT NULL AS started FROM scheduled_changes WHERE user_id = 2402;
SELECT * FROM changes(2402);

-- 2403 Cy: professional until 2 hours ago; the storage column still says 1 GB while the
-- function says 0 (the issue's example), until the tick.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2403, plan_id('professional'), t('-30 days -2 hours'), t('-2 hours'));
UPDATE user_storage_usage SET storage_quota_bytes = 1073741824 WHERE user_id = 2403;
SELECT * FROM storage(2403);
SET ROLE quota_admin;
SELECT expired, fallbacks FROM tick(t('-2 hours -1 minute'));
SELECT * FROM storage(2403);
SELECT expired, fallbacks FROM tick(t('-1 hour'));
RESET ROLE;
SELECT * FROM story(2403);
SELECT * FROM storage(2403);

-- 2404 Di: professional, buys a booster pack (2 days: inside the 3-day warning), tops up her
-- storage by 500 MB for 3 seconds and holds 5 articles for 1 second.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES (2404, plan_id('professional'), t('-1 day'), t('29 days'));
SET ROLE quota_app;
SELECT feature_code, amount FROM buy_booster(2404, 'boost', 'order-1');
SELECT allowed FROM reserve(2404, 'articles_per_month', 5, interval '1 second');
SET ROLE quota_admin;
SELECT feature_code, amount FROM grant_quota(2404, 'storage_space', 500, now() + interval '3 seconds');
RESET ROLE;
SELECT * FROM storage(2404);
SET ROLE quota_admin;
-- The warning, once per grant.
SELECT grants_warned, grants_expired FROM tick();
SELECT grants_warned, grants_expired FROM tick();
RESET ROLE;
-- 2411 Fay: articles roll over (at most 5); her periods start on an anchor a second from now,
-- and she used 3 of her 100 articles in the period that ends there (its counter and record,
-- as the uses wrote them).
UPDATE features SET rollover_max = 5 WHERE code = 'articles_per_month';
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor)
VALUES (2411, plan_id('professional'), now() - interval '40 days', now() + interval '300 days',
        now() + interval '1 second');
INSERT INTO user_usage (user_id, feature_code, period_start, period_end, usage_count,
                        last_reset_at, updated_at)
SELECT 2411, 'articles_per_month', p.period_start, p.period_end, 3, now(), now()
  FROM user_subscriptions s,
       anniversary_period(s.quota_reset_anchor, 'monthly', s.quota_reset_anchor - interval '1 second') p
 WHERE s.user_id = 2411;
INSERT INTO usage_records (user_id, feature_code, period_start, amount, created_at)
SELECT 2411, 'articles_per_month', u.period_start, 3, now()
  FROM user_usage u WHERE u.user_id = 2411;
SELECT pg_sleep(3.1);
-- Expired: the storage grant (the column drops back to 1 GB) and the hold. Fay's second
-- month began: the tick creates her rollover grant, once.
SELECT * FROM storage(2404);
SET ROLE quota_admin;
SELECT reservations_expired, grants_expired, rollovers, storage_resynced FROM tick();
SELECT reservations_expired, grants_expired, rollovers, storage_resynced FROM tick();
RESET ROLE;
SELECT source, amount, remaining FROM grants WHERE user_id = 2411;
SELECT * FROM verify_ledger(2411);
SELECT * FROM storage(2404);
SELECT state FROM reservations WHERE user_id = 2404;
SELECT * FROM verify_holds(2404);
SELECT * FROM verify_grants(2404);
SELECT notice, count(*) FROM grant_notices WHERE user_id = 2404 GROUP BY notice;

-- 2405..2409: subscriptions that ended days ago, a tick that comes late and drains them two at
-- a time; each fallback starts when its subscription ended, and lasts past the tick.
INSERT INTO user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT u, plan_id('professional'), t('-40 days'), t(make_interval(days => 2400 - u::integer))
  FROM generate_series(2405, 2409) u;
SET ROLE quota_admin;
SELECT expired, fallbacks, more FROM tick(now(), 2);
SELECT expired, fallbacks, more FROM tick(now(), 2);
SELECT expired, fallbacks, more FROM tick(now(), 2);
SELECT expired, fallbacks, more FROM tick(now(), 2);
SELECT * FROM tick(now(), 0);
SELECT * FROM tick(NULL);
SELECT * FROM tick(now() + interval '1 minute');
RESET ROLE;
SELECT * FROM story(2405);
SELECT * FROM story(2409);
SELECT user_id, (storage(user_id)).in_sync FROM generate_series(2401, 2409) user_id;

-- The reader sees the audit; nobody writes it directly.
SET ROLE quota_reader;
SELECT change, count(*) FROM subscription_changes GROUP BY change ORDER BY change;
SET ROLE quota_admin;
DELETE FROM subscription_changes;
INSERT INTO scheduled_changes (user_id, plan_id, due_at, actor) VALUES (1, 1, now(), 'x');
RESET ROLE;

-- With an application's tables attached, its own jobs keep its subscriptions: the functions
-- that write them refuse, and the tick leaves them alone (it announces grants only).
\set ECHO none
\i tests/fixtures/seed_app.sql
SELECT fix FROM quota.attach_problems('public', 'Asia/Shanghai')
 WHERE needed_for IS NULL AND fix IS NOT NULL ORDER BY fix_in_transaction DESC, problem \gexec
\set ECHO all
SELECT quota.attach('public', local_time_zone => 'Asia/Shanghai');
INSERT INTO public.users (id, username) VALUES (2410, 'ed');
INSERT INTO public.subscription_plans (plan_code, plan_name) VALUES ('app_pro', 'Pro');
INSERT INTO public.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT 2410, id, now() - interval '40 days', now() - interval '10 days'
  FROM public.subscription_plans WHERE plan_code = 'app_pro';
SET ROLE quota_admin;
SELECT * FROM pause_subscription(2410, 'x');
SELECT * FROM schedule_plan_change(2410, 'free', now() + interval '1 day');
SELECT ran, expired, fallbacks, grants_expired FROM tick();
RESET ROLE;
SELECT status FROM public.user_subscriptions WHERE user_id = 2410;
SELECT quota.detach();
UNLISTEN *;
\c pge_regress
DROP DATABASE lifecycle;
