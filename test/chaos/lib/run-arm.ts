// One arm of the chaos run, start to end: fresh tables, the app (restarted if it dies, counting each
// death), a warm-up, the heap before, the fault schedule (two lanes), the recovery window, the heap
// after, a graceful stop, then the checks against what the database holds.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FaultProxy } from '../../support/fault-proxy.ts';
import type { TestServer } from '../../support/postgres.ts';
import { AppProcess, type ExitInfo } from './app-process.ts';
import {
  cancelCheck,
  type Check,
  commitOutcomeCheck,
  deadlineCheck,
  type DbState,
  LISTENER_RECOVERY_TARGET_MS,
  memoryCheck,
  processCheck,
  RECOVERY_TARGET_MS,
  recoveryChecks,
  writeChecks,
} from './checks.ts';
import { type FaultContext, type FaultEvent, runLane } from './faults.ts';
import type { AppConfig, Arm, BreakerSample, InFlight, OpKind, OpRecord, PoolSample } from './protocol.ts';
import type { ModeSettings, PlannedFault } from './schedule.ts';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export const WARMUP_MS = 4_000;
/** after the recovery target: the window in which every operation must succeed */
export const SETTLE_MS = 6_000;
export const INITIAL_BALANCE = 1_000;

/** The app's workload (both arms alike). */
export const APP: Omit<
  AppConfig,
  'arm' | 'seed' | 'generation' | 'connectionString' | 'cancelConnectionString'
> = {
  workers: { read: 4, upsert: 3, insert: 3, transfer: 3, cursor: 1, stream: 1, notify: 1 },
  thinkMs: [20, 60],
  poolMax: 10,
  statementTimeoutMs: 1_500,
  connectionTimeoutMs: 5_000,
  maxUses: 150,
  accounts: 50,
  staticRows: 2_000,
  upsertKeysPerWorker: 20,
  stormWorkers: 8,
  stormSleepMs: 5_000,
  cancelSleepMs: 20_000,
  // the bare arm's stand-in for PACKAGE_ENV's timeout.queryMs (PG_RESILIENCE_TIMEOUT_MS)
  cancelQueryTimeoutMs: 5_000,
};

/**
 * The package's configuration for the pg-resilience arm, by env as users set it: a rate limit that
 * the workers' demand exceeds (so it is active: callers wait), the breaker with a short half-open
 * delay, frequent recovery probes, a per-attempt statement timeout (a blackholed connection would
 * otherwise hang a query for as long as the blackhole lasts) and a connect timeout.
 */
export const PACKAGE_ENV: Record<string, string> = {
  PG_RESILIENCE_RATE_LIMIT: '9000',
  PG_RESILIENCE_RATE_LIMIT_BURST: '30',
  PG_RESILIENCE_RATE_LIMIT_STRATEGY: 'wait',
  PG_RESILIENCE_BREAKER_FAILURES: '5',
  PG_RESILIENCE_BREAKER_HALF_OPEN_AFTER_MS: '2000',
  PG_RESILIENCE_RECOVERY_INTERVAL_MS: '250',
  PG_RESILIENCE_TIMEOUT_MS: '5000',
  PG_RESILIENCE_CONNECT_TIMEOUT_MS: '3000',
  PG_RESILIENCE_LOG_LEVEL: 'warn',
  OTEL_SERVICE_NAME: 'pg-resilience-chaos',
  OTEL_TRACES_EXPORTER: 'none',
  OTEL_METRICS_EXPORTER: 'none',
  OTEL_LOGS_EXPORTER: 'none',
};

export const WORKER_KINDS: OpKind[] = ['read', 'upsert', 'insert', 'transfer', 'cursor', 'stream', 'notify'];

export interface KindCounts {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  maxMs: number;
}

