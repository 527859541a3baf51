/**
 * `pg-resilience/register` from the packed tarball, in real child processes against a real PostgreSQL:
 * a CommonJS app under `--require` and an ES module app under `--import`. Each proves the SDK and
 * instrumentation-pg run (instrumentation-pg's series on the Prometheus endpoint, scraped over HTTP
 * while the app is alive) and that our instrumentation is active in that load mode (the app survives
 * pg_terminate_backend with no pool 'error' listener), then that SIGTERM exits promptly with 143.
 * The off switches (OTEL_SDK_DISABLED, PG_RESILIENCE_DISABLED) leave the app running without /metrics;
 * the lean mode (OTEL_NODE_DISABLED_INSTRUMENTATIONS=pg) drops instrumentation-pg and keeps the rest.
 */
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ATTR, METRICS, prometheusLabel, prometheusName } from '../../src/telemetry/catalog.ts';
import { FaultProxy } from '../support/fault-proxy.ts';
import { parseExposition, sum } from '../support/prometheus.ts';
import { scratchApp, type ScratchApp } from '../support/package.ts';
import { freePort, startServer, type TestServer } from '../support/postgres.ts';

const T = { timeout: 60_000 };

// The app: a pool with no 'error' listener, a few queries, then one more query per line on stdin.
const APP_BODY = `
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
for (let i = 0; i < 3; i++) await pool.query('SELECT 1');
console.log('READY');
process.stdin.setEncoding('utf8');
process.stdin.on('data', () => {
  pool.query('SELECT 1 AS one').then(
    (r) => console.log('QUERY ' + r.rows[0].one),
    (e) => console.log('QUERY FAILED ' + e.message),
  );
});
`;
const CJS_APP = `const pg = require('pg');\n(async () => {${APP_BODY}})();\n`;
const ESM_APP = `import pg from 'pg';\n${APP_BODY}`;

