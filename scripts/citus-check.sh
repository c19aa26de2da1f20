#!/usr/bin/env bash
# pg_entitlements on an existing Citus cluster (docs/scaling.md): quota.distribute(), the seed
# scenario on 1,000 users spread over the workers, row ids unique across nodes, a 16-client
# consume race on one user (exactly the limit succeeds, verify_ledger() empty), the storage
# trigger, grants and reservations, the tick, a change of the time zone, a user's shards moved
# there and back and split while clients consume for the user (every unit counted is kept), the
# throughput of delegated calls against the same calls in a database of the coordinator that
# is not distributed (a single node, same machine); on request, a worker added and the shards
# rebalanced onto it under load, and DROP EXTENSION.
#
#   ./scripts/citus-check.sh -h HOST -p PORT -U USER -d DATABASE
#
# The options name the coordinator (any left out: libpq's environment, PGHOST, PGPORT, ...).
# Its workers must be registered (citus_add_node) and the pg_entitlements build installed on
# every node; the user must be a superuser, who may create the database <DATABASE>_single for
# the baseline. Without Citus (the server does not offer the extension citus, or, when no
# option names one, no server answers) the script says "skipped" and exits 0. Otherwise it
# prints one line per check and exits 1 when one failed.
#
# Environment: CITUS_CHECK_SECONDS=5 (pgbench duration of each throughput run);
# CITUS_CHECK_ADD_NODE=host:port adds that server (the database and Citus created in it, not
# yet registered) as a worker, and rebalances the shards onto it while clients consume;
# CITUS_CHECK_DROP=1 ends the check with DROP EXTENSION pg_entitlements and checks that no
# shard is left on any node (it drops the extension's data in that database).
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${CITUS_CHECK_SECONDS:-5}
while getopts h:p:U:d: option; do
  case $option in
    h) export PGHOST=$OPTARG ;;
    p) export PGPORT=$OPTARG ;;
    U) export PGUSER=$OPTARG ;;
    d) export PGDATABASE=$OPTARG ;;
    *) echo "usage: $0 [-h HOST] [-p PORT] [-U USER] [-d DATABASE]" >&2; exit 2 ;;
  esac
done
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
PSQL=(psql -X -q -At -v ON_ERROR_STOP=1)

# The checks run in the database given; the baseline gets a database of its own next to it.
if ! DB=$("${PSQL[@]}" -c 'SELECT current_database()' 2>&1); then
  if [ "$OPTIND" -gt 1 ]; then
    echo "citus-check: FAILED: the coordinator named does not answer: $DB" >&2
    exit 1
  fi
  echo "citus-check: skipped (no coordinator named, and no PostgreSQL server answers by default)"
  exit 0
fi
if [ "$("${PSQL[@]}" -c "SELECT count(*) FROM pg_available_extensions WHERE name = 'citus'")" != 1 ]; then
  echo "citus-check: skipped (Citus is not installed on this server)"
  exit 0
fi
SINGLE=${DB}_single
failed=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

