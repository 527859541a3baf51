// The connection budget (PG_RESILIENCE_MAX_CONNECTIONS) across a fleet: four app processes
// (fixtures/pool-load-child.ts: a pg.Pool of 20, 20 workers running SELECT 1), one real redis-server and
// one real PostgreSQL whose role CONNECTION LIMIT (26) is just above the budget (24). The pools together
// want 80 connections. Counted on the server (pg_stat_activity, sampled): bare processes hit 53300;
// with the budget the fleet never holds more than 24 and nobody sees 53300. Then one process is killed
// with SIGKILL: the slots it leased come back to the others within one lease period. Then Redis is
// killed under load (each process falls back to its share, 24 / 3, no call fails) and restarted.
// Connections live one second (pg-pool's maxLifetimeSeconds), so slots change hands under load (without
// turnover, whoever holds a connection keeps it). BUDGET_OFF=1 runs the hooked apps without a budget
// (the test then fails: that is what it guards).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { type LoadApp, loadAppReady, startLoadApp, stopLoadApps } from '../support/load-apps.ts';
import { startServer, type TestServer } from '../support/postgres.ts';
import { type RedisServer, startRedis } from '../support/redis.ts';

const T = { timeout: 60_000 };
const REGISTER = new URL('./fixtures/register-src.ts', import.meta.url).pathname;
const LOCAL_CHILD = new URL('./fixtures/budget-local-child.ts', import.meta.url).pathname;

const PROCESSES = 4;
const POOL_MAX = 20;
const BUDGET = 24;
const ROLE_LIMIT = 26;
const ROLE = 'budget_app';
const FLEET = 'budget-test';
const LOAD_MS = 6_000;
/** coordination.leaseMs's default. */
const LEASE_MS = 5_000;
const TOO_MANY = '53300';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

function startApp(server: TestServer, name: string, env: Record<string, string> | undefined): LoadApp {
  const config = {
    ...server.clientConfig({ user: ROLE, password: 'x' }),
    application_name: name,
    maxLifetimeSeconds: 1,
  };
  return startLoadApp({
    execArgv: env ? ['--import', REGISTER] : [],
    env: { LOAD_PG: JSON.stringify(config), LOAD_POOL_MAX: String(POOL_MAX), ...env },
  });
}

