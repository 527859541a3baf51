/**
 * `ConnectRamp`: after a target's breaker closes from open or half-open (the fleet's close, or this
 * process's own probe), the new server connections this process opens to the target ramp up over
 * `circuitBreaker.rampMs` instead of all at once: one at once, then at a rate that grows linearly from
 * RAMP_START_PER_S to RAMP_END_PER_S across the window, and no limit once the window is over. So a
 * fleet coming back together does not open every pool's `max` connections in the same instant.
 *
 * Only new connections wait (instrumentation/ramp-connect.ts): queries on open connections never do. A
 * waiting connect is never refused by the ramp: it goes ahead at its turn, at the window's end, or when
 * its bound passes, whichever comes first. Nothing exists on the connect path until the breaker has
 * closed from open once: `admit()` is a field read then.
 *
 * The waiting is the rate limiter's (rate-limiter.ts: FIFO, one timer, aborts); the ramp supplies its
 * permits through `RampAllowance`, a PermitBucket whose refill rate grows over the window.
 */
import type { RateLimitSettings } from '../config/types.ts';
import type { CircuitBreaker } from './circuit-breaker.ts';
import { type Clock, realClock } from './clock.ts';
import { type PermitBucket, RateLimiter } from './rate-limiter.ts';

/** Connections admitted at once when the ramp starts (at least one, so every process serves at once). */
export const RAMP_INITIAL = 1;
/** The ramp's rate at the close, in new connections per second. */
export const RAMP_START_PER_S = 10;
/** The ramp's rate at the end of the window (beyond it: no limit), in new connections per second. */
export const RAMP_END_PER_S = 100;

/**
 * Connections the ramp allows in the first `ms` after the close (`rampMs` the window): RAMP_INITIAL plus
 * the integral of the linearly growing rate. Infinity from the window's end on.
 */
export function rampAllowance(ms: number, rampMs: number): number {
  if (ms >= rampMs) return Number.POSITIVE_INFINITY;
  const t = Math.max(0, ms);
  const start = RAMP_START_PER_S / 1000;
  const slope = (RAMP_END_PER_S - RAMP_START_PER_S) / 1000 / rampMs;
  return RAMP_INITIAL + start * t + (slope * t * t) / 2;
}

/** The ramp's permits: the allowance so far less the permits taken (reservations included). */
export class RampAllowance implements PermitBucket {
  readonly #clock: Pick<Clock, 'now'>;
  readonly #startedAt: number;
  readonly #rampMs: number;
  #taken = 0;

  constructor(rampMs: number, clock: Pick<Clock, 'now'>) {
    this.#clock = clock;
    this.#startedAt = clock.now();
    this.#rampMs = rampMs;
  }

  /** Ms left in the window (0 once over). */
  get remainingMs(): number {
    return Math.max(0, this.#startedAt + this.#rampMs - this.#clock.now());
  }

  get tokens(): number {
    return this.#allowance(this.#clock.now() - this.#startedAt) - this.#taken;
  }

  tryTake(n = 1): boolean {
    if (this.tokens < n) return false;
    this.#taken += n;
    return true;
  }

  /** Ms until the level reaches `n`: when the allowance reaches `taken + n`, at the latest the window's end. */
  msUntil(n = 1): number {
    const elapsed = this.#clock.now() - this.#startedAt;
    const need = this.#taken + n;
    if (this.#allowance(elapsed) >= need) return 0;
    // Solve RAMP_INITIAL + start·t + slope·t²/2 = need for t within the window.
    const start = RAMP_START_PER_S / 1000;
    const slope = (RAMP_END_PER_S - RAMP_START_PER_S) / 1000 / this.#rampMs;
    const at = (-start + Math.sqrt(start * start + 2 * slope * (need - RAMP_INITIAL))) / slope;
    return Math.max(0, Math.min(at, this.#rampMs) - elapsed);
  }

  reserve(n = 1): void {
    this.#taken += n;
  }

  refund(n = 1): void {
    this.#taken -= n;
  }

  #allowance(elapsed: number): number {
    return rampAllowance(elapsed, this.#rampMs);
  }
}

/** The rate limiter's settings for the ramp: wait, FIFO, no bound of its own (each connect has one). */
const RAMP_LIMITER: RateLimitSettings = {
  enabled: true,
  ratePerMinute: 1,
  burst: 1,
  strategy: 'wait',
  maxQueueSize: 0,
  maxWaitMs: 0,
};

/** One ramp window: its permits and the queue of connects waiting for them. */
interface Window {
  readonly allowance: RampAllowance;
  readonly limiter: RateLimiter;
}

export class ConnectRamp {
  readonly target: string;
  readonly rampMs: number;
  readonly #clock: Clock;
  readonly #subscription: { dispose(): void };
  #window: Window | undefined;
  #disposed = false;
  /** Ramp windows started, and connects that waited in one (for tests and introspection). */
  started = 0;
  delayed = 0;

  constructor(breaker: CircuitBreaker, rampMs: number, clock: Clock = realClock) {
    this.target = breaker.target;
    this.rampMs = rampMs;
    this.#clock = clock;
    this.#subscription = breaker.onStateChange((e) => {
      if (e.to === 'closed') this.#start();
    });
  }

  /** Whether a ramp window is running now. */
  get active(): boolean {
    return this.#current() !== undefined;
  }

  /**
   * Admission for one new connection: undefined to connect now; otherwise a promise that resolves when
   * it may (never rejects). `boundMs` (> 0): it goes ahead after that long whatever the ramp says.
   */
  admit(boundMs: number): Promise<void> | undefined {
    if (this.#window === undefined) return undefined;
    const window = this.#current();
    if (window === undefined) return undefined;
    const controller = new AbortController();
    const waiting = window.limiter.acquire('connect', controller.signal);
    if (waiting === undefined) return undefined;
    this.delayed++;
    const timer =
      boundMs > 0 ? this.#clock.setTimeout(() => controller.abort(), Math.max(1, boundMs)) : undefined;
    const done = (): void => {
      if (timer !== undefined) this.#clock.clearTimeout(timer);
    };
    // Aborted at the bound (or the window replaced): the connect goes ahead rather than fail.
    return waiting.then(done, done);
  }

  /** Ends the subscription; waiting connects go ahead. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#subscription.dispose();
    this.#window?.limiter.dispose();
    this.#window = undefined;
  }

  /** The running window, dropping it once it is over. */
  #current(): Window | undefined {
    const window = this.#window;
    if (window !== undefined && window.allowance.remainingMs === 0) {
      window.limiter.dispose();
      this.#window = undefined;
      return undefined;
    }
    return window;
  }

  #start(): void {
    if (this.#disposed || this.rampMs <= 0) return;
    // A new close while a window runs: those waiting go now, the new window starts from one.
    this.#window?.limiter.dispose();
    const allowance = new RampAllowance(this.rampMs, this.#clock);
    this.#window = {
      allowance,
      limiter: new RateLimiter(RAMP_LIMITER, this.target, this.#clock, allowance),
    };
    this.started++;
  }
}
