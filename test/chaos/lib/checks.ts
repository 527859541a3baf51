// The checks after a run. Each takes what the app reported and what the database holds (read directly
// from the server as superuser, not through the proxy) and says passed or not, with the evidence.
import type { ExitInfo } from './app-process.ts';
import type { FaultEvent } from './faults.ts';
import type { InFlight, OpKind, OpRecord } from './protocol.ts';

export interface Check {
  id: string;
  name: string;
  passed: boolean;
  detail: string;
}

export const OP_DEADLINE_MS = 30_000;
/** after the last fault is undone: every breaker closed, every kind of operation succeeded again */
export const RECOVERY_TARGET_MS = 5_000;
/** the listener's own recovery: its heartbeat (1 s) and query timeout (3 s) notice a dead connection */
export const LISTENER_RECOVERY_TARGET_MS = 10_000;

const list = (items: string[], max = 8): string =>
  items.length === 0
    ? 'none'
    : items.slice(0, max).join(', ') + (items.length > max ? ` … (${items.length})` : '');

export interface DbState {
  events: Map<string, number>;
  kv: Map<number, number>;
  transfers: Map<string, number>;
  balances: Map<number, number>;
  /** per account: initial + what the recorded transfers moved */
  expectedBalances: Map<number, number>;
  total: number;
  expectedTotal: number;
}

export interface WriteInputs {
  ops: OpRecord[];
  /** operations whose outcome the app never reported (in flight at a crash or at stop) */
  unknown: InFlight[];
  db: DbState;
  staticRows: number;
  notifications: Map<string, number>;
  /** true for a key whose outcome was lost with a crashed app process (its last report never came) */
  lostWithCrash: (kind: OpKind, key: string) => boolean;
}