describe('connection budget, fleet-wide (4 processes, pools of 20, budget 24, role limit 26, real Redis)', () => {
  let server: TestServer;
  let redis: RedisServer;

  before(async () => {
    [server, redis] = await Promise.all([startServer(), startRedis()]);
    await server.query(`CREATE ROLE ${ROLE} LOGIN PASSWORD 'x' CONNECTION LIMIT ${ROLE_LIMIT}`);
  });
  after(async () => {
    await Promise.all([server?.close(), redis?.stop()]);
  });

  /** The role's backends per application_name. */
  const backends = async (): Promise<Map<string, number>> => {
    const { rows } = await server.query<{ app: string; n: number }>(
      `SELECT application_name AS app, count(*)::int AS n FROM pg_stat_activity WHERE usename = '${ROLE}' GROUP BY 1`,
    );
    return new Map(rows.map((r) => [r.app, r.n]));
  };
  const total = (m: Map<string, number>) => sum([...m.values()]);

  /** Samples the role's backends every 100 ms for `ms`; returns the peak and the samples. */
  async function sample(ms: number): Promise<{ peak: number; samples: number[] }> {
    const samples: number[] = [];
    const end = Date.now() + ms;
    while (Date.now() < end) {
      samples.push(total(await backends()));
      await sleep(100);
    }
    return { peak: Math.max(...samples), samples };
  }

  it(
    'bare: the four pools together want more than the role may hold, and the apps see 53300',
    T,
    async (t) => {
      const apps = Array.from({ length: PROCESSES }, (_, i) => startApp(server, `bare-${i}`, undefined));
      try {
        await Promise.all(apps.map(loadAppReady));
        for (const app of apps) app.child.send({ type: 'go' });
        const { peak } = await sample(2_000);
        // The role's limit is reached (sampled: connections turn over every second, so a sample may miss it).
        const tooMany = sum(apps.map((a) => a.stats.errors[TOO_MANY] ?? 0));
        t.diagnostic(`bare: peak backends ${peak}, 53300 errors ${tooMany}`);
        assert.ok(tooMany > 0, 'bare apps see 53300');
      } finally {
        await stopLoadApps(apps);
      }
    },
  );

  it(
    'with the budget: peak server connections ≤ 24, no 53300, every process served; a SIGKILLed process’s slots are used by the others within a lease period',
    T,
    async (t) => {
      const env: Record<string, string> = {
        PG_RESILIENCE_REDIS_URL: redis.url,
        PG_RESILIENCE_FLEET: FLEET,
        ...(process.env.BUDGET_OFF === '1' ? {} : { PG_RESILIENCE_MAX_CONNECTIONS: String(BUDGET) }),
      };
      // Garbage and hostile entries in the slots hash: dropped by the script, never trusted (kept, any
      // of them would hold slots for good and the fleet would not reach its budget).
      const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
      await admin.connect();
      const slotsKey = `{pgr:${FLEET}}:conns:${server.host}:${server.port}/${server.database}`;
      await admin.hset(slotsKey, {
        'above-budget': `999999:999999:${Date.now() + 2_000}`,
        'lease-in-a-day': `10:10:${Date.now() + 86_400_000}`,
        negative: `-5:3:${Date.now() + 2_000}`,
        garbage: 'not a lease',
      });
      const apps = Array.from({ length: PROCESSES }, (_, i) => startApp(server, `fleet-${i}`, env));
      try {
        await Promise.all(apps.map(loadAppReady));
        for (const app of apps) app.child.send({ type: 'go' });

        // Phase 1: load against the budget.
        const { peak, samples } = await sample(LOAD_MS);
        const served = apps.map((a) => a.stats.ok);
        t.diagnostic(
          `phase 1 (${LOAD_MS} ms): peak backends ${peak} (samples ${samples.join(' ')}); served ${served.join(' / ')}; errors ${apps.map((a) => JSON.stringify(a.stats.errors)).join(' ')}`,
        );
        assert.ok(peak <= BUDGET, `server connections never above the budget: peak ${peak}`);
        assert.ok(peak >= BUDGET - 2, `the fleet uses its budget: peak ${peak}`);
        assert.equal(sum(apps.map((a) => a.stats.errors[TOO_MANY] ?? 0)), 0, 'no 53300');
        for (const n of served)
          assert.ok(n > 0.05 * sum(served), `every process served: ${served.join(' / ')}`);

        // Phase 2: one process killed. Its leased slots expire within a lease period; the others take them.
        const leases = await admin.hgetall(slotsKey);
        t.diagnostic(`leases before the kill: ${JSON.stringify(leases)}`);
        const before = await backends();
        const othersBefore = total(before) - (before.get('fleet-3') ?? 0);
        apps[3]!.child.kill('SIGKILL');
        const killedAt = Date.now();
        let reachedAfter: number | undefined;
        let peakAfter = 0;
        let others = 0;
        while (Date.now() - killedAt < LEASE_MS + 3_000) {
          const now = await backends();
          peakAfter = Math.max(peakAfter, total(now));
          others = total(now) - (now.get('fleet-3') ?? 0);
          if (reachedAfter === undefined && others >= BUDGET - 1) {
            reachedAfter = Date.now() - killedAt;
            break;
          }
          await sleep(100);
        }
        t.diagnostic(
          `phase 2 (SIGKILL): the other three held ${othersBefore} before, ${others} after ${reachedAfter ?? 'never'} ms; peak ${peakAfter}; leases now ${JSON.stringify(await admin.hgetall(slotsKey))}`,
        );
        admin.disconnect();
        assert.ok(
          reachedAfter !== undefined && reachedAfter <= LEASE_MS + 2_000,
          `the killed process's slots are used by the others within a lease period: ${reachedAfter ?? 'never'} ms`,
        );
        assert.ok(peakAfter <= BUDGET, `never above the budget after the kill: ${peakAfter}`);
        const live = apps.slice(0, 3);
        assert.equal(sum(live.map((a) => a.stats.errors[TOO_MANY] ?? 0)), 0, 'no 53300');

        // Phase 3: Redis killed under load. Leases hold until they expire, then each process holds at
        // most its share (24 / 3 members): still within the budget, and no call fails.
        await redis.kill();
        const servedAtKill = live.map((a) => a.stats.ok);
        const outage = await sample(LEASE_MS + 1_500);
        const servedInOutage = live.map((a, i) => a.stats.ok - servedAtKill[i]!);
        t.diagnostic(
          `phase 3 (Redis down ${LEASE_MS + 1_500} ms): peak backends ${outage.peak} (samples ${outage.samples.join(' ')}); served ${servedInOutage.join(' / ')}; errors ${live.map((a) => JSON.stringify(a.stats.errors)).join(' ')}`,
        );
        assert.ok(outage.peak <= BUDGET, `within the budget with Redis down: peak ${outage.peak}`);
        for (const n of servedInOutage)
          assert.ok(n > 0, `every process serves with Redis down: ${servedInOutage.join(' / ')}`);
        assert.deepEqual(
          live.map((a) => a.stats.errors),
          [{}, {}, {}],
          'no call failed, Redis outage included',
        );

        // Phase 4: Redis back (empty): the processes lease again.
        await redis.restart();
        await sleep(1_500);
        const again = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
        await again.connect();
        const released = await again.hgetall(slotsKey);
        again.disconnect();
        const { peak: peakBack } = await sample(1_000);
        t.diagnostic(`phase 4 (Redis back): leases ${JSON.stringify(released)}; peak backends ${peakBack}`);
        assert.equal(Object.keys(released).length, 3, 'the three live processes lease from Redis again');
        assert.ok(
          sum(Object.values(released).map((v) => Number(v.split(':')[0]))) <= BUDGET,
          'leases within the budget',
        );
        assert.ok(peakBack <= BUDGET, `within the budget after Redis returned: ${peakBack}`);
      } finally {
        await stopLoadApps(apps);
      }
    },
  );
});

