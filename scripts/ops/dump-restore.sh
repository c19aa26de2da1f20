#!/usr/bin/env bash
# Dump and restore: a database with data in every quota table is dumped with pg_dump -Fc and
# restored with pg_restore into a new database of the same cluster. Checks that
#   (a) every quota.* table has the same rows (count and md5 of the sorted rows, and the rows),
#   (b) every reading function gives the same answers (check_user_quota, get_user_storage_quota,
#       usage_overview, get_quota_period, for every user and feature) and verify_ledger() is empty,
#   (c) after the restore, retrying every keyed use (consume and record_feature_usage with the
#       same user, feature, amount and idempotency key) is allowed and counts nothing, and one
#       whose use was refunded is refused (55000), as before the dump,
#   (d) the identity sequences continue where they were: new rows get new ids,
#   (e) an edited built-in feature keeps its edit.
# Data: tests/ops/dump_restore_data.sql; what is compared: tests/ops/snapshot.sql.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cluster.sh
source scripts/ops/common.sh

DIR=/tmp/pg_entitlements-ops-dump-restore
PORT=55450

suite_cluster "$DIR" "$PORT" timezone=UTC
echo "==> dump and restore (cluster in $DIR, port $PORT)"

as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" source_db
sql "$DIR" "$PORT" source_db -c 'CREATE EXTENSION pg_entitlements'
sql "$DIR" "$PORT" source_db -v with_grants=1 -f tests/ops/dump_restore_data.sql >"$DIR/data.log" 2>&1 \
  || { cat "$DIR/data.log"; fail "loading tests/ops/dump_restore_data.sql failed"; }

check "the source database has rows in every quota table"
empty=$(empty_quota_tables "$DIR" "$PORT" source_db)
[ -z "$empty" ] || fail "tables without rows in the source database: $empty"
sql "$DIR" "$PORT" source_db -c "UPDATE quota.features SET default_limit = 7, name = 'Keyword distillation (edited)'
                                  WHERE code = 'keyword_distillation'" >/dev/null
custom=$(sql_value "$DIR" "$PORT" source_db "SELECT count(*) FROM quota.features WHERE NOT builtin")
# One of the data set's own, then a switch, a configuration value and a feature with two limits.
[ "$custom" = 4 ] || fail "expected 4 user-added features in the source database, found $custom"
ok "every quota table has rows; 4 user-added features next to the built-in ones"

check "pg_dump -Fc, then pg_restore into a new database"
as_postgres "$PG_BIN/pg_dump" -h "$DIR" -p "$PORT" -U postgres -Fc -f "$DIR/source.dump" source_db \
  2>"$DIR/pg_dump.log" || { cat "$DIR/pg_dump.log"; fail "pg_dump failed"; }
as_postgres "$PG_BIN/createdb" -h "$DIR" -p "$PORT" restored_db
if ! as_postgres "$PG_BIN/pg_restore" -h "$DIR" -p "$PORT" -U postgres -d restored_db \
    "$DIR/source.dump" 2>"$DIR/pg_restore.log"; then
  cat "$DIR/pg_restore.log"
  fail "pg_restore reported errors (above)"
fi
ok "pg_restore finished without errors"

check "(a) table contents and (b) quota answers are identical"
for db in source_db restored_db; do
  sql "$DIR" "$PORT" $db -f tests/ops/snapshot.sql >"$DIR/${db%_db}.snapshot" 2>"$DIR/snapshot.err" \
    || { cat "$DIR/snapshot.err"; fail "reading the quota tables and answers of $db failed"; }
done
same_files "$DIR/source.snapshot" "$DIR/restored.snapshot" \
  "the restored database differs from the source (diff above: - source, + restored)"
tables=$(snapshot_tables "$DIR/source.snapshot")
ok "$tables tables, every row, and every answer of the reading functions are identical"

ledger=$(sql_value "$DIR" "$PORT" restored_db "SELECT count(*) FROM quota.verify_ledger()")
[ "$ledger" = 0 ] || fail "quota.verify_ledger() returns $ledger rows in the restored database"
ok "quota.verify_ledger() is empty in the restored database"

check "(c) after the restore, retried keyed uses are allowed (refunded ones refused) and count nothing"
state="SELECT (SELECT count(*) FROM quota.usage_records) || ' records, ' ||
              (SELECT sum(usage_count) FROM quota.user_usage) || ' counted, ' ||
              (SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM quota.user_usage t) || ' ' ||
              (SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM quota.usage_records t)"
