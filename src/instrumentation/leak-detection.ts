/**
 * Leak detection for clients the app checks out with `pool.connect()` (in the manner of HikariCP's
 * `leakDetectionThreshold`). Clients pg-pool checks out for its own `Pool.query`, and the package's own
 * `withTransaction` checkouts, release themselves and are not watched.
 *
 * Two findings, each reported once per checkout (`onLeak`), with the stack of the `pool.connect()` call:
 * - `dead_not_released` (certain): the client's connection ended (killed, lost) and the client is still
 *   not released `deadGraceMs` later. Nothing can be done with such a client but release it.
 * - `held_too_long` (suspected; off unless `idleThresholdMs` is set): the client has been checked out
 *   and idle for `idleThresholdMs`. Idle means no statement running or queued: a long report query, an
 *   open cursor, or a statement waiting on a lock is never idle, so it never counts. A client with a
 *   `notification` listener (LISTEN) is held on purpose and is exempt.
 *
 * Cost per checkout: one stack capture (V8 formats the text only when a finding reads it), one record
 * and a wrapper on that checkout's `release`. Per client (once): an 'end' and a 'drain' listener, which
 * change nothing for pg (it never counts them). One unref'd timer for the whole detector, armed for the
 * earliest moment a finding could be due, and only while clients are checked out.
 */
import type { Event } from 'cockatiel';
import type { LeakDetectionSettings } from '../config/types.ts';
import { type Clock, realClock } from '../policy/clock.ts';
import { SafeEventEmitter } from '../policy/events.ts';

export const LEAK_REASONS = ['held_too_long', 'dead_not_released'] as const;
export type LeakReason = (typeof LEAK_REASONS)[number];

export interface LeakEvent {
  readonly target: string;
  readonly reason: LeakReason;
  /** How long the client has been checked out, in ms. */
  readonly heldMs: number;
  /** held_too_long: how long it has been idle; dead_not_released: how long since its connection ended. */
  readonly forMs: number;
  /** The stack of the `pool.connect()` call that checked the client out (without its first line). */
  readonly stack: string;
}

/** What the detector reads of a pg Client (internals differ across pg 8.x: both spellings are read). */
interface WatchedClient {
  release?: unknown;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  listenerCount(event: string): number;
  _ended?: boolean;
  _activeQuery?: unknown;
  _queryQueue?: readonly unknown[];
  _sentQueryQueue?: readonly unknown[];
  activeQuery?: unknown;
  queryQueue?: readonly unknown[];
}

/** One `pool.connect()` call, from the call to the release of the client it got. */
export interface Checkout {
  readonly target: string;
  readonly settings: LeakDetectionSettings;
  /** Holds the call's stack; `.stack` is formatted on first read. */
  readonly site: { stack?: string };
  client?: WatchedClient;
  heldAt: number;
  /** When the client last became idle (checked out, or its last statement finished). */
  idleSince: number;
  /** When its connection ended, if it did while checked out. */
  deadAt?: number;
  reported?: LeakReason;
}

/** A checkout whose finding is due at `now`, or undefined. */
export function leakFinding(c: Checkout, now: number): LeakReason | undefined {
  if (c.client === undefined || c.reported !== undefined) return undefined;
  if (c.deadAt !== undefined) {
    return now - c.deadAt >= c.settings.deadGraceMs ? 'dead_not_released' : undefined;
  }
  const threshold = c.settings.idleThresholdMs;
  if (threshold <= 0 || busy(c.client) || c.client.listenerCount('notification') > 0) return undefined;
  return now - c.idleSince >= threshold ? 'held_too_long' : undefined;
}

/** The earliest time a finding about `c` could be due (checked again then). */
function dueAt(c: Checkout, now: number): number {
  if (c.reported !== undefined) return Infinity;
  if (c.deadAt !== undefined) return c.deadAt + c.settings.deadGraceMs;
  const threshold = c.settings.idleThresholdMs;
  if (threshold <= 0) return Infinity;
  // Busy now: it can be idle for the threshold at the earliest once it finishes (now, at best).
  return c.client !== undefined && busy(c.client) ? now + threshold : c.idleSince + threshold;
}

/** A statement running, queued or (pipeline mode) sent and unanswered. */
function busy(client: WatchedClient): boolean {
  const active = '_activeQuery' in client ? client._activeQuery : client.activeQuery;
  const queue = '_queryQueue' in client ? client._queryQueue : client.queryQueue;
  return active != null || (queue?.length ?? 0) > 0 || (client._sentQueryQueue?.length ?? 0) > 0;
}

/** The stack's frames, without the `Error` line. */
function frames(site: { stack?: string }): string {
  const stack = site.stack ?? '';
  const newline = stack.indexOf('\n');
  return newline < 0 ? '' : stack.slice(newline + 1);
}

export class LeakDetector {
  readonly #clock: Clock;
  readonly #checkouts = new Set<Checkout>();
  /** The current checkout of each client seen (the client's listeners look it up here). */
  readonly #current = new WeakMap<object, Checkout | undefined>();
  readonly #leak = new SafeEventEmitter<LeakEvent>();
  #timer: unknown;
  #timerAt = Infinity;
  #disposed = false;