pass() { echo "ok    $1"; }
fail() { echo "FAIL  $1"; shift; [ $# -gt 0 ] && echo "      $*"; failed=1; }

# check NAME EXPECTED SQL: passes when the last line the SQL prints equals EXPECTED (the SQL
# goes to psql's input: it may use psql's variables).
check() {
  local name=$1 expected=$2 sql=$3 got
  if got=$("${PSQL[@]}" <<<"$sql" 2>&1) && [ "$(tail -1 <<<"$got")" = "$expected" ]; then
    pass "$name"
  else
    fail "$name" "expected [$expected], got [$got]"
  fi
}

LIMIT=200

# users_on_two_workers FROM: the first user from FROM to the run's last held by the first
# worker group, and the first held by the last one.
users_on_two_workers() {
  "${PSQL[@]}" -F ' ' -c "
SELECT min(u) FILTER (WHERE pl.groupid = w.first), min(u) FILTER (WHERE pl.groupid = w.last)
  FROM generate_series($1, $LAST) u
  JOIN pg_dist_placement pl ON pl.shardid = get_shard_id_for_distribution_column('quota.user_subscriptions', u),
       (SELECT min(groupid) AS first, max(groupid) AS last FROM pg_dist_node
         WHERE groupid <> 0 AND noderole = 'primary') w"
}

echo "==> layout"
check "the extensions are there" "t" "
CREATE EXTENSION IF NOT EXISTS citus;
CREATE EXTENSION IF NOT EXISTS pg_entitlements;
SELECT count(*) >= 1 FROM pg_dist_node WHERE groupid <> 0 AND noderole = 'primary'"
check "quota.distribute() lays every table out" "t" "
SELECT quota.distribute();
SELECT quota.distribute();  -- again: idempotent
SELECT bool_and(p.logicalrelid IS NOT NULL)
  FROM pg_depend d
  JOIN pg_class c ON c.oid = d.objid AND c.relkind = 'r'
  LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_entitlements')
   AND d.deptype = 'e' AND d.classid = 'pg_class'::regclass"
check "the per-user functions are delegated" "t" "
SELECT count(*) >= 10 AND bool_and(colocationid = (SELECT colocationid FROM pg_dist_partition
                                                    WHERE logicalrelid = 'quota.user_subscriptions'::regclass))
  FROM pg_dist_object WHERE classid = 'pg_proc'::regclass AND distribution_argument_index = 0"

# The users of this run, far from an application's ids: each run of the check on the same
# database takes the next 10,000 ids from 7,000,001 on, and names its features and keys after
# the run, so that it finds nothing an earlier run left.
RUN=$("${PSQL[@]}" -c "SELECT coalesce(max((user_id - 7000001) / 10000) + 1, 0)
                         FROM quota.user_subscriptions WHERE user_id BETWEEN 7000001 AND 7999999")
FIRST=$((7000001 + RUN * 10000))
LAST=$((FIRST + 999))
RACER=$((FIRST + 499))

echo "==> seed scenario on 1,000 users"
# One statement per user, as an application subscribes them: each runs on one worker. (Several
# users in one statement are checked below.)
"${PSQL[@]}" >/dev/null <<SQL
INSERT INTO quota.subscription_plans (plan_code, plan_name, price)
VALUES ('citus_check', 'Citus check', 0) ON CONFLICT (plan_code) DO NOTHING;
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, f.code, CASE f.code WHEN 'articles_per_month' THEN $LIMIT ELSE 1000 END
  FROM quota.subscription_plans p CROSS JOIN quota.features f
 WHERE p.plan_code = 'citus_check' AND f.builtin
ON CONFLICT (plan_id, feature_code) DO NOTHING;
SQL
if [ "$("${PSQL[@]}" -c "SELECT count(*) FROM quota.user_subscriptions WHERE user_id BETWEEN $FIRST AND $LAST")" = 0 ]; then
  plan=$("${PSQL[@]}" -c "SELECT id FROM quota.subscription_plans WHERE plan_code = 'citus_check'")
  for u in $(seq "$FIRST" "$LAST"); do
    echo "INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
          VALUES ($u, $plan, now() - interval '1 day', now() + interval '1 year');"
  done >"$WORK/subscribe.sql"
  "${PSQL[@]}" -f "$WORK/subscribe.sql" >"$WORK/subscribe.log" 2>&1 \
    || fail "subscribing 1,000 users" "$(head -3 "$WORK/subscribe.log")"
fi
check "1,000 subscriptions and their storage rows" "1000|1000" "
SELECT (SELECT count(*) FROM quota.user_subscriptions WHERE user_id BETWEEN $FIRST AND $LAST),
       (SELECT count(*) FROM quota.user_storage_usage WHERE user_id BETWEEN $FIRST AND $LAST)"
check "the users are spread over every worker" "t" "
SELECT count(DISTINCT n.nodeid) = (SELECT count(*) FROM pg_dist_node WHERE groupid <> 0 AND noderole = 'primary')
  FROM generate_series($FIRST, $LAST) u
  JOIN pg_dist_placement pl ON pl.shardid = get_shard_id_for_distribution_column('quota.user_subscriptions', u)
  JOIN pg_dist_node n ON n.groupid = pl.groupid"
check "subscription ids are unique across nodes" "t" "
SELECT count(DISTINCT id) = count(*) FROM quota.user_subscriptions"
check "check_user_quota, delegated, for every user" "1000" "
SELECT count(*) FROM generate_series($FIRST, $LAST) u,
       LATERAL quota.check_user_quota(u, 'articles_per_month') q
 WHERE q.has_quota AND q.quota_limit = $LIMIT AND q.remaining = $LIMIT"
# One call per statement, as an application makes them: Citus sends each to the user's worker.
for u in $(seq "$FIRST" "$LAST"); do
  echo "SELECT quota.record_feature_usage($u, 'publish_per_month');"
done >"$WORK/record.sql"
"${PSQL[@]}" -f "$WORK/record.sql" >"$WORK/record.log" 2>&1 \
  || fail "a use per user" "$(head -3 "$WORK/record.log")"
check "a use per user, then verify_ledger() empty" "1000|0" "
SELECT (SELECT count(DISTINCT user_id) FROM quota.usage_records
         WHERE user_id BETWEEN $FIRST AND $LAST AND feature_code = 'publish_per_month'),
       (SELECT count(*) FROM quota.verify_ledger())"
check "a writer inside a query on the coordinator is refused, naming the way" "0A000" "
\\set ON_ERROR_STOP 0
SELECT count(*) FILTER (WHERE quota.record_feature_usage(u, 'publish_per_month'))
  FROM generate_series($FIRST, $FIRST + 1) u;
\\echo :LAST_ERROR_SQLSTATE"
check "usage record ids are unique across nodes" "t" "
SELECT count(DISTINCT id) = count(*) FROM quota.usage_records"

# On a worker a call reads the user's shards through the per-backend copy and their indexes,
# as on one server; with pg_entitlements.direct_reads off, by statements. Same answers.
for port in $("${PSQL[@]}" -c "SELECT nodeport FROM pg_dist_node WHERE groupid <> 0 AND noderole = 'primary' AND nodename IN ('localhost', '127.0.0.1') ORDER BY 1"); do
  differ=$(PGPORT=$port "${PSQL[@]}" <<SQL 2>&1
CREATE TEMP TABLE answers AS
SELECT u, f.code, (SELECT q::text FROM quota.check_user_quota(u, f.code) q) AS direct,
       (SELECT o::text FROM quota.usage_overview(u) o WHERE o.feature_code = f.code) AS overview
  FROM generate_series($FIRST, $LAST) u, quota.features f
 WHERE EXISTS (SELECT FROM pg_dist_placement pl, pg_dist_local_group l
                WHERE pl.shardid = get_shard_id_for_distribution_column('quota.user_subscriptions', u)
                  AND pl.groupid = l.groupid)
   AND f.kind IN ('metered', 'gauge');
SET pg_entitlements.direct_reads = off;
SELECT count(*) FILTER (WHERE a.direct IS DISTINCT FROM (SELECT q::text FROM quota.check_user_quota(a.u, a.code) q)
                           OR a.overview IS DISTINCT FROM (SELECT o::text FROM quota.usage_overview(a.u) o
                                                            WHERE o.feature_code = a.code))
       || ' of ' || count(*)
  FROM answers a;
SQL
)
  case $differ in
    "0 of 0") fail "worker $port: direct reads against statements" "no user of the check on it" ;;
    "0 of "*) pass "worker $port: direct reads and statements agree ($differ differ)" ;;
    *) fail "worker $port: direct reads against statements" "$differ" ;;
  esac
