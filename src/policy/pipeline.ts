/**
 * src/policy holds one policy per file (cockatiel's layout: retry.ts, circuit-breaker.ts with its
 * counting rules in breaker-counting.ts, rate-limiter.ts, bulkhead.ts, timeout.ts, recovery.ts…), the
 * events they emit (events.ts), the shapes shared with callers (types.ts) and the registry of targets
 * (registry.ts). This file composes them.
 *
 * One target's policies, composed: `TargetPolicy` (one per `host:port/database`; `PolicyRegistry` in
 * registry.ts creates them). The shapes it shares with its callers are in types.ts.
 *
 * Order, outermost first: rate limit → bulkhead → retry (+ budget) → circuit breaker → timeout → attempt.
 * - Rate limit first: it is the cheapest refusal, and a permit is taken once per logical operation (a
 *   retry does not take another: the retry budget bounds retries). A call waiting for a permit holds no
 *   bulkhead slot, and a refused call never reaches the bulkhead, the breaker or the pool.
 * - Bulkhead next: it caps the logical operations in flight, retries and backoff waits included, so
 *   retries cannot multiply the concurrency against the target. Taken once; a rejected call never runs.
 * - Retry outside the breaker: the breaker sees every attempt (`isFailure` = the classification's
 *   `countsForBreaker`), so failing attempts count, and once it opens the next attempt is refused with
 *   CircuitOpenError, a `resilience_rejection` that the retry never retries: retries stop at once.
 * - Timeout innermost: it limits each attempt (a retry gets a fresh deadline; `queryMs` for `query` and
 *   `transaction`, `connectMs` for `connect` and `probe`), and the breaker sees a timed-out attempt's
 *   outcome: OperationTimeoutError classifies like pg's own timeouts (a connect/probe timeout sent
 *   nothing: retried and counted; a statement timeout has an unknown outcome: counted, retried only
 *   when the call's safety veto allows it).
 *
 * Happy path (rate limit, bulkhead and timeout off, as by default; the breaker closed; a first attempt
 * that succeeds): `#firstAttempt` counts the call for the retry budget (a clock read and two
 * increments), calls `fn`, and on its promise's one reaction does the breaker's success bookkeeping and
 * our counters; one `performance.now()` pair only when `onOperation` has a listener or an observer is
 * set. No timer, no per-call policy object, no async frame: the retry loop, the breaker's `execute` and
 * the observer (spans) join only once attempt 1 failed.
 */
import type { Event } from 'cockatiel';
import { classifyError } from '../classify/classify.ts';
import type { ErrorClassification } from '../classify/types.ts';
import type { RateLimitSettings, ResilienceSettings } from '../config/types.ts';
import { isResilienceError } from '../errors.ts';
import { ConnectOutage, isBreakerFailure, isBreakerNeutral, probeFoundServerUp } from './breaker-counting.ts';
import { type BulkheadPolicy, createBulkhead } from './bulkhead.ts';
import { CircuitBreaker } from './circuit-breaker.ts';
import { type Clock, realClock } from './clock.ts';
import {
  type BulkheadRejectedEvent,
  type CircuitRejectedEvent,
  type CircuitStateChangeEvent,
  type CommitOutcomeEvent,
  type CircuitStateName,
  type OperationKind,
  type OperationStep,
  type RateLimitRejectedEvent,
  type RateLimitWaitEvent,
  type RecoveryAttemptEvent,
  type RetryEvent,
  type RetryExhaustedEvent,
  type RetrySuppressedEvent,
  SafeEventEmitter,
  type StatementCancelEvent,
  type TimeoutEvent,
} from './events.ts';
import { type PermitBucket, RateLimiter } from './rate-limiter.ts';
import { ConnectionBudget, type SlotSource } from './connection-budget.ts';
import { ConnectRamp } from './connect-ramp.ts';

/** The fleet's side of a target's breaker (src/coordination/fleet-breaker.ts). */
export interface BreakerFleet {
  /** Before a recovery probe: false when another process of the fleet holds the probe lock. */
  mayProbe(): Promise<boolean>;
  /** A recovery probe succeeded. */
  probed(): void;
  dispose(): void;
}

