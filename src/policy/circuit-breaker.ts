/**
 * One target's circuit breaker: closed → open → half-open → closed, moving on time.
 *
 * Built here rather than on cockatiel's `CircuitBreakerPolicy` because that one half-opens lazily (only
 * inside `execute()`, so a gauge says "open" for a server that is back), makes extra half-open calls wait
 * for the probe's verdict instead of failing fast, ties half-open concurrency to the successes needed to
 * close, and throws an untyped error without the target. The decision to trip while closed is cockatiel's:
 * `ConsecutiveBreaker` (mode `consecutive`) or `SamplingBreaker` (mode `failure_rate`).
 *
 * Two limits of cockatiel's `SamplingBreaker`, handled or documented here:
 * - it reads time from `Date.now()`, not from the injected clock. In production both are the wall
 *   clock; tests of the `failure_rate` mode must fake `Date` as well.
 * - it ages its sub-windows only when a call arrives, one sub-window per call: after a quiet spell the
 *   failures of a past outage still count as "in the window" (seen: 4 failures, 60 s of silence, then
 *   one failure trips a 5 s window). `FreshAfterIdle` below starts a new sampler when no call came for
 *   a whole window. With sparse traffic (fewer calls than sub-windows per window) a sub-window can still
 *   outlive the window by a few sub-window lengths.
 */
import { CircuitState, ConsecutiveBreaker, type Event, type IBreaker, SamplingBreaker } from 'cockatiel';
import type { CircuitBreakerSettings } from '../config/types.ts';
import { CircuitOpenError } from '../errors.ts';
import { type Clock, realClock } from './clock.ts';
import {
  type CircuitRejectedEvent,
  type CircuitStateChangeEvent,
  type CircuitStateName,
  type OperationKind,
  SafeEventEmitter,
} from './events.ts';

/** One stretch of half-open state: its probe slots in use and the successes seen so far. */
interface HalfOpenRound {
  inFlight: number;
  successes: number;
}

/** A failure share can never exceed 1: with a threshold of 1 or more the breaker never trips on rate. */
class NeverBreaker implements IBreaker {
  state: unknown = null;
  success(): void {}
  failure(): boolean {
    return false;
  }
}

/**
 * cockatiel's `SamplingBreaker`, replaced by a fresh one when no call came for a whole sampling window:
 * everything it holds is then older than the window, but it would only drop it one sub-window per call.
 */
class FreshAfterIdle implements IBreaker {
  readonly #options: ConstructorParameters<typeof SamplingBreaker>[0];
  #inner: SamplingBreaker;
  #lastCallAt = Date.now();

  constructor(options: ConstructorParameters<typeof SamplingBreaker>[0]) {
    this.#options = options;
    this.#inner = new SamplingBreaker(options);
  }
  get state(): unknown {
    return this.#inner.state;
  }
  set state(value: unknown) {
    this.#inner.state = value;
  }
  success(state: CircuitState): void {
    this.#age();
    this.#inner.success(state);
  }
  failure(state: CircuitState): boolean {
    this.#age();
    return this.#inner.failure(state);
  }
  #age(): void {
    // Date.now(), like SamplingBreaker itself.
    const now = Date.now();
    if (now - this.#lastCallAt >= this.#options.duration) this.#inner = new SamplingBreaker(this.#options);
    this.#lastCallAt = now;
  }
}

const countsAsFailure = (): boolean => true;

export class CircuitBreaker {
  readonly target: string;
  readonly #settings: CircuitBreakerSettings;
  readonly #clock: Clock;
  readonly #stateChange = new SafeEventEmitter<CircuitStateChangeEvent>();
  readonly #rejected = new SafeEventEmitter<CircuitRejectedEvent>();
  readonly #halfOpenMaxProbes: number;
  readonly #successesToClose: number;

  #state: CircuitStateName = 'closed';
  #stateSince: number;
  #nextProbeAt: number | undefined;
  #lastFailure: { error: unknown; at: number } | undefined;
  /** The failure that last opened the breaker: the cause of every CircuitOpenError until it closes. */
  #openedBy: unknown;
  /** The trip decision while closed (cockatiel's); replaced by a fresh one on every close. */
  #trip: IBreaker;
  /** Bumped on every state change: an outcome of a call started under an older epoch is ignored. */
  #epoch = 0;
  #halfOpen: HalfOpenRound = { inFlight: 0, successes: 0 };
  #timer: unknown;
  #disposed = false;
  /** Held open by the fleet (src/coordination/fleet-breaker.ts): no half-open but through `probe()`. */
  #held = false;
  /** The recovery loop's next probe for an outage opened at `openedAt` (recovery.ts), when one runs. */
  #recoveryProbeAt: ((openedAt: number) => number | undefined) | undefined;