done

# Several users in one statement: Citus commits it on both workers in two phases, and the
# announcements held on each worker go out once it committed (src/notices.rs). A listener on
# every worker on this machine counts them: two per user (quota_updated,
# storage_quota_changed).
workers=$("${PSQL[@]}" -c "SELECT nodeport FROM pg_dist_node WHERE groupid <> 0 AND noderole = 'primary' AND nodename IN ('localhost', '127.0.0.1') ORDER BY 1")
for port in $workers; do
  PGPORT=$port psql -X -q -At -c "LISTEN quota_updated" -c "LISTEN storage_quota_changed" \
    -c "SELECT pg_sleep(8)" >"$WORK/listen-$port.log" 2>&1 &
done
sleep 2
check "subscribing 20 users in one INSERT ... SELECT" "20|20" "
SELECT id AS plan FROM quota.subscription_plans WHERE plan_code = 'citus_check' \\gset
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT u, :plan, now() - interval '1 day', now() + interval '1 year'
  FROM generate_series($((LAST + 1)), $((LAST + 20))) u;
SELECT (SELECT count(*) FROM quota.user_subscriptions WHERE user_id BETWEEN $((LAST + 1)) AND $((LAST + 20))) || '|' ||
       (SELECT count(*) FROM quota.user_storage_usage WHERE user_id BETWEEN $((LAST + 1)) AND $((LAST + 20)))"
wait
if [ -n "$workers" ]; then
  heard=$(cat "$WORK"/listen-*.log | grep -o '"user_id":[0-9]*' | cut -d: -f2 \
            | awk -v low=$((LAST + 1)) -v high=$((LAST + 20)) '$1 >= low && $1 <= high' | wc -l)
  if [ "$heard" = 40 ]; then pass "their 40 announcements were heard on the workers after the commit"
  else fail "their 40 announcements were heard on the workers after the commit" "heard $heard"; fi
fi

echo "==> the storage trigger"
check "a limit change reaches user_storage_usage" "2147483648" "
SELECT quota.adjust_quota($FIRST, 'storage_space', 2048, 'citus check', 'citus-check');
SELECT s.storage_quota_bytes FROM quota.user_storage_usage s WHERE s.user_id = $FIRST"

echo "==> grants and reservations"
check "a grant adds to the allowance" "t" "
SELECT (quota.grant_quota($((FIRST + 1)), 'articles_per_month', 5)).id IS NOT NULL"
# Grants to two users on different workers in one transaction: Citus commits it in two phases,
# and the quota_grant events (raised by SQL, through quota.announce) wait for the commit.
read -r G1 G2 < <(users_on_two_workers $((FIRST + 20)))
check "grants to users on two workers in one transaction" "2" "
BEGIN;
SELECT id FROM quota.grant_quota($G1, 'articles_per_month', 3);
SELECT id FROM quota.grant_quota($G2, 'articles_per_month', 3);
COMMIT;
SELECT count(*) FROM quota.grants WHERE user_id IN ($G1, $G2) AND amount = 3"
check "a reservation holds, then settles" "t|1" "
SELECT reservation_id AS hold FROM quota.reserve($((FIRST + 2)), 'articles_per_month', 3) \\gset
SELECT settled, released_amount FROM quota.settle($((FIRST + 2)), :hold, 2)"
check "a reservation holds, then is released" "t" "
SELECT reservation_id AS hold FROM quota.reserve($((FIRST + 2)), 'articles_per_month', 1) \\gset
SELECT quota.release($((FIRST + 2)), :hold)"
check "holds match the counters" "0" "SELECT count(*) FROM quota.verify_holds()"

echo "==> refunds and custom limits"
check "refund_usage by user and record id" "1|t" "
SELECT max(id) AS record FROM quota.usage_records WHERE user_id = $((FIRST + 3)) \\gset
SELECT refunded_amount, newly_refunded FROM quota.refund_usage($((FIRST + 3)), :record)"
check "refund_usage by user and idempotency key" "1|t" "
SELECT quota.record_feature_usage($((FIRST + 4)), 'articles_per_month', idempotency_key => 'citus-check-$RUN');
SELECT refunded_amount, newly_refunded FROM quota.refund_usage($((FIRST + 4)), 'citus-check-$RUN')"
check "adjust_quota, then clear_custom_quota" "7|$LIMIT" "
SELECT quota.adjust_quota($((FIRST + 5)), 'articles_per_month', 7, 'citus check', 'citus-check');
SELECT quota_limit AS custom FROM quota.check_user_quota($((FIRST + 5)), 'articles_per_month') \\gset
SELECT quota.clear_custom_quota($((FIRST + 5)), 'articles_per_month', 'citus check', 'citus-check');
SELECT :custom, quota_limit FROM quota.check_user_quota($((FIRST + 5)), 'articles_per_month')"