  /** A leak found: once per checkout. */
  readonly onLeak: Event<LeakEvent> = this.#leak.addListener;

  constructor(clock: Clock = realClock) {
    this.#clock = clock;
  }

  /**
   * A `pool.connect()` call is starting: its stack is captured now (below `caller`, the patched connect).
   * Undefined when leak detection is off for this target.
   */
  checkout(
    policy: { readonly target: string; readonly settings: { readonly leakDetection: LeakDetectionSettings } },
    caller: (...args: never[]) => unknown,
  ): Checkout | undefined {
    const {
      target,
      settings: { leakDetection: settings },
    } = policy;
    if (!settings.enabled || this.#disposed) return undefined;
    const site: { stack?: string } = {};
    Error.captureStackTrace(site, caller);
    const now = this.#clock.now();
    return { target, settings, site, heldAt: now, idleSince: now };
  }

  /**
   * The operation of a checkout, watched: the client is watched from the moment the app gets it, before
   * the app's own reactions run. A chained promise, not a second reaction on `operation`: V8 follows a
   * promise with one reaction to the caller's async frames, so a rejection keeps them.
   */
  watch<T>(c: Checkout, operation: Promise<T>, callbackArgs: () => unknown[] | undefined): Promise<T> {
    return operation.then((client) => {
      this.held(c, client, callbackArgs());
      return client;
    });
  }

  /**
   * The call got its client: watch it until released. Runs before the caller sees the client.
   * `callbackArgs`: the callback form's `(err, client, done)`, whose `done` is the same release.
   */
  held(c: Checkout, client: unknown, callbackArgs?: unknown[]): void {
    if (this.#disposed || typeof client !== 'object' || client === null) return;
    const watched = client as WatchedClient;
    const release = watched.release;
    if (typeof release !== 'function') return;
    const now = this.#clock.now();
    c.client = watched;
    c.heldAt = now;
    c.idleSince = now;
    if (watched._ended === true) c.deadAt = now;
    if (!this.#current.has(watched)) this.#listen(watched);
    this.#current.set(watched, c);
    this.#checkouts.add(c);
    // pg-pool gives each checkout its own `release`; ours goes with it.
    const released = (): void => this.#released(c);
    const wrapped = function (this: unknown, ...args: unknown[]): unknown {
      released();
      // pg-pool's own again: a second call throws its "already released" error, as with bare pg.
      if (watched.release === wrapped) watched.release = release;
      return (release as (...a: unknown[]) => unknown).apply(this, args);
    };
    watched.release = wrapped;
    if (callbackArgs?.[1] === client && callbackArgs[2] === release) callbackArgs[2] = wrapped;
    this.#arm(dueAt(c, now));
  }

  /** Clients reported and still not released, per target. */
  leaked(): Map<string, number> {
    const out = new Map<string, number>();
    for (const c of this.#checkouts) {
      if (c.reported !== undefined) out.set(c.target, (out.get(c.target) ?? 0) + 1);
    }
    return out;
  }

  /** Checks every checkout now (the timer calls this; tests may too). */
  sweep(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = this.#clock.now();
    let next = Infinity;
    for (const c of this.#checkouts) {
      const reason = leakFinding(c, now);
      if (reason !== undefined) {
        c.reported = reason;
        this.#leak.emit({
          target: c.target,
          reason,
          heldMs: now - c.heldAt,
          forMs: now - (reason === 'dead_not_released' ? (c.deadAt ?? now) : c.idleSince),
          stack: frames(c.site),
        });
      }
      next = Math.min(next, dueAt(c, now));
    }
    this.#arm(next);
  }

  /** Stops watching: the timer is cleared, nothing more is reported. */
  dispose(): void {
    this.#disposed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#checkouts.clear();
  }

  #listen(client: WatchedClient): void {
    client.on('drain', () => {
      const c = this.#current.get(client);
      if (c !== undefined) c.idleSince = this.#clock.now();
    });
    client.on('end', () => {
      const c = this.#current.get(client);
      if (c === undefined || c.deadAt !== undefined) return;
      c.deadAt = this.#clock.now();
      this.#arm(c.deadAt + c.settings.deadGraceMs);
    });
  }

  #released(c: Checkout): void {
    if (!this.#checkouts.delete(c)) return;
    if (c.client !== undefined && this.#current.get(c.client) === c) this.#current.set(c.client, undefined);
  }

  /** Arms the one timer for `at`, unless it already fires earlier. */
  #arm(at: number): void {
    if (this.#disposed || at === Infinity || this.#checkouts.size === 0) return;
    if (this.#timer !== undefined) {
      if (this.#timerAt <= at) return;
      this.#clock.clearTimeout(this.#timer);
    }
    this.#timerAt = at;
    this.#timer = this.#clock.setTimeout(() => this.sweep(), Math.max(0, at - this.#clock.now()));
  }
}
