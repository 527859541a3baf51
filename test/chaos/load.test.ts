/**
 * The load run: a sustained run at the highest throughput the machine allows, with
 * the circuit breaker and the rate limiter active, against a real PostgreSQL, with the package loaded
 * the way users load it (the packed tarball in a scratch app, `node --expose-gc --import
 * pg-resilience/register app.mjs`, Prometheus exporter on, traces and logs exported over OTLP as the
 * SDK does by default, to a local sink). Checks, each failing the test on a breach:
 * - the event-loop lag p99 stays flat (later windows against early ones), heap after GC stays flat;
 * - the counts on /metrics equal the counts the workers observed (per outcome and error type,
 *   rate-limit rejections per reason, breaker rejections, exhausted + suppressed retries per transient
 *   error type) and the counters of getResilienceState() (operations, successes, failures, retries);
 * - the limiter dropped calls, the breaker opened and closed again, retries happened;
 * - every acknowledged insert is in the table once, no refused insert is, none is there twice;
 * - the app never crashed and exits 0.
 *
 * Shape: a calibration run (limiter off, full speed) measures the machine's throughput; the limit is
 * set to CAP_SHARE of it (PG_RESILIENCE_RATE_LIMIT, strategy drop). Then: a warm-up window at full
 * speed, then identical cycles (one measurement window each): paced below the limit, full speed above
 * it, a burst of pg_terminate_backend, a refused-connections outage through the fault proxy (the
 * breaker opens), recovery at full speed.
 *
 * Modes: CI (default) 60 s of load; PG_RESILIENCE_TEST_CHAOS_MODE=long runs PG_RESILIENCE_TEST_LOAD_DURATION_S
 * (default 300). Report: stdout and .tmp/chaos/load-report.md / .json. docs/chaos.md, "Load run".
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  ATTR,
  METRICS,
  type MetricSpec,
  prometheusLabel,
  prometheusName,
  prometheusSeries,
} from '../../src/telemetry/catalog.ts';
import { FaultProxy } from '../support/fault-proxy.ts';
import { repoRoot, scratchApp, type ScratchApp } from '../support/package.ts';
import { freePort, startServer, type TestServer } from '../support/postgres.ts';
import { parseExposition, type Sample, scrape, sum } from '../support/prometheus.ts';
import {
  appEnv,
  countRows,
  type CountRow,
  type FinalMessage,
  LoadApp,
  mb,
  MB,
  median,
  type OtlpSink,
  sleep,
  slope,
  startOtlpSink,
  type WindowMessage,
} from './load/harness.ts';

const MODE = process.env.PG_RESILIENCE_TEST_CHAOS_MODE === 'long' ? 'long' : 'ci';
const DURATION_S = Number(process.env.PG_RESILIENCE_TEST_LOAD_DURATION_S ?? (MODE === 'long' ? 300 : 60));
const WARMUP_S = MODE === 'long' ? 20 : 10;
const CYCLE_S = MODE === 'long' ? 20 : 10;
const CYCLES = Math.max(3, Math.floor((DURATION_S - WARMUP_S) / CYCLE_S));
const WORKERS = 32;
const POOL_MAX = 16;
const SAMPLE_MS = MODE === 'long' ? 5_000 : 2_000;
const CALIBRATION_S = 6;
/** The rate limit, as a share of the calibrated full-speed throughput. */
const CAP_SHARE = 0.6;
/** The paced phase's offered rate, as a share of the limit. */
const PACED_SHARE = 0.5;
const KV_ROWS = 1_000;
const SEED = 9;
/** Bounds: lag p99 of later windows ≤ LAG_FACTOR × early + LAG_SLACK_MS; heap growth ≤ HEAP_BOUND. */
const LAG_FACTOR = 2;
const LAG_SLACK_MS = 20;
const HEAP_BOUND = 10 * MB;

const REPORT_DIR = join(repoRoot, '.tmp', 'chaos');
const APP_SOURCE = new URL('./load/app.mjs', import.meta.url);

