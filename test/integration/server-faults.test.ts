// The app survives the server's own faults, and the pool recovers. In process, against a real
// PostgreSQL: a pg.Pool with NO 'error' listener (neither on the pool nor on its clients: the package
// must absorb those errors), under a background load of concurrent reads, while the server restarts,
// its backends are terminated, it runs out of connection slots, or the network swallows every byte.
// After each fault: the process is still up (no uncaught exception), reads succeed again within a
// deadline, and the pool holds its full complement of connections again (as the server sees them).
// Last, recovery without traffic: the breaker opens, and background probes close it by themselves once
// the server is back, with no app call in between.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClientErrorAbsorbedEvent } from '../../src/index.ts';
import { isCircuitOpenError, PgResilienceInstrumentation } from '../../src/index.ts';
import type { OperationEvent } from '../../src/policy/types.ts';
import type { RecoveryAttemptEvent, RetryEvent } from '../../src/policy/events.ts';
// Static: fault-proxy.ts only imports pg's types, so it does not load pg (the instrumentation must
// exist before pg loads). Its proxies must exist before the instrumentation: their ports name the
// targets of the per-target configuration below.
import { FaultProxy } from '../support/fault-proxy.ts';
import { startRelay } from '../support/relay.ts';
import type { TestServer } from '../support/postgres.ts';

const relay = await startRelay();
const DATABASE = 'app';
// Scenario d's proxies: one whose pool uses pg's query_timeout, one with the package's timeout.queryMs.
const pgTimeoutProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const ownTimeoutProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const targetOf = (p: FaultProxy): string => `${p.host}:${p.port}/${DATABASE}`;

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  retry: { initialDelayMs: 10, maxDelayMs: 100 },
  circuitBreaker: { halfOpenAfterMs: 500 },
  recovery: { intervalMs: 200 },
  targets: {
    // connectMs bounds the recovery probe's connect: with the default (10 s), a probe that starts
    // inside the blackhole holds the breaker's only half-open slot for 10 s after the network is back.
    [targetOf(pgTimeoutProxy)]: { timeout: { connectMs: 1000 } },
    // The package's own per-attempt statement timeout.
    [targetOf(ownTimeoutProxy)]: { timeout: { connectMs: 1000, queryMs: 1000 } },
  },
});
const { startServer } = await import('../support/postgres.ts');
const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

// An uncaught exception would kill the test file's process; recorded here (which also keeps the
// process alive to report it) and asserted empty after every scenario.
const uncaught: unknown[] = [];
process.on('uncaughtException', (e) => uncaught.push(e));
process.on('unhandledRejection', (e) => uncaught.push(e));

const absorbed: ClientErrorAbsorbedEvent[] = [];
instrumentation.onClientErrorAbsorbed((e) => absorbed.push(e));

const T = { timeout: 30_000 };
const POOL_MAX = 5;
const WORKERS = 8;

/** Polls `cond` until it holds; fails naming `what` after `timeoutMs`. Returns the time it took. */
async function until(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  everyMs = 25,
): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await cond()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) assert.fail(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await sleep(everyMs);
  }
}

const label = (e: unknown): string =>
  isCircuitOpenError(e)
    ? 'CircuitOpen'
    : String((e as { code?: unknown }).code ?? (e as Error).message ?? e).slice(0, 60);

/** Background reads: `workers` loops of pool.query, counting what the app sees. */
class Load {
  ok = 0;
  failed = 0;
  readonly errors = new Map<string, number>();
  /** Operations not settled yet: id → start time. */
  readonly pending = new Map<number, number>();
  /** Longest time any operation took to settle, in ms. */
  longestMs = 0;
  #next = 0;
  #running = true;
  readonly #workers: Promise<void>[];

  constructor(pool: import('pg').Pool, workers: number, sql: (worker: number) => string = () => 'SELECT 1') {
    this.#workers = Array.from({ length: workers }, (_, i) => this.#loop(pool, sql(i)));
  }

