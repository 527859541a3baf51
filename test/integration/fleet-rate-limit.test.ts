// With PG_RESILIENCE_REDIS_URL set, a target's rateLimit holds for the whole fleet. Four app processes
// (fixtures/pool-load-child.ts: a pg.Pool of 20, 20 workers running SELECT 1 as fast as they can, the
// instrumentation loaded with --import) share one real redis-server and one real PostgreSQL. Measured:
// the calls served by all four together over a window, against the configured rate; then Redis is
// killed under load and restarted: no call fails, the p99 latency at a quarter of the rate (paced workers)
// stays within ~50 ms of before, the processes fall back to their share (rate / 4) and the fleet-wide
// limit resumes.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { type LoadApp, loadAppReady, startLoadApp, stopLoadApps } from '../support/load-apps.ts';
import { startServer, type TestServer } from '../support/postgres.ts';
import { type RedisServer, startRedis } from '../support/redis.ts';

const T = { timeout: 120_000 };
const REGISTER = new URL('./fixtures/register-src.ts', import.meta.url).pathname;
const DIAG = new URL('./fixtures/diag-console.ts', import.meta.url).pathname;

const PROCESSES = 4;
const POOL_MAX = 20;
/** The fleet-wide rate: 200 calls per second. */
const RATE_PER_MINUTE = 12_000;
const BURST = 20;
const WARMUP_MS = 3_000;
/** The accuracy window. */
const WINDOW_MS = 20_000;
const FLEET = 'fleet-rate-test';
/** Longest the fleet may go without serving a call when Redis dies (stats arrive every 100 ms). */
const STALL_MS = 500;
const PASSWORD = 'fleet-s3cret-pw';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
/** How much the p99 latency may grow when Redis dies ("within ~50 ms of before"). */
const P99_SLACK_MS = 50;
/**
 * Each worker's pause between calls while latency is measured: 80 workers at about one call per 1.6 s make
 * about 50 calls per second, a quarter of the rate, so no call waits for a permit.
 */
const PACED_GAP_MS = 1_600;

/** Sets every app's workers' pause between calls (0: back to back). */
const pace = (apps: LoadApp[], gapMs: number) => {
  for (const app of apps) app.child.send({ type: 'pace', gapMs });
};

/** The p99 latency of the calls the apps reported between `from` and `to` (performance.now()). */
function p99(apps: LoadApp[], from: number, to: number): number {
  const ms = apps
    .flatMap((a) => a.latencies)
    .filter((l) => l.at >= from && l.at < to)
    .map((l) => l.ms)
    .sort((a, b) => a - b);
  assert.ok(ms.length > 0, `calls reported between ${from} and ${to}`);
  return ms[Math.min(ms.length - 1, Math.floor(0.99 * ms.length))]!;
}

function startApp(server: TestServer, redisUrl: string | undefined, name: string): LoadApp {
  return startLoadApp({
    execArgv: ['--import', DIAG, '--import', REGISTER],
    env: {
      LOAD_PG: JSON.stringify({ ...server.clientConfig(), application_name: name }),
      LOAD_POOL_MAX: String(POOL_MAX),
      PG_RESILIENCE_RATE_LIMIT: String(RATE_PER_MINUTE),
      PG_RESILIENCE_RATE_LIMIT_BURST: String(BURST),
      PG_RESILIENCE_FLEET: FLEET,
      ...(redisUrl ? { PG_RESILIENCE_REDIS_URL: redisUrl } : {}),
    },
  });
}

async function servedOver(apps: LoadApp[], ms: number): Promise<number> {
  const start = sum(apps.map((a) => a.stats.ok));
  await sleep(ms);
  return sum(apps.map((a) => a.stats.ok)) - start;
}

const errorsOf = (apps: LoadApp[]) =>
  apps.map((a) => a.stats.errors).filter((e) => Object.keys(e).length > 0);

