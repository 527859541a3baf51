// Security: no SQL text, parameter values, passwords or connection strings with credentials in
// pg-resilience's signals. A real PostgreSQL role with a password, distinctive parameter values and SQL
// text go through faults that make the package retry, suppress a retry, time out, rate-limit, open the
// breaker (rejections, recovery probes) and log. Then every signal is captured and grepped:
// - exported spans: name, every attribute, event, event attribute, status message (in-memory exporter);
// - metrics: the full /metrics exposition (Prometheus exporter over HTTP) and the data points' attributes
//   of a collection (the same reader's `collect()`);
// - logs: every OpenTelemetry log record (body, attributes) and every console line (logLevel debug);
// - OpenTelemetry diag output (at verbose);
// - the health endpoint (`/resilience/health`, `/resilience/state`, started from the real env
//   PG_RESILIENCE_HEALTH_PORT) and `getResilienceState()` / `getResilienceHealth()`.
//
// Scope: pg-resilience's own signals (spans named `pg_resilience …`, series `pg_resilience_*`, our log
// records and console lines, the health answers) must carry none of the secrets. instrumentation-pg's
// spans are the app's choice of instrumentation: the test records what they expose (SQL text in
// `db.query.text`, and the server's error messages in `exception` events, which echo parameter values)
// and requires only that no password or credentialed connection string appears anywhere. Users who must
// not export SQL text turn it off on their side (see the last test's comment).
//
// Positive controls: the same grep finds the target, our span names and instrumentation-pg's SQL text,
// so a grep that sees nothing would fail.
//
// Also: the health endpoint binds to loopback by default (not reachable on a non-loopback address of
// this machine) and answers only GET and HEAD (405 with `Allow: GET, HEAD` for every other method).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { context, type DiagLogger, DiagLogLevel, diag, logs, metrics, trace } from '@opentelemetry/api';
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
  getResilienceHealth,
  getResilienceState,
  isCircuitOpenError,
  PgResilienceInstrumentation,
} from '../../src/index.ts';
import { FaultProxy } from '../support/fault-proxy.ts';
import type { TestServer } from '../support/postgres.ts';
import { scrape } from '../support/prometheus.ts';
import { startRelay } from '../support/relay.ts';

const PASSWORD = 'S3cr3t-Pa55-xyzzy';
const USER = 'canary_user';
const PARAM = 'canary-param-8d1f';
const TABLE = 'canary_table_q7';
const DATABASE = 'app';
/** Any connection string with credentials. */
const CREDENTIALED_URL = /postgres(?:ql)?:\/\/[^\s/@"]*:[^\s/@"]*@/i;

const SECRETS: ReadonlyArray<readonly [string, RegExp]> = [
  ['password', new RegExp(PASSWORD, 'i')],
  ['parameter value', new RegExp(PARAM, 'i')],
  ['SQL text', new RegExp(TABLE, 'i')],
  ['connection string with credentials', CREDENTIALED_URL],
  ['role name', new RegExp(USER, 'i')],
];

/** Which secrets `text` contains. */
function leaks(text: string, which: ReadonlyArray<readonly [string, RegExp]> = SECRETS): string[] {
  return which.filter(([, re]) => re.test(text)).map(([name]) => name);
}

/** Stringifies anything (bigint, symbols, errors with their message and stack), never throws. */
function dump(value: unknown): string {
  const seen = new WeakSet<object>();
  try {
    return JSON.stringify(value, (_k, v: unknown) => {
      if (typeof v === 'bigint' || typeof v === 'symbol' || typeof v === 'function') return String(v);
      if (v instanceof Error) return { ...v, name: v.name, message: v.message, stack: v.stack };
      if (typeof v === 'object' && v !== null) {
        if (seen.has(v)) return '[cycle]';
        seen.add(v);
      }
      return v;
    });
  } catch {
    return String(value);
  }
}