echo "==> the catalog"
check "a feature a custom limit overrides cannot be deleted, then can" "23503|0" "
\\set ON_ERROR_STOP 0
INSERT INTO quota.features (code, name) VALUES ('citus_check_tmp_$RUN', 'Citus check') ON CONFLICT DO NOTHING;
UPDATE quota.user_subscriptions SET custom_quotas = '{\"citus_check_tmp_$RUN\": 3}' WHERE user_id = $((FIRST + 7));
DELETE FROM quota.features WHERE code = 'citus_check_tmp_$RUN';
\\set refused :LAST_ERROR_SQLSTATE
UPDATE quota.user_subscriptions SET custom_quotas = custom_quotas - 'citus_check_tmp_$RUN' WHERE user_id = $((FIRST + 7));
DELETE FROM quota.features WHERE code = 'citus_check_tmp_$RUN';
SELECT :'refused' || '|' || count(*) FROM quota.features WHERE code = 'citus_check_tmp_$RUN'"
# Two users on different workers (the first and the last worker group): each node renames
# the key in the subscriptions it holds.
read -r ONE TWO < <(users_on_two_workers $((FIRST + 9)))
check "a renamed feature keeps the custom limits that name it on every worker, audited" "4|4|2" "
INSERT INTO quota.features (code, name) VALUES ('citus_check_old_$RUN', 'Citus check') ON CONFLICT DO NOTHING;
UPDATE quota.user_subscriptions SET custom_quotas = '{\"citus_check_old_$RUN\": 4}' WHERE user_id = $ONE;
UPDATE quota.user_subscriptions SET custom_quotas = '{\"citus_check_old_$RUN\": 4}' WHERE user_id = $TWO;
UPDATE quota.features SET code = 'citus_check_new_$RUN' WHERE code = 'citus_check_old_$RUN';
SELECT quota_limit AS limit_one FROM quota.check_user_quota($ONE, 'citus_check_new_$RUN') \\gset
SELECT quota_limit AS limit_two FROM quota.check_user_quota($TWO, 'citus_check_new_$RUN') \\gset
SELECT :limit_one || '|' || :limit_two || '|' || count(DISTINCT user_id)
  FROM quota.quota_adjustments
 WHERE user_id IN ($ONE, $TWO) AND feature_code = 'citus_check_new_$RUN' AND reason = 'feature renamed'"
# A plan's storage limit changes: each node resyncs the storage rows of the users whose shards
# it holds (the users of the check but the first, whose custom limit decides).
check "a plan's storage limit change reaches every user's storage row" "0|999" "
UPDATE quota.plan_features pf SET feature_value = pf.feature_value + 1
  FROM quota.subscription_plans p
 WHERE p.id = pf.plan_id AND p.plan_code = 'citus_check' AND pf.feature_code = 'storage_space';
SELECT pf.feature_value AS mb FROM quota.plan_features pf JOIN quota.subscription_plans p ON p.id = pf.plan_id
 WHERE p.plan_code = 'citus_check' AND pf.feature_code = 'storage_space' \\gset
SELECT count(*) FILTER (WHERE s.storage_quota_bytes <> :mb::bigint * 1048576) || '|' || count(*)
  FROM quota.user_storage_usage s WHERE s.user_id BETWEEN $((FIRST + 1)) AND $LAST"
check "DROP EXTENSION is refused while the tables hold rows" "2BP01" "
\\set ON_ERROR_STOP 0
DROP EXTENSION pg_entitlements;
\\echo :LAST_ERROR_SQLSTATE"

echo "==> as an application's role"
# A login role of quota_app, as docs/scaling.md creates it: Citus connects to the workers as it.
"${PSQL[@]}" -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'citus_check_app') THEN
    CREATE ROLE citus_check_app LOGIN IN ROLE quota_app;
  END IF; END \$\$" >/dev/null
check "check, consume and usage_overview as a login role of quota_app" "t|t|1" "
SET ROLE citus_check_app;
SELECT has_quota AS checked FROM quota.check_user_quota($((FIRST + 6)), 'articles_per_month') \\gset
SELECT allowed AS consumed FROM quota.consume($((FIRST + 6)), 'articles_per_month', 1) \\gset
SELECT :'checked', :'consumed', current_usage FROM quota.usage_overview($((FIRST + 6)))
 WHERE feature_code = 'articles_per_month'"

echo "==> 16 clients consume one user's last $LIMIT units"
cat >"$WORK/race.sql" <<SQL
SELECT allowed FROM quota.consume($RACER, 'articles_per_month', 1);
SQL
pgbench -n -c 16 -j 4 -t 60 -f "$WORK/race.sql" >"$WORK/race.log" 2>&1 \
  || fail "the race ran" "$(tail -3 "$WORK/race.log")"
check "exactly the limit counted" "$LIMIT" "
SELECT q.current_usage FROM quota.check_user_quota($RACER, 'articles_per_month') q"
check "one usage record per unit counted" "$LIMIT" "
SELECT count(*) FROM quota.usage_records WHERE user_id = $RACER AND feature_code = 'articles_per_month'"
check "verify_ledger() is empty" "0" "SELECT count(*) FROM quota.verify_ledger()"

echo "==> the tick"
# quota.tick() on the coordinator runs each due user's steps on the user's worker. Six users
# after the check's others, each with one thing due a second from now: an ended subscription
# (the fallback plan follows it), a hold, a scheduled plan change, a grant warned of, a storage
# grant that expires, and a period that ended with a rollover rule (5 of its unused articles
# carried). A first tick takes what earlier runs left; the second must do exactly these six
# users' steps, a third nothing. The settings and the rule are put back afterwards.
ENDED=$((LAST + 31)); HOLDER=$((LAST + 32)); CHANGER=$((LAST + 33)); WARNED=$((LAST + 34))
STORER=$((LAST + 35)); ROLLER=$((LAST + 36))
for port in $workers; do
  PGPORT=$port psql -X -q -At -c "LISTEN quota_subscription" -c "LISTEN quota_reservation" \
    -c "LISTEN quota_grant" -c "SELECT pg_sleep(10)" >"$WORK/tick-$port.log" 2>&1 &
