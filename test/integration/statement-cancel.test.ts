// A statement that hits the package's timeout (timeout.queryMs) is cancelled on the server: against a real
// PostgreSQL (and the fault proxy for a slow or blackholed network). Each test asserts what the app sees
// (rows, the error and its outcome), what the server holds (backends still running the statement, rows
// written) and what the pool holds afterwards.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { StatementCancelEvent } from '../../src/policy/events.ts';
import { FaultProxy, type FaultProxy as FaultProxyType } from '../support/fault-proxy.ts';
import type { TestServer } from '../support/postgres.ts';
import { startRelay } from '../support/relay.ts';

const TIMEOUT_MS = 200;
const GRACE_MS = 1000;

// The app's connections go through proxies (one left alone, one for network faults) to a relay that
// forwards to the server once it runs: the timeout is set for the proxies' targets only, so the
// harness's own connections to the server are not timed out.
const relay = await startRelay();
const direct = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const faulty = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const DATABASE = 'app';
const targetOf = (p: FaultProxyType): string => `${p.host}:${p.port}/${DATABASE}`;
const timed = { timeout: { queryMs: TIMEOUT_MS, cancelGraceMs: GRACE_MS } };

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  retry: { maxAttempts: 1 },
  circuitBreaker: { enabled: false },
  recovery: { enabled: false },
  targets: { [targetOf(direct)]: timed, [targetOf(faulty)]: timed },
});
const { startServer } = await import('../support/postgres.ts');
// PG_RESILIENCE_TEST_PG_DIR: against the pg installed there (test/integration/pg-versions.test.ts).
const requirePg = createRequire(
  process.env.PG_RESILIENCE_TEST_PG_DIR
    ? `${process.env.PG_RESILIENCE_TEST_PG_DIR}/package.json`
    : import.meta.url,
);
const pg = requirePg('pg') as typeof import('pg');
const { classifyError, isOperationTimeoutError } = await import('../../src/index.ts');

const T = { timeout: 30_000 };

