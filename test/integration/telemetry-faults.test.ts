// Telemetry faults: a broken telemetry backend must never fail or slow the app's queries.
// Each run is a child process started the way users start it — `node --import pg-resilience/register`
// (here the TypeScript source, src/register.ts) with OTEL_EXPORTER_OTLP_ENDPOINT pointing at:
// - a healthy OTLP/HTTP receiver (real HTTP server on loopback, answers 200): the baseline;
// - a closed port (connection refused);
// - a server that accepts and never answers (hangs);
// - a server that answers 500;
// and one more run that sets up the SDK in code (NodeSDK + PgResilienceInstrumentation, as documented for
// programmatic use) with exporters that throw synchronously: a span exporter (behind a simple and a batch
// processor), a log exporter (simple and batch) and metric readers whose exporter throws and whose
// `collect()` throws.
// Every run does the same workload against a real PostgreSQL: sequential measured queries with an
// operation span for each (PG_RESILIENCE_OPERATION_SPANS=always), plus a background stream of operations
// against a dead port (retries, breaker, log records) so every signal is produced. Checks: every measured
// query succeeds; the process neither crashes nor reports an unhandled rejection and exits by itself
// (0); the receivers did get export requests (the faults were met); and the median query latency is
// within 2 × the healthy run's median + 5 ms (a generous bound: the machine is small and shared).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort, startServer, type TestServer } from '../support/postgres.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REGISTER = fileURLToPath(new URL('../../src/register.ts', import.meta.url));
const MEASURED = 200;

// The app, run with `--input-type=module --eval` from the repository root (so bare imports resolve).
// THROWING=1: it starts the SDK itself, with throwing exporters; otherwise register did it.
const APP = String.raw`
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
const require = createRequire(process.cwd() + '/app.cjs');
process.on('uncaughtExceptionMonitor', (e, origin) => console.log('CRASH ' + origin + ' ' + (e && e.stack)));
let sdk;
if (process.env.THROWING === '1') {
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const { PgInstrumentation } = await import('@opentelemetry/instrumentation-pg');
  const { SimpleSpanProcessor, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace');
  const { SimpleLogRecordProcessor, BatchLogRecordProcessor } = await import('@opentelemetry/sdk-logs');
  const { PeriodicExportingMetricReader } = await import('@opentelemetry/sdk-metrics');
  const { PgResilienceInstrumentation } = await import('./src/index.ts');
  let thrown = 0;
  const boom = (what) => { thrown++; throw new Error(what + ' exporter boom'); };
  const exporter = (what) => ({
    export: () => boom(what),
    shutdown: () => boom(what + ' shutdown'),
    forceFlush: () => boom(what + ' flush'),
  });
  class CollectThrows extends PeriodicExportingMetricReader {
    collect() { boom('collect'); }
  }
  const metricExporter = {
    ...exporter('metric'),
    selectAggregationTemporality: () => 0,
  };
  sdk = new NodeSDK({
    spanProcessors: [
      new SimpleSpanProcessor({ exporter: exporter('span') }),
      new BatchSpanProcessor({ exporter: exporter('span-batch'), scheduledDelayMillis: 50 }),
    ],
    logRecordProcessors: [
      new SimpleLogRecordProcessor({ exporter: exporter('log') }),
      new BatchLogRecordProcessor({ exporter: exporter('log-batch'), scheduledDelayMillis: 50 }),
    ],
    metricReaders: [
      new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 100, exportTimeoutMillis: 100 }),
      new CollectThrows({ exporter: metricExporter, exportIntervalMillis: 100, exportTimeoutMillis: 100 }),
    ],
    instrumentations: [new PgInstrumentation(), new PgResilienceInstrumentation()],
  });
  sdk.start();
  globalThis.thrownCount = () => thrown;
}
const pg = require('pg');
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
const dead = new pg.Pool({ host: '127.0.0.1', port: Number(process.env.DEAD_PORT), user: 'u', password: 'p', database: 'app', max: 1 });
const background = [];
for (let i = 0; i < 30; i++) await pool.query('SELECT 1');
const latencies = [];
let failed = 0;
for (let i = 0; i < ${MEASURED}; i++) {
  if (i % 20 === 0) background.push(dead.query('SELECT 1').then(() => 'ok', (e) => e.code ?? e.message));
  const t0 = performance.now();
  try {
    const { rows } = await pool.query('SELECT $1::int AS n', [i]);
    if (rows[0].n !== i) failed++;
  } catch (e) {
    failed++;
    console.log('QUERY FAILED ' + (e && e.message));
  }
  latencies.push(performance.now() - t0);
  // Let exporters' timers and sockets run between queries, as in a real app.
  if (i % 10 === 0) await new Promise((r) => setTimeout(r, 20));
}
const deadErrors = await Promise.all(background);
await pool.end();
await dead.end();
if (sdk) await sdk.shutdown().catch((e) => console.log('SHUTDOWN REJECTED ' + e.message));
const sorted = [...latencies].sort((a, b) => a - b);
const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
console.log('RESULT ' + JSON.stringify({
  ok: latencies.length - failed, failed, median: q(0.5), p90: q(0.9), max: sorted[sorted.length - 1],
  deadErrors: [...new Set(deadErrors)], thrown: globalThis.thrownCount?.() ?? null,
}));
// The app owns its SDK: it exits when done. Under register it stays up like a server until SIGTERM,
// unless EXIT_NATURALLY=1 (a script that simply ends).
if (sdk) process.exit(0);
if (process.env.EXIT_NATURALLY !== '1') setInterval(() => {}, 1_000);
`;

