// Telemetry from the policies, read through real OpenTelemetry SDK components (an in-memory span
// exporter, an in-memory metric exporter, an in-memory log exporter) with fake time: which operations
// get a span in each `operationSpans` mode, the log lines and their console throttle, the zero-valued
// series, the settings' errors, and that a failing SDK never fails a call.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { context, type DiagLogger, type Meter, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor } from '@opentelemetry/sdk-logs';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { isConfigError, resolveConfig } from '../../src/config/index.ts';
import type { OperationSpanMode, ResilienceOptions } from '../../src/config/types.ts';
import { isCircuitOpenError } from '../../src/errors.ts';
import { PolicyRegistry } from '../../src/policy/registry.ts';
import { ATTR, LOG_EVENTS, METRICS, SPAN_EVENTS, SPANS } from '../../src/telemetry/catalog.ts';
import {
  CONSOLE_BURST,
  CONSOLE_WINDOW_MS,
  type ConsoleSink,
  ResilienceLogs,
} from '../../src/telemetry/logs.ts';
import { ResilienceTelemetry } from '../../src/telemetry/telemetry.ts';
import { fakeClock } from '../support/clock.ts';

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());

const TARGET = 'db.example:5432/app';
const refused = () =>
  Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:5432'), {
    code: 'ECONNREFUSED',
    errno: -111,
    syscall: 'connect',
  });

function setup(mode: OperationSpanMode = 'on_event', options: ResilienceOptions = {}) {
  const { fake, clock } = fakeClock();
  const spans = new InMemorySpanExporter();
  const tracerProvider = new TracerProvider({
    spanProcessors: [new SimpleSpanProcessor({ exporter: spans })],
  });
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({
    exporter: metricExporter,
    exportIntervalMillis: 3_600_000,
  });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const logRecords = new InMemoryLogRecordExporter();
  const loggerProvider = new LoggerProvider({
    processors: [new SimpleLogRecordProcessor({ exporter: logRecords })],
  });
  const config = resolveConfig({
    env: {},
    options: {
      retry: { jitter: 'none', initialDelayMs: 100, maxDelayMs: 100, perErrorClass: {} },
      circuitBreaker: { consecutiveFailures: 2, halfOpenAfterMs: 60_000 },
      recovery: { enabled: false },
      ...options,
    },
  });
  const registry = new PolicyRegistry(config, clock);
  const telemetry = new ResilienceTelemetry(
    { logLevel: 'off', operationSpans: mode },
    {
      tracer: () => tracerProvider.getTracer('test'),
      meter: meterProvider.getMeter('test'),
      logger: () => loggerProvider.getLogger('test'),
    },
  );
  telemetry.attach(registry);
  const policy = registry.forTarget(TARGET);
  /** Every data point of a metric, as [attributes, value]. */
  const points = async (name: string) => {
    await reader.forceFlush();
    const all =
      metricExporter
        .getMetrics()
        .at(-1)
        ?.scopeMetrics.flatMap((s) => s.metrics) ?? [];
    const metric = all.find((m) => m.descriptor.name === name);
    return (metric?.dataPoints ?? []).map((p) => [p.attributes, p.value] as const);
  };
  return { fake, clock, spans, logRecords, registry, policy, points, telemetry };
}

