/**
 * The retry loop.
 *
 * Hand-written around cockatiel's backoffs (see backoff.ts) rather than cockatiel's `retry()` policy:
 * - attempts and backoff are tuned per error class (`retry.perErrorClass`), and each class walks its
 *   own backoff sequence within one call; cockatiel's `retry(handleWhen(…), { maxAttempts, backoff })`
 *   has one attempt limit and one backoff per policy;
 * - a retry budget is consulted before every retry, and a per-call safety veto (`canRetry`: dispatch
 *   tracking, transaction status, idempotence) decides whether this call may be repeated at all;
 *   cockatiel's `handleWhen` predicate sees only the error, neither the attempt number nor the call;
 * - a refused retry must surface the original error object (transparency) and say why it was
 *   refused (`onSuppressed`), which cockatiel's `onGiveUp` cannot distinguish.
 *
 * Rules, in the order they are applied after a failed attempt:
 * 1. not transient (including every `resilience_rejection`, e.g. the breaker's own CircuitOpenError):
 *    rethrow at once, no event;
 * 2. the safety veto refuses: `onSuppressed(reason)`, rethrow;
 * 3. the attempts allowed for this error's class are used up (`attempt >= maxAttempts` of that class,
 *    counting every attempt of the call; with `ctx.connecting`, an attempt that failed getting its
 *    connection counts among the consecutive failed connects, any other among the statement's
 *    attempts): `onExhausted`, rethrow the last error;
 * 4. the caller's signal already aborted: reject with its reason;
 * 5. the retry budget refuses: `onSuppressed('budget')`, rethrow (a connect the network refused or reset
 *    draws nothing from it: see `costsTheServerNothing`);
 * 6. `onRetry`, wait this class's next backoff delay (abortable through `ctx.signal`), try again.
 * Errors always surface as thrown (the same object), never wrapped.
 */
import type { Event, IBackoff, IBackoffFactory } from 'cockatiel';
import { REFUSED_OR_RESET } from '../classify/network.ts';
import type { ErrorClass, ErrorClassification } from '../classify/types.ts';
import type { RetrySettings } from '../config/types.ts';
import { defaultVeto } from '../safety/retry-safety.ts';
import { createBackoff } from './backoff.ts';
import { type Clock, keepAlive, realClock } from './clock.ts';
import {
  type OperationKind,
  type OperationStep,
  type RetryEvent,
  type RetryExhaustedEvent,
  type RetrySuppressedEvent,
  SafeEventEmitter,
  type SuppressReason,
} from './events.ts';
import type { RetryBudget } from './retry-budget.ts';

export interface RetryContext {
  readonly operation: OperationKind;
  /** Aborting it during a backoff wait rejects the call at once with the signal's reason. */
  readonly signal?: AbortSignal;
  /** false: attempt 1 only, never retried (the call still counts for the retry budget). */
  readonly retry?: boolean;
  /**
   * Safety veto, asked after a transient failure before retrying: return true to allow, or a
   * SuppressReason ('in_transaction' | 'unknown_outcome' | 'not_retryable' …) to refuse. The
   * instrumentation supplies it (dispatch tracking, transaction status, idempotence); every veto is in
   * src/safety/retry-safety.ts. Default: `defaultVeto`. A veto that throws refuses ('not_retryable').
   */
  canRetry?(error: unknown, classification: ErrorClassification, attempt: number): true | SuppressReason;
  /** Told about this call's retry, suppressed and exhausted events (the operation's span). */
  readonly onStep?: (step: OperationStep) => void;
  /**
   * The failed attempt failed while getting its connection (a `Pool.query` checkout), so nothing was
   * sent. Such failures are counted on their own (consecutive ones, against the same per-class limits):
   * they do not use up the statement's attempts, as a substitute's or a standalone client's connect
   * retries do not.
   */
  readonly connecting?: () => boolean;
}

type Counted = NonNullable<RetryEvent['counted']>;

/**
 * A failed connect that put no load on a server (refused or reset by the network, before any answer):
 * its retry draws nothing from the retry budget, which exists to spare a struggling server (gRPC exempts
 * its transparent retries from retry throttling for the same reason, gRFC A6). The class's attempts,
 * the backoff and the breaker still bound it. A server's own refusal (57P03, 53300, auth) and a connect
 * timeout do draw from the budget.
 */
function costsTheServerNothing(error: unknown, connecting: boolean): boolean {
  return connecting && REFUSED_OR_RESET.has((error as { code?: unknown } | null)?.code);
}

/** Attempts and backoff for one error class (or the base settings). */
interface ClassPlan {
  readonly maxAttempts: number;
  readonly backoff: IBackoffFactory<unknown>;
}

