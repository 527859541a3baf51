// The retry budget spares a struggling server, not the network: a connect the network reset draws
// nothing from it, a statement's retry does. Against a real PostgreSQL through the fault proxy, with a
// budget of one retry per window, in process (pg patched by an instrumentation created before pg loads).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, beforeEach, describe, it } from 'node:test';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { RetryEvent, RetrySuppressedEvent } from '../../src/policy/events.ts';
// Static: fault-proxy.ts and relay.ts load no pg (the proxy's port names the target configured below).
import { FaultProxy } from '../support/fault-proxy.ts';
import { startRelay } from '../support/relay.ts';
import type { TestServer } from '../support/postgres.ts';

const DATABASE = 'app';
const relay = await startRelay();
const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const target = `${proxy.host}:${proxy.port}/${DATABASE}`;

const instrumentation = new PgResilienceInstrumentation({
  targets: {
    [target]: {
      retry: {
        maxAttempts: 5,
        initialDelayMs: 5,
        maxDelayMs: 20,
        // One retry per minute, whatever the traffic.
        budget: { enabled: true, ratio: 0, minRetries: 1, windowMs: 60_000 },
      },
      circuitBreaker: { enabled: false },
      recovery: { enabled: false },
    },
  },
});
const { startServer } = await import('../support/postgres.ts');
const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const T = { timeout: 20_000 };

describe('retry budget (real PostgreSQL, fault proxy)', { timeout: 60_000 }, () => {
  let server: TestServer;
  let retries: RetryEvent[];
  let suppressed: RetrySuppressedEvent[];

  before(async () => {
    server = await startServer({ database: DATABASE });
    relay.to(server.port);
    const policy = instrumentation.policies.forTarget(target);
    policy.onRetry((e) => retries.push(e));
    policy.onRetrySuppressed((e) => suppressed.push(e));
  });

  beforeEach(() => {
    retries = [];
    suppressed = [];
    proxy.clear();
  });

  after(async () => {
    await proxy.close();
    await relay.close();
    await server?.close();
    instrumentation.disable();
  });

  it(
    'reset connects draw nothing: three of them, then the one budgeted retry still serves a cut read',
    T,
    async () => {
      const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 1 });
      try {
        proxy.resetStats();
        proxy.resetNextConnections(3);
        assert.equal(
          (await pool.query('SELECT 1 AS one')).rows[0].one,
          1,
          'three checkouts reset, the fourth served',
        );
        assert.equal(proxy.stats.resetOnAccept, 3);
        assert.equal(retries.length, 3);
        assert.equal(suppressed.length, 0);

        // A standalone client's connect, reset twice: retried on the same Client, still free.
        proxy.resetNextConnections(2);
        const client = new pg.Client(proxy.clientConfig(server));
        await client.connect();
        assert.equal((await client.query('SELECT 2 AS two')).rows[0].two, 2);
        await client.end();
        assert.equal(retries.length, 5);

        // A read cut mid-flight: its retry is the one the budget allows.
        proxy.cutOnMessage({ match: /budget_read/, when: 'after', mode: 'rst', limit: 1 });
        assert.equal((await pool.query('SELECT 3 AS budget_read')).rows[0].budget_read, 3);
        assert.equal(retries.length, 6);

        // The budget is now spent: the next cut read is refused with 'budget' (and the caller gets pg's error).
        proxy.cutOnMessage({ match: /budget_spent/, when: 'after', mode: 'rst', limit: 1 });
        await assert.rejects(pool.query('SELECT 4 AS budget_spent'), { code: 'ECONNRESET' });
        assert.deepEqual(
          suppressed.map((e) => e.reason),
          ['budget'],
        );

        // Connects still go through with the budget spent.
        proxy.resetNextConnections(2);
        assert.equal((await pool.query('SELECT 5 AS five')).rows[0].five, 5);
        assert.equal(suppressed.length, 1);
      } finally {
        await pool.end();
      }
    },
  );
});
