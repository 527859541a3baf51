// The fleet coordinator against a real redis-server: membership, permits, validation of what Redis
// holds (garbage and hostile values never crash nor get trusted), fail-soft when Redis is down or
// silent, and the password kept out of every message.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type DiagLogger, DiagLogLevel, diag } from '@opentelemetry/api';
import { Cluster, Redis } from 'ioredis';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { resolveConfig } from '../../src/config/resolve.ts';
import { PolicyRegistry } from '../../src/policy/registry.ts';
import { ATTR, METRICS } from '../../src/telemetry/catalog.ts';
import { ResilienceMetrics } from '../../src/telemetry/metrics.ts';
import type { CoordinationSettings } from '../../src/config/types.ts';
import { FleetCoordinator } from '../../src/coordination/coordinator.ts';
import { fleetName, membersKey, rateKey } from '../../src/coordination/keys.ts';
import { startServer, type TestServer } from '../support/postgres.ts';
import { type RedisCluster, type RedisServer, startRedis, startRedisCluster } from '../support/redis.ts';

const EXIT_CHILD = new URL('./fixtures/coordinated-exit-child.ts', import.meta.url).pathname;
const REGISTER = new URL('./fixtures/register-src.ts', import.meta.url).pathname;

/** Runs the exit child with coordination through `url`: its exit code, output and how long it ran. */
function runExitChild(
  pg: TestServer,
  url: string,
  env: Record<string, string> = {},
): Promise<{ code: number | null; out: string; ms: number }> {
  const start = Date.now();
  const child = spawn(
    process.execPath,
    ['--disable-warning=ExperimentalWarning', '--import', REGISTER, EXIT_CHILD],
    {
      env: {
        ...process.env,
        EXIT_PG: JSON.stringify(pg.clientConfig()),
        PG_RESILIENCE_REDIS_URL: url,
        PG_RESILIENCE_RATE_LIMIT: '6000',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, ms: Date.now() - start });
    }),
  );
}

/** A meter provider read on demand: `points(name)` flushes and returns the metric's [attributes, value]s. */
function metricsReader() {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const points = async (name: string) => {
    await reader.forceFlush();
    const all =
      exporter
        .getMetrics()
        .at(-1)
        ?.scopeMetrics.flatMap((m) => m.metrics) ?? [];
    const metric = all.find((m) => m.descriptor.name === name);
    return (metric?.dataPoints ?? []).map((p) => [p.attributes, p.value] as const);
  };
  return { meterProvider, points };
}

const PASSWORD = 'c00rd-s3cret/pw';
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Everything diag printed while `fn` ran. */
async function captureDiag<T>(fn: () => Promise<T>): Promise<{ value: T; lines: string[] }> {
  const lines: string[] = [];
  const push = (message: string, ...args: unknown[]) => lines.push([message, ...args.map(String)].join(' '));
  const logger: DiagLogger = { error: push, warn: push, info: push, debug: push, verbose: push };
  diag.setLogger(logger, { logLevel: DiagLogLevel.ALL, suppressOverrideMessage: true });
  try {
    return { value: await fn(), lines };
  } finally {
    diag.disable();
  }
}

const settings = (
  url: string,
  fleet: string,
  over: Partial<CoordinationSettings> = {},
): CoordinationSettings => ({
  redis: { url, cluster: false },
  fleet,
  timeoutMs: 50,
  leaseMs: 1000,
  ...over,
});

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await sleep(10);
  }
  return check();
}

