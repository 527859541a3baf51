// The connect ramp after a fleet-wide close: four app processes (fixtures/pool-load-child.ts, pools of
// 20, 20 workers each) share one real redis-server and one real PostgreSQL behind one fault proxy. The
// target goes down for all, every breaker opens, then it comes back: new connections accepted at the
// proxy are counted from the first one after the restore (the first successful probe). With the ramp
// the first 250 ms see at most what the ramp allows each process (rampAllowance); with the ramp off
// (FLEET_RAMP_TEST_MS=0) the same count is the reconnect burst and the test fails. Every process serves within the bound.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { rampAllowance } from '../../src/policy/connect-ramp.ts';
import { FaultProxy } from '../support/fault-proxy.ts';
import { type LoadApp, loadAppReady, startLoadApp, stopLoadApps } from '../support/load-apps.ts';
import { startServer, type TestServer } from '../support/postgres.ts';
import { type RedisServer, startRedis } from '../support/redis.ts';

const T = { timeout: 90_000 };
const REGISTER = new URL('./fixtures/register-src.ts', import.meta.url).pathname;
const PROCESSES = 4;
const POOL_MAX = 20;
/** FLEET_RAMP_TEST_MS=0 runs the same test with the ramp off: it fails on the burst. */
const RAMP_MS = Number(process.env.FLEET_RAMP_TEST_MS ?? 2_000);
const WINDOW_MS = 250;
/** Each process admits at most rampAllowance(250 ms) at once; plus two probe connections. */
const BOUND = PROCESSES * Math.floor(rampAllowance(WINDOW_MS, 2_000)) + 2;
/** Longest allowed from the first successful probe to the last process serving again (loaded 2 cores). */
const CLOSE_BOUND_MS = 1_500;
const OPEN = 'PGR_CIRCUIT_OPEN';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const rejected = (app: LoadApp): number => app.stats.errors[OPEN] ?? 0;

async function until(what: string, check: () => boolean, ms = 15_000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface Outcome {
  inWindow: number;
  bins: number[];
  servingMs: number;
}

describe('connect ramp after a fleet-wide close (4 processes, real Redis, real PostgreSQL)', () => {
  let server: TestServer;
  let redis: RedisServer;
  let proxy: FaultProxy;

  before(async () => {
    [server, redis] = await Promise.all([startServer(), startRedis()]);
    proxy = await FaultProxy.forServer(server);
  });
  after(async () => {
    await proxy?.close();
    await Promise.all([server?.close(), redis?.stop()]);
  });

  async function outage(rampMs: number, fleet: string): Promise<Outcome> {
    const apps = Array.from({ length: PROCESSES }, (_, i) =>
      startLoadApp({
        execArgv: ['--import', REGISTER],
        env: {
          LOAD_PG: JSON.stringify({
            ...server.clientConfig(),
            host: proxy.host,
            port: proxy.port,
            application_name: `${fleet}-${i}`,
          }),
          LOAD_POOL_MAX: String(POOL_MAX),
          PG_RESILIENCE_FLEET: fleet,
          PG_RESILIENCE_REDIS_URL: redis.url,
          PG_RESILIENCE_BREAKER_FAILURES: '3',
          PG_RESILIENCE_BREAKER_HALF_OPEN_AFTER_MS: '5000',
          PG_RESILIENCE_RECOVERY_INTERVAL_MS: '300',
          PG_RESILIENCE_BREAKER_RAMP_MS: String(rampMs),
        },
      }),
    );
    try {
      await Promise.all(apps.map(loadAppReady));
      for (const app of apps) app.child.send({ type: 'go' });
      await until('every process serving', () => apps.every((x) => x.stats.ok > 0));
      const before = apps.map(rejected);
      proxy.resetNewConnections(1);
      proxy.resetOpenConnections();
      await until('every breaker open', () => apps.every((x, i) => rejected(x) > before[i]!));
      await sleep(1_000);
      const okAt = apps.map((x) => x.stats.ok);
      const acceptedAt = proxy.stats.accepted;
      proxy.resetNewConnections(0);
      await until('the first probe after the restore', () => proxy.stats.accepted > acceptedAt, 10_000);
      const first = Date.now();
      const base = acceptedAt;
      const bins: number[] = [];
      let inWindow = -1;
      const servingAt: Array<number | undefined> = apps.map(() => undefined);
      const deadline = first + 3_000;
      while (Date.now() < deadline) {
        const now = Date.now();
        const bin = Math.floor((now - first) / 100);
        bins[bin] = proxy.stats.accepted - base;
        if (inWindow < 0 && now - first >= WINDOW_MS) inWindow = proxy.stats.accepted - base;
        apps.forEach((x, i) => {
          if (servingAt[i] === undefined && x.stats.ok > okAt[i]!) servingAt[i] = now;
        });
        if (inWindow >= 0 && servingAt.every((s) => s !== undefined) && now - first > 1_000) break;
        await sleep(5);
      }
      assert.ok(
        servingAt.every((s) => s !== undefined),
        'every process serves again',
      );
      const servingMs = Math.max(...servingAt.map((s) => s!)) - first;
      // Cumulative counts per 100 ms into per-bin counts.
      let seen = 0;
      const perBin = Array.from(bins, (c) => {
        const n = (c ?? seen) - seen;
        seen = c ?? seen;
        return n;
      });
      return { inWindow, bins: perBin, servingMs };
    } finally {
      await stopLoadApps(apps);
    }
  }

  it(
    'with the ramp the first 250 ms stay within its bound; every process serves within 1.5 s',
    T,
    async (t) => {
      const o = await outage(RAMP_MS, 'fleet-ramp-on');
      t.diagnostic(
        `ramp ${RAMP_MS} ms: ${o.inWindow} new connections in the first ${WINDOW_MS} ms (bound ${BOUND}); per 100 ms: ${o.bins.join(' ')}; every process serving after ${o.servingMs} ms`,
      );
      assert.ok(o.inWindow <= BOUND, `at most ${BOUND} new connections in ${WINDOW_MS} ms: ${o.inWindow}`);
      assert.ok(
        o.servingMs <= CLOSE_BOUND_MS,
        `every process serves within ${CLOSE_BOUND_MS} ms: ${o.servingMs}`,
      );
    },
  );
});