describe('operation spans', () => {
  it('on_event: a healthy operation gets no span; a retried one gets one, with the retry event and its outcome', async () => {
    const { fake, spans, policy } = setup('on_event');
    assert.equal(await policy.execute(() => Promise.resolve('ok'), { operation: 'query' }), 'ok');
    assert.equal(spans.getFinishedSpans().length, 0);

    let n = 0;
    const running = policy.execute(() => (++n === 1 ? Promise.reject(refused()) : Promise.resolve('ok')), {
      operation: 'connect',
    });
    await fake.tickAsync(100);
    assert.equal(await running, 'ok');
    const [span, ...rest] = spans.getFinishedSpans();
    assert.equal(rest.length, 0);
    assert.equal(span!.name, SPANS.operation('connect'));
    assert.equal(span!.attributes[ATTR.ATTEMPTS], 2);
    assert.equal(span!.attributes[ATTR.OUTCOME], 'success');
    assert.equal(span!.attributes[ATTR.SERVER_ADDRESS], 'db.example');
    assert.equal(span!.attributes[ATTR.SERVER_PORT], 5432);
    assert.equal(span!.attributes[ATTR.DB_NAMESPACE], 'app');
    assert.equal(span!.status.code, SpanStatusCode.UNSET);
    assert.deepEqual(
      span!.events.map((e) => [e.name, e.attributes?.[ATTR.ERROR_TYPE], e.attributes?.[ATTR.DELAY]]),
      [[SPAN_EVENTS.retry, 'ECONNREFUSED', 100]],
    );
    // Started when the operation started (fake time), not at the retry.
    assert.equal(span!.startTime[0] * 1000 + span!.startTime[1] / 1e6, fake.now - 100);
  });

  it('on_event: the later attempts run inside the operation span (their spans are its children)', async () => {
    const { fake, spans, policy } = setup('on_event');
    const tracer = trace.getTracer('inner');
    let n = 0;
    const running = policy.execute(
      () => {
        const inner = tracer.startSpan('attempt');
        const parent = trace.getSpan(context.active());
        inner.end();
        return ++n === 1 ? Promise.reject(refused()) : Promise.resolve(parent?.spanContext().spanId);
      },
      { operation: 'query' },
    );
    await fake.tickAsync(100);
    const parentOfSecond = await running;
    const op = spans.getFinishedSpans().find((s) => s.name === SPANS.operation('query'));
    assert.equal(parentOfSecond, op?.spanContext().spanId);
  });

  it('always: every operation has a span; off: none', async () => {
    const always = setup('always');
    await always.policy.execute(() => Promise.resolve(1), { operation: 'query' });
    const [span] = always.spans.getFinishedSpans();
    assert.equal(span?.name, SPANS.operation('query'));
    assert.equal(span?.attributes[ATTR.ATTEMPTS], 1);

    const off = setup('off');
    let n = 0;
    const running = off.policy.execute(() => (++n === 1 ? Promise.reject(refused()) : Promise.resolve(1)), {
      operation: 'query',
    });
    await off.fake.tickAsync(100);
    await running;
    assert.equal(off.spans.getFinishedSpans().length, 0);
  });

  it('a call refused by the open breaker: circuit.rejected, status ERROR; the opening is an event', async () => {
    // Two attempts, 100 ms apart, no jitter (the options replace setup()'s retry settings).
    const { fake, spans, policy } = setup('on_event', {
      retry: { maxAttempts: 2, jitter: 'none', initialDelayMs: 100, maxDelayMs: 100 },
    });
    const failing = policy.execute(() => Promise.reject(refused()), { operation: 'query' });
    const outcome = failing.then(
      () => 'resolved',
      (e: unknown) => (e as { code?: string }).code,
    );
    await fake.tickAsync(1_000);
    assert.equal(await outcome, 'ECONNREFUSED');
    assert.equal(policy.circuitState, 'open');
    await assert.rejects(
      policy.execute(() => Promise.resolve(1), { operation: 'query' }),
      (e) => isCircuitOpenError(e),
    );
    const all = spans.getFinishedSpans();
    const rejected = all.find((s) => s.events.some((e) => e.name === SPAN_EVENTS.circuitRejected));
    assert.ok(rejected);
    assert.equal(rejected.status.code, SpanStatusCode.ERROR);
    assert.equal(rejected.attributes[ATTR.OUTCOME], 'rejected');
    assert.equal(rejected.attributes[ATTR.ERROR_TYPE], 'PGR_CIRCUIT_OPEN');
    const opened = all.flatMap((s) => s.events).find((e) => e.name === SPAN_EVENTS.circuitStateChange);
    assert.equal(opened?.attributes?.[ATTR.TO], 'open');
    assert.equal(opened?.attributes?.[ATTR.ERROR_TYPE], 'ECONNREFUSED');
  });
});