describe('fleet coordination through a real Redis', () => {
  let redis: RedisServer;
  let admin: Redis;

  before(async () => {
    redis = await startRedis({ password: PASSWORD });
    admin = new Redis(redis.url, { maxRetriesPerRequest: 0 });
    // The tests kill Redis: without a listener ioredis prints every reconnect failure.
    admin.on('error', () => {});
  });
  after(async () => {
    admin?.disconnect();
    await redis?.stop();
  });

  it('the fleet name: coordination.fleet, else OTEL_SERVICE_NAME made key-safe, else default; keys share one hash tag', () => {
    assert.equal(fleetName({ fleet: 'shop' }, { OTEL_SERVICE_NAME: 'x' }), 'shop');
    assert.equal(fleetName({}, { OTEL_SERVICE_NAME: 'checkout {eu}' }), 'checkout__eu_');
    assert.equal(fleetName({}, {}), 'default');
    assert.equal(membersKey('shop'), '{pgr:shop}:members');
    assert.equal(rateKey('shop', 'db:5432/app'), '{pgr:shop}:rate:db:5432/app');
  });

  it('PG_RESILIENCE_REDIS_URL and PG_RESILIENCE_FLEET set coordination; the defaults leave it off', () => {
    const on = resolveConfig({ env: { PG_RESILIENCE_REDIS_URL: redis.url, PG_RESILIENCE_FLEET: 'shop' } });
    assert.equal(on.coordination.redis.url, redis.url);
    assert.equal(on.coordination.fleet, 'shop');
    assert.equal(resolveConfig({ env: {} }).coordination.redis.url, undefined);
  });

  it('members join with a lease and leave on dispose, or when their lease runs out (a SIGKILLed process); permits never exceed the bucket', async () => {
    const a = new FleetCoordinator(settings(redis.url, 'members'));
    const b = new FleetCoordinator(settings(redis.url, 'members'));
    try {
      assert.ok(await until(() => a.mode === 'fleet' && b.mode === 'fleet', 3000), 'both reach Redis');
      await sleep(400);
      assert.equal(a.members, 2);
      const key = rateKey('members', 'db:5432/app');
      // 10 permits per second, burst 5: the bucket starts full, then refills at the rate.
      const first = await a.take(key, 10 / 1000, 5, 4);
      const second = await b.take(key, 10 / 1000, 5, 4);
      assert.equal(first, 4);
      assert.ok(second !== undefined && second <= 1, `the second member gets what is left: ${second}`);
      // A member that stopped renewing (killed): gone once its lease ran out.
      await admin.zadd(membersKey('members'), Date.now() + 300, 'killed-member');
      await a.take(key, 10 / 1000, 5, 0);
      assert.equal(a.members, 3);
      await sleep(400);
      await a.take(key, 10 / 1000, 5, 0);
      assert.equal(a.members, 2, 'the killed member left when its lease ran out');
    } finally {
      b.dispose();
      await sleep(100);
      // b left (ZREM on dispose); a sees one member at its next renewal.
      assert.ok(await until(() => a.members === 1, 2000), `a sees 1 member, saw ${a.members}`);
      a.dispose();
    }
  });

  it('garbage and hostile values in the keys are replaced, never trusted, never crash', async () => {
    const c = new FleetCoordinator(settings(redis.url, 'garbage'));
    try {
      assert.ok(await until(() => c.mode === 'fleet', 3000));
      const key = rateKey('garbage', 'db:5432/app');
      const members = membersKey('garbage');
      // A key of the wrong type.
      await admin.set(key, 'not a hash');
      assert.equal(await c.take(key, 1 / 1000, 5, 3), 3, 'a wrong-typed bucket is recreated (full)');
      // Non-numbers, a time in the future, a huge count.
      await admin.del(key);
      await admin.hset(key, 'tokens', 'NaN', 'ts', '1e999');
      assert.equal(await c.take(key, 1 / 1000, 5, 3), 0, 'garbage counts as an empty bucket');
      await admin.hset(key, 'tokens', '99999999', 'ts', String(Date.now() + 1e9));
      assert.equal(await c.take(key, 1 / 1000, 5, 10), 5, 'never more than the capacity');
      // Hostile members: far-future leases would shrink every share.
      await admin.zadd(members, 9e15, 'ghost-1', 9e15, 'ghost-2');
      assert.ok((await c.take(key, 1 / 1000, 5, 1)) !== undefined);
      assert.equal(c.members, 1, 'members whose lease is impossibly long are removed');
      await admin.del(members);
      await admin.set(members, 'garbage');
      assert.ok((await c.take(key, 1 / 1000, 5, 1)) !== undefined);
      assert.equal(c.members, 1);
      assert.equal(c.mode, 'fleet');
    } finally {
      c.dispose();
    }
  });

  it('Redis down or silent: a take answers within the timeout (fallback), and fleet mode resumes', async () => {
    // A port that accepts connections and never answers: Redis "slow".
    const silent = net.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const { value: elapsed, lines } = await captureDiag(async () => {
      const c = new FleetCoordinator(
        settings(`redis://:${encodeURIComponent(PASSWORD)}@127.0.0.1:${port}/0`, 'silent'),
      );
      try {
        await sleep(300);
        const start = performance.now();
        const granted = await c.take(rateKey('silent', 't:1/d'), 1, 5, 1);
        const ms = performance.now() - start;
        assert.equal(granted, undefined);
        assert.equal(c.mode, 'fallback');
        return ms;
      } finally {
        c.dispose();
        silent.close();
      }
    });
    assert.ok(elapsed < 50 + 40, `a take gave up within the coordination timeout: ${elapsed.toFixed(1)} ms`);
    assert.ok(
      lines.some((l) => l.includes('failed')),
      `the fallback was reported: ${lines.join(' | ')}`,
    );
    for (const l of lines) assert.ok(!l.includes(PASSWORD) && !l.includes(encodeURIComponent(PASSWORD)), l);

    // Killed and restarted.
    const { lines: lines2 } = await captureDiag(async () => {
      const c = new FleetCoordinator(settings(redis.url, 'restart'));
      try {
        assert.ok(await until(() => c.mode === 'fleet', 3000));
        await redis.kill();
        const start = performance.now();
        assert.equal(await c.take(rateKey('restart', 't:1/d'), 1, 5, 1), undefined);
        assert.ok(performance.now() - start < 90, 'no wait while Redis is down');
        assert.equal(c.mode, 'fallback');
        await redis.restart();
        assert.ok(await until(() => c.mode === 'fleet', 3000), 'fleet mode resumes once Redis answers');
      } finally {
        c.dispose();
      }
    });
    for (const l of lines2) assert.ok(!l.includes(PASSWORD) && !l.includes(encodeURIComponent(PASSWORD)), l);
    assert.ok(
      lines2.some((l) => l.includes('redis://:***@127.0.0.1')),
      lines2.join(' | '),
    );
  });

  it('Redis back empty after a restart: a member keeps the count it saw for one lease (no burst of its own), then trusts Redis', async () => {
    const a = new FleetCoordinator(settings(redis.url, 'rejoin'));
    const b = new FleetCoordinator(settings(redis.url, 'rejoin'));
    try {
      assert.ok(await until(() => a.mode === 'fleet' && b.mode === 'fleet', 3000));
      assert.ok(await until(() => a.members === 2, 2000), `both joined: ${a.members}`);
      await redis.kill();
      b.dispose();
      assert.equal(await a.take(rateKey('rejoin', 't:1/d'), 1, 5, 1), undefined);
      await redis.restart();
      assert.ok(await until(() => a.mode === 'fleet', 3000), 'fleet mode resumes');
      const resumedAt = performance.now();
      assert.equal(a.members, 2, 'right after Redis returns, the members seen before the outage');
      assert.ok(await until(() => a.members === 1, 2000), 'then the count Redis gives (b left)');
      const ms = performance.now() - resumedAt;
      assert.ok(ms >= 900, `the earlier count held for the lease period (1000 ms): ${ms.toFixed(0)} ms`);
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('a wrong password: refused, reported without the password, and queries go on in fallback', async () => {
    const wrong = `redis://:${encodeURIComponent('wrong-' + PASSWORD)}@127.0.0.1:${redis.port}/0`;
    const { lines } = await captureDiag(async () => {
      const c = new FleetCoordinator(settings(wrong, 'wrongpw'));
      try {
        await sleep(500);
        assert.equal(await c.take(rateKey('wrongpw', 't:1/d'), 1, 5, 1), undefined);
        assert.equal(c.mode, 'fallback');
      } finally {
        c.dispose();
      }
    });
    assert.ok(lines.length > 0);
    for (const l of lines) assert.ok(!l.includes('wrong-') && !l.includes(PASSWORD), l);
  });

  it('telemetry: mode, members, commands by outcome and latency, in fleet mode and in fallback', async () => {
    const { meterProvider, points } = metricsReader();
    const modeIs = async () =>
      Object.fromEntries((await points(METRICS.coordinationMode.name)).map(([a, v]) => [a[ATTR.MODE], v]));
    const commands = async () =>
      Object.fromEntries(
        (await points(METRICS.coordinationCommands.name)).map(([a, v]) => [a[ATTR.OUTCOME], v]),
      );

    const registry = new PolicyRegistry(
      resolveConfig({
        env: {},
        options: { coordination: { redis: { url: redis.url }, fleet: 'telemetry', leaseMs: 300 } },
      }),
    );
    const telemetry = new ResilienceMetrics(meterProvider.getMeter('test'));
    telemetry.attach(registry);
    try {
      assert.deepEqual(await commands(), { success: 0, failure: 0 }, 'zero series before any command');
      assert.ok(await until(() => registry.coordinator?.mode === 'fleet', 3000));
      await sleep(250);
      assert.deepEqual(await modeIs(), { off: 0, fleet: 1, fallback: 0 });
      assert.equal((await points(METRICS.coordinationMembers.name))[0]?.[1], 1);
      const ok = await commands();
      assert.ok((ok.success as number) >= 1, `renewals counted: ${JSON.stringify(ok)}`);
      const latency = (await points(METRICS.coordinationLatency.name))[0]?.[1] as number;
      assert.ok(latency >= 0 && latency < 0.05, `latency in seconds: ${latency}`);

      await redis.kill();
      assert.ok(await until(() => registry.coordinator?.mode === 'fallback', 2000));
      assert.deepEqual(await modeIs(), { off: 0, fleet: 0, fallback: 1 });
      assert.ok(((await commands()).failure as number) >= 1, 'the failed command is counted');
    } finally {
      await redis.restart();
      telemetry.detach();
      registry.dispose();
      await meterProvider.shutdown();
    }
  });

  it('telemetry without coordination: mode off, one member', async () => {
    const { meterProvider, points } = metricsReader();
    const registry = new PolicyRegistry(resolveConfig({ env: {} }));
    const telemetry = new ResilienceMetrics(meterProvider.getMeter('test'));
    telemetry.attach(registry);
    assert.deepEqual(
      Object.fromEntries((await points(METRICS.coordinationMode.name)).map(([a, v]) => [a[ATTR.MODE], v])),
      { off: 1, fleet: 0, fallback: 0 },
    );
    assert.equal((await points(METRICS.coordinationMembers.name))[0]?.[1], 1);
    telemetry.detach();
    await meterProvider.shutdown();
  });

  it('an app with coordination on exits on its own when done: Redis up, down or silent', async () => {
    const pg = await startServer();
    const silent = net.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const silentPort = (silent.address() as net.AddressInfo).port;
    try {
      const cases: Array<[string, string]> = [
        ['up', redis.url],
        ['down', 'redis://127.0.0.1:1/0'],
        ['silent', `redis://127.0.0.1:${silentPort}/0`],
      ];
      for (const [name, url] of cases) {
        const r = await runExitChild(pg, url);
        assert.equal(r.code, 0, `Redis ${name}: exit code (${r.ms} ms): ${r.out}`);
        assert.match(r.out, /rows \[\{"one":1\}\]/, `Redis ${name}: the query ran`);
        assert.ok(r.ms < 10_000, `Redis ${name}: exited within ${r.ms} ms`);
      }
    } finally {
      silent.close();
      await pg.close();
    }
  });
});

describe('fleet coordination through a real Redis Cluster (coordination.redis.cluster)', () => {
  let cluster: RedisCluster;
  let seed: string; // a node that does not serve the fleet's slot: the client must follow the cluster
  let admin: Cluster;
  const FLEET = 'clustered';

  before(async () => {
    cluster = await startRedisCluster({ nodes: 3, password: PASSWORD });
    const owner = await cluster.ownerOf(membersKey(FLEET));
    seed = cluster.url(cluster.ports.find((p) => p !== owner)!);
    admin = new Cluster([{ host: '127.0.0.1', port: owner }], { redisOptions: { password: PASSWORD } });
    admin.on('error', () => {});
  });
  after(async () => {
    admin?.disconnect();
    await cluster?.stop();
  });

  it('PG_RESILIENCE_REDIS_CLUSTER sets it; a bad value names the variable and what is allowed (the value redacted, as everything beside the URL)', () => {
    const on = resolveConfig({ env: { PG_RESILIENCE_REDIS_URL: seed, PG_RESILIENCE_REDIS_CLUSTER: 'true' } });
    assert.equal(on.coordination.redis.cluster, true);
    assert.equal(resolveConfig({ env: {} }).coordination.redis.cluster, false);
    assert.throws(
      () => resolveConfig({ env: { PG_RESILIENCE_REDIS_CLUSTER: 'cluster' } }),
      /coordination\.redis\.cluster = "\[redacted\]" \(from env PG_RESILIENCE_REDIS_CLUSTER\): must be one of: true, false/,
    );
  });

  it('seeded by any node, members share one bucket on the node serving the fleet’s slot; without the setting, fallback', async () => {
    // A single-node client on a node that does not serve the slot gets MOVED: it never joins.
    const single = new FleetCoordinator(settings(seed, FLEET));
    const a = new FleetCoordinator(settings(seed, FLEET, { redis: { url: seed, cluster: true } }));
    const b = new FleetCoordinator(settings(seed, FLEET, { redis: { url: seed, cluster: true } }));
    try {
      assert.ok(await until(() => a.mode === 'fleet' && b.mode === 'fleet', 5000), 'both reach the cluster');
      await sleep(400);
      assert.equal(a.members, 2);
      const key = rateKey(FLEET, 'db:5432/app');
      assert.equal(await a.take(key, 10 / 1000, 5, 4), 4);
      const second = await b.take(key, 10 / 1000, 5, 4);
      assert.ok(second !== undefined && second <= 1, `the second member gets what is left: ${second}`);
      assert.equal(await admin.exists(key), 1, 'the bucket lives in the cluster');
      assert.equal(single.mode, 'fallback', 'a single-node client on another node never joins');
      assert.equal(await single.take(key, 10 / 1000, 5, 4), undefined);
    } finally {
      for (const c of [single, a, b]) c.dispose();
    }
  });

  it('an app with coordination on a cluster joins it through the register hook and exits on its own', async () => {
    const pg = await startServer();
    try {
      const fleet = FLEET; // the fleet whose slot the seed does not serve
      const r = await runExitChild(pg, seed, {
        PG_RESILIENCE_REDIS_CLUSTER: 'true',
        PG_RESILIENCE_FLEET: fleet,
      });
      assert.equal(r.code, 0, `exit code (${r.ms} ms): ${r.out}`);
      assert.match(r.out, /rows \[\{"one":1\}\]/);
      assert.ok(r.ms < 10_000, `exited within ${r.ms} ms`);
      assert.equal(
        await admin.exists(rateKey(fleet, `${pg.host}:${pg.port}/${pg.database}`)),
        1,
        'its rate limit took permits from the cluster',
      );
      assert.doesNotMatch(r.out, new RegExp(PASSWORD.replace(/[/]/g, '\\/')), 'no password in the output');
    } finally {
      await pg.close();
    }
  });
});

describe('fleet coordination over TLS (rediss://)', () => {
  let redis: RedisServer;
  let admin: Redis;
  let pg: TestServer;

  before(async () => {
    [redis, pg] = await Promise.all([startRedis({ password: PASSWORD, tls: true }), startServer()]);
    admin = new Redis(redis.url, { tls: { ca: readFileSync(redis.caFile!) }, maxRetriesPerRequest: 0 });
    admin.on('error', () => {});
  });
  after(async () => {
    admin?.disconnect();
    await Promise.all([redis?.stop(), pg?.close()]);
  });

  it('an app joins the fleet over TLS when it trusts the server’s certificate (NODE_EXTRA_CA_CERTS)', async () => {
    const fleet = 'tls-trusted';
    const r = await runExitChild(pg, redis.url, {
      PG_RESILIENCE_FLEET: fleet,
      NODE_EXTRA_CA_CERTS: redis.caFile!,
    });
    assert.equal(r.code, 0, `exit code (${r.ms} ms): ${r.out}`);
    assert.match(r.out, /rows \[\{"one":1\}\]/);
    assert.equal(
      await admin.exists(rateKey(fleet, `${pg.host}:${pg.port}/${pg.database}`)),
      1,
      'its rate limit took permits through the TLS connection',
    );
  });

  it('a certificate it does not trust: refused, the query runs anyway (fallback), nothing joins, no password shown', async () => {
    const fleet = 'tls-untrusted';
    const r = await runExitChild(pg, redis.url, { PG_RESILIENCE_FLEET: fleet });
    assert.equal(r.code, 0, `exit code (${r.ms} ms): ${r.out}`);
    assert.match(r.out, /rows \[\{"one":1\}\]/);
    assert.ok(r.ms < 10_000, `exited within ${r.ms} ms`);
    assert.equal(await admin.exists(rateKey(fleet, `${pg.host}:${pg.port}/${pg.database}`)), 0);
    assert.ok(!r.out.includes(PASSWORD) && !r.out.includes(encodeURIComponent(PASSWORD)), r.out);
  });
});