  /** Fires on every state change, after the state has changed. */
  readonly onStateChange: Event<CircuitStateChangeEvent> = this.#stateChange.addListener;
  /** Fires for every call rejected without being attempted. */
  readonly onRejected: Event<CircuitRejectedEvent> = this.#rejected.addListener;

  constructor(settings: CircuitBreakerSettings, target: string, clock: Clock = realClock) {
    this.#settings = settings;
    this.target = target;
    this.#clock = clock;
    this.#halfOpenMaxProbes = Math.max(1, Math.floor(settings.halfOpenMaxProbes));
    this.#successesToClose = Math.max(1, Math.floor(settings.successesToClose));
    this.#stateSince = clock.now();
    this.#trip = this.#newTrip();
  }

  /** The current state. Open turns half-open on time (a timer), with or without traffic. */
  get state(): CircuitStateName {
    this.#halfOpenIfDue();
    return this.#state;
  }

  /** Epoch ms of the last state change (of construction, before any). */
  get stateSince(): number {
    this.#halfOpenIfDue();
    return this.#stateSince;
  }

  /** While open: epoch ms at which the breaker half-opens. Otherwise undefined. */
  get nextProbeAt(): number | undefined {
    this.#halfOpenIfDue();
    return this.#nextProbeAt;
  }

  /** The last counted failure (one for which `isFailure` said true), and when it happened. */
  get lastFailure(): { error: unknown; at: number } | undefined {
    return this.#lastFailure;
  }

