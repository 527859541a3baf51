// The fleet-aware breaker: four app processes (fixtures/pool-load-child.ts, the instrumentation loaded
// with --import) share one real redis-server and one real PostgreSQL behind one fault proxy (one target
// for the fleet). App 0's own network fault: the proxy resets only the connections whose startup message
// carries its application_name. Asserted: one process's own fault
// opens only its breaker; the target down for all opens every breaker, and while open the whole fleet
// sends about one recovery probe per interval (connections counted at the proxies); restored, every
// process serves again soon after the first successful probe; with Redis dead, each breaker recovers alone.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { parseVerdict } from '../../src/coordination/breaker-verdict.ts';
import { FleetCoordinator } from '../../src/coordination/coordinator.ts';
import { breakerKey, membersKey, probeLockKey, votesKey } from '../../src/coordination/keys.ts';
import { FaultProxy } from '../support/fault-proxy.ts';
import { type LoadApp, loadAppReady, startLoadApp, stopLoadApps } from '../support/load-apps.ts';
import { startServer, type TestServer } from '../support/postgres.ts';
import { type RedisServer, startRedis } from '../support/redis.ts';

const T = { timeout: 90_000 };
const REGISTER = new URL('./fixtures/register-src.ts', import.meta.url).pathname;

const PROCESSES = 4;
const INTERVAL_MS = 500;
/** The window over which probes are counted while the fleet is open. */
const COUNT_MS = 4_000;
/** Longest allowed from the first successful probe to the last process serving again (loaded 2 cores). */
const CLOSE_BOUND_MS = 1_500;
const FLEET = 'fleet-breaker-test';
const OPEN = 'PGR_CIRCUIT_OPEN';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const rejected = (app: LoadApp): number => app.stats.errors[OPEN] ?? 0;

function startApp(proxy: FaultProxy, server: TestServer, redisUrl: string, name: string): LoadApp {
  return startLoadApp({
    execArgv: ['--import', REGISTER],
    env: {
      LOAD_PG: JSON.stringify({
        ...server.clientConfig(),
        host: proxy.host,
        port: proxy.port,
        application_name: name,
      }),
      LOAD_POOL_MAX: '4',
      PG_RESILIENCE_FLEET: FLEET,
      PG_RESILIENCE_REDIS_URL: redisUrl,
      PG_RESILIENCE_BREAKER_FAILURES: '3',
      PG_RESILIENCE_BREAKER_HALF_OPEN_AFTER_MS: '5000',
      PG_RESILIENCE_RECOVERY_INTERVAL_MS: String(INTERVAL_MS),
    },
  });
}

/** Waits (bounded) until `check` holds; the time it took. */
async function until(what: string, check: () => boolean, ms = 15_000): Promise<number> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
  return Date.now() - start;
}

function cut(proxy: FaultProxy): void {
  proxy.resetNewConnections(1);
  proxy.resetOpenConnections();
}

