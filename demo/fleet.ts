/**
 * `npm run demo -- --fleet`: four app processes against one database, coordinated through a Redis of the
 * demo's own (docs/demo.md, docs/fleet.md). Two phases, each followed by every app's ledger check:
 * - budget: reads hold their connections, so the four pools together want more connections than the
 *   server allows; the fleet's connection budget keeps the server-side count within it (sampled in
 *   pg_stat_activity every 100 ms), and no call fails with 53300.
 * - outage: the server stops (with --database-url, the proxy refuses connections); every process's
 *   breaker opens, the fleet sends about one recovery probe per interval in total, and once one succeeds
 *   every process closes.
 * Needs redis-server (the PATH, or REDIS_SERVER): cli.ts checks first, and says how to get it.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { PROFILES } from '../src/config/defaults.ts';
import { ATTR, METRICS, prometheusLabel, prometheusName } from '../src/telemetry/catalog.ts';
import { FaultProxy } from '../test/support/fault-proxy.ts';
import { freePort, startServer, type TestServer } from '../test/support/postgres.ts';
import { parseExposition, type Sample, sum } from '../test/support/prometheus-text.ts';
import { type RedisServer, redisServerPath, startRedis } from '../test/support/redis.ts';
import { App } from './app-process.ts';
import type { DemoOptions } from './cli.ts';
import { APPLICATION_NAME, TARGETS_ENV, type Verification, type Workload } from './protocol.ts';
import { percentile, ScenarioStats } from './report.ts';
import { BASE_WORKLOAD } from './scenarios.ts';
import { DEMO_SCHEMA } from './schema.ts';
import { useExisting } from './server.ts';

const APPS = 4;
/** The fleet's connection budget to the database (PG_RESILIENCE_MAX_CONNECTIONS). */
export const FLEET_BUDGET = 12;
/** The embedded server's max_connections: above the budget, below what four pools of 10 may open. */
const SERVER_MAX_CONNECTIONS = 16;
const FLEET = 'pg-resilience-demo';

/** The line the demo prints when --fleet cannot run. */
export const REDIS_MISSING =
  '--fleet needs redis-server on the PATH (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis); running the demo without it';