export interface ArmResult {
  arm: Arm;
  seed: number;
  mode: ModeSettings['mode'];
  startedAt: string;
  /** ms since the arm started */
  timeline: {
    warmupEnd: number;
    faultsStart: number;
    faultsEnd: number;
    recoveryTarget: number;
    settleEnd: number;
  };
  durationMs: number;
  faults: FaultEvent[];
  counts: Record<string, KindCounts>;
  crashes: Array<{ at: number; code: number | null; signal: string | null; fatals: string[] }>;
  stop: { code: number | null; signal: NodeJS.Signals | null; ms: number } | null;
  memory: { before: number | null; after: number | null };
  breakers: {
    /** state samples (every 200–500 ms) in which some breaker was not closed */
    samplesNotClosed: number;
    openings: number;
    maxRateLimitQueue: number;
    final: BreakerSample[] | null;
  } | null;
  notifications: { acknowledged: number; received: number };
  /** the app pool, from the state samples: most callers seen waiting, and the last sample */
  pool: { maxWaiting: number; last: PoolSample | null };
  /** every operation (JSON lines) and every state sample, for digging into a breach */
  dumps: { ops: string; samples: string };
  checks: Check[];
  appLog: string;
}

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    // The arm configures the package itself: no PG_RESILIENCE_* or OTEL_* setting of the caller leaks in.
    if (k.startsWith('PG_RESILIENCE_') || k.startsWith('OTEL_')) continue;
    env[k] = v;
  }
  return env;
}

async function resetTables(server: TestServer, role: string): Promise<void> {
  await server.query(`
    DROP TABLE IF EXISTS chaos_accounts, chaos_kv, chaos_events, chaos_transfers, chaos_static;
    CREATE TABLE chaos_accounts (id int PRIMARY KEY, balance bigint NOT NULL);
    INSERT INTO chaos_accounts SELECT g, ${INITIAL_BALANCE} FROM generate_series(1, ${APP.accounts}) AS g;
    CREATE TABLE chaos_kv (k int PRIMARY KEY, v bigint NOT NULL);
    CREATE TABLE chaos_events (key text NOT NULL, worker int, at timestamptz DEFAULT now());
    CREATE TABLE chaos_transfers (tid text NOT NULL, from_id int NOT NULL, to_id int NOT NULL, amount int NOT NULL);
    CREATE TABLE chaos_static (id int PRIMARY KEY, payload text NOT NULL);
    INSERT INTO chaos_static SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, ${APP.staticRows}) AS g;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${role};
  `);
}

async function readDb(server: TestServer): Promise<DbState> {
  const counts = async (sql: string) =>
    new Map(
      (await server.query<{ k: string; n: number }>(sql)).rows.map((r) => [r.k, r.n] as [string, number]),
    );
  const events = await counts('SELECT key AS k, count(*)::int AS n FROM chaos_events GROUP BY key');
  const transfers = await counts('SELECT tid AS k, count(*)::int AS n FROM chaos_transfers GROUP BY tid');
  const kv = new Map(
    (await server.query<{ k: number; v: string }>('SELECT k, v FROM chaos_kv')).rows.map(
      (r) => [r.k, Number(r.v)] as [number, number],
    ),
  );
  const rows = (
    await server.query<{ id: number; balance: string; expected: string }>(`
      SELECT a.id, a.balance,
             ${INITIAL_BALANCE} - coalesce((SELECT sum(amount) FROM chaos_transfers WHERE from_id = a.id), 0)
                                + coalesce((SELECT sum(amount) FROM chaos_transfers WHERE to_id = a.id), 0) AS expected
      FROM chaos_accounts AS a`)
  ).rows;
  const balances = new Map(rows.map((r) => [r.id, Number(r.balance)] as [number, number]));
  const expectedBalances = new Map(rows.map((r) => [r.id, Number(r.expected)] as [number, number]));
  const total = [...balances.values()].reduce((a, b) => a + b, 0);
  return {
    events,
    kv,
    transfers,
    balances,
    expectedBalances,
    total,
    expectedTotal: APP.accounts * INITIAL_BALANCE,
  };
}

export interface ArmOptions {
  arm: Arm;
  seed: number;
  schedule: PlannedFault[];
  mode: ModeSettings;
  server: TestServer;
  proxy: FaultProxy;
  appDir: string;
  outDir: string;
  appRole: string;
  appPassword: string;
  log: (line: string) => void;
}

