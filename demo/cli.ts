/**
 * `npm run demo`: resilience at work on a real PostgreSQL (docs/demo.md).
 *
 * Starts an embedded PostgreSQL (or uses `--database-url`), four fault proxies in front of it (the shop's
 * target and three rate-limited spike targets), and the sample app (app.ts) as a child process launched
 * the way users launch theirs: `node --import pg-resilience/register app.ts`. Then it runs the scenarios
 * (scenarios.ts) in turn while a live view shows what the policies are doing, checks after each one that
 * every acknowledged write is in the database exactly once, and prints a summary table (and `--json`).
 * The failover scenario gets a primary and a synchronous standby of its own, started when it comes up
 * (the app's shop pool moves to both, multi-host, for it, and back after).
 * Exit code 1 when an invariant broke (a lost or duplicated acknowledged write, the app died).
 */
import { writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ATTR, METRICS, prometheusLabel, prometheusName } from '../src/telemetry/catalog.ts';
import { FaultProxy } from '../test/support/fault-proxy.ts';
import { type ReplicaPair, startReplicaPair } from '../test/support/replication.ts';
import { parseExposition, type Sample, sum } from '../test/support/prometheus-text.ts';
import type { TargetUrls, Verification, Workload } from './protocol.ts';
import { App, APP_COMMAND } from './app-process.ts';
import { REDIS_MISSING, redisAvailable, runFleetDemo } from './fleet.ts';
import { APPLICATION_NAME, TARGETS_ENV } from './protocol.ts';
import { type ScenarioResult, ScenarioStats, scenarioResult, summaryTable } from './report.ts';
import {
  BASE_WORKLOAD,
  type Proxies,
  SCENARIO_NAMES,
  type Scenario,
  type ScenarioContext,
  type ScenarioFacts,
  SCENARIOS,
  SPIKE_LIMIT_PER_MINUTE,
} from './scenarios.ts';
import { DEMO_SCHEMA } from './schema.ts';
import { freePort } from '../test/support/postgres.ts';
import { type DemoServer, startEmbedded, useExisting } from './server.ts';
import { LiveView } from './view.ts';

const SHOP = ['read', 'upsert', 'insert', 'transaction', 'cursor'] as const;
const WRITES = ['upsert', 'insert', 'transaction'] as const;

const seededLine = (seeded: Record<string, number>): string =>
  Object.entries(seeded)
    .map(([t, n]) => `${n} ${t}`)
    .join(', ');

/**
 * The shop's URL on a replica pair: both hosts, libpq style, and `target_session_attrs=read-write` (the
 * hook connects to whichever accepts writes), with the same application_name and search_path as the
 * other targets.
 */
function multiHostUrl(pair: ReplicaPair): string {
  const { primary, standby } = pair;
  const params = new URLSearchParams({
    target_session_attrs: 'read-write',
    application_name: APPLICATION_NAME,
    options: `-c search_path=${DEMO_SCHEMA}`,
  });
  const auth = `${encodeURIComponent(primary.user)}:${encodeURIComponent(primary.password)}`;
  return `postgresql://${auth}@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/${encodeURIComponent(primary.database)}?${params}`;
}

/** A connection string without its password, for the screen. */
const redact = (url: string): string => url.replace(/^(postgres(?:ql)?:\/\/[^:@/]*:)[^@]*@/, '$1***@');

export const USAGE = `Usage: npm run demo -- [options]

Resilience at work on a real PostgreSQL: a sample app under \`node --import pg-resilience/register\`,
real traffic, real faults (${SCENARIO_NAMES.join(', ')}), a live view, and a summary.

Options:
  --quick               the whole run in under a minute (shorter scenarios)
  --scenario NAME       run only this scenario (repeatable): ${SCENARIO_NAMES.join(', ')}
  --duration SECONDS    length of every scenario
  --loop                cycle through the scenarios until stopped (Ctrl-C)
  --database-url URL    use this PostgreSQL instead of an embedded one (outages then come from the proxy)
  --metrics-port PORT   the app's Prometheus endpoint (default 9464; 0 picks a free port)
  --fleet               four apps coordinated through Redis: the fleet's connection budget and its
                        shared breaker at work (needs redis-server on the PATH)
  --json PATH           also write the summary as JSON
  -h, --help            this text`;