interface Running {
  child: ChildProcessWithoutNullStreams;
  output: () => string;
  waitFor: (text: string, ms?: number) => Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(app: ScratchApp, args: string[], env: NodeJS.ProcessEnv): Running {
  const child = spawn(process.execPath, args, { cwd: app.dir, env: { ...process.env, ...env } });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (c: string) => (out += c));
  child.stderr.on('data', (c: string) => (out += c));
  child.stdin.on('error', () => {});
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const waitFor = async (text: string, ms = 20_000): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!out.includes(text)) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`app exited before "${text}": ${out}`);
      if (Date.now() > deadline) throw new Error(`no "${text}" within ${ms} ms: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { child, output: () => out, waitFor, exited };
}

/** Asks the app for a query while the proxy resets exactly one new connection (its connect). */
async function queryWithConnectReset(run: Running, proxy: FaultProxy): Promise<void> {
  proxy.resetStats();
  proxy.resetNewConnections(1);
  run.child.stdin.write('query\n');
  const deadline = Date.now() + 5_000;
  while (proxy.stats.resetOnAccept === 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 2));
  }
  proxy.resetNewConnections(0);
}

async function stopApp(
  run: Running,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const t0 = Date.now();
  run.child.kill('SIGTERM');
  const timer = setTimeout(() => run.child.kill('SIGKILL'), 10_000);
  const res = await run.exited;
  clearTimeout(timer);
  return { ...res, ms: Date.now() - t0 };
}

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

describe('pg-resilience/register (packed tarball, real PostgreSQL)', () => {
  let app: ScratchApp;
  let server: TestServer;
  let proxy: FaultProxy;
  before(async () => {
    server = await startServer();
    proxy = await FaultProxy.forServer(server);
    app = scratchApp('register');
    app.write('app.cjs', CJS_APP);
    app.write('app.mjs', ESM_APP);
    app.write(
      'own-handler.cjs',
      `const pg = require('pg');
       const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
       process.on('SIGTERM', () => {
         console.log('APP SIGTERM');
         pool.end().then(() => setTimeout(() => process.exit(7), 200));
       });
       pool.query('SELECT 1').then(() => console.log('READY'));`,
    );
  });
  after(async () => {
    app?.remove();
    await proxy?.close();
    await server?.close();
  });

  for (const [mode, args] of [
    ['CommonJS app, --require', ['--require', 'pg-resilience/register', 'app.cjs']],
    ['ES module app, --import', ['--import', 'pg-resilience/register', 'app.mjs']],
  ] as const) {
    it(
      `${mode}: metrics from instrumentation-pg, survives a terminated backend, retries a reset connect, SIGTERM exits 143`,
      T,
      async () => {
        const port = await freePort();
        const healthPort = await freePort();
        proxy.clear();
        const run = start(app, [...args], {
          DATABASE_URL: proxy.connectionString(server),
          PG_RESILIENCE_HEALTH_PORT: String(healthPort),
          OTEL_METRICS_EXPORTER: 'prometheus',
          OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1',
          OTEL_EXPORTER_PROMETHEUS_PORT: String(port),
          OTEL_TRACES_EXPORTER: 'none',
          OTEL_LOGS_EXPORTER: 'none',
        });
        try {
          await run.waitFor('READY');
          const metrics = await scrape(port);
          assert.match(metrics, /^db_client_operation_duration_(bucket|count|sum)\{/m, metrics);
          // PG_RESILIENCE_HEALTH_PORT: the health endpoint, on loopback.
          const health = await fetch(`http://127.0.0.1:${healthPort}/resilience/health`);
          assert.equal(health.status, 200);
          const report = (await health.json()) as { healthy: boolean; score: number; targets: unknown[] };
          assert.deepEqual([report.healthy, report.score, report.targets.length], [true, 100, 1]);

          assert.ok((await server.terminateBackends()) >= 1);
          await new Promise((r) => setTimeout(r, 500));
          assert.equal(run.child.exitCode, null, `the app died: ${run.output()}`);
          run.child.stdin.write('query\n');
          await run.waitFor('QUERY 1');

          // The pool's connections are gone: the next query opens one, and the proxy resets it.
          assert.ok((await server.terminateBackends()) >= 1);
          await new Promise((r) => setTimeout(r, 300));
          await queryWithConnectReset(run, proxy);
          assert.equal(proxy.stats.resetOnAccept, 1, 'the first connect was reset');
          const answered = Date.now() + 10_000;
          while ((run.output().match(/QUERY/g) ?? []).length < 2 && Date.now() < answered) {
            await new Promise((r) => setTimeout(r, 20));
          }
          assert.equal((run.output().match(/QUERY 1/g) ?? []).length, 2, run.output());

          // Our telemetry, as the app's operators see it: the series, and the console line.
          const target = `${proxy.host}:${proxy.port}/${server.database}`;
          const samples = parseExposition(await scrape(port));
          const label = (k: string) => prometheusLabel(k);
          assert.equal(
            sum(samples, prometheusName(METRICS.retries), {
              [label(ATTR.TARGET)]: target,
              [label(ATTR.ERROR_TYPE)]: 'ECONNRESET',
            }),
            1,
          );
          assert.ok(
            sum(samples, prometheusName(METRICS.poolClientErrors), { [label(ATTR.TARGET)]: target }) >= 1,
            'the terminated idle clients were absorbed and counted',
          );
          assert.equal(
            sum(samples, prometheusName(METRICS.circuitState), {
              [label(ATTR.TARGET)]: target,
              [label(ATTR.STATE)]: 'closed',
            }),
            1,
          );
          assert.match(
            run.output(),
            new RegExp(
              `\\[pg-resilience\\] Retrying query on ${target.replace(/\./g, '\\.')} \\(attempt 2/7\\) after ECONNRESET`,
            ),
          );

          const stopped = await stopApp(run);
          assert.deepEqual([stopped.code, stopped.signal], [143, null], run.output());
          assert.ok(stopped.ms < 6_000, `SIGTERM took ${stopped.ms} ms`);
        } finally {
          run.child.kill('SIGKILL');
        }
      },
    );
  }

  it(
    'lean mode, OTEL_NODE_DISABLED_INSTRUMENTATIONS=pg under --require: no instrumentation-pg spans or db.client metrics, our metrics and resilience run',
    T,
    async () => {
      // The same app twice: as shipped (the control: instrumentation-pg's spans and series are there),
      // then lean. Spans go to the console exporter, i.e. into the app's output.
      const runs: Partial<Record<'default' | 'lean', { output: string; metrics: string; retries: number }>> =
        {};
      for (const [name, extra] of [
        ['default', {}],
        ['lean', { OTEL_NODE_DISABLED_INSTRUMENTATIONS: ' pg ' }],
      ] as const) {
        const port = await freePort();
        proxy.clear();
        const run = start(app, ['--require', 'pg-resilience/register', 'app.cjs'], {
          ...extra,
          DATABASE_URL: proxy.connectionString(server),
          OTEL_METRICS_EXPORTER: 'prometheus',
          OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1',
          OTEL_EXPORTER_PROMETHEUS_PORT: String(port),
          OTEL_TRACES_EXPORTER: 'console',
          OTEL_BSP_SCHEDULE_DELAY: '50',
          OTEL_LOGS_EXPORTER: 'none',
        });
        try {
          await run.waitFor('READY');
          // A connect reset by the proxy: retried by our policies in both modes.
          assert.ok((await server.terminateBackends()) >= 1);
          await new Promise((r) => setTimeout(r, 300));
          await queryWithConnectReset(run, proxy);
          await run.waitFor('QUERY 1');
          await new Promise((r) => setTimeout(r, 300));
          const metrics = await scrape(port);
          const target = `${proxy.host}:${proxy.port}/${server.database}`;
          const retries = sum(parseExposition(metrics), prometheusName(METRICS.retries), {
            [prometheusLabel(ATTR.TARGET)]: target,
            [prometheusLabel(ATTR.ERROR_TYPE)]: 'ECONNRESET',
          });
          runs[name] = { output: run.output(), metrics, retries };
          const stopped = await stopApp(run);
          assert.deepEqual([stopped.code, stopped.signal], [143, null], run.output());
        } finally {
          run.child.kill('SIGKILL');
        }
      }
      const { default: shipped, lean } = runs;
      assert.ok(shipped && lean);
      const pgScope = /name: '@opentelemetry\/instrumentation-pg'/;
      const pgSeries = /^db_client_operation_duration_(bucket|count|sum)\{/m;
      assert.match(shipped.output, pgScope, 'control: instrumentation-pg spans are exported');
      assert.match(shipped.metrics, pgSeries, 'control: instrumentation-pg series are served');
      assert.doesNotMatch(lean.output, pgScope, lean.output);
      assert.doesNotMatch(lean.metrics, pgSeries, lean.metrics);
      for (const [name, r] of [
        ['default', shipped],
        ['lean', lean],
      ] as const) {
        assert.ok(r.retries >= 1, `${name}: the reset connect was retried and counted`);
        assert.match(r.metrics, new RegExp(`^${prometheusName(METRICS.circuitState)}\\{`, 'm'));
      }
    },
  );

  it("an app's own SIGTERM handler keeps the signal: it runs, and decides the exit code", T, async () => {
    const run = start(app, ['--require', 'pg-resilience/register', 'own-handler.cjs'], {
      DATABASE_URL: server.connectionString,
      OTEL_METRICS_EXPORTER: 'none',
      OTEL_TRACES_EXPORTER: 'none',
      OTEL_LOGS_EXPORTER: 'none',
    });
    try {
      await run.waitFor('READY');
      const stopped = await stopApp(run);
      assert.match(run.output(), /APP SIGTERM/);
      assert.deepEqual([stopped.code, stopped.signal], [7, null], run.output());
    } finally {
      run.child.kill('SIGKILL');
    }
  });

  it(
    'a finished app exits promptly, with its own exit code, even when the OTLP collector hangs',
    T,
    async () => {
      // A collector that accepts connections and never answers: the exporters' worst case.
      const sockets = new Set<net.Socket>();
      const collector = net.createServer((s) => {
        sockets.add(s);
        s.on('error', () => {});
      });
      await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
      const { port } = collector.address() as net.AddressInfo;
      app.write(
        'done.cjs',
        `const pg = require('pg');
       const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
       pool.query('SELECT 1').then(() => pool.end()).then(() => { console.log('DONE'); process.exitCode = 3; });`,
      );
      try {
        const t0 = performance.now();
        const res = await new Promise<{ code: number | null; out: string }>((resolve) => {
          const child = spawn(process.execPath, ['--require', 'pg-resilience/register', 'done.cjs'], {
            cwd: app.dir,
            env: {
              ...process.env,
              DATABASE_URL: server.connectionString,
              OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
              OTEL_TRACES_EXPORTER: 'otlp',
              OTEL_METRICS_EXPORTER: 'otlp',
            },
          });
          let out = '';
          child.stdout.on('data', (d) => (out += d));
          child.stderr.on('data', (d) => (out += d));
          child.on('exit', (code) => resolve({ code, out }));
        });
        const elapsed = performance.now() - t0;
        assert.match(res.out, /DONE/);
        assert.equal(res.code, 3, res.out);
        // Without the cap the exporters hold the process for their 10 s timeout.
        assert.ok(elapsed < 6_000, `exited after ${Math.round(elapsed)} ms`);
      } finally {
        for (const s of sockets) s.destroy();
        collector.close();
      }
    },
  );

  const offSwitches: [string, NodeJS.ProcessEnv][] = [
    ['OTEL_SDK_DISABLED=true', { OTEL_SDK_DISABLED: 'true' }],
    ['PG_RESILIENCE_DISABLED=true', { PG_RESILIENCE_DISABLED: 'true' }],
  ];
  for (const [name, env] of offSwitches) {
    for (const args of [
      ['--require', 'pg-resilience/register', 'app.cjs'],
      ['--import', 'pg-resilience/register', 'app.mjs'],
    ]) {
      it(`${name}, ${args[0]}: the app runs, no /metrics`, T, async () => {
        const port = await freePort();
        const run = start(app, args, {
          ...env,
          DATABASE_URL: server.connectionString,
          OTEL_METRICS_EXPORTER: 'prometheus',
          OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1',
          OTEL_EXPORTER_PROMETHEUS_PORT: String(port),
          OTEL_TRACES_EXPORTER: 'none',
        });
        try {
          await run.waitFor('READY');
          await assert.rejects(fetch(`http://127.0.0.1:${port}/metrics`));
          run.child.stdin.write('query\n');
          await run.waitFor('QUERY 1');
          if (env.PG_RESILIENCE_DISABLED) {
            // pg untouched: the idle client's error with no pool listener kills the app, as with bare pg.
            await server.terminateBackends();
            const res = await run.exited;
            assert.notEqual(res.code, 0, run.output());
            assert.match(run.output(), /terminating connection/);
            return;
          }
          // Telemetry off, the crash guards still on.
          await server.terminateBackends();
          await new Promise((r) => setTimeout(r, 500));
          assert.equal(run.child.exitCode, null, `the app died: ${run.output()}`);
          // Nothing of ours handles signals: the default action ends the process.
          const stopped = await stopApp(run);
          assert.deepEqual([stopped.code, stopped.signal], [null, 'SIGTERM'], run.output());
        } finally {
          run.child.kill('SIGKILL');
        }
      });
    }
  }

  for (const args of [
    ['--require', 'pg-resilience/register', 'app.cjs'],
    ['--import', 'pg-resilience/register', 'app.mjs'],
  ]) {
    it(
      `bad configuration, ${args[0]}: the app does not start; the message alone, exit code 1`,
      T,
      async () => {
        const run = start(app, args, {
          DATABASE_URL: server.connectionString,
          PG_RESILIENCE_RETRY_ATTEMPTS: '0',
          OTEL_METRICS_EXPORTER: 'none',
          OTEL_TRACES_EXPORTER: 'none',
        });
        try {
          const res = await run.exited;
          assert.equal(res.code, 1, run.output());
          // Exactly the ConfigError's message and what to do: no code frame, no stack, no app output.
          assert.equal(
            run.output(),
            'pg-resilience: invalid configuration (1 issue):\n' +
              '  retry.maxAttempts = 0 (from env PG_RESILIENCE_RETRY_ATTEMPTS): must be an integer from 1 to 100\n' +
              'pg-resilience/register: the app was not started. Fix the setting above, or set ' +
              'PG_RESILIENCE_DISABLED=true to run the app without pg-resilience.\n',
          );
        } finally {
          run.child.kill('SIGKILL');
        }
      },
    );
  }
});
