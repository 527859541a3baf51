/**
 * One target's policies, composed: `TargetPolicy` (one per `host:port/database`) and the
 * `PolicyRegistry` that creates them lazily from the resolved configuration.
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
 * Happy path (rate limit, bulkhead and timeout off, as by default; a first attempt that succeeds):
 * `budget.recordCall()` (a clock read and two increments), the breaker's closed check and its success
 * bookkeeping, the call of `fn`, our counters; one `performance.now()` pair only when `onOperation`
 * has a listener. No timer, no per-call policy object: two small closures (the attempt and the
 * breaker's thunk) and two async frames (this one, which also runs attempt 1 itself and hands a
 * failure to the retry loop, and the breaker's). Measured (Node 24, a resolved promise as `fn`): about
 * 0.2 µs over the bare call, 0.3 µs with an `onOperation` listener.
 */
import type { Event } from 'cockatiel';
import { classifyError } from '../classify/classify.ts';
import type { ErrorClassification } from '../classify/types.ts';
import { settingsForTarget } from '../config/resolve.ts';
import type { ResilienceConfig, ResilienceSettings } from '../config/types.ts';
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
  type OperationRef,
  type OperationStep,
  type RateLimitQueueEvent,
  type RateLimitRejectedEvent,
  type RateLimitWaitEvent,
  type RecoveryAttemptEvent,
  type RetryEvent,
  type RetryExhaustedEvent,
  type RetrySuppressedEvent,
  SafeEventEmitter,
  type TimeoutEvent,
} from './events.ts';
import { RateLimiter } from './rate-limiter.ts';
import { RecoveryLoop } from './recovery.ts';
import { type RetryContext, RetryPolicy } from './retry.ts';
import { RetryBudget } from './retry-budget.ts';
import { createTimeout, type TimeoutPolicy } from './timeout.ts';

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
  /** Set by the pipeline for the retry loop (the observer's per-operation events). */
  readonly onStep?: (step: OperationStep) => void;
}

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

/** The context the retry loop gets: the call's, plus the observer's per-operation steps (failure path only). */
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

export class TargetPolicy {
  readonly target: string;
  readonly settings: ResilienceSettings;

  readonly #clock: Clock;
  readonly #classify: (error: unknown) => ErrorClassification;
  readonly #breaker: CircuitBreaker;
  /** The breaker when enabled, else undefined (skipped entirely on the hot path). */
  readonly #activeBreaker: CircuitBreaker | undefined;
  readonly #rateLimiter: RateLimiter | undefined;
  readonly #bulkhead: BulkheadPolicy | undefined;
  readonly #budget: RetryBudget | undefined;
  readonly #retry: RetryPolicy;
  readonly #queryTimeout: TimeoutPolicy | undefined;
  readonly #connectTimeout: TimeoutPolicy | undefined;
  #recovery: RecoveryLoop | undefined;
  #disposed = false;
  #observer: OperationObserver | undefined;

