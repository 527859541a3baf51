// Dead connections are found before a statement hangs on them. In process, against a real PostgreSQL
// behind the fault proxy:
// - a server that vanishes without a reset (the proxy strands every open connection: the server side
//   closes, the client hears nothing, ever, and new connections are blackholed): no call waits longer
//   than the configured timeouts, the breaker opens, and every idle connection of the target is closed
//   at that moment (an idle pool untouched by the outage included); the first call after the server is
//   back succeeds at once. The same with eviction turned off is the control: the idle pool hands out a
//   dead connection and that call waits out its timeouts.
// - TCP keepalive is set on each new socket by default, and the app's own keepAlive choice wins.
// PG_RESILIENCE_TEST_PG_DIR: run against the pg installed in that directory (pg-versions.test.ts).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { isCircuitOpenError, PgResilienceInstrumentation } from '../../src/index.ts';
import { ATTR, METRICS } from '../../src/telemetry/catalog.ts';
import { FaultProxy } from '../support/fault-proxy.ts';
import type { TestServer } from '../support/postgres.ts';
import { startRelay } from '../support/relay.ts';

const relay = await startRelay();
const DATABASE = 'app';
const evictingProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
// Control: the same outage with liveness.evictIdleOnOutage off.
const keepingProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
// liveness.keepAliveInitialDelayMs 0: the package leaves pg's keepalive default alone.
const noKeepAliveProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const targetOf = (p: FaultProxy): string => `${p.host}:${p.port}/${DATABASE}`;

const QUERY_MS = 500;
/** A timed-out statement waits this long for its cancel's answer (none comes through a dead path). */
const CANCEL_GRACE_MS = 200;
const CONNECT_MS = 500;
const ATTEMPTS = 2;
const MAX_DELAY_MS = 50;
/** Longest a call may take during the outage: every attempt at its timeout (a statement's with its cancel grace), the backoff, and slack. */
const CALL_BOUND_MS = ATTEMPTS * Math.max(QUERY_MS + CANCEL_GRACE_MS, CONNECT_MS) + MAX_DELAY_MS + 400;
const OUTAGE_MS = 8_000;
const KEEPALIVE_MS = 10_000; // the default of liveness.keepAliveInitialDelayMs

const prometheus = new PrometheusExporter({ preventServerStart: true });
// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  timeout: { queryMs: QUERY_MS, cancelGraceMs: CANCEL_GRACE_MS, connectMs: CONNECT_MS },
  retry: { maxAttempts: ATTEMPTS, initialDelayMs: 10, maxDelayMs: MAX_DELAY_MS },
  circuitBreaker: { consecutiveFailures: 3, halfOpenAfterMs: 500 },
  recovery: { intervalMs: 200 },
  telemetry: { logLevel: 'off' },
  targets: {
    [targetOf(keepingProxy)]: { liveness: { evictIdleOnOutage: false } },
    [targetOf(noKeepAliveProxy)]: { liveness: { keepAliveInitialDelayMs: 0 } },
  },
});
instrumentation.setMeterProvider(new MeterProvider({ readers: [prometheus] }));
const { startServer } = await import('../support/postgres.ts');
const { requirePg } = await import('../support/pg-under-test.ts');
const pg = requirePg('pg') as typeof import('pg');

const uncaught: unknown[] = [];
process.on('uncaughtException', (e) => uncaught.push(e));
process.on('unhandledRejection', (e) => uncaught.push(e));

const T = { timeout: 60_000 };
const ignore = (): void => {};

/** Polls `cond` until it holds; fails naming `what` after `timeoutMs`. */
async function until(what: string, cond: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) assert.fail(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await sleep(25);
  }
  return Date.now() - start;
}

const label = (e: unknown): string =>
  isCircuitOpenError(e) ? 'CircuitOpen' : String((e as { code?: unknown }).code ?? (e as Error).message);

/** Runs `pool.query('SELECT 1')`: its outcome and how long the app waited. */
async function timed(pool: import('pg').Pool): Promise<{ ok: boolean; ms: number; outcome: string }> {
  const start = performance.now();
  try {
    await pool.query('SELECT 1 AS one');
    return { ok: true, ms: performance.now() - start, outcome: 'ok' };
  } catch (error) {
    return { ok: false, ms: performance.now() - start, outcome: label(error) };
  }
}