export async function runArm(o: ArmOptions): Promise<ArmResult> {
  const { arm, server, proxy } = o;
  mkdirSync(o.outDir, { recursive: true });
  const appLog = join(o.outDir, `app-${arm}.log`);
  await resetTables(server, o.appRole);
  proxy.clear();
  await proxy.refuse(false);
  const url = new URL(proxy.connectionString(server));
  url.username = o.appRole;
  url.password = o.appPassword;
  // The cancel lane connects to the server directly: a proxy fault overlapping it (a blackhole, a
  // refusal) would keep its statements from ever reaching the server, and the lane would prove nothing.
  const direct = new URL(server.connectionString);
  direct.username = o.appRole;
  direct.password = o.appPassword;
  const env = { ...cleanEnv(), ...(arm === 'pg-resilience' ? PACKAGE_ENV : {}) };

  const started = Date.now();
  const rel = (t: number) => t - started;
  const ops: OpRecord[] = [];
  const notifications = new Map<string, number>();
  const notifiedAt = new Map<string, number>();
  const crashes: ExitInfo[] = [];
  const crashedGenerations = new Set<number>();
  const unknown: InFlight[] = [];
  const lastInFlight = new Map<number, InFlight[]>();
  const samples: Array<{ at: number; breakers: BreakerSample[] | null; pool: PoolSample; inFlight: number }> =
    [];
  const stopping = new Set<AppProcess>();
  let final = false;
  let generation = 0;
  let app!: AppProcess;

  const sinks = {
    onOps: (batch: OpRecord[]) => {
      for (const op of batch) ops.push(op);
    },
    onNotified: (payloads: string[], at: number) => {
      for (const p of payloads) {
        notifications.set(p, (notifications.get(p) ?? 0) + 1);
        if (!notifiedAt.has(p)) notifiedAt.set(p, at);
      }
    },
    onListening: () => {},
  };

  const launch = async (): Promise<void> => {
    generation++;
    const config: AppConfig = {
      ...APP,
      arm,
      seed: o.seed,
      generation,
      connectionString: url.toString(),
      cancelConnectionString: direct.toString(),
    };
    const a = await AppProcess.start({ dir: o.appDir, config, env, sinks, logFile: appLog });
    app = a;
    a.send({ type: 'run' });
    void a.exited.then(async (e) => {
      if (stopping.has(a)) return;
      crashes.push(e);
      crashedGenerations.add(a.generation);
      unknown.push(...(lastInFlight.get(a.generation) ?? []));
      o.log(
        `[${arm}] the app died at +${rel(e.at)} ms (code ${e.code}, signal ${e.signal}): ` +
          `${e.fatals.map((f) => `${f.origin} ${f.name}: ${f.message}`).join(' | ') || 'no fatal line'}`,
      );
      if (!final) await launch().catch((err: unknown) => o.log(`[${arm}] restart failed: ${String(err)}`));
    });
  };

  // breaker states and in-flight operations, sampled all along
  let sampling = true;
  let fastSampling = false;
  const sampler = (async () => {
    while (sampling) {
      const a = app;
      if (a?.alive) {
        const s = await a.request({ type: 'state' }, 'state', 3_000).catch(() => undefined);
        if (s) {
          samples.push({ at: s.at, breakers: s.breakers, pool: s.pool, inFlight: s.inFlight.length });
          lastInFlight.set(a.generation, s.inFlight);
        }
      }
      await sleep(fastSampling ? 200 : 500);
    }
  })();

  const measure = async (resume: boolean): Promise<{ heapUsed: number; generation: number } | null> => {
    const a = app;
    try {
      await a.request({ type: 'pause', timeoutMs: 15_000 }, 'idle', 20_000);
      const m = await a.request({ type: 'memory' }, 'memory', 10_000);
      if (resume) a.send({ type: 'run' });
      return { heapUsed: m.heapUsed, generation: a.generation };
    } catch (error) {
      o.log(`[${arm}] memory measurement failed: ${String(error)}`);
      if (resume && a.alive) a.send({ type: 'run' });
      return null;
    }
  };

  await launch();
  await sleep(WARMUP_MS);
  const warmupEnd = Date.now();
  const memBefore = await measure(true);

  // --- the faults ---
  const faultsStart = Date.now();
  const events: FaultEvent[] = [];
  const cancelSeen = new Map<string, number>();
  const ctx: FaultContext = {
    server,
    proxy,
    appRole: o.appRole,
    storm: (on) => app.send({ type: 'storm', on }),
    cancelBurst: async (statements) => {
      const r = await app.request({ type: 'cancel-burst', statements }, 'cancel-burst', 30_000);
      return { keys: r.keys, cancelled: r.cancelled, codes: r.codes };
    },
    cancelSeen,
    now: () => rel(Date.now()),
  };
  o.log(`[${arm}] faults: ${o.schedule.length} planned, starting at +${rel(faultsStart)} ms`);
  await Promise.all(
    (['proxy', 'server'] as const).map((lane) =>
      runLane(
        o.schedule.filter((f) => f.lane === lane),
        ctx,
        rel(faultsStart),
        events,
      ),
    ),
  );
  // belt and braces: nothing left on
  proxy.clear();
  await proxy.refuse(false);
  await server.start();
  await server.query(`ALTER ROLE ${o.appRole} CONNECTION LIMIT -1`);
  app.send({ type: 'storm', on: false });
  const faultsEnd = Date.now();
  fastSampling = true;
  o.log(`[${arm}] faults over at +${rel(faultsEnd)} ms; recovery window`);

  // --- recovery: a NOTIFY probe every second until the listener gets one ---
  const probe = { sentAt: 0, receivedAt: null as number | null };
  const probePayloads: string[] = [];
  const probing = (async () => {
    for (let i = 0; Date.now() < faultsEnd + LISTENER_RECOVERY_TARGET_MS + 2_000; i++) {
      const payload = `probe-${arm}-${i}`;
      probePayloads.push(payload);
      if (!probe.sentAt) probe.sentAt = Date.now();
      await app.request({ type: 'probe-notify', payload }, 'probe-notify', 5_000).catch(() => undefined);
      await sleep(1_000);
      const got = probePayloads.map((p) => notifiedAt.get(p)).filter((t): t is number => t !== undefined);
      if (got.length > 0) {
        probe.receivedAt = Math.min(...got);
        return;
      }
    }
  })();
  const settleEnd = faultsEnd + RECOVERY_TARGET_MS + SETTLE_MS;
  await sleep(settleEnd - Date.now());
  await probing;
  final = true;
  const finalGeneration = app.generation;
  const memAfter = await measure(false);

  // --- graceful stop ---
  sampling = false;
  await sampler;
  const last = app;
  stopping.add(last);
  const stopAt = Date.now();
  let leftAtStop: InFlight[] = [];
  let stop: ArmResult['stop'] = null;
  if (last.alive) {
    const waitMs = arm === 'pg-resilience' ? 35_000 : 10_000;
    const stopped = await last
      .request({ type: 'stop', timeoutMs: waitMs }, 'stopped', waitMs + 5_000)
      .catch(() => undefined);
    leftAtStop = stopped?.inFlight ?? lastInFlight.get(last.generation) ?? [];
    const exit = await Promise.race([last.exited, sleep(15_000).then(() => undefined)]);
    if (exit) stop = { code: exit.code, signal: exit.signal, ms: exit.at - stopAt };
    else last.kill();
  }
  const stoppedAt = Date.now();
  unknown.push(...leftAtStop);

  // --- the checks ---
  const db = await readDb(server);
  const genOf = (kind: OpKind, key: string): number =>
    kind === 'upsert' ? Math.floor(Number(key.split(':')[1]) / 1_000_000) : Number(/-g(\d+)-/.exec(key)?.[1]);
  const lostWithCrash = (kind: OpKind, key: string) => crashedGenerations.has(genOf(kind, key));
  const checks: Check[] = [
    ...writeChecks({ ops, unknown, db, staticRows: APP.staticRows, notifications, lostWithCrash }),
    ...(arm === 'pg-resilience' ? [commitOutcomeCheck({ arm, ops, faults: events, armStart: started })] : []),
    cancelCheck({ arm, ops, faults: events, armStart: started }, cancelSeen),
    processCheck({ crashes, stop }),
    deadlineCheck(ops, leftAtStop, stoppedAt),
  ];
  const after = samples.filter((s) => s.at >= faultsEnd);
  let breakersClosedAt: number | null = null;
  for (let i = after.length - 1; i >= 0; i--) {
    const s = after[i]!;
    if (!s.breakers || s.breakers.some((b) => b.state !== 'closed')) break;
    breakersClosedAt = s.at;
  }
  const lastSample = samples.at(-1);
  checks.push(
    ...recoveryChecks({
      arm,
      ops,
      faultsEnd,
      breakersClosedAt,
      breakersAtEnd: (lastSample?.breakers ?? []).map((b) => `${b.target} ${b.state}`),
      settleEnd,
      listenerProbe: probe,
      kinds: WORKER_KINDS,
    }),
    memoryCheck(memBefore, memAfter, !!memBefore && !!memAfter && memBefore.generation === finalGeneration),
  );

  // --- counts and breaker summary ---
  const counts: Record<string, KindCounts> = {};
  for (const op of ops) {
    const c = (counts[op.kind] ??= { ok: 0, failed: 0, errors: {}, maxMs: 0 });
    if (op.ok) c.ok++;
    else {
      c.failed++;
      c.errors[op.code ?? '?'] = (c.errors[op.code ?? '?'] ?? 0) + 1;
    }
    c.maxMs = Math.max(c.maxMs, op.t1 - op.t0);
  }
  let breakers: ArmResult['breakers'] = null;
  if (arm === 'pg-resilience') {
    let openings = 0;
    let prevOpen = false;
    let maxQueue = 0;
    let notClosed = 0;
    for (const s of samples) {
      const open = (s.breakers ?? []).some((b) => b.state !== 'closed');
      if (open) notClosed++;
      if (open && !prevOpen) openings++;
      prevOpen = open;
      for (const b of s.breakers ?? []) maxQueue = Math.max(maxQueue, b.rateLimitQueue ?? 0);
    }
    breakers = {
      samplesNotClosed: notClosed,
      openings,
      maxRateLimitQueue: maxQueue,
      final: lastSample?.breakers ?? null,
    };
  }
  const ackedNotify = ops.filter((op) => op.kind === 'notify' && op.ok);
  const dumps = { ops: join(o.outDir, `ops-${arm}.jsonl`), samples: join(o.outDir, `samples-${arm}.json`) };
  writeFileSync(
    dumps.ops,
    ops.map((op) => JSON.stringify({ ...op, t0: rel(op.t0), t1: rel(op.t1) })).join('\n') + '\n',
  );
  writeFileSync(dumps.samples, JSON.stringify(samples.map((x) => ({ ...x, at: rel(x.at) }))));
  return {
    arm,
    seed: o.seed,
    mode: o.mode.mode,
    startedAt: new Date(started).toISOString(),
    timeline: {
      warmupEnd: rel(warmupEnd),
      faultsStart: rel(faultsStart),
      faultsEnd: rel(faultsEnd),
      recoveryTarget: rel(faultsEnd + RECOVERY_TARGET_MS),
      settleEnd: rel(settleEnd),
    },
    durationMs: Date.now() - started,
    faults: events.sort((a, b) => a.startedAt - b.startedAt),
    counts,
    crashes: crashes.map((c) => ({
      at: rel(c.at),
      code: c.code,
      signal: c.signal,
      fatals: c.fatals.map((f) => `${f.origin}: ${f.name}: ${f.message}${f.code ? ` (${f.code})` : ''}`),
    })),
    stop,
    memory: { before: memBefore?.heapUsed ?? null, after: memAfter?.heapUsed ?? null },
    breakers,
    notifications: {
      acknowledged: ackedNotify.length,
      received: ackedNotify.filter((op) => notifications.has(op.key!)).length,
    },
    pool: {
      maxWaiting: samples.reduce((m, x) => Math.max(m, x.pool.waiting), 0),
      last: samples.at(-1)?.pool ?? null,
    },
    dumps,
    checks,
    appLog,
  };
}