export function writeChecks({
  ops,
  unknown,
  db,
  staticRows,
  notifications,
  lostWithCrash,
}: WriteInputs): Check[] {
  const checks: Check[] = [];
  const byKind = (kind: OpKind) => ops.filter((o) => o.kind === kind && o.key !== undefined);
  const unknownKeys = (kind: OpKind) =>
    new Set(unknown.filter((u) => u.kind === kind && u.key).map((u) => u.key!));

  // 1a. inserts: acknowledged → exactly once; nothing twice; nothing nobody tried
  {
    const inserts = byKind('insert');
    const acked = inserts.filter((o) => o.ok).map((o) => o.key!);
    const failed = new Set(inserts.filter((o) => !o.ok).map((o) => o.key!));
    const missing = acked.filter((k) => !db.events.has(k));
    const dup = [...db.events].filter(([, n]) => n > 1).map(([k, n]) => `${k}×${n}`);
    const attempted = new Set([...acked, ...failed, ...unknownKeys('insert')]);
    const unexpected = [...db.events.keys()].filter((k) => !attempted.has(k) && !lostWithCrash('insert', k));
    const failedPresent = [...failed].filter((k) => db.events.has(k)).length;
    checks.push({
      id: '1a',
      name: 'non-idempotent inserts: every acknowledged one exactly once, none twice',
      passed: missing.length === 0 && dup.length === 0 && unexpected.length === 0 && acked.length > 0,
      detail:
        `${acked.length} acknowledged, ${failed.size} failed (${failedPresent} of them committed anyway: allowed), ` +
        `${unknownKeys('insert').size} outcome unknown; missing: ${list(missing)}; twice: ${list(dup)}; ` +
        `never attempted: ${list(unexpected)}`,
    });
  }

  // 1b. upserts: each key holds its last acknowledged version or a later attempted one
  {
    const lastAcked = new Map<number, number>();
    const attempted = new Map<number, Set<number>>();
    const note = (key: string, ok: boolean) => {
      const [k, v] = key.split(':').map(Number) as [number, number];
      if (!attempted.has(k)) attempted.set(k, new Set());
      attempted.get(k)!.add(v);
      if (ok && v > (lastAcked.get(k) ?? -1)) lastAcked.set(k, v);
    };
    for (const o of byKind('upsert')) note(o.key!, o.ok);
    for (const k of unknownKeys('upsert')) note(k, false);
    const bad: string[] = [];
    for (const [k, v] of lastAcked) {
      const stored = db.kv.get(k);
      if (stored === undefined) bad.push(`${k}: missing (acknowledged ${v})`);
      else if (stored < v) bad.push(`${k}: holds ${stored} < acknowledged ${v}`);
      else if (!attempted.get(k)!.has(stored) && !lostWithCrash('upsert', `${k}:${stored}`))
        bad.push(`${k}: holds ${stored}, never written`);
    }
    const acked = byKind('upsert').filter((o) => o.ok).length;
    checks.push({
      id: '1b',
      name: 'idempotent upserts: every acknowledged one present (or overwritten by a later write)',
      passed: bad.length === 0 && acked > 0,
      detail: `${acked} acknowledged over ${lastAcked.size} keys; breaches: ${list(bad)}`,
    });
  }

  // 1c. the ledger: the total is constant, each account matches the recorded transfers, each
  // acknowledged transfer is recorded exactly once, none twice
  {
    const transfers = byKind('transfer');
    const acked = transfers.filter((o) => o.ok).map((o) => o.key!);
    const failed = new Set(transfers.filter((o) => !o.ok).map((o) => o.key!));
    const missing = acked.filter((k) => !db.transfers.has(k));
    const dup = [...db.transfers].filter(([, n]) => n > 1).map(([k, n]) => `${k}×${n}`);
    const attempted = new Set([...acked, ...failed, ...unknownKeys('transfer')]);
    const unexpected = [...db.transfers.keys()].filter(
      (k) => !attempted.has(k) && !lostWithCrash('transfer', k),
    );
    const wrong = [...db.balances]
      .filter(([id, b]) => db.expectedBalances.get(id) !== b)
      .map(([id, b]) => `#${id}: ${b} ≠ ${db.expectedBalances.get(id)}`);
    checks.push({
      id: '1c',
      name: 'transfers (withTransaction): ledger sums to its constant, each acknowledged transfer once',
      passed:
        db.total === db.expectedTotal &&
        wrong.length === 0 &&
        missing.length === 0 &&
        dup.length === 0 &&
        unexpected.length === 0 &&
        acked.length > 0,
      detail:
        `total ${db.total} (constant ${db.expectedTotal}); ${acked.length} acknowledged, ${failed.size} failed ` +
        `(${[...failed].filter((k) => db.transfers.has(k)).length} committed anyway); accounts off: ${list(wrong)}; ` +
        `missing: ${list(missing)}; twice: ${list(dup)}; never attempted: ${list(unexpected)}`,
    });
  }

  // 1d. reads through cursors and streams: a successful one saw every row
  {
    const reads = ops.filter((o) => (o.kind === 'cursor' || o.kind === 'stream') && o.ok);
    const short = reads.filter((o) => o.rows !== staticRows).map((o) => `${o.kind} ${o.rows}/${staticRows}`);
    checks.push({
      id: '1d',
      name: 'cursor and stream reads: every successful read returned every row',
      passed: short.length === 0 && reads.length > 0,
      detail: `${reads.length} successful reads; incomplete: ${list(short)}`,
    });
  }

  // 1e. notifications: never delivered twice, never one nobody sent
  {
    const notify = byKind('notify');
    const sent = new Set([...notify.map((o) => o.key!), ...unknownKeys('notify')]);
    const acked = notify.filter((o) => o.ok).map((o) => o.key!);
    const dup = [...notifications]
      .filter(([p, n]) => n > 1 && !p.startsWith('probe-'))
      .map(([p, n]) => `${p}×${n}`);
    const unexpected = [...notifications.keys()].filter(
      (p) => !sent.has(p) && !p.startsWith('probe-') && !lostWithCrash('notify', p),
    );
    const received = acked.filter((k) => notifications.has(k)).length;
    checks.push({
      id: '1e',
      name: 'LISTEN/NOTIFY: no notification delivered twice (losses during faults are allowed)',
      passed: dup.length === 0 && unexpected.length === 0 && received > 0,
      detail:
        `${acked.length} NOTIFY acknowledged, ${received} of them received (${acked.length - received} lost); ` +
        `twice: ${list(dup)}; never sent: ${list(unexpected)}`,
    });
  }
  return checks;
}

