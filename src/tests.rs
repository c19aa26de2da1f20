//! `#[pg_test]`s: every SQL function and trigger against a real server. Each test runs in its
//! own transaction, which the framework rolls back.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first column of the only row, `None` for no row or NULL; more than one row fails
    /// (an assertion on the first of several would pass on whichever came first). Read-only SPI
    /// while the transaction has no id, so that a test can tell whether the function under
    /// test assigned one.
    fn one<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
        Spi::connect(|c| {
            let table = c.select(sql, None, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(table.len() <= 1, "{sql}: {} rows, one expected", table.len());
            if table.is_empty() {
                None
            } else {
                table.first().get_one::<T>().unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        })
    }

    /// The SQLSTATE `statement` raises, or "no error" (run in a DO block that catches it). Both
    /// outcomes write the setting: it lives until the test's transaction ends, so a code left
    /// by an earlier call would otherwise pass for this call's.
    fn raised(statement: &str) -> String {
        run(&format!(
            "DO $$ BEGIN {statement};
               PERFORM pg_catalog.set_config('pge.code', 'no error', true);
             EXCEPTION WHEN OTHERS THEN
               PERFORM pg_catalog.set_config('pge.code', SQLSTATE, true); END $$"
        ));
        one::<String>("SELECT pg_catalog.current_setting('pge.code')").unwrap()
    }

    /// The SQLSTATE evaluating `expr` raises, or "no error".
    fn sqlstate(expr: &str) -> String {
        raised(&format!("PERFORM {expr}"))
    }

    /// Plans free (articles 10, storage 100 MB) and pro (articles 100, storage 1 GB in 'GB'), and
    /// user `user` subscribed to `plan` since ten days ago with `custom` quotas.
    fn subscribe(user: i64, plan: &str, custom: &str) {
        run("INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES
               ('free', 'Free'), ('pro', 'Professional') ON CONFLICT DO NOTHING");
        run("INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, feature_unit)
             SELECT p.id, v.code, v.value, v.unit FROM quota.subscription_plans p
               JOIN (VALUES ('free', 'articles_per_month', 10, NULL), ('free', 'storage_space', 100, 'MB'),
                            ('pro', 'articles_per_month', 100, NULL), ('pro', 'storage_space', 1, 'GB'))
                    AS v (plan, code, value, unit) ON v.plan = p.plan_code
             ON CONFLICT DO NOTHING");
        // An unknown plan code would insert nothing, and the test would then check a user
        // without a subscription while believing it has one.
        let inserted = Spi::connect_mut(|c| {
            let sql = format!(
                "INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
                 SELECT {user}, id, now() - interval '10 days', now() + interval '355 days', {custom}
                   FROM quota.subscription_plans WHERE plan_code = '{plan}'"
            );
            c.update(&sql, None, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).len()
        });
        assert_eq!(inserted, 1, "subscribe({user}, {plan:?}): no such plan");
    }

    fn check(user: i64, feature: &str) -> (bool, i32, i32, i32, String) {
        let sql = format!(
            "SELECT has_quota, current_usage, quota_limit, remaining, percentage::text
               FROM quota.check_user_quota({user}, '{feature}')"
        );
        Spi::connect(|c| {
            let row = c.select(&sql, Some(1), &[]).unwrap().first();
            (
                row.get::<bool>(1).unwrap().unwrap(),
                row.get::<i32>(2).unwrap().unwrap(),
                row.get::<i32>(3).unwrap().unwrap(),
                row.get::<i32>(4).unwrap().unwrap(),
                row.get::<String>(5).unwrap().unwrap(),
            )
        })
    }

    #[pg_test]
    fn seed_scenario_custom_quota_raised_from_6_to_10() {
        subscribe(1, "free", "'{\"articles_per_month\": 6}'");
        run("SELECT quota.record_feature_usage(1, 'articles_per_month', 'article', 1, 2, '{}')");
        assert_eq!(check(1, "articles_per_month"), (true, 2, 6, 4, "33.33".into()));
        run("UPDATE quota.user_subscriptions SET custom_quotas = '{\"articles_per_month\": 10}' WHERE user_id = 1");
        let (has, _, limit, remaining, _) = check(1, "articles_per_month");
        assert_eq!((has, limit, remaining), (true, 10, 8));
        assert!(remaining >= 3, "a request for 3 articles fits");
    }

    #[pg_test]
    fn plan_then_catalog_default_then_no_subscription() {
        subscribe(2, "free", "NULL");
        assert_eq!(check(2, "articles_per_month").2, 10, "plan value");
        assert_eq!(check(2, "publish_per_month").2, 200, "catalog default");
        assert_eq!(check(3, "articles_per_month"), (false, 0, 0, 0, "0.00".into()));
    }

    #[pg_test]
    fn custom_quota_for_a_feature_the_plan_lacks_and_unlimited() {
        subscribe(4, "free", "'{\"keyword_distillation\": 7, \"articles_per_month\": -1}'");
        assert_eq!(check(4, "keyword_distillation").2, 7);
        assert_eq!(check(4, "articles_per_month"), (true, 0, -1, -1, "0.00".into()));
    }

    #[pg_test]
    fn record_feature_usage_counts_the_current_period_and_writes_the_ledger() {
        subscribe(5, "free", "NULL");
        run("SELECT quota.record_feature_usage(5, 'articles_per_month', 'article', 9, 3, '{\"k\": 1}')");
        run("SELECT quota.record_feature_usage(5, 'articles_per_month')");
        assert_eq!(check(5, "articles_per_month").1, 4);
        assert_eq!(
            one::<i64>("SELECT sum(amount) FROM quota.usage_records WHERE user_id = 5"),
            Some(4)
        );
        assert_eq!(
            one::<bool>(
                "SELECT u.period_start = p.period_start AND u.period_end = p.period_end
                   FROM quota.user_usage u, quota.get_quota_period(5, 'articles_per_month') p
                  WHERE u.user_id = 5"
            ),
            Some(true)
        );
        // Usage of an earlier period is not counted now.
        run("INSERT INTO quota.user_usage
               (user_id, feature_code, period_start, period_end, usage_count, last_reset_at, updated_at)
             VALUES (5, 'articles_per_month', now() - interval '2 months', now() - interval '1 month',
                     50, now(), now())");
        assert_eq!(check(5, "articles_per_month").1, 4);
    }

    #[pg_test]
    fn storage_quota_units_and_precedence() {
        subscribe(6, "free", "NULL");
        assert_eq!(one::<i64>("SELECT quota.get_user_storage_quota(6)"), Some(100 * 1024 * 1024));
        subscribe(7, "pro", "NULL");
        assert_eq!(one::<i64>("SELECT quota.get_user_storage_quota(7)"), Some(1024 * 1024 * 1024));
        subscribe(8, "pro", "'{\"storage_space\": -1}'");
        assert_eq!(one::<i64>("SELECT quota.get_user_storage_quota(8)"), Some(-1));
        assert_eq!(one::<i64>("SELECT quota.get_user_storage_quota(9)"), Some(0));
    }

    #[pg_test]
    fn storage_trigger_creates_the_row_and_follows_every_change() {
        let quota_bytes = || {
            one::<i64>(
                "SELECT storage_quota_bytes FROM quota.user_storage_usage WHERE user_id = 10",
            )
        };
        assert_eq!(quota_bytes(), None);
        subscribe(10, "free", "'{\"storage_space\": 300}'");
        assert_eq!(quota_bytes(), Some(300 * 1024 * 1024), "row created on INSERT");
        run("UPDATE quota.user_subscriptions SET custom_quotas = custom_quotas - 'storage_space' WHERE user_id = 10");
        assert_eq!(
            quota_bytes(),
            Some(100 * 1024 * 1024),
            "removed override falls back to the plan"
        );
        run("UPDATE quota.user_subscriptions SET plan_id = (SELECT id FROM quota.subscription_plans WHERE plan_code = 'pro') WHERE user_id = 10");
        assert_eq!(quota_bytes(), Some(1024 * 1024 * 1024), "plan change");
        run("UPDATE quota.user_subscriptions SET status = 'cancelled' WHERE user_id = 10");
        assert_eq!(quota_bytes(), Some(0), "no active subscription");
        run("DELETE FROM quota.user_subscriptions WHERE user_id = 10");
        assert_eq!(quota_bytes(), Some(0));
    }

    #[pg_test]
    fn quota_period_follows_the_anchor_and_the_configured_zone() {
        run("INSERT INTO quota.subscription_plans (plan_code, plan_name, billing_cycle) VALUES ('y', 'Yearly', 'yearly')");
        run("INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, quota_reset_anchor, quota_cycle_type)
             SELECT 11, id, '2020-01-31', '2100-01-01', '2020-01-31 00:00+08', 'monthly' FROM quota.subscription_plans WHERE plan_code = 'y'");
        let start_local = |zone: &str| {
            one::<String>(&format!(
                "SELECT to_char(period_start AT TIME ZONE '{zone}', 'DD HH24:MI') FROM quota.get_quota_period(11)"
            ))
            .unwrap()
        };
        // In UTC the anchor is the 30th at 16:00; in Shanghai it is the 31st (or month end) at 00:00.
        assert!(start_local("UTC").ends_with("16:00"), "{}", start_local("UTC"));
        // In Shanghai since 2000 (a zone changed now applies from the next boundary).
        run("INSERT INTO quota.settings (time_zone, time_zone_changed_at) VALUES ('Asia/Shanghai', '2000-01-01')");
        assert!(
            start_local("Asia/Shanghai").ends_with("00:00"),
            "{}",
            start_local("Asia/Shanghai")
        );
        // The session's TimeZone changes nothing.
        let before =
            one::<String>("SELECT period_start::text FROM quota.get_quota_period(11)").unwrap();
        run("SET LOCAL TimeZone = 'America/Los_Angeles'");
        let after = one::<String>(
            "SELECT (period_start AT TIME ZONE 'UTC')::text FROM quota.get_quota_period(11)",
        )
        .unwrap();
        run("SET LOCAL TimeZone = 'UTC'");
        assert_eq!(before.trim_end_matches("+00"), after);
    }

    #[pg_test]
    fn anniversary_period_clamps_month_ends_without_drift() {
        assert_eq!(
            one::<String>("SELECT period_start::date || ' ' || period_end::date FROM quota.anniversary_period('2026-01-31 00:00+00', 'monthly', '2026-03-05 00:00+00')"),
            Some("2026-02-28 2026-03-31".into())
        );
    }

    #[pg_test]
    fn check_user_quota_takes_no_transaction_id() {
        let xid = one::<bool>(
            "SELECT pg_current_xact_id_if_assigned() IS NULL FROM quota.check_user_quota(12, 'articles_per_month')",
        );
        assert_eq!(xid, Some(true));
    }

    #[pg_test(
        error = "user 13 feature \"articles_per_month\": invalid quota value \"abc\" in custom_quotas: a string is not a number"
    )]
    fn malformed_custom_quotas_are_rejected_at_write_time() {
        subscribe(13, "free", "'{\"articles_per_month\": \"abc\"}'");
    }

    #[pg_test(error = "unknown feature \"nope\" (asked for user 14)")]
    fn unknown_custom_quota_keys_are_rejected() {
        subscribe(14, "free", "'{\"nope\": 1}'");
    }

    #[pg_test(error = "user 15 feature \"articles_per_month\": no active subscription")]
    fn recording_without_a_subscription_is_an_error() {
        run("SELECT quota.record_feature_usage(15, 'articles_per_month')");
    }

    #[pg_test(
        error = "user 16 feature \"articles_per_month\": amount 0 is invalid, it must be at least 1"
    )]
    fn amount_zero_is_an_error() {
        subscribe(16, "free", "NULL");
        run("SELECT quota.record_feature_usage(16, 'articles_per_month', NULL, NULL, 0)");
    }

    #[pg_test(error = "check_user_quota: argument feature_code must not be NULL")]
    fn null_feature_is_an_error() {
        run("SELECT * FROM quota.check_user_quota(1, NULL)");
    }

    #[pg_test(error = "unknown feature \"nope\" (asked for user 17)")]
    fn unknown_feature_is_an_error() {
        run("SELECT * FROM quota.check_user_quota(17, 'nope')");
    }

    #[pg_test]
    fn sqlstates_are_real() {
        assert_eq!(sqlstate("quota.check_user_quota(NULL, 'articles_per_month')"), "22004");
        assert_eq!(sqlstate("quota.check_user_quota(1, 'nope')"), "P0002");
        assert_eq!(sqlstate("quota.anniversary_period(now(), 'weekly', now())"), "22023");
        subscribe(18, "free", "NULL");
        assert_eq!(
            sqlstate("quota.record_feature_usage(18, 'articles_per_month', NULL, NULL, -3)"),
            "22023"
        );
        assert_eq!(sqlstate("quota.record_feature_usage(19, 'articles_per_month')"), "P0002");
    }

    #[pg_test]
    fn sqlstate_reports_no_error_when_nothing_raises() {
        assert_eq!(sqlstate("quota.check_user_quota(1, 'nope')"), "P0002");
        assert_eq!(sqlstate("quota.check_user_quota(1, 'articles_per_month')"), "no error");
        assert_eq!(raised("PERFORM 1 / 0"), "22012");
        assert_eq!(raised("PERFORM 1 / 1"), "no error");
    }

    fn consume(user: i64, amount: i32, key: &str) -> (bool, i32, i32, i32) {
        let key = if key.is_empty() { "NULL".to_owned() } else { format!("'{key}'") };
        let sql = format!(
            "SELECT allowed, current_usage, quota_limit, remaining
               FROM quota.consume({user}, 'articles_per_month', {amount}, {key})"
        );
        Spi::connect_mut(|c| {
            let row = c.update(&sql, Some(1), &[]).unwrap().first();
            (
                row.get::<bool>(1).unwrap().unwrap(),
                row.get::<i32>(2).unwrap().unwrap(),
                row.get::<i32>(3).unwrap().unwrap(),
                row.get::<i32>(4).unwrap().unwrap(),
            )
        })
    }

    fn records(user: i64) -> i64 {
        one::<i64>(&format!("SELECT count(*) FROM quota.usage_records WHERE user_id = {user}"))
            .unwrap()
    }

    fn ledger_is_consistent() -> bool {
        one::<i64>("SELECT count(*) FROM quota.verify_ledger()") == Some(0)
    }

    #[pg_test]
    fn consume_allows_up_to_the_limit_and_a_refusal_writes_nothing() {
        subscribe(30, "free", "'{\"articles_per_month\": 3}'");
        assert_eq!(consume(30, 2, ""), (true, 2, 3, 1));
        assert_eq!(consume(30, 2, ""), (false, 2, 3, 1), "2 + 2 > 3");
        assert_eq!(records(30), 1, "the refused call wrote no record");
        assert_eq!(consume(30, 1, ""), (true, 3, 3, 0));
        assert_eq!(consume(30, 1, ""), (false, 3, 3, 0));
        assert!(ledger_is_consistent());
    }

    #[pg_test]
    fn consume_unlimited_always_succeeds_and_records() {
        subscribe(31, "free", "'{\"articles_per_month\": -1}'");
        assert_eq!(consume(31, 1000, ""), (true, 1000, -1, -1));
        assert_eq!(records(31), 1);
    }

    #[pg_test]
    fn consume_without_a_subscription_or_a_limit_is_refused() {
        assert_eq!(consume(32, 1, ""), (false, 0, 0, 0));
        assert_eq!(records(32), 0);
        subscribe(33, "free", "'{\"articles_per_month\": 0}'");
        assert_eq!(consume(33, 1, ""), (false, 0, 0, 0));
    }

    #[pg_test]
    fn a_retried_key_returns_the_original_outcome_and_counts_nothing() {
        subscribe(34, "free", "NULL");
        assert_eq!(consume(34, 4, "order-1"), (true, 4, 10, 6));
        assert_eq!(consume(34, 4, "order-1"), (true, 4, 10, 6));
        run("SELECT quota.record_feature_usage(34, 'articles_per_month', NULL, NULL, 1, NULL, 'order-2')");
        run("SELECT quota.record_feature_usage(34, 'articles_per_month', NULL, NULL, 1, NULL, 'order-2')");
        assert_eq!(check(34, "articles_per_month").1, 5);
        assert_eq!(records(34), 2);
    }

    #[pg_test(
        error = "user 35 feature \"articles_per_month\": idempotency key \"k\" was already used for usage record 1 (amount 1 of feature \"articles_per_month\"), not for amount 2 of this feature"
    )]
    fn a_reused_key_with_another_amount_is_an_error() {
        subscribe(35, "free", "NULL");
        run("ALTER TABLE quota.usage_records ALTER COLUMN id RESTART WITH 1");
        consume(35, 1, "k");
        consume(35, 2, "k");
    }

    #[pg_test]
    fn a_refund_goes_back_to_the_period_of_the_use_and_only_once() {
        subscribe(36, "free", "NULL");
        consume(36, 3, "gen-1");
        let original =
            one::<String>("SELECT period_start::text FROM quota.usage_records WHERE user_id = 36")
                .unwrap();
        // Move the anchor, asking for a reset: the current period is now a different one, and
        // the use stays in the period it counted toward.
        run("SET LOCAL pg_entitlements.carry_usage = off");
        run("UPDATE quota.user_subscriptions SET quota_reset_anchor = now() - interval '1 hour' WHERE user_id = 36");
        let current = one::<String>(
            "SELECT period_start::text FROM quota.get_quota_period(36, 'articles_per_month')",
        )
        .unwrap();
        assert_ne!(original, current);
        let first = one::<String>("SELECT period_start::text || ' ' || refunded_amount || ' ' || newly_refunded FROM quota.refund_usage(36, 'gen-1')").unwrap();
        assert_eq!(first, format!("{original} 3 true"));
        let second = one::<bool>("SELECT newly_refunded FROM quota.refund_usage(36, 'gen-1')");
        assert_eq!(second, Some(false));
        assert_eq!(one::<i64>(&format!("SELECT usage_count FROM quota.user_usage WHERE user_id = 36 AND feature_code = 'articles_per_month' AND period_start = '{original}'")), Some(0));
        assert!(ledger_is_consistent());
    }

    #[pg_test]
    fn refund_errors() {
        subscribe(37, "free", "NULL");
        consume(37, 1, "x");
        assert_eq!(sqlstate("quota.refund_usage(37, 'missing')"), "P0002");
        assert_eq!(sqlstate("quota.refund_usage(-1)"), "P0002");
        assert_eq!(sqlstate("quota.refund_usage(NULL::bigint)"), "22004");
        let refund_id = one::<i64>("SELECT refund_id FROM quota.refund_usage(37, 'x')").unwrap();
        assert_eq!(sqlstate(&format!("quota.refund_usage({refund_id})")), "22023");
    }

    #[pg_test]
    fn adjust_quota_is_audited_and_lowering_below_usage_is_allowed() {
        subscribe(38, "free", "NULL");
        consume(38, 5, "");
        let changed = one::<String>("SELECT coalesce(old_value::text, 'none') || ' -> ' || new_value FROM quota.adjust_quota(38, 'articles_per_month', 4, 'abuse')");
        assert_eq!(changed.as_deref(), Some("none -> 4"));
        assert_eq!(check(38, "articles_per_month"), (false, 5, 4, 0, "125.00".into()));
        assert_eq!(consume(38, 1, "").0, false);
        assert_eq!(
            one::<String>(
                "SELECT reason || ' by ' || actor FROM quota.quota_adjustments WHERE user_id = 38"
            ),
            Some("abuse by postgres".into())
        );
        run("SELECT quota.clear_custom_quota(38, 'articles_per_month', 'resolved', 'support@example.com')");
        assert_eq!(check(38, "articles_per_month").2, 10, "back to the plan");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM quota.quota_adjustments WHERE user_id = 38"),
            Some(2)
        );
    }

    #[pg_test]
    fn adjust_quota_errors() {
        subscribe(39, "free", "NULL");
        assert_eq!(sqlstate("quota.adjust_quota(39, 'articles_per_month', -2, 'r')"), "22023");
        assert_eq!(
            sqlstate("quota.adjust_quota(39, 'articles_per_month', 2147483648, 'r')"),
            "22003"
        );
        assert_eq!(sqlstate("quota.adjust_quota(39, 'articles_per_month', 5, NULL)"), "22004");
        assert_eq!(sqlstate("quota.adjust_quota(39, 'articles_per_month', 5, ' ')"), "22023");
        assert_eq!(sqlstate("quota.adjust_quota(39, 'nope', 5, 'r')"), "P0002");
        assert_eq!(sqlstate("quota.adjust_quota(40, 'articles_per_month', 5, 'r')"), "P0002");
        assert_eq!(one::<i64>("SELECT count(*) FROM quota.quota_adjustments"), Some(0));
    }

    #[pg_test]
    fn usage_overview_lists_every_feature() {
        subscribe(41, "free", "'{\"keyword_distillation\": 2}'");
        consume(41, 3, "");
        // The catalog's five features and the fixtures' three.
        assert_eq!(one::<i64>("SELECT count(*) FROM quota.usage_overview(41)"), Some(8));
        assert_eq!(
            one::<String>("SELECT quota_limit || '/' || current_usage || ' ' || unit || ' ' || cycle
                             FROM quota.usage_overview(41) WHERE feature_code = 'articles_per_month'"),
            Some("10/3 articles monthly".into())
        );
        assert_eq!(
            one::<i64>("SELECT quota_limit FROM quota.usage_overview(41) WHERE feature_code = 'keyword_distillation'"),
            Some(2)
        );
        assert_eq!(
            one::<bool>("SELECT bool_or(has_quota) FROM quota.usage_overview(42)"),
            Some(false)
        );
    }

    #[pg_test]
    fn open_ended_subscriptions_have_periods() {
        subscribe(43, "free", "NULL");
        run("UPDATE quota.user_subscriptions SET end_date = 'infinity' WHERE user_id = 43");
        assert_eq!(check(43, "articles_per_month").2, 10);
        assert_eq!(
            one::<String>(
                "SELECT period_end::text FROM quota.get_quota_period(43, 'storage_space')"
            ),
            Some("infinity".into())
        );
    }

    #[pg_test]
    fn bad_zones_and_huge_numbers_are_refused_at_write_time() {
        assert_eq!(one::<bool>("SELECT quota.is_valid_time_zone('PST')"), Some(false));
        assert_eq!(one::<bool>("SELECT quota.is_valid_time_zone('Asia/Shanghai')"), Some(true));
        assert_eq!(raised("INSERT INTO quota.settings (time_zone) VALUES ('PST')"), "23514");
        subscribe(44, "free", "NULL");
        assert_eq!(
            raised("UPDATE quota.user_subscriptions SET custom_quotas = '{\"articles_per_month\": 1e400}'
                     WHERE user_id = 44"),
            "22003"
        );
    }

    #[pg_test]
    fn usage_is_the_current_periods_even_when_a_later_counter_exists() {
        subscribe(45, "free", "NULL");
        consume(45, 3, "");
        // A counter of a later period (as left behind when an anchor moves back).
        run("INSERT INTO quota.user_usage
               (user_id, feature_code, period_start, period_end, usage_count, last_reset_at, updated_at)
             VALUES (45, 'articles_per_month', now() + interval '5 days', now() + interval '35 days',
                     50, now(), now())");
        assert_eq!(check(45, "articles_per_month").1, 3);
        // Only earlier counters: nothing used in this period.
        run("DELETE FROM quota.user_usage WHERE user_id = 45");
        run("INSERT INTO quota.user_usage
               (user_id, feature_code, period_start, period_end, usage_count, last_reset_at, updated_at)
             VALUES (45, 'articles_per_month', now() - interval '70 days', now() - interval '40 days',
                     9, now(), now())");
        assert_eq!(check(45, "articles_per_month").1, 0);
    }

    #[pg_test]
    fn an_update_that_moves_no_limit_runs_no_statement() {
        subscribe(46, "free", "'{\"storage_space\": 300}'");
        // Tamper with the stored quota: only a real change of the row would repair it.
        run("UPDATE quota.user_storage_usage SET storage_quota_bytes = 1 WHERE user_id = 46");
        let stored = || {
            one::<i64>(
                "SELECT storage_quota_bytes FROM quota.user_storage_usage WHERE user_id = 46",
            )
        };
        run("UPDATE quota.user_subscriptions SET custom_quotas = custom_quotas, status = status WHERE user_id = 46");
        assert_eq!(
            stored(),
            Some(1),
            "nothing that decides a limit changed: the trigger returned at once"
        );
        run("UPDATE quota.user_subscriptions SET end_date = end_date + interval '1 day' WHERE user_id = 46");
        assert_eq!(stored(), Some(300 * 1024 * 1024), "a date change is a change");
    }

    // Committed rows for the tests below that read through the direct path: every other test
    // writes first, and a transaction that has written reads by statements (src/read/copy.rs,
    // `direct`). Users 9000-9099 and the plans fixture_* are reserved for them; only the test
    // build has these rows (this module is compiled for `cargo pgrx test` alone).
    //   9000 custom above plan above default      9009 end_date infinity
    //   9001 a counter in the current period      9010 start_date -infinity
    //        and one in an earlier period          9011 end_date in the year 20000
    //   9002 unlimited plan, yearly cycle          9012-9017 a custom_quotas value the
    //   9003 custom storage, a limit of 0,              extension's triggers never saw (as
    //        the subscription's own cycle               an application's rows before attach)
    //   9004 no subscription at all
    //   9005 only subscriptions that are not active (cancelled, expired, future, ended)
    //   9006 two active: the later end_date wins over the higher id
    //   9007 two active with one end_date: the higher id wins
    //   9008 usage above a custom limit
    //   9018-9022 custom_quotas that is not a JSON object (array, string, number, true, null)
    //   9023 grants that count and grants that do not
    //   9024 a soft limit, a rollover not created yet, an active hold and an expired one
    //   9025 a switch on and a configuration value of the user's own; a feature limited per
    //        month and per day, the day the tighter
    //   9026 the switch off and the configuration value of the plan
    extension_sql!(
        r#"
-- First, as a new feature resyncs every user and the rows of 9012-9022 would stop it.
-- 9025 and 9026: a switch on by the plan, off by 9026's custom value; a configuration value of
-- the plan, 9025's own instead; searches limited to 20 a month and 3 a day, 9025 used 5 this
-- period, 2 of them today (the window counter of the UTC day).
INSERT INTO quota.features (code, name, kind, default_limit, default_value) VALUES
    ('fixture_sso', 'Fixture SSO', 'boolean', 0, NULL),
    ('fixture_model', 'Fixture model', 'config', NULL, '"small"');
INSERT INTO quota.features (code, name, default_limit, window_limits)
VALUES ('fixture_searches', 'Fixture searches', 20, '{"day": 3}');
INSERT INTO quota.subscription_plans (plan_code, plan_name, billing_cycle)
VALUES ('fixture_kinds', 'Fixture kinds', 'monthly');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, config_value)
SELECT p.id, v.code, 1, v.config
  FROM quota.subscription_plans p,
       (VALUES ('fixture_sso', NULL::jsonb), ('fixture_model', '"large"')) AS v (code, config)
 WHERE p.plan_code = 'fixture_kinds';
INSERT INTO quota.user_subscriptions (id, user_id, plan_id, start_date, end_date, custom_quotas)
SELECT v.id, v.user_id, p.id, date_trunc('second', now()) - interval '10 days',
       now() + interval '355 days', v.custom
  FROM quota.subscription_plans p,
       (VALUES (902500, 9025, '{"fixture_model": {"name": "o3"}}'::jsonb),
               (902600, 9026, '{"fixture_sso": false}')) AS v (id, user_id, custom)
 WHERE p.plan_code = 'fixture_kinds';
INSERT INTO quota.user_usage (user_id, feature_code, period_start, period_end, usage_count,
                              last_reset_at, updated_at)
SELECT 9025, 'fixture_searches', s.start_date, s.start_date + interval '1 month', 5, now(), now()
  FROM quota.user_subscriptions s WHERE s.user_id = 9025;
INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, created_at)
SELECT u.user_id, u.feature_code, u.period_start, u.usage_count, now()
  FROM quota.user_usage u WHERE u.user_id = 9025;
INSERT INTO quota.window_usage (user_id, feature_code, window_name, window_start, window_end,
                                usage_count)
SELECT 9025, 'fixture_searches', 'day', d, d + interval '1 day', 2
  FROM (SELECT pg_catalog.date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS t (d);

INSERT INTO quota.subscription_plans (plan_code, plan_name, billing_cycle) VALUES
    ('fixture_basic', 'Fixture basic', 'monthly'),
    ('fixture_team', 'Fixture team', 'yearly');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, feature_unit)
SELECT p.id, v.code, v.value, v.unit
  FROM quota.subscription_plans p
  JOIN (VALUES ('fixture_basic', 'articles_per_month', 10, NULL),
               ('fixture_basic', 'storage_space', 200, 'MB'),
               ('fixture_team', 'articles_per_month', -1, NULL),
               ('fixture_team', 'storage_space', 2, 'GB'),
               ('fixture_team', 'keyword_distillation', 5, NULL)) AS v (plan, code, value, unit)
    ON v.plan = p.plan_code;

INSERT INTO quota.user_subscriptions
       (id, user_id, plan_id, start_date, end_date, status, custom_quotas, quota_cycle_type)
SELECT v.id, v.user_id, p.id, v.start_date, v.end_date, v.status, v.custom, v.cycle
  FROM (VALUES
    (900000, 9000, 'fixture_basic', now() - interval '10 days', now() + interval '355 days',
     'active', '{"articles_per_month": 25, "keyword_distillation": -1}'::jsonb, NULL::text),
    (900100, 9001, 'fixture_basic', now() - interval '10 days', now() + interval '355 days',
     'active', NULL, NULL),
    (900200, 9002, 'fixture_team', now() - interval '10 days', now() + interval '800 days',
     'active', NULL, NULL),
    (900300, 9003, 'fixture_team', now() - interval '10 days', now() + interval '355 days',
     'active', '{"storage_space": 300, "articles_per_month": 0}', 'monthly'),
    (900500, 9005, 'fixture_basic', now() - interval '10 days', now() + interval '355 days',
     'cancelled', NULL, NULL),
    (900501, 9005, 'fixture_basic', now() - interval '400 days', now() - interval '35 days',
     'expired', NULL, NULL),
    (900502, 9005, 'fixture_basic', now() + interval '5 days', now() + interval '370 days',
     'active', NULL, NULL),
    (900503, 9005, 'fixture_basic', now() - interval '400 days', now() - interval '35 days',
     'active', NULL, NULL),
    (900600, 9006, 'fixture_team', now() - interval '10 days', now() + interval '200 days',
     'active', NULL, NULL),
    (900601, 9006, 'fixture_basic', now() - interval '10 days', now() + interval '100 days',
     'active', NULL, NULL),
    (900700, 9007, 'fixture_team', now() - interval '10 days', now() + interval '100 days',
     'active', NULL, NULL),
    (900701, 9007, 'fixture_basic', now() - interval '10 days', now() + interval '100 days',
     'active', NULL, NULL),
    (900800, 9008, 'fixture_basic', now() - interval '10 days', now() + interval '355 days',
     'active', '{"articles_per_month": 3}', NULL),
    (900900, 9009, 'fixture_basic', now() - interval '10 days', 'infinity',
     'active', NULL, NULL),
    (901000, 9010, 'fixture_basic', '-infinity', now() + interval '355 days',
     'active', NULL, NULL),
    (901100, 9011, 'fixture_basic', now() - interval '10 days', '20000-01-01 00:00+00',
     'active', NULL, NULL)
  ) AS v (id, user_id, plan, start_date, end_date, status, custom, cycle)
  JOIN quota.subscription_plans p ON p.plan_code = v.plan;

-- custom_quotas values the extension's triggers reject at write time (and could not announce):
-- an application's rows written before attach() never met them, and the readers must still
-- answer for such rows. The triggers are off for this one INSERT.
ALTER TABLE quota.user_subscriptions
    DISABLE TRIGGER pg_entitlements_validate_custom_quotas,
    DISABLE TRIGGER pg_entitlements_sync_storage_quota;
INSERT INTO quota.user_subscriptions (id, user_id, plan_id, start_date, end_date, custom_quotas)
SELECT 900000 + 100 * (v.user_id - 9000), v.user_id, p.id, now() - interval '10 days',
       now() + interval '355 days', pg_catalog.jsonb_build_object('articles_per_month', v.value)
  FROM (VALUES (9012, '"abc"'::jsonb), (9013, '6.5'), (9014, 'true'), (9015, '{}'),
               (9016, '1e20'), (9017, '-5')) AS v (user_id, value)
  JOIN quota.subscription_plans p ON p.plan_code = 'fixture_basic';
-- custom_quotas that is not a JSON object, which the table's CHECK refuses: an application's
-- column has no such CHECK. Here the CHECK is back, NOT VALID, once the rows are in.
ALTER TABLE quota.user_subscriptions DROP CONSTRAINT user_subscriptions_custom_quotas_check;
INSERT INTO quota.user_subscriptions (id, user_id, plan_id, start_date, end_date, custom_quotas)
SELECT 900000 + 100 * (v.user_id - 9000), v.user_id, p.id, now() - interval '10 days',
       now() + interval '355 days', v.custom
  FROM (VALUES (9018, '["a", "xxxxxxxxxxxxarticl", "es_per_month"]'::jsonb),
               (9019, '"articles_per_month"'), (9020, '5'), (9021, 'true'), (9022, 'null'))
       AS v (user_id, custom)
  JOIN quota.subscription_plans p ON p.plan_code = 'fixture_basic';
ALTER TABLE quota.user_subscriptions ADD CONSTRAINT user_subscriptions_custom_quotas_check
    CHECK (jsonb_typeof(custom_quotas) = 'object') NOT VALID;
ALTER TABLE quota.user_subscriptions
    ENABLE TRIGGER pg_entitlements_validate_custom_quotas,
    ENABLE TRIGGER pg_entitlements_sync_storage_quota;

SELECT quota.record_feature_usage(9001, 'articles_per_month', NULL, NULL, 4),
       quota.record_feature_usage(9002, 'articles_per_month', NULL, NULL, 7),
       quota.record_feature_usage(9008, 'articles_per_month', NULL, NULL, 5);
-- An earlier period's counter, with its ledger row (quota.verify_ledger() stays empty).
INSERT INTO quota.user_usage
       (user_id, feature_code, period_start, period_end, usage_count, last_reset_at, updated_at)
VALUES (9001, 'articles_per_month', now() - interval '70 days', now() - interval '40 days',
        99, now(), now());
INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, created_at)
VALUES (9001, 'articles_per_month', now() - interval '70 days', 99, now());

-- 9023: its allowance of 10 spent, and grants of articles: two that count (5 with 3 left, and
-- 6 that never expire) and three that do not (expired, voided, not yet effective).
INSERT INTO quota.user_subscriptions (id, user_id, plan_id, start_date, end_date)
SELECT 902300, 9023, p.id, now() - interval '10 days', now() + interval '355 days'
  FROM quota.subscription_plans p WHERE p.plan_code = 'fixture_basic';
SELECT quota.record_feature_usage(9023, 'articles_per_month', NULL, NULL, 10);
INSERT INTO quota.grants (user_id, feature_code, amount, remaining, effective_from, expires_at,
                          source, voided_at, void_reason)
VALUES (9023, 'articles_per_month', 5, 3, now() - interval '1 day', now() + interval '9 days',
        'top_up', NULL, NULL),
       (9023, 'articles_per_month', 6, 6, now() - interval '1 day', NULL, 'promotion', NULL, NULL),
       (9023, 'articles_per_month', 7, 7, now() - interval '9 days', now() - interval '1 day',
        'top_up', NULL, NULL),
       (9023, 'articles_per_month', 9, 9, now() - interval '1 day', NULL, 'admin', now(), 'test'),
       (9023, 'articles_per_month', 4, 4, now() + interval '1 day', NULL, 'promotion', NULL, NULL);

-- 9024: a plan of 10 articles with 5 of overage and up to 3 rolled over; 8 used last period (2
-- roll over), 12 this period (2 of them overage), a hold of 1 and an expired hold of 3.
INSERT INTO quota.subscription_plans (plan_code, plan_name, billing_cycle)
VALUES ('fixture_soft', 'Fixture soft', 'monthly');
INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, overage_limit, rollover_max)
SELECT p.id, 'articles_per_month', 10, 5, 3 FROM quota.subscription_plans p
 WHERE p.plan_code = 'fixture_soft';
INSERT INTO quota.user_subscriptions (id, user_id, plan_id, start_date, end_date)
SELECT 902400, 9024, p.id, date_trunc('second', now()) - interval '40 days',
       now() + interval '355 days'
  FROM quota.subscription_plans p WHERE p.plan_code = 'fixture_soft';
INSERT INTO quota.user_usage (user_id, feature_code, period_start, period_end, usage_count,
                              last_reset_at, updated_at, held)
SELECT 9024, 'articles_per_month', s.start_date + k * interval '1 month',
       s.start_date + (k + 1) * interval '1 month', n, now(), now(), h
  FROM quota.user_subscriptions s, (VALUES (0, 8, 0), (1, 12, 4)) AS v (k, n, h)
 WHERE s.user_id = 9024;
INSERT INTO quota.usage_records (user_id, feature_code, period_start, amount, created_at)
SELECT u.user_id, u.feature_code, u.period_start, u.usage_count, now()
  FROM quota.user_usage u WHERE u.user_id = 9024;
INSERT INTO quota.reservations (user_id, feature_code, period_start, period_end, amount,
                                expires_at, created_at)
SELECT 9024, 'articles_per_month', u.period_start, u.period_end, v.amount, now() + v.ttl,
       now() - interval '20 minutes'
  FROM quota.user_usage u, (VALUES (1, interval '1 hour'), (3, interval '-1 minute')) AS v (amount, ttl)
 WHERE u.user_id = 9024 AND u.usage_count = 12;

-- The rows a query returns as text, or the SQLSTATE it raises: the one way these tests catch an
-- error without a DO block, which pgrx would run read-write and so end the direct path.
CREATE FUNCTION tests.outcome(query text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result text;
BEGIN
    EXECUTE format('SELECT string_agg(q::text, %L) FROM (%s) q', ' | ', query) INTO result;
    RETURN coalesce(result, 'no rows');
EXCEPTION WHEN OTHERS THEN
    RETURN 'ERROR ' || SQLSTATE;
END
$$;
"#,
        name = "test_fixtures",
        requires = ["privileges", "attach", "grants"]
    );

    /// The features the fixture users are read for (the catalog's five and the fixtures' three).
    const FEATURES: [&str; 8] = [
        "articles_per_month",
        "keyword_distillation",
        "platform_accounts",
        "publish_per_month",
        "storage_space",
        "fixture_sso",
        "fixture_model",
        "fixture_searches",
    ];

    /// The rows `query` returns as text (`no rows` for none), or `ERROR` and the SQLSTATE it
    /// raises, by tests.outcome(): called from a read-only statement, so that the reading
    /// functions keep their direct path (pgrx assigns a transaction id before any statement it
    /// runs read-write, such as a DO block or SET).
    fn outcome(query: &str) -> String {
        one::<String>(&format!("SELECT tests.outcome($pge${query}$pge$)")).unwrap()
    }

    /// How `quota.read_paths()` says each table is read now, as `table read_by` pairs.
    fn read_paths() -> String {
        one::<String>(
            "SELECT pg_catalog.string_agg(table_name || ' ' || read_by, ', ' ORDER BY table_name)
               FROM quota.read_paths()",
        )
        .unwrap()
    }

    /// The test has written nothing, so the reading functions read without statements: the
    /// nearly constant tables from the backend's copy, the per-user tables by index.
    fn assert_direct_reads() {
        assert_eq!(
            one::<bool>("SELECT pg_catalog.pg_current_xact_id_if_assigned() IS NULL"),
            Some(true),
            "the test has written: every read after a write is a statement"
        );
        assert_eq!(
            read_paths(),
            "features cache, grants index, plan_features cache, settings cache, \
             subscription_plans cache, user_subscriptions index, user_usage index"
        );
    }

    /// From here on every read of the test is a statement. set_config(..., true) is SET LOCAL
    /// in a read-only statement.
    fn read_by_statements() {
        one::<String>("SELECT pg_catalog.set_config('pg_entitlements.direct_reads', 'off', true)");
        assert_eq!(
            read_paths(),
            "features sql, grants sql, plan_features sql, settings sql, subscription_plans sql, \
             user_subscriptions sql, user_usage sql"
        );
    }

    /// Every call of every reading function for one user.
    fn reading_calls(user: i64) -> Vec<String> {
        let mut calls: Vec<String> = FEATURES
            .iter()
            .flat_map(|f| {
                [
                    format!("SELECT * FROM quota.check_user_quota({user}, '{f}')"),
                    format!("SELECT * FROM quota.get_quota_period({user}, '{f}')"),
                    format!(
                        "SELECT quota.has_feature({user}, '{f}'), quota.feature_value({user}, '{f}')"
                    ),
                ]
            })
            .collect();
        calls.push(format!("SELECT quota.get_user_storage_quota({user})"));
        calls.push(format!("SELECT * FROM quota.get_quota_period({user})"));
        calls.push(format!("SELECT * FROM quota.usage_overview({user})"));
        calls
    }

    /// The fixture users' answers, whichever way they are read.
    fn assert_fixture_answers() {
        let check = |user: i64, feature: &str| {
            outcome(&format!("SELECT * FROM quota.check_user_quota({user}, '{feature}')"))
        };
        let storage = |user: i64| outcome(&format!("SELECT quota.get_user_storage_quota({user})"));
        // (has_quota, current_usage, quota_limit, remaining, percentage)
        assert_eq!(check(9000, "articles_per_month"), "(t,0,25,25,0.00)", "custom over plan");
        assert_eq!(
            check(9000, "keyword_distillation"),
            "(t,0,-1,-1,0.00)",
            "custom unlimited, for a feature the plan lacks"
        );
        assert_eq!(check(9000, "publish_per_month"), "(t,0,200,200,0.00)", "catalog default");
        assert_eq!(check(9002, "keyword_distillation"), "(t,0,5,5,0.00)", "plan over default");
        assert_eq!(check(9002, "articles_per_month"), "(t,7,-1,-1,0.00)", "unlimited plan");
        assert_eq!(check(9003, "articles_per_month"), "(f,0,0,0,0.00)", "a custom limit of 0");
        assert_eq!(check(9008, "articles_per_month"), "(f,5,3,0,166.67)", "usage above limit");
        assert_eq!(
            check(9001, "articles_per_month"),
            "(t,4,10,6,40.00)",
            "the current period's counter, not the earlier period's 99"
        );
        assert_eq!(
            outcome(
                "SELECT feature_code, current_usage, quota_limit, cycle
                   FROM quota.usage_overview(9001) WHERE feature_code = 'articles_per_month'"
            ),
            "(articles_per_month,4,10,monthly)"
        );
        // Several active subscriptions: the latest end_date first, then the highest id.
        assert_eq!(check(9006, "articles_per_month"), "(t,0,-1,-1,0.00)", "later end_date");
        assert_eq!(check(9007, "articles_per_month"), "(t,0,10,10,0.00)", "higher id");
        for user in [9004, 9005] {
            assert_eq!(check(user, "articles_per_month"), "(f,0,0,0,0.00)", "user {user}");
            assert_eq!(storage(user), "(0)", "user {user}");
            assert_eq!(
                outcome(&format!("SELECT * FROM quota.get_quota_period({user})")),
                "no rows"
            );
            assert_eq!(
                outcome(&format!(
                    "SELECT count(*), bool_or(has_quota) FROM quota.usage_overview({user})"
                )),
                "(8,f)"
            );
        }
        // Storage in bytes: a plan's value in its own unit, a custom value in the catalog's (MB).
        assert_eq!(storage(9000), "(209715200)", "200 MB from the plan");
        assert_eq!(storage(9002), "(2147483648)", "2 GB from the plan");
        assert_eq!(storage(9003), "(314572800)", "300 MB from custom_quotas");
        // Periods: from the subscription's start, by its own cycle, else its plan's.
        let period = |user: i64, interval: &str| {
            outcome(&format!(
                "SELECT p.period_start = s.start_date,
                        p.period_end = (s.start_date AT TIME ZONE 'UTC' + interval '{interval}')
                                       AT TIME ZONE 'UTC',
                        p.cycle
                   FROM quota.get_quota_period({user}, 'articles_per_month') p,
                        quota.user_subscriptions s
                  WHERE s.user_id = {user}"
            ))
        };
        assert_eq!(period(9001, "1 month"), "(t,t,monthly)");
        assert_eq!(period(9002, "1 year"), "(t,t,yearly)", "the plan's billing_cycle");
        assert_eq!(period(9003, "1 month"), "(t,t,monthly)", "the subscription's cycle");
        assert_eq!(check(9009, "articles_per_month"), "(t,0,10,10,0.00)", "end_date infinity");
        assert_eq!(
            outcome("SELECT period_end, cycle FROM quota.get_quota_period(9009, 'storage_space')"),
            "(infinity,subscription)"
        );
        // Dates beyond what a period can hold; values the validation trigger never saw.
        assert_eq!(check(9010, "articles_per_month"), "ERROR 22008", "start_date -infinity");
        assert_eq!(check(9011, "articles_per_month"), "ERROR 22008", "end_date in 20000");
        for (user, code) in
            [(9012, "22P02"), (9013, "22P02"), (9014, "22P02"), (9015, "22P02"), (9016, "22003")]
        {
            assert_eq!(check(user, "articles_per_month"), format!("ERROR {code}"), "user {user}");
        }
        assert_eq!(check(9017, "articles_per_month"), "ERROR 22P02", "a limit of -5");
        for user in 9018..=9022 {
            for feature in FEATURES {
                assert_eq!(check(user, feature), "ERROR 22P02", "user {user}: not an object");
            }
        }
        // 10 of 10 used, and the grants that count: 11 given, 9 left.
        assert_eq!(check(9023, "articles_per_month"), "(t,12,21,9,57.14)", "grants");
        assert_eq!(check(9023, "publish_per_month"), "(t,0,200,200,0.00)", "no grant of it");
        // Limit 10 and 12 used; the rollover of 2 to come; 3 of the overage of 5 left; the
        // active hold of 1 counts, the expired one of 3 does not: 13 of 17, 4 left.
        assert_eq!(check(9024, "articles_per_month"), "(t,13,17,4,76.47)", "holds, overage");
        let value = |user: i64, feature: &str| {
            outcome(&format!(
                "SELECT quota.has_feature({user}, '{feature}'), quota.feature_value({user}, '{feature}')"
            ))
        };
        assert_eq!(check(9025, "fixture_sso"), "(t,0,-1,-1,0.00)", "a switch on: unlimited");
        assert_eq!(check(9026, "fixture_sso"), "(f,0,0,0,0.00)", "off by the custom value");
        assert_eq!(value(9026, "fixture_sso"), "(f,false)", "off by the custom value");
        assert_eq!(value(9025, "fixture_model"), r#"(t,"{""name"": ""o3""}")"#, "the user's own");
        assert_eq!(value(9026, "fixture_model"), r#"(t,"""large""")"#, "the plan's value");
        assert_eq!(value(9025, "fixture_searches"), "(t,20)", "a limit is a metered value");
        // 5 of 20 this month, 2 of 3 today: the day is the tightest.
        assert_eq!(check(9025, "fixture_searches"), "(t,2,3,1,66.67)", "two windows");
        assert_eq!(check(9026, "fixture_searches"), "(t,0,3,3,0.00)", "nothing used");
    }

    #[pg_test]
    fn committed_rows_read_directly() {
        assert_direct_reads();
        assert_fixture_answers();
        assert_direct_reads();
    }

    #[pg_test]
    fn committed_rows_read_by_statements() {
        read_by_statements();
        assert_fixture_answers();
    }

    /// Every reading function, for every fixture user and feature, answers the same or raises
    /// the same SQLSTATE whichever way it reads, and never an internal error.
    #[pg_test]
    fn direct_reads_and_statements_agree_on_committed_rows() {
        assert_direct_reads();
        let calls: Vec<String> = (9000..=9026).flat_map(reading_calls).collect();
        let direct: Vec<String> = calls.iter().map(|c| outcome(c)).collect();
        assert_direct_reads();
        read_by_statements();
        for (call, direct) in calls.iter().zip(&direct) {
            let by_statements = outcome(call);
            assert_eq!(direct, &by_statements, "{call}: direct reads (left), statements (right)");
            assert_ne!(by_statements, "ERROR XX000", "{call}");
        }
    }
}
