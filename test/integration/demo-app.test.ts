// The demo's sample app (demo/app.ts) as the orchestrator runs it: a child process with an IPC
// channel, `node --import pg-resilience/register demo/app.ts` (the built package, built first when
// dist/ is missing or stale), four pools each through its own fault proxy, against a real PostgreSQL.
// It must seed, run a workload, prove its ledger (no acknowledged insert missing, none twice, the
// balances unchanged), keep doing so while connections are reset, and stop with exit code 0.
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type FromApp,
  type KindStats,
  SEED,
  type TargetUrls,
  TARGETS_ENV,
  type ToApp,
  type Verification,
  type WorkKind,
  type Workload,
} from '../../demo/protocol.ts';
import { ensureBuilt } from '../../scripts/ensure-built.mjs';
import { FaultProxy } from '../support/fault-proxy.ts';
import { startServer, type TestServer } from '../support/postgres.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const APP = fileURLToPath(new URL('../../demo/app.ts', import.meta.url));

const WORKLOAD: Workload = { rate: 100, slowRate: 0, slowTimeoutMs: 0, spikeRate: 20, maxInFlight: 40 };

/** The app process, its messages and output. */
class RunningApp {
  readonly child: ChildProcess;
  readonly messages: FromApp[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output = '';

  constructor(targets: TargetUrls) {
    this.child = fork(APP, [], {
      cwd: ROOT,
      execArgv: [
        ...process.execArgv.filter((a) => /strip-types|disable-warning/.test(a)),
        '--import',
        'pg-resilience/register',
      ],
      env: {
        ...process.env,
        [TARGETS_ENV]: JSON.stringify(targets),
        OTEL_TRACES_EXPORTER: 'none',
        OTEL_METRICS_EXPORTER: 'none',
        OTEL_LOGS_EXPORTER: 'none',
      },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => (this.output += chunk));
    }
    this.child.on('message', (m: FromApp) => this.messages.push(m));
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, signal) => resolve({ code, signal })),
    );
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  send(message: ToApp): void {
    this.child.send(message);
  }

  /** The first message of `type` after message number `from`. */
  async next<T extends FromApp['type']>(
    type: T,
    from: number,
    timeoutMs = 60_000,
  ): Promise<Extract<FromApp, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.slice(from).find((m) => m.type === type);
      if (found) return found as Extract<FromApp, { type: T }>;
      const fatal = this.messages.find((m) => m.type === 'fatal');
      if (fatal) assert.fail(`the app sent fatal: ${fatal.message}\n${this.output}`);
      if (!this.alive) assert.fail(`the app exited waiting for '${type}'\n${this.output}`);
      if (Date.now() > deadline) assert.fail(`no '${type}' within ${timeoutMs} ms\n${this.output}`);
      await sleep(20);
    }
  }

  /** Sums the stats messages from message number `from` on. */
  totals(from: number): Partial<Record<WorkKind, KindStats>> {
    const sum: Partial<Record<WorkKind, KindStats>> = {};
    for (const m of this.messages.slice(from)) {
      if (m.type !== 'stats') continue;
      for (const [kind, s] of Object.entries(m.kinds) as [WorkKind, KindStats][]) {
        const t = (sum[kind] ??= { ok: 0, failed: 0, errors: {}, latenciesMs: [] });
        t.ok += s.ok;
        t.failed += s.failed;
        for (const [code, n] of Object.entries(s.errors)) t.errors[code] = (t.errors[code] ?? 0) + n;
        t.latenciesMs.push(...s.latenciesMs);
      }
    }
    return sum;
  }

  /** Runs `workload` for `ms`, then verifies `scenario`; `during` runs meanwhile. */
  async scenario(
    scenario: string,
    workload: Workload,
    ms: number,
    during: () => Promise<void> = () => sleep(ms),
  ): Promise<{ result: Verification; stats: Partial<Record<WorkKind, KindStats>> }> {
    const from = this.messages.length;
    this.send({ type: 'workload', workload });
    await Promise.all([sleep(ms), during()]);
    const at = this.messages.length;
    this.send({ type: 'verify', scenario });
    const { result } = await this.next('verified', at);
    return { result, stats: this.totals(from) };
  }
}

function describeStats(stats: Partial<Record<WorkKind, KindStats>>): string {
  return Object.entries(stats)
    .map(([k, s]) => `${k}: ${s.ok} ok, ${s.failed} failed ${JSON.stringify(s.errors)}`)
    .join('; ');
}

