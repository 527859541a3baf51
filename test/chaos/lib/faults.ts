// Applying the planned faults: each runs from start to undo (the lane waits for it), and returns what
// it did (actual times, and its visible effect: connections reset, backends terminated…).
import type { FaultProxy } from '../../support/fault-proxy.ts';
import type { TestServer } from '../../support/postgres.ts';
import type { FaultKind, PlannedFault } from './schedule.ts';

export interface FaultEvent {
  kind: FaultKind;
  lane: 'proxy' | 'server';
  /** ms since the arm started */
  plannedAt: number;
  startedAt: number;
  endedAt: number;
  params: Record<string, number | string>;
  /** what the fault did, as counted (proxy stats deltas, backends terminated, the limit set…) */
  effect: string;
  /** what the fault did, as numbers the checks read (cut_commit: cutBefore, cutAfter; statement_cancel) */
  counts?: Record<string, number>;
  /** the fault could not be applied or undone (the run goes on; the report shows it) */
  error?: string;
}

export interface FaultContext {
  server: TestServer;
  proxy: FaultProxy;
  appRole: string;
  /** the app's storm switch (the app runs the slow queries itself) */
  storm(on: boolean): void;
  /** the app runs this many cancel-lane statements at once; resolves when each has ended */
  cancelBurst(statements: number): Promise<{ keys: string[]; cancelled: number; codes: string[] }>;
  /** cancel-lane statement key → the last time (epoch ms, when the sample began) pg_stat_activity showed it active */
  cancelSeen: Map<string, number>;
  /** ms since the arm started */
  now(): number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** withTransaction's COMMIT (and the bare app's), as the proxy sees it in a Query or Parse message */
const COMMIT = /^\s*COMMIT\b/i;
/** how often, and how long after its statements ended, the statement_cancel fault samples pg_stat_activity */
const CANCEL_SAMPLE_MS = 100;
const CANCEL_WATCH_AFTER_MS = 1_500;

/** Samples pg_stat_activity (as superuser, not through the proxy) for active cancel-lane statements. */
async function watchCancelLane(
  server: TestServer,
  seen: Map<string, number>,
  until: () => boolean,
): Promise<number> {
  let samples = 0;
  while (!until()) {
    const at = Date.now();
    const { rows } = await server.query<{ key: string }>(
      `SELECT substring(query from 'chaos-cancel (\\S+) ') AS key FROM pg_stat_activity
        WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE '%chaos-cancel %'`,
    );
    samples++;
    for (const r of rows) if (r.key) seen.set(r.key, Math.max(seen.get(r.key) ?? 0, at));
    await sleep(CANCEL_SAMPLE_MS);
  }
  return samples;
}

function proxyDelta(proxy: FaultProxy, before: FaultProxy['stats']): string {
  const parts: string[] = [];
  for (const key of [
    'resetOnAccept',
    'resetOpen',
    'closedAfterBytes',
    'bytesSwallowed',
    'upstreamFailed',
  ] as const) {
    const d = proxy.stats[key] - before[key];
    if (d > 0) parts.push(`${key} +${d}`);
  }
  return parts.join(', ') || 'no proxy counter moved';
}