// ---- capture: console, diag, then the SDK, as an app sets it up, before pg loads ----
const consoleLines: string[] = [];
for (const method of ['log', 'info', 'warn', 'error', 'debug'] as const) {
  console[method] = (...args: unknown[]) => {
    consoleLines.push(args.map((a) => (typeof a === 'string' ? a : dump(a))).join(' '));
  };
}
const diagLines: string[] = [];
const diagLogger: DiagLogger = Object.fromEntries(
  (['error', 'warn', 'info', 'debug', 'verbose'] as const).map((level) => [
    level,
    (...args: unknown[]) => diagLines.push(`${level} ${args.map(dump).join(' ')}`),
  ]),
) as unknown as DiagLogger;
diag.setLogger(diagLogger, { logLevel: DiagLogLevel.ALL, suppressOverrideMessage: true });

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
const spans = new InMemorySpanExporter();
trace.setGlobalTracerProvider(
  new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter: spans })] }),
);
const logRecords = new InMemoryLogRecordExporter();
logs.setGlobalLoggerProvider(
  new LoggerProvider({ processors: [new SimpleLogRecordProcessor({ exporter: logRecords })] }),
);
async function freeLocalPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}
const metricsPort = await freeLocalPort();
const prometheus = new PrometheusExporter({ host: '127.0.0.1', port: metricsPort });
const meterProvider = new MeterProvider({ readers: [prometheus] });
metrics.setGlobalMeterProvider(meterProvider);

// ---- targets ----
const relay = await startRelay();
const mainProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const limitProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
// Its own target for the wrong password, so MAIN's probes are built from MAIN's good pool. (A probe that
// fails with 28P01 no longer keeps a breaker open: test/integration/server-faults.test.ts, scenario e.)
const authProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: relay.port });
const MAIN = `${mainProxy.host}:${mainProxy.port}/${DATABASE}`;
const LIMIT = `${limitProxy.host}:${limitProxy.port}/${DATABASE}`;

// The real environment: the health endpoint from PG_RESILIENCE_HEALTH_PORT (host left to its default),
// every log line on the console, a span for every operation.
process.env.PG_RESILIENCE_HEALTH_PORT = '0';
delete process.env.PG_RESILIENCE_HEALTH_HOST;
process.env.PG_RESILIENCE_LOG_LEVEL = 'debug';
process.env.PG_RESILIENCE_OPERATION_SPANS = 'always';

const pgInstrumentation = new PgInstrumentation();
const instrumentation = new PgResilienceInstrumentation({
  retry: { initialDelayMs: 20, maxDelayMs: 20, jitter: 'none' },
  circuitBreaker: { consecutiveFailures: 3, halfOpenAfterMs: 60_000 },
  recovery: { intervalMs: 500 },
  targets: {
    [LIMIT]: {
      rateLimit: { enabled: true, ratePerMinute: 6, burst: 2, strategy: 'drop' },
      timeout: { queryMs: 200 },
    },
  },
});
const { startServer } = await import('../support/postgres.ts');
const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const T = { timeout: 90_000 };