describe('connection budget, per process (no Redis)', () => {
  it(
    'a connect waits for a slot (FIFO), fails with ConnectionBudgetExhaustedError after its timeout; a pool checkout fails the same way without keeping a client',
    T,
    async (t) => {
      const server = await startServer();
      try {
        const child = spawnSync(
          process.execPath,
          ['--disable-warning=ExperimentalWarning', '--import', REGISTER, LOCAL_CHILD],
          {
            encoding: 'utf8',
            timeout: 30_000,
            env: {
              ...process.env,
              ...(process.env.BUDGET_OFF === '1' ? {} : { PG_RESILIENCE_MAX_CONNECTIONS: '2' }),
              LOAD_PG: JSON.stringify({ ...server.clientConfig(), application_name: 'budget-local' }),
            },
          },
        );
        assert.equal(child.status, 0, child.stderr);
        const out = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as Record<string, any>;
        t.diagnostic(JSON.stringify(out));
        assert.equal(out.third.code, 'PGR_CONNECTION_BUDGET_EXHAUSTED');
        assert.equal(out.third.name, 'ConnectionBudgetExhaustedError');
        assert.match(
          out.third.message,
          /Connection budget for .+ exhausted: all 2 connections \(this process\)/,
        );
        assert.ok(out.third.waitedMs >= 350 && out.third.waitedMs < 2_000, `waited ${out.third.waitedMs} ms`);
        assert.deepEqual(out.beforeEnd, []);
        assert.deepEqual(out.afterFirstEnd, ['c4']);
        assert.deepEqual(out.order, ['c4', 'c5']);
        assert.equal(out.poolQuery.code, 'PGR_CONNECTION_BUDGET_EXHAUSTED');
        assert.equal(out.poolTotalAfterFailure, 0, 'the pool keeps no client for the failed connect');
        assert.deepEqual(out.poolQueryAfterEnd, { one: 1 });
        assert.equal(out.poolTotal, 1);
        assert.equal(out.serverConnections, 2, 'two connections on the server: the budget');
      } finally {
        await server.close();
      }
    },
  );
});