/** One step of a cycle, at a share of the cycle's length. */
const CYCLE = [
  { at: 0, name: 'paced', mode: 'paced' },
  { at: 0.3, name: 'full', mode: 'full' },
  { at: 0.5, name: 'terminate', mode: 'full' },
  { at: 0.65, name: 'outage', mode: 'full' },
  { at: 0.8, name: 'recovery', mode: 'full' },
] as const;
const TERMINATE_BURST = 3;

interface Check {
  readonly name: string;
  readonly expected: string | number;
  readonly actual: string | number;
  readonly ok: boolean;
}

describe(`load run (${MODE} mode: ${DURATION_S} s, ${WORKERS} workers, breaker and rate limiter on)`, () => {
  let server: TestServer;
  let proxy: FaultProxy;
  let app: ScratchApp;
  let sink: OtlpSink;
  const children: LoadApp[] = [];

  before(async () => {
    server = await startServer();
    proxy = await FaultProxy.forServer(server);
    sink = await startOtlpSink();
    await server.query(`CREATE TABLE load_kv (k int PRIMARY KEY, v text NOT NULL)`);
    await server.query(`INSERT INTO load_kv SELECT g, md5(g::text) FROM generate_series(1, ${KV_ROWS}) g`);
    await server.query(
      `CREATE TABLE load_rows (worker int NOT NULL, seq int NOT NULL, at timestamptz DEFAULT now())`,
    );
    app = scratchApp('load');
    app.write('app.mjs', readFileSync(APP_SOURCE, 'utf8'));
  });
  after(async () => {
    for (const c of children) c.kill();
    await proxy?.close();
    await sink?.close();
    await server?.close();
    app?.remove();
  });

  async function launch(env: Record<string, string>): Promise<{ child: LoadApp; metricsPort: number }> {
    const metricsPort = await freePort();
    const child = new LoadApp(
      app,
      appEnv({
        DATABASE_URL: proxy.connectionString(server),
        LOAD_WORKERS: String(WORKERS),
        LOAD_POOL_MAX: String(POOL_MAX),
        LOAD_SAMPLE_MS: String(SAMPLE_MS),
        LOAD_SEED: String(SEED),
        LOAD_KV_ROWS: String(KV_ROWS),
        OTEL_SERVICE_NAME: 'pg-resilience-load',
        OTEL_METRICS_EXPORTER: 'prometheus',
        OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1',
        OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
        // Traces and logs: the SDK's default exporters (OTLP), to the local sink.
        OTEL_EXPORTER_OTLP_ENDPOINT: sink.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        ...env,
      }),
    );
    children.push(child);
    await child.next('ready', 30_000);
    return { child, metricsPort };
  }

  async function finish(child: LoadApp): Promise<{ code: number | null; signal: string | null }> {
    child.send({ type: 'exit' });
    const timer = setTimeout(() => child.kill(), 15_000);
    const res = await child.exited;
    clearTimeout(timer);
    return res;
  }

  it(
    'event-loop lag and heap stay flat, /metrics counts equal what the workers saw, nothing lost or duplicated',
    { timeout: (DURATION_S + 240) * 1000 },
    async () => {
      // 1. Calibration: the highest throughput the machine allows here (limiter off, no faults).
      const cal = await launch({});
      cal.child.send({ type: 'phase', name: 'cal-warm', mode: 'full' });
      await sleep(1_500);
      cal.child.send({ type: 'phase', name: 'cal', mode: 'full' });
      const calStart = performance.now();
      await sleep(CALIBRATION_S * 1000);
      cal.child.send({ type: 'phase', name: 'cal-end', mode: 'idle' });
      const calSeconds = (performance.now() - calStart) / 1000;
      cal.child.send({ type: 'stop' });
      const calFinal = await cal.child.next('final', 30_000);
      const calRows = countRows(calFinal.counts).filter((r) => r.phase === 'cal');
      const calSuccess = total(calRows.filter((r) => r.kind === 'success'));
      const calErrors = total(calRows.filter((r) => r.kind === 'error'));
      const calExit = await finish(cal.child);
      assert.equal(calExit.code, 0, `calibration app exit: ${cal.child.output.slice(-4000)}`);
      const maxThroughput = calSuccess / calSeconds;
      assert.ok(maxThroughput > 50, `calibration: only ${maxThroughput.toFixed(0)} calls/s`);
      const limit = Math.max(10, Math.round(maxThroughput * CAP_SHARE));
      const paced = Math.max(5, Math.round(limit * PACED_SHARE));
      console.log(
        `calibration: ${maxThroughput.toFixed(0)} calls/s at full speed (${calErrors} errors); ` +
          `rate limit ${limit}/s (drop), paced phases ${paced}/s`,
      );
      await server.query('TRUNCATE load_rows');

      // 2. The run.
      const rateEnv = {
        PG_RESILIENCE_RATE_LIMIT: String(limit * 60),
        PG_RESILIENCE_RATE_LIMIT_BURST: '100',
        PG_RESILIENCE_RATE_LIMIT_STRATEGY: 'drop',
        PG_RESILIENCE_BREAKER_HALF_OPEN_AFTER_MS: '1000',
      };
      const { child, metricsPort } = await launch(rateEnv);
      const spansBefore = sink.stats.spans;
      const logsBefore = sink.stats.logRecords;
      const terminated: number[] = [];
      const t0 = performance.now();
      const at = (s: number): Promise<void> => sleep(t0 + s * 1000 - performance.now());
      child.send({ type: 'window', index: 0 });
      child.send({ type: 'phase', name: 'warmup', mode: 'full' });
      for (let c = 0; c < CYCLES; c++) {
        const start = WARMUP_S + c * CYCLE_S;
        const burst: Promise<void>[] = [];
        for (const step of CYCLE) {
          await at(start + step.at * CYCLE_S);
          if (step.at === 0) child.send({ type: 'window', index: c + 1 });
          if (step.name === 'recovery') await proxy.refuse(false);
          child.send({
            type: 'phase',
            name: step.name,
            mode: step.mode,
            rate: step.mode === 'paced' ? paced : undefined,
          });
          if (step.name === 'terminate') {
            // Fired on schedule, not one after another: each waits until its backends are gone.
            for (let i = 0; i < TERMINATE_BURST; i++) {
              burst.push(
                sleep(((i * 0.12 * CYCLE_S) / TERMINATE_BURST) * 1000)
                  .then(() => server.terminateBackends())
                  .then((n) => void terminated.push(n)),
              );
            }
          } else if (step.name === 'outage') {
            await proxy.refuse(true);
          }
        }
        await Promise.all(burst);
      }
      await at(WARMUP_S + CYCLES * CYCLE_S);
      const loadSeconds = (performance.now() - t0) / 1000;
      child.send({ type: 'phase', name: 'end', mode: 'idle' });
      child.send({ type: 'stop' });
      const final = await child.next('final', 60_000);

      // 3. What the operators see: /metrics, scraped after the workers stopped.
      const exposition = await scrape(`http://127.0.0.1:${metricsPort}/metrics`);
      const samples = parseExposition(exposition);
      const dbRows = await server.query<{ worker: number; seq: number; n: string }>(
        'SELECT worker, seq, count(*) AS n FROM load_rows GROUP BY worker, seq',
      );
      const exit = await finish(child);

      // 4. Checks and report.
      const rows = countRows(final.counts);
      const windows = [...child.windows, ...(final.lastWindow ? [final.lastWindow] : [])];
      const checks: Check[] = [
        ...countChecks(rows, samples, final),
        ...activityChecks(rows, samples, final),
        ...ledgerChecks(final.ledgers, dbRows.rows),
        ...flatnessChecks(windows, child.samples, final),
        {
          name: 'the app ran to the end and exited by itself with 0 (no crash, no unhandled rejection)',
          expected: '0',
          actual: String(exit.code ?? exit.signal),
          ok: exit.code === 0 && !/Unhandled|uncaught|FATAL ERROR/i.test(child.output),
        },
      ];
      const report = buildReport({
        maxThroughput,
        calSeconds,
        limit,
        paced,
        loadSeconds,
        rows,
        windows,
        samples: child.samples,
        final,
        metrics: samples,
        terminated,
        otlp: { spans: sink.stats.spans - spansBefore, logRecords: sink.stats.logRecords - logsBefore },
        checks,
        output: child.output,
      });
      console.log(report.markdown);
      const failed = checks.filter((c) => !c.ok);
      assert.deepEqual(
        failed.map((c) => `${c.name}: expected ${c.expected}, got ${c.actual}`),
        [],
        `load run breaches (report in ${report.path}); app output tail:\n${child.output.slice(-3000)}`,
      );
    },
  );
});