export interface DemoOptions {
  quick: boolean;
  scenarios: Scenario[];
  durationMs: number | undefined;
  loop: boolean;
  databaseUrl: string | undefined;
  metricsPort: number;
  json: string | undefined;
  fleet: boolean;
}

/** Parses the command line; throws an Error with a one-line message on a bad option. */
export function parseOptions(argv: readonly string[]): DemoOptions | 'help' {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      quick: { type: 'boolean', default: false },
      scenario: { type: 'string', multiple: true },
      duration: { type: 'string' },
      loop: { type: 'boolean', default: false },
      'database-url': { type: 'string' },
      'metrics-port': { type: 'string', default: '9464' },
      json: { type: 'string' },
      fleet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const names = values.scenario ?? [];
  for (const n of names) {
    if (!(SCENARIO_NAMES as readonly string[]).includes(n)) {
      throw new Error(`--scenario ${n}: unknown scenario; choose from ${SCENARIO_NAMES.join(', ')}`);
    }
  }
  let durationMs: number | undefined;
  if (values.duration !== undefined) {
    const s = Number(values.duration);
    if (!Number.isFinite(s) || s < 1 || s > 3600) {
      throw new Error(`--duration ${values.duration}: must be a number of seconds from 1 to 3600`);
    }
    durationMs = Math.round(s * 1000);
  }
  const port = Number(values['metrics-port']);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new Error(`--metrics-port ${values['metrics-port']}: must be an integer from 0 to 65535`);
  }
  return {
    quick: values.quick,
    scenarios: names.length ? SCENARIOS.filter((s) => names.includes(s.name)) : [...SCENARIOS],
    durationMs,
    loop: values.loop,
    databaseUrl: values['database-url'],
    metricsPort: port,
    json: values.json,
    fleet: values.fleet,
  };
}

const L = prometheusLabel;