describe('metrics', () => {
  it('zero-valued series exist for a target before anything happened', async () => {
    const { points } = setup();
    const retries = await points(METRICS.retries.name);
    assert.ok(retries.length >= 3);
    assert.ok(retries.every(([a, v]) => a[ATTR.TARGET] === TARGET && v === 0));
    const states = await points(METRICS.circuitState.name);
    assert.deepEqual(states.map(([a, v]) => [a[ATTR.STATE], v]).sort(), [
      ['closed', 1],
      ['half_open', 0],
      ['open', 0],
    ]);
    const suppressed = await points(METRICS.retrySuppressed.name);
    assert.deepEqual([...new Set(suppressed.map(([a]) => a[ATTR.REASON]))].sort(), [
      'budget',
      'in_transaction',
      'not_retryable',
      'session_state',
      'unknown_outcome',
    ]);
  });

  it('a retry counts once, by error.type; the operation is recorded with its outcome', async () => {
    const { fake, policy, points } = setup();
    let n = 0;
    const running = policy.execute(() => (++n === 1 ? Promise.reject(refused()) : Promise.resolve(1)), {
      operation: 'query',
    });
    await fake.tickAsync(100);
    await running;
    const retries = await points(METRICS.retries.name);
    const counted = retries.filter(([, v]) => v !== 0);
    assert.deepEqual(counted, [
      [{ [ATTR.TARGET]: TARGET, [ATTR.OPERATION]: 'query', [ATTR.ERROR_TYPE]: 'ECONNREFUSED' }, 1],
    ]);
    const durations = await points(METRICS.operationDuration.name);
    assert.equal(durations.length, 1);
    assert.equal(durations[0]![0][ATTR.OUTCOME], 'success');
    assert.equal((durations[0]![1] as { count: number; sum: number }).count, 1);
    assert.equal((durations[0]![1] as { count: number; sum: number }).sum, 0.1);
  });

  it('operation durations are recorded after the caller has its result, and before any collection', async () => {
    const { policy, points } = setup();
    for (let i = 0; i < 3; i++) await policy.execute(() => Promise.resolve(i), { operation: 'query' });
    // No turn of the event loop since: a collection right now still sees all three.
    const now = await points(METRICS.operationDuration.name);
    assert.equal((now[0]?.[1] as { count: number } | undefined)?.count, 3);
    // Left to the event loop, they are recorded on its next turn (and counted once).
    await policy.execute(() => Promise.resolve(4), { operation: 'query' });
    await new Promise((resolve) => setImmediate(resolve));
    const later = await points(METRICS.operationDuration.name);
    assert.equal((later[0]?.[1] as { count: number } | undefined)?.count, 4);
  });

  it('an SDK whose instruments throw never fails a call, and is reported once through diag', async () => {
    const errors: unknown[][] = [];
    const diagLogger = { error: (...a: unknown[]) => errors.push(a) } as unknown as DiagLogger;
    const boom = () => {
      throw new Error('exporter on fire');
    };
    const throwing = {
      createHistogram: () => ({ record: boom }),
      createCounter: () => ({ add: boom }),
      createObservableGauge: () => ({ addCallback: () => {} }),
      createObservableUpDownCounter: () => ({ addCallback: () => {} }),
    } as unknown as Meter;
    const { clock, fake } = fakeClock();
    const registry = new PolicyRegistry(
      resolveConfig({
        env: {},
        options: { retry: { jitter: 'none', initialDelayMs: 10, perErrorClass: {} } },
      }),
      clock,
    );
    let telemetry: ResilienceTelemetry | undefined;
    assert.doesNotThrow(() => {
      telemetry = new ResilienceTelemetry(
        { logLevel: 'off', operationSpans: 'always' },
        {
          tracer: () => ({ startSpan: boom }) as never,
          meter: throwing,
          logger: () => ({ emit: boom, enabled: () => true }),
        },
        diagLogger,
      );
    }, 'zero series on a throwing meter');
    telemetry!.attach(registry);
    const policy = registry.forTarget(TARGET);
    let n = 0;
    const running = policy.execute(() => (++n === 1 ? Promise.reject(refused()) : Promise.resolve('rows')), {
      operation: 'query',
    });
    await fake.tickAsync(100); // connect_refused's own initial delay (the profile's perErrorClass)
    assert.equal(await running, 'rows');
    assert.equal(await policy.execute(() => Promise.resolve('again'), { operation: 'query' }), 'again');
    assert.equal(errors.length, 1, 'reported once');
    assert.match(String(errors[0]![0]), /telemetry call failed; queries are unaffected/);
  });
});