// ---------------------------------------------------------------------------------------------
// Checks

const total = (rows: readonly CountRow[]): number => rows.reduce((a, r) => a + r.n, 0);
const L = (key: string): string => prometheusLabel(key);
const countSeries = (spec: MetricSpec): string => prometheusSeries(spec).find((s) => s.endsWith('_count'))!;

/** Sums of `series` grouped by one label. */
function byLabel(samples: readonly Sample[], series: string, label: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples) {
    if (s.name !== series) continue;
    const k = s.labels[label] ?? '';
    out.set(k, (out.get(k) ?? 0) + s.value);
  }
  return out;
}

function countChecks(rows: readonly CountRow[], samples: readonly Sample[], final: FinalMessage): Check[] {
  const checks: Check[] = [];
  const eq = (name: string, expected: number, actual: number): void => {
    checks.push({ name, expected, actual, ok: expected === actual });
  };
  const duration = countSeries(METRICS.operationDuration);
  const outcome = L(ATTR.OUTCOME);
  const errorType = L(ATTR.ERROR_TYPE);
  const calls = total(rows);
  const successes = total(rows.filter((r) => r.kind === 'success'));
  const errors = rows.filter((r) => r.kind === 'error');

  eq(`${duration}: all operations = calls the workers made`, calls, sum(samples, duration));
  eq(
    `${duration}{outcome="success"} = successes seen`,
    successes,
    sum(samples, duration, { [outcome]: 'success' }),
  );
  eq(
    `${duration}{outcome="failure"|"rejected"} = errors seen`,
    total(errors),
    sum(samples, duration, { [outcome]: 'failure' }) + sum(samples, duration, { [outcome]: 'rejected' }),
  );
  // Per error type (the app labels its errors with classifyError(e).errorType, the metric's label).
  const seenByType = new Map<string, number>();
  for (const r of errors) seenByType.set(r.errorType, (seenByType.get(r.errorType) ?? 0) + r.n);
  const metricByType = byLabel(
    samples.filter((s) => s.name === duration && s.labels[outcome] !== 'success'),
    duration,
    errorType,
  );
  for (const type of new Set([...seenByType.keys(), ...metricByType.keys()])) {
    eq(
      `${duration}{error_type="${type}"} = errors of that type seen`,
      seenByType.get(type) ?? 0,
      metricByType.get(type) ?? 0,
    );
  }

  // Rate-limit rejections per reason = PGR_RATE_LIMITED errors with that reason.
  const rateLimited = prometheusName(METRICS.rateLimitRejections);
  const metricByReason = byLabel(samples, rateLimited, L(ATTR.REASON));
  const seenByReason = new Map<string, number>();
  for (const r of errors) {
    if (!r.detail.startsWith('rate_limited:')) continue;
    const reason = r.detail.slice('rate_limited:'.length);
    seenByReason.set(reason, (seenByReason.get(reason) ?? 0) + r.n);
  }
  for (const reason of new Set([...seenByReason.keys(), ...metricByReason.keys()])) {
    eq(
      `${rateLimited}{reason="${reason}"} = PGR_RATE_LIMITED (${reason}) seen`,
      seenByReason.get(reason) ?? 0,
      metricByReason.get(reason) ?? 0,
    );
  }
  eq(
    `${prometheusName(METRICS.circuitRejections)} = PGR_CIRCUIT_OPEN seen`,
    seenByType.get('PGR_CIRCUIT_OPEN') ?? 0,
    sum(samples, prometheusName(METRICS.circuitRejections)),
  );

  // Every transient failure the app saw ended its retries: exhausted or suppressed, once.
  const exhausted = byLabel(samples, prometheusName(METRICS.retryExhausted), errorType);
  const suppressed = byLabel(samples, prometheusName(METRICS.retrySuppressed), errorType);
  const transientByType = new Map<string, number>();
  for (const r of errors.filter((e) => e.detail === 'transient')) {
    transientByType.set(r.errorType, (transientByType.get(r.errorType) ?? 0) + r.n);
  }
  for (const type of new Set([...transientByType.keys(), ...exhausted.keys(), ...suppressed.keys()])) {
    if (type === '') continue; // zero series carry no error type
    eq(
      `retry.exhausted + retry.suppressed {error_type="${type}"} = transient errors of that type seen`,
      transientByType.get(type) ?? 0,
      (exhausted.get(type) ?? 0) + (suppressed.get(type) ?? 0),
    );
  }

  // The policies' own counters (getResilienceState(), read by the app) against both.
  const target = final.state.targets[0];
  checks.push({
    name: 'getResilienceState() has one target',
    expected: 1,
    actual: final.state.targets.length,
    ok: final.state.targets.length === 1,
  });
  if (target) {
    const c = target.counters;
    eq('getResilienceState() operations = calls the workers made', calls, c.operations);
    eq('getResilienceState() successes = successes seen', successes, c.successes);
    eq('getResilienceState() failures + rejections = errors seen', total(errors), c.failures + c.rejections);
    eq(
      `${duration}{outcome="rejected"} = getResilienceState() rejections`,
      c.rejections,
      sum(samples, duration, { [outcome]: 'rejected' }),
    );
    eq(
      `${prometheusName(METRICS.retries)} = getResilienceState() retries`,
      c.retries,
      sum(samples, prometheusName(METRICS.retries)),
    );
  }
  return checks;
}