before=$(sql_value "$DIR" "$PORT" restored_db "$state")
retried=$(sql_value "$DIR" "$PORT" restored_db "
  CREATE TEMP TABLE retried (user_id bigint, key text, function text, refunded boolean,
                             allowed boolean, sqlstate text);
  DO \$\$
  DECLARE r record; allowed boolean; state text;
  BEGIN
      FOR r IN SELECT o.user_id, o.feature_code, o.amount, o.idempotency_key,
                      EXISTS (SELECT FROM quota.usage_records x WHERE x.refund_of = o.id) AS refunded
                 FROM quota.usage_records o
                WHERE o.idempotency_key IS NOT NULL ORDER BY o.user_id, o.id LOOP
          BEGIN
              SELECT c.allowed INTO allowed
                FROM quota.consume(r.user_id, r.feature_code, r.amount, r.idempotency_key) c;
              state := NULL;
          EXCEPTION WHEN OTHERS THEN
              allowed := false; state := SQLSTATE;
          END;
          INSERT INTO retried VALUES (r.user_id, r.idempotency_key, 'consume', r.refunded, allowed, state);
          BEGIN
              PERFORM quota.record_feature_usage(r.user_id, r.feature_code, NULL, NULL, r.amount,
                                                 NULL, r.idempotency_key);
              allowed := true; state := NULL;
          EXCEPTION WHEN OTHERS THEN
              allowed := false; state := SQLSTATE;
          END;
          INSERT INTO retried VALUES (r.user_id, r.idempotency_key, 'record_feature_usage', r.refunded, allowed, state);
      END LOOP;
  END
  \$\$;
  SELECT count(*) || ' ' || count(*) FILTER (WHERE NOT refunded AND NOT allowed) || ' '
         || count(*) FILTER (WHERE refunded) || ' '
         || count(*) FILTER (WHERE refunded AND sqlstate IS DISTINCT FROM '55000')
    FROM retried;")
read -r calls refused refunded_calls not_refused <<<"$retried"
[ "$calls" -ge 16 ] || fail "expected at least 16 retried calls (8 keys, 2 functions), ran $calls"
[ "$refused" = 0 ] || fail "$refused retried calls of keys whose use stands were refused after the restore"
[ "$refunded_calls" -ge 2 ] || fail "expected retries of at least one refunded key, ran $refunded_calls"
[ "$not_refused" = 0 ] || fail "$not_refused retried calls of refunded keys were not refused with 55000"
after=$(sql_value "$DIR" "$PORT" restored_db "$state")
[ "$before" = "$after" ] || fail "retried keys counted again after the restore: before [$before], after [$after]"
ok "$calls retries of keyed uses: allowed, the $refunded_calls of refunded keys refused (55000), counters and ledger unchanged ($after)"

check "(d) identity sequences continue, (e) the edited built-in feature survived"
seqs="SELECT string_agg(sequencename || '=' || coalesce(last_value::text, 'unset'), ' ' ORDER BY sequencename)
        FROM pg_sequences WHERE schemaname = 'quota'"
src_seqs=$(sql_value "$DIR" "$PORT" source_db "$seqs")
dst_seqs=$(sql_value "$DIR" "$PORT" restored_db "$seqs")
[ "$src_seqs" = "$dst_seqs" ] || fail "sequences differ: source [$src_seqs], restored [$dst_seqs]"
allowed=$(sql_value "$DIR" "$PORT" restored_db \
  "SELECT allowed FROM quota.consume(1, 'articles_per_month', 1, 'after-restore')" 2>&1)
[ "$allowed" = t ] || fail "a new use after the restore: expected allowed, got [$allowed]"
newest=$(sql_value "$DIR" "$PORT" restored_db "
  SELECT max(id) = (SELECT id FROM quota.usage_records WHERE idempotency_key = 'after-restore')
    FROM quota.usage_records")
[ "$newest" = t ] || fail "the use after the restore did not get the newest id"
edited=$(sql_value "$DIR" "$PORT" restored_db "
  SELECT default_limit || ' ' || name FROM quota.features WHERE code = 'keyword_distillation'")
[ "$edited" = "7 Keyword distillation (edited)" ] || fail "the edited built-in feature came back as [$edited]"
ok "sequences [$dst_seqs]; a new use gets a new id; the built-in edit survived"

echo "==> dump and restore: all checks passed"