/** What a target's policies may take from outside: a fleet-wide permit bucket, connection slots and breaker (src/coordination). */
export interface TargetPolicyOptions {
  rateBucket?: (settings: RateLimitSettings) => PermitBucket;
  connectionSlots?: (maxConnections: number) => SlotSource;
  breakerFleet?: (breaker: CircuitBreaker, probeIntervalMs: number) => BreakerFleet;
}
import { RecoveryLoop } from './recovery.ts';
import { RetryPolicy } from './retry.ts';
import { RetryBudget } from './retry-budget.ts';
import { createTimeout, type TimeoutPolicy } from './timeout.ts';
import type { ExecuteContext, OperationEvent, OperationObserver, TargetSnapshot } from './types.ts';

/** The context the retry loop gets: the call's, plus the observer's per-operation steps. */
function retryContext(
  ctx: ExecuteContext,
  observer: OperationObserver | undefined,
  observed: unknown,
): ExecuteContext {
  return observer ? { ...ctx, onStep: (step: OperationStep) => observer.step(observed, step) } : ctx;
}

/** An event that never fires (for a policy that is off). */
const noEvent: Event<never> = () => ({ dispose() {} });

const isConnectLike = (operation: OperationKind): boolean => operation === 'connect' || operation === 'probe';

/** One attempt of an operation (see TargetPolicy.execute). */
type AttemptFn<T> = (
  attempt: number,
  signal?: AbortSignal,
  report?: (step: OperationStep) => void,
) => Promise<T>;

export class TargetPolicy {
  readonly target: string;
  readonly settings: ResilienceSettings;

  readonly #clock: Clock;
  readonly #classify: (error: unknown) => ErrorClassification;
  readonly #breaker: CircuitBreaker;
  /** The breaker when enabled, else undefined (skipped entirely on the hot path). */
  readonly #activeBreaker: CircuitBreaker | undefined;
  readonly #rateLimiter: RateLimiter | undefined;
  /** The connection budget's slots, when `connectionBudget.maxConnections` is set (instrumentation/budget-connect.ts). */
  readonly connectionBudget: ConnectionBudget | undefined;
  /** New connections ramped up after the breaker closes, when `circuitBreaker.rampMs` is set (instrumentation/ramp-connect.ts). */
  readonly connectRamp: ConnectRamp | undefined;
  readonly #bulkhead: BulkheadPolicy | undefined;
  readonly #budget: RetryBudget | undefined;
  readonly #retry: RetryPolicy;
  readonly #queryTimeout: TimeoutPolicy | undefined;
  readonly #connectTimeout: TimeoutPolicy | undefined;
  #recovery: RecoveryLoop | undefined;
  /** The fleet-aware breaker's link, when coordination is on (joined with the recovery loop). */
  #fleet: BreakerFleet | undefined;
  readonly #breakerFleet: TargetPolicyOptions['breakerFleet'];
  #disposed = false;
  #observer: OperationObserver | undefined;

  readonly #operation = new SafeEventEmitter<OperationEvent>();
  readonly #timeout = new SafeEventEmitter<TimeoutEvent>();
  readonly #cancel = new SafeEventEmitter<StatementCancelEvent>();
  readonly #recoveryAttempt = new SafeEventEmitter<RecoveryAttemptEvent>();
  readonly #commitOutcome = new SafeEventEmitter<CommitOutcomeEvent>();

  /** Connect failures since the last operation that succeeded (the connect-outage rule). */
  readonly #connectOutage = new ConnectOutage();

  #operations = 0;
  #successes = 0;
  #failures = 0;
  #rejections = 0;
  #retries = 0;
  #timeouts = 0;

  /** Last classified error and its classification: the retry loop, the breaker and the counters ask about the same error. */
  #lastError: unknown;
  #lastClassification: ErrorClassification | undefined;