function activityChecks(rows: readonly CountRow[], samples: readonly Sample[], final: FinalMessage): Check[] {
  const errors = rows.filter((r) => r.kind === 'error');
  const fullPhases = new Set(['full', 'terminate', 'outage', 'recovery', 'warmup']);
  const dropsAtFullSpeed = total(
    errors.filter((r) => r.detail.startsWith('rate_limited:') && fullPhases.has(r.phase)),
  );
  const circuitOpen = total(errors.filter((r) => r.errorType === 'PGR_CIRCUIT_OPEN'));
  const transitions = prometheusName(METRICS.circuitTransitions);
  const opened = sum(samples, transitions, { [L(ATTR.FROM)]: 'closed', [L(ATTR.TO)]: 'open' });
  const closed = sum(samples, transitions, { [L(ATTR.FROM)]: 'half_open', [L(ATTR.TO)]: 'closed' });
  const retries = sum(samples, prometheusName(METRICS.retries));
  const lastSuccesses = total(rows.filter((r) => r.phase === 'recovery' && r.kind === 'success'));
  const state = final.state.targets[0]?.circuit.state ?? 'none';
  return [
    {
      name: 'the rate limiter dropped calls at full speed (PGR_RATE_LIMITED seen)',
      expected: '> 0',
      actual: dropsAtFullSpeed,
      ok: dropsAtFullSpeed > 0,
    },
    {
      name: 'the breaker opened (transitions closed→open on /metrics, open seen in getResilienceState(), PGR_CIRCUIT_OPEN seen)',
      expected: '> 0 each',
      actual: `${opened} / ${final.statesSeen.open ?? 0} polls / ${circuitOpen}`,
      ok: opened > 0 && (final.statesSeen.open ?? 0) > 0 && circuitOpen > 0,
    },
    {
      name: 'the breaker closed again after every outage (half_open→closed = closed→open), closed at the end',
      expected: `${opened}, closed`,
      actual: `${closed}, ${state}`,
      ok: closed === opened && state === 'closed',
    },
    { name: 'retries happened', expected: '> 0', actual: retries, ok: retries > 0 },
    {
      name: 'calls succeeded in the recovery phases',
      expected: '> 0',
      actual: lastSuccesses,
      ok: lastSuccesses > 0,
    },
  ];
}