describe('fleet-wide rate limit (4 processes, real Redis, real PostgreSQL)', () => {
  let server: TestServer;
  let redis: RedisServer;

  before(async () => {
    [server, redis] = await Promise.all([startServer(), startRedis({ password: PASSWORD })]);
  });
  after(async () => {
    await Promise.all([server?.close(), redis?.stop()]);
  });

  it(
    `serves the configured rate fleet-wide within ±3 % over ${WINDOW_MS / 1000} s; Redis killed and restarted: no error, fallback, resume`,
    T,
    async (t) => {
      const apps = Array.from({ length: PROCESSES }, (_, i) => startApp(server, redis.url, `fleet-${i}`));
      try {
        await Promise.all(apps.map(loadAppReady));
        // Every process has joined the fleet (its coordinator starts with the register hook, before the app's
        // first query), as in an app that serves traffic some time after it starts.
        const members = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
        await members.connect();
        for (let i = 0; i < 100 && (await members.zcard(`{pgr:${FLEET}}:members`)) < PROCESSES; i++)
          await sleep(50);
        members.disconnect();
        for (const app of apps) app.child.send({ type: 'go' });
        // Phase 0: from the first call, the fleet never serves more than burst + rate × t (sampled every
        // 100 ms; the counts lag the children, the bound does not): no process spends a burst of its own.
        const goAt = performance.now();
        let startExcess = Number.NEGATIVE_INFINITY;
        while (performance.now() - goAt < WARMUP_MS) {
          await sleep(100);
          const bound = BURST + (RATE_PER_MINUTE / 60_000) * (performance.now() - goAt);
          startExcess = Math.max(startExcess, sum(apps.map((a) => a.stats.ok)) - bound);
        }
        t.diagnostic(
          `phase 0: at worst ${startExcess.toFixed(1)} calls over burst + rate × t from the start`,
        );
        assert.ok(
          startExcess <= 0,
          `never above burst + rate × t from the start: ${startExcess.toFixed(1)} over\n${apps.map((a) => a.output()).join('\n')}`,
        );

        // Phase 1: accuracy.
        const served = await servedOver(apps, WINDOW_MS);
        const expected = (RATE_PER_MINUTE / 60_000) * WINDOW_MS;
        const perProcess = apps.map((a) => a.stats.ok);
        t.diagnostic(
          `phase 1: ${served} calls in ${WINDOW_MS} ms fleet-wide, expected ${expected} (${((100 * (served - expected)) / expected).toFixed(2)} %); cumulative per process ${perProcess.join(' / ')}`,
        );
        assert.ok(
          Math.abs(served - expected) <= 0.03 * expected,
          `fleet-wide calls ${served} within ±3 % of ${expected}`,
        );
        for (const n of perProcess)
          assert.ok(n > 0.1 * sum(perProcess), `every process is served: ${perProcess.join(' / ')}`);

        const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
        await admin.connect();
        assert.equal(
          await admin.zcard(`{pgr:${FLEET}}:members`),
          PROCESSES,
          'every process is a live member',
        );
        admin.disconnect();

        // Phase 2: Redis dies under load. Latency is measured at a quarter of the rate (paced workers), where
        // a call's latency is its own and not its turn in the permit queue: any wait the outage adds shows.
        // The calls queued for a permit at full load drain first (under 1 s): the p99 before is taken over the
        // last 1.5 s of 3.5 s at the paced load.
        pace(apps, PACED_GAP_MS);
        await sleep(3_500);
        const killAt = performance.now();
        await redis.kill();
        // No stall: from the kill on, the fleet never goes STALL_MS without serving a call.
        let longestGap = 0;
        let last = sum(apps.map((a) => a.stats.ok));
        let lastAt = Date.now();
        for (let i = 0; i < 20; i++) {
          await sleep(50);
          const now = sum(apps.map((a) => a.stats.ok));
          if (now > last) {
            last = now;
            lastAt = Date.now();
          }
          longestGap = Math.max(longestGap, Date.now() - lastAt);
        }
        t.diagnostic(`phase 2: longest time without a served call after the kill: ${longestGap} ms`);
        assert.ok(longestGap < STALL_MS, `no stall when Redis dies: ${longestGap} ms without a served call`);
        await sleep(1_000);
        const before = p99(apps, killAt - 1_500, killAt);
        const after = p99(apps, killAt, killAt + 2_000);
        t.diagnostic(
          `phase 2: p99 latency ${before.toFixed(1)} ms in the 1.5 s before the kill, ${after.toFixed(1)} ms in the 2 s after (paced load)`,
        );
        assert.ok(
          after <= before + P99_SLACK_MS,
          `p99 after the kill ${after.toFixed(1)} ms within ${P99_SLACK_MS} ms of before (${before.toFixed(1)} ms)`,
        );
        // Back to full load: each process falls back to rate / 4, so the fleet stays near the rate.
        pace(apps, 0);
        const duringOutage = await servedOver(apps, 4_000);
        t.diagnostic(
          `phase 2 (Redis down): ${duringOutage} calls in 4000 ms, expected about ${expected / 5}`,
        );
        assert.ok(
          duringOutage <= (expected / 5) * 1.2 + BURST && duringOutage >= (expected / 5) * 0.8,
          `with Redis down each process holds its share: ${duringOutage} calls in 4 s`,
        );

        // Phase 3: Redis is back (empty), restarted under paced load: no added latency; then, at full load,
        // the fleet-wide limit resumes.
        pace(apps, PACED_GAP_MS);
        await sleep(2_500);
        const restartAt = performance.now();
        await redis.restart();
        await sleep(2_000);
        const afterRestart2s = p99(apps, restartAt, restartAt + 2_000);
        t.diagnostic(
          `phase 3: p99 latency ${afterRestart2s.toFixed(1)} ms in the 2 s after the restart (paced load)`,
        );
        assert.ok(
          afterRestart2s <= before + P99_SLACK_MS,
          `p99 after the restart ${afterRestart2s.toFixed(1)} ms within ${P99_SLACK_MS} ms of before the kill (${before.toFixed(1)} ms)`,
        );
        pace(apps, 0);
        const afterRestart = await servedOver(apps, 5_000);
        t.diagnostic(
          `phase 3 (Redis back): ${afterRestart} calls in 5000 ms, expected about ${expected / 4}`,
        );
        assert.ok(
          Math.abs(afterRestart - expected / 4) <= 0.05 * (expected / 4) + BURST,
          `the fleet-wide rate resumes: ${afterRestart} calls in 5 s`,
        );
        const again = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
        await again.connect();
        assert.equal(
          await again.zcard(`{pgr:${FLEET}}:members`),
          PROCESSES,
          'every process rejoined the fleet',
        );
        assert.equal(
          await again.exists(`{pgr:${FLEET}}:rate:${server.host}:${server.port}/${server.database}`),
          1,
        );
        again.disconnect();

        assert.deepEqual(errorsOf(apps), [], 'no call failed, Redis outage included');
        const output = apps.map((a) => a.output()).join('\n');
        assert.ok(!output.includes(PASSWORD), 'the Redis password never appears in the apps’ output');
        assert.match(
          output,
          /fleet coordination through redis:\/\/:\*\*\*@127\.0\.0\.1:\d+\/0 failed/,
          'the outage was logged, redacted',
        );
      } finally {
        await stopLoadApps(apps);
      }
    },
  );
});
