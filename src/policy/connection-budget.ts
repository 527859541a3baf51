/**
 * `ConnectionBudget`: the slots of one target's connection budget in this process. Every new server
 * connection (pool or standalone) takes a slot before it opens and gives it back when it ends
 * (instrumentation/budget-connect.ts). A connect that finds no free slot waits, first come first
 * served, until a slot is given back or its bound passes (then ConnectionBudgetExhaustedError).
 *
 * How many slots this process may hold comes from a `SlotSource`: the configured budget itself (no
 * Redis: the budget is per process), or the slots leased from Redis for the whole fleet
 * (coordination/fleet-slots.ts). When the source's capacity drops below the slots held (the fleet needs
 * them back), `onSurplus` asks for idle connections to be closed; nothing already in use is cut.
 */
import type { Event } from 'cockatiel';
import { ConnectionBudgetExhaustedError } from '../errors.ts';
import { type Clock, keepAlive, realClock } from './clock.ts';
import { SafeEventEmitter } from './events.ts';

/** Where the capacity comes from. */
export interface SlotSource {
  readonly scope: 'process' | 'fleet';
  /** Slots this process may hold now. */
  capacity(): number;
  /** The budget's demand changed: slots held and connects waiting. */
  demand(held: number, waiting: number): void;
  /** The capacity may have changed. */
  onChange(listener: () => void): void;
  dispose(): void;
}

/** The configured budget, per process. */
export class LocalSlots implements SlotSource {
  readonly scope = 'process';
  readonly #max: number;
  constructor(max: number) {
    this.#max = max;
  }
  capacity(): number {
    return this.#max;
  }
  demand(): void {}
  onChange(): void {}
  dispose(): void {}
}

/** A connect waited for a slot: it got one (`acquired`) or its bound passed (`exhausted`). */
export interface BudgetWaitEvent {
  readonly target: string;
  readonly waitedMs: number;
  readonly outcome: 'acquired' | 'exhausted';
}

/** Gives a slot back; calling it again does nothing. */
export type ReleaseSlot = () => void;

interface Waiter {
  readonly since: number;
  readonly resolve: (release: ReleaseSlot) => void;
  readonly reject: (error: Error) => void;
  timer: unknown;
}

export class ConnectionBudget {
  readonly target: string;
  readonly maxConnections: number;
  readonly #source: SlotSource;
  readonly #clock: Clock;
  #held = 0;
  readonly #waiters: Waiter[] = [];
  #disposed = false;
  readonly #wait = new SafeEventEmitter<BudgetWaitEvent>();
  readonly #surplus = new SafeEventEmitter<number>();
  /** A connect waited for a slot. */
  readonly onWait: Event<BudgetWaitEvent> = this.#wait.addListener;
  /** More slots are held than the capacity allows: close this many idle connections. */
  readonly onSurplus: Event<number> = this.#surplus.addListener;

  constructor(target: string, maxConnections: number, source?: SlotSource, clock: Clock = realClock) {
    this.target = target;
    this.maxConnections = maxConnections;
    this.#source = source ?? new LocalSlots(maxConnections);
    this.#clock = clock;
    this.#source.onChange(() => this.#pump(true));
  }

  /** `process` or `fleet`. */
  get scope(): 'process' | 'fleet' {
    return this.#source.scope;
  }

  /** Slots held by open (or opening) connections. */
  get held(): number {
    return this.#held;
  }

  /** Connects waiting for a slot. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Slots this process may hold now. */
  get capacity(): number {
    return this.#source.capacity();
  }

  /** A slot at once, or undefined when none is free or others already wait (FIFO). */
  tryAcquire(): ReleaseSlot | undefined {
    if (this.#waiters.length > 0 || this.#held >= this.#source.capacity()) return undefined;
    return this.#take();
  }

  /** A slot, waiting up to `boundMs` (0: no bound) for one. */
  acquire(boundMs: number): Promise<ReleaseSlot> {
    const now = this.#clock.now();
    const got = this.tryAcquire();
    if (got) return Promise.resolve(got);
    return new Promise<ReleaseSlot>((resolve, reject) => {
      const waiter: Waiter = { since: now, resolve, reject, timer: undefined };
      if (boundMs > 0) {
        waiter.timer = this.#clock.setTimeout(() => {
          const i = this.#waiters.indexOf(waiter);
          if (i < 0) return;
          this.#waiters.splice(i, 1);
          const waitedMs = this.#clock.now() - waiter.since;
          this.#wait.emit({ target: this.target, waitedMs, outcome: 'exhausted' });
          reject(new ConnectionBudgetExhaustedError(this.target, this.maxConnections, this.scope, waitedMs));
          this.#source.demand(this.#held, this.#waiters.length);
        }, boundMs);
        // A connect waiting for a slot keeps the process alive until it is answered.
        keepAlive(waiter.timer);
      }
      this.#waiters.push(waiter);
      this.#source.demand(this.#held, this.#waiters.length);
      // The source may have granted more on that demand synchronously.
      this.#pump();
    });
  }

  /** Stops the source; waiting connects keep waiting for their bound. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#source.dispose();
  }

  #take(): ReleaseSlot {
    this.#held++;
    this.#source.demand(this.#held, this.#waiters.length);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#held--;
      this.#source.demand(this.#held, this.#waiters.length);
      this.#pump();
    };
  }

  /** Hands free slots to waiters in arrival order; after a capacity change, reports a surplus. */
  #pump(capacityChanged = false): void {
    // Read each time: taking a slot may change the capacity (a lease sent to Redis).
    while (this.#waiters.length > 0 && this.#held < this.#source.capacity()) {
      const waiter = this.#waiters.shift()!;
      this.#clock.clearTimeout(waiter.timer);
      this.#wait.emit({
        target: this.target,
        waitedMs: this.#clock.now() - waiter.since,
        outcome: 'acquired',
      });
      waiter.resolve(this.#take());
    }
    const capacity = this.#source.capacity();
    if (capacityChanged && this.#held > capacity) this.#surplus.emit(this.#held - capacity);
  }
}
