// Leak detection against a real PostgreSQL: clients checked out with pool.connect() and never released
// are reported once each (a log record with the stack of the checkout, the leaks counter, the leaked
// gauge); released clients, and clients running long statements, never are. Three targets (fault proxies
// in front of one server) carry different settings: IDLE (idle threshold 400 ms), DEAD (dead-connection
// grace 300 ms, threshold off as by default) and DEFAULTS (nothing configured).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { logs } from '@opentelemetry/api';
import { InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor } from '@opentelemetry/sdk-logs';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import { ATTR, LOG_EVENTS, METRICS } from '../../src/telemetry/catalog.ts';
import { FaultProxy } from '../support/fault-proxy.ts';
import { startRelay } from '../support/relay.ts';
import type { TestServer } from '../support/postgres.ts';

const logRecords = new InMemoryLogRecordExporter();
logs.setGlobalLoggerProvider(
  new LoggerProvider({ processors: [new SimpleLogRecordProcessor({ exporter: logRecords })] }),
);
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const reader = new PeriodicExportingMetricReader({
  exporter: metricExporter,
  exportIntervalMillis: 3_600_000,
});
const meterProvider = new MeterProvider({ readers: [reader] });

const DATABASE = 'app';
const relay = await startRelay();
const idleProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const deadProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const defaultsProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const targetOf = (p: FaultProxy): string => `${p.host}:${p.port}/${DATABASE}`;
const IDLE = targetOf(idleProxy);
const DEAD = targetOf(deadProxy);
const DEFAULTS = targetOf(defaultsProxy);
const THRESHOLD_MS = 400;
const GRACE_MS = 300;

const instrumentation = new PgResilienceInstrumentation({
  telemetry: { logLevel: 'off' },
  targets: {
    [IDLE]: { leakDetection: { idleThresholdMs: THRESHOLD_MS, deadGraceMs: GRACE_MS } },
    [DEAD]: { leakDetection: { deadGraceMs: GRACE_MS } },
  },
});
instrumentation.setMeterProvider(meterProvider);
const { startServer } = await import('../support/postgres.ts');
// PG_RESILIENCE_TEST_PG_DIR: the pg installed there (an older pg 8.x with its pg-pool; pg-versions.test.ts).
const pg = createRequire(
  process.env.PG_RESILIENCE_TEST_PG_DIR
    ? `${process.env.PG_RESILIENCE_TEST_PG_DIR}/package.json`
    : import.meta.url,
)('pg') as typeof import('pg');

type Pool = InstanceType<typeof pg.Pool>;
type PoolClient = import('pg').PoolClient;

let server: TestServer;
const pools: Pool[] = [];

function poolFor(proxy: FaultProxy, options: object = {}): Pool {
  const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 4, ...options });
  pool.on('error', () => {});
  pools.push(pool);
  return pool;
}

/** The leak records logged so far: [target, reason, stack, body]. */
function leakRecords() {
  return logRecords
    .getFinishedLogRecords()
    .filter((r) => r.eventName === LOG_EVENTS.clientLeaked)
    .map((r) => ({
      target: r.attributes[ATTR.TARGET] as string,
      reason: r.attributes[ATTR.REASON] as string,
      stack: r.attributes[ATTR.CODE_STACKTRACE] as string,
      body: String(r.body),
    }));
}

/** A metric's data points for `target`, as attribute-set → value. */
async function points(
  name: string,
  target: string,
): Promise<Array<{ attrs: Record<string, unknown>; value: number }>> {
  metricExporter.reset();
  await reader.forceFlush();
  const out: Array<{ attrs: Record<string, unknown>; value: number }> = [];
  for (const rm of metricExporter.getMetrics()) {
    for (const sm of rm.scopeMetrics) {
      for (const m of sm.metrics) {
        if (m.descriptor.name !== name) continue;
        for (const p of m.dataPoints) {
          if (p.attributes[ATTR.TARGET] === target)
            out.push({ attrs: p.attributes, value: p.value as number });
        }
      }
    }
  }
  return out;
}