export class RetryPolicy {
  private readonly retryEmitter = new SafeEventEmitter<RetryEvent>();
  private readonly exhaustedEmitter = new SafeEventEmitter<RetryExhaustedEvent>();
  private readonly suppressedEmitter = new SafeEventEmitter<RetrySuppressedEvent>();
  /** A retry is about to happen (after its backoff delay). */
  readonly onRetry: Event<RetryEvent> = this.retryEmitter.addListener;
  /** A transient failure could not be retried: the attempts for its class were used up. */
  readonly onExhausted: Event<RetryExhaustedEvent> = this.exhaustedEmitter.addListener;
  /** A transient failure was not retried: vetoed (unsafe), or the retry budget is spent. */
  readonly onSuppressed: Event<RetrySuppressedEvent> = this.suppressedEmitter.addListener;

  private readonly target: string;
  private readonly classify: (error: unknown) => ErrorClassification;
  private readonly budget: RetryBudget | undefined;
  private readonly clock: Clock;
  readonly #enabled: boolean;
  private readonly base: ClassPlan;
  private readonly perClass: ReadonlyMap<ErrorClass, ClassPlan>;

  constructor(
    settings: RetrySettings,
    target: string,
    classify: (error: unknown) => ErrorClassification,
    budget?: RetryBudget,
    clock: Clock = realClock,
  ) {
    this.target = target;
    this.classify = classify;
    this.budget = budget;
    this.clock = clock;
    this.#enabled = settings.enabled && settings.maxAttempts > 1 ? true : hasMoreAttempts(settings);
    this.base = { maxAttempts: settings.maxAttempts, backoff: createBackoff(settings) };
    const perClass = new Map<ErrorClass, ClassPlan>();
    for (const [errorClass, override] of Object.entries(settings.perErrorClass ?? {})) {
      if (!override) continue;
      const timing = { ...pickTiming(settings), ...withoutUndefined(override) };
      perClass.set(errorClass as ErrorClass, {
        maxAttempts: timing.maxAttempts,
        backoff: createBackoff(timing),
      });
    }
    this.perClass = perClass;
  }