describe(
  'demo sample app (child process, pg-resilience registered, real PostgreSQL)',
  { timeout: 180_000 },
  () => {
    let server: TestServer;
    const proxies: Partial<Record<keyof TargetUrls, FaultProxy>> = {};
    let app: RunningApp | undefined;

    before(async () => {
      ensureBuilt(ROOT, [`${ROOT}dist/esm/register.js`, `${ROOT}dist/esm/index.js`], 'demo-app test');
      server = await startServer({ settings: { max_connections: '60' } });
      for (const name of ['main', 'wait', 'queue', 'drop'] as const) {
        proxies[name] = await FaultProxy.forServer(server);
      }
    });

    after(async () => {
      if (app?.alive) app.child.kill('SIGKILL');
      await Promise.all(Object.values(proxies).map((p) => p.close()));
      await server?.close();
    });

    const targets = (): TargetUrls => ({
      main: proxies.main!.connectionString(server),
      wait: proxies.wait!.connectionString(server),
      queue: proxies.queue!.connectionString(server),
      drop: proxies.drop!.connectionString(server),
    });

    it('seeds the shop and says ready', { timeout: 60_000 }, async () => {
      app = new RunningApp(targets());
      const ready = await app.next('ready', 0);
      assert.deepEqual(ready.seeded, { ...SEED });
      const { rows } = await server.query<{ total: string }>(
        'SELECT sum(balance_cents)::text AS total FROM customers',
      );
      assert.equal(rows[0]?.total, String(SEED.customers * 10_000));
    });

    it('runs a workload and proves its ledger', { timeout: 60_000 }, async (t) => {
      assert.ok(app);
      const { result, stats } = await app.scenario('healthy', WORKLOAD, 2_000);
      t.diagnostic(`healthy: ${JSON.stringify(result)}; ${describeStats(stats)}`);
      assert.equal(result.scenario, 'healthy');
      assert.ok(result.acknowledged > 0, 'some inserts were acknowledged');
      assert.equal(result.missing, 0);
      assert.equal(result.duplicated, 0);
      assert.equal(result.balanceDrift, 0);
      assert.equal(result.ok, true);
      for (const kind of ['read', 'upsert', 'insert', 'transaction', 'cursor', 'spike_wait'] as const) {
        const s = stats[kind];
        assert.ok(s && s.ok > 0, `ok ${kind} calls in the stats: ${describeStats(stats)}`);
        assert.ok(s.latenciesMs.length > 0, `${kind} latencies`);
      }
      // Nothing is broken: every call succeeded.
      for (const [kind, s] of Object.entries(stats))
        assert.equal(s.failed, 0, `${kind}: ${JSON.stringify(s.errors)}`);
      // The orders the app acknowledged are in the table.
      const { rows } = await server.query<{ n: number }>('SELECT count(*)::int AS n FROM orders');
      assert.ok(rows[0]!.n >= SEED.orders + result.acknowledged);
    });

    it('survives connection resets with the ledger intact', { timeout: 90_000 }, async (t) => {
      assert.ok(app);
      const main = proxies.main!;
      main.resetStats();
      const { result, stats } = await app.scenario('resets', WORKLOAD, 3_000, async () => {
        // Some latency keeps statements on the wire (and the pool wider), so the resets hit calls.
        main.setLatency(5, 2);
        await sleep(500);
        main.resetNewConnections(0.2);
        await sleep(500);
        main.resetOpenConnections();
        await sleep(1_500);
        main.clear();
      });
      t.diagnostic(
        `resets: ${JSON.stringify(result)}; ${describeStats(stats)}; proxy ${JSON.stringify(main.stats)}`,
      );
      assert.ok(main.stats.resetOpen > 0, 'open connections were reset');
      assert.ok(app.alive, `the app is alive\n${app.output}`);
      assert.equal(result.missing, 0);
      assert.equal(result.duplicated, 0);
      assert.equal(result.balanceDrift, 0);
      assert.equal(result.ok, true);
      assert.ok(result.acknowledged > 0, 'inserts were still acknowledged');
      assert.ok((stats.read?.ok ?? 0) > 0, 'reads still succeed');
    });

    it('stops on request and exits 0', { timeout: 30_000 }, async () => {
      assert.ok(app);
      app.send({ type: 'stop' });
      const { code, signal } = await app.exited;
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, app.output);
    });
  },
);
