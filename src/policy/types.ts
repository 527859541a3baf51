/**
 * The shapes the policies share with their callers: what one operation asks of its target's policies
 * (`ExecuteContext`), what it reports when it ends (`OperationEvent`), how telemetry follows it
 * (`OperationObserver`) and the plain-object picture of a target (`TargetSnapshot`). The events each
 * policy emits are in events.ts.
 */
import type { OperationTimeoutError } from '../errors.ts';
import type { CancelResult, CircuitStateName, OperationKind, OperationRef, OperationStep } from './events.ts';
import type { RetryContext } from './retry.ts';

/** What `TargetPolicy.execute()` needs to know about one logical operation. */
export interface ExecuteContext {
  readonly operation: OperationKind;
  /** The caller's signal: aborts rate-limit and bulkhead waits, backoff waits and (with a timeout) the attempt. */
  readonly signal?: AbortSignal;
  /** Safety veto asked before each retry (see RetryContext). */
  canRetry?: RetryContext['canRetry'];
  /** false: never retried; still rate limited, bulkheaded, breaker-guarded and timed out. */
  readonly retry?: boolean;
  /**
   * false: no per-attempt timeout of the package: the call carries the user's own bound (a pool
   * checkout with the pool's `connectionTimeoutMillis`), which stays the bound. Default true.
   */
  readonly timeout?: boolean;
  /**
   * false: the call runs inside an operation that was already admitted (a statement on a client checked
   * out of a pool): no rate limit, no bulkhead, no breaker (neither refused nor counted). Retry and
   * timeout still apply. Default true.
   */
  readonly admission?: boolean;
  /**
   * The attempt failed while still getting a connection (a pool checkout that never got a client). An
   * operation that ends failing so, with a lost connection, counts once for the breaker: a proxy or load
   * balancer in front of a server that is down accepts each connection and resets it, so an outage
   * looks like ECONNRESET while connecting. Single lost connections are neutral (one network blip drops
   * every open one at once). `connect` and `probe` operations are connecting by definition.
   */
  readonly connecting?: () => boolean;
  /**
   * Called when the attempt's statement timeout fires (with `timeout.cancelGraceMs` > 0): stops the
   * statement on the server (src/instrumentation/cancel.ts). Returns undefined when it cannot (the
   * timeout error goes out at once, outcome unknown), else what the caller gets instead (the timeout
   * policy waits for it).
   */
  readonly cancel?: CancelHook;
  /** Set by the pipeline for the retry loop (the observer's per-operation events). */
  readonly onStep?: (step: OperationStep) => void;
}

/** Stops a timed-out statement on the server, waiting at most `graceMs` for its answer. */
export type CancelHook = (
  timeout: OperationTimeoutError,
  graceMs: number,
) => Promise<CancelOutcome> | undefined;

/** What a cancelled statement's attempt settles with: its value, its own error, or a timeout error. */
export type CancelOutcome =
  | { readonly result: CancelResult; readonly ok: true; readonly value: unknown }
  | { readonly result: CancelResult; readonly ok: false; readonly error: unknown };

/** One logical operation finished (for the operation duration metric). */
export interface OperationEvent extends OperationRef {
  /** `rejected`: refused by a policy before any attempt ran (rate limit, bulkhead, open breaker). */
  readonly outcome: 'success' | 'failure' | 'rejected';
  /** From `execute()` to settling, waits included, in ms. */
  readonly durationMs: number;
  /** Attempts that ran `fn` (0 when rejected). */
  readonly attempts: number;
  /** The classification's `errorType` of the error that ended the operation. */
  readonly errorType?: string;
}

/**
 * Follows single operations (telemetry's operation spans). `begin` is called when an operation starts and
 * returns whatever per-operation state the observer keeps; every other call gets it back. `attempt` runs
 * one attempt (breaker, timeout and the call itself): an observer runs it inside the operation span's
 * context, so the attempt's own spans (instrumentation-pg's) are children of it. `probe` does the same for
 * a background recovery probe. None of them may throw (the observer guards itself).
 */
export interface OperationObserver<S = unknown> {
  /**
   * true: an operation whose first attempt succeeds needs nothing from the observer, and `begin` may
   * come late, once that attempt failed, from a promise reaction registered when the operation started
   * (so under the operation's context). The policies then skip the observer on the happy path.
   */
  readonly beginsLate?: boolean;
  /** `startedAt`: the policy clock's now (performance.now() for the real clock). */
  begin(target: string, operation: OperationKind, startedAt: number): S;
  attempt<T>(state: S, attempt: number, run: () => T): T;
  step(state: S, step: OperationStep): void;
  end(state: S, event: OperationEvent): void;
  probe<T>(target: string, attempt: number, run: () => Promise<T>): Promise<T>;
}

/** A plain-object picture of one target's policies, for introspection (JSON-serialisable). */
export interface TargetSnapshot {
  readonly target: string;
  readonly circuit: {
    readonly enabled: boolean;
    readonly state: CircuitStateName;
    /** Epoch ms of the last state change. */
    readonly since: number;
    /** While open: epoch ms at which it half-opens. */
    readonly nextProbeAt: number | null;
    readonly lastFailure: { readonly errorType: string; readonly at: number } | null;
  };
  /** null when the rate limit is off. */
  readonly rateLimit: { readonly tokens: number; readonly queueSize: number } | null;
  /** null when the bulkhead is off. */
  readonly bulkhead: {
    readonly active: number;
    readonly queued: number;
    readonly maxConcurrent: number;
    readonly maxQueue: number;
  } | null;
  /** null when retries or the retry budget are off. */
  /** `allowance`: retries allowed in the budget's current window (the policies always report it). */
  readonly retryBudget: { readonly remaining: number; readonly allowance?: number } | null;
  /** null until `startRecovery()` created a loop. */
  readonly recovery: { readonly nextAttemptAt: number | null } | null;
  readonly counters: {
    /** Logical operations started. */
    readonly operations: number;
    readonly successes: number;
    /** Operations that failed after at least one attempt (or before one, with a non-policy error). */
    readonly failures: number;
    /** Operations refused by a policy before any attempt. */
    readonly rejections: number;
    /** Retries scheduled. */
    readonly retries: number;
    /** Attempts that hit their timeout. */
    readonly timeouts: number;
  };
}