/** The pg_resilience.pool.connections.evicted total for `target`, as collected now. */
async function evictedTotal(target: string): Promise<number> {
  const { resourceMetrics } = await prometheus.collect();
  let total = 0;
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (metric.descriptor.name !== METRICS.connectionsEvicted.name) continue;
      for (const point of metric.dataPoints) {
        if (point.attributes[ATTR.TARGET] === target) total += point.value as number;
      }
    }
  }
  return total;
}

describe('dead connections', () => {
  let server: TestServer;

  before(async () => {
    server = await startServer({ database: DATABASE, settings: { max_connections: '40' } });
    relay.to(server.port);
  });

  after(async () => {
    for (const p of [evictingProxy, keepingProxy, noKeepAliveProxy]) await p.close();
    await relay.close();
    await server?.close();
    instrumentation.disable();
  });

  const newPool = (via: FaultProxy, app: string, max: number): import('pg').Pool => {
    const pool = new pg.Pool({
      connectionString: via.connectionString(server),
      application_name: app,
      max,
      // Longer than the whole scenario: pg-pool's own idle timeout must not be what removes a client.
      idleTimeoutMillis: 60_000,
    });
    pool.on('error', ignore);
    return pool;
  };

  /** Fills `pool` with `n` idle connections. */
  async function warm(pool: import('pg').Pool, n: number): Promise<void> {
    await Promise.all(Array.from({ length: n }, () => pool.query('SELECT pg_sleep(0.05)')));
    await until(`${n} idle connections`, () => pool.idleCount === n, 5_000);
  }

  /**
   * The server vanishes for OUTAGE_MS: the open connections are stranded and new ones blackholed. One
   * pool (`busy`) carries the app's calls, one after another; the other (`idle`) holds 6 idle
   * connections and is not used until the server is back.
   */
  async function outage(t: TestContext, via: FaultProxy, app: string) {
    const target = targetOf(via);
    const policy = instrumentation.policies.forTarget(target);
    const idle = newPool(via, `${app}-idle`, 6);
    const busy = newPool(via, `${app}-busy`, 3);
    try {
      await warm(idle, 6);
      await warm(busy, 3);
      let idleAtOpen: number | undefined;
      const sub = policy.onCircuitStateChange((e) => {
        if (e.to === 'open' && idleAtOpen === undefined) idleAtOpen = idle.idleCount;
      });

      via.blackhole(true);
      assert.equal(via.strandOpenConnections(), 9, 'every open connection lost its path');
      const calls: Array<{ ok: boolean; ms: number; outcome: string }> = [];
      const start = Date.now();
      while (Date.now() - start < OUTAGE_MS) {
        calls.push(await timed(busy));
        await sleep(100);
      }
      via.blackhole(false);
      sub.dispose();
      const outcomes = new Map<string, number>();
      for (const c of calls) outcomes.set(c.outcome, (outcomes.get(c.outcome) ?? 0) + 1);
      const longest = Math.max(...calls.map((c) => c.ms));
      t.diagnostic(`during the outage: ${calls.length} calls, ${JSON.stringify([...outcomes])}`);
      t.diagnostic(`longest call ${Math.round(longest)} ms (bound ${CALL_BOUND_MS} ms)`);
      assert.ok(longest <= CALL_BOUND_MS, `no call waits past its timeouts: ${Math.round(longest)} ms`);
      assert.ok(!calls.some((c) => c.ok), 'the outage was felt: no call succeeded');
      assert.ok(idleAtOpen !== undefined, 'the breaker opened during the outage');

      // The server is back: the recovery probes close the breaker; then the idle pool's first call.
      const closedMs = await until(
        'the breaker closed',
        () => policy.snapshot().circuit.state === 'closed',
        10_000,
      );
      const first = await timed(idle);
      t.diagnostic(
        `breaker closed ${closedMs} ms after the restore; first call on the idle pool: ${first.outcome} in ${Math.round(first.ms)} ms`,
      );
      assert.deepEqual(uncaught, [], 'no uncaught exception');
      return { idleAtOpen, first, evicted: await evictedTotal(target) };
    } finally {
      await Promise.all([idle.end(), busy.end()]);
    }
  }

  // Fails if: the idle pool's connections are not evicted when the breaker opens (its first call after
  // the restore then gets a dead connection and waits QUERY_MS per attempt), or a call during the outage
  // waits longer than its timeouts.
  it(
    'a vanished server: idle connections are evicted when the breaker opens; the first call after it is fast',
    T,
    async (t) => {
      const { idleAtOpen, first, evicted } = await outage(t, evictingProxy, 'evict');
      assert.equal(idleAtOpen, 0, 'the idle pool was emptied the moment the breaker opened');
      assert.ok(first.ok, `the first call after the restore succeeds (${first.outcome})`);
      assert.ok(first.ms < 1000, `the first call waits out no dead socket: ${Math.round(first.ms)} ms`);
      assert.ok(evicted >= 6, `the evictions are counted (${evicted})`);
    },
  );

  // The control: the same outage without eviction hands out a dead connection (the test above can fail).
  it(
    'control: with liveness.evictIdleOnOutage off, the first call after the outage waits on a dead connection',
    T,
    async (t) => {
      const { idleAtOpen, first, evicted } = await outage(t, keepingProxy, 'keep');
      assert.equal(idleAtOpen, 6, 'the idle pool kept its dead connections');
      assert.ok(
        first.ms >= QUERY_MS,
        `the first call waited on a dead connection: ${Math.round(first.ms)} ms`,
      );
      assert.equal(evicted, 0, 'nothing evicted');
    },
  );

  describe('TCP keepalive', () => {
    type Call = { socket: net.Socket; enable: unknown; delay: unknown };
    let calls: Call[] = [];
    const original = net.Socket.prototype.setKeepAlive;
    before(() => {
      // Spies on what pg asks of the socket (Node has no getter for the keepalive setting).
      net.Socket.prototype.setKeepAlive = function (this: net.Socket, enable?: boolean, delay?: number) {
        calls.push({ socket: this, enable, delay });
        return original.call(this, enable, delay);
      };
    });
    after(() => {
      net.Socket.prototype.setKeepAlive = original;
    });

    /** What setKeepAlive received on a standalone client's socket with `config`, through `via`. */
    async function standalone(via: FaultProxy, config: Partial<import('pg').ClientConfig>) {
      calls = [];
      const client = new pg.Client({ connectionString: via.connectionString(server), ...config });
      client.on('error', ignore);
      await client.connect();
      try {
        assert.equal((await client.query('SELECT 1 AS one')).rows[0].one, 1);
        const stream = (client as unknown as { connection: { stream: net.Socket } }).connection.stream;
        return calls.filter((c) => c.socket === stream).map((c) => [c.enable, c.delay]);
      } finally {
        await client.end();
      }
    }

    it('is on for a standalone client whose config sets none', async () => {
      assert.deepEqual(await standalone(evictingProxy, {}), [[true, KEEPALIVE_MS]]);
    });

    it('is on for a pool client whose pool sets none', async () => {
      calls = [];
      const pool = newPool(evictingProxy, 'keepalive-pool', 2);
      try {
        const client = await pool.connect();
        const stream = (client as unknown as { connection: { stream: net.Socket } }).connection.stream;
        client.release();
        assert.deepEqual(
          calls.filter((c) => c.socket === stream).map((c) => [c.enable, c.delay]),
          [[true, KEEPALIVE_MS]],
        );
      } finally {
        await pool.end();
      }
    });

    it("the app's keepAlive: false is kept (no keepalive)", async () => {
      assert.deepEqual(await standalone(evictingProxy, { keepAlive: false }), []);
    });

    it("the app's keepAlive with its own delay is kept", async () => {
      assert.deepEqual(
        await standalone(evictingProxy, { keepAlive: true, keepAliveInitialDelayMillis: 3000 }),
        [[true, 3000]],
      );
    });

    it("the app's keepAlive: true without a delay gets the configured delay, not the OS's 2 hours", async () => {
      assert.deepEqual(await standalone(evictingProxy, { keepAlive: true }), [[true, KEEPALIVE_MS]]);
    });

    it('liveness.keepAliveInitialDelayMs 0 leaves pg’s default (no keepalive)', async () => {
      assert.deepEqual(await standalone(noKeepAliveProxy, {}), []);
    });
  });
});