function ledgerChecks(
  ledgers: readonly string[],
  dbRows: readonly { worker: number; seq: number; n: string }[],
): Check[] {
  const inDb = new Map<string, number>();
  for (const r of dbRows) inDb.set(`${r.worker}:${r.seq}`, Number(r.n));
  let acked = 0;
  let ackedMissing = 0;
  let ackedTwice = 0;
  let refusedPresent = 0;
  let failedTwice = 0;
  let failedPresent = 0;
  const known = new Set<string>();
  ledgers.forEach((ledger, w) => {
    for (let s = 0; s < ledger.length; s++) {
      const key = `${w}:${s}`;
      known.add(key);
      const n = inDb.get(key) ?? 0;
      const status = ledger[s];
      if (status === 'a') {
        acked++;
        if (n === 0) ackedMissing++;
        if (n > 1) ackedTwice++;
      } else if (status === 'r') {
        if (n > 0) refusedPresent++;
      } else {
        if (n > 1) failedTwice++;
        if (n === 1) failedPresent++;
      }
    }
  });
  const unknownRows = [...inDb.keys()].filter((k) => !known.has(k)).length;
  return [
    {
      name: `every acknowledged insert is in the table exactly once (${acked} acknowledged; ${failedPresent} failed ones committed anyway)`,
      expected: '0 missing, 0 twice',
      actual: `${ackedMissing} missing, ${ackedTwice} twice`,
      ok: ackedMissing === 0 && ackedTwice === 0,
    },
    {
      name: 'no refused insert is in the table, no failed insert twice, no row nobody inserted',
      expected: '0 / 0 / 0',
      actual: `${refusedPresent} / ${failedTwice} / ${unknownRows}`,
      ok: refusedPresent === 0 && failedTwice === 0 && unknownRows === 0,
    },
  ];
}