interface Result {
  ok: number;
  failed: number;
  median: number;
  p90: number;
  max: number;
  deadErrors: string[];
  thrown: number | null;
}

interface Run {
  result: Result | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  ms: number;
  /** From SIGTERM to exit (runs under register). */
  stopMs: number | undefined;
}

function runApp(env: NodeJS.ProcessEnv, useRegister: boolean, killAfterMs = 60_000): Promise<Run> {
  const started = Date.now();
  const args = [
    '--disable-warning=ExperimentalWarning',
    ...(useRegister ? ['--import', REGISTER] : []),
    '--input-type=module',
    '--eval',
    APP,
  ];
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: {
      ...process.env,
      OTEL_SERVICE_NAME: 'telemetry-faults',
      OTEL_BSP_SCHEDULE_DELAY: '50',
      OTEL_BLRP_SCHEDULE_DELAY: '50',
      OTEL_METRIC_EXPORT_INTERVAL: '200',
      OTEL_METRIC_EXPORT_TIMEOUT: '200',
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_LOGS_EXPORTER: 'otlp',
      PG_RESILIENCE_OPERATION_SPANS: 'always',
      PG_RESILIENCE_LOG_LEVEL: 'off',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let stopAt: number | undefined;
  const stopOnResult = useRegister && env.EXIT_NATURALLY !== '1';
  const onData = (c: string): void => {
    output += c;
    // A server being stopped: SIGTERM once the workload is done (register shuts the SDK down, exits 143).
    if (stopOnResult && stopAt === undefined && output.includes('RESULT ')) {
      stopAt = Date.now();
      child.kill('SIGTERM');
    }
  };
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      clearTimeout(killer);
      const line = output.split('\n').find((l) => l.startsWith('RESULT '));
      resolve({
        result: line ? (JSON.parse(line.slice('RESULT '.length)) as Result) : undefined,
        code,
        signal,
        output,
        ms: Date.now() - started,
        stopMs: stopAt === undefined ? undefined : Date.now() - stopAt,
      });
    });
  });
}

/** An OTLP/HTTP receiver that answers with `behaviour`, counting requests per path. */
class Receiver {
  readonly server: Server;
  readonly requests = new Map<string, number>();
  readonly #sockets = new Set<Socket>();
  readonly behaviour: 'ok' | 'hang' | 'error500';
  constructor(behaviour: 'ok' | 'hang' | 'error500') {
    this.behaviour = behaviour;
    this.server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const path = req.url ?? '/';
      this.requests.set(path, (this.requests.get(path) ?? 0) + 1);
      req.resume();
      req.on('end', () => {
        if (this.behaviour === 'hang') return; // never answers
        if (this.behaviour === 'error500') {
          res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error');
          return;
        }
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      });
    });
    this.server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
  }
  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  total(): number {
    return [...this.requests.values()].reduce((a, b) => a + b, 0);
  }
  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