describe('security: no SQL, values, passwords or credentials in any signal', T, () => {
  let server: TestServer;
  const pools: import('pg').Pool[] = [];
  const url = (proxy: FaultProxy, password = PASSWORD): string =>
    `postgres://${USER}:${password}@${proxy.host}:${proxy.port}/${DATABASE}`;
  const pool = (proxy: FaultProxy, password?: string): import('pg').Pool => {
    const p = new pg.Pool({ connectionString: url(proxy, password), max: 3 });
    pools.push(p);
    return p;
  };
  /** Every health answer fetched during the run. */
  const healthAnswers: string[] = [];
  const fetchHealth = async (): Promise<void> => {
    const base = await instrumentation.healthEndpoint();
    assert.ok(base, 'health endpoint started from PG_RESILIENCE_HEALTH_PORT');
    for (const path of ['/resilience/health', '/resilience/state']) {
      const res = await fetch(`${base}${path}`);
      healthAnswers.push(`${path} ${res.status} ${dump([...res.headers])} ${await res.text()}`);
    }
    healthAnswers.push(dump(getResilienceState()), dump(getResilienceHealth()));
  };

  before(async () => {
    server = await startServer({ database: DATABASE });
    relay.to(server.port);
    await server.query(`CREATE ROLE ${USER} LOGIN PASSWORD '${PASSWORD}'`);
    await server.query(`CREATE TABLE ${TABLE} (id serial PRIMARY KEY, v text UNIQUE)`);
    await server.query(`ALTER TABLE ${TABLE} OWNER TO ${USER}`);
    // The setup's own statements went through instrumentation-pg too: its span of CREATE ROLE holds
    // the password literal verbatim in db.query.text (instrumentation-pg exports SQL text as written).
    const setup = spans
      .getFinishedSpans()
      .find((s) => String(s.attributes['db.query.text']).startsWith('CREATE ROLE'));
    assert.ok(
      String(setup?.attributes['db.query.text']).includes(PASSWORD),
      'instrumentation-pg: SQL literals are exported',
    );
    spans.reset();
    logRecords.reset();
    consoleLines.length = 0;
    diagLines.length = 0;
  });

  after(async () => {
    for (const p of pools) await p.end().catch(() => {});
    await mainProxy.close();
    await limitProxy.close();
    await authProxy.close();
    await relay.close();
    await server?.close();
    instrumentation.disable();
    pgInstrumentation.disable();
    await meterProvider.shutdown();
    diag.disable();
  });

  it('runs a workload through retries, suppression, errors, timeouts, rate limits and an outage', async () => {
    const p = pool(mainProxy);
    // Healthy writes and reads with the canary parameter.
    await p.query(`INSERT INTO ${TABLE} (v) VALUES ($1)`, [PARAM]);
    assert.deepEqual((await p.query(`SELECT v FROM ${TABLE} WHERE v = $1`, [PARAM])).rows, [{ v: PARAM }]);

    // A retried read: a fresh pool whose first connection is reset.
    const fresh = pool(mainProxy);
    mainProxy.resetNewConnections(1);
    const clear = sleep(30).then(() => mainProxy.clear());
    assert.deepEqual((await fresh.query(`SELECT v FROM ${TABLE} WHERE v = $1`, [PARAM])).rows, [
      { v: PARAM },
    ]);
    await clear;

    // Server errors whose messages carry the SQL's names and the parameter value.
    await assert.rejects(p.query(`INSERT INTO ${TABLE} (v) VALUES ($1)`, [PARAM]), { code: '23505' });
    await assert.rejects(p.query(`SELECT $1::int AS ${TABLE}`, [PARAM]), { code: '22P02' });
    await assert.rejects(p.query(`SELECT * FROM ${TABLE}_missing WHERE v = $1`, [PARAM]), { code: '42P01' });

    // A retry suppressed inside a transaction.
    const client = await p.connect();
    client.on('error', () => {});
    await client.query('BEGIN');
    const running = client.query(`SELECT pg_sleep(5), v FROM ${TABLE} WHERE v = $1`, [PARAM]);
    await sleep(150);
    mainProxy.resetOpenConnections();
    await assert.rejects(running);
    client.release(true);

    // A wrong password: 28P01, never retried.
    await assert.rejects(pool(authProxy, `${PASSWORD}-wrong`).query('SELECT 1'), { code: '28P01' });

    // Timeouts and rate-limit drops on the limited target.
    const limited = pool(limitProxy);
    await assert.rejects(limited.query(`SELECT pg_sleep(1), $1::text AS ${TABLE}`, [PARAM]), {
      code: 'PGR_TIMEOUT',
    });
    const settled = await Promise.allSettled(
      [1, 2, 3].map(() => limited.query(`SELECT $1::text AS ${TABLE}`, [PARAM])),
    );
    assert.ok(
      settled.some(
        (r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'PGR_RATE_LIMITED',
      ),
    );

    // An outage: retries exhausted, the breaker opens, calls are rejected; the health endpoint meanwhile.
    await mainProxy.refuse(true);
    let rejected = false;
    for (let i = 0; i < 10 && !rejected; i++) {
      await assert.rejects(p.query(`SELECT v FROM ${TABLE} WHERE v = $1`, [PARAM]), (e) => {
        rejected = isCircuitOpenError(e);
        return true;
      });
    }
    assert.ok(rejected, 'a call rejected by the open breaker');
    await fetchHealth();
    await sleep(1_200); // failed recovery probes
    await mainProxy.refuse(false);
    const start = Date.now();
    while (instrumentation.policies.get(MAIN)?.circuitState !== 'closed') {
      assert.ok(
        Date.now() - start < 10_000,
        `closed by a recovery probe: ${consoleLines.slice(-5).join('\n')}`,
      );
      await sleep(20);
    }
    assert.deepEqual((await p.query(`SELECT v FROM ${TABLE} WHERE v = $1`, [PARAM])).rows, [{ v: PARAM }]);
    await fetchHealth();
  });

  it('pg-resilience’s spans, metrics, logs, console lines, diag output and health answers carry no secret', async () => {
    const all = spans.getFinishedSpans();
    const ours = all.filter((s) => s.name.startsWith('pg_resilience '));
    const spanText = (s: ReadableSpan): string =>
      dump({
        name: s.name,
        attributes: s.attributes,
        events: s.events.map((e) => ({ name: e.name, attributes: e.attributes })),
        status: s.status,
        links: s.links,
        scope: s.instrumentationScope,
      });

    const exposition = await scrape(`http://127.0.0.1:${metricsPort}/metrics`);
    const collected = await prometheus.collect();
    const ourMetrics = collected.resourceMetrics.scopeMetrics.filter(
      (sm) => sm.scope.name === 'pg-resilience',
    );
    const ourSeries = exposition
      .split('\n')
      .filter((l) => l.startsWith('pg_resilience_'))
      .join('\n');
    const records = logRecords.getFinishedLogRecords();
    const recordsText = records.map((r) =>
      dump({ eventName: r.eventName, body: r.body, attributes: r.attributes, severity: r.severityText }),
    );

    // Positive controls: the data is there, and the grep sees secrets where they are.
    const ourSpanTexts = ours.map(spanText);
    const names = new Set(ours.map((s) => s.name));
    for (const n of ['pg_resilience query', 'pg_resilience connect', 'pg_resilience recovery.probe'])
      assert.ok(names.has(n), `a ${n} span among ${[...names].join(', ')}`);
    assert.ok(ourSpanTexts.some((t) => t.includes(MAIN)) && ourSpanTexts.some((t) => t.includes(LIMIT)));
    assert.ok(ourSeries.includes(MAIN) && ourMetrics.length === 1, 'our series, with the target');
    const events = new Set(records.map((r) => r.eventName));
    for (const e of [
      'pg_resilience.retry',
      'pg_resilience.retry.suppressed',
      'pg_resilience.circuit.state_change',
    ])
      assert.ok(events.has(e), `a ${e} log record among ${[...events].join(', ')}`);
    assert.ok(
      consoleLines.some((l) => l.startsWith('[pg-resilience]') && l.includes(MAIN)),
      'console lines',
    );
    assert.ok(
      healthAnswers.length === 8 && healthAnswers.some((h) => h.includes('"healthy": false')),
      `health while open: ${healthAnswers[0]}`,
    );
    const pgSpans = all.filter((s) => !s.name.startsWith('pg_resilience ')).map(spanText);
    assert.ok(
      pgSpans.some((t) => leaks(t).includes('SQL text')),
      'instrumentation-pg exports the SQL text: the grep can see it',
    );
    assert.deepEqual(leaks(`x ${url(mainProxy)} x`), [
      'password',
      'connection string with credentials',
      'role name',
    ]);

    const where: string[] = [];
    const grep = (label: string, texts: readonly string[]): void => {
      for (const t of texts) {
        const found = leaks(t);
        if (found.length > 0) where.push(`${label}: ${found.join(', ')} in ${t.slice(0, 400)}`);
      }
    };
    grep('span', ourSpanTexts);
    grep('/metrics', [ourSeries]);
    grep('metric data points', [dump(ourMetrics)]);
    grep('log record', recordsText);
    grep('console', consoleLines);
    grep('diag', diagLines);
    grep('health', healthAnswers);
    grep('state', [dump(getResilienceState()), dump(getResilienceHealth())]);
    assert.deepEqual(where, [], where.join('\n'));
  });

  it('no signal at all, instrumentation-pg’s included, carries the password or a credentialed connection string', async () => {
    const exposition = await scrape(`http://127.0.0.1:${metricsPort}/metrics`);
    const texts = [
      ...spans.getFinishedSpans().map((s) =>
        dump({
          name: s.name,
          attributes: s.attributes,
          events: s.events,
          status: s.status,
          resource: s.resource.attributes,
        }),
      ),
      exposition,
      ...logRecords.getFinishedLogRecords().map((r) => dump({ body: r.body, attributes: r.attributes })),
      ...consoleLines,
      ...diagLines,
    ];
    const credentials = SECRETS.filter(
      ([name]) => name === 'password' || name.startsWith('connection string'),
    );
    const found = texts.flatMap((t) => leaks(t, credentials).map((l) => `${l} in ${t.slice(0, 300)}`));
    assert.deepEqual(found, [], found.join('\n'));

    // What instrumentation-pg exposes on its own spans (recorded, not forbidden: the app chose it):
    // `db.query.text` holds the SQL text (parameterised: `$1`, not the value), and the `exception`
    // events hold the server's error message, which can echo a parameter value (22P02: invalid input
    // syntax for type integer: "<value>"; 23505's detail is not in the message). Apps that must not
    // export SQL text configure instrumentation-pg themselves (a `requestHook` cannot delete an
    // attribute; drop or hash `db.query.text` and `exception.message` in the collector, e.g. the
    // `transform`/`redaction` processors), or leave instrumentation-pg out (OTEL_SDK_DISABLED keeps
    // pg-resilience running without it). `enhancedDatabaseReporting` (off by default) would add the
    // parameter values themselves.
    const pgSpans = spans.getFinishedSpans().filter((s) => !s.name.startsWith('pg_resilience '));
    const withText = pgSpans.filter((s) => String(s.attributes['db.query.text'] ?? '').includes(TABLE));
    assert.ok(withText.length > 0, 'db.query.text carries the SQL');
    assert.ok(
      withText.every((s) => !String(s.attributes['db.query.text']).includes(PARAM)),
      'db.query.text is parameterised',
    );
    const echoes = pgSpans.filter((s) => String(s.status.message).includes(PARAM));
    assert.ok(
      echoes.length > 0,
      'the 22P02 span status message echoes the parameter value (instrumentation-pg)',
    );
  });

  it('the health endpoint from PG_RESILIENCE_HEALTH_PORT binds to loopback and answers only GET and HEAD', async () => {
    const base = await instrumentation.healthEndpoint();
    assert.ok(base);
    const { hostname, port } = new URL(base);
    assert.equal(hostname, '127.0.0.1', 'default bind address');
    // Not reachable on any non-loopback address of this machine.
    const external = Object.values(networkInterfaces())
      .flat()
      .filter((a) => a !== undefined && !a.internal && a.family === 'IPv4')
      .map((a) => a!.address);
    for (const address of external) {
      const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
        const s = net.connect({ host: address, port: Number(port) });
        s.once('connect', () => {
          s.destroy();
          resolve(undefined);
        });
        s.once('error', (e) => resolve(e));
      });
      assert.equal(err?.code, 'ECONNREFUSED', `reachable on ${address}:${port}`);
    }
    // GET and HEAD answer (HEAD without a body, as HTTP requires of a GET resource).
    const get = await fetch(`${base}/resilience/state`);
    assert.equal(get.status, 200);
    assert.ok((await get.text()).length > 0);
    const head = await fetch(`${base}/resilience/state`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE']) {
      for (const path of ['/resilience/health', '/resilience/state']) {
        const status = await rawStatus(Number(port), method, path);
        assert.equal(status.code, 405, `${method} ${path}`);
        assert.match(status.allow ?? '', /^GET, HEAD$/, `${method} ${path}: Allow`);
      }
    }
  });
});

/** One raw HTTP/1.1 request (fetch refuses TRACE): the status and the Allow header. */
function rawStatus(port: number, method: string, path: string): Promise<{ code: number; allow?: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => {
      data += c;
      if (data.includes('\r\n\r\n')) {
        s.destroy();
        const code = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1]);
        const allow = /\r\nallow: ([^\r]*)/i.exec(data)?.[1];
        resolve({ code, allow });
      }
    });
    s.on('error', reject);
    s.write(
      `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
  });
}