done
sleep 1
check "a tick on the cluster applies each user's due steps, once" "t|1|1|0|1|1|1|1|1|1|f t|0|0|0|0|0|0|0|0|0|f" "
SELECT coalesce(rollover_max::text, 'NULL') AS rollover_before FROM quota.features WHERE code = 'articles_per_month' \\gset
SELECT coalesce((SELECT fallback_plan_code FROM quota.settings), '') AS fallback_before \\gset
INSERT INTO quota.settings (fallback_plan_code) VALUES ('citus_check')
ON CONFLICT (singleton) DO UPDATE SET fallback_plan_code = EXCLUDED.fallback_plan_code;
UPDATE quota.features SET rollover_max = 5 WHERE code = 'articles_per_month';
SELECT count(*) AS drained FROM quota.tick() \\gset
SELECT id AS plan FROM quota.subscription_plans WHERE plan_code = 'citus_check' \\gset
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor)
VALUES ($ENDED, :plan, now() - interval '10 days', now() + interval '1 second', NULL),
       ($HOLDER, :plan, now() - interval '1 day', now() + interval '1 year', NULL),
       ($CHANGER, :plan, now() - interval '1 day', now() + interval '1 year', NULL),
       ($WARNED, :plan, now() - interval '1 day', now() + interval '1 year', NULL),
       ($STORER, :plan, now() - interval '1 day', now() + interval '1 year', NULL),
       ($ROLLER, :plan, now() - interval '40 days', now() + interval '1 year', now() + interval '1 second');
SELECT allowed FROM quota.reserve($HOLDER, 'articles_per_month', 4, interval '1 second');
SELECT state FROM quota.schedule_plan_change($CHANGER, 'citus_check', now() + interval '1 second');
SELECT id FROM quota.grant_quota($WARNED, 'articles_per_month', 5, now() + interval '1 day');
SELECT id FROM quota.grant_quota($STORER, 'storage_space', 500, now() + interval '1 second');
-- The roller used 3 articles in the period that ends a second from now, as a use writes them.
INSERT INTO quota.user_usage (user_id, feature_code, period_start, period_end, usage_count,
                              last_reset_at, updated_at)
SELECT $ROLLER, 'articles_per_month', p.period_start, p.period_end, 3, now(), now()
  FROM quota.user_subscriptions s,
       quota.anniversary_period(s.quota_reset_anchor, 'monthly', s.quota_reset_anchor - interval '1 second') p
 WHERE s.user_id = $ROLLER;
INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, created_at)
SELECT $ROLLER, 'articles_per_month', u.period_start, 3, now() FROM quota.user_usage u
 WHERE u.user_id = $ROLLER;
SELECT pg_sleep(1.5);
SELECT t::text AS first FROM quota.tick() t \\gset
SELECT t::text AS second FROM quota.tick() t \\gset
UPDATE quota.features SET rollover_max = :rollover_before WHERE code = 'articles_per_month';
UPDATE quota.settings SET fallback_plan_code = NULLIF(:'fallback_before', '');
SELECT replace(replace(replace(:'first' || ' ' || :'second', '(', ''), ')', ''), ',', '|')"
check "what the tick wrote: statuses, audit, hold, storage, rollover grant" "expired,active|expired,active|expired|true|0|expired,fallback_started,plan_changed|rollover 5" "
SELECT (SELECT string_agg(status, ',' ORDER BY id) FROM quota.user_subscriptions WHERE user_id = $ENDED)
    || '|' || (SELECT string_agg(status, ',' ORDER BY id) FROM quota.user_subscriptions WHERE user_id = $CHANGER)
    || '|' || (SELECT string_agg(state, ',') FROM quota.reservations WHERE user_id = $HOLDER)
    || '|' || (SELECT s.storage_quota_bytes = (SELECT get_user_storage_quota FROM quota.get_user_storage_quota($STORER))
                 FROM quota.user_storage_usage s WHERE s.user_id = $STORER)
    || '|' || (SELECT count(*) FROM quota.verify_holds())
    || '|' || (SELECT string_agg(change, ',' ORDER BY change) FROM quota.subscription_changes
                WHERE user_id IN ($ENDED, $CHANGER) AND actor = 'quota.tick')
    || '|' || (SELECT string_agg(source || ' ' || amount, ',') FROM quota.grants
                WHERE user_id = $ROLLER)"
wait
if [ -n "$workers" ]; then
  heard=$(cat "$WORK"/tick-*.log | grep -E '"user_id" ?: ?[0-9]+' -o | grep -oE '[0-9]+$' \
            | awk -v low=$ENDED -v high=$STORER '$1 >= low && $1 <= high' | wc -l)
  events=$(cat "$WORK"/tick-*.log | grep -oE '"event" ?: ?"(expired|fallback_started|plan_changed|expiring)"' | wc -l)
  if [ "$events" = 6 ]; then pass "the tick's 6 events were heard on the workers, after its commit"
  else fail "the tick's 6 events were heard on the workers, after its commit" "heard $events ($heard for these users)"; fi
fi