  readonly onRetry: Event<RetryEvent>;
  readonly onRetryExhausted: Event<RetryExhaustedEvent>;
  readonly onRetrySuppressed: Event<RetrySuppressedEvent>;
  readonly onCircuitStateChange: Event<CircuitStateChangeEvent>;
  readonly onCircuitRejected: Event<CircuitRejectedEvent>;
  readonly onRateLimitWait: Event<RateLimitWaitEvent>;
  readonly onRateLimitRejected: Event<RateLimitRejectedEvent>;
  readonly onBulkheadRejected: Event<BulkheadRejectedEvent>;
  /** An attempt hit its timeout (query or connect). */
  readonly onTimeout: Event<TimeoutEvent> = this.#timeout.addListener;
  /** A timed-out statement's cancel ended (the server's answer, or none within `timeout.cancelGraceMs`). */
  readonly onStatementCancel: Event<StatementCancelEvent> = this.#cancel.addListener;
  /** A background recovery probe finished (once `startRecovery()` was called). */
  readonly onRecoveryAttempt: Event<RecoveryAttemptEvent> = this.#recoveryAttempt.addListener;
  /** A logical operation finished: success, failure or rejected. */
  readonly onOperation: Event<OperationEvent> = this.#operation.addListener;
  /** withTransaction asked the server what became of a COMMIT lost in flight (reported by the attempt). */
  readonly onCommitOutcome: Event<CommitOutcomeEvent> = this.#commitOutcome.addListener;

  constructor(
    settings: ResilienceSettings,
    target: string,
    classify: (error: unknown) => ErrorClassification = (e) => classifyError(e),
    clock: Clock = realClock,
    options: TargetPolicyOptions = {},
  ) {
    this.settings = settings;
    this.target = target;
    this.#clock = clock;
    this.#classify = classify;

    this.#breaker = new CircuitBreaker(settings.circuitBreaker, target, clock);
    this.#activeBreaker = settings.circuitBreaker.enabled ? this.#breaker : undefined;
    this.#breakerFleet = options.breakerFleet;
    this.#rateLimiter = settings.rateLimit.enabled
      ? new RateLimiter(settings.rateLimit, target, clock, options.rateBucket?.(settings.rateLimit))
      : undefined;
    this.#bulkhead = createBulkhead(settings.bulkhead, target);
    const maxConnections = settings.connectionBudget?.maxConnections ?? 0;
    this.connectionBudget =
      maxConnections > 0
        ? new ConnectionBudget(target, maxConnections, options.connectionSlots?.(maxConnections), clock)
        : undefined;
    const rampMs = settings.circuitBreaker.rampMs ?? 0;
    this.connectRamp =
      this.#activeBreaker && rampMs > 0 ? new ConnectRamp(this.#breaker, rampMs, clock) : undefined;
    this.#budget =
      settings.retry.enabled && settings.retry.budget.enabled
        ? new RetryBudget(settings.retry.budget, clock)
        : undefined;
    this.#retry = new RetryPolicy(settings.retry, target, this.#cachedClassify, this.#budget, clock);
    this.#queryTimeout = createTimeout(
      settings.timeout.queryMs,
      target,
      clock,
      settings.timeout.cancelGraceMs,
    );
    this.#connectTimeout = createTimeout(settings.timeout.connectMs, target, clock);

    this.onRetry = this.#retry.onRetry;
    this.onRetryExhausted = this.#retry.onExhausted;
    this.onRetrySuppressed = this.#retry.onSuppressed;
    this.onCircuitStateChange = this.#breaker.onStateChange;
    this.onCircuitRejected = this.#breaker.onRejected;
    this.onRateLimitWait = this.#rateLimiter?.onWait ?? noEvent;
    this.onRateLimitRejected = this.#rateLimiter?.onRejected ?? noEvent;
    this.onBulkheadRejected = this.#bulkhead?.onRejected ?? noEvent;

