// Telemetry from real signals: a real PostgreSQL behind fault proxies, the OpenTelemetry SDK with an
// in-memory span exporter, an in-memory log exporter and the Prometheus exporter serving /metrics over
// HTTP, instrumentation-pg loaded (so attempts have spans). One scenario exercises every policy event:
// retries, a retry suppressed in a transaction, a breaker that opens (calls rejected) and is closed by
// background recovery probes, rate-limit waits and drops, a timeout and absorbed client errors. Then:
// every metric of the catalog is scraped under its exact Prometheus series name with the values the
// scenario implies, `promtool check metrics` accepts the exposition, spans nest as documented, and the
// log records carry the documented lines.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { context, logs, metrics, type Span, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import {
  getResilienceState,
  isCircuitOpenError,
  isRateLimitedError,
  PgResilienceInstrumentation,
} from '../../src/index.ts';
import {
  ATTR,
  LOG_EVENTS,
  METRICS,
  prometheusLabel,
  prometheusName,
  prometheusSeries,
  SPAN_EVENTS,
  SPANS,
} from '../../src/telemetry/catalog.ts';
import { FaultProxy } from '../support/fault-proxy.ts';
import {
  familiesOf,
  names,
  parseExposition,
  promtoolCheckMetrics,
  type Sample,
  scrape,
  sum,
} from '../support/prometheus.ts';
import { startRelay } from '../support/relay.ts';
import type { TestServer } from '../support/postgres.ts';

async function freeLocalPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

// ---- the SDK, as an app would set it up ----
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
const spans = new InMemorySpanExporter();
trace.setGlobalTracerProvider(
  new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter: spans })] }),
);
const logRecords = new InMemoryLogRecordExporter();
logs.setGlobalLoggerProvider(
  new LoggerProvider({ processors: [new SimpleLogRecordProcessor({ exporter: logRecords })] }),
);
const metricsPort = await freeLocalPort();
const prometheus = new PrometheusExporter({ host: '127.0.0.1', port: metricsPort });
const meterProvider = new MeterProvider({ readers: [prometheus] });
metrics.setGlobalMeterProvider(meterProvider);
const METRICS_URL = `http://127.0.0.1:${metricsPort}/metrics`;

// ---- targets: proxies in front of a relay (the server starts after pg is patched) ----
const relay = await startRelay();
const DATABASE = 'app';
const mainProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const waitProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const dropProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const targetOf = (p: FaultProxy): string => `${p.host}:${p.port}/${DATABASE}`;
const MAIN = targetOf(mainProxy);
const WAIT = targetOf(waitProxy);
const DROP = targetOf(dropProxy);
/** Named in the configuration, never used: its series must be there anyway, at zero. */
const UNUSED = 'unused.example:5432/app';

const pgInstrumentation = new PgInstrumentation();
const instrumentation = new PgResilienceInstrumentation({
  retry: { initialDelayMs: 100, maxDelayMs: 100, jitter: 'none' },
  circuitBreaker: { consecutiveFailures: 5, halfOpenAfterMs: 60_000 },
  recovery: { intervalMs: 200 },
  telemetry: { logLevel: 'off', health: { port: 0 } },
  targets: {
    [MAIN]: {
      retry: { perErrorClass: { connect_refused: { maxAttempts: 5, initialDelayMs: 50, maxDelayMs: 50 } } },
    },
    [WAIT]: {
      rateLimit: { enabled: true, ratePerMinute: 600, burst: 1, strategy: 'wait' },
      timeout: { queryMs: 300 },
    },
    [DROP]: { rateLimit: { enabled: true, ratePerMinute: 6, burst: 1, strategy: 'drop' } },
    [UNUSED]: {},
  },
});
const { startServer } = await import('../support/postgres.ts');
const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const T = { timeout: 60_000 };
const tracer = trace.getTracer('telemetry-test');

const ours = (s: ReadableSpan): boolean => s.name.startsWith('pg_resilience ');
const attr = (s: ReadableSpan, key: string): unknown => s.attributes[key];
const childrenOf = (all: readonly ReadableSpan[], parent: ReadableSpan): ReadableSpan[] =>
  all.filter((s) => s.parentSpanContext?.spanId === parent.spanContext().spanId);
const labels = (o: Record<string, string>): Record<string, string> =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [prometheusLabel(k), v]));

