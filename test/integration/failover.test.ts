// Failover on a real primary and synchronous streaming standby (docs/failover.md): a multi-host pool
// with target_session_attrs=read-write writes unique keys from several workers while the primary goes
// away, then the standby is promoted. What the app must see: writes succeed again within 1 s of the new
// primary accepting writes; every acknowledged write is on the new primary, none twice; no 25006 reaches
// the app once the hook has seen one. Bare pg pointed at the old primary (run in a child process, where
// nothing patches pg) is measured on the same runs for comparison, and its numbers printed. Each run also
// reads the failover telemetry the SDK got (failovers by kind, each host's role, the write-unavailability
// window) from an in-memory metric reader.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import { type FailoverEvent, onFailoverDetected } from '../../src/instrumentation/failover.ts';
import { ATTR, METRICS, prometheusLabel, prometheusName } from '../../src/telemetry/catalog.ts';
import { dashboardQueries, withVariables } from '../../grafana/dashboards/src/queries.ts';
import { alertRules } from '../../scripts/alert-rules.ts';
import { freePort } from '../support/free-port.ts';
import { startPrometheus } from '../support/prometheus.ts';
import type { ReplicaPair } from '../support/replication.ts';

/** The target is 1 s (each run's gap is reported); asserted with headroom for a loaded CI machine. */
const RESUME_BOUND_MS = 2_000;

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  retry: { maxAttempts: 10, initialDelayMs: 20, maxDelayMs: 150, budget: { enabled: false } },
});
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const metricReader = new PeriodicExportingMetricReader({
  exporter: metricExporter,
  exportIntervalMillis: 3_600_000,
});
// And a real Prometheus scraping the same metrics, with the alert rules: the last test reads it.
const metricsPort = await freePort();
instrumentation.setMeterProvider(
  new MeterProvider({
    readers: [metricReader, new PrometheusExporter({ host: '127.0.0.1', port: metricsPort })],
  }),
);
const prometheus = await startPrometheus({
  targets: [`127.0.0.1:${metricsPort}`],
  rules: alertRules({ forOverride: '0s' }),
});
const { startReplicaPair } = await import('../support/replication.ts');
const { startRelay } = await import('../support/relay.ts');
const pg = (await import('pg')).default;

const T = { timeout: 45_000 };
const WORKERS = 4;

interface Run {
  acked: Set<string>;
  /** Time of each acknowledged write. */
  ackTimes: number[];
  errors: Map<string, number>;
  /** 25006 errors the app saw after the hook had seen its first. */
  lateReadOnly: number;
  /** Time of each 25006 the app saw. */
  readOnlyTimes: number[];
  /** When the workload was told to stop. */
  stoppedAt: number;
}

/** Writes unique keys from WORKERS workers until `stop` resolves. */
async function workload(
  pool: InstanceType<typeof pg.Pool>,
  stop: Promise<void>,
  seen: () => number,
  style: 'pool.query' | 'checkout' = 'pool.query',
): Promise<Run> {
  const run: Run = {
    acked: new Set(),
    ackTimes: [],
    errors: new Map(),
    lateReadOnly: 0,
    readOnlyTimes: [],
    stoppedAt: 0,
  };
  let done = false;
  void stop.then(() => {
    done = true;
    run.stoppedAt = Date.now();
  });
  await Promise.all(
    Array.from({ length: WORKERS }, async (_, w) => {
      for (let n = 0; !done && n < 100_000; n++) {
        const key = `w${w}-${n}`;
        const hookHadSeen = seen() > 0;
        try {
          if (style === 'pool.query') await pool.query('INSERT INTO writes (key) VALUES ($1)', [key]);
          else {
            // As kysely, TypeORM, MikroORM do: check out, run, release (without an error).
            const client = await pool.connect();
            try {
              await client.query('INSERT INTO writes (key) VALUES ($1)', [key]);
            } finally {
              client.release();
            }
          }
          run.acked.add(key);
          run.ackTimes.push(Date.now());
        } catch (err) {
          const code = String((err as { code?: string }).code ?? (err as Error).message);
          run.errors.set(code, (run.errors.get(code) ?? 0) + 1);
          if (code === '25006') run.readOnlyTimes.push(Date.now());
          if (code === '25006' && hookHadSeen) run.lateReadOnly++;
          await sleep(5);
        }
      }
    }),
  );
  return run;
}