interface WindowStats {
  readonly index: number;
  readonly seconds: number;
  readonly callsPerS: number;
  readonly successPerS: number;
  readonly lag: WindowMessage['lag'];
  /** Median heap after GC / RSS of the samples taken in the window (MB). */
  readonly heapMb: number;
  readonly rssMb: number;
}

function windowStats(
  windows: readonly WindowMessage[],
  samples: readonly { window: number; heapUsed: number; rss: number }[],
): WindowStats[] {
  const sorted = [...windows].sort((a, b) => a.index - b.index);
  let prevCalls = 1; // the app's setup query
  let prevSuccess = 1;
  return sorted.map((w) => {
    const seconds = (w.endedAt - w.startedAt) / 1000;
    const inWindow = samples.filter((s) => s.window === w.index);
    const stats: WindowStats = {
      index: w.index,
      seconds,
      callsPerS: Math.round((w.finishedCalls - prevCalls) / seconds),
      successPerS: Math.round((w.succeededCalls - prevSuccess) / seconds),
      lag: w.lag,
      heapMb: mb(median(inWindow.map((s) => s.heapUsed))),
      rssMb: mb(median(inWindow.map((s) => s.rss))),
    };
    prevCalls = w.finishedCalls;
    prevSuccess = w.succeededCalls;
    return stats;
  });
}

