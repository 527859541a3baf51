/**
 * A COMMIT lost in flight, answered: withTransaction learns the transaction's id just before COMMIT and,
 * when the connection dies while COMMIT is in flight, asks the server on another connection what became
 * of that id (`txid_status()`).
 *
 * Learning the id: `SELECT txid_current_if_assigned()`, one round trip just before COMMIT. It must be
 * answered BEFORE COMMIT is written: sent together with COMMIT (one multi-statement query, or pipelined),
 * its answer travels back with COMMIT's, so the connection loss that makes the outcome unknown loses the
 * id too. It returns NULL for a transaction that wrote nothing (no id was ever assigned), without
 * assigning one. The `txid_*` functions exist from PostgreSQL 10 on and are still present (deprecated
 * aliases of `pg_current_xact_id*()` / `pg_xact_status()`) in 18, so one spelling serves every server.
 *
 * The decision, from what `txid_status(id)` answers:
 * - `committed`: the work is done, the callback's result stands;
 * - `aborted`: the transaction did not happen, it may run again from BEGIN (an attempt like any other);
 * - `in progress`: the server has not finished with it (COMMIT still running, or the old backend not yet
 *   gone): ask again, until the deadline;
 * - NULL: the id is too old for the server to know: unknown;
 * - no server answered before the deadline: unknown.
 * A transaction without an id wrote nothing: nothing needed committing (see `noWriteOutcome`).
 */

/** Asked just before COMMIT: the transaction's id as text, or NULL when it wrote nothing. */
export const TRANSACTION_ID_SQL = 'SELECT txid_current_if_assigned()::text AS xid';
/** Asked on another connection after COMMIT was lost: committed | aborted | in progress | NULL. */
export const TRANSACTION_STATUS_SQL = 'SELECT txid_status($1::bigint) AS status';
/**
 * Still in progress, and its backend (the lost connection's, with this transaction) is idle in
 * transaction: COMMIT never reached it, and it would wait for the next command until the server notices
 * the dead connection (TCP keepalive: up to hours). Ending that backend aborts the transaction, so the
 * next lookup can answer. Safe either way: a COMMIT that reaches it first commits, and txid_status says
 * so. Its xid is the low 32 bits of the transaction id.
 */
export const END_STUCK_BACKEND_SQL =
  'SELECT pg_terminate_backend(pid) FROM pg_stat_activity ' +
  "WHERE pid = $1 AND backend_xid::text = ($2::bigint % 4294967296)::text AND state LIKE 'idle in transaction%'";

/** What a resolution concluded (telemetry's `pg_resilience.result`). */
export const COMMIT_RESOLUTIONS = ['committed', 'aborted', 'unknown'] as const;
export type CommitResolution = (typeof COMMIT_RESOLUTIONS)[number];

/** What one status lookup says to do next. */
export type StatusDecision = 'committed' | 'aborted' | 'ask_again' | 'too_old';

/** Reads one `txid_status()` answer. Anything unexpected is asked again (bounded by the deadline). */
export function decideStatus(status: unknown): StatusDecision {
  if (status === 'committed') return 'committed';
  if (status === 'aborted') return 'aborted';
  if (status === null) return 'too_old';
  return 'ask_again';
}

/**
 * COMMIT of a transaction without an id was lost: nothing was written, so there is nothing to resolve.
 * Its reads happened, and their result stands, except under SERIALIZABLE, where COMMIT is the last check
 * that the reads were serializable: there the transaction runs again (safe: it wrote nothing).
 */
export function noWriteOutcome(isolationLevel: string | undefined): 'committed' | 'aborted' {
  return isolationLevel === 'serializable' ? 'aborted' : 'committed';
}

/** The first wait between lookups, doubled each time up to MAX_WAIT_MS. */
export const FIRST_WAIT_MS = 20;
export const MAX_WAIT_MS = 500;

export interface ResolveOptions {
  /** The transaction id, as `txid_current_if_assigned()` gave it. */
  readonly transactionId: string;
  /** How long to keep asking, in ms. */
  readonly withinMs: number;
  /** One lookup: `txid_status(id)` on some connection, bounded by `timeoutMs`; rejects when none answered. */
  readonly lookup: (transactionId: string, timeoutMs: number) => Promise<unknown>;
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
}

export interface ResolveResult {
  readonly resolution: CommitResolution;
  /** Lookups made (answered or not). */
  readonly lookups: number;
  /** Why it stayed unknown: the id was too old, the server never answered, or the transaction never settled. */
  readonly why?: 'too_old' | 'unreachable' | 'in_progress';
  /** The last lookup's error, when the server never answered. */
  readonly lastError?: unknown;
}

const realSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Asks until the outcome is known or `withinMs` has passed. Every lookup is bounded by the time left, so
 * the whole resolution ends within about `withinMs`.
 */
export async function resolveCommitOutcome(options: ResolveOptions): Promise<ResolveResult> {
  const now = options.now ?? Date.now;
  const sleep = options.sleep ?? realSleep;
  const deadline = now() + options.withinMs;
  let lookups = 0;
  let wait = FIRST_WAIT_MS;
  let lastError: unknown;
  let answered = false;
  for (;;) {
    const left = deadline - now();
    if (left <= 0) break;
    lookups++;
    try {
      const decision = decideStatus(await options.lookup(options.transactionId, left));
      answered = true;
      lastError = undefined;
      if (decision === 'committed' || decision === 'aborted') return { resolution: decision, lookups };
      if (decision === 'too_old') return { resolution: 'unknown', lookups, why: 'too_old' };
    } catch (error) {
      lastError = error;
    }
    const pause = Math.min(wait, deadline - now());
    if (pause <= 0) break;
    await sleep(pause);
    wait = Math.min(wait * 2, MAX_WAIT_MS);
  }
  if (lastError !== undefined || !answered)
    return { resolution: 'unknown', lookups, why: 'unreachable', lastError };
  return { resolution: 'unknown', lookups, why: 'in_progress' };
}