/** Runs the demo; resolves with the process exit code. */
export async function runDemo(
  options: DemoOptions,
  out: NodeJS.WriteStream = process.stdout,
): Promise<number> {
  if (options.fleet) {
    if (redisAvailable()) return runFleetDemo(options, (line) => out.write(`${line}\n`));
    out.write(`${REDIS_MISSING}\n`);
  }
  const view = new LiveView(out, options.quick ? 1_000 : 2_000);
  const say = (line: string) => view.log(line);
  let stopping = false;
  const wakeups = new Set<() => void>();
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    say('\nstopping…');
    for (const w of wakeups) w();
  };
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
    stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let server: DemoServer | undefined;
  let pair: ReplicaPair | undefined;
  const proxyList: FaultProxy[] = [];
  let app: App | undefined;
  const configFile = path.join(os.tmpdir(), `pg-resilience-demo-${process.pid}-${Date.now()}.json`);
  const results: ScenarioResult[] = [];
  let crashed: string | undefined;

  try {
    say('pg-resilience demo');
    server = options.databaseUrl ? await useExisting(options.databaseUrl) : await startEmbedded();
    say(`  database: ${server.description}`);
    const make = () => FaultProxy.start({ targetHost: server!.host, targetPort: server!.port });
    const proxies: Proxies = {
      main: await make(),
      wait: await make(),
      queue: await make(),
      drop: await make(),
    };
    proxyList.push(proxies.main, proxies.wait, proxies.queue, proxies.drop);
    const url = (p: FaultProxy): string => {
      const u = new URL(p.connectionString(server!));
      u.searchParams.set('application_name', APPLICATION_NAME);
      // The shop lives in its own schema (schema.ts): on your database it never touches your tables.
      u.searchParams.set('options', `-c search_path=${DEMO_SCHEMA}`);
      return u.toString();
    };
    const targets: TargetUrls = {
      main: url(proxies.main),
      wait: url(proxies.wait),
      queue: url(proxies.queue),
      drop: url(proxies.drop),
    };
    const targetOf = (p: FaultProxy) => `${p.host}:${p.port}/${server!.database}`;
    const spike = { ratePerMinute: SPIKE_LIMIT_PER_MINUTE, burst: 10, maxWaitMs: 2_000, maxQueueSize: 20 };
    writeFileSync(
      configFile,
      JSON.stringify({
        targets: {
          [targetOf(proxies.wait)]: { rateLimit: { enabled: true, strategy: 'wait', ...spike } },
          [targetOf(proxies.queue)]: { rateLimit: { enabled: true, strategy: 'queue', ...spike } },
          [targetOf(proxies.drop)]: { rateLimit: { enabled: true, strategy: 'drop', ...spike } },
        },
      }),
    );
    const metricsPort = options.metricsPort === 0 ? await freePort() : options.metricsPort;
    const metricsHost = process.env.OTEL_EXPORTER_PROMETHEUS_HOST ?? '127.0.0.1';
    const metricsUrl = `http://${metricsHost === '0.0.0.0' ? '127.0.0.1' : metricsHost}:${metricsPort}/metrics`;
    const env: NodeJS.ProcessEnv = {
      OTEL_SERVICE_NAME: 'pg-resilience-demo',
      OTEL_METRICS_EXPORTER: 'prometheus',
      OTEL_TRACES_EXPORTER: 'none',
      OTEL_LOGS_EXPORTER: 'none',
      PG_RESILIENCE_LOG_LEVEL: 'info',
      ...process.env,
      OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
      OTEL_EXPORTER_PROMETHEUS_HOST: metricsHost,
      [TARGETS_ENV]: JSON.stringify(targets),
      PG_RESILIENCE_CONFIG: configFile,
    };
    app = new App(env, (line) => {
      const text = line.replace(/^\[pg-resilience\] /, '');
      app?.events.push(text);
      if (app && app.events.length > 50) app.events.splice(0, app.events.length - 50);
    });
    say(`  sample app (pid ${app.child.pid}): ${APP_COMMAND}`);
    say(`  the app's Prometheus endpoint: ${metricsUrl}`);
    const ready = await app.next('ready', 120_000);
    say(`  seeded: ${seededLine(ready.seeded)}`);

    const scrape = async (): Promise<Sample[]> => {
      try {
        const res = await fetch(metricsUrl, { signal: AbortSignal.timeout(2_000) });
        return parseExposition(await res.text());
      } catch {
        return [];
      }
    };
    const mainTarget = targetOf(proxies.main);
    let lastOkAt = 0;
    let lastWriteOkAt = 0;
    let scenarioStats = new ScenarioStats();
    const ctxBase = {
      server,
      proxies,
      lastWriteOkAt: () => lastWriteOkAt,
      errors: () => scenarioStats.errors(),
      sleep: (ms: number) =>
        new Promise<void>((resolve) => {
          if (stopping) return resolve();
          const wake = () => {
            clearTimeout(timer);
            wakeups.delete(wake);
            resolve();
          };
          const timer = setTimeout(wake, ms);
          wakeups.add(wake);
        }),
      async breakerState() {
        const s = await scrape();
        for (const state of ['open', 'half_open', 'closed']) {
          const v = sum(s, prometheusName(METRICS.circuitState), {
            [L(ATTR.TARGET)]: mainTarget,
            [L(ATTR.STATE)]: state,
          });
          if (v === 1) return state;
        }
        return undefined;
      },
      stopping: () => stopping,
      lastOkAt: () => lastOkAt,
    };

    let round = 0;
    do {
      for (const [index, scenario] of options.scenarios.entries()) {
        if (stopping) break;
        if (scenario.needsReplicaPair && !server.controllable) {
          say(
            `\n▷ ${scenario.name}: skipped: it needs two local servers (a primary and its standby), which --database-url does not give`,
          );
          continue;
        }
        const durationMs = options.durationMs ?? (options.quick ? scenario.quickMs : scenario.durationMs);
        say(`\n▶ ${scenario.name}${options.loop ? ` (round ${round + 1})` : ''}: ${scenario.purpose}`);
        const events: string[] = [];
        let pairTarget: string | undefined;
        if (scenario.needsReplicaPair) {
          say('  starting a primary and a synchronous streaming standby…');
          pair = await startReplicaPair({ synchronous: true, database: server.database });
          const { primary, standby } = pair;
          for (const [role, s] of [
            ['primary', primary],
            ['standby', standby],
          ] as const)
            say(`  ${role}: 127.0.0.1:${s.port} (data in ${s.baseDir})`);
          pairTarget = `127.0.0.1:${primary.port},127.0.0.1:${standby.port}/${primary.database}`;
          app.send({ type: 'retarget', main: multiHostUrl(pair) });
          const retargeted = await app.next('retargeted', 60_000);
          say(`  the shop's pool: ${redact(multiHostUrl(pair))}`);
          say(`  seeded on the primary: ${seededLine(retargeted.seeded)}`);
        }
        const ctx: ScenarioContext = { ...ctxBase, pair, event: (line) => events.push(line) };
        const stats = new ScenarioStats();
        scenarioStats = stats;
        const before = await scrape();
        const started = performance.now();
        let window: { at: number; ops: number }[] = [];
        app.onStats((m) => {
          stats.add(m.kinds);
          if (SHOP.some((k) => (m.kinds[k]?.ok ?? 0) > 0)) lastOkAt = m.at;
          if (WRITES.some((k) => (m.kinds[k]?.ok ?? 0) > 0)) lastWriteOkAt = m.at;
          let ops = 0;
          for (const k of Object.values(m.kinds)) ops += (k?.ok ?? 0) + (k?.failed ?? 0);
          window.push({ at: m.at, ops });
          window = window.filter((w) => w.at > m.at - 1_000);
        });
        const workload: Workload = scenario.workload(BASE_WORKLOAD);
        app.send({ type: 'workload', workload });
        let latest = before;
        const ticker = setInterval(() => {
          void scrape().then((s) => {
            if (s.length) latest = s;
          });
        }, 500);
        const draw = setInterval(() => {
          const t = stats.total();
          const breakers: [string, string][] = [];
          const shown = Object.entries(proxies).map(([name, p]) => [name, targetOf(p)] as const);
          if (pairTarget !== undefined) shown.push(['failover', pairTarget]);
          for (const [name, target] of shown) {
            const open = ['open', 'half_open'].find(
              (st) =>
                sum(latest, prometheusName(METRICS.circuitState), {
                  [L(ATTR.TARGET)]: target,
                  [L(ATTR.STATE)]: st,
                }) === 1,
            );
            breakers.push([name, open ?? 'closed']);
          }
          const d = (m: string, labels = {}) => sum(latest, m, labels) - sum(before, m, labels);
          view.update({
            scenarioIndex: index,
            scenarioCount: options.scenarios.length,
            scenario: scenario.name,
            purpose: scenario.purpose,
            elapsedMs: Math.min(durationMs, performance.now() - started),
            durationMs,
            opsPerSecond: window.reduce((a, w) => a + w.ops, 0),
            successPct: t.ok + t.failed === 0 ? null : (100 * t.ok) / (t.ok + t.failed),
            retries: d(prometheusName(METRICS.retries)),
            suppressed: d(prometheusName(METRICS.retrySuppressed)),
            breakers,
            rateLimitWaits: d(`${prometheusName(METRICS.rateLimitWaitDuration)}_count`),
            rateLimitRejections: d(prometheusName(METRICS.rateLimitRejections)),
            recoveryAttempts: d(prometheusName(METRICS.recoveryAttempts)),
            events: [...events, ...(app?.events.slice(-3) ?? [])].slice(-4),
          });
        }, 250);
        let facts: ScenarioFacts = { notes: [] };
        try {
          facts = await scenario.script(ctx, durationMs);
        } finally {
          clearInterval(ticker);
          clearInterval(draw);
          view.done();
        }
        let ledger: Verification | null = null;
        if (app.alive) {
          app.send({ type: 'verify', scenario: scenario.name });
          ledger = (await app.next('verified', 90_000).catch(() => undefined))?.result ?? null;
        }
        if (pair !== undefined) {
          // The shop goes back to the main server for the next scenario (or round); the pair is done.
          if (app.alive && !interrupted) {
            app.send({ type: 'retarget', main: targets.main });
            await app.next('retargeted', 60_000);
          }
          await pair.close().catch(() => {});
          pair = undefined;
        }
        // Interrupted (Ctrl-C reaches the app too): the scenario did not finish; nothing to report.
        if (interrupted) break;
        const after = await scrape();
        const result = scenarioResult({
          name: scenario.name,
          purpose: scenario.purpose,
          durationMs,
          stats,
          before,
          after,
          ledger,
          facts,
          appAlive: app.alive,
        });
        results.push(result);
        say(`  ${oneLine(result)}`);
        for (const note of facts.notes) say(`  note: ${note}`);
        if (!app.alive) {
          crashed = `the app died during ${scenario.name}${app.fatal ? `: ${app.fatal}` : ''}`;
          stop();
        }
      }
      round++;
    } while (options.loop && !stopping);
  } catch (error) {
    if (!interrupted) crashed = error instanceof Error ? error.message : String(error);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await app?.stop().catch(() => {});
    for (const p of proxyList) await p.close().catch(() => {});
    await pair?.close().catch(() => {});
    await server?.close().catch(() => {});
    await rm(configFile, { force: true });
  }

  if (results.length) {
    say('\nSummary');
    say(summaryTable(results));
  }
  const ok = crashed === undefined && results.every((r) => r.ok);
  if (crashed) say(`\n✗ ${crashed}`);
  else if (!ok) say('\n✗ an invariant broke: see the ledger column');
  else if (results.length)
    say('\n✓ every acknowledged write is in the database exactly once; the app never crashed');
  if (options.json) {
    writeFileSync(
      options.json,
      `${JSON.stringify({ ok, crashed: crashed ?? null, quick: options.quick, scenarios: results }, null, 2)}\n`,
    );
    say(`JSON summary: ${options.json}`);
  }
  if (interrupted) return ok ? 130 : 1;
  return ok ? 0 : 1;
}