describe('logs', () => {
  const sink = () => {
    const lines: [string, string][] = [];
    const s: ConsoleSink = { write: (severity, line) => lines.push([severity, line]) };
    return { lines, s };
  };
  const retry = {
    target: TARGET,
    operation: 'query' as const,
    attempt: 1,
    maxAttempts: 3,
    delayMs: 1000,
    error: refused(),
    errorType: 'ECONNRESET',
    errorClass: 'connection_lost' as const,
  };

  it('the documented lines, at their levels; the console shows warn and above by default', () => {
    const { lines, s } = sink();
    const records = new InMemoryLogRecordExporter();
    const provider = new LoggerProvider({
      processors: [new SimpleLogRecordProcessor({ exporter: records })],
    });
    const logs = new ResilienceLogs(() => provider.getLogger('t'), 'warn', s);
    logs.retry(retry);
    logs.circuitStateChange(
      { target: TARGET, from: 'closed', to: 'open', at: 0, nextProbeAt: Date.UTC(2026, 10, 23, 3, 0, 5) },
      'ECONNREFUSED',
    );
    logs.circuitStateChange({ target: TARGET, from: 'half_open', to: 'closed', at: 0 }, undefined, 12_300);
    assert.deepEqual(lines, [
      [
        'warn',
        `[pg-resilience] Retrying query on ${TARGET} (attempt 2/3) after ECONNRESET; next try in 1.0 s`,
      ],
      [
        'error',
        `[pg-resilience] Circuit breaker for ${TARGET} opened after ECONNREFUSED: calls fail fast with CircuitOpenError; next probe at 2026-11-23T03:00:05.000Z`,
      ],
    ]);
    const got = records.getFinishedLogRecords();
    assert.deepEqual(
      got.map((r) => [r.eventName, r.severityText]),
      [
        [LOG_EVENTS.retry, 'WARN'],
        [LOG_EVENTS.circuitStateChange, 'ERROR'],
        [LOG_EVENTS.circuitStateChange, 'INFO'],
      ],
    );
    assert.equal(
      got[2]!.body,
      `Circuit breaker for ${TARGET} closed after 12.3 s: the target is healthy again`,
    );
    assert.equal(got[0]!.attributes[ATTR.TARGET], TARGET);
    assert.equal(got[0]!.attributes[ATTR.ERROR_TYPE], 'ECONNRESET');
  });

  it('the console is throttled per event and target, and says how many lines it skipped', () => {
    const { lines, s } = sink();
    let now = 0;
    const logs = new ResilienceLogs(
      () => ({ emit: () => {}, enabled: () => false }),
      'warn',
      s,
      () => now,
    );
    for (let i = 0; i < CONSOLE_BURST + 15; i++) logs.retry(retry);
    assert.equal(lines.length, CONSOLE_BURST);
    now += CONSOLE_WINDOW_MS;
    logs.retry(retry);
    assert.equal(lines.length, CONSOLE_BURST + 1);
    assert.match(lines.at(-1)![1], /\(15 similar lines skipped\)$/);
  });

  it('level off prints nothing; debug prints info lines', () => {
    const off = sink();
    new ResilienceLogs(() => ({ emit: () => {}, enabled: () => false }), 'off', off.s).retry(retry);
    assert.equal(off.lines.length, 0);
    const debug = sink();
    new ResilienceLogs(() => ({ emit: () => {}, enabled: () => false }), 'debug', debug.s).circuitStateChange(
      { target: TARGET, from: 'open', to: 'half_open', at: 0 },
      undefined,
    );
    assert.deepEqual(debug.lines, [
      ['info', `[pg-resilience] Circuit breaker for ${TARGET} half-open: letting a probe through`],
    ]);
  });
});

