// Regressions found by the chaos suite (test/chaos), each reduced to a small scenario against a real
// PostgreSQL behind the fault proxy, in process.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { FaultProxy as FaultProxyType } from '../support/fault-proxy.ts';
import type { TestServer } from '../support/postgres.ts';

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  retry: { maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 20, budget: { enabled: false } },
  circuitBreaker: { enabled: false },
  recovery: { enabled: false },
  // connectMs only (the harness's own admin connections go through the patched pg too: keep it roomy).
  timeout: { connectMs: 1_500, queryMs: 2_000 },
});
const { startServer } = await import('../support/postgres.ts');
const { FaultProxy } = await import('../support/fault-proxy.ts');
const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

/** Resolves with `p`'s outcome, or rejects naming `what` after `ms`. */
async function within<T>(what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

describe('chaos regressions (real PostgreSQL, fault proxy)', { timeout: 60_000 }, () => {
  let server: TestServer;
  let proxy: FaultProxyType;

  before(async () => {
    server = await startServer();
    proxy = await FaultProxy.forServer(server);
  });
  after(async () => {
    await proxy?.close();
    await server?.close();
    instrumentation.disable();
  });

  // A pool sets no connectionTimeoutMillis (pg's default: wait forever). Its new connections' handshakes
  // are swallowed by a blackhole; the package's timeout gives up on each call, but pg-pool's pending
  // connects used to stay pending for good, each holding a pool slot: after the blackhole the pool had no
  // slot left and every call hung (the chaos suite's long run: 9 of 10 slots held by nobody). The
  // target's timeout.connectMs now bounds those connects, so the slots come back.
  it('connects swallowed by a blackhole give their pool slots back (timeout.connectMs)', async () => {
    const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 2 });
    pool.on('error', () => {});
    try {
      proxy.blackhole(true);
      // Without the bound these calls never settle (queryMs is off): the connects wait forever.
      const during = await within(
        'calls during the blackhole',
        10_000,
        Promise.allSettled([pool.query('SELECT 1'), pool.query('SELECT 1')]),
      );
      for (const r of during) assert.equal(r.status, 'rejected', 'nothing answers in a blackhole');
      // Each connect failed within connectMs ('timeout expired'), so pg-pool freed its slot.
      await within(
        'the pool slots come back',
        5_000,
        (async () => {
          while (pool.totalCount > 0) await sleep(20);
        })(),
      );
      proxy.blackhole(false);
      const r = await within('a call after the blackhole', 3_000, pool.query('SELECT 1 AS one'));
      assert.equal(r.rows[0].one, 1);
    } finally {
      proxy.blackhole(false);
      await pool.end();
    }
  });

  it('statements whose answers a blackhole swallowed give their clients back when they time out', async () => {
    const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 4, statement_timeout: 500 } as never);
    pool.on('error', () => {});
    try {
      await Promise.all([1, 2, 3, 4].map(() => pool.query('SELECT 1'))); // four warm connections
      const calls = [1, 2, 3, 4].map(() => pool.query('SELECT pg_sleep($1)', [3]));
      await sleep(150);
      proxy.blackhole(true); // the server's 57014 answers (at 500 ms) are swallowed
      const settled = await within('the calls', 6_000, Promise.allSettled(calls));
      for (const r of settled) assert.equal(r.status, 'rejected');
      proxy.blackhole(false);
      await within(
        'every client back',
        3_000,
        (async () => {
          while (pool.totalCount - pool.idleCount > 0) await sleep(20);
        })(),
      );
      const r = await within('a call afterwards', 3_000, pool.query('SELECT 1 AS one'));
      assert.equal(r.rows[0].one, 1);
    } finally {
      proxy.blackhole(false);
      await pool.end();
    }
  });

  // The same under the register hook. Its SDK constructed our instrumentation before instrumentation-pg,
  // so when pg loaded, instrumentation-pg's hook unwrapped ours from Client.query, Client.connect and
  // Pool.connect: under `--import/--require pg-resilience/register` a Pool.query attempt never learned
  // its client, the timeout could not free it, and the pool kept every such client for good (the chaos
  // suite's long run: 9 of 10 clients held by nobody, the app unable to end its pool).
  it('the same under the register hook (instrumentation-pg loaded too)', () => {
    const child = new URL('./fixtures/swallowed-child.ts', import.meta.url).pathname;
    const register = new URL('../../src/register.ts', import.meta.url).pathname;
    const env: NodeJS.ProcessEnv = { ...process.env, PG_RESILIENCE_TIMEOUT_MS: '2000' };
    for (const k of Object.keys(env)) if (k.startsWith('OTEL_')) delete env[k];
    Object.assign(env, {
      OTEL_TRACES_EXPORTER: 'none',
      OTEL_METRICS_EXPORTER: 'none',
      OTEL_LOGS_EXPORTER: 'none',
    });
    const run = spawnSync(
      process.execPath,
      ['--disable-warning=ExperimentalWarning', '--import', register, child],
      { env, encoding: 'utf8', timeout: 40_000 },
    );
    const line = run.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    assert.ok(line, `no result (exit ${run.status}): ${run.stderr.slice(-2000)}`);
    const result = JSON.parse(line.slice('RESULT '.length)) as { codes: string[]; held: number };
    assert.deepEqual(result.codes, ['PGR_TIMEOUT', 'PGR_TIMEOUT', 'PGR_TIMEOUT', 'PGR_TIMEOUT']);
    assert.equal(result.held, 0, 'pool clients still checked out after the calls ended');
  });
});
