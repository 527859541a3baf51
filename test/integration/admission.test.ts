// Rate limit, bulkhead and breaker run before a pool slot is taken: a call they refuse gets its typed
// error at once, and neither takes a pool slot, nor waits in the pool's queue, nor opens a connection
// (each target is reached through its own FaultProxy, whose counters show every connection attempt).
// In process, against a real PostgreSQL, pg patched by an instrumentation created before pg loads.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  isBulkheadRejectedError,
  isCircuitOpenError,
  isRateLimitedError,
  PgResilienceInstrumentation,
} from '../../src/index.ts';
import type { DeepPartial, ResilienceSettings } from '../../src/index.ts';
// Static: fault-proxy.ts only imports pg's types, so it does not load pg (the instrumentation must
// exist before pg loads). The proxies must exist before the instrumentation: their ports name the
// targets of the configuration below.
import { FaultProxy } from '../support/fault-proxy.ts';
import { startRelay } from '../support/relay.ts';
import type { TestServer } from '../support/postgres.ts';

const DATABASE = 'app';
const relay = await startRelay();
const startProxy = () => FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
// One proxy, hence one target (its own breaker, rate limiter and bulkhead), per test.
const proxies = {
  rateLimit: await startProxy(),
  breaker: await startProxy(),
  standalone: await startProxy(),
  cursor: await startProxy(),
  bulkhead: await startProxy(),
};
const targetOf = (p: FaultProxy): string => `${p.host}:${p.port}/${DATABASE}`;

// The admission settings apply to the proxies' targets only. Not globally: the harness's own
// connections (server start-up polls, CREATE DATABASE) are pg clients too, and a 2-call burst with a
// 3-failure breaker that stays open for a minute would refuse them (startServer() fails).
const ADMISSION: DeepPartial<ResilienceSettings> = {
  rateLimit: { enabled: true, strategy: 'drop', ratePerMinute: 60, burst: 2 },
  circuitBreaker: { consecutiveFailures: 3, halfOpenAfterMs: 60_000 },
  recovery: { enabled: false },
  retry: { enabled: false }, // one attempt per call: 3 failed calls are 3 breaker failures
};
// The breaker tests make more than 2 calls a second: no rate limit there, or it would refuse first.
const NO_RATE_LIMIT: DeepPartial<ResilienceSettings> = { ...ADMISSION, rateLimit: { enabled: false } };

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  targets: {
    [targetOf(proxies.rateLimit)]: ADMISSION,
    [targetOf(proxies.breaker)]: NO_RATE_LIMIT,
    [targetOf(proxies.standalone)]: NO_RATE_LIMIT,
    [targetOf(proxies.cursor)]: NO_RATE_LIMIT,
    [targetOf(proxies.bulkhead)]: { ...NO_RATE_LIMIT, bulkhead: { maxConcurrent: 1, maxQueue: 0 } },
  },
});
const { startServer } = await import('../support/postgres.ts');
const requirePg = createRequire(import.meta.url);
const pg = requirePg('pg') as typeof import('pg');
const Cursor = requirePg('pg-cursor') as new (text: string) => import('pg').Submittable & {
  read(n: number): Promise<unknown[]>;
  close(): Promise<void>;
};

const T = { timeout: 20_000 };

/** A refusal is "at once" when it comes back within this many ms (no connect, no wait). */
const AT_ONCE_MS = 50;

/** Polls `cond` every 10 ms until it holds; fails naming `what` after `timeoutMs`. */
async function until(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await sleep(10);
  }
}

/** The rejection of `p` (fails if it resolves) and how long it took. */
async function rejection(p: PromiseLike<unknown>): Promise<{ error: unknown; ms: number }> {
  const t0 = performance.now();
  try {
    await p;
  } catch (error) {
    return { error, ms: performance.now() - t0 };
  }
  assert.fail('expected a rejection');
}

