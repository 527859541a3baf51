/**
 * The events every policy emits, for telemetry (metrics, spans, logs) and introspection to listen to.
 * Policies expose them cockatiel-style: `policy.onRetry(listener) → IDisposable`, built on cockatiel's
 * `EventEmitter`. Listeners must never be able to break a call: emitters call them inside try/catch
 * (see `safeEmit`). Telemetry listens; it never calls back into a policy.
 */
import { EventEmitter } from 'cockatiel';
import type { ErrorClass } from '../classify/types.ts';

/** What kind of logical operation a policy is running. */
export type OperationKind = 'query' | 'connect' | 'transaction' | 'probe';
export const CIRCUIT_STATES = ['closed', 'open', 'half_open'] as const;
export type CircuitStateName = (typeof CIRCUIT_STATES)[number];
/**
 * Why a retry was refused (telemetry's `pg_resilience.reason`; the catalog, the logs and the docs take
 * the list from here): inside a transaction, outcome unknown for a statement not known safe to repeat,
 * retry budget spent, a repeat on this client that could reorder statements, or a substitute connection
 * that could not have the dead session's state.
 */
export const SUPPRESS_REASONS = [
  'in_transaction',
  'unknown_outcome',
  'budget',
  'not_retryable',
  'session_state',
] as const;
export type SuppressReason = (typeof SUPPRESS_REASONS)[number];
/** Why the rate limiter refused a call (a caller's own abort, `aborted`, is not a refusal). */
export const RATE_LIMIT_REFUSALS = ['drop', 'queue_full', 'max_wait'] as const;
export type RateLimitRefusal = (typeof RATE_LIMIT_REFUSALS)[number];

/** Common to every event: which target (`host:port/database`) and which kind of operation. */
export interface OperationRef {
  readonly target: string;
  readonly operation: OperationKind;
}

export interface RetryEvent extends OperationRef {
  /** The attempt that failed (1-based). The next attempt is `attempt + 1`. */
  readonly attempt: number;
  /** The attempts its error class allows (see `counted`). */
  readonly maxAttempts: number;
  /**
   * A `Pool.query`'s failed checkouts are counted apart from its statement's attempts
   * (docs/retry-safety.md): which count the failed attempt was in and its number there, the one
   * `maxAttempts` bounds (`attempt` may then exceed it).
   */
  readonly counted?: { readonly kind: 'checkout' | 'statement'; readonly attempt: number };
  readonly delayMs: number;
  readonly error: unknown;
  readonly errorType: string;
  readonly errorClass: ErrorClass;
}

export interface RetryExhaustedEvent extends OperationRef {
  readonly attempts: number;
  readonly error: unknown;
  readonly errorType: string;
}

export interface RetrySuppressedEvent extends OperationRef {
  readonly reason: SuppressReason;
  readonly attempt: number;
  readonly error: unknown;
  readonly errorType: string;
}

export interface CircuitStateChangeEvent {
  readonly target: string;
  readonly from: CircuitStateName;
  readonly to: CircuitStateName;
  /** Epoch ms of the change. */
  readonly at: number;
  /** The failure that opened it, when it opened. */
  readonly error?: unknown;
  /** Epoch ms of the next probe, when it opened. */
  readonly nextProbeAt?: number;
}

export interface CircuitRejectedEvent extends OperationRef {
  readonly state: CircuitStateName;
  readonly nextProbeAt: number | undefined;
}

export interface RateLimitWaitEvent extends OperationRef {
  /** Time spent waiting for the permit, in ms (only emitted for calls that waited). */
  readonly waitedMs: number;
}

export interface RateLimitRejectedEvent extends OperationRef {
  readonly reason: RateLimitRefusal | 'aborted';
}

export interface RateLimitQueueEvent {
  readonly target: string;
  /** Calls waiting for a permit now. */
  readonly size: number;
}

export type BulkheadRejectedEvent = OperationRef;

export interface TimeoutEvent extends OperationRef {
  readonly timeoutMs: number;
}

/** What became of a timed-out statement the package asked the server to cancel. */
export const CANCEL_RESULTS = ['cancelled', 'completed', 'no_answer'] as const;
export type CancelResult = (typeof CANCEL_RESULTS)[number];

/**
 * A timed-out statement's cancel ended: `cancelled` (the server cancelled it, or it was never sent: it
 * did not run), `completed` (it finished first: its result or its own error was returned), `no_answer`
 * (no answer within the grace, or the connection was lost: outcome unknown, connection closed).
 */
export interface StatementCancelEvent extends OperationRef {
  readonly result: CancelResult;
}

export interface RecoveryAttemptEvent {
  readonly target: string;
  /** 1-based probe number within the current outage. */
  readonly attempt: number;
  readonly outcome: 'success' | 'failure';
  readonly durationMs: number;
  readonly error?: unknown;
}

/** What settling a COMMIT lost in flight concluded (withTransaction; see transaction/commit-outcome.ts). */
export const COMMIT_OUTCOME_RESULTS = ['committed', 'aborted', 'unknown'] as const;
export type CommitOutcomeResult = (typeof COMMIT_OUTCOME_RESULTS)[number];

/** withTransaction's COMMIT was lost in flight and the server was asked what became of it. */
export interface CommitOutcomeEvent extends OperationRef {
  readonly result: CommitOutcomeResult;
  /** The transaction id looked up, when the transaction had one (a transaction that wrote nothing has none). */
  readonly transactionId: string | undefined;
  /** Status lookups made (0 when the transaction had no id). */
  readonly lookups: number;
  /** From the lost COMMIT to the answer, in ms. */
  readonly durationMs: number;
  /** The connection error that lost the COMMIT. */
  readonly error: unknown;
  readonly errorType: string;
}

/**
 * What happened to one operation, in order, for whoever traces it (telemetry's operation span). The
 * per-target events above feed metrics and logs; these are the same facts, addressed to one operation.
 */
export type OperationStep =
  | { readonly type: 'retry'; readonly event: RetryEvent }
  | { readonly type: 'retry.suppressed'; readonly event: RetrySuppressedEvent }
  | { readonly type: 'retry.exhausted'; readonly event: RetryExhaustedEvent }
  | { readonly type: 'rate_limit.wait'; readonly waitedMs: number }
  | { readonly type: 'commit.outcome'; readonly event: CommitOutcomeEvent }
  /** Refused by a policy before any attempt ran (rate limit, bulkhead, open breaker). */
  | { readonly type: 'rejected'; readonly error: unknown; readonly errorType: string };

let listenerErrorHandler: ((error: unknown) => void) | undefined;

/**
 * Where a listener's exception goes (telemetry reports it once through OpenTelemetry's diag). The
 * exception itself is never rethrown: a listener cannot break a call.
 */
export function setListenerErrorHandler(handler: ((error: unknown) => void) | undefined): void {
  listenerErrorHandler = handler;
}

/** Emits to every listener, each in its own try/catch: a listener that throws never breaks the call nor the other listeners. */
export class SafeEventEmitter<T> extends EventEmitter<T> {
  override emit(value: T): void {
    const listeners = this.listeners;
    if (!listeners) return;
    if (typeof listeners === 'function') {
      callSafely(listeners, value);
      return;
    }
    for (const listener of listeners.slice()) callSafely(listener, value);
  }
}

function callSafely<T>(listener: (data: T) => void, value: T): void {
  try {
    listener(value);
  } catch (error) {
    // A telemetry listener failed: never let it break the call.
    try {
      listenerErrorHandler?.(error);
    } catch {
      // the reporter failed too: nothing more to do
    }
  }
}