function flatnessChecks(
  windows: readonly WindowMessage[],
  samples: readonly { window: number; heapUsed: number; rss: number; at: number }[],
  final: FinalMessage,
): Check[] {
  const cycles = windowStats(windows, samples).filter((w) => w.index >= 1);
  const k = Math.max(1, Math.floor(cycles.length / 3));
  const early = cycles.slice(0, k);
  const late = cycles.slice(-k);
  const earlyP99 = median(early.map((w) => w.lag.p99));
  const lateP99 = median(late.map((w) => w.lag.p99));
  const lagBound = LAG_FACTOR * earlyP99 + LAG_SLACK_MS;
  const inFirst = samples.filter((s) => s.window === 1).map((s) => s.heapUsed);
  const inLast = samples.filter((s) => s.window === cycles.at(-1)?.index).map((s) => s.heapUsed);
  const heapStart = median(inFirst);
  const heapEnd = median(inLast);
  return [
    {
      name: `event-loop lag p99 flat: median of the last ${k} windows ≤ ${LAG_FACTOR} × median of the first ${k} + ${LAG_SLACK_MS} ms`,
      expected: `≤ ${lagBound.toFixed(1)} ms`,
      actual: `${lateP99.toFixed(1)} ms (first: ${earlyP99.toFixed(1)} ms)`,
      ok: cycles.length >= 2 && lateP99 <= lagBound,
    },
    {
      name: `heap after GC flat: last window's median ≤ first window's + ${mb(HEAP_BOUND)} MB`,
      expected: `≤ ${mb(heapStart + HEAP_BOUND)} MB`,
      actual: `${mb(heapEnd)} MB (first: ${mb(heapStart)} MB)`,
      ok: inFirst.length > 0 && inLast.length > 0 && heapEnd - heapStart <= HEAP_BOUND,
    },
    {
      name: `heap after GC once the workers stopped ≤ first window's + ${mb(HEAP_BOUND)} MB`,
      expected: `≤ ${mb(heapStart + HEAP_BOUND)} MB`,
      actual: `${mb(final.afterStop.heapUsed)} MB`,
      ok: final.afterStop.heapUsed - heapStart <= HEAP_BOUND,
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Report

interface ReportInput {
  maxThroughput: number;
  calSeconds: number;
  limit: number;
  paced: number;
  loadSeconds: number;
  rows: readonly CountRow[];
  windows: readonly WindowMessage[];
  samples: readonly { window: number; heapUsed: number; rss: number; at: number }[];
  final: FinalMessage;
  metrics: readonly Sample[];
  terminated: readonly number[];
  otlp: { spans: number; logRecords: number };
  checks: readonly Check[];
  output: string;
}

function buildReport(r: ReportInput): { markdown: string; path: string } {
  const ws = windowStats(r.windows, r.samples);
  const postWarm = r.samples.filter((s) => s.window >= 1);
  const heapSlope = slope(postWarm.map((s) => [s.at / 60_000, s.heapUsed / MB] as const));
  const calls = total(r.rows);
  const successes = total(r.rows.filter((x) => x.kind === 'success'));
  const phases = new Map<
    string,
    { calls: number; success: number; rateLimited: number; circuitOpen: number; other: number }
  >();
  for (const x of r.rows) {
    const p = phases.get(x.phase) ?? { calls: 0, success: 0, rateLimited: 0, circuitOpen: 0, other: 0 };
    p.calls += x.n;
    if (x.kind === 'success') p.success += x.n;
    else if (x.detail.startsWith('rate_limited:')) p.rateLimited += x.n;
    else if (x.errorType === 'PGR_CIRCUIT_OPEN') p.circuitOpen += x.n;
    else p.other += x.n;
    phases.set(x.phase, p);
  }
  const errorTypes = new Map<string, { n: number; detail: Set<string> }>();
  for (const x of r.rows.filter((y) => y.kind === 'error')) {
    const e = errorTypes.get(x.errorType) ?? { n: 0, detail: new Set<string>() };
    e.n += x.n;
    e.detail.add(x.detail);
    errorTypes.set(x.errorType, e);
  }
  const samplesOf = new Map(r.final.errorSamples);
  const dbClient = sum(r.metrics, 'db_client_operation_duration_count');
  const target = r.final.state.targets[0];

  const lines: string[] = [];
  lines.push(`# Load run report (${MODE} mode)`, '');
  lines.push(
    `- ${new Date().toISOString()}, Node ${process.version}, ${WORKERS} workers, pool max ${POOL_MAX}, seed ${SEED}`,
    `- calibration (limiter off, ${r.calSeconds.toFixed(1)} s at full speed): **${r.maxThroughput.toFixed(0)} calls/s**`,
    `- rate limit ${r.limit}/s (${CAP_SHARE * 100}% of calibration, burst 100, strategy drop); paced phases ${r.paced}/s`,
    `- load: ${r.loadSeconds.toFixed(1)} s (warm-up ${WARMUP_S} s + ${CYCLES} cycles of ${CYCLE_S} s: paced → full → ${TERMINATE_BURST}× pg_terminate_backend → refused connections ${(0.15 * CYCLE_S).toFixed(1)} s → recovery)`,
    `- ${calls} calls, ${successes} succeeded (${Math.round(successes / r.loadSeconds)}/s over the run); backends terminated per burst: ${r.terminated.join(', ')}`,
    `- breaker states seen by getResilienceState() polls: ${JSON.stringify(r.final.statesSeen)}; lowest rate-limit tokens seen: ${r.final.minTokens?.toFixed(1) ?? 'n/a'}`,
    `- OTLP sink received ${r.otlp.spans} spans and ${r.otlp.logRecords} log records; instrumentation-pg db_client_operation_duration_count: ${dbClient}`,
    `- heap after GC trend after warm-up: ${heapSlope.toFixed(2)} MB/min; after the workers stopped: ${mb(r.final.afterStop.heapUsed)} MB heap, ${mb(r.final.afterStop.rss)} MB RSS`,
    '',
  );
  lines.push(
    '## Windows',
    '',
    '| window | s | calls/s | successes/s | lag p50 ms | lag p99 ms | lag max ms | heap MB | RSS MB |',
  );
  lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const w of ws) {
    lines.push(
      `| ${w.index === 0 ? 'warm-up' : w.index} | ${w.seconds.toFixed(1)} | ${w.callsPerS} | ${w.successPerS} | ${w.lag.p50} | ${w.lag.p99} | ${w.lag.max} | ${w.heapMb} | ${w.rssMb} |`,
    );
  }
  lines.push(
    '',
    '## Phases (all cycles together)',
    '',
    '| phase | calls | successes | PGR_RATE_LIMITED | PGR_CIRCUIT_OPEN | other errors |',
  );
  lines.push('| --- | --- | --- | --- | --- | --- |');
  for (const [name, p] of phases) {
    lines.push(`| ${name} | ${p.calls} | ${p.success} | ${p.rateLimited} | ${p.circuitOpen} | ${p.other} |`);
  }
  lines.push(
    '',
    '## Errors the workers saw',
    '',
    '| error type | count | kind | example |',
    '| --- | --- | --- | --- |',
  );
  for (const [type, e] of [...errorTypes].sort((a, b) => b[1].n - a[1].n)) {
    lines.push(
      `| ${type} | ${e.n} | ${[...e.detail].join(', ')} | ${(samplesOf.get(type) ?? '').replace(/\|/g, '/')} |`,
    );
  }
  if (target) {
    lines.push('', `getResilienceState() counters: \`${JSON.stringify(target.counters)}\``);
  }
  lines.push('', '## Checks', '', '| check | expected | actual | result |', '| --- | --- | --- | --- |');
  for (const c of r.checks)
    lines.push(`| ${c.name} | ${c.expected} | ${c.actual} | ${c.ok ? 'pass' : '**FAIL**'} |`);
  const markdown = `${lines.join('\n')}\n`;

  mkdirSync(REPORT_DIR, { recursive: true });
  const path = join(REPORT_DIR, 'load-report.md');
  writeFileSync(path, markdown);
  writeFileSync(
    join(REPORT_DIR, 'load-report.json'),
    `${JSON.stringify(
      {
        mode: MODE,
        durationS: DURATION_S,
        workers: WORKERS,
        poolMax: POOL_MAX,
        seed: SEED,
        calibration: { callsPerS: r.maxThroughput, seconds: r.calSeconds },
        rateLimitPerS: r.limit,
        pacedPerS: r.paced,
        loadSeconds: r.loadSeconds,
        windows: ws,
        samples: r.samples,
        phases: Object.fromEntries(phases),
        counts: r.rows,
        state: r.final.state,
        statesSeen: r.final.statesSeen,
        afterStop: r.final.afterStop,
        terminated: r.terminated,
        otlp: r.otlp,
        heapSlopeMbPerMin: heapSlope,
        checks: r.checks,
        metrics: r.metrics.filter((s) => s.name.startsWith('pg_resilience_') && !s.name.endsWith('_bucket')),
      },
      null,
      2,
    )}\n`,
  );
  return { markdown, path };
}