/** Bare pg (no hook) writing to `port` for `ms`, in a child process; its acknowledged keys and errors. */
function bareWriter(
  port: number,
  password: string,
  ms: number,
): Promise<{ acked: string[]; errors: Record<string, number>; lastAckAt: number }> {
  const script = `
    const pg = require('pg');
    const pool = new pg.Pool({ host: '127.0.0.1', port: ${port}, user: 'postgres', password: process.env.PW, database: 'app', max: 2, connectionTimeoutMillis: 1000 });
    pool.on('error', () => {});
    const acked = [], errors = {}; let lastAckAt = 0; const end = Date.now() + ${ms};
    (async () => {
      for (let n = 0; Date.now() < end; n++) {
        const key = 'bare-' + n;
        try { await pool.query('INSERT INTO writes (key) VALUES ($1)', [key]); acked.push(key); lastAckAt = Date.now(); }
        catch (e) { const c = String(e.code || e.message); errors[c] = (errors[c] || 0) + 1; await new Promise(r => setTimeout(r, 20)); }
      }
      pool.end().catch(() => {});
      process.stdout.write(JSON.stringify({ acked, errors, lastAckAt }));
      process.exit(0);
    })();`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], {
      env: { ...process.env, PW: password },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', () => {
      try {
        resolve(JSON.parse(out));
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** A metric's data points of one target, as [attributes, value], read from the SDK now. */
async function points(name: string, target: string) {
  await metricReader.forceFlush();
  const metric = (
    metricExporter
      .getMetrics()
      .at(-1)
      ?.scopeMetrics.flatMap((m) => m.metrics) ?? []
  ).find((m) => m.descriptor.name === name);
  return (metric?.dataPoints ?? [])
    .filter((p) => p.attributes[ATTR.TARGET] === target)
    .map((p) => [p.attributes, p.value] as const);
}

/** What the telemetry says about `target`: failovers by kind, roles by port, write-unavailability windows. */
async function failoverTelemetry(target: string) {
  const failovers: Record<string, number> = {};
  for (const [a, v] of await points(METRICS.failovers.name, target)) {
    if (typeof v === 'number' && v > 0) failovers[String(a[ATTR.KIND])] = v;
  }
  const roles: Record<string, string> = {};
  for (const [a, v] of await points(METRICS.hostRole.name, target)) {
    if (v === 1) roles[String(a[ATTR.SERVER_PORT])] = String(a[ATTR.ROLE]);
  }
  let windows = 0;
  let windowSeconds = 0;
  for (const [, v] of await points(METRICS.writeUnavailability.name, target)) {
    const h = v as { count: number; sum: number };
    windows += h.count;
    windowSeconds += h.sum;
  }
  return { failovers, roles, windows, windowSeconds };
}

describe('failover (real primary + synchronous standby)', { timeout: 120_000 }, () => {
  const pairs: ReplicaPair[] = [];
  const pools: Array<InstanceType<typeof pg.Pool>> = [];
  let events: FailoverEvent[] = [];
  const stopListening = onFailoverDetected((e) => events.push(e));

  after(async () => {
    await prometheus.close();
    stopListening();
    await Promise.all(pools.map((p) => p.end().catch(() => {})));
    await Promise.all(pairs.map((p) => p.close()));
    instrumentation.disable();
  });

  async function setUp(): Promise<{ pair: ReplicaPair; pool: InstanceType<typeof pg.Pool> }> {
    const pair = await startReplicaPair();
    pairs.push(pair);
    await pair.primary.query(
      'CREATE TABLE writes (key text NOT NULL, at timestamptz DEFAULT clock_timestamp())',
    );
    const { primary: p, standby: s } = pair;
    const pool = new pg.Pool({
      connectionString: `postgresql://postgres:${p.password}@127.0.0.1:${p.port},127.0.0.1:${s.port}/app?target_session_attrs=read-write`,
      max: 6,
      connectionTimeoutMillis: 2000,
    });
    pool.on('error', () => {});
    pools.push(pool);
    events = [];
    return { pair, pool };
  }

  /** Waits (bounded) until the bare pg child has written a row. */
  async function bareWriting(pair: ReplicaPair): Promise<void> {
    for (let i = 0; i < 200; i++) {
      const r = await pair.primary.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM writes WHERE key LIKE 'bare-%'`,
      );
      if ((r.rows[0]?.n ?? 0) > 0) return;
      await sleep(25);
    }
    throw new Error('the bare pg writer did not start');
  }

  /** Acknowledged writes lost or duplicated on the new primary. */
  async function audit(
    pair: ReplicaPair,
    acked: Iterable<string>,
  ): Promise<{ lost: string[]; duplicated: number }> {
    const rows = await pair.standby.query<{ key: string; n: number }>(
      'SELECT key, count(*)::int AS n FROM writes GROUP BY key',
    );
    const have = new Map(rows.rows.map((r) => [r.key, r.n]));
    const lost = [...acked].filter((k) => !have.has(k));
    const duplicated = rows.rows.filter((r) => r.n > 1).length;
    return { lost, duplicated };
  }

  /**
   * Waits (bounded: 15 s) until Prometheus has scraped `target`'s failover counter. The first run comes
   * right after Prometheus starts, and on a loaded machine its first scrapes can take seconds.
   */
  async function scraped(target: string): Promise<void> {
    const expr = `${prometheusName(METRICS.failovers)}{${prometheusLabel(ATTR.TARGET)}="${target}"}`;
    for (const end = Date.now() + 15_000; Date.now() < end;) {
      if (((await prometheus.query(expr)).data?.result.length ?? 0) > 0) return;
      await sleep(100);
    }
    throw new Error(`Prometheus never scraped ${expr}`);
  }

  function report(name: string, run: Run, promotedAt: number, extra: Record<string, unknown> = {}): number {
    const times = [...run.ackTimes.slice().sort((a, b) => a - b), run.stoppedAt];
    const firstAfter = times.find((t) => t >= promotedAt);
    const gap = firstAfter === undefined ? Infinity : firstAfter - promotedAt;
    // The longest stretch without an acknowledged write: the app's write-unavailability window.
    let window = 0;
    for (let i = 1; i < times.length; i++)
      window = Math.max(window, (times[i] as number) - (times[i - 1] as number));
    console.log(
      `[failover] ${name}: acked ${run.acked.size}, errors ${JSON.stringify(Object.fromEntries(run.errors))}, ` +
        `first write ${gap} ms after the new primary accepted writes, longest time without a write ${window} ms, hook events ${JSON.stringify(events)}, ${JSON.stringify(extra)}`,
    );
    return gap;
  }

  it(
    'the primary stops, the standby is promoted: writes resume within 1 s, none lost or doubled',
    T,
    async () => {
      const { pair, pool } = await setUp();
      let release!: () => void;
      const stop = new Promise<void>((r) => (release = r));
      const running = workload(pool, stop, () => events.length);
      const bare = bareWriter(pair.primary.port, pair.primary.password, 4_000);
      await bareWriting(pair);
      const target = `127.0.0.1:${pair.primary.port},127.0.0.1:${pair.standby.port}/app`;
      await scraped(target); // so that Prometheus sees the failover counter rise from 0
      await pair.primary.stop();
      await pair.promote();
      const promotedAt = Date.now();
      await sleep(RESUME_BOUND_MS + 500);
      release();
      const run = await running;
      const bareRun = await bare;
      const gap = report('stop + promote', run, promotedAt, {
        bare: {
          acked: bareRun.acked.length,
          errors: bareRun.errors,
          lastAckBeforePromotion: bareRun.lastAckAt < promotedAt,
        },
      });
      const { lost, duplicated } = await audit(pair, run.acked);
      assert.deepEqual(lost, [], 'acknowledged writes missing on the new primary');
      assert.equal(duplicated, 0);
      assert.ok(gap <= RESUME_BOUND_MS, `writes resumed ${gap} ms after the new primary accepted writes`);
      assert.equal(run.lateReadOnly, 0);
      // Bare pg on the old primary's address: nothing succeeds after the failover.
      assert.ok(bareRun.lastAckAt < promotedAt);
      // The telemetry: one failover (the stop's 57P01 on every connection is the same one), the standby
      // now known as the primary, and the window without writes recorded once writes came back.
      const seen = await failoverTelemetry(target);
      console.log(`[failover] stop + promote telemetry: ${JSON.stringify(seen)}`);
      assert.deepEqual(seen.failovers, { admin_shutdown: 1 });
      assert.equal(seen.roles[String(pair.standby.port)], 'primary');
      assert.notEqual(seen.roles[String(pair.primary.port)], 'primary');
      assert.equal(seen.windows, 1);
      assert.ok(seen.windowSeconds > 0 && seen.windowSeconds < 10, `window ${seen.windowSeconds} s`);
    },
  );

  it(
    'the primary stays up read-only, the standby is promoted: 25006 evicts, writes resume within 1 s',
    T,
    async () => {
      const { pair, pool } = await setUp();
      let release!: () => void;
      const stop = new Promise<void>((r) => (release = r));
      const running = workload(pool, stop, () => events.length);
      const bare = bareWriter(pair.primary.port, pair.primary.password, 4_000);
      await bareWriting(pair);
      await sleep(300);
      // Demoted while up (a fenced primary, or an endpoint that now leads to a standby): every session of
      // the old primary is read-only from its next transaction.
      await pair.primary.query('ALTER SYSTEM SET default_transaction_read_only = on');
      await pair.primary.query('SELECT pg_reload_conf()');
      await pair.promote();
      const promotedAt = Date.now();
      await sleep(RESUME_BOUND_MS + 500);
      release();
      const run = await running;
      const bareRun = await bare;
      const gap = report('demoted while up + promote', run, promotedAt, {
        bare: { acked: bareRun.acked.length, errors: bareRun.errors },
      });
      const { lost, duplicated } = await audit(pair, run.acked);
      assert.deepEqual(lost, [], 'acknowledged writes missing on the new primary');
      assert.equal(duplicated, 0);
      assert.ok(gap <= RESUME_BOUND_MS, `writes resumed ${gap} ms after the new primary accepted writes`);
      assert.ok(
        events.some((e) => e.code === '25006'),
        'the hook saw the 25006',
      );
      assert.equal(run.lateReadOnly, 0, 'a 25006 reached the app after the hook had seen one');
      assert.ok((bareRun.errors['25006'] ?? 0) > 0, 'bare pg on the old address gets 25006');
      const target = `127.0.0.1:${pair.primary.port},127.0.0.1:${pair.standby.port}/app`;
      const seen = await failoverTelemetry(target);
      console.log(`[failover] demoted while up telemetry: ${JSON.stringify(seen)}`);
      assert.deepEqual(seen.failovers, { read_only: 1 });
      assert.equal(seen.roles[String(pair.standby.port)], 'primary');
      assert.notEqual(seen.roles[String(pair.primary.port)], 'primary', 'the demoted primary is not primary');
      assert.equal(seen.windows, 1);
      assert.ok(seen.windowSeconds > 0 && seen.windowSeconds < 10, `window ${seen.windowSeconds} s`);
    },
  );

  it(
    'the endpoint flips (one address, old connections still on the demoted node), checkout workload: writes resume within 1 s',
    T,
    async () => {
      const pair = await startReplicaPair();
      pairs.push(pair);
      await pair.primary.query(
        'CREATE TABLE writes (key text NOT NULL, at timestamptz DEFAULT clock_timestamp())',
      );
      const relay = await startRelay();
      relay.to(pair.primary.port);
      const pool = new pg.Pool({
        ...pair.primary.clientConfig({ port: relay.port }),
        max: 6,
        connectionTimeoutMillis: 2000,
      });
      pool.on('error', () => {});
      pools.push(pool);
      events = [];
      try {
        let release!: () => void;
        const stop = new Promise<void>((r) => (release = r));
        const running = workload(pool, stop, () => events.length, 'checkout');
        await sleep(500);
        // The old primary stays up, read-only; the standby is promoted; the address now leads to it.
        await pair.primary.query('ALTER SYSTEM SET default_transaction_read_only = on');
        await pair.primary.query('SELECT pg_reload_conf()');
        await pair.promote();
        relay.to(pair.standby.port);
        const flippedAt = Date.now();
        await sleep(RESUME_BOUND_MS + 500);
        release();
        const run = await running;
        const gap = report('endpoint flip', run, flippedAt);
        const { lost, duplicated } = await audit(pair, run.acked);
        assert.deepEqual(lost, [], 'acknowledged writes missing on the new primary');
        assert.equal(duplicated, 0);
        assert.ok(gap <= RESUME_BOUND_MS, `writes resumed ${gap} ms after the flip`);
        assert.ok(
          events.some((e) => e.code === '25006' && e.evicted + e.discarded > 0),
          'old connections evicted',
        );
        // Before the flip, every new connection still reaches the read-only node. After it, only a client
        // checked out before it, or one idle connection opened before it (its 25006 evicts the rest),
        // can get a 25006: a held client is never retried on another connection.
        const readOnly = run.readOnlyTimes.filter((t) => t > flippedAt).length;
        assert.ok(readOnly <= WORKERS + 1, `${readOnly} statements got 25006 after the flip`);
        assert.ok(
          run.ackTimes.filter((t) => t > flippedAt + RESUME_BOUND_MS).length > 0,
          'writes flow after the flip',
        );
        const target = events.find((e) => e.kind === 'endpoint_flip')?.target ?? '';
        assert.equal(target, `127.0.0.1:${relay.port}/app`);
        const seen = await failoverTelemetry(target);
        console.log(`[failover] endpoint flip telemetry: ${JSON.stringify(seen)}`);
        assert.deepEqual(seen.failovers, { endpoint_flip: 1 });
        assert.deepEqual(seen.roles, {}, 'one address: no host roles');
        assert.equal(seen.windows, 1);
        assert.ok(seen.windowSeconds > 0 && seen.windowSeconds < 10, `window ${seen.windowSeconds} s`);
      } finally {
        await relay.close();
      }
    },
  );

  it(
    'the breaker opened while no host accepted writes closes once the standby is promoted, after a checkout too',
    T,
    async () => {
      const { pair, pool } = await setUp();
      // A checked-out client (withTransaction, kysely, TypeORM…) is constructed for one host of the list;
      // the target's recovery probe, built from it, must still choose its host from the list.
      const client = await pool.connect();
      await client.query('SELECT 1');
      client.release();
      await pair.primary.stop();
      const code = (err: unknown) => String((err as { code?: string }).code ?? (err as Error).message);
      let open = false;
      for (let i = 0; i < 200 && !open; i++) {
        try {
          await pool.query('INSERT INTO writes (key) VALUES ($1)', [`open-${i}`]);
        } catch (err) {
          open = code(err) === 'PGR_CIRCUIT_OPEN';
        }
      }
      assert.ok(open, 'the breaker opened while no host accepted writes');
      await pair.promote();
      const promotedAt = Date.now();
      let gap: number | undefined;
      for (let i = 0; i < 400 && gap === undefined; i++) {
        try {
          await pool.query('INSERT INTO writes (key) VALUES ($1)', [`after-${i}`]);
          gap = Date.now() - promotedAt;
        } catch {
          await sleep(25);
        }
      }
      console.log(`[failover] breaker open, then promote: first write ${gap} ms after the promotion`);
      // The probe runs every recovery.intervalMs (500 ms by default) while the breaker is open.
      assert.ok(gap !== undefined && gap <= RESUME_BOUND_MS + 500, `writes resumed ${gap} ms after`);
    },
  );

  it(
    'in a real Prometheus: the failover alert fires and the Failover row of the dashboard has data',
    T,
    async () => {
      // One more evaluation after the last scrape of the runs above.
      await sleep(2_500);
      const fired = (await prometheus.alerts()).filter(
        (a) => a.labels.alertname === 'PgResilienceFailoverDetected',
      );
      assert.ok(
        fired.some((a) => a.state === 'firing' || a.state === 'pending'),
        `PgResilienceFailoverDetected: ${JSON.stringify(fired)}`,
      );
      const failoverPanels = dashboardQueries().filter((q) =>
        ['Failovers detected', 'Host roles', 'Write-unavailability window'].includes(q.panel),
      );
      assert.equal(failoverPanels.length, 3);
      for (const q of failoverPanels) {
        const expr = withVariables(q.expr, { rateInterval: '2m' });
        const res = await prometheus.query(expr);
        assert.equal(res.status, 'success', `${q.panel}: ${res.error}`);
        assert.ok((res.data?.result.length ?? 0) > 0, `${q.panel} has no data: ${expr}`);
      }
    },
  );
});