    this.#retry.onRetry(() => {
      this.#retries++;
    });
    for (const t of [this.#queryTimeout, this.#connectTimeout]) {
      t?.onTimeout((e) => {
        this.#timeouts++;
        this.#timeout.emit(e);
      });
    }
    this.#queryTimeout?.onCancel((e) => this.#cancel.emit(e));
  }

  /**
   * Runs one logical operation through the target's policies. `fn(attempt, signal)` performs one
   * attempt; `signal` is the attempt's timeout signal when a timeout applies (it aborts at the deadline
   * with the OperationTimeoutError as reason, so late resources can be released), else the caller's.
   * Resolves with `fn`'s value; rejects with exactly what ended the operation: `fn`'s own error object,
   * or a policy's typed rejection (RateLimitedError, BulkheadRejectedError, CircuitOpenError,
   * OperationTimeoutError), or the caller's abort reason. `report(step)` lets an attempt tell what it did
   * itself (withTransaction's COMMIT resolution): the per-target event and the operation's span get it.
   */
  execute<T>(fn: AttemptFn<T>, ctx: ExecuteContext): Promise<T> {
    this.#operations++;
    const observer = this.#observer;
    const started = this.#operation.size > 0 || observer ? this.#now() : -1;
    const admission = ctx.admission !== false;
    if (
      (observer === undefined || observer.beginsLate === true) &&
      ctx.operation !== 'transaction' &&
      this.#timeoutFor(ctx) === undefined &&
      (!admission || (this.#rateLimiter === undefined && this.#bulkhead === undefined))
    ) {
      const breaker = admission ? this.#activeBreaker : undefined;
      const epoch = breaker === undefined ? 0 : breaker.closedEpoch();
      if (epoch >= 0) return this.#firstAttempt(fn, ctx, started, breaker, epoch);
    }
    return this.#run(fn, ctx, started, undefined);
  }

  /**
   * The fast path, for a call with nothing to wait for (no rate limit, bulkhead or timeout; the breaker
   * closed or off; no observer before an event): attempt 1 runs at once with the breaker's bookkeeping
   * in one reaction on its promise, instead of the retry loop's, the breaker's and an async frame's.
   * From a failure on, #run takes over as if it had run attempt 1 itself. Not for transactions: their
   * attempt reports steps (`report`) that an observer must see from the start.
   */
  #firstAttempt<T>(
    fn: AttemptFn<T>,
    ctx: ExecuteContext,
    started: number,
    breaker: CircuitBreaker | undefined,
    epoch: number,
  ): Promise<T> {
    this.#retry.countCall();
    let first: Promise<T>;
    try {
      first = fn(1, ctx.signal);
    } catch (error) {
      first = Promise.reject(error);
    }
    return first.then(
      (value) => {
        breaker?.succeeded(epoch);
        this.#succeeded(ctx.operation, started, 1);
        return value;
      },
      (error: unknown) => {
        breaker?.failed(epoch, error, this.#isBreakerFailure, this.#isBreakerNeutral);
        return this.#run(fn, ctx, started, { error });
      },
    );
  }

  /**
   * The whole pipeline for one operation; with `failedFirst`, attempt 1 already ran (and was admitted)
   * in #firstAttempt and failed: the retry loop goes on from attempt 2.
   */
  async #run<T>(
    fn: AttemptFn<T>,
    ctx: ExecuteContext,
    started: number,
    failedFirst: { readonly error: unknown } | undefined,
  ): Promise<T> {
    // An observer set while attempt 1 ran has no start time for this operation (`started` < 0).
    const observer = failedFirst && started < 0 ? undefined : this.#observer;
    let attempts = failedFirst ? 1 : 0;
    const operation = ctx.operation;
    const timeout = this.#timeoutFor(ctx);
    const admission = ctx.admission !== false;
    const breaker = admission ? this.#activeBreaker : undefined;
    const observed = observer?.begin(this.target, operation, started);
    const report = (step: OperationStep): void => {
      if (step.type === 'commit.outcome') this.#commitOutcome.emit(step.event);
      observer?.step(observed, step);
    };

    // One attempt: breaker → timeout → fn. `attempts` counts the attempts that really ran fn.
    const attempt = (n: number): Promise<T> => {
      if (observer) return observer.attempt(observed, n, () => guarded(n));
      return guarded(n);
    };
    const guarded = (n: number): Promise<T> => {
      const run = (): Promise<T> => {
        if (timeout) {
          return timeout.execute(
            (signal) => {
              attempts = n;
              return fn(n, signal, report);
            },
            operation,
            ctx.signal,
            timeout === this.#queryTimeout ? ctx.cancel : undefined,
          );
        }
        attempts = n;
        return fn(n, ctx.signal, report);
      };
      return breaker
        ? breaker.execute(run, operation, this.#isBreakerFailure, this.#isBreakerNeutral)
        : run();
    };

    try {
      const retryCtx = retryContext(ctx, observer, observed);
      let value: T;
      if (failedFirst) {
        value = await this.#retry.retryAfterFirst(failedFirst.error, attempt, retryCtx);
      } else {
        const limiter = admission ? this.#rateLimiter : undefined;
        if (limiter) {
          const permit = limiter.acquire(operation, ctx.signal);
          if (permit) {
            const waitStarted = observer ? this.#now() : 0;
            await permit;
            observer?.step(observed, { type: 'rate_limit.wait', waitedMs: this.#now() - waitStarted });
          }
        }
        const bulkhead = admission ? this.#bulkhead : undefined;
        value = bulkhead
          ? await bulkhead.execute(() => this.#retry.execute(attempt, retryCtx), operation, ctx.signal)
          : await this.#retry.execute(attempt, retryCtx);
      }
      this.#succeeded(operation, started, attempts, observer, observed);
      return value;
    } catch (error) {
      const rejected = attempts === 0 && isResilienceError(error);
      if (rejected) this.#rejections++;
      else {
        this.#failures++;
        if (breaker) this.#recordConnectFailure(error, operation, ctx);
      }
      if (started >= 0) {
        const errorType = this.#cachedClassify(error).errorType;
        const event: OperationEvent = {
          target: this.target,
          operation,
          outcome: rejected ? 'rejected' : 'failure',
          durationMs: this.#now() - started,
          attempts,
          errorType,
        };
        this.#operation.emit(event);
        if (observer) {
          if (rejected) observer.step(observed, { type: 'rejected', error, errorType });
          observer.end(observed, event);
        }
      }
      throw error;
    }
  }

  /** An operation succeeded after `attempts` attempts: counters, the operation event, the observer's end. */
  #succeeded(
    operation: OperationKind,
    started: number,
    attempts: number,
    observer?: OperationObserver,
    observed?: unknown,
  ): void {
    this.#successes++;
    this.#connectOutage.success();
    if (started < 0) return;
    const event: OperationEvent = {
      target: this.target,
      operation,
      outcome: 'success',
      durationMs: this.#now() - started,
      attempts,
    };
    this.#operation.emit(event);
    observer?.end(observed, event);
  }

  /** The per-attempt timeout that applies to this call, if any. */
  #timeoutFor(ctx: ExecuteContext): TimeoutPolicy | undefined {
    if (ctx.timeout === false) return undefined;
    return isConnectLike(ctx.operation) ? this.#connectTimeout : this.#queryTimeout;
  }

  /**
   * Admission only, for a call whose outcome the policies cannot follow (a pg Submittable such as
   * pg-cursor: rows may be delivered long after it starts, and it is never retried): the breaker must be
   * closed and the rate limit must grant a permit. Returns undefined when the call may go ahead now, or
   * a promise that resolves when it may, or rejects with the typed refusal (CircuitOpenError,
   * RateLimitedError). Counted as an operation; refusals as rejections.
   */
  admit(operation: OperationKind, signal?: AbortSignal): Promise<void> | undefined {
    this.#operations++;
    const refused = this.#activeBreaker?.admit(operation);
    if (refused) return this.#rejectAdmission(operation, refused);
    const permit = this.#rateLimiter?.acquire(operation, signal);
    if (permit === undefined) return undefined;
    return permit.catch((error: unknown) => this.#rejectAdmission(operation, error));
  }

  #rejectAdmission(operation: OperationKind, error: unknown): Promise<never> {
    this.#rejections++;
    if (this.#operation.size > 0) {
      this.#operation.emit({
        target: this.target,
        operation,
        outcome: 'rejected',
        durationMs: 0,
        attempts: 0,
        errorType: this.#cachedClassify(error).errorType,
      });
    }
    return Promise.reject(error);
  }

  /**
   * Creates the background recovery loop (probing while the breaker is not closed), with the probe the
   * instrumentation supplies (connect + SELECT 1). A probe that fails with an error showing the server
   * up (`probeFoundServerUp`: no free slot, a wrong password…) counts as a success. `active` (optional)
   * says whether anyone still uses the target: while it returns false, probes are skipped. Once per
   * target: later calls return the existing loop. undefined when recovery or the breaker is off, or
   * after dispose().
   */
  startRecovery(
    probe: (signal: AbortSignal) => Promise<void>,
    active?: () => boolean,
  ): RecoveryLoop | undefined {
    if (this.#recovery) return this.#recovery;
    if (this.#disposed || !this.settings.recovery.enabled || !this.#activeBreaker) return undefined;
    // The fleet-aware breaker joins here, with the recovery loop, and only with unlimited probes: a breaker
    // held open fleet-wide closes only through the fleet's recovery probe, which must not stop meanwhile.
    const fleet =
      this.settings.recovery.maxAttempts === 0
        ? this.#breakerFleet?.(this.#breaker, this.settings.recovery.intervalMs)
        : undefined;
    this.#fleet = fleet;
    const judged = (signal: AbortSignal): Promise<void> =>
      probe(signal).catch((error: unknown) => {
        if (!probeFoundServerUp(this.#classify(error))) throw error;
      });
    const loop = new RecoveryLoop(
      this.settings.recovery,
      this.#breaker,
      judged,
      this.target,
      this.#clock,
      (attempt, run) => (this.#observer ? this.#observer.probe(this.target, attempt, run) : run()),
      active,
      fleet ? () => fleet.mayProbe() : undefined,
    );
    loop.onAttempt((e) => {
      if (e.outcome === 'success') fleet?.probed();
      this.#recoveryAttempt.emit(e);
    });
    this.#recovery = loop;
    return loop;
  }

  /** Follows single operations from now on (undefined: stop). Telemetry's operation spans. */
  observe(observer: OperationObserver | undefined): void {
    this.#observer = observer;
  }

  /** The breaker's state (closed when the breaker is off). */
  get circuitState(): CircuitStateName {
    return this.#activeBreaker ? this.#activeBreaker.state : 'closed';
  }

  snapshot(): TargetSnapshot {
    const breaker = this.#breaker;
    const lastFailure = breaker.lastFailure;
    const limiter = this.#rateLimiter;
    const bulkhead = this.#bulkhead;
    return {
      target: this.target,
      circuit: {
        enabled: this.#activeBreaker !== undefined,
        state: breaker.state,
        since: breaker.stateSince,
        nextProbeAt: breaker.nextProbeAt ?? null,
        lastFailure: lastFailure
          ? { errorType: this.#cachedClassify(lastFailure.error).errorType, at: lastFailure.at }
          : null,
      },
      rateLimit: limiter ? { tokens: limiter.tokens, queueSize: limiter.queueSize } : null,
      bulkhead: bulkhead
        ? {
            active: bulkhead.active,
            queued: bulkhead.queued,
            maxConcurrent: bulkhead.maxConcurrent,
            maxQueue: bulkhead.maxQueue,
          }
        : null,
      retryBudget: this.#budget
        ? { remaining: this.#budget.remaining, allowance: this.#budget.allowance }
        : null,
      recovery: this.#recovery ? { nextAttemptAt: this.#recovery.nextAttemptAt ?? null } : null,
      counters: {
        operations: this.#operations,
        successes: this.#successes,
        failures: this.#failures,
        rejections: this.#rejections,
        retries: this.#retries,
        timeouts: this.#timeouts,
      },
    };
  }

  /**
   * Stops every timer this target owns (breaker, rate limiter, recovery) and lets rate-limit waiters
   * through. Calls still work afterwards (nothing hangs), but no background work remains.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#recovery?.dispose();
    this.#fleet?.dispose();
    this.#rateLimiter?.dispose();
    this.connectionBudget?.dispose();
    this.connectRamp?.dispose();
    this.#breaker.dispose();
  }

  readonly #cachedClassify = (error: unknown): ErrorClassification => {
    if (error === this.#lastError && this.#lastClassification) return this.#lastClassification;
    const c = this.#classify(error);
    this.#lastError = error;
    this.#lastClassification = c;
    return c;
  };

  // The breaker's counting rules are in breaker-counting.ts; here they get the classification.
  readonly #isBreakerFailure = (error: unknown): boolean => isBreakerFailure(this.#cachedClassify(error));

  readonly #isBreakerNeutral = (error: unknown): boolean => isBreakerNeutral(this.#cachedClassify(error));

  /**
   * An operation that failed, as a whole, because every attempt lost its connection while connecting
   * (see ExecuteContext.connecting): the connect-outage rule decides whether it counts once.
   */
  #recordConnectFailure(error: unknown, operation: OperationKind, ctx: ExecuteContext): void {
    const breaker = this.#activeBreaker;
    if (!breaker) return;
    const c = this.#cachedClassify(error);
    // `connecting` is asked only for a lost connection (the rule ignores every other class).
    if (c.errorClass !== 'connection_lost') return;
    const connecting = isConnectLike(operation) || ctx.connecting?.() === true;
    if (this.#connectOutage.failed(c, connecting, this.#clock.now())) breaker.recordFailure(error);
  }

  #now(): number {
    return this.#clock === realClock ? performance.now() : this.#clock.now();
  }
}