export async function runFault(fault: PlannedFault, ctx: FaultContext): Promise<FaultEvent> {
  const { server, proxy } = ctx;
  const startedAt = ctx.now();
  const before = { ...proxy.stats };
  const p = fault.params;
  const d = fault.durationMs;
  let effect = '';
  let counts: Record<string, number> | undefined;
  let error: string | undefined;
  const note = (e: unknown) => {
    error = (error ? `${error}; ` : '') + String((e as Error)?.message ?? e);
  };
  try {
    switch (fault.kind) {
      case 'latency':
        proxy.setLatency(Number(p.ms), Number(p.jitterMs));
        try {
          await sleep(d);
        } finally {
          proxy.setLatency(0, 0);
        }
        effect = `${p.ms} ± ${p.jitterMs} ms per chunk`;
        break;
      case 'reset_new':
        proxy.resetNewConnections(Number(p.share));
        try {
          await sleep(d);
        } finally {
          proxy.resetNewConnections(0);
        }
        effect = proxyDelta(proxy, before);
        break;
      case 'reset_open': {
        const end = Date.now() + d;
        do {
          proxy.resetOpenConnections();
          await sleep(Number(p.everyMs));
        } while (Date.now() < end);
        effect = proxyDelta(proxy, before);
        break;
      }
      case 'blackhole':
        proxy.blackhole(true);
        try {
          await sleep(d);
        } finally {
          proxy.blackhole(false);
        }
        effect = proxyDelta(proxy, before);
        break;
      case 'refuse':
        await proxy.refuse(true);
        try {
          await sleep(d);
        } finally {
          await proxy.refuse(false);
        }
        effect = proxyDelta(proxy, before);
        break;
      case 'close_after_bytes':
        proxy.closeAfterBytes(Number(p.bytes), p.direction as 'downstream' | 'both');
        try {
          await sleep(d);
        } finally {
          proxy.closeAfterBytes(null);
        }
        effect = proxyDelta(proxy, before);
        break;
      case 'cut_commit': {
        const share = Number(p.share);
        proxy.cutOnMessage({ match: COMMIT, when: 'before', share });
        let cutBefore = 0;
        // A half can find no COMMIT to cut for a while: the first half's cuts, or a fault in the other lane
        // (a server restart), leave transfers waiting behind an open breaker. Each half gets up to as long
        // again to cut one, so the check it feeds is never vacuous.
        const cutsPast = async (count: number): Promise<void> => {
          const until = Date.now() + d / 2;
          while (proxy.stats.cutOnMessage - before.cutOnMessage <= count && Date.now() < until) {
            await sleep(50);
          }
        };
        try {
          await sleep(d / 2);
          await cutsPast(0);
          cutBefore = proxy.stats.cutOnMessage - before.cutOnMessage;
          proxy.cutOnMessage({ match: COMMIT, when: 'after', share });
          await sleep(d / 2);
          await cutsPast(cutBefore);
        } finally {
          proxy.cutOnMessage(null);
        }
        const cutAfter = proxy.stats.cutOnMessage - before.cutOnMessage - cutBefore;
        counts = { cutBefore, cutAfter };
        effect = `${cutBefore} COMMITs cut before forwarding, ${cutAfter} after`;
        break;
      }
      case 'statement_cancel': {
        const statements = Number(p.statements);
        let done = false;
        let doneAt = 0;
        const watching = watchCancelLane(
          server,
          ctx.cancelSeen,
          () => done && Date.now() - doneAt >= CANCEL_WATCH_AFTER_MS,
        );
        watching.catch(() => {}); // awaited below; an early failure must not be an unhandled rejection
        try {
          const r = await ctx.cancelBurst(statements);
          const seen = r.keys.filter((k) => ctx.cancelSeen.has(k)).length;
          counts = { statements, cancelled: r.cancelled, seenActive: seen };
          effect =
            `${statements} SELECT pg_sleep() past the timeout: ${r.cancelled} cancelled on the server ` +
            `(${r.codes.join(', ')}); ${seen} seen active in pg_stat_activity`;
        } finally {
          done = true;
          doneAt = Date.now();
          const samples = await watching;
          effect += `; ${samples} samples`;
        }
        break;
      }
      case 'stop_start':
        await server.stop();
        try {
          await sleep(d);
        } finally {
          await server.start();
        }
        effect = 'server stopped (fast shutdown) and started';
        break;
      case 'kill_restart':
        await server.kill();
        try {
          await sleep(d);
        } finally {
          await server.start();
        }
        effect = 'postmaster SIGKILLed, restarted (crash recovery)';
        break;
      case 'terminate_backends': {
        const times = Math.max(1, Number(p.times));
        let n = 0;
        for (let i = 0; i < times; i++) {
          n += await server.terminateBackends().catch((e: unknown) => (note(e), 0));
          await sleep(d / times);
        }
        effect = `${n} backends terminated in ${times} rounds`;
        break;
      }
      case 'connection_limit': {
        const role = ctx.appRole;
        const { rows } = await server.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1',
          [role],
        );
        const limit = Math.max(0, (rows[0]?.n ?? 0) - Number(p.below));
        await server.query(`ALTER ROLE ${role} CONNECTION LIMIT ${limit}`);
        try {
          await sleep(d);
        } finally {
          await server.query(`ALTER ROLE ${role} CONNECTION LIMIT -1`);
        }
        effect = `CONNECTION LIMIT ${limit} (the app had ${rows[0]?.n ?? 0} backends)`;
        break;
      }
      case 'slow_storm':
        ctx.storm(true);
        try {
          await sleep(d);
        } finally {
          ctx.storm(false);
        }
        effect = 'the app ran SELECT pg_sleep() above statement_timeout on most pool connections';
        break;
    }
  } catch (e) {
    note(e);
  }
  return {
    kind: fault.kind,
    lane: fault.lane,
    plannedAt: fault.at,
    startedAt,
    endedAt: ctx.now(),
    params: fault.params,
    effect,
    ...(counts ? { counts } : {}),
    ...(error ? { error } : {}),
  };
}

/** Runs a lane: each fault at its planned time (relative to `phaseStart`), never before the last ended. */
export async function runLane(
  faults: PlannedFault[],
  ctx: FaultContext,
  phaseStart: number,
  events: FaultEvent[],
): Promise<void> {
  for (const fault of faults) {
    const wait = phaseStart + fault.at - ctx.now();
    if (wait > 0) await sleep(wait);
    events.push(await runFault({ ...fault, at: phaseStart + fault.at }, ctx));
  }
}