describe('telemetry faults: a broken backend never fails or slows queries', { timeout: 240_000 }, () => {
  let server: TestServer;
  let deadPort: number;
  const receivers: Receiver[] = [];
  let healthy: Run;
  const T = { timeout: 90_000 };

  const receiver = async (b: Receiver['behaviour']): Promise<[Receiver, string]> => {
    const r = new Receiver(b);
    receivers.push(r);
    return [r, await r.start()];
  };
  const baseEnv = (): NodeJS.ProcessEnv => ({
    DATABASE_URL: server.connectionString,
    DEAD_PORT: String(deadPort),
  });

  /** The checks every run must pass. */
  function assertUnharmed(name: string, run: Run): Result {
    const context = `${name} (exit ${run.code ?? run.signal}, ${run.ms} ms):\n${run.output.slice(-3_000)}`;
    assert.equal(run.signal, null, context);
    if (run.stopMs === undefined) assert.equal(run.code, 0, context);
    else {
      // register's SIGTERM path: the SDK gets at most SHUTDOWN_TIMEOUT_MS (5 s), then exit 143.
      assert.equal(run.code, 143, context);
      assert.ok(run.stopMs < 8_000, `SIGTERM to exit took ${run.stopMs} ms: ${context}`);
    }
    assert.doesNotMatch(run.output, /CRASH |Unhandled|uncaught|QUERY FAILED/i, context);
    assert.ok(run.result, context);
    assert.equal(run.result.failed, 0, context);
    assert.equal(run.result.ok, MEASURED, context);
    // The background operations against the dead port failed as they would without telemetry.
    for (const e of run.result.deadErrors) assert.match(e, /ECONNREFUSED|PGR_CIRCUIT_OPEN/, context);
    return run.result;
  }

  function assertNotSlower(name: string, r: Result): void {
    const base = healthy.result!;
    const bound = 2 * base.median + 5;
    assert.ok(
      r.median <= bound,
      `${name}: median ${r.median.toFixed(2)} ms > 2 × healthy ${base.median.toFixed(2)} ms + 5 ms (p90 ${r.p90.toFixed(2)} vs ${base.p90.toFixed(2)}, max ${r.max.toFixed(1)} ms)`,
    );
  }

  before(async () => {
    server = await startServer();
    deadPort = await freePort();
  });
  after(async () => {
    for (const r of receivers) await r.close();
    await server?.close();
  });

  it('baseline: a healthy OTLP/HTTP receiver gets traces, metrics and logs', T, async () => {
    const [r, url] = await receiver('ok');
    healthy = await runApp({ ...baseEnv(), OTEL_EXPORTER_OTLP_ENDPOINT: url }, true);
    const res = assertUnharmed('healthy', healthy);
    for (const path of ['/v1/traces', '/v1/metrics', '/v1/logs'])
      assert.ok((r.requests.get(path) ?? 0) > 0, `no ${path} export: ${[...r.requests]}`);
    console.log(
      `healthy: median ${res.median.toFixed(2)} ms, p90 ${res.p90.toFixed(2)} ms, run ${healthy.ms} ms`,
    );
  });

  it('exporter endpoint refusing connections (closed port)', T, async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const run = await runApp({ ...baseEnv(), OTEL_EXPORTER_OTLP_ENDPOINT: url }, true);
    const res = assertUnharmed('refused', run);
    assertNotSlower('refused', res);
  });

  it(
    'exporter endpoint that accepts and never answers (hangs); SIGTERM still exits within the shutdown cap',
    T,
    async () => {
      const [r, url] = await receiver('hang');
      const run = await runApp({ ...baseEnv(), OTEL_EXPORTER_OTLP_ENDPOINT: url }, true);
      const res = assertUnharmed('hang', run);
      assert.ok(r.total() > 0, 'the hanging receiver got export requests');
      assertNotSlower('hang', res);
    },
  );

  it('exporter endpoint answering 500', T, async () => {
    const [r, url] = await receiver('error500');
    const run = await runApp({ ...baseEnv(), OTEL_EXPORTER_OTLP_ENDPOINT: url }, true);
    const res = assertUnharmed('500', run);
    for (const path of ['/v1/traces', '/v1/metrics', '/v1/logs'])
      assert.ok((r.requests.get(path) ?? 0) > 0, `no ${path} export attempt: ${[...r.requests]}`);
    assertNotSlower('500', res);
  });

  // A script that simply ends, with a collector that refuses and a breaker left open, exits by itself.
  // What holds the process meanwhile is the OTLP exporters' own retries of each export (ref'd timers and
  // sockets, bounded by OTEL_EXPORTER_OTLP_TIMEOUT; with a 200 ms metric interval there is always one in
  // flight, which is why this test uses the default interval). pg-resilience adds nothing: recovery
  // probes pause once no pool or client of the target is in use (the dead pool was ended), so no probe
  // connection or probe telemetry keeps it alive (test/unit/recovery.test.ts checks the pause itself).
  it(
    'a finished script exits by itself while the collector refuses, with a breaker left open',
    T,
    async () => {
      const url = `http://127.0.0.1:${await freePort()}`;
      const run = await runApp(
        {
          ...baseEnv(),
          OTEL_EXPORTER_OTLP_ENDPOINT: url,
          OTEL_EXPORTER_OTLP_TIMEOUT: '2000',
          OTEL_METRIC_EXPORT_INTERVAL: '60000',
          OTEL_METRIC_EXPORT_TIMEOUT: '2000',
          EXIT_NATURALLY: '1',
        },
        true,
        20_000,
      );
      assertUnharmed('refused, natural exit', run);
    },
  );

  it(
    'span and log exporters that throw synchronously, metric readers whose export and collect throw',
    T,
    async () => {
      const run = await runApp({ ...baseEnv(), THROWING: '1' }, false);
      const res = assertUnharmed('throwing', run);
      assert.ok((res.thrown ?? 0) > MEASURED, `the exporters were called and threw (${res.thrown} times)`);
      assertNotSlower('throwing', res);
    },
  );
});