  /** Retries can happen at all: enabled, and the base or some error class allows a second attempt. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /**
   * Runs one call: `fn(1)`, and again with the next attempt number after each retryable failure (never
   * when `ctx.retry` is false). Resolves with the first success; rejects with the error that ended the
   * call (the same object `fn` threw or rejected with), or with `ctx.signal`'s reason when it aborts
   * during a backoff wait. The call counts for the retry budget's ratio either way.
   */
  execute<T>(fn: (attempt: number) => Promise<T>, ctx: RetryContext): Promise<T> {
    this.countCall();
    let first: Promise<T>;
    try {
      first = fn(1);
    } catch (error) {
      first = Promise.reject(error);
    }
    if (ctx.retry === false || !this.#enabled) return first;
    // A reaction on the first attempt's promise rather than an async function: one promise less per call.
    return first.then(undefined, (error: unknown) => this.#retryAfter(error, fn, ctx));
  }

  /** A call starts: it counts for the retry budget's ratio (execute() does this itself). */
  countCall(): void {
    this.budget?.recordCall();
  }

  /**
   * The rest of execute() for a caller that ran attempt 1 itself (after countCall()), which failed with
   * `error`: the same decisions, then `fn(2)` and on. Rejects with `error` when the call is never retried.
   */
  retryAfterFirst<T>(error: unknown, fn: (attempt: number) => Promise<T>, ctx: RetryContext): Promise<T> {
    if (ctx.retry === false || !this.#enabled) return Promise.reject(error);
    return this.#retryAfter(error, fn, ctx);
  }

  /** Attempt 1 failed with `error`: decides about it and goes on from attempt 2. */
  async #retryAfter<T>(error: unknown, fn: (attempt: number) => Promise<T>, ctx: RetryContext): Promise<T> {
    // Per call, per error class: where that class is in its backoff sequence (failed connects apart).
    const backoffs = new Map<ErrorClass, IBackoff<unknown>>();
    const connectBackoffs = new Map<ErrorClass, IBackoff<unknown>>();
    let statements = 0; // attempts that got a connection
    let connects = 0; // consecutive attempts that failed getting one
    let failure = error;
    for (let attempt = 1; ; attempt++) {
      let counted: Counted | undefined;
      let sequence = backoffs;
      // The failed attempt was getting a connection: a connect, or a checkout that failed.
      const connecting = ctx.connecting ? ctx.connecting() : ctx.operation === 'connect';
      if (ctx.connecting !== undefined) {
        let kind: Counted['kind'];
        let n: number;
        if (connecting) {
          kind = 'checkout';
          n = ++connects;
          sequence = connectBackoffs;
        } else {
          kind = 'statement';
          n = ++statements;
          connects = 0;
          connectBackoffs.clear();
        }
        // Told apart only once the two counts differ (until then both are `attempt`).
        if (n !== attempt) counted = { kind, attempt: n };
      }
      const delayMs = this.afterFailure(failure, attempt, counted, connecting, ctx, sequence);
      if (delayMs > 0) await this.sleep(delayMs, ctx.signal);
      try {
        return await fn(attempt + 1);
      } catch (e) {
        failure = e;
      }
    }
  }

  /**
   * Decides what follows failed attempt number `attempt` (`counted`: its number among the attempts it
   * counts with, see RetryContext.connecting; `connecting`: it failed getting its connection): returns
   * the delay before the next one, or throws.
   */
  private afterFailure(
    error: unknown,
    attempt: number,
    counted: Counted | undefined,
    connecting: boolean,
    ctx: RetryContext,
    backoffs: Map<ErrorClass, IBackoff<unknown>>,
  ): number {
    const c = this.classify(error);
    if (!c.transient) throw error;

    const verdict = veto(ctx, error, c, attempt);
    if (verdict !== true) {
      this.suppressed(ctx, {
        target: this.target,
        operation: ctx.operation,
        reason: verdict,
        attempt,
        error,
        errorType: c.errorType,
      });
      throw error;
    }

    const plan = this.perClass.get(c.errorClass) ?? this.base;
    if ((counted?.attempt ?? attempt) >= plan.maxAttempts) {
      const event: RetryExhaustedEvent = {
        target: this.target,
        operation: ctx.operation,
        attempts: attempt,
        error,
        errorType: c.errorType,
      };
      this.exhaustedEmitter.emit(event);
      ctx.onStep?.({ type: 'retry.exhausted', event });
      throw error;
    }

    if (ctx.signal?.aborted) throw ctx.signal.reason;

    if (this.budget && !costsTheServerNothing(error, connecting) && !this.budget.tryAcquire()) {
      this.suppressed(ctx, {
        target: this.target,
        operation: ctx.operation,
        reason: 'budget',
        attempt,
        error,
        errorType: c.errorType,
      });
      throw error;
    }

    const previous = backoffs.get(c.errorClass);
    const backoff = previous ? previous.next(undefined) : plan.backoff.next(undefined);
    backoffs.set(c.errorClass, backoff);
    const delayMs = backoff.duration;
    const event: RetryEvent = {
      target: this.target,
      operation: ctx.operation,
      attempt,
      maxAttempts: plan.maxAttempts,
      delayMs,
      error,
      errorType: c.errorType,
      errorClass: c.errorClass,
      ...(counted && { counted }),
    };
    this.retryEmitter.emit(event);
    ctx.onStep?.({ type: 'retry', event });
    return delayMs;
  }

  private suppressed(ctx: RetryContext, event: RetrySuppressedEvent): void {
    this.suppressedEmitter.emit(event);
    ctx.onStep?.({ type: 'retry.suppressed', event });
  }

  /**
   * Waits `ms`; rejects with the signal's reason as soon as it aborts (clearing the timer). The timer
   * is ref'd again although the clock unrefs its timers: someone is awaiting this call, and with the
   * server down there may be no socket left to keep the process alive, so an unref'd backoff would let
   * a script exit silently in the middle of a retry.
   */
  private sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (!signal) {
        keepAlive(this.clock.setTimeout(resolve, ms));
        return;
      }
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = (): void => {
        this.clock.clearTimeout(handle);
        reject(signal.reason);
      };
      const handle = this.clock.setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      keepAlive(handle);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

function veto(
  ctx: RetryContext,
  error: unknown,
  c: ErrorClassification,
  attempt: number,
): true | SuppressReason {
  if (!ctx.canRetry) return defaultVeto(error, c);
  try {
    return ctx.canRetry(error, c, attempt);
  } catch {
    return 'not_retryable';
  }
}

/** Retries can happen at all: globally enabled and some class (or the base) allows a second attempt. */
function hasMoreAttempts(settings: RetrySettings): boolean {
  if (!settings.enabled) return false;
  for (const override of Object.values(settings.perErrorClass ?? {})) {
    if (override?.maxAttempts !== undefined && override.maxAttempts > 1) return true;
  }
  return false;
}

function pickTiming(s: RetrySettings) {
  return {
    maxAttempts: s.maxAttempts,
    initialDelayMs: s.initialDelayMs,
    maxDelayMs: s.maxDelayMs,
    multiplier: s.multiplier,
    jitter: s.jitter,
  };
}

function withoutUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