export interface ProcessInputs {
  crashes: ExitInfo[];
  stop: { code: number | null; signal: NodeJS.Signals | null; ms: number } | null;
}

export function processCheck({ crashes, stop }: ProcessInputs): Check {
  const fatals = crashes.flatMap((c) => c.fatals.map((f) => `${f.origin}: ${f.name}: ${f.message}`));
  const exits = crashes.map((c) => `exit code ${c.code} signal ${c.signal}`);
  const stopOk = stop !== null && stop.code === 0 && stop.signal === null;
  return {
    id: '2',
    name: 'no uncaught exception, no unhandled rejection, no process exit; exit 0 on graceful stop',
    passed: crashes.length === 0 && stopOk,
    detail:
      `${crashes.length} unexpected exits (${list(exits)}); fatal: ${list(fatals, 4)}; ` +
      `graceful stop: ${stop ? `code ${stop.code} signal ${stop.signal} after ${stop.ms} ms` : 'did not exit'}`,
  };
}

export function deadlineCheck(ops: OpRecord[], leftAtStop: InFlight[], stoppedAt: number): Check {
  const slow = ops.filter((o) => o.t1 - o.t0 > OP_DEADLINE_MS);
  const hung = leftAtStop.filter((o) => stoppedAt - o.t0 > OP_DEADLINE_MS);
  const max = ops.reduce((m, o) => Math.max(m, o.t1 - o.t0), 0);
  return {
    id: '3',
    name: `every operation ended (success or error) within ${OP_DEADLINE_MS / 1000} s: no hung promise`,
    passed: slow.length === 0 && hung.length === 0 && leftAtStop.length === 0,
    detail:
      `${ops.length} operations ended, longest ${max} ms; over the deadline: ` +
      `${list(slow.map((o) => `${o.kind} ${o.t1 - o.t0} ms (${o.ok ? 'ok' : o.code})`))}; ` +
      `still in flight at stop: ${list(leftAtStop.map((o) => `${o.kind} for ${stoppedAt - o.t0} ms`))}` +
      (hung.length ? ` (${hung.length} past the deadline)` : ''),
  };
}

export interface RecoveryInputs {
  arm: string;
  ops: OpRecord[];
  faultsEnd: number;
  /** epoch ms at which every breaker was (last) seen closed for good; null: never */
  breakersClosedAt: number | null;
  breakersAtEnd: string[];
  settleEnd: number;
  listenerProbe: { sentAt: number; receivedAt: number | null };
  kinds: OpKind[];
}