  /**
   * Runs `fn` if the state allows it. Closed: runs. Half-open: runs if fewer than `halfOpenMaxProbes`
   * half-open calls are in flight, else rejects at once with `CircuitOpenError(target, 'half_open')`.
   * Open: rejects at once with `CircuitOpenError(target, 'open', nextProbeAt)`. Either carries the
   * failure that opened the breaker as its `cause`.
   *
   * A rejection of `fn` for which `isFailure(error)` is true counts as a failure. One for which
   * `isNeutral(error)` is true counts as nothing: it says nothing about the target either way (a lost
   * established connection), so it neither adds to nor resets the failures in a row, and a half-open call
   * ending so neither closes nor re-opens. Any other outcome (including rejections that do not count: the
   * server answered) counts as a success. `fn`'s result or error is passed through unchanged. A disabled
   * breaker just runs `fn`.
   */
  execute<T>(
    fn: () => Promise<T>,
    operation: OperationKind,
    isFailure: (error: unknown) => boolean,
    isNeutral?: (error: unknown) => boolean,
  ): Promise<T> {
    if (!this.#settings.enabled) return invoke(fn);
    this.#halfOpenIfDue();
    switch (this.#state) {
      case 'closed':
        return this.#run(fn, isFailure, isNeutral, undefined);
      case 'half_open':
        if (this.#halfOpen.inFlight < this.#halfOpenMaxProbes)
          return this.#run(fn, isFailure, isNeutral, this.#halfOpen);
        return this.#reject(operation, 'half_open');
      default:
        return this.#reject(operation, 'open');
    }
  }

  /**
   * For a caller that runs a call itself and reports its outcome (the pipeline's fast path, one
   * promise reaction fewer than execute()): while closed, the state's epoch to hand to `succeeded` or
   * `failed`; -1 when not closed (or off), for execute() to decide.
   */
  closedEpoch(): number {
    if (!this.#settings.enabled) return -1;
    this.#halfOpenIfDue();
    return this.#state === 'closed' ? this.#epoch : -1;
  }

  /** A call admitted by closedEpoch() succeeded: recorded as execute() records it. */
  succeeded(epoch: number): void {
    this.#settle(epoch, undefined, undefined, false);
  }

  /** A call admitted by closedEpoch() failed with `error`: judged and recorded as execute() does. */
  failed(
    epoch: number,
    error: unknown,
    isFailure: (error: unknown) => boolean,
    isNeutral?: (error: unknown) => boolean,
  ): void {
    this.#settleFailure(epoch, undefined, error, isFailure, isNeutral);
  }

  /**
   * Admission without running anything through the breaker (for calls whose outcome the breaker cannot
   * follow, e.g. pg Submittables): undefined when closed; otherwise the CircuitOpenError the call is
   * refused with (and `onRejected` fires). Such calls are never used as half-open probes.
   */
  admit(operation: OperationKind): CircuitOpenError | undefined {
    if (!this.#settings.enabled) return undefined;
    this.#halfOpenIfDue();
    if (this.#state === 'closed') return undefined;
    const state = this.#state;
    const nextProbeAt = state === 'open' ? this.#nextProbeAt : undefined;
    this.#rejected.emit({ target: this.target, operation, state, nextProbeAt });
    return new CircuitOpenError(this.target, state, nextProbeAt, this.#openedBy);
  }

  /**
   * Runs a recovery probe. Open: half-opens now (skipping the rest of the wait) and runs `fn` as a
   * half-open call. Closed, or half-open with a free slot: like `execute()`. Half-open with every slot
   * busy: rejects with `CircuitOpenError(target, 'half_open')`. By default every error of `fn` counts
   * as a failure.
   */
  probe<T>(fn: () => Promise<T>, isFailure: (error: unknown) => boolean = countsAsFailure): Promise<T> {
    if (this.#settings.enabled) {
      this.#halfOpenIfDue();
      if (this.#state === 'open') this.#toHalfOpen();
    }
    return this.execute(fn, 'probe', isFailure);
  }

  /**
   * Records one failure that happened outside `execute()`: an operation whose attempts each ended
   * neutral but which, as a whole, could not get a connection (every retry of a connect reset: a proxy
   * in front of a server that is down). Only while closed: half-open calls decide for themselves.
   */
  recordFailure(error: unknown): void {
    if (!this.#settings.enabled) return;
    this.#halfOpenIfDue();
    if (this.#state !== 'closed') return;
    this.#lastFailure = { error, at: this.#clock.now() };
    if (this.#trip.failure(CircuitState.Closed)) this.#open(error);
  }

  /**
   * Fleet verdict "down": opens the breaker (if not open already) and holds it open: it half-opens only
   * through `probe()`, never on its timer nor for traffic, so the fleet's single prober decides.
   */
  holdOpen(error: unknown): void {
    if (!this.#settings.enabled) return;
    this.#held = true;
    if (this.#state !== 'open') this.#open(error);
  }

  /** Fleet verdict "up" (another process's probe succeeded): releases the hold and closes. */
  releaseClosed(): void {
    if (!this.#settings.enabled) return;
    this.#held = false;
    if (this.#state !== 'closed') this.#close();
  }

  /** Releases the hold without closing (the fleet link went away): the breaker runs alone again. */
  release(): void {
    this.#held = false;
  }

  /** Whether the fleet holds the breaker open. */
  get held(): boolean {
    return this.#held;
  }

  /** Stops the half-open timer. The breaker keeps answering calls; open turns half-open on the next call due. */
  dispose(): void {
    this.#disposed = true;
    this.#clearTimer();
  }

  #run<T>(
    fn: () => Promise<T>,
    isFailure: (error: unknown) => boolean,
    isNeutral: ((error: unknown) => boolean) | undefined,
    round: HalfOpenRound | undefined,
  ): Promise<T> {
    const epoch = this.#epoch;
    if (round) round.inFlight++;
    // Reactions on fn's promise rather than an async function: one promise less on every call.
    return invoke(fn).then(
      (value) => {
        this.#settle(epoch, round, undefined, false);
        return value;
      },
      (error: unknown) => {
        this.#settleFailure(epoch, round, error, isFailure, isNeutral);
        throw error;
      },
    );
  }

  #settleFailure(
    epoch: number,
    round: HalfOpenRound | undefined,
    error: unknown,
    isFailure: (error: unknown) => boolean,
    isNeutral: ((error: unknown) => boolean) | undefined,
  ): void {
    const failed = judge(isFailure, error);
    const neutral = !failed && isNeutral !== undefined && judge(isNeutral, error);
    this.#settle(epoch, round, error, failed, neutral);
  }

  #settle(
    epoch: number,
    round: HalfOpenRound | undefined,
    error: unknown,
    failed: boolean,
    neutral = false,
  ): void {
    if (round) round.inFlight--;
    if (failed) this.#lastFailure = { error, at: this.#clock.now() };
    // The state changed while the call ran: its outcome belongs to a state that is gone.
    if (epoch !== this.#epoch) return;
    if (neutral) return;
    if (this.#state === 'closed') {
      if (!failed) this.#trip.success(CircuitState.Closed);
      else if (this.#trip.failure(CircuitState.Closed)) this.#open(error);
    } else if (this.#state === 'half_open' && round) {
      if (failed) this.#open(error);
      else if (++round.successes >= this.#successesToClose) this.#close();
    }
  }

  /**
   * The background recovery loop probes this breaker (recovery.ts): the "next probe" that rejections
   * and the opening event announce is the earlier of its next probe and the half-open timer.
   */
  useRecoveryProbes(nextProbeAt: (openedAt: number) => number | undefined): void {
    this.#recoveryProbeAt = nextProbeAt;
  }

  /** The next probe of an outage opened at `openedAt`, whichever comes first (see useRecoveryProbes). */
  #announcedProbeAt(openedAt: number, halfOpenAt: number | undefined): number | undefined {
    const probeAt = this.#recoveryProbeAt?.(openedAt);
    if (probeAt === undefined) return halfOpenAt;
    return halfOpenAt === undefined || probeAt < halfOpenAt ? probeAt : halfOpenAt;
  }

  #reject<T>(operation: OperationKind, state: 'open' | 'half_open'): Promise<T> {
    const nextProbeAt =
      state === 'open' ? this.#announcedProbeAt(this.#stateSince, this.#nextProbeAt) : undefined;
    this.#rejected.emit({ target: this.target, operation, state, nextProbeAt });
    return Promise.reject(new CircuitOpenError(this.target, state, nextProbeAt, this.#openedBy));
  }

  #open(error: unknown): void {
    const from = this.#state;
    const at = this.#clock.now();
    const nextProbeAt = at + this.#settings.halfOpenAfterMs;
    this.#state = 'open';
    this.#openedBy = error;
    this.#stateSince = at;
    this.#nextProbeAt = nextProbeAt;
    this.#epoch++;
    this.#clearTimer();
    if (!this.#disposed) {
      this.#timer = this.#clock.setTimeout(() => {
        this.#timer = undefined;
        if (this.#state === 'open' && !this.#held) this.#toHalfOpen();
      }, this.#settings.halfOpenAfterMs);
    }
    this.#stateChange.emit({
      target: this.target,
      from,
      to: 'open',
      at,
      error,
      nextProbeAt: this.#announcedProbeAt(at, nextProbeAt),
    });
  }

  #toHalfOpen(): void {
    const at = this.#clock.now();
    this.#state = 'half_open';
    this.#stateSince = at;
    this.#nextProbeAt = undefined;
    this.#epoch++;
    this.#halfOpen = { inFlight: 0, successes: 0 };
    this.#clearTimer();
    this.#stateChange.emit({ target: this.target, from: 'open', to: 'half_open', at });
  }

  #close(): void {
    const from = this.#state;
    const at = this.#clock.now();
    this.#state = 'closed';
    this.#openedBy = undefined;
    this.#stateSince = at;
    this.#nextProbeAt = undefined;
    this.#epoch++;
    this.#trip = this.#newTrip();
    this.#clearTimer();
    this.#stateChange.emit({ target: this.target, from, to: 'closed', at });
  }

  /** Half-opens when the wait is over but the timer has not fired yet (a busy event loop, or after dispose). */
  #halfOpenIfDue(): void {
    if (
      this.#state === 'open' &&
      !this.#held &&
      this.#nextProbeAt !== undefined &&
      this.#clock.now() >= this.#nextProbeAt
    ) {
      this.#toHalfOpen();
    }
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      this.#clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  #newTrip(): IBreaker {
    const s = this.#settings;
    if (s.mode === 'failure_rate') {
      if (s.failureRateThreshold >= 1) return new NeverBreaker();
      return new FreshAfterIdle({
        threshold: s.failureRateThreshold,
        duration: s.failureRateWindowMs,
        // cockatiel reads 0 as "guess one"; here 0 means no minimum.
        minimumRps: s.minimumRps > 0 ? s.minimumRps : Number.MIN_VALUE,
      });
    }
    return new ConsecutiveBreaker(Math.max(1, s.consecutiveFailures));
  }
}

/** Calls `fn`, turning a synchronous throw into a rejection. */
function invoke<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (error) {
    return Promise.reject(error);
  }
}

/** A classifier that throws must not open the circuit: its verdict counts as "not a failure". */
function judge(isFailure: (error: unknown) => boolean, error: unknown): boolean {
  try {
    return isFailure(error) === true;
  } catch {
    return false;
  }
}