/** Whether a redis-server can be started here. */
export function redisAvailable(): boolean {
  const r = spawnSync(redisServerPath(), ['--version'], { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
}

/** What the budget phase measured. */
export interface BudgetPhase {
  readonly durationMs: number;
  readonly operations: number;
  readonly successPct: number | null;
  readonly p95Ms: number | null;
  /** The most server connections of the four apps at once (pg_stat_activity, every 100 ms). */
  readonly peakServerConnections: number;
  readonly budget: number;
  /** Calls that failed with 53300 too_many_connections (must be 0). */
  readonly tooManyConnections: number;
  /**
   * Calls whose new connection waited past the connect timeout for a share of the budget
   * (PGR_CONNECTION_BUDGET_EXHAUSTED): pg-pool hands a waiting call the connection it opens for it, so
   * under sustained overload some wait that long.
   */
  readonly budgetExhausted: number;
  readonly errors: Record<string, number>;
}

/** What the outage phase measured. */
export interface OutagePhase {
  readonly durationMs: number;
  readonly downMs: number;
  /** Apps whose breaker opened while the server was down. */
  readonly appsOpened: number;
  /** Apps that saw the target open fleet-wide (pg_resilience.circuit.fleet_open = 1). */
  readonly appsFleetOpen: number;
  /** Recovery probes the fleet sent while down (fleet_probes{result="taken"} over every app). */
  readonly probesTaken: number;
  /** Probes skipped because another process held the fleet's probe lock. */
  readonly probesSkipped: number;
  /** The recovery interval: about one probe per interval fleet-wide. */
  readonly probeIntervalMs: number;
  /** From "server accepts connections again" to every app's breaker closed, in ms. */
  readonly allClosedMs: number | null;
  /** From the first app's breaker closed to the last's, in ms. */
  readonly closeSpreadMs: number | null;
  readonly errors: Record<string, number>;
}

export interface FleetResult {
  readonly apps: number;
  readonly budget: BudgetPhase;
  /** null when the run was stopped before it. */
  readonly outage: OutagePhase | null;
  readonly ledgers: Verification[];
  readonly ok: boolean;
}

const L = prometheusLabel;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Runs the fleet demo; resolves with the process exit code (0 ok, 1 an invariant broke, 130 Ctrl-C). */
export async function runFleetDemo(options: DemoOptions, say: (line: string) => void): Promise<number> {
  let stopping = false;
  const onSignal = (): void => {
    stopping = true;
    say('\nstopping…');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let server: TestServer | undefined;
  let proxy: FaultProxy | undefined;
  let redis: RedisServer | undefined;
  let admin: pg.Client | undefined;
  const apps: App[] = [];
  let crashed: string | undefined;
  let result: FleetResult | undefined;
  try {
    say('pg-resilience demo: a fleet of four processes, coordinated through Redis');
    server = options.databaseUrl
      ? await useExisting(options.databaseUrl)
      : await startServer({
          database: 'demo',
          settings: { max_connections: String(SERVER_MAX_CONNECTIONS), synchronous_commit: 'off' },
        });
    const controllable = server.controllable && !options.databaseUrl;
    say(
      `  database: ${server.host}:${server.port}/${server.database}${controllable ? ` (embedded, max_connections ${SERVER_MAX_CONNECTIONS}, data in ${server.baseDir})` : ''}`,
    );
    redis = await startRedis();
    say(`  redis: redis-server on 127.0.0.1:${redis.port} (the demo's own, removed at the end)`);
    proxy = await FaultProxy.start({ targetHost: server.host, targetPort: server.port });
    const url = new URL(proxy.connectionString(server));
    url.searchParams.set('application_name', APPLICATION_NAME);
    url.searchParams.set('options', `-c search_path=${DEMO_SCHEMA}`);
    const target = `${proxy.host}:${proxy.port}/${server.database}`;
    const metricsUrls: string[] = [];
    const start = async (i: number): Promise<App> => {
      const port = await freePort();
      metricsUrls[i] = `http://127.0.0.1:${port}/metrics`;
      const app = new App(
        {
          OTEL_SERVICE_NAME: 'pg-resilience-demo',
          OTEL_METRICS_EXPORTER: 'prometheus',
          OTEL_TRACES_EXPORTER: 'none',
          OTEL_LOGS_EXPORTER: 'none',
          ...process.env,
          OTEL_EXPORTER_PROMETHEUS_PORT: String(port),
          OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1',
          [TARGETS_ENV]: JSON.stringify({
            main: url.toString(),
            wait: url.toString(),
            queue: url.toString(),
            drop: url.toString(),
          }),
          PG_RESILIENCE_REDIS_URL: redis!.url,
          PG_RESILIENCE_FLEET: FLEET,
          PG_RESILIENCE_MAX_CONNECTIONS: String(FLEET_BUDGET),
        },
        () => {},
      );
      apps[i] = app;
      await app.next('ready', 120_000);
      return app;
    };
    // The first app creates and seeds the shop; the others find it.
    await start(0);
    await Promise.all([1, 2, 3].map(start));
    say(
      `  ${APPS} sample apps (pids ${apps.map((a) => a.child.pid).join(', ')}), each a pool of 10, with PG_RESILIENCE_REDIS_URL, PG_RESILIENCE_FLEET=${FLEET}, PG_RESILIENCE_MAX_CONNECTIONS=${FLEET_BUDGET}`,
    );
    admin = new pg.Client(server.clientConfig());
    admin.on('error', () => {}); // the outage ends its session: nothing to do, it is no longer used
    await admin.connect();

    const scrape = async (i: number): Promise<Sample[]> => {
      try {
        const res = await fetch(metricsUrls[i]!, { signal: AbortSignal.timeout(2_000) });
        return parseExposition(await res.text());
      } catch {
        return [];
      }
    };
    const scrapeAll = () => Promise.all(apps.map((_, i) => scrape(i)));
    const onTarget = (extra: Record<string, string> = {}) => ({ [L(ATTR.TARGET)]: target, ...extra });
    const breakerOf = (s: Sample[]): string =>
      ['open', 'half_open'].find(
        (state) => sum(s, prometheusName(METRICS.circuitState), onTarget({ [L(ATTR.STATE)]: state })) === 1,
      ) ?? 'closed';
    const collect = (stats: ScenarioStats) => {
      for (const app of apps) app.onStats((m) => stats.add(m.kinds));
    };
    const verifyAll = async (name: string): Promise<Verification[]> => {
      // All at once: each stops issuing calls, waits for those in flight, then checks its ledger.
      const dead = apps.find((a) => !a.alive);
      if (dead) throw new Error(`an app died${dead.fatal ? `: ${dead.fatal}` : ''}`);
      const answers = apps.map((app) => app.next('verified', 90_000));
      for (const app of apps) app.send({ type: 'verify', scenario: name });
      return (await Promise.all(answers)).map((m) => m.result);
    };
    const ledgers: Verification[] = [];

    // ---- budget ----
    const budgetMs = options.durationMs ?? (options.quick ? 6_000 : 10_000);
    say(
      `\n▶ budget: reads hold their connection 100 ms, so the four pools want more than the server's ${controllable ? SERVER_MAX_CONNECTIONS : 'max_connections'}; the fleet shares ${FLEET_BUDGET}.`,
    );
    const budgetStats = new ScenarioStats();
    collect(budgetStats);
    const heavy: Workload = { ...BASE_WORKLOAD, rate: 80, readHoldMs: 100 };
    for (const app of apps) app.send({ type: 'workload', workload: heavy });
    let peak = 0;
    const budgetEnd = performance.now() + budgetMs;
    while (performance.now() < budgetEnd && !stopping) {
      const { rows } = await admin.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [APPLICATION_NAME],
      );
      peak = Math.max(peak, rows[0]!.n);
      await sleep(100);
    }
    ledgers.push(...(await verifyAll('fleet-budget')));
    const bt = budgetStats.total();
    const budgetErrors = budgetStats.errors();
    const budget: BudgetPhase = {
      durationMs: budgetMs,
      operations: bt.ok + bt.failed,
      successPct: bt.ok + bt.failed === 0 ? null : Math.round((1000 * bt.ok) / (bt.ok + bt.failed)) / 10,
      p95Ms: percentile(budgetStats.latencies, 95),
      peakServerConnections: peak,
      budget: FLEET_BUDGET,
      tooManyConnections: budgetErrors['53300'] ?? 0,
      budgetExhausted: budgetErrors['PGR_CONNECTION_BUDGET_EXHAUSTED'] ?? 0,
      errors: budgetErrors,
    };
    say(
      `  peak ${peak} server connections for a budget of ${FLEET_BUDGET} · ${budget.tooManyConnections} × 53300 · ${budget.operations} ops, ${budget.successPct ?? '—'} % ok, p95 ${budget.p95Ms ?? '—'} ms (calls wait for a connection instead)${budget.budgetExhausted ? ` · ${budget.budgetExhausted} waited past the connect timeout for a share (PGR_CONNECTION_BUDGET_EXHAUSTED: the budget was spent)` : ''}`,
    );

    // ---- outage ----
    let outage: OutagePhase | null = null;
    if (!stopping) {
      const outageMs = options.durationMs ?? (options.quick ? 10_000 : 20_000);
      const downMs = Math.round(outageMs * 0.4);
      say(
        `\n▶ outage: the server ${controllable ? 'stops' : 'is cut off (the proxy refuses connections)'} for ${downMs / 1000} s; every breaker opens, the fleet probes once per interval, all close together.`,
      );
      const stats = new ScenarioStats();
      collect(stats);
      for (const app of apps) app.send({ type: 'workload', workload: BASE_WORKLOAD });
      const before = await scrapeAll();
      await sleep(Math.round(outageMs * 0.2));
      if (controllable) await server.stop();
      else await proxy.refuse(true);
      const opened = new Set<number>();
      const fleetOpen = new Set<number>();
      const downEnd = performance.now() + downMs;
      while (performance.now() < downEnd && !stopping) {
        const now = await scrapeAll();
        now.forEach((s, i) => {
          if (breakerOf(s) !== 'closed') opened.add(i);
          if (sum(s, prometheusName(METRICS.circuitFleetOpen), onTarget()) === 1) fleetOpen.add(i);
        });
        await sleep(100);
      }
      const probesDuringOutage = await scrapeAll();
      if (controllable) await server.start();
      else await proxy.refuse(false);
      const upAt = performance.now();
      const closedAt = new Map<number, number>();
      while (closedAt.size < apps.length && performance.now() - upAt < 15_000 && !stopping) {
        const now = await scrapeAll();
        now.forEach((s, i) => {
          if (!closedAt.has(i) && breakerOf(s) === 'closed') closedAt.set(i, performance.now() - upAt);
        });
        await sleep(50);
      }
      const rest = outageMs - Math.round(outageMs * 0.2) - downMs - (performance.now() - upAt);
      if (rest > 0 && !stopping) await sleep(rest);
      ledgers.push(...(await verifyAll('fleet-outage')));
      const probes = (result: string) =>
        probesDuringOutage.reduce(
          (n, s, i) =>
            n +
            sum(s, prometheusName(METRICS.circuitFleetProbes), onTarget({ [L(ATTR.RESULT)]: result })) -
            sum(
              before[i]!,
              prometheusName(METRICS.circuitFleetProbes),
              onTarget({ [L(ATTR.RESULT)]: result }),
            ),
          0,
        );
      const closes = [...closedAt.values()];
      outage = {
        durationMs: outageMs,
        downMs,
        appsOpened: opened.size,
        appsFleetOpen: fleetOpen.size,
        probesTaken: probes('taken'),
        probesSkipped: probes('skipped'),
        probeIntervalMs: PROFILES.default.recovery.intervalMs,
        allClosedMs: closes.length === apps.length ? Math.round(Math.max(...closes)) : null,
        closeSpreadMs:
          closes.length === apps.length ? Math.round(Math.max(...closes) - Math.min(...closes)) : null,
        errors: stats.errors(),
      };
      say(
        `  breakers opened in ${outage.appsOpened} of ${APPS} apps (open fleet-wide in ${outage.appsFleetOpen}) · ${outage.probesTaken} probes taken by the fleet in ${downMs / 1000} s (${outage.probesSkipped} skipped: another process held the lock) · all closed ${outage.allClosedMs ?? 'never'} ms after the server was back (${outage.closeSpreadMs ?? '—'} ms between the first and the last)`,
      );
    }
    const ok =
      ledgers.every((l) => l.ok) &&
      budget.tooManyConnections === 0 &&
      budget.peakServerConnections <= FLEET_BUDGET &&
      (outage === null || outage.allClosedMs !== null);
    result = { apps: APPS, budget, outage, ledgers, ok };
    say(
      ledgers.every((l) => l.ok)
        ? `  ledgers: every acknowledged write exactly once in all ${APPS} apps (${ledgers.reduce((n, l) => n + l.acknowledged, 0)} writes)`
        : '  LEDGER BROKEN',
    );
  } catch (error) {
    if (!stopping) crashed = error instanceof Error ? error.message : String(error);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.all(apps.map((a) => a.stop().catch(() => {})));
    await admin?.end().catch(() => {});
    await proxy?.close().catch(() => {});
    await redis?.stop().catch(() => {});
    await server?.close().catch(() => {});
  }
  const ok = crashed === undefined && result?.ok === true;
  if (crashed) say(`\n✗ ${crashed}`);
  else if (result && !ok) say('\n✗ an invariant broke: see above');
  else if (result)
    say(`\n✓ the fleet held its budget, recovered together, and kept every write exactly once`);
  if (options.json) {
    writeFileSync(
      options.json,
      `${JSON.stringify({ ok, crashed: crashed ?? null, quick: options.quick, fleet: result ?? null }, null, 2)}\n`,
    );
    say(`JSON summary: ${options.json}`);
  }
  if (stopping) return ok ? 130 : 1;
  return ok ? 0 : 1;
}