export function recoveryChecks(r: RecoveryInputs): Check[] {
  const target = r.faultsEnd + RECOVERY_TARGET_MS;
  const checks: Check[] = [];
  if (r.arm === 'pg-resilience') {
    const open = r.breakersAtEnd.filter((s) => !s.endsWith(' closed'));
    checks.push({
      id: '4a',
      name: `every breaker closed within ${RECOVERY_TARGET_MS / 1000} s of the last fault's end`,
      passed: r.breakersClosedAt !== null && r.breakersClosedAt <= target && open.length === 0,
      detail:
        r.breakersClosedAt === null
          ? `never all closed; at the end: ${list(r.breakersAtEnd)}`
          : `all closed ${Math.max(0, r.breakersClosedAt - r.faultsEnd)} ms after the last fault ended; at the end: ${list(r.breakersAtEnd)}`,
    });
  }
  const late: string[] = [];
  const firsts: string[] = [];
  for (const kind of r.kinds) {
    const first = r.ops
      .filter((o) => o.kind === kind && o.ok && o.t1 >= r.faultsEnd)
      .reduce<number | null>((m, o) => (m === null || o.t1 < m ? o.t1 : m), null);
    if (first === null || first > target)
      late.push(`${kind}: ${first === null ? 'none' : `${first - r.faultsEnd} ms`}`);
    else firsts.push(`${kind} ${first - r.faultsEnd} ms`);
  }
  checks.push({
    id: '4b',
    name: `every kind of operation succeeded within ${RECOVERY_TARGET_MS / 1000} s of the last fault's end`,
    passed: late.length === 0,
    detail: `first success after the end: ${list(firsts, 10)}; late or none: ${list(late, 10)}`,
  });
  const settle = r.ops.filter((o) => o.t0 >= target && o.t0 <= r.settleEnd && o.kind !== 'listen');
  const failed = settle.filter((o) => !o.ok);
  const codes = new Map<string, number>();
  for (const o of failed) codes.set(`${o.kind} ${o.code}`, (codes.get(`${o.kind} ${o.code}`) ?? 0) + 1);
  checks.push({
    id: '4c',
    name: 'once recovered, operations succeed: none failed after the recovery target',
    passed: failed.length === 0 && settle.length > 0,
    detail:
      `${settle.length} operations started in the ${Math.round((r.settleEnd - target) / 1000)} s after the target, ` +
      `${failed.length} failed (${list([...codes].map(([k, n]) => `${k} ×${n}`))})`,
  });
  const p = r.listenerProbe;
  checks.push({
    id: '4d',
    name: `the LISTEN client re-listened: a NOTIFY sent after the faults arrives within ${LISTENER_RECOVERY_TARGET_MS / 1000} s of their end`,
    passed: p.receivedAt !== null && p.receivedAt <= r.faultsEnd + LISTENER_RECOVERY_TARGET_MS,
    detail:
      p.receivedAt === null
        ? 'no probe notification received'
        : `probe received ${p.receivedAt - r.faultsEnd} ms after the last fault ended`,
  });
  return checks;
}

export const MEMORY_SLACK_BYTES = 16 * 1024 * 1024;
export const MEMORY_GROWTH_SHARE = 0.5;

