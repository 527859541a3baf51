/**
 * One target's rate limiter: a token bucket (`ratePerMinute`, `burst`) with a backpressure strategy for
 * calls that find it empty:
 * - `drop`: reject at once (`RateLimitedError` reason `drop`, `retryAfterMs` = time to the next token);
 * - `wait`: join an unbounded FIFO queue; rejected (`max_wait`) after waiting `maxWaitMs` (0 = no limit);
 * - `queue`: like `wait`, but a call finding `maxQueueSize` calls already waiting is rejected at once
 *   (`queue_full`).
 * A waiter whose AbortSignal fires leaves the queue and is rejected (`aborted`); so is a call that would
 * have to wait with a signal that has already fired. Strictly FIFO: while anyone waits, a newcomer never
 * takes a token ahead of them. One timer serves the whole queue: it is armed for its head (the head's
 * permit or its max-wait deadline, whichever comes first; deadlines grow along the queue).
 *
 * Every waiter reserves its token when it joins (`TokenBucket.reserve`: the level goes below zero by the
 * queue's length): each token is consumed at the exact (fractional) moment it exists, and its waiter
 * goes when the timer fires, at most one timer tick later. Taking tokens only when the timer fires would
 * lose the refill of that late fraction of a millisecond to the bucket's cap whenever `burst` is small
 * (the limiter would serve below its rate). The price: a
 * granted call can be up to one tick (1 ms) later than its token, so grant times obey
 * `burst + rate × (T + 1 ms)` rather than `burst + rate × T`. A waiter that leaves without its permit
 * (abort, max wait) gives its token back.
 *
 * Hand-written: cockatiel has no rate limiter.
 */
import type { Event } from 'cockatiel';
import type { RateLimitSettings } from '../config/types.ts';
import { RateLimitedError } from '../errors.ts';
import { type Clock, keepAlive, realClock } from './clock.ts';
import {
  type OperationKind,
  type RateLimitQueueEvent,
  type RateLimitRejectedEvent,
  type RateLimitWaitEvent,
  SafeEventEmitter,
} from './events.ts';
import { TokenBucket } from './token-bucket.ts';

/**
 * Where the limiter's permits come from: a `TokenBucket` (per process), or a fleet-wide bucket
 * (src/coordination/fleet-bucket.ts) whose permits arrive in batches: `onRefill` then wakes the queue.
 */
export interface PermitBucket {
  readonly tokens: number;
  tryTake(n?: number): boolean;
  msUntil(n?: number): number;
  reserve(n?: number): void;
  refund(n?: number): void;
  onRefill?(listener: () => void): void;
  dispose?(): void;
}

/** A queued call: a node of the FIFO (a doubly linked list, so an abort leaves it in O(1)). */
interface Waiter {
  readonly operation: OperationKind;
  readonly enqueuedAt: number;
  /** Epoch ms after which it is rejected with `max_wait` (Infinity: no limit). */
  readonly deadline: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  readonly signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  prev: Waiter | undefined;
  next: Waiter | undefined;
  queued: boolean;
}

export class RateLimiter {
  readonly target: string;
  readonly #enabled: boolean;
  readonly #strategy: RateLimitSettings['strategy'];
  readonly #maxQueueSize: number;
  readonly #maxWaitMs: number;
  readonly #clock: Clock;
  readonly #bucket: PermitBucket;
  readonly #wait = new SafeEventEmitter<RateLimitWaitEvent>();
  readonly #rejected = new SafeEventEmitter<RateLimitRejectedEvent>();
  readonly #queueSize = new SafeEventEmitter<RateLimitQueueEvent>();

  #head: Waiter | undefined;
  #tail: Waiter | undefined;
  #size = 0;
  #timer: unknown;
  #disposed = false;

  /** A call got its permit after waiting (not emitted for calls served at once). */
  readonly onWait: Event<RateLimitWaitEvent> = this.#wait.addListener;
  /** A call was refused a permit: `drop`, `queue_full`, `max_wait` or `aborted`. */
  readonly onRejected: Event<RateLimitRejectedEvent> = this.#rejected.addListener;
  /** The number of waiting calls changed. */
  readonly onQueueSize: Event<RateLimitQueueEvent> = this.#queueSize.addListener;

