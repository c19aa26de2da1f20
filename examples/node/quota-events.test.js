// Runs against a real server with pg_entitlements (scripts/node-test.sh starts one; the
// connection comes from the PG* environment variables).
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('pg');
const { QuotaEvents } = require('./quota-events');

const USER = 9001;

// Resolves with the first event matching `match` within `ms`, or null.
function nextEvent(events, match, ms = 1000) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      stop();
      resolve(null);
    }, ms);
    const stop = events.subscribe((e) => {
      if (match(e)) {
        clearTimeout(timer);
        stop();
        resolve(e);
      }
    });
  });
}

test('committed quota changes reach a listener at once; rolled-back ones never do', async (t) => {
  const admin = new Client();
  await admin.connect();
  const events = new QuotaEvents({});
  await events.start();
  t.after(async () => {
    await events.stop();
    await admin.end();
  });

  await admin.query('CREATE EXTENSION IF NOT EXISTS pg_entitlements');
  await admin.query(`
    INSERT INTO quota.subscription_plans (plan_code, plan_name) VALUES ('node_free', 'Free')
    ON CONFLICT DO NOTHING`);
  await admin.query(`
    INSERT INTO quota.plan_features (plan_id, feature_code, feature_value, feature_unit)
    SELECT id, v.code, v.value, v.unit FROM quota.subscription_plans,
           (VALUES ('articles_per_month', 10, NULL), ('storage_space', 100, 'MB')) v (code, value, unit)
     WHERE plan_code = 'node_free'
    ON CONFLICT DO NOTHING`);
  const forUser = (channel) => (e) => e.channel === channel && e.payload.user_id === USER;

  await t.test('a new subscription announces its storage quota', async () => {
    const heard = nextEvent(events, forUser('storage_quota_changed'));
    await admin.query(`
      INSERT INTO quota.user_subscriptions (user_id, plan_id, start_date, end_date, custom_quotas)
      SELECT $1, id, now() - interval '1 day', now() + interval '1 year', '{"articles_per_month": 6}'
        FROM quota.subscription_plans WHERE plan_code = 'node_free'`, [USER]);
    const e = await heard;
    assert.ok(e, 'storage_quota_changed within a second');
    assert.deepEqual(e.payload, { user_id: USER, old_bytes: null, new_bytes: 104857600 });
  });

  await t.test('adjust_quota in one connection is heard in the other within a second', async () => {
    const heard = nextEvent(events, forUser('quota_updated'));
    await admin.query(`SELECT * FROM quota.adjust_quota($1, 'articles_per_month', 10, 'support ticket 42')`, [USER]);
    const e = await heard;
    assert.ok(e, 'quota_updated within a second');
    assert.deepEqual(e.payload.features, ['articles_per_month']);
    assert.equal(e.payload.old.articles_per_month, 6);
    assert.equal(e.payload.new.articles_per_month, 10);
  });

  await t.test('a rolled-back change sends nothing', async () => {
    const heard = nextEvent(events, forUser('quota_updated'));
    await admin.query('BEGIN');
    await admin.query(`SELECT * FROM quota.adjust_quota($1, 'articles_per_month', 99, 'oops')`, [USER]);
    await admin.query(`UPDATE quota.user_subscriptions SET custom_quotas = custom_quotas || '{"storage_space": 5}' WHERE user_id = $1`, [USER]);
    await admin.query('ROLLBACK');
    assert.equal(await heard, null);
  });

  await t.test('a storage override is announced with old and new bytes', async () => {
    const heard = nextEvent(events, forUser('storage_quota_changed'));
    await admin.query(`UPDATE quota.user_subscriptions SET custom_quotas = custom_quotas || '{"storage_space": 2048}' WHERE user_id = $1`, [USER]);
    const e = await heard;
    assert.ok(e);
    assert.deepEqual(e.payload, { user_id: USER, old_bytes: 104857600, new_bytes: 2147483648 });
  });

  await t.test('crossing 80% of the limit raises a threshold alert once', async () => {
    const alerts = [];
    const stop = events.subscribe((e) => forUser('quota_threshold')(e) && alerts.push(e.payload.threshold));
    await admin.query(`SELECT * FROM quota.consume($1, 'articles_per_month', 7)`, [USER]);
    await admin.query(`SELECT * FROM quota.consume($1, 'articles_per_month', 1)`, [USER]);
    await admin.query(`SELECT * FROM quota.consume($1, 'articles_per_month', 1)`, [USER]);
    await new Promise((r) => setTimeout(r, 300));
    stop();
    assert.deepEqual(alerts, [80]);
  });

  await t.test('alerts re-arm when the limit changes: judged against the limit of each use', async () => {
    const alerts = [];
    const stop = events.subscribe((e) => forUser('quota_threshold')(e) &&
      alerts.push([e.payload.threshold, e.payload.usage, e.payload.limit]));
    const consume = (n) => admin.query(`SELECT * FROM quota.consume($1, 'articles_per_month', $2)`, [USER, n]);
    await consume(1); // 10 of 10
    await admin.query(`SELECT * FROM quota.adjust_quota($1, 'articles_per_month', 100, 'upgrade')`, [USER]);
    await consume(75); // 85 of 100
    await consume(15); // 100 of 100
    await new Promise((r) => setTimeout(r, 300));
    stop();
    assert.deepEqual(alerts, [[95, 10, 10], [100, 10, 10], [80, 85, 100], [95, 100, 100], [100, 100, 100]]);
  });
  await t.test('grants and holds are announced with a versioned payload', async () => {
    const heard = [];
    const stop = events.subscribe((e) => (forUser('quota_grant')(e) || forUser('quota_reservation')(e)) &&
      heard.push([e.channel, e.payload.version, e.payload.event, e.payload.amount]));
    await admin.query(`SELECT * FROM quota.grant_quota($1, 'articles_per_month', 5)`, [USER]);
    const { rows } = await admin.query(
      `SELECT reservation_id FROM quota.reserve($1, 'articles_per_month', 3)`, [USER]);
    await admin.query(`SELECT * FROM quota.settle($1, 2)`, [rows[0].reservation_id]);
    // A hold rolled back is never announced.
    await admin.query('BEGIN');
    await admin.query(`SELECT * FROM quota.reserve($1, 'articles_per_month', 1)`, [USER]);
    await admin.query('ROLLBACK');
    await new Promise((r) => setTimeout(r, 300));
    stop();
    assert.deepEqual(heard, [
      ['quota_grant', 1, 'added', 5],
      ['quota_reservation', 1, 'granted', 3],
      ['quota_reservation', 1, 'settled', 3],
    ]);
  });

  await t.test('the lifecycle: a pause, a resume and what the tick applies are announced', async () => {
    const heard = [];
    const stop = events.subscribe((e) => forUser('quota_subscription')(e) &&
      heard.push([e.payload.version, e.payload.event]));
    await admin.query(`SELECT * FROM quota.pause_subscription($1, 'holiday')`, [USER]);
    await admin.query(`SELECT * FROM quota.resume_subscription($1)`, [USER]);
    // A subscription that ended a minute ago, which the next tick expires.
    await admin.query(`
      UPDATE quota.user_subscriptions SET end_date = now() - interval '1 minute'
       WHERE user_id = $1 AND status = 'active'`, [USER]);
    const { rows } = await admin.query('SELECT ran, expired FROM quota.tick()');
    await new Promise((r) => setTimeout(r, 300));
    stop();
    assert.deepEqual(rows, [{ ran: true, expired: 1 }]);
    assert.deepEqual(heard, [[1, 'paused'], [1, 'resumed'], [1, 'expired']]);
  });
});