describe(
  'statement timeouts cancel the statement on the server (real PostgreSQL)',
  { timeout: 120_000 },
  () => {
    let server: TestServer;
    const proxy = faulty;
    let pool: import('pg').Pool;
    let proxied: import('pg').Pool;
    let cancels: StatementCancelEvent[];

    /** Backends of the server running exactly this statement now. */
    const running = async (sql: string): Promise<number> =>
      Number(
        (
          await server.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query = $1",
            [sql],
          )
        ).rows[0].n,
      );

    /** Polls (bounded) until no backend runs `sql`; returns how long that took, in ms. */
    const goneWithin = async (sql: string, limitMs: number): Promise<number> => {
      const started = Date.now();
      while (Date.now() - started < limitMs) {
        if ((await running(sql)) === 0) return Date.now() - started;
        await sleep(20);
      }
      return Number.POSITIVE_INFINITY;
    };

    const rejection = async (p: Promise<unknown>): Promise<Error & Record<string, unknown>> => {
      try {
        await p;
      } catch (error) {
        return error as Error & Record<string, unknown>;
      }
      assert.fail('expected the statement to fail');
    };

    before(async () => {
      server = await startServer({ database: DATABASE });
      relay.to(server.port);
      await server.query('CREATE TABLE cancelled_writes (key text)');
      pool = new pg.Pool({ ...direct.clientConfig(server), max: 2 });
      proxied = new pg.Pool({ ...faulty.clientConfig(server), max: 1 });
      for (const p of [direct, faulty]) {
        instrumentation.policies.forTarget(targetOf(p)).onStatementCancel((e) => cancels.push(e));
      }
    });

    beforeEach(() => {
      cancels = [];
      proxy.clear();
    });

    after(async () => {
      await pool?.end();
      await proxied?.end();
      await direct.close();
      await faulty.close();
      await relay.close();
      await server?.close();
    });

    it(
      'pool.query: a 30 s pg_sleep is cancelled at the timeout; no backend runs it 1 s later',
      T,
      async () => {
        const sql = 'SELECT pg_sleep(30)';
        const started = Date.now();
        const error = await rejection(pool.query(sql));
        const tookMs = Date.now() - started;
        assert.ok(isOperationTimeoutError(error), String(error));
        assert.equal(error.outcome, 'not_run');
        assert.equal(error.cancelled, true);
        assert.match(
          error.message,
          /timed out after 200 ms; it was cancelled on the server: the statement did not run/,
        );
        assert.equal((error.cause as { code?: string }).code, '57014');
        assert.ok(tookMs < TIMEOUT_MS + GRACE_MS, `answered in ${tookMs} ms`);
        assert.ok((await goneWithin(sql, 1000)) < 1000, 'a backend still runs the statement');
        assert.deepEqual(
          cancels.map((e) => e.result),
          ['cancelled'],
        );
        // The classification lets the retry rules send it again: the server rejected it.
        assert.equal(classifyError(error).reachedServer, 'rejected');
        // The pool is not stuck: its connection was discarded (pg-pool drops a client released with an
        // error) or is idle, and the next statement runs.
        assert.equal(pool.totalCount, pool.idleCount);
        assert.equal((await pool.query('SELECT 1 AS n')).rows[0].n, 1);
      },
    );

    it('a cancelled INSERT … SELECT pg_sleep wrote nothing and is reported as not run', T, async () => {
      const error = await rejection(
        pool.query("INSERT INTO cancelled_writes (key) SELECT 'cancelled' FROM pg_sleep(5)"),
      );
      assert.ok(isOperationTimeoutError(error));
      assert.equal(error.outcome, 'not_run');
      const rows = await server.query(
        "SELECT count(*)::int AS n FROM cancelled_writes WHERE key = 'cancelled'",
      );
      assert.equal(rows.rows[0].n, 0);
      await sleep(300); // had it not been cancelled, it would still be running: still nothing
      assert.equal(
        await running("INSERT INTO cancelled_writes (key) SELECT 'cancelled' FROM pg_sleep(5)"),
        0,
      );
    });

    it('a checked-out client: cancelled, then the same client runs the next statement', T, async () => {
      const client = await pool.connect();
      try {
        const sql = 'SELECT pg_sleep(20)';
        const error = await rejection(client.query(sql));
        assert.ok(isOperationTimeoutError(error));
        assert.equal(error.outcome, 'not_run');
        assert.equal(await running(sql), 0, 'the timeout error came before the server stopped the statement');
        assert.equal((await client.query('SELECT 2 AS n')).rows[0].n, 2);
      } finally {
        client.release();
      }
      assert.equal((await pool.query('SELECT 3 AS n')).rows[0].n, 3);
    });

    it('a callback-form client.query gets the timeout error once, after the cancel', T, async () => {
      const client = await pool.connect();
      try {
        const calls: unknown[][] = [];
        await new Promise<void>((resolve) => {
          client.query('SELECT pg_sleep(20)', (...args: unknown[]) => {
            calls.push(args);
            resolve();
          });
        });
        await sleep(100);
        assert.equal(calls.length, 1);
        const error = calls[0]![0] as Record<string, unknown>;
        assert.ok(isOperationTimeoutError(error));
        assert.equal(error.outcome, 'not_run');
      } finally {
        client.release();
      }
    });

    it(
      'a statement queued behind the timed-out one on its client is taken off the queue, never sent',
      T,
      async () => {
        const client = await pool.connect();
        try {
          const first = rejection(client.query('SELECT pg_sleep(20)'));
          const queued = rejection(client.query("INSERT INTO cancelled_writes (key) VALUES ('queued')"));
          const [a, b] = await Promise.all([first, queued]);
          assert.ok(isOperationTimeoutError(a) && isOperationTimeoutError(b));
          assert.equal(a.outcome, 'not_run');
          assert.equal(b.outcome, 'not_run');
          assert.match(b.message, /still queued on its client and was never sent/);
          assert.equal((await client.query('SELECT 4 AS n')).rows[0].n, 4);
        } finally {
          client.release();
        }
        const rows = await server.query(
          "SELECT count(*)::int AS n FROM cancelled_writes WHERE key = 'queued'",
        );
        assert.equal(rows.rows[0].n, 0);
        assert.deepEqual(
          cancels.map((e) => e.result),
          ['cancelled', 'cancelled'],
        );
      },
    );

    it('a statement that finishes before the cancel lands returns its result', T, async () => {
      // 300 ms each way: the statement's answer is on its way back when the timeout fires at 200 ms, and
      // the cancel reaches the server after the statement finished (an idle backend ignores it).
      await proxied.query('SELECT 1'); // a connection before the latency
      proxy.setLatency(300);
      const result = await proxied.query('SELECT 42 AS n');
      assert.equal(result.rows[0].n, 42);
      assert.deepEqual(
        cancels.map((e) => e.result),
        ['completed'],
      );
      proxy.setLatency(0);
      // The connection went back to the pool and still works.
      assert.equal(proxied.totalCount, 1);
      assert.equal((await proxied.query('SELECT 5 AS n')).rows[0].n, 5);
    });

    it(
      'a blackholed connection: no answer within the grace, outcome unknown, the connection is closed',
      T,
      async () => {
        await proxied.query('SELECT 1');
        assert.equal(proxied.totalCount, 1);
        proxy.blackhole(true);
        const started = Date.now();
        const error = await rejection(proxied.query('SELECT 6 AS n'));
        const tookMs = Date.now() - started;
        assert.ok(isOperationTimeoutError(error), String(error));
        assert.equal(error.outcome, 'unknown');
        assert.equal(error.cancelled, false);
        assert.match(error.message, /did not answer its cancel within 1000 ms/);
        assert.equal(classifyError(error).reachedServer, 'unknown');
        assert.ok(
          tookMs >= TIMEOUT_MS + GRACE_MS - 50 && tookMs < TIMEOUT_MS + GRACE_MS + 1000,
          `${tookMs} ms`,
        );
        assert.deepEqual(
          cancels.map((e) => e.result),
          ['no_answer'],
        );
        await sleep(50);
        assert.equal(proxied.totalCount, 0, 'the connection was not destroyed');
        proxy.blackhole(false);
        assert.equal((await proxied.query('SELECT 7 AS n')).rows[0].n, 7);
      },
    );

    it('a blackholed checked-out client: its release() discards it', T, async () => {
      const client = await proxied.connect();
      client.on('error', () => {}); // the app's own listener, as a careful app has
      proxy.blackhole(true);
      const error = await rejection(client.query('SELECT 8 AS n'));
      assert.ok(isOperationTimeoutError(error));
      assert.equal(error.outcome, 'unknown');
      client.release();
      assert.equal(proxied.totalCount, 0);
      proxy.blackhole(false);
      assert.equal((await proxied.query('SELECT 9 AS n')).rows[0].n, 9);
    });
  },
);