describe('telemetry: spans, metrics and logs from a real scenario', T, () => {
  let server: TestServer;
  let samples: Sample[];
  let exposition: string;
  const pools: import('pg').Pool[] = [];
  const pool = (proxy: FaultProxy, max = 4): import('pg').Pool => {
    const p = new pg.Pool({ ...proxy.clientConfig(server), max });
    pools.push(p);
    return p;
  };
  let retrySpan: ReadableSpan | undefined;
  let appSpanId = '';

  before(async () => {
    server = await startServer({ database: DATABASE });
    relay.to(server.port);
  });

  after(async () => {
    for (const p of pools) await p.end().catch(() => {});
    for (const p of [mainProxy, waitProxy, dropProxy]) await p.close();
    await relay.close();
    await server?.close();
    instrumentation.disable();
    pgInstrumentation.disable();
    await meterProvider.shutdown();
  });

  it('a healthy operation gets no span of ours (operationSpans: on_event), and its series exist at zero', async () => {
    // The harness's own admin connections ran under the hook while the server started (a refused
    // connect retried is a span of ours): only this operation's spans count.
    spans.reset();
    const p = pool(mainProxy);
    const { rows } = await p.query('SELECT 1 AS one');
    assert.deepEqual(rows, [{ one: 1 }]);
    assert.equal(spans.getFinishedSpans().filter(ours).length, 0);
    assert.ok(
      spans.getFinishedSpans().some((s) => !ours(s)),
      'instrumentation-pg spans are exported',
    );
    const s = parseExposition(await scrape(METRICS_URL));
    const t = { [ATTR.TARGET]: MAIN };
    assert.equal(sum(s, prometheusName(METRICS.retries), labels(t)), 0);
    assert.ok(
      s.some((x) => x.name === prometheusName(METRICS.retries) && x.labels.pg_resilience_target === MAIN),
    );
    assert.equal(
      sum(s, prometheusName(METRICS.circuitState), labels({ ...t, [ATTR.STATE]: 'closed' })),
      1,
      'breaker closed',
    );
    assert.equal(sum(s, prometheusName(METRICS.circuitState), labels({ ...t, [ATTR.STATE]: 'open' })), 0);
    assert.equal(
      sum(
        s,
        `${prometheusName(METRICS.operationDuration)}_count`,
        labels({ ...t, [ATTR.OUTCOME]: 'success' }),
      ),
      1,
    );
    // The unused target named in the configuration: series present, zero.
    assert.ok(
      s.some((x) => x.labels.pg_resilience_target === UNUSED && x.name === prometheusName(METRICS.retries)),
    );
    assert.equal(
      sum(s, prometheusName(METRICS.circuitState), labels({ [ATTR.TARGET]: UNUSED, [ATTR.STATE]: 'closed' })),
      1,
    );
  });

  it('a retried operation: one pg_resilience query span under the app span, its later attempt nested in it', async () => {
    spans.reset();
    const p = pool(mainProxy); // a fresh pool: its first connection is new, so the proxy resets it
    mainProxy.resetNewConnections(1);
    const clear = sleep(30).then(() => mainProxy.clear());
    const rows = await tracer.startActiveSpan('app request', async (span: Span) => {
      appSpanId = span.spanContext().spanId;
      try {
        return (await p.query('SELECT 2 AS two')).rows;
      } finally {
        span.end();
      }
    });
    await clear;
    assert.deepEqual(rows, [{ two: 2 }]);
    const all = spans.getFinishedSpans();
    const mine = all.filter((s) => s.name === SPANS.operation('query'));
    assert.equal(mine.length, 1, `one operation span, got ${all.map((s) => s.name).join(', ')}`);
    retrySpan = mine[0]!;
    assert.equal(retrySpan.parentSpanContext?.spanId, appSpanId, 'child of the app span');
    assert.equal(attr(retrySpan, ATTR.ATTEMPTS), 2);
    assert.equal(attr(retrySpan, ATTR.OUTCOME), 'success');
    assert.equal(attr(retrySpan, ATTR.DB_SYSTEM_NAME), 'postgresql');
    assert.equal(attr(retrySpan, ATTR.SERVER_PORT), mainProxy.port);
    assert.equal(attr(retrySpan, ATTR.DB_NAMESPACE), DATABASE);
    assert.equal(retrySpan.status.code, SpanStatusCode.UNSET, 'status follows the final outcome');
    const retry = retrySpan.events.filter((e) => e.name === SPAN_EVENTS.retry);
    assert.equal(retry.length, 1);
    assert.equal(retry[0]!.attributes?.[ATTR.ERROR_TYPE], 'ECONNRESET');
    assert.equal(retry[0]!.attributes?.[ATTR.ATTEMPT], 1);
    assert.ok(
      childrenOf(all, retrySpan).some((s) => !ours(s)),
      `the second attempt's pg spans are children of the operation span: ${all.map((s) => `${s.name}<-${s.parentSpanContext?.spanId}`).join(', ')}`,
    );
    const log = logRecords
      .getFinishedLogRecords()
      .find((r) => r.eventName === LOG_EVENTS.retry && r.attributes[ATTR.TARGET] === MAIN);
    assert.ok(log, 'a retry log record');
    assert.equal(log.body, `Retrying query on ${MAIN} (attempt 2/7) after ECONNRESET; next try in 0.1 s`);
    assert.equal(log.severityText, 'WARN');
    assert.equal(
      log.spanContext?.traceId,
      retrySpan.spanContext().traceId,
      'log record correlated with the trace',
    );
  });

  it('a statement in a transaction is not retried: retry.suppressed (in_transaction) on its span', async () => {
    spans.reset();
    const p = pool(mainProxy);
    const client = await p.connect();
    client.on('error', () => {});
    await client.query('BEGIN');
    const running = client.query('SELECT pg_sleep(5)');
    await sleep(150);
    mainProxy.resetOpenConnections();
    const failure = await running.then(
      () => assert.fail('the statement should fail'),
      (e: unknown) => e,
    );
    client.release(true);
    const span = spans.getFinishedSpans().find((s) => s.name === SPANS.operation('query'));
    assert.ok(
      span,
      `an operation span for the suppressed statement (${String((failure as Error).message)}; spans: ${spans
        .getFinishedSpans()
        .map((s) => s.name)
        .join(', ')})`,
    );
    const event = span.events.find((e) => e.name === SPAN_EVENTS.retrySuppressed);
    assert.equal(event?.attributes?.[ATTR.REASON], 'in_transaction');
    assert.equal(span.status.code, SpanStatusCode.ERROR);
    assert.equal(attr(span, ATTR.OUTCOME), 'failure');
  });

  it('an outage: the breaker opens, calls are rejected, recovery probes close it once the server is reachable', async () => {
    spans.reset();
    const p = pool(mainProxy);
    await mainProxy.refuse(true);
    await assert.rejects(p.query('SELECT 3'), (e: Error & { code?: string }) => e.code === 'ECONNREFUSED');
    const policy = instrumentation.policies.get(MAIN)!;
    assert.equal(policy.circuitState, 'open');
    await assert.rejects(p.query('SELECT 4'), (e) => isCircuitOpenError(e));

    // The health endpoint, over HTTP, while the breaker is open.
    const base = await instrumentation.healthEndpoint();
    assert.ok(base?.startsWith('http://127.0.0.1:'), `bound to loopback: ${base}`);
    const down = await fetch(`${base}/resilience/health`);
    assert.equal(down.status, 503);
    const report = (await down.json()) as { healthy: boolean; score: number; reasons: string[] };
    assert.equal(report.healthy, false);
    assert.equal(report.score, 0);
    assert.ok(
      report.reasons.some((r) => r.includes(MAIN) && r.includes('open')),
      report.reasons.join('\n'),
    );
    const state = getResilienceState().targets.find((t) => t.target === MAIN);
    assert.equal(state?.circuit.state, 'open');
    assert.equal(state?.circuit.lastFailure?.errorType, 'ECONNREFUSED');
    assert.ok(state?.circuit.nextProbeAt !== null);
    const viaHttp = (await (await fetch(`${base}/resilience/state`)).json()) as {
      targets: { target: string }[];
    };
    assert.ok(viaHttp.targets.some((t) => t.target === MAIN));
    assert.equal((await fetch(`${base}/resilience/health`, { method: 'POST' })).status, 405);
    assert.equal((await fetch(`${base}/nope`)).status, 404);

    await sleep(500); // at least one failed probe
    await mainProxy.refuse(false);
    const start = Date.now();
    while ((policy.circuitState as string) !== 'closed') {
      assert.ok(Date.now() - start < 5_000, 'closed by a probe within 5 s');
      await sleep(20);
    }
    assert.deepEqual((await p.query('SELECT 5 AS five')).rows, [{ five: 5 }]);
    assert.equal((await fetch(`${await instrumentation.healthEndpoint()}/resilience/health`)).status, 200);

    const all = spans.getFinishedSpans();
    const rejected = all.find(
      (s) =>
        s.name === SPANS.operation('query') && s.events.some((e) => e.name === SPAN_EVENTS.circuitRejected),
    );
    assert.ok(rejected, 'the rejected call has a span with circuit.rejected');
    assert.equal(rejected.status.code, SpanStatusCode.ERROR);
    assert.equal(attr(rejected, ATTR.OUTCOME), 'rejected');
    const probes = all.filter((s) => s.name === SPANS.recoveryProbe);
    assert.ok(
      probes.some((s) => attr(s, ATTR.OUTCOME) === 'failure'),
      'a failed probe span',
    );
    assert.ok(
      probes.some((s) => attr(s, ATTR.OUTCOME) === 'success'),
      'a successful probe span',
    );
    const changes = all.flatMap((s) => s.events.filter((e) => e.name === SPAN_EVENTS.circuitStateChange));
    const pairs = changes.map(
      (e) => `${String(e.attributes?.[ATTR.FROM])}->${String(e.attributes?.[ATTR.TO])}`,
    );
    assert.ok(pairs.includes('closed->open'), pairs.join(', '));
    assert.ok(pairs.includes('half_open->closed'), pairs.join(', '));

    const opened = logRecords
      .getFinishedLogRecords()
      .find((r) => r.eventName === LOG_EVENTS.circuitStateChange && r.attributes[ATTR.TO] === 'open');
    assert.equal(opened?.severityText, 'ERROR');
    assert.match(
      String(opened?.body),
      new RegExp(`^Circuit breaker for ${MAIN.replace(/[.]/g, '\\.')} opened after ECONNREFUSED`),
    );
  });

  it('rate limits: waits (strategy wait) and drops (strategy drop); a timeout', async () => {
    const w = pool(waitProxy);
    const waited = await Promise.all([1, 2, 3, 4].map((n) => w.query('SELECT $1::int AS n', [n])));
    assert.deepEqual(
      waited.map((r) => r.rows[0].n),
      [1, 2, 3, 4],
    );
    await assert.rejects(
      w.query('SELECT pg_sleep(2)'),
      (e: Error & { code?: string }) => e.code === 'PGR_TIMEOUT',
    );
    const d = pool(dropProxy);
    const results = await Promise.allSettled([1, 2, 3].map(() => d.query('SELECT 1')));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    assert.ok(results.every((r) => r.status === 'fulfilled' || isRateLimitedError(r.reason)));
  });

  it('absorbed client errors: the process survives, each is reported once, the pool evicts the clients', async () => {
    const p = pool(waitProxy);
    const absorbed: string[] = [];
    const listener = instrumentation.onClientErrorAbsorbed((e) => absorbed.push(e.source));
    try {
      const held = await Promise.all([p.connect(), p.connect()]);
      for (const c of held) c.release();
      assert.equal(p.idleCount, 2, 'two idle clients, no error listener on the pool');
      waitProxy.resetOpenConnections();
      for (let i = 0; i < 40 && (absorbed.length < 2 || p.totalCount > 0); i++) await sleep(50);
      assert.deepEqual(absorbed, ['pool', 'pool']);
      assert.equal(p.totalCount, 0, 'pg-pool evicted both dead clients');
    } finally {
      listener.dispose();
    }
  });

  /**
   * Metrics that need a setup this single-process scenario does not have: a multi-host target that
   * fails over (each host's role, the write-unavailability window: failover.test.ts reads them from the
   * SDK and from a real Prometheus), a connect that waits for a connection-budget slot, and fleet
   * coordination through Redis (the fleet-aware breaker's state and probes).
   */
  const NOT_IN_THIS_SCENARIO = new Set<(typeof METRICS)[keyof typeof METRICS]>([
    METRICS.hostRole,
    METRICS.writeUnavailability,
    METRICS.connectionBudgetWaitDuration,
    METRICS.circuitFleetOpen,
    METRICS.circuitFleetProbes,
  ]);

  it('/metrics: every catalog metric under its exact series name, with the scenario’s values', async () => {
    exposition = await scrape(METRICS_URL);
    samples = parseExposition(exposition);
    // For the issue note and the README sample: PG_RESILIENCE_TEST_DUMP_METRICS=path keeps a copy.
    const dump = process.env.PG_RESILIENCE_TEST_DUMP_METRICS;
    if (dump) writeFileSync(dump, exposition);
    const present = names(samples);
    for (const spec of Object.values(METRICS)) {
      if (NOT_IN_THIS_SCENARIO.has(spec)) continue;
      for (const series of prometheusSeries(spec)) assert.ok(present.has(series), `missing series ${series}`);
    }
    // Not vacuous: none of those is produced here (if one were, it would belong in the check above).
    for (const spec of NOT_IN_THIS_SCENARIO) assert.ok(!present.has(prometheusSeries(spec)[0]!), spec.name);
    const v = (
      spec: (typeof METRICS)[keyof typeof METRICS],
      l: Record<string, string>,
      suffix = '',
    ): number => sum(samples, prometheusName(spec) + suffix, labels(l));
    const main = { [ATTR.TARGET]: MAIN };
    assert.equal(
      v(METRICS.retries, { ...main, [ATTR.ERROR_TYPE]: 'ECONNRESET', [ATTR.OPERATION]: 'query' }),
      1,
    );
    assert.equal(v(METRICS.retries, { ...main, [ATTR.ERROR_TYPE]: 'ECONNREFUSED' }), 4);
    assert.equal(v(METRICS.retryExhausted, { ...main, [ATTR.ERROR_TYPE]: 'ECONNREFUSED' }), 1);
    assert.equal(v(METRICS.retrySuppressed, { ...main, [ATTR.REASON]: 'in_transaction' }), 1);
    assert.equal(v(METRICS.circuitTransitions, { ...main, [ATTR.FROM]: 'closed', [ATTR.TO]: 'open' }), 1);
    assert.equal(
      v(METRICS.circuitTransitions, { ...main, [ATTR.FROM]: 'half_open', [ATTR.TO]: 'closed' }),
      1,
    );
    assert.ok(v(METRICS.circuitTransitions, { ...main, [ATTR.FROM]: 'open', [ATTR.TO]: 'half_open' }) >= 1);
    assert.ok(v(METRICS.circuitRejections, main) >= 1);
    assert.ok(v(METRICS.recoveryAttempts, { ...main, [ATTR.OUTCOME]: 'failure' }) >= 1);
    assert.equal(v(METRICS.recoveryAttempts, { ...main, [ATTR.OUTCOME]: 'success' }), 1);
    assert.equal(v(METRICS.circuitState, { ...main, [ATTR.STATE]: 'closed' }), 1);
    assert.equal(v(METRICS.circuitState, { ...main, [ATTR.STATE]: 'open' }), 0);
    assert.ok(v(METRICS.operationDuration, { ...main, [ATTR.OUTCOME]: 'rejected' }, '_count') >= 1);
    assert.ok(v(METRICS.rateLimitWaitDuration, { [ATTR.TARGET]: WAIT }, '_count') >= 2);
    assert.equal(v(METRICS.rateLimitQueueSize, { [ATTR.TARGET]: WAIT }), 0);
    assert.equal(v(METRICS.rateLimitRejections, { [ATTR.TARGET]: DROP, [ATTR.REASON]: 'drop' }), 2);
    // The timed-out statement was cancelled on the server (it did not run) and not sent again.
    assert.equal(v(METRICS.timeouts, { [ATTR.TARGET]: WAIT, [ATTR.OPERATION]: 'query' }), 1);
    assert.equal(v(METRICS.statementCancellations, { [ATTR.TARGET]: WAIT, [ATTR.RESULT]: 'cancelled' }), 1);
    assert.equal(v(METRICS.statementCancellations, { [ATTR.TARGET]: WAIT, [ATTR.RESULT]: 'no_answer' }), 0);
    assert.ok(v(METRICS.poolClientErrors, { [ATTR.TARGET]: WAIT, [ATTR.SOURCE]: 'pool' }) >= 1);
    assert.equal(v(METRICS.bulkheadRejections, main), 0);
    assert.equal(v(METRICS.poolClientLeaks, main), 0);
    assert.equal(v(METRICS.poolClientsLeaked, main), 0);
    // Bounded cardinality: no label value looks like SQL or a password.
    for (const s of samples.filter((x) => x.name.startsWith('pg_resilience_'))) {
      for (const value of Object.values(s.labels)) {
        assert.doesNotMatch(value, /SELECT|pg_sleep|password/i, `label value ${value} on ${s.name}`);
      }
    }
  });

  it('promtool check metrics accepts our metric families', async () => {
    const ownFamilies = familiesOf(exposition, (name) => name.startsWith('pg_resilience_'));
    assert.match(ownFamilies, /# TYPE pg_resilience_retries_total counter/);
    await promtoolCheckMetrics(ownFamilies);
  });

  it('promtool on the whole exposition: the only complaints are about instrumentation-pg’s own names', async () => {
    // instrumentation-pg's `db.client.connection.count` (an up-down counter) becomes the gauge
    // `db_client_connection_count`, which promtool's linter flags ("_count" suffix). Not ours to rename.
    const problems = await promtoolCheckMetrics(exposition).then(
      () => [],
      (e: Error) =>
        e.message
          .split('\n')
          .slice(1)
          .filter((l) => l.trim() !== ''),
    );
    for (const line of problems) assert.match(line, /^db_client_/, line);
  });
});