describe('fleet-aware breaker (4 processes, real Redis, real PostgreSQL behind fault proxies)', () => {
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

  it(
    'own fault opens one breaker; down for all opens all with one probe per interval; up closes all; Redis dead: each alone',
    T,
    async (t) => {
      const apps = Array.from({ length: PROCESSES }, (_, i) =>
        startApp(proxy, server, redis.url, `fleet-breaker-${i}`),
      );
      try {
        await Promise.all(apps.map(loadAppReady));
        for (const app of apps) app.child.send({ type: 'go' });
        await until('every process serving', () => apps.every((x) => x.stats.ok > 0));
        await sleep(1_000);

        // Phase 1: only app 0's own network fails. Its breaker opens; the others keep serving, never open.
        const othersRejectedBefore = apps.slice(1).map(rejected);
        proxy.resetStartupMatching(/fleet-breaker-0/);
        proxy.resetOpenConnections();
        await until('app 0 open', () => rejected(apps[0]!) > 0);
        const okBefore = apps.slice(1).map((x) => x.stats.ok);
        await sleep(2_000);
        apps.slice(1).forEach((x, i) => {
          assert.ok(x.stats.ok > okBefore[i]!, `app ${i + 1} keeps serving during app 0's own fault`);
          assert.equal(rejected(x), othersRejectedBefore[i], `app ${i + 1}'s breaker never opened`);
        });
        proxy.resetStartupMatching(null);
        const ok0 = apps[0]!.stats.ok;
        await until('app 0 serving again', () => apps[0]!.stats.ok > ok0);

        // Phase 2: the target is unreachable for all. Every breaker opens.
        const before2 = apps.map(rejected);
        cut(proxy);
        await until('every breaker open', () => apps.every((x, i) => rejected(x) > before2[i]!));
        await sleep(1_000);
        const accepted0 = proxy.stats.accepted;
        await sleep(COUNT_MS);
        const probes = proxy.stats.accepted - accepted0;
        const intervals = COUNT_MS / INTERVAL_MS;
        t.diagnostic(
          `phase 2: ${probes} connection attempts at the proxies in ${COUNT_MS} ms (${intervals} probe intervals, ${PROCESSES} processes)`,
        );
        assert.ok(probes >= 1, `the fleet still probes: ${probes}`);
        assert.ok(
          probes <= 1.5 * intervals,
          `about one probe per interval for the whole fleet: ${probes} in ${intervals} intervals`,
        );

        // Phase 3: restored. Every process serves again soon after the first successful probe.
        const okAt = apps.map((x) => x.stats.ok);
        const acceptedAt = proxy.stats.accepted;
        proxy.resetNewConnections(0);
        const restoredAt = Date.now();
        let firstConnectAt: number | undefined;
        const servingAt: Array<number | undefined> = apps.map(() => undefined);
        await until(
          'every process serving after the restore',
          () => {
            const now = Date.now();
            if (firstConnectAt === undefined && proxy.stats.accepted > acceptedAt) firstConnectAt = now;
            apps.forEach((x, i) => {
              if (servingAt[i] === undefined && x.stats.ok > okAt[i]!) servingAt[i] = now;
            });
            return servingAt.every((s) => s !== undefined);
          },
          10_000,
        );
        const first = firstConnectAt ?? restoredAt;
        const last = Math.max(...servingAt.map((s) => s!));
        t.diagnostic(
          `phase 3: first probe connection ${first - restoredAt} ms after the restore; every process serving ${last - first} ms after it (per process: ${servingAt.map((s) => s! - first).join(' / ')} ms)`,
        );
        assert.ok(
          last - first <= CLOSE_BOUND_MS,
          `every process serves within ${CLOSE_BOUND_MS} ms: ${last - first} ms`,
        );

        // Phase 4: fail soft. Open fleet-wide again, then Redis dies and the target comes back: each
        // process's breaker, released, recovers alone through its own probe.
        const before4 = apps.map(rejected);
        cut(proxy);
        await until('every breaker open again', () => apps.every((x, i) => rejected(x) > before4[i]!));
        await sleep(500);
        await redis.kill();
        const ok4 = apps.map((x) => x.stats.ok);
        proxy.resetNewConnections(0);
        const alone = await until(
          'every process serving with Redis down',
          () => apps.every((x, i) => x.stats.ok > ok4[i]!),
          10_000,
        );
        t.diagnostic(`phase 4: Redis down, target back: every process serving after ${alone} ms`);
        await redis.restart();
      } finally {
        await stopLoadApps(apps);
      }
    },
  );

  it(
    'the scripts: quorum, stale votes dropped after up, the lock, garbage in the keys never trusted',
    T,
    async () => {
      const fleet = 'fleet-breaker-scripts';
      const target = 'db:5432/app';
      const keys = { state: breakerKey(fleet, target), votes: votesKey(fleet, target) };
      const members = membersKey(fleet);
      const make = () =>
        new FleetCoordinator({
          redis: { url: redis.url, cluster: false },
          fleet,
          timeoutMs: 200,
          leaseMs: 2000,
        });
      const [p, q, r] = [make(), make(), make()];
      const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
      await admin.connect();
      const sync = async (c: FleetCoordinator, vote: boolean, seen: number) =>
        parseVerdict(
          await c.call((link) =>
            link.breakerSync(keys.state, keys.votes, members, c.member, 2000, vote, seen, 2),
          ),
        );
      try {
        await until('coordinators in fleet mode', () => [p, q, r].every((c) => c.mode === 'fleet'), 5_000);
        // Garbage of the wrong type in both keys: replaced, and the reply is a valid verdict.
        await admin.set(keys.state, 'not a hash');
        await admin.set(keys.votes, 'not a zset');
        assert.deepEqual(await sync(p, true, -1), { votes: 1, live: 3, open: false, epoch: 0 });
        // A second vote reaches the quorum (2 of 3): open fleet-wide.
        assert.deepEqual(await sync(q, true, 0), { votes: 2, live: 3, open: true, epoch: 0 });
        // The probe lock: one holder per interval.
        const lock = probeLockKey(fleet, target);
        assert.equal(await p.call((link) => link.lock(lock, p.member, 1000)), 'OK');
        assert.equal(await q.call((link) => link.lock(lock, q.member, 1000)), null);
        // Up: a new epoch; a vote cast with the old epoch is stale and dropped, so it cannot reopen.
        assert.equal(await p.call((link) => link.breakerUp(keys.state, keys.votes, lock, 2000)), 1);
        assert.deepEqual(await sync(q, true, 0), { votes: 0, live: 3, open: false, epoch: 1 });
        assert.deepEqual(await sync(r, true, 0), { votes: 0, live: 3, open: false, epoch: 1 });
        assert.equal(await admin.exists(lock), 0, 'the lock went with the up');
        // Hostile values: a non-numeric epoch counts as 0; "open" with no live vote is up again.
        await admin.del(keys.votes);
        await admin.hset(keys.state, 'epoch', 'NaN', 'open', '1');
        assert.deepEqual(await sync(r, false, 1), { votes: 0, live: 3, open: false, epoch: 1 });
        await admin.hset(keys.state, 'epoch', '-7', 'open', 'yes');
        assert.deepEqual(await sync(r, false, 1), { votes: 0, live: 3, open: false, epoch: 0 });
      } finally {
        admin.disconnect();
        for (const c of [p, q, r]) c.dispose();
      }
    },
  );
});