describe('telemetry settings (the `telemetry` section of the configuration)', () => {
  const telemetry = (options: ResilienceOptions, env: Record<string, string>) =>
    resolveConfig({ options, env }).telemetry;

  it('defaults, the environment, and code over the environment', () => {
    assert.deepEqual(telemetry({}, {}), {
      logLevel: 'warn',
      operationSpans: 'on_event',
      health: { host: '127.0.0.1' },
    });
    assert.deepEqual(
      telemetry(
        {},
        {
          PG_RESILIENCE_LOG_LEVEL: 'INFO',
          PG_RESILIENCE_OPERATION_SPANS: 'always',
          PG_RESILIENCE_HEALTH_PORT: '9465',
        },
      ),
      { logLevel: 'info', operationSpans: 'always', health: { port: 9465, host: '127.0.0.1' } },
    );
    assert.deepEqual(
      telemetry(
        { telemetry: { logLevel: 'error', health: { host: '0.0.0.0' } } },
        { PG_RESILIENCE_LOG_LEVEL: 'debug', PG_RESILIENCE_HEALTH_PORT: '9465' },
      ),
      { logLevel: 'error', operationSpans: 'on_event', health: { port: 9465, host: '0.0.0.0' } },
    );
  });

  it('the JSON file (PG_RESILIENCE_CONFIG) sets them too, under env and code', () => {
    const config = resolveConfig({
      env: { PG_RESILIENCE_CONFIG: '/app/pg-resilience.json', PG_RESILIENCE_OPERATION_SPANS: 'off' },
      readFile: () =>
        JSON.stringify({ telemetry: { logLevel: 'debug', operationSpans: 'always', health: { port: 0 } } }),
      options: { telemetry: { health: { host: '0.0.0.0' } } },
    });
    assert.deepEqual(config.telemetry, {
      logLevel: 'debug',
      operationSpans: 'off',
      health: { port: 0, host: '0.0.0.0' },
    });
  });

  it('one ConfigError naming every bad field, its value, its source and what is allowed', () => {
    assert.throws(
      () =>
        resolveConfig({
          options: { telemetry: { logLevel: 'loud' as never, colour: true } as never },
          env: { PG_RESILIENCE_HEALTH_PORT: '70000', PG_RESILIENCE_OPERATION_SPANS: 'sometimes' },
        }),
      (e: unknown) => {
        assert.ok(isConfigError(e));
        const text = (e as Error).message;
        assert.match(
          text,
          /telemetry\.logLevel = "loud" \(from code\): must be one of: off, error, warn, info, debug/,
        );
        assert.match(text, /telemetry\.colour/);
        assert.match(
          text,
          /telemetry\.health\.port = 70000 \(from env PG_RESILIENCE_HEALTH_PORT\): must be an integer/,
        );
        assert.match(
          text,
          /telemetry\.operationSpans = "sometimes" \(from env PG_RESILIENCE_OPERATION_SPANS\): must be one of: on_event, always, off/,
        );
        return true;
      },
    );
  });
});

describe('a COMMIT lost in flight, settled (withTransaction reports a commit.outcome step)', () => {
  const lost = Object.assign(new Error('Connection terminated unexpectedly'), {});
  const step = (result: 'committed' | 'aborted' | 'unknown', transactionId?: string) => ({
    type: 'commit.outcome' as const,
    event: {
      target: TARGET,
      operation: 'transaction' as const,
      result,
      transactionId,
      lookups: 2,
      durationMs: 5,
      error: lost,
      errorType: 'connection_lost',
    },
  });

  it('a span event with the result and the id, the counter by result (zero series for each), a log record', async () => {
    const { spans, policy, points, logRecords } = setup('on_event');
    assert.deepEqual(
      (await points(METRICS.transactionOutcomeResolutions.name)).map(([a, v]) => [a[ATTR.RESULT], v]),
      [
        ['committed', 0],
        ['aborted', 0],
        ['unknown', 0],
      ],
    );
    const seen: string[] = [];
    policy.onCommitOutcome((e) => seen.push(e.result));
    await policy.execute(
      async (_attempt, _signal, report) => {
        report?.(step('committed', '742'));
        return 'ok';
      },
      { operation: 'transaction' },
    );
    await policy
      .execute(
        async (_attempt, _signal, report) => {
          report?.(step('unknown', '743'));
          throw new Error('outcome unknown');
        },
        { operation: 'transaction', retry: false },
      )
      .catch(() => {});
    assert.deepEqual(seen, ['committed', 'unknown']);
    const events = spans
      .getFinishedSpans()
      .flatMap((s) => s.events)
      .filter((e) => e.name === SPAN_EVENTS.transactionOutcomeResolution)
      .map((e) => [
        e.attributes?.[ATTR.RESULT],
        e.attributes?.[ATTR.TRANSACTION_ID],
        e.attributes?.[ATTR.LOOKUPS],
      ]);
    assert.deepEqual(events, [
      ['committed', '742', 2],
      ['unknown', '743', 2],
    ]);
    const counts = new Map(
      (await points(METRICS.transactionOutcomeResolutions.name)).map(([a, v]) => [a[ATTR.RESULT], v]),
    );
    assert.deepEqual(Object.fromEntries(counts), { committed: 1, aborted: 0, unknown: 1 });
    const records = logRecords
      .getFinishedLogRecords()
      .filter((r) => r.eventName === LOG_EVENTS.transactionOutcomeResolution);
    assert.equal(records.length, 2);
    assert.match(String(records[1]!.body), /asked about transaction 743: no answer.*txid_status\(743\)/);
  });
});

