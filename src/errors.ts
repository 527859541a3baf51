/**
 * Typed errors raised by pg-resilience's own policies, with `isX` guards (cockatiel style). Every one
 * carries the target (`host:port/database`) it was raised for, and names it in its message.
 * Guards check a brand symbol rather than `instanceof`, so they also work across two copies of the
 * package (the ESM and the CommonJS build loaded in one process).
 */
const BRAND = Symbol.for('pg-resilience.error');

export type ResilienceErrorCode =
  | 'PGR_CIRCUIT_OPEN'
  | 'PGR_RATE_LIMITED'
  | 'PGR_BULKHEAD_REJECTED'
  | 'PGR_CONNECTION_BUDGET_EXHAUSTED'
  | 'PGR_TIMEOUT'
  | 'PGR_TRANSACTION_OUTCOME_UNKNOWN'
  | 'PGR_TRANSACTION_ROLLED_BACK';

export abstract class ResilienceError extends Error {
  abstract readonly code: ResilienceErrorCode;
  readonly target: string;
  constructor(target: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.target = target;
    Object.defineProperty(this, BRAND, { value: true });
  }
  override get name(): string {
    return this.constructor.name;
  }
}

/**
 * The target's circuit breaker is open (or half-open with every probe slot taken): the call was not
 * attempted. `cause` is the failure that opened the breaker, and the message ends with it
 * (`… (opened after: <its message>)`), so the reason survives into logs that print only the message.
 */
export class CircuitOpenError extends ResilienceError {
  readonly code = 'PGR_CIRCUIT_OPEN';
  /** Epoch ms of the next probe, when known: the background recovery probe's or the half-open timer's, whichever comes first. */
  readonly nextProbeAt: number | undefined;
  readonly state: 'open' | 'half_open';
  constructor(target: string, state: 'open' | 'half_open', nextProbeAt?: number, cause?: unknown) {
    const when =
      nextProbeAt === undefined
        ? ''
        : `; next probe in ${Math.max(0, Math.round((nextProbeAt - Date.now()) / 100) / 10)} s`;
    const why = cause === undefined ? '' : ` (opened after: ${describeCause(cause)})`;
    super(
      target,
      state === 'open'
        ? `Circuit breaker for ${target} is open: the call was not attempted${when}${why}`
        : `Circuit breaker for ${target} is half-open and its probe slots are busy: the call was not attempted${why}`,
      cause === undefined ? undefined : { cause },
    );
    this.state = state;
    this.nextProbeAt = nextProbeAt;
  }
}

/** A failure in a few words: its message, else its code or name (an AggregateError's message can be empty). */
function describeCause(cause: unknown): string {
  if (typeof cause === 'object' && cause !== null) {
    const { message, code, name } = cause as { message?: unknown; code?: unknown; name?: unknown };
    if (typeof message === 'string' && message !== '') return message;
    if (typeof code === 'string' && code !== '') return code;
    if (typeof name === 'string' && name !== '') return name;
  }
  return String(cause);
}

/** The target's rate limiter had no permit for the call. */
export class RateLimitedError extends ResilienceError {
  readonly code = 'PGR_RATE_LIMITED';
  /** `drop`: no permit and the strategy drops; `queue_full`: the queue was full; `max_wait`: waited too long; `aborted`: the caller's signal fired while waiting. */
  readonly reason: 'drop' | 'queue_full' | 'max_wait' | 'aborted';
  /** Milliseconds until a permit is expected to be free (a hint for the caller). */
  readonly retryAfterMs: number;
  constructor(target: string, reason: RateLimitedError['reason'], retryAfterMs: number) {
    super(
      target,
      `Rate limit for ${target} reached (${reason.replace('_', ' ')}): the call was not attempted; retry after ${Math.ceil(retryAfterMs)} ms`,
    );
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
  }
}

/** The target's bulkhead (concurrency cap) and its queue were full. */
export class BulkheadRejectedError extends ResilienceError {
  readonly code = 'PGR_BULKHEAD_REJECTED';
  constructor(target: string, maxConcurrent: number, maxQueue: number) {
    super(
      target,
      `Bulkhead for ${target} is full (${maxConcurrent} running, ${maxQueue} queued): the call was not attempted`,
    );
  }
}

/**
 * A new connection waited its whole connect timeout for a slot of the target's connection budget
 * (`connectionBudget.maxConnections`): no connection was opened.
 */
export class ConnectionBudgetExhaustedError extends ResilienceError {
  readonly code = 'PGR_CONNECTION_BUDGET_EXHAUSTED';
  /** The budget: per process, or for the whole fleet (`scope`). */
  readonly maxConnections: number;
  readonly scope: 'process' | 'fleet';
  /** How long the connect waited for a slot, in ms. */
  readonly waitedMs: number;
  constructor(target: string, maxConnections: number, scope: 'process' | 'fleet', waitedMs: number) {
    super(
      target,
      `Connection budget for ${target} exhausted: all ${maxConnections} connections (${scope === 'fleet' ? 'fleet-wide' : 'this process'}) stayed in use for ${Math.round(waitedMs)} ms; no connection was opened`,
    );
    this.maxConnections = maxConnections;
    this.scope = scope;
    this.waitedMs = waitedMs;
  }
}