  async #loop(pool: import('pg').Pool, text: string): Promise<void> {
    while (this.#running) {
      const id = this.#next++;
      const started = Date.now();
      this.pending.set(id, started);
      try {
        await pool.query(text);
        this.ok++;
      } catch (e) {
        this.failed++;
        this.errors.set(label(e), (this.errors.get(label(e)) ?? 0) + 1);
        await sleep(20); // a refused call returns at once: do not spin
      } finally {
        this.pending.delete(id);
        this.longestMs = Math.max(this.longestMs, Date.now() - started);
      }
    }
  }

  /** Stops the loops; resolves when every operation has settled. */
  async stop(): Promise<void> {
    this.#running = false;
    await Promise.all(this.#workers);
  }

  summary(): string {
    return `ok ${this.ok}, failed ${this.failed}, longest ${this.longestMs} ms, errors ${JSON.stringify(Object.fromEntries(this.errors))}`;
  }
}

describe('the app survives the server’s own faults, and the pool recovers', { timeout: 120_000 }, () => {
  let server: TestServer;
  let target: string;
  const retries: RetryEvent[] = [];

  /** Admin statements on the `postgres` database: its own target, so the suite database's breaker
   * (open during some faults) never refuses them. */
  async function admin<R extends import('pg').QueryResultRow = any>(
    sql: string,
    params?: unknown[],
  ): Promise<import('pg').QueryResult<R>> {
    const c = new pg.Client(
      server.clientConfig({
        database: 'postgres',
        application_name: 'faults-admin',
        connectionTimeoutMillis: 5000,
      }),
    );
    c.on('error', () => {});
    await c.connect();
    try {
      return await c.query<R>(sql, params);
    } finally {
      await c.end().catch(() => {});
    }
  }

  /** Connections the server holds (set up and not exiting) for one application_name. */
  const backends = async (app: string): Promise<number> =>
    (
      await admin<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE application_name = $1 AND backend_type = 'client backend' AND state IN ('idle', 'active')`,
        [app],
      )
    ).rows[0]!.n;

  /** The server's connection string, with another user. */
  const url = (opts: { user?: string; password?: string } = {}): string => {
    const u = new URL(server.connectionString);
    if (opts.user !== undefined) u.username = opts.user;
    if (opts.password !== undefined) u.password = opts.password;
    return u.toString();
  };
  const proxyUrl = (via: FaultProxy): string => via.connectionString(server);

  // The credentials go in a connection string here; a `password` option is covered by the test at
  // the end (recovery for a pool given a `password` option).
  const newPool = (app: string, overrides: Partial<import('pg').PoolConfig> = {}): import('pg').Pool =>
    new pg.Pool({
      connectionString: url(),
      application_name: app,
      max: POOL_MAX,
      connectionTimeoutMillis: 2000,
      ...overrides,
    });

  /**
   * After a fault: reads succeed again (the load counts new successes), then the pool is full again,
   * as the server sees it (POOL_MAX connections of this pool, no more). Fails on a deadline.
   */
  async function assertRecovers(t: TestContext, load: Load, pool: import('pg').Pool, app: string) {
    const okAtEnd = load.ok;
    const poolState = () =>
      ` (pool: total ${pool.totalCount}, idle ${pool.idleCount}, waiting ${pool.waitingCount}; ${load.summary()})`;
    const readsBackMs = await until('reads succeed again', () => load.ok >= okAtEnd + 50, 10_000).catch(
      (e: unknown) => {
        throw new Error(String(e) + poolState());
      },
    );
    const refillMs = await until(
      `the pool holds ${POOL_MAX} connections again`,
      async () => pool.totalCount === POOL_MAX && (await backends(app)) === POOL_MAX,
      10_000,
      100,
    ).catch((e: unknown) => {
      throw new Error(String(e) + poolState());
    });
    t.diagnostic(`reads back after ${readsBackMs} ms, pool refilled after ${refillMs} ms more`);
  }

  const assertAlive = (): void => {
    assert.deepEqual(
      uncaught.map((e) => String(e)),
      [],
      'no uncaught exception or unhandled rejection',
    );
  };

  before(async () => {
    server = await startServer({ database: DATABASE, settings: { max_connections: '40' } });
    relay.to(server.port);
    target = `${server.host}:${server.port}/${server.database}`;
    instrumentation.policies.forTarget(target).onRetry((e) => retries.push(e));
    await server.query(`
      CREATE ROLE app_user LOGIN PASSWORD 'x';
      GRANT CONNECT, TEMPORARY ON DATABASE ${DATABASE} TO app_user;
      GRANT USAGE ON SCHEMA public TO app_user;
    `);
    await server.query('CREATE DATABASE other');
  });

  after(async () => {
    await pgTimeoutProxy.close();
    await ownTimeoutProxy.close();
    await relay.close();
    await server?.close();
    instrumentation.disable();
  });

  // Fails if: a dropped connection's 'error' escapes (uncaught: the pool has no 'error' listener), the
  // restart is not noticed at all (no retry event: the fault did not happen), reads do not come back
  // within 15 s of the server accepting connections again, or the pool stays short of connections.
  it('a. server restart mid-load', T, async (t) => {
    const pool = newPool('faults-a');
    const load = new Load(pool, WORKERS);
    try {
      await until('the pool is warm', () => load.ok >= 200 && pool.totalCount === POOL_MAX);
      const retriesBefore = retries.length;
      const okBefore = load.ok;
      await server.restart();
      assertAlive();
      await assertRecovers(t, load, pool, 'faults-a');
      assert.ok(retries.length > retriesBefore, 'the restart was felt (retries happened)');
      t.diagnostic(`during and after the restart: ok ${load.ok - okBefore}; ${load.summary()}`);
      t.diagnostic(
        `retries ${retries.length - retriesBefore}, breaker ${instrumentation.policies.forTarget(target).circuitState}`,
      );
    } finally {
      await load.stop();
      await pool.end();
    }
    assertAlive();
  });

  // Fails if: an idle client's 57P01 'error' is not absorbed (uncaught exception, or no
  // onClientErrorAbsorbed event for this target), a busy statement fails with anything but the
  // server's own 57P01 error (e.g. hangs past the deadline, or a crash), or the pool does not recover.
  it('b. terminated backends, idle and busy', T, async (t) => {
    const pool = newPool('faults-b');
    let load: Load | undefined;
    try {
      // Fill the pool, then keep 3 of its 5 connections busy in pg_sleep: the other 2 sit idle.
      await Promise.all(Array.from({ length: POOL_MAX }, () => pool.query('SELECT pg_sleep(0.05)')));
      assert.equal(pool.totalCount, POOL_MAX);
      const sleepers = Array.from({ length: 3 }, () =>
        pool.query('SELECT pg_sleep(5)').then(
          () => 'ok',
          (e: unknown) => label(e),
        ),
      );
      await until(
        'three statements are running',
        async () =>
          (
            await admin<{ n: number }>(
              `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'faults-b' AND state = 'active'`,
            )
          ).rows[0]!.n === 3,
      );
      assert.equal(pool.idleCount, 2, 'two connections idle, three busy');
      const absorbedBefore = absorbed.length;
      const terminated = await server.terminateBackends({ applicationName: 'faults-b' });
      assert.equal(terminated, POOL_MAX, 'every connection of the pool was terminated');
      // Busy statements: pg_sleep is not provably read-only, so the package does not re-run it after
      // its connection was lost: the app gets the server's own error, once per statement.
      assert.deepEqual(await Promise.all(sleepers), ['57P01', '57P01', '57P01']);
      // Idle clients: their 'error' (57P01) goes to the pool, which has no listener: absorbed.
      await until(
        'the idle clients’ errors are absorbed',
        () => absorbed.slice(absorbedBefore).filter((e) => e.errorType === '57P01').length >= 2,
        5_000,
      );
      for (const e of absorbed.slice(absorbedBefore)) {
        assert.deepEqual(e, { target, source: 'pool', errorType: '57P01' });
      }
      assertAlive();
      load = new Load(pool, WORKERS);
      await assertRecovers(t, load, pool, 'faults-b');
      t.diagnostic(`readers: ${load.summary()}`);
      t.diagnostic(`absorbed: ${JSON.stringify(absorbed.slice(absorbedBefore))}`);
    } finally {
      await load?.stop();
      await pool.end();
    }
    assertAlive();
  });

  // Fails if: the 53300 refusals never reach the package (no retry or failure with 53300: the fault
  // did not happen), anything escapes as an uncaught exception, or once the limit is lifted reads do
  // not come back / the pool does not refill.
  it('c. connection exhaustion (53300 for a role with a connection limit)', T, async (t) => {
    const pool = newPool('faults-c', { connectionString: url({ user: 'app_user', password: 'x' }) });
    const load = new Load(pool, WORKERS);
    const retriesBefore = retries.length;
    try {
      await until('the pool is warm', () => load.ok >= 200 && pool.totalCount === POOL_MAX);
      await admin('ALTER ROLE app_user CONNECTION LIMIT 1');
      // The limit binds new connections only: drop the pool's current ones.
      await admin(
        `SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = 'faults-c'`,
      );
      const okLimited = load.ok;
      const failedLimited = load.failed;
      await until(
        'new connections are refused with 53300',
        () =>
          (load.errors.get('53300') ?? 0) > 0 ||
          retries.slice(retriesBefore).some((e) => e.errorType === '53300'),
        10_000,
      );
      await sleep(500); // half a second of running short of connections
      assert.ok((await backends('faults-c')) <= 1, 'the server holds at most one connection of the role');
      t.diagnostic(
        `while limited: ok ${load.ok - okLimited}, failed ${load.failed - failedLimited}, ` +
          `53300 retries ${retries.slice(retriesBefore).filter((e) => e.errorType === '53300').length}, ` +
          `breaker ${instrumentation.policies.forTarget(target).circuitState}`,
      );
      assertAlive();
      await admin('ALTER ROLE app_user CONNECTION LIMIT -1');
      await assertRecovers(t, load, pool, 'faults-c');
      t.diagnostic(load.summary());
    } finally {
      await admin('ALTER ROLE app_user CONNECTION LIMIT -1');
      await load.stop();
      await pool.end();
    }
    assertAlive();
  });

  /**
   * Scenario d: a pool through `via`, under load; every byte is swallowed for 1.2 s, then traffic
   * flows again. Every operation started before the lift must settle, and reads must recover.
   */
  async function blackhole(
    t: TestContext,
    via: FaultProxy,
    app: string,
    options: Partial<import('pg').PoolConfig>,
  ) {
    const pool = newPool(app, {
      connectionString: proxyUrl(via),
      connectionTimeoutMillis: 500,
      ...options,
    });
    const policy = instrumentation.policies.forTarget(targetOf(via));
    let felt = 0;
    const subs = [policy.onRetry(() => felt++), policy.onTimeout(() => felt++)];
    const load = new Load(pool, WORKERS);
    try {
      await until('the pool is warm', () => load.ok >= 200 && pool.totalCount === POOL_MAX);
      const okBefore = load.ok;
      const failedBefore = load.failed;
      via.blackhole(true);
      await sleep(1200);
      const startedBeforeLift = [...load.pending.keys()];
      via.blackhole(false);
      t.diagnostic(`during the blackhole: ok ${load.ok - okBefore}, failed ${load.failed - failedBefore}`);
      const settledMs = await until(
        'every operation started before the lift has settled',
        () => startedBeforeLift.every((id) => !load.pending.has(id)),
        10_000,
      );
      t.diagnostic(`they settled ${settledMs} ms after the lift`);
      assert.ok(
        felt + load.failed - failedBefore > 0,
        'the blackhole was felt (timeouts, retries or failures)',
      );
      assertAlive();
      await assertRecovers(t, load, pool, app);
      t.diagnostic(load.summary());
    } finally {
      for (const s of subs) s.dispose();
      via.clear();
      await load.stop();
      // Clients stuck on a swallowed statement are never released: reset their connections, or
      // pool.end() would wait for them forever.
      via.resetOpenConnections();
      await pool.end();
    }
    assertAlive();
  }

  // Fails if: an operation started before or during the blackhole never settles (a hung promise: the
  // 'every operation settled' wait times out), or reads do not recover / the pool stays short after
  // the blackhole is lifted.
  it('d. blackhole for a second, with pg’s query_timeout', T, async (t) => {
    await blackhole(t, pgTimeoutProxy, 'faults-d1', { query_timeout: 1000 });
  });

  // The same with the package's own statement timeout (timeout.queryMs = 1000 for this target).
  // Fails if a timed-out Pool.query attempt keeps its client (src/instrumentation/pool-query.ts must
  // close the connection of an abandoned attempt): after the lift all 5 clients would stay checked
  // out forever and every read would fail with pg-pool's 'timeout exceeded when trying to connect'.
  it('d. blackhole for a second, with the package’s timeout.queryMs', T, async (t) => {
    await blackhole(t, ownTimeoutProxy, 'faults-d2', {});
  });

  /**
   * Scenario e for one pool: the server stops; calls open the breaker; then no traffic at all while
   * the server is down (probes fail) and after it is back (probes close the breaker).
   */
  async function recoveryWithoutTraffic(t: TestContext, pool: import('pg').Pool, poolTarget: string) {
    const policy = instrumentation.policies.forTarget(poolTarget);
    const attempts: RecoveryAttemptEvent[] = [];
    const operations: OperationEvent[] = [];
    const subs = [
      policy.onRecoveryAttempt((e) => attempts.push(e)),
      policy.onOperation((e) => operations.push(e)),
    ];
    try {
      await until('the breaker is closed', () => policy.circuitState === 'closed');
      assert.equal((await pool.query('SELECT 1 AS one')).rows[0].one, 1);
      await server.stop();
      let calls = 0;
      await until(
        'the breaker opens',
        async () => {
          calls++;
          await pool.query('SELECT 1').catch(() => {});
          return policy.circuitState !== 'closed';
        },
        15_000,
        0,
      );
      await until('the breaker is open', () => policy.circuitState === 'open', 2_000, 1);
      // Same tick as the check: the open breaker refuses at once, naming the target.
      const t0 = performance.now();
      await assert.rejects(pool.query('SELECT 1'), (e: unknown) => {
        assert.ok(isCircuitOpenError(e), `a CircuitOpenError, got ${String(e)}`);
        assert.ok(
          (e as Error).message.startsWith(`Circuit breaker for ${poolTarget} is open`),
          (e as Error).message,
        );
        return true;
      });
      const refusedInMs = performance.now() - t0;
      assert.ok(refusedInMs < 50, `refused in ${refusedInMs.toFixed(1)} ms`);
      t.diagnostic(`breaker opened after ${calls} call(s); refused in ${refusedInMs.toFixed(1)} ms`);

      // No traffic from here on. The server is down: probes fail, the process stays up.
      const opsAtQuiet = operations.length;
      const attemptsAtQuiet = attempts.length;
      await until(
        'a recovery probe fails while the server is down',
        () => attempts.slice(attemptsAtQuiet).some((e) => e.outcome === 'failure'),
        5_000,
      );
      await sleep(400); // a couple more probes
      assertAlive();
      assert.notEqual(policy.circuitState, 'closed');
      const attemptsAtStart = attempts.length;
      await server.start();
      const closedMs = await until(
        'the probes close the breaker',
        () => policy.circuitState === 'closed',
        5_000,
      ).catch((e: unknown) => {
        const errors = new Set(attempts.slice(attemptsAtStart).map((a) => String(a.error)));
        throw new Error(`${String(e)}; probe errors since the server started: ${[...errors].join(' | ')}`);
      });
      const afterStart = attempts.slice(attemptsAtStart);
      assert.ok(
        afterStart.some((e) => e.outcome === 'success'),
        `a successful probe closed it: ${JSON.stringify(afterStart)}`,
      );
      assert.equal(operations.length - opsAtQuiet, 0, 'no app call in between');
      t.diagnostic(
        `probes while down: ${attempts
          .slice(attemptsAtQuiet, attemptsAtStart)
          .map((e) => e.outcome)
          .join(',')}; closed ${closedMs} ms after the server started; ` +
          `probes after start: ${afterStart.map((e) => e.outcome).join(',')}`,
      );
      assert.equal((await pool.query('SELECT 1 AS one')).rows[0].one, 1);
    } finally {
      for (const s of subs) s.dispose();
      await server.start(); // a no-op when running
      await pool.end();
    }
    assertAlive();
  }

  // Fails if: the breaker never opens while the server is down, an open breaker does not refuse at
  // once with a CircuitOpenError naming the target, the probes do not run (no 'failure' attempts
  // while down) or do not close it once the server is back (no 'success' attempt, breaker not closed
  // within 5 s), any app call is needed for that, or the first query afterwards fails.
  it('e. recovery without traffic: background probes close the breaker', T, async (t) => {
    await recoveryWithoutTraffic(t, newPool('faults-e'), target);
  });

  // The same with the credentials as pool options (`password`) rather than in a connection string, on
  // another database (its own target, so its probes are built from this pool). pg-pool stores
  // `password` as a non-enumerable property of `pool.options`: a probe that copied the options with a
  // spread would drop it, every probe would fail with "SASL: SCRAM-SERVER-FIRST-MESSAGE: client
  // password must be a string", re-opening the breaker every recovery.intervalMs, and the breaker
  // would never close (the app refused for good).
  it('e. recovery without traffic, for a pool given a `password` option', T, async (t) => {
    const pool = new pg.Pool({
      ...server.clientConfig({ database: 'other', application_name: 'faults-e2' }),
      max: POOL_MAX,
      connectionTimeoutMillis: 2000,
    });
    await recoveryWithoutTraffic(t, pool, `${server.host}:${server.port}/other`);
  });

  // A target's probe is built from the last pool seen for it. Here that pool has a wrong password, so
  // every probe fails with 28P01 once the server is back. The server answered, though: an auth failure
  // says nothing about the target's health, so it must not keep the breaker open for the app's working
  // pool (before the fix it stayed open for good, the app refused until the bad pool happened to go).
  it(
    'e. recovery without traffic, when the last pool seen for the target has a wrong password',
    T,
    async (t) => {
      const good = new pg.Pool({
        ...server.clientConfig({ database: 'other', application_name: 'faults-e3' }),
        max: POOL_MAX,
        connectionTimeoutMillis: 2000,
      });
      await good.query('SELECT 1');
      const bad = new pg.Pool({
        ...server.clientConfig({ database: 'other', password: 'not-the-password' }),
        max: 1,
        connectionTimeoutMillis: 2000,
      });
      bad.on('error', () => {});
      try {
        await assert.rejects(bad.query('SELECT 1'), { code: '28P01' });
        await recoveryWithoutTraffic(t, good, `${server.host}:${server.port}/other`);
      } finally {
        await bad.end();
      }
    },
  );
});