echo "==> a change of the time zone"
# A subscription anchored at 00:00 UTC on the 15th, in 2010: a second change of zone within a
# period moves the period at once (by the zones' offsets), and the usage must move with it. Each
# node carries the usage of the users whose shards it holds. Removing the settings row means UTC.
ZONED=$((FIRST + 8))
"${PSQL[@]}" >/dev/null <<SQL
DELETE FROM quota.user_subscriptions WHERE user_id = $ZONED;
SELECT id AS plan FROM quota.subscription_plans WHERE plan_code = 'citus_check' \gset
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
VALUES ($ZONED, :plan, '2010-01-15 00:00+00', now() + interval '1 year');
SQL
check "the usage follows the period through two changes of zone and back to UTC" "10|true|10|10|0" "
SELECT quota.consume($ZONED, 'articles_per_month', 10);
SELECT period_start AS utc_start FROM quota.get_quota_period($ZONED, 'articles_per_month') \\gset
INSERT INTO quota.settings (time_zone) VALUES ('America/Caracas')
ON CONFLICT (singleton) DO UPDATE SET time_zone = EXCLUDED.time_zone;
UPDATE quota.settings SET time_zone = 'Asia/Shanghai';
SELECT period_start AS moved_start FROM quota.get_quota_period($ZONED, 'articles_per_month') \\gset
SELECT current_usage AS moved FROM quota.check_user_quota($ZONED, 'articles_per_month') \\gset
DELETE FROM quota.settings;
SELECT current_usage AS back FROM quota.check_user_quota($ZONED, 'articles_per_month') \\gset
SELECT count(*) AS ledger FROM quota.verify_ledger() \\gset
SELECT :moved || '|' || (:'moved_start'::timestamptz <> :'utc_start'::timestamptz) || '|' || :back
       || '|' || (SELECT sum(amount) FROM quota.usage_records WHERE user_id = $ZONED AND feature_code = 'articles_per_month') || '|' || :ledger"

echo "==> throughput: delegated calls against a single node on the same machine"
"${PSQL[@]}" -c "DROP DATABASE IF EXISTS $SINGLE" -c "CREATE DATABASE $SINGLE" >/dev/null
PGDATABASE=$SINGLE "${PSQL[@]}" >/dev/null <<SQL
CREATE EXTENSION pg_entitlements;
INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('citus_check', 'Citus check');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value)
SELECT p.id, f.code, 1000000 FROM quota.subscription_plans p CROSS JOIN quota.features f WHERE f.builtin;
INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date)
SELECT u, (SELECT id FROM quota.subscription_plans), now() - interval '1 day', now() + interval '1 year'
  FROM generate_series($FIRST, $LAST) u;
SQL
cat >"$WORK/check.sql" <<SQL
\set u random($FIRST, $LAST)
SELECT has_quota FROM quota.check_user_quota(:u, 'keyword_distillation');
SQL
cat >"$WORK/consume.sql" <<SQL
\set u random($FIRST, $LAST)
SELECT allowed FROM quota.consume(:u, 'platform_accounts', 1);
SQL
# tps FILE DATABASE: the transactions per second of 8 clients, or nothing when a call failed.
tps() {
  PGDATABASE=$2 pgbench -n -c 8 -j 2 -T "$SECONDS_PER_RUN" -f "$1" 2>/dev/null \
    | awk '/^tps/ { print int($3) }' | head -1
}
for call in check consume; do
  single=$(tps "$WORK/$call.sql" "$SINGLE")
  delegated=$(tps "$WORK/$call.sql" "$DB")
  single=${single:-0} delegated=${delegated:-0}
  [ "$call" = check ] && single_check=$single
  if [ "$single" -gt 0 ] && [ "$delegated" -gt 0 ]; then
    ratio=$(awk -v d="$delegated" -v s="$single" 'BEGIN { printf "%.2f", d / s }')
    pass "$call: $delegated tps delegated, $single tps on a single node: ratio $ratio"
  else
    fail "$call: $delegated tps delegated, $single tps on a single node (a call failed)"
  fi
done
# What a delegated call costs here whatever it does: a PL/pgSQL function that returns true,
# delegated the same way (its first argument in the colocation group of user_subscriptions).
# Its rate against the single node's check_user_quota is the most any delegated call reaches.
if "${PSQL[@]}" >/dev/null 2>&1 <<SQL
CREATE SCHEMA IF NOT EXISTS citus_check;
CREATE OR REPLACE FUNCTION citus_check.nothing(user_id bigint) RETURNS boolean
LANGUAGE plpgsql AS \$\$ BEGIN RETURN true; END \$\$;
SELECT create_distributed_function('citus_check.nothing(bigint)', '\$1',
                                   colocate_with := 'quota.user_subscriptions');
SQL
then
  printf '\\set u random(%s, %s)\nSELECT citus_check.nothing(:u);\n' "$FIRST" "$LAST" >"$WORK/nothing.sql"
  nothing=$(tps "$WORK/nothing.sql" "$DB")
  echo "--    the ceiling: a delegated call that does nothing, ${nothing:-0} tps:" \
       "$(awk -v d="${nothing:-0}" -v s="${single_check:-0}" 'BEGIN { printf "%.2f", s ? d / s : 0 }')" \
       "of the single node's check_user_quota"
fi
"${PSQL[@]}" -c "DROP DATABASE IF EXISTS $SINGLE" >/dev/null