/** Asserts a CircuitOpenError for `target`. */
function assertCircuitOpen(error: unknown, target: string): void {
  assert.ok(isCircuitOpenError(error), `a CircuitOpenError, got ${String(error)}`);
  assert.ok(
    error.message.startsWith(`Circuit breaker for ${target} is open: the call was not attempted`),
    error.message,
  );
  assert.equal(error.target, target);
}

describe('rate limit, bulkhead and breaker run before a pool slot is taken', { timeout: 60_000 }, () => {
  let server: TestServer;
  const pools: import('pg').Pool[] = [];

  const poolVia = (proxy: FaultProxy, max: number): import('pg').Pool => {
    const pool = new pg.Pool({ connectionString: proxy.connectionString(server), max });
    pools.push(pool);
    return pool;
  };

  /**
   * Opens the breaker of `proxy`'s target the way an outage does: the proxy refuses connections and
   * three pool.query calls fail with ECONNREFUSED. Then the proxy listens again, so that from now on
   * any connection attempt would show in `proxy.stats.accepted`.
   */
  async function openBreaker(proxy: FaultProxy, pool: import('pg').Pool): Promise<void> {
    await proxy.refuse(true); // also resets the open connections: the pool evicts its idle ones
    await until('the pool has evicted its reset clients', () => pool.totalCount === 0);
    for (let i = 0; i < 3; i++) {
      await assert.rejects(pool.query('SELECT 1'), { code: 'ECONNREFUSED' });
    }
    await proxy.refuse(false);
    assert.equal(instrumentation.policies.forTarget(targetOf(proxy)).circuitState, 'open');
    proxy.resetStats();
  }

  before(async () => {
    server = await startServer({ database: DATABASE });
    relay.to(server.port);
  });

  after(async () => {
    for (const pool of pools) await pool.end().catch(() => {});
    for (const proxy of Object.values(proxies)) await proxy.close();
    await relay.close();
    await server?.close();
    instrumentation.disable();
  });

  // Fails if: the limiter's wait timer does not hold the process (it exits with code 13, "unsettled
  // top-level await", and the second query never runs) or the wait was skipped (under ~1 s).
  it('a call waiting for a permit holds the process until it runs (nothing else alive)', T, () => {
    const started = Date.now();
    const run = spawnSync(
      process.execPath,
      [
        '--disable-warning=ExperimentalWarning',
        '--import',
        new URL('./fixtures/register-src.ts', import.meta.url).pathname,
        new URL('./fixtures/rate-limited-exit-child.ts', import.meta.url).pathname,
      ],
      {
        encoding: 'utf8',
        timeout: 15_000,
        env: {
          ...process.env,
          EXIT_PG: JSON.stringify(server.clientConfig()),
          PG_RESILIENCE_RATE_LIMIT: '60',
          PG_RESILIENCE_RATE_LIMIT_BURST: '1',
        },
      },
    );
    const ms = Date.now() - started;
    assert.equal(run.status, 0, `exit code: ${run.stdout}${run.stderr}`);
    assert.match(run.stdout, /rows \[\{"n":1\},\{"n":2\}\]/);
    assert.ok(ms >= 900, `the second query waited for its permit (${ms} ms)`);
  });

  // Fails if: the burst does not admit two calls, the third is not refused at once with a
  // RateLimitedError naming the target, or the refused call reached pg-pool (it would take the idle
  // client: idleCount 0 right after the call; or queue: waitingCount 1; or connect: accepted grows).
  it('a call refused by the rate limit holds no pool slot and opens no connection', T, async () => {
    const proxy = proxies.rateLimit;
    const target = targetOf(proxy);
    const pool = poolVia(proxy, 1);
    proxy.resetStats();
    assert.equal((await pool.query('SELECT 1 AS n')).rows[0].n, 1);
    assert.equal((await pool.query('SELECT 2 AS n')).rows[0].n, 2);
    assert.equal(proxy.stats.accepted, 1, 'both ran on the one pooled connection');
    assert.equal(pool.idleCount, 1);

    const third = pool.query('SELECT 3 AS n');
    // Synchronously, before anything else runs: had the call reached pg-pool, it would already have
    // checked the idle client out.
    assert.equal(pool.idleCount, 1, 'the idle client was not taken');
    assert.equal(pool.waitingCount, 0, 'nothing waits in the pool');
    const { error, ms } = await rejection(third);
    assert.ok(isRateLimitedError(error), `a RateLimitedError, got ${String(error)}`);
    assert.match(
      error.message,
      new RegExp(`^Rate limit for ${target.replace(/\./g, '\\.')} reached \\(drop\\)`),
    );
    assert.equal(error.reason, 'drop');
    assert.ok(ms < AT_ONCE_MS, `refused in ${ms.toFixed(1)} ms`);
    assert.equal(proxy.stats.accepted, 1, 'no extra connection');
    assert.ok(pool.totalCount <= 1);
    assert.equal(pool.idleCount, 1);
    assert.equal(pool.waitingCount, 0);
    // pool.connect() is refused the same way, without a client.
    const connect = rejection(pool.connect());
    assert.equal(pool.idleCount, 1);
    assert.ok(isRateLimitedError((await connect).error));
    assert.equal(proxy.stats.accepted, 1);
  });

  // Fails if: the failures do not open the breaker after 3, a call made while it is open is not
  // refused at once with a CircuitOpenError naming the target, or that call (pool.query or
  // pool.connect) reaches pg-pool: a connection attempt (accepted grows: the proxy listens again), a
  // pool slot (totalCount 1 right after the call) or a queue entry (waitingCount 1).
  it('an open breaker refuses pool.query and pool.connect before the pool', T, async () => {
    const proxy = proxies.breaker;
    const target = targetOf(proxy);
    const pool = poolVia(proxy, 1);
    assert.equal((await pool.query('SELECT 1 AS n')).rows[0].n, 1);
    await openBreaker(proxy, pool);
    assert.equal(pool.totalCount, 0, 'the refused connections left nothing in the pool');

    const query = pool.query('SELECT 1');
    assert.equal(pool.totalCount, 0, 'no client is being created for it');
    assert.equal(pool.waitingCount, 0);
    const q = await rejection(query);
    assertCircuitOpen(q.error, target);
    assert.ok(q.ms < AT_ONCE_MS, `refused in ${q.ms.toFixed(1)} ms`);

    const connect = pool.connect();
    assert.equal(pool.totalCount, 0, 'no client is being created for it');
    assert.equal(pool.waitingCount, 0);
    const c = await rejection(connect);
    assertCircuitOpen(c.error, target);
    assert.ok(c.ms < AT_ONCE_MS, `refused in ${c.ms.toFixed(1)} ms`);

    assert.equal(proxy.stats.accepted, 0, 'no connection attempt reached the proxy');
    assert.equal(pool.totalCount, 0);
    assert.equal(pool.waitingCount, 0);
  });

  // Fails if: a standalone Client's connect() is attempted (accepted grows) or rejects with anything
  // but the CircuitOpenError, or a callback (pool.query, pool.connect, client.connect) is not called,
  // is called twice, or gets something else than the typed error as its first argument.
  it('a standalone connect and the callback forms get the CircuitOpenError, once', T, async () => {
    const proxy = proxies.standalone;
    const target = targetOf(proxy);
    const pool = poolVia(proxy, 1);
    await openBreaker(proxy, pool);

    const client = new pg.Client({ connectionString: proxy.connectionString(server) });
    const c = await rejection(client.connect());
    assertCircuitOpen(c.error, target);
    assert.ok(c.ms < AT_ONCE_MS, `refused in ${c.ms.toFixed(1)} ms`);

    /** Runs a callback-style call; returns every call of its callback, after they had time to come. */
    const callbacks = async (start: (cb: (...args: unknown[]) => void) => void): Promise<unknown[][]> => {
      const calls: unknown[][] = [];
      await new Promise<void>((resolve) => {
        start((...args) => {
          calls.push(args);
          resolve();
        });
      });
      await sleep(50); // room for a second call, which must not come
      return calls;
    };

    const forms: Record<string, (cb: (...args: unknown[]) => void) => void> = {
      'pool.query(text, cb)': (cb) => pool.query('SELECT 1', cb),
      'pool.query(text, values, cb)': (cb) => pool.query('SELECT $1::int AS n', [1], cb),
      'pool.connect(cb)': (cb) => pool.connect(cb),
      'client.connect(cb)': (cb) =>
        new pg.Client({ connectionString: proxy.connectionString(server) }).connect(cb),
    };
    for (const [form, start] of Object.entries(forms)) {
      const calls = await callbacks(start);
      assert.equal(calls.length, 1, `${form}: the callback ran once`);
      assertCircuitOpen(calls[0]![0], target);
      assert.equal(calls[0]![1], undefined, `${form}: no result, no client`);
    }
    assert.equal(proxy.stats.accepted, 0, 'no connection attempt reached the proxy');
    assert.equal(pool.totalCount, 0);
    assert.equal(pool.waitingCount, 0);
  });

  // Fails if: client.query(cursor) does not return the cursor itself, the cursor's read() does not
  // reject with the CircuitOpenError, or its statement was sent anyway (bytes went up to the server).
  it(
    'a Submittable (pg-cursor) on a standalone client gets the CircuitOpenError through read()',
    T,
    async () => {
      const proxy = proxies.cursor;
      const target = targetOf(proxy);
      const client = new pg.Client({ connectionString: proxy.connectionString(server) });
      client.on('error', () => {});
      await client.connect();
      try {
        // Open the breaker with the client's own statements: SQLSTATE class 53 (insufficient resources)
        // counts as a failure of the server, and the connection stays up.
        for (let i = 0; i < 3; i++) {
          await assert.rejects(
            client.query(`DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '53200'; END $$`),
            { code: '53200' },
          );
        }
        assert.equal(instrumentation.policies.forTarget(target).circuitState, 'open');
        const bytesUp = proxy.stats.bytesUp;

        const cursor = new Cursor('SELECT 1 AS n');
        assert.equal(client.query(cursor), cursor, 'client.query returns the cursor itself');
        const r = await rejection(cursor.read(1));
        assertCircuitOpen(r.error, target);
        assert.ok(r.ms < AT_ONCE_MS, `refused in ${r.ms.toFixed(1)} ms`);
        // A plain statement on the same client is refused too.
        assertCircuitOpen((await rejection(client.query('SELECT 1'))).error, target);
        assert.equal(proxy.stats.bytesUp, bytesUp, 'nothing was sent to the server');
      } finally {
        await client.end();
      }
    },
  );

  // Fails if: the second concurrent call is not refused at once with a BulkheadRejectedError naming
  // the target, or it reached the pool (a second connection: totalCount 2, accepted 2), or the
  // bulkhead keeps refusing once the first call has finished.
  it('a call refused by the bulkhead holds no pool slot and opens no connection', T, async () => {
    const proxy = proxies.bulkhead;
    const target = targetOf(proxy);
    const pool = poolVia(proxy, 2);
    proxy.resetStats();
    const slow = pool.query('SELECT pg_sleep(0.3) AS slept');
    const second = pool.query('SELECT 1');
    assert.equal(pool.totalCount, 1, 'only the first call is connecting');
    const b = await rejection(second);
    assert.ok(isBulkheadRejectedError(b.error), `a BulkheadRejectedError, got ${String(b.error)}`);
    assert.ok(
      b.error.message.startsWith(`Bulkhead for ${target} is full (1 running, 0 queued)`),
      b.error.message,
    );
    assert.ok(b.ms < AT_ONCE_MS, `refused in ${b.ms.toFixed(1)} ms`);
    assert.equal(pool.totalCount, 1);
    assert.equal(pool.waitingCount, 0);
    await slow;
    assert.equal(proxy.stats.accepted, 1, 'one connection in all');
    assert.equal((await pool.query('SELECT 2 AS n')).rows[0].n, 2, 'admitted again once the slot is free');
  });
});