function oneLine(r: ScenarioResult): string {
  const parts = [
    `${r.operations} ops`,
    `${r.successPct ?? '—'} % ok`,
    `p95 ${r.p95Ms ?? '—'} ms`,
    `${r.retries} retries`,
  ];
  const suppressed = Object.entries(r.suppressed);
  if (suppressed.length) parts.push(`suppressed ${suppressed.map(([k, n]) => `${k} ${n}`).join(', ')}`);
  if (Object.keys(r.transitions).length) parts.push(`breaker ${Object.keys(r.transitions).join(' ')}`);
  if (r.fastFailed) parts.push(`${r.fastFailed} failed fast (CircuitOpenError)`);
  if (r.facts.recoveryMs !== undefined) {
    parts.push(`breaker closed ${r.facts.recoveryMs} ms after the server was back`);
  }
  if (r.facts.firstSuccessMs !== undefined) {
    parts.push(`first successful call ≤ ${r.facts.firstSuccessMs} ms after`);
  }
  if (r.rateLimit.waits) parts.push(`${r.rateLimit.waits} rate-limit waits`);
  const rej = Object.entries(r.rateLimit.rejections);
  if (rej.length) parts.push(`rejected ${rej.map(([k, n]) => `${k} ${n}`).join(', ')}`);
  if (r.facts.backendsTerminated !== undefined)
    parts.push(`${r.facts.backendsTerminated} backends terminated`);
  if (r.facts.failoverErrors !== undefined) {
    parts.push(
      r.facts.writeGapMs === undefined
        ? 'WRITES NEVER RESUMED'
        : `writes again ≤ ${r.facts.writeGapMs} ms after the promotion`,
    );
    const seen = Object.entries(r.facts.failoverErrors)
      .map(([code, n]) => `${code} ${n}`)
      .join(', ');
    parts.push(`the app got ${seen}`);
    const detected = Object.entries(r.failovers);
    if (detected.length)
      parts.push(`failover detected (${detected.map(([k, n]) => `${k} ${n}`).join(', ')})`);
  }
  if (r.retriesByErrorType['57014'] === undefined && r.errors['57014'])
    parts.push(`${r.errors['57014']} × 57014, none retried`);
  if (r.ledger) parts.push(r.ledger.ok ? `ledger ok (${r.ledger.acknowledged} writes)` : 'LEDGER BROKEN');
  return parts.join(' · ');
}