describe('failover telemetry (instrumentation/failover.ts, write-availability.ts, host-choice.ts)', () => {
  const MULTI = 'db1:5432,db2:5432/app';
  const signal = (first: boolean, kind: 'read_only' | 'admin_shutdown' = 'read_only') => ({
    target: MULTI,
    host: 'db1:5432',
    code: kind === 'read_only' ? '25006' : '57P01',
    kind,
    first,
    evicted: 2,
    discarded: 1,
  });

  it('one failover counted per first signal, by kind (zero series for each); its window recorded in seconds; one log line each', async () => {
    const { telemetry, points, logRecords } = setup();
    telemetry.metrics.declareTarget(MULTI);
    const zero = (await points(METRICS.failovers.name)).filter(([a]) => a[ATTR.TARGET] === MULTI);
    assert.deepEqual(zero.map(([a, v]) => [a[ATTR.KIND], v]).sort(), [
      ['admin_shutdown', 0],
      ['cannot_connect_now', 0],
      ['crash_shutdown', 0],
      ['endpoint_flip', 0],
      ['read_only', 0],
    ]);
    telemetry.failoverDetected(signal(true));
    telemetry.failoverDetected(signal(false)); // the same failover, seen on another connection
    telemetry.failoverDetected(signal(false, 'admin_shutdown'));
    telemetry.writesRestored({ target: MULTI, kind: 'read_only', durationMs: 420 });
    const counted = (await points(METRICS.failovers.name)).filter(([, v]) => v !== 0);
    assert.deepEqual(counted, [[{ [ATTR.TARGET]: MULTI, [ATTR.KIND]: 'read_only' }, 1]]);
    const windows = await points(METRICS.writeUnavailability.name);
    assert.equal(windows.length, 1);
    assert.deepEqual(windows[0]![0], { [ATTR.TARGET]: MULTI, [ATTR.KIND]: 'read_only' });
    assert.equal((windows[0]![1] as { count: number; sum: number }).count, 1);
    assert.equal((windows[0]![1] as { count: number; sum: number }).sum, 0.42);
    const evicted = (await points(METRICS.connectionsEvicted.name)).filter(([, v]) => v !== 0);
    assert.deepEqual(evicted, [[{ [ATTR.TARGET]: MULTI, [ATTR.REASON]: 'failover' }, 6]]);
    const names = logRecords
      .getFinishedLogRecords()
      .map((r) => r.eventName)
      .filter((n) => n === LOG_EVENTS.failover || n === LOG_EVENTS.writesRestored);
    assert.deepEqual(names, [LOG_EVENTS.failover, LOG_EVENTS.writesRestored]);
  });

  it('the role gauge: 1 for each host’s current role, 0 for the others; host and port as their own attributes', async () => {
    const { telemetry, points } = setup();
    telemetry.metrics.watchHostRoles(() => [
      { target: MULTI, host: 'db1', port: 5432, role: 'read_only' },
      { target: MULTI, host: 'db2', port: 5432, role: 'primary' },
    ]);
    const roles = (await points(METRICS.hostRole.name))
      .filter(([, v]) => v === 1)
      .map(([a]) => [a[ATTR.SERVER_ADDRESS], a[ATTR.SERVER_PORT], a[ATTR.ROLE]]);
    assert.deepEqual(roles, [
      ['db1', 5432, 'read_only'],
      ['db2', 5432, 'primary'],
    ]);
    assert.equal((await points(METRICS.hostRole.name)).length, 8, 'four roles per host');
  });
});