async function leaks(target: string, reason: string): Promise<number> {
  const all = await points(METRICS.poolClientLeaks.name, target);
  return all.find((p) => p.attrs[ATTR.REASON] === reason)?.value ?? 0;
}

async function leaked(target: string): Promise<number> {
  return (await points(METRICS.poolClientsLeaked.name, target))[0]?.value ?? 0;
}

/** Polls `check` every 20 ms for up to `ms`; returns when it holds. */
async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Kills the client's backend with pg_terminate_backend and waits until the client has seen it end. */
async function killBackend(client: PoolClient): Promise<void> {
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
  await server.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
  await ended;
}

before(async () => {
  server = await startServer({ database: DATABASE });
  relay.to(server.port);
});

after(async () => {
  // A pool with leaked clients never finishes ending (pg-pool waits for their release).
  await Promise.all(pools.map((p) => Promise.race([p.end().catch(() => {}), sleep(500)])));
  instrumentation.disable();
  await Promise.all([idleProxy.close(), deadProxy.close(), defaultsProxy.close()]);
  await relay.close();
  await server.close();
});

beforeEach(() => logRecords.reset());

describe('leak detection', { timeout: 60_000 }, () => {
  it('(a) a client held idle past the threshold: one warning with the stack of its checkout; none after its release', async () => {
    const pool = poolFor(idleProxy);
    const before = await leaks(IDLE, 'held_too_long');
    async function holdsAClientPastTheThreshold(): Promise<PoolClient> {
      const client = await pool.connect();
      await client.query('SELECT 1');
      return client;
    }
    const client = await holdsAClientPastTheThreshold();
    await sleep(THRESHOLD_MS * 3);
    const found = leakRecords();
    assert.equal(found.length, 1, JSON.stringify(found));
    assert.equal(found[0]!.target, IDLE);
    assert.equal(found[0]!.reason, 'held_too_long');
    assert.match(found[0]!.stack, /holdsAClientPastTheThreshold/);
    assert.match(found[0]!.body, /holdsAClientPastTheThreshold/);
    assert.doesNotMatch(found[0]!.body, /password|postgres:/i, 'no credentials');
    assert.equal((await leaks(IDLE, 'held_too_long')) - before, 1);
    assert.equal(await leaked(IDLE), 1);

    client.release();
    await sleep(THRESHOLD_MS * 2);
    assert.equal(leakRecords().length, 1, 'no more warnings after the release');
    assert.equal(await leaked(IDLE), 0);
    assert.equal(pool.idleCount, 1, 'the client is back in the pool');
  });

  it('(b) a checked-out client whose backend is killed and never released: dead_not_released within the grace', async () => {
    const pool = poolFor(deadProxy);
    const before = await leaks(DEAD, 'dead_not_released');
    async function keepsADeadClient(): Promise<PoolClient> {
      return pool.connect();
    }
    const client = await keepsADeadClient();
    client.on('error', () => {});
    await killBackend(client);
    const endedAt = Date.now();
    await waitFor(() => leakRecords().length > 0, GRACE_MS + 2_000, 'the warning');
    const elapsed = Date.now() - endedAt;
    assert.ok(elapsed >= GRACE_MS - 20, `not before the grace (${elapsed} ms)`);
    assert.ok(elapsed < GRACE_MS + 500, `within the grace and one sweep (${elapsed} ms)`);
    const found = leakRecords();
    assert.equal(found.length, 1);
    assert.equal(found[0]!.reason, 'dead_not_released');
    assert.match(found[0]!.stack, /keepsADeadClient/);
    assert.equal((await leaks(DEAD, 'dead_not_released')) - before, 1);
    await sleep(GRACE_MS * 2);
    assert.equal(leakRecords().length, 1, 'one warning per leak');
    client.release(new Error('dead'));
    assert.equal(await leaked(DEAD), 0);
  });

  it('(c) a healthy app: statements longer than the threshold, and busy clients, never warn', async () => {
    const defaults = poolFor(defaultsProxy);
    const idle = poolFor(idleProxy);
    const longQuery = async (pool: Pool): Promise<void> => {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query('SELECT pg_sleep(1.2)');
        await client.query('COMMIT');
      } finally {
        client.release();
      }
    };
    const chatty = async (pool: Pool): Promise<void> => {
      const client = await pool.connect();
      try {
        for (let i = 0; i < 8; i++) {
          await client.query('SELECT 1');
          await sleep(THRESHOLD_MS / 4);
        }
      } finally {
        client.release();
      }
    };
    await Promise.all([
      longQuery(defaults),
      longQuery(defaults),
      longQuery(idle),
      longQuery(idle),
      chatty(idle),
    ]);
    await sleep(THRESHOLD_MS * 2);
    assert.deepEqual(leakRecords(), []);
    assert.equal(await leaked(IDLE), 0);
    assert.equal(await leaked(DEFAULTS), 0);
  });

  it('(d) released clients never warn: promise and callback forms, a release with an error, a dead client released', async () => {
    const pool = poolFor(idleProxy);
    for (let i = 0; i < 10; i++) {
      const client = await pool.connect();
      await client.query('SELECT 1');
      client.release();
    }
    await new Promise<void>((resolve, reject) => {
      pool.connect((err, client, done) => {
        if (err) return reject(err);
        client!.query('SELECT 1', (qerr) => {
          done(qerr ?? undefined);
          resolve();
        });
      });
    });
    const failing = await pool.connect();
    failing.release(new Error('discard it'));
    const dead = await pool.connect();
    dead.on('error', () => {});
    await killBackend(dead);
    dead.release(new Error('dead'));
    // Pool.query checks out and releases by itself: never watched.
    await pool.query('SELECT pg_sleep(0.6)');
    await sleep(Math.max(THRESHOLD_MS, GRACE_MS) * 2);
    assert.deepEqual(leakRecords(), []);
    assert.equal(await leaked(IDLE), 0);
  });

  it('(e) a drizzle-like leak: BEGIN fails on a dead connection outside try/finally, the pool drains, the warnings name the checkout', async () => {
    const pool = poolFor(deadProxy, { max: 2, connectionTimeoutMillis: 500 });
    const before = await leaks(DEAD, 'dead_not_released');
    // drizzle-orm 0.45's transaction(): BEGIN runs before its try/finally, so a failed BEGIN never releases.
    async function drizzleLikeTransaction(beforeBegin: (client: PoolClient) => Promise<void>): Promise<void> {
      const client = await pool.connect();
      await beforeBegin(client);
      await client.query('BEGIN');
      try {
        await client.query('SELECT 1');
        await client.query('COMMIT');
      } finally {
        client.release();
      }
    }
    const outcomes = await Promise.allSettled([
      drizzleLikeTransaction(killBackend),
      drizzleLikeTransaction(killBackend),
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['rejected', 'rejected'],
    );
    // The pool is drained: every client is leaked, so the next caller waits until its timeout.
    await assert.rejects(pool.connect(), /timeout/);
    assert.equal(pool.totalCount, 2);
    assert.equal(pool.idleCount, 0);
    await waitFor(() => leakRecords().length >= 2, GRACE_MS + 2_000, 'two warnings');
    const found = leakRecords();
    assert.equal(found.length, 2);
    for (const r of found) {
      assert.equal(r.reason, 'dead_not_released');
      assert.equal(r.target, DEAD);
      assert.match(r.stack, /drizzleLikeTransaction/);
    }
    assert.equal((await leaks(DEAD, 'dead_not_released')) - before, 2);
    assert.equal(await leaked(DEAD), 2);
  });
});