echo "==> shard moves and a split while calls write"
# Citus moves the user's shards to another worker, and back, while 8 clients consume for the
# user: first as Citus moves by default (logical replication, which the workers' wal_level must
# allow), then blocking writes for the whole copy; then it splits them in two, the user's half
# going to the other worker. A write holds Citus' placement lock on the user's shard, as Citus'
# own routed writes do, so a move or split copies every unit counted before it switches. A call
# that waited for it, or that Citus sent on the old placement, fails with 40001, which the
# clients retry (pgbench --max-tries). Every unit a call reported counted must be there once it
# is done, and the ledger must agree.
MOVER=$((FIRST + 9))
read -r first_place first_id other_place other_id <<<"$("${PSQL[@]}" -F ' ' -c "
SELECT src.nodename || ':' || src.nodeport, src.nodeid, o.place, o.nodeid
  FROM pg_dist_placement pl
  JOIN pg_dist_node src ON src.groupid = pl.groupid
  LEFT JOIN LATERAL (SELECT n.nodename || ':' || n.nodeport AS place, n.nodeid FROM pg_dist_node n
                      WHERE n.groupid NOT IN (0, src.groupid) AND n.noderole = 'primary'
                      ORDER BY n.groupid LIMIT 1) o ON true
 WHERE pl.shardid = get_shard_id_for_distribution_column('quota.user_subscriptions', $MOVER)")"
# while_consuming WHAT TO SQL: runs SQL (a Citus operation on the user's shards, which leaves
# them on TO, host:port) with the clients consuming.
while_consuming() {
  local before counted retried done
  before=$("${PSQL[@]}" -c "SELECT current_usage FROM quota.check_user_quota($MOVER, 'platform_accounts')")
  pgbench -n -c 8 -j 2 -T 8 --max-tries=50 -f "$WORK/mover.sql" >"$WORK/mover.log" 2>&1 &
  local bench=$!
  sleep 2
  done=$("${PSQL[@]}" -c "$3" 2>&1) || fail "$1" "$done"
  wait "$bench"
  counted=$(awk '/actually processed/ { print $NF }' "$WORK/mover.log")
  retried=$(awk '/number of transactions retried/ { print $5 }' "$WORK/mover.log")
  if grep -q "aborted" "$WORK/mover.log" || [ -z "$counted" ]; then
    fail "consuming during $1" "$(grep -m3 -E 'error|aborted' "$WORK/mover.log")"
  fi
  check "$1: each of the $counted units counted meanwhile is there once (${retried:-0} calls retried)" "true|true|0|$2" "
SELECT (q.current_usage = ${before:-0} + ${counted:-0})
       || '|' || (q.current_usage = (SELECT sum(amount) FROM quota.usage_records
                                      WHERE user_id = $MOVER AND feature_code = 'platform_accounts'))
       || '|' || (SELECT count(*) FROM quota.verify_ledger())
       || '|' || (SELECT n.nodename || ':' || n.nodeport
                    FROM pg_dist_placement pl JOIN pg_dist_node n USING (groupid)
                   WHERE pl.shardid = get_shard_id_for_distribution_column('quota.user_subscriptions', $MOVER))
  FROM quota.check_user_quota($MOVER, 'platform_accounts') q"
}
# move FROM TO MODE (host:port each): the statement moving the user's shards.
move() {
  echo "SELECT citus_move_shard_placement(get_shard_id_for_distribution_column('quota.user_subscriptions', $MOVER),
                                          '${1%:*}', ${1##*:}, '${2%:*}', ${2##*:}, shard_transfer_mode => '$3')"
}
if [ -z "${other_place:-}" ]; then
  echo "--    not tried: a shard move needs a second worker"
else
  "${PSQL[@]}" -c "SELECT count(*) FROM quota.adjust_quota($MOVER, 'platform_accounts', 1000000,
                                                           'citus-check: shard moves')" >/dev/null
  echo "SELECT allowed FROM quota.consume($MOVER, 'platform_accounts', 1);" >"$WORK/mover.sql"
  mode=block_writes
  if [ "$("${PSQL[@]}" -c "SELECT bool_and(result = 'logical') FROM run_command_on_workers('SHOW wal_level')")" = t ]; then
    mode=force_logical
  else
    echo "--    not tried: moves by logical replication (the workers' wal_level is not logical)"
  fi
  while_consuming "a move ($mode)" "$other_place" "$(move "$first_place" "$other_place" $mode)"
  while_consuming "a move back (block_writes)" "$first_place" "$(move "$other_place" "$first_place" block_writes)"
  # A split by logical replication decodes with Citus' own output plugin, which a server may
  # refuse (PostgreSQL's output_plugin_libraries): the split blocks writes instead.
  while_consuming "a split, the user's half moved (block_writes)" "$other_place" "
SELECT citus_split_shard_by_split_points(
           s.shardid, ARRAY[mid::text],
           CASE WHEN worker_hash($MOVER::bigint) > mid THEN ARRAY[$first_id, $other_id]
                ELSE ARRAY[$other_id, $first_id] END,
           shard_transfer_mode => 'block_writes')
  FROM pg_dist_shard s,
       LATERAL (SELECT (s.shardminvalue::bigint + s.shardmaxvalue::bigint) / 2 AS mid) m
 WHERE s.shardid = get_shard_id_for_distribution_column('quota.user_subscriptions', $MOVER)"
fi