  readonly #operation = new SafeEventEmitter<OperationEvent>();
  readonly #timeout = new SafeEventEmitter<TimeoutEvent>();
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
  readonly onRateLimitQueue: Event<RateLimitQueueEvent>;
  readonly onBulkheadRejected: Event<BulkheadRejectedEvent>;
  /** An attempt hit its timeout (query or connect). */
  readonly onTimeout: Event<TimeoutEvent> = this.#timeout.addListener;
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
  ) {
    this.settings = settings;
    this.target = target;
    this.#clock = clock;
    this.#classify = classify;

    this.#breaker = new CircuitBreaker(settings.circuitBreaker, target, clock);
    this.#activeBreaker = settings.circuitBreaker.enabled ? this.#breaker : undefined;
    this.#rateLimiter = settings.rateLimit.enabled
      ? new RateLimiter(settings.rateLimit, target, clock)
      : undefined;
    this.#bulkhead = createBulkhead(settings.bulkhead, target);
    this.#budget =
      settings.retry.enabled && settings.retry.budget.enabled
        ? new RetryBudget(settings.retry.budget, clock)
        : undefined;
    this.#retry = new RetryPolicy(settings.retry, target, this.#cachedClassify, this.#budget, clock);
    this.#queryTimeout = createTimeout(settings.timeout.queryMs, target, clock);
    this.#connectTimeout = createTimeout(settings.timeout.connectMs, target, clock);

    this.onRetry = this.#retry.onRetry;
    this.onRetryExhausted = this.#retry.onExhausted;
    this.onRetrySuppressed = this.#retry.onSuppressed;
    this.onCircuitStateChange = this.#breaker.onStateChange;
    this.onCircuitRejected = this.#breaker.onRejected;
    this.onRateLimitWait = this.#rateLimiter?.onWait ?? noEvent;
    this.onRateLimitRejected = this.#rateLimiter?.onRejected ?? noEvent;
    this.onRateLimitQueue = this.#rateLimiter?.onQueueSize ?? noEvent;
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
  async execute<T>(
    fn: (attempt: number, signal?: AbortSignal, report?: (step: OperationStep) => void) => Promise<T>,
    ctx: ExecuteContext,
  ): Promise<T> {
    this.#operations++;
    const observer = this.#observer;
    const started = this.#operation.size > 0 || observer ? this.#now() : -1;
    let attempts = 0;
    const operation = ctx.operation;
    const timeout =
      ctx.timeout === false
        ? undefined
        : isConnectLike(operation)
          ? this.#connectTimeout
          : this.#queryTimeout;
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
      let value: T;
      if (bulkhead) {
        value = await bulkhead.execute(
          () => this.#retried(attempt, ctx, observer, observed),
          operation,
          ctx.signal,
        );
      } else {
        // #retried inlined: one async frame less on the happy path.
        this.#budget?.recordCall();
        try {
          value = await attempt(1);
        } catch (error) {
          if (ctx.retry === false) throw error;
          value = await this.#retry.retryAfter(error, attempt, retryContext(ctx, observer, observed));
        }
      }
      this.#successes++;
      this.#connectOutage.success();
      if (started >= 0) {
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
    );
    loop.onAttempt((e) => this.#recoveryAttempt.emit(e));
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
    this.#rateLimiter?.dispose();
    this.#breaker.dispose();
  }

  /**
   * Attempt 1, then the retry loop if it failed (unless the call is not retryable). The call counts for
   * the retry budget's ratio either way.
   */
  async #retried<T>(
    attempt: (n: number) => Promise<T>,
    ctx: ExecuteContext,
    observer: OperationObserver | undefined,
    observed: unknown,
  ): Promise<T> {
    this.#budget?.recordCall();
    try {
      return await attempt(1);
    } catch (error) {
      if (ctx.retry === false) throw error;
      return this.#retry.retryAfter(error, attempt, retryContext(ctx, observer, observed));
    }
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

/** A target's policies were created (first call to that target). */
export interface TargetCreatedEvent {
  readonly target: string;
  readonly policy: TargetPolicy;
}

/**
 * The policies of every target, created lazily on first use from `settingsForTarget(config, target)`
 * (so per-target overrides apply) and cached.
 */
export class PolicyRegistry {
  readonly config: ResilienceConfig;
  readonly #clock: Clock | undefined;
  readonly #classify: (error: unknown) => ErrorClassification;
  readonly #policies = new Map<string, TargetPolicy>();
  readonly #created = new SafeEventEmitter<TargetCreatedEvent>();
  /** A target's policies were just created. */
  readonly onTargetCreated: Event<TargetCreatedEvent> = this.#created.addListener;

  constructor(config: ResilienceConfig, clock?: Clock) {
    this.config = config;
    this.#clock = clock;
    const override = config.classify;
    this.#classify = override ? (e) => classifyError(e, override) : (e) => classifyError(e);
  }

  /** The configured classification of an error (with the config's `classify` override). */
  classify(error: unknown): ErrorClassification {
    return this.#classify(error);
  }

  /** The target's policies, created on first use. After dispose(), creates fresh ones again. */
  forTarget(target: string): TargetPolicy {
    let policy = this.#policies.get(target);
    if (!policy) {
      policy = new TargetPolicy(settingsForTarget(this.config, target), target, this.#classify, this.#clock);
      this.#policies.set(target, policy);
      this.#created.emit({ target, policy });
    }
    return policy;
  }

  /** The target's policies if they exist (never creates them). */
  get(target: string): TargetPolicy | undefined {
    return this.#policies.get(target);
  }

  /** The targets with policies, in creation order. */
  targets(): string[] {
    return [...this.#policies.keys()];
  }

  /** Every target's snapshot. */
  snapshot(): TargetSnapshot[] {
    return [...this.#policies.values()].map((p) => p.snapshot());
  }

  /** Disposes every target's policies and forgets them. */
  dispose(): void {
    for (const policy of this.#policies.values()) policy.dispose();
    this.#policies.clear();
  }
}
