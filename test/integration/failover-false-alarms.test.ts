// What a multi-host target must not take for a failover (docs/failover.md), on a real primary and
// synchronous standby: an administrator's pg_terminate_backend of one pooled connection (57P01, as in a
// fast shutdown, but the host is still the primary), and a write on a target that chose a read-only
// server (25006, the app's own error). Neither counts in pg_resilience.failovers nor closes the pool's
// other connections (counted on the server); the write's 25006 reaches the app as bare pg gives it.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import { type FailoverEvent, onFailoverDetected } from '../../src/instrumentation/failover.ts';
import { ATTR, METRICS } from '../../src/telemetry/catalog.ts';
import type { ReplicaPair } from '../support/replication.ts';

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  retry: { maxAttempts: 5, initialDelayMs: 20, maxDelayMs: 100, budget: { enabled: false } },
});
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const metricReader = new PeriodicExportingMetricReader({
  exporter: metricExporter,
  exportIntervalMillis: 3_600_000,
});
instrumentation.setMeterProvider(new MeterProvider({ readers: [metricReader] }));
const { startReplicaPair } = await import('../support/replication.ts');
const pg = (await import('pg')).default;

/** pg_resilience.failovers of `target`, summed over kinds. */
async function failovers(target: string): Promise<number> {
  await metricReader.forceFlush();
  const metric = (
    metricExporter
      .getMetrics()
      .at(-1)
      ?.scopeMetrics.flatMap((m) => m.metrics) ?? []
  ).find((m) => m.descriptor.name === METRICS.failovers.name);
  return (metric?.dataPoints ?? [])
    .filter((p) => p.attributes[ATTR.TARGET] === target)
    .reduce((n, p) => n + (typeof p.value === 'number' ? p.value : 0), 0);
}

describe('failover false alarms (real primary + synchronous standby)', { timeout: 60_000 }, () => {
  let pair: ReplicaPair;
  const pools: Array<InstanceType<typeof pg.Pool>> = [];
  const events: FailoverEvent[] = [];
  const stopListening = onFailoverDetected((e) => events.push(e));

  before(async () => {
    pair = await startReplicaPair();
    await pair.primary.query('CREATE TABLE writes (key text NOT NULL)');
    await pair.caughtUp();
  });

  after(async () => {
    stopListening();
    await Promise.all(pools.map((p) => p.end().catch(() => {})));
    await pair?.close();
    instrumentation.disable();
  });

  function poolFor(attrs: string, app: string): { pool: InstanceType<typeof pg.Pool>; target: string } {
    const { primary: p, standby: s } = pair;
    const hosts = `127.0.0.1:${p.port},127.0.0.1:${s.port}`;
    const pool = new pg.Pool({
      connectionString: `postgresql://postgres:${p.password}@${hosts}/app?target_session_attrs=${attrs}&application_name=${app}`,
      max: 4,
      idleTimeoutMillis: 60_000,
      connectionTimeoutMillis: 2000,
    });
    pool.on('error', () => {});
    pools.push(pool);
    return { pool, target: `${hosts}/app` };
  }

  /** The pids of `app`'s connections on the primary. */
  async function backends(app: string): Promise<number[]> {
    const r = await pair.primary.query<{ pid: number }>(
      'SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid',
      [app],
    );
    return r.rows.map((row) => row.pid);
  }

  it('a pg_terminate_backend of one pooled connection on the primary is no failover', async () => {
    const app = 'false-alarm-terminate';
    const { pool, target } = poolFor('read-write', app);
    // Three connections, all idle in the pool afterwards.
    await Promise.all([1, 2, 3].map(() => pool.query('SELECT pg_sleep(0.2)')));
    assert.equal(pool.idleCount, 3);
    const pids = await backends(app);
    assert.equal(pids.length, 3);
    const before = await failovers(target);
    events.length = 0;

    await pair.primary.query('SELECT pg_terminate_backend($1)', [pids[0]]);
    // pg-pool drops the ended client; the check of the host runs within roleCheckTimeoutMs.
    for (let i = 0; i < 100 && pool.totalCount !== 2; i++) await sleep(20);
    await sleep(1_000);

    assert.equal(await failovers(target), before, 'failovers counted');
    assert.deepEqual(
      events.filter((e) => e.target === target),
      [],
    );
    assert.deepEqual(await backends(app), pids.slice(1), 'the other idle connections stay open');
    assert.equal(pool.idleCount, 2);
    const r = await pool.query<{ one: number }>('SELECT 1 AS one');
    assert.equal(r.rows[0]?.one, 1);
  });

  it('a write on a read-only target gets 25006, counted as no failover, not retried', async () => {
    const app = 'false-alarm-read-only';
    const { pool, target } = poolFor('read-only', app);
    // Two idle connections to the standby: pg-pool closes the one whose query failed (as bare pg).
    await Promise.all([1, 2].map(() => pool.query('SELECT pg_sleep(0.2)')));
    assert.equal(pool.idleCount, 2);
    const before = await failovers(target);
    // The same logical target as the first test's pool: only this test's events count here.
    events.length = 0;

    await assert.rejects(
      pool.query(`INSERT INTO writes (key) VALUES ('x')`),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, '25006');
        assert.equal(err.constructor.name, 'DatabaseError');
        return true;
      },
    );
    await sleep(300);

    assert.equal(await failovers(target), before, 'failovers counted');
    assert.deepEqual(
      events.filter((e) => e.target === target),
      [],
    );
    // The pool's other connection to the standby was not evicted.
    assert.equal(pool.idleCount, 1);
    const rows = await pool.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
    assert.equal(rows.rows[0]?.rec, true);
  });
});