/** The kinds of operation a per-attempt timeout applies to. */
export type TimedOperation = 'query' | 'connect' | 'transaction' | 'probe';

/**
 * An attempt took longer than the configured timeout. For `connect` and `probe` nothing was sent (it
 * classifies like pg's connect timeout: retried, counted by the breaker). For a statement, the package
 * asks the server to cancel it (`timeout.cancelGraceMs`, src/instrumentation/cancel.ts):
 * - `outcome: 'not_run'` (`cancelled: true`): the server cancelled it (or it was never sent): nothing
 *   of it was applied. It classifies like the server's own statement_timeout (57014): rejected by the
 *   server, so safe to send again, but not retried by the package (a slow statement again makes an
 *   overload worse) and not counted by the breaker (the server answered).
 * - `outcome: 'unknown'`: no cancel could be sent, or the server did not answer within the grace (the
 *   connection was then closed): it may still run or have run (it classifies like pg's `query_timeout`).
 */
export class OperationTimeoutError extends ResilienceError {
  readonly code = 'PGR_TIMEOUT';
  readonly operation: TimedOperation;
  readonly timeoutMs: number;
  /** What became of the statement: `not_run` (cancelled on the server), else `unknown`. Connects: `unknown`. */
  readonly outcome: 'not_run' | 'unknown';
  /** The server cancelled the statement: it did not run. */
  readonly cancelled: boolean;
  constructor(
    target: string,
    operation: TimedOperation,
    timeoutMs: number,
    options?: { outcome?: 'not_run' | 'unknown'; detail?: string; cause?: unknown },
  ) {
    const outcome = options?.outcome ?? 'unknown';
    const detail =
      options?.detail ??
      (outcome === 'not_run' ? 'it was cancelled on the server: the statement did not run' : undefined);
    super(
      target,
      `${operation} on ${target} timed out after ${timeoutMs} ms${detail ? `; ${detail}` : ''}`,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.operation = operation;
    this.timeoutMs = timeoutMs;
    this.outcome = outcome;
    this.cancelled = outcome === 'not_run';
  }
}

/**
 * A transaction's COMMIT was sent but the connection died before its answer, and the server could not
 * tell what became of it (no server answered within `transaction.outcomeResolutionMs`, the id was too old
 * to look up, or resolution is off): it may or may not have committed. Never retried.
 *
 * `transactionId` is the transaction's id (`txid_current_if_assigned()`) when it was learned: check it by
 * hand with `SELECT txid_status(<id>)` (`committed`, `aborted`, `in progress`).
 */
export class TransactionOutcomeUnknownError extends ResilienceError {
  readonly code = 'PGR_TRANSACTION_OUTCOME_UNKNOWN';
  /** The transaction's id (decimal text, as `txid_current()` gives it), or undefined when it was not learned. */
  readonly transactionId: string | undefined;
  constructor(target: string, cause: unknown, transactionId?: string) {
    super(
      target,
      `The connection to ${target} was lost while COMMIT was in flight: the transaction may or may not have committed, so it was not retried` +
        (transactionId === undefined
          ? ''
          : `; its outcome could not be learned: check it with SELECT txid_status(${transactionId})`),
      { cause },
    );
    this.transactionId = transactionId;
  }
}

/**
 * withTransaction's COMMIT was answered with ROLLBACK: an earlier statement of the transaction failed
 * and the callback caught that error and went on, so nothing was committed (PostgreSQL reports this as
 * a successful ROLLBACK, not as an error). Never retried: the callback chose to continue.
 */
export class TransactionRolledBackError extends ResilienceError {
  readonly code = 'PGR_TRANSACTION_ROLLED_BACK';
  constructor(target: string) {
    super(
      target,
      `The transaction on ${target} was rolled back at COMMIT: an earlier statement in it failed (its error was caught inside the transaction callback), so nothing was committed`,
    );
  }
}

const hasCode = (e: unknown, code: ResilienceErrorCode): boolean =>
  typeof e === 'object' &&
  e !== null &&
  (e as Record<symbol, unknown>)[BRAND] === true &&
  (e as { code?: unknown }).code === code;

export const isResilienceError = (e: unknown): e is ResilienceError =>
  typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[BRAND] === true;
export const isCircuitOpenError = (e: unknown): e is CircuitOpenError => hasCode(e, 'PGR_CIRCUIT_OPEN');
export const isRateLimitedError = (e: unknown): e is RateLimitedError => hasCode(e, 'PGR_RATE_LIMITED');
export const isBulkheadRejectedError = (e: unknown): e is BulkheadRejectedError =>
  hasCode(e, 'PGR_BULKHEAD_REJECTED');
export const isConnectionBudgetExhaustedError = (e: unknown): e is ConnectionBudgetExhaustedError =>
  hasCode(e, 'PGR_CONNECTION_BUDGET_EXHAUSTED');
export const isOperationTimeoutError = (e: unknown): e is OperationTimeoutError => hasCode(e, 'PGR_TIMEOUT');
export const isTransactionOutcomeUnknownError = (e: unknown): e is TransactionOutcomeUnknownError =>
  hasCode(e, 'PGR_TRANSACTION_OUTCOME_UNKNOWN');
export const isTransactionRolledBackError = (e: unknown): e is TransactionRolledBackError =>
  hasCode(e, 'PGR_TRANSACTION_ROLLED_BACK');