export function memoryCheck(
  before: { heapUsed: number } | null,
  after: { heapUsed: number } | null,
  sameProcess: boolean,
): Check {
  const mb = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MB`;
  if (!before || !after || !sameProcess) {
    return {
      id: '5',
      name: 'heap after the run (after GC) within bound of the heap before',
      passed: false,
      detail: !sameProcess ? 'not comparable: the app process was restarted' : 'not measured',
    };
  }
  const bound = before.heapUsed * (1 + MEMORY_GROWTH_SHARE) + MEMORY_SLACK_BYTES;
  return {
    id: '5',
    name: `heap after the run (after GC) ≤ before × ${1 + MEMORY_GROWTH_SHARE} + ${mb(MEMORY_SLACK_BYTES)}`,
    passed: after.heapUsed <= bound,
    detail: `before ${mb(before.heapUsed)}, after ${mb(after.heapUsed)}, bound ${mb(bound)}`,
  };
}

/**
 * Faults during which (and for REACHABLE_MARGIN_MS after) the server may be unreachable from the app:
 * all but latency, the COMMIT cuts (only the cut connection is lost), the storm and the cancel lane.
 */
const REACHABLE_DURING = new Set(['latency', 'cut_commit', 'slow_storm', 'statement_cancel']);
/** a restarted server, an open breaker (half-open after 2 s) and the pool's reconnects settle in this */
export const REACHABLE_MARGIN_MS = 5_000;

/** Was the server reachable all along [t0, t1] (epoch ms)? `armStart` converts the faults' times. */
function reachable(
  faults: FaultEvent[],
  armStart: number,
  t0: number,
  t1: number,
  lanes: ReadonlyArray<FaultEvent['lane']> = ['proxy', 'server'],
): boolean {
  return !faults.some(
    (f) =>
      lanes.includes(f.lane) &&
      !REACHABLE_DURING.has(f.kind) &&
      t1 >= armStart + f.startedAt &&
      t0 <= armStart + f.endedAt + REACHABLE_MARGIN_MS,
  );
}

export interface LaneInputs {
  arm: string;
  ops: OpRecord[];
  faults: FaultEvent[];
  /** epoch ms the arm started (the faults' times are relative to it) */
  armStart: number;
}

/**
 * 1f (pg-resilience arm). The COMMIT cut lane: withTransaction resolves a COMMIT lost in flight, so no
 * transfer ends with TransactionOutcomeUnknownError while the server is reachable (the ledger itself
 * is check 1c). Not vacuous: COMMITs were cut both before and after forwarding.
 */
export function commitOutcomeCheck({ ops, faults, armStart }: LaneInputs): Check {
  const cuts = faults.filter((f) => f.kind === 'cut_commit');
  const cutBefore = cuts.reduce((n, f) => n + (f.counts?.cutBefore ?? 0), 0);
  const cutAfter = cuts.reduce((n, f) => n + (f.counts?.cutAfter ?? 0), 0);
  const unknown = ops.filter((o) => o.kind === 'transfer' && o.code === 'PGR_TRANSACTION_OUTCOME_UNKNOWN');
  const whileReachable = unknown.filter((o) => reachable(faults, armStart, o.t0, o.t1));
  const during = ops.filter(
    (o) =>
      o.kind === 'transfer' &&
      cuts.some((f) => o.t1 >= armStart + f.startedAt && o.t0 <= armStart + f.endedAt),
  );
  return {
    id: '1f',
    name: 'COMMIT cut before / after forwarding: no TransactionOutcomeUnknownError while the server is reachable',
    passed: whileReachable.length === 0 && cutBefore > 0 && cutAfter > 0,
    detail:
      `${cutBefore} COMMITs cut before forwarding, ${cutAfter} after; ${during.length} transfers ran during the cuts ` +
      `(${during.filter((o) => o.ok).length} acknowledged); outcome unknown: ${unknown.length} in all, ` +
      `${whileReachable.length} while the server was reachable (${list(whileReachable.map((o) => o.key ?? '?'))})`,
  };
}

/** a sample that began this long after the caller had its error still counts as "before" (clock reads) */
export const CANCEL_SEEN_TOLERANCE_MS = 100;

/**
 * 6. The cancel lane: a statement whose caller got a timeout saying it was cancelled on the server
 * (OperationTimeoutError, cancelled: true; in the bare arm, pg's "Query read timeout") is no longer
 * active in pg_stat_activity once the caller has that error. In the pg-resilience arm every such
 * statement run while the server was reachable ends cancelled (the lane bypasses the proxy). Not vacuous: statements timed out and
 * the sampler saw them running.
 */
export function cancelCheck({ arm, ops, faults, armStart }: LaneInputs, seen: Map<string, number>): Check {
  const lane = ops.filter((o) => o.kind === 'cancel' && o.key !== undefined);
  const timedOut = lane.filter(
    (o) => !o.ok && (arm === 'bare' ? o.code === 'query_read_timeout' : o.cancelled),
  );
  const runningAfter = timedOut
    .filter((o) => (seen.get(o.key!) ?? 0) > o.t1 + CANCEL_SEEN_TOLERANCE_MS)
    .map((o) => `${o.key} active ${seen.get(o.key!)! - o.t1} ms after its error`);
  const notCancelled =
    arm === 'bare'
      ? []
      : lane
          // the lane connects to the server directly: only the server's own faults can excuse it
          .filter((o) => !o.cancelled && reachable(faults, armStart, o.t0, o.t1, ['server']))
          .map((o) => `${o.key} ${o.ok ? 'ok' : o.code}`);
  const seenRunning = timedOut.filter((o) => seen.has(o.key!)).length;
  return {
    id: '6',
    name: 'statements past the timeout: cancelled on the server, none still active once its caller has the error',
    passed: runningAfter.length === 0 && notCancelled.length === 0 && timedOut.length > 0 && seenRunning > 0,
    detail:
      `${lane.length} statements, ${timedOut.length} timed out (${arm === 'bare' ? "pg's query_timeout" : 'cancelled: true'}), ` +
      `${seenRunning} of them seen running; still active after the error: ${list(runningAfter)}; ` +
      `not cancelled while the server was reachable: ${list(notCancelled)}`,
  };
}
