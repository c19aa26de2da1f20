// A small app-server service that hears every committed quota change from PostgreSQL.
//
// pg_entitlements announces changes itself with pg_notify, inside the transaction that makes
// them: PostgreSQL delivers them at commit and drops them on rollback. This service holds one
// connection that LISTENs on every channel and forwards each event to its subscribers
// (in the seed application: the WebSocket clients of that user). There is no cache to clear:
// every check_user_quota call reads the truth.
'use strict';

const { Client } = require('pg');

const CHANNELS = [
  'quota_updated',
  'storage_quota_changed',
  'quota_threshold',
  'quota_grant',
  'quota_reservation',
  // The lifecycle: pauses, resumes, scheduled plan changes, and what quota.tick() applies when
  // the clock makes it due (expiries, trial ends, fallbacks, plan changes).
  'quota_subscription',
];

class QuotaEvents {
  constructor(connection) {
    this.connection = connection;
    this.subscribers = new Set();
    this.client = null;
  }

  // fn(event) with event = { channel, payload } where payload is the parsed JSON.
  subscribe(fn) {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  async start() {
    this.client = new Client(this.connection);
    this.client.on('notification', (msg) => this.dispatch(msg));
    await this.client.connect();
    for (const channel of CHANNELS) {
      await this.client.query(`LISTEN ${channel}`);
    }
  }

  dispatch(msg) {
    let payload;
    try {
      payload = JSON.parse(msg.payload);
    } catch (err) {
      payload = { raw: msg.payload, error: err.message };
    }
    const event = { channel: msg.channel, payload };
    for (const fn of this.subscribers) {
      fn(event);
    }
  }

  async stop() {
    if (this.client) {
      await this.client.end();
      this.client = null;
    }
  }
}

module.exports = { QuotaEvents, CHANNELS };

if (require.main === module) {
  // node quota-events.js  (connection from the PG* environment variables)
  const events = new QuotaEvents({});
  events.subscribe((e) => console.log(JSON.stringify(e)));
  events.start().then(
    () => console.error(`listening on ${CHANNELS.join(', ')}`),
    (err) => {
      console.error(err.message);
      process.exit(1);
    },
  );
  process.on('SIGINT', () => events.stop().then(() => process.exit(0)));
}