  constructor(settings: RateLimitSettings, target: string, clock: Clock = realClock, bucket?: PermitBucket) {
    this.target = target;
    this.#enabled = settings.enabled;
    this.#strategy = settings.strategy;
    this.#maxQueueSize = Math.max(0, settings.maxQueueSize);
    this.#maxWaitMs = Math.max(0, settings.maxWaitMs);
    this.#clock = clock;
    // A bucket smaller than one token would never grant anything.
    this.#bucket = bucket ?? new TokenBucket(settings.ratePerMinute, Math.max(1, settings.burst), clock);
    // Permits that arrive in a batch serve the queue's head at once, not when its timer fires.
    this.#bucket.onRefill?.(() => {
      if (this.#disposed || !this.#head) return;
      this.#clearTimer();
      this.#drain();
    });
  }

  /** Calls waiting for a permit now. */
  get queueSize(): number {
    return this.#size;
  }

  /** Tokens free now (fractional; 0 while the queue's head is still owed its reserved token). */
  get tokens(): number {
    return Math.max(0, this.#bucket.tokens);
  }

  /**
   * Takes a permit for one call. Returns `undefined` (synchronously, allocating nothing) when the permit
   * was taken at once, or when the limiter is disabled or disposed; otherwise a promise that resolves
   * when the call may go, or rejects with `RateLimitedError`. Never throws.
   */
  acquire(operation: OperationKind, signal?: AbortSignal): Promise<void> | undefined {
    if (!this.#enabled || this.#disposed) return undefined;
    if (this.#size === 0 && this.#bucket.tryTake()) return undefined;
    return this.#slow(operation, signal);
  }

  /** Lets every waiter through (no call hangs), stops the timer; later calls pass unlimited. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#clearTimer();
    this.#bucket.dispose?.();
    const hadWaiters = this.#size > 0;
    for (let w = this.#head; w; w = w.next) {
      w.queued = false;
      this.#unlisten(w);
      w.resolve();
    }
    this.#head = this.#tail = undefined;
    this.#size = 0;
    if (hadWaiters) this.#emitSize();
  }

  #slow(operation: OperationKind, signal: AbortSignal | undefined): Promise<void> {
    if (this.#strategy === 'drop') return this.#refuse(operation, 'drop', this.#retryAfter());
    if (this.#strategy === 'queue' && this.#size >= this.#maxQueueSize) {
      return this.#refuse(operation, 'queue_full', this.#retryAfter());
    }
    if (signal?.aborted) return this.#refuse(operation, 'aborted', this.#retryAfter());
    return new Promise<void>((resolve, reject) => {
      const now = this.#clock.now();
      const waiter: Waiter = {
        operation,
        enqueuedAt: now,
        deadline: this.#maxWaitMs > 0 ? now + this.#maxWaitMs : Number.POSITIVE_INFINITY,
        resolve,
        reject,
        signal,
        onAbort: undefined,
        prev: this.#tail,
        next: undefined,
        queued: true,
      };
      if (signal) {
        waiter.onAbort = () => this.#abort(waiter);
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      if (this.#tail) this.#tail.next = waiter;
      else this.#head = waiter;
      this.#tail = waiter;
      this.#size++;
      this.#bucket.reserve(1);
      this.#emitSize();
      this.#arm(now);
    });
  }

  #refuse(
    operation: OperationKind,
    reason: RateLimitedError['reason'],
    retryAfterMs: number,
  ): Promise<never> {
    this.#rejected.emit({ target: this.target, operation, reason });
    return Promise.reject(new RateLimitedError(this.target, reason, retryAfterMs));
  }

  /** The queue's timer fired: serve heads whose token is there, expire heads past their deadline. */
  #drain(): void {
    this.#timer = undefined;
    if (this.#disposed) return;
    const now = this.#clock.now();
    for (let head = this.#head; head; head = this.#head) {
      if (this.#headDueIn() === 0) {
        this.#remove(head);
        head.resolve();
        this.#wait.emit({ target: this.target, operation: head.operation, waitedMs: now - head.enqueuedAt });
        this.#emitSize();
      } else if (head.deadline <= now) {
        this.#leave(head, 'max_wait');
      } else {
        break;
      }
    }
    this.#arm(now);
  }

  #abort(waiter: Waiter): void {
    if (!waiter.queued) return;
    // Giving its token back moves nobody's turn earlier or later: the timer stays right.
    this.#leave(waiter, 'aborted');
    if (this.#size === 0) this.#clearTimer();
  }

  /** A waiter leaves without its permit: it gives its reserved token back, is rejected, and we tell. */
  #leave(waiter: Waiter, reason: 'max_wait' | 'aborted'): void {
    this.#remove(waiter);
    this.#bucket.refund(1);
    waiter.reject(new RateLimitedError(this.target, reason, this.#retryAfter()));
    this.#rejected.emit({ target: this.target, operation: waiter.operation, reason });
    this.#emitSize();
  }

  /**
   * Ms until the head's token exists. All `size` waiters hold a reservation, so the head's is paid when
   * the level is back at -(size - 1).
   */
  #headDueIn(): number {
    return this.#bucket.msUntil(1 - this.#size);
  }

  /** Arms the queue's single timer for the head, if there is a head and no timer. */
  #arm(now: number): void {
    const head = this.#head;
    if (!head || this.#timer !== undefined) return;
    const delay = Math.ceil(Math.min(this.#headDueIn(), head.deadline - now));
    // No token will ever come and no deadline: wait for an abort or dispose().
    if (!Number.isFinite(delay)) return;
    this.#timer = this.#clock.setTimeout(() => this.#drain(), Math.max(1, delay));
    // Ref'd: a caller awaits the head, and nothing else may hold the process (an idle pool with
    // allowExitOnIdle, a fleet bucket waiting on an unref'd Redis socket) while it waits.
    keepAlive(this.#timer);
  }

  #remove(w: Waiter): void {
    w.queued = false;
    if (w.prev) w.prev.next = w.next;
    else this.#head = w.next;
    if (w.next) w.next.prev = w.prev;
    else this.#tail = w.prev;
    w.prev = w.next = undefined;
    this.#size--;
    this.#unlisten(w);
  }

  #unlisten(w: Waiter): void {
    if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
    w.onAbort = undefined;
  }

  /** Expected ms until a call arriving now would get a permit (a hint): the queue's tokens are reserved already. */
  #retryAfter(): number {
    return this.#bucket.msUntil(1);
  }

  #emitSize(): void {
    this.#queueSize.emit({ target: this.target, size: this.#size });
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      this.#clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }
}