echo "==> adding a worker"
# Only when asked (CITUS_CHECK_ADD_NODE=host:port names a server with the database and Citus in
# it, not yet in the cluster): it joins the cluster for good. Citus creates the extension there,
# which gives the node its own range of row ids at once; then the rebalancer moves shards onto
# it (by logical replication when wal_level allows) while 8 clients consume for random users
# of this run, in runs of 3 s until the rebalance is done. Every unit counted must be there, the
# ledger must agree, and row ids must stay unique across nodes.
if [ -n "${CITUS_CHECK_ADD_NODE:-}" ]; then
  new_host=${CITUS_CHECK_ADD_NODE%:*} new_port=${CITUS_CHECK_ADD_NODE##*:}
  check "the new worker joins, with the extension and a range of row ids of its own" "true|t" "
SELECT citus_add_node('$new_host', $new_port) AS joined \\gset
SELECT bool_and(r.result = 't') AS ranged
  FROM run_command_on_workers(\$\$SELECT s.seqmin = (SELECT groupid::bigint * 281474976710656 + 1
                                                     FROM pg_dist_local_group)
                                  FROM pg_sequence s
                                 WHERE s.seqrelid = pg_get_serial_sequence('quota.usage_records', 'id')::regclass\$\$) r
 WHERE r.nodename = '$new_host' AND r.nodeport = $new_port \\gset
SELECT (SELECT count(*) = 1 FROM pg_dist_node WHERE nodename = '$new_host' AND nodeport = $new_port)
       || '|' || coalesce(:'ranged', 'f')"
  cat >"$WORK/spread.sql" <<SQL
\set u random($FIRST, $LAST)
SELECT allowed FROM quota.consume(:u, 'keyword_distillation', 1);
SQL
  before=$("${PSQL[@]}" -c "SELECT coalesce(sum(usage_count), 0) FROM quota.user_usage
                            WHERE user_id BETWEEN $FIRST AND $LAST AND feature_code = 'keyword_distillation'")
  : >"$WORK/spread.counts"
  (
    while [ ! -e "$WORK/rebalanced" ]; do
      pgbench -n -c 8 -j 2 -T 3 --max-tries=50 -f "$WORK/spread.sql" >"$WORK/spread.log" 2>&1
      if grep -q "aborted" "$WORK/spread.log"; then grep -m3 -E "error|aborted" "$WORK/spread.log"; fi
      awk '/actually processed/ { print $NF }' "$WORK/spread.log" >>"$WORK/spread.counts"
    done
  ) >"$WORK/spread.errors" 2>&1 &
  spreading=$!
  rebalanced=$("${PSQL[@]}" -c "SELECT rebalance_table_shards(shard_transfer_mode => '$(
      [ "$("${PSQL[@]}" -c "SELECT bool_and(result = 'logical') FROM run_command_on_workers('SHOW wal_level')")" = t ] \
        && echo force_logical || echo block_writes)')" 2>&1) || fail "the rebalance" "$rebalanced"
  touch "$WORK/rebalanced"
  wait "$spreading"
  counted=$(awk '{ n += $1 } END { print n + 0 }' "$WORK/spread.counts")
  [ -s "$WORK/spread.errors" ] && fail "consuming during the rebalance" "$(head -3 "$WORK/spread.errors")"
  check "the rebalance moved shards onto it; each of the $counted units counted meanwhile is there, once" "true|true|true|0|true" "
SELECT (SELECT count(*) > 0 FROM pg_dist_placement pl JOIN pg_dist_node n USING (groupid)
         WHERE n.nodename = '$new_host' AND n.nodeport = $new_port)
       || '|' || ((SELECT sum(usage_count) FROM quota.user_usage
                    WHERE user_id BETWEEN $FIRST AND $LAST AND feature_code = 'keyword_distillation')
                  = $before + $counted)
       || '|' || ((SELECT sum(amount) FROM quota.usage_records
                    WHERE user_id BETWEEN $FIRST AND $LAST AND feature_code = 'keyword_distillation')
                  = $before + $counted)
       || '|' || (SELECT count(*) FROM quota.verify_ledger())
       || '|' || (SELECT count(DISTINCT id) = count(*) FROM quota.usage_records)"
else
  echo "--    not tried: CITUS_CHECK_ADD_NODE=host:port adds that server to the cluster as a worker"
fi

echo "==> dropping the extension"
# Last, and only when asked: it drops the extension, with its data, in this database. Right
# after a move (with a second worker), whose old shards Citus drops only later: those go too.
if [ "${CITUS_CHECK_DROP:-0}" = 1 ]; then
  moved=""
  if [ -n "${other_place:-}" ]; then
    moved="SELECT citus_move_shard_placement(s.shard, src.nodename, src.nodeport, dst.nodename, dst.nodeport,
                                  shard_transfer_mode => 'block_writes')
  FROM (SELECT get_shard_id_for_distribution_column('quota.user_subscriptions', $MOVER) AS shard) s
  JOIN pg_dist_placement pl ON pl.shardid = s.shard
  JOIN pg_dist_node src ON src.groupid = pl.groupid
 CROSS JOIN LATERAL (SELECT n.nodename, n.nodeport FROM pg_dist_node n
                      WHERE n.groupid NOT IN (0, src.groupid) AND n.noderole = 'primary'
                      ORDER BY n.groupid LIMIT 1) dst;"
  fi
  check "DROP EXTENSION drops the extension and every shard on every node${moved:+, right after a move}" "true|0" "
SET pg_entitlements.allow_drop_with_data = on;
$moved
DROP EXTENSION pg_entitlements;
SELECT bool_and(r.success AND r.result = '0') || '|' ||
       (SELECT count(*) FROM pg_dist_partition)
  FROM run_command_on_all_nodes(\$\$SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                 WHERE n.nspname = 'quota'\$\$) r"
else
  echo "--    not tried: CITUS_CHECK_DROP=1 ends the check with DROP EXTENSION pg_entitlements"
fi

if [ "$failed" = 0 ]; then echo "citus-check: every check passed"; else echo "citus-check: FAILED"; fi
exit "$failed"
