/**
 * The fleet-wide connection budget of one target, as seen by one process: a `SlotSource` whose
 * capacity is the slots this process leased from Redis (LEASE_SLOTS in scripts.ts). The lease records
 * the slots the process holds and wants, and expires unless renewed: a process that dies, even killed,
 * gives its slots back within one lease period.
 *
 * - Fleet mode: a connect that finds every leased slot in use asks Redis for more (the slots held and
 *   waited for, plus a few ahead so the next connects need no round trip); slots leased but unused
 *   beyond that are given back. While connects wait, Redis is asked again every ~50 ms (jittered), so
 *   slots freed elsewhere (a process that ended connections, or died) are found quickly. The lease is
 *   renewed every third of `leaseMs`. When another process wants more than it holds, this one is
 *   granted at most its fair share (budget / processes holding slots), and connections above it are
 *   closed when idle (ConnectionBudget.onSurplus).
 * - A lease that fails (Redis down or slower than the coordination timeout) changes nothing while the
 *   last granted lease is still valid in Redis (one lease period from when it was asked for): the
 *   others cannot take those slots meanwhile (the failed lease's outcome is unknown, so only the slots
 *   held when it was sent stay usable). Past it, the capacity is the process's share (fallback),
 *   budget / live members last seen, until a lease succeeds again. Before any lease succeeded, connects
 *   wait for one up to one lease period from start (so a fleet starting together, or a busy start-up
 *   that misses the coordination timeout, does not open the whole budget in every process), then the
 *   share applies.
 */
import type { Clock } from '../policy/clock.ts';
import type { SlotSource } from '../policy/connection-budget.ts';
import type { FleetCoordinator } from './coordinator.ts';

/** Pause between two lease requests while connects wait for a slot. */
const POLL_MS = 50;

export class FleetSlots implements SlotSource {
  readonly scope = 'fleet';
  readonly #coordinator: FleetCoordinator;
  readonly #key: string;
  readonly #max: number;
  readonly #clock: Clock;
  readonly #startedAt: number;
  /** Slots granted by the last lease that succeeded. */
  #granted = 0;
  /** Until when that lease holds in Redis (local time it was asked for + leaseMs). */
  #validUntil = Number.NEGATIVE_INFINITY;
  /** A lease was attempted and failed since the last success (or before any). */
  #failed = false;
  /** The process's share when leases started failing (budget / members then). */
  #shareWhenFailed = 0;
  /** Until when, after leases resumed, this process asks for no more than that share. */
  #resumeUntil = Number.NEGATIVE_INFINITY;
  #held = 0;
  #waiting = 0;
  #inFlight = false;
  /** The slots held when the lease in flight was sent. */
  #sentHold = 0;
  #again = false;
  #timer: unknown;
  #timerAt = Number.POSITIVE_INFINITY;
  #disposed = false;
  readonly #listeners: Array<() => void> = [];

  constructor(coordinator: FleetCoordinator, key: string, maxConnections: number, clock: Clock) {
    this.#coordinator = coordinator;
    this.#key = key;
    this.#max = maxConnections;
    this.#clock = clock;
    this.#startedAt = clock.now();
  }

  capacity(): number {
    // While a lease is in flight Redis may record as few as the slots held when it was sent: no more
    // are taken until it answers (so this process never holds more than Redis counts for it).
    if (this.#leased()) return this.#inFlight ? Math.min(this.#granted, this.#sentHold) : this.#granted;
    // Never asked, or asking: the connect waits for Redis's answer (bounded by the coordination timeout).
    if (!this.#failed) return 0;
    return this.fallbackShare();
  }

  /** The process's share without a valid lease: budget / live members (0 before any lease succeeded, for one lease period from start). */
  fallbackShare(): number {
    if (this.#neverLeased() && this.#clock.now() - this.#startedAt < this.#leaseMs()) return 0;
    return Math.max(1, Math.floor(this.#max / this.#coordinator.members));
  }

  demand(held: number, waiting: number): void {
    this.#held = held;
    this.#waiting = waiting;
    const need = held + waiting;
    if (!this.#leased()) {
      // No valid lease: ask now when someone waits, else at the next renewal.
      if (waiting > 0) this.#lease();
      else this.#schedule(this.#renewEveryMs());
      return;
    }
    if (need > this.#granted || this.#granted - need > 2 * this.#ahead()) this.#lease();
    else this.#schedule(this.#renewEveryMs());
  }

  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#coordinator.release(this);
  }

  #neverLeased(): boolean {
    return this.#validUntil === Number.NEGATIVE_INFINITY;
  }

  #leased(): boolean {
    return this.#clock.now() < this.#validUntil;
  }

  #leaseMs(): number {
    return this.#coordinator.settings.leaseMs;
  }

  /** Slots asked for beyond the need: about a quarter of the process's share, at least 1. */
  #ahead(): number {
    return Math.max(1, Math.floor(this.#max / this.#coordinator.members / 4));
  }

  #renewEveryMs(): number {
    return this.#failed ? Math.min(250, this.#leaseMs() / 3) : this.#leaseMs() / 3;
  }

  #changed(): void {
    for (const l of this.#listeners) l();
  }

  #lease(): void {
    if (this.#disposed) return;
    if (this.#inFlight) {
      this.#again = true;
      return;
    }
    this.#inFlight = true;
    this.#again = false;
    const askedAt = this.#clock.now();
    // After a failure Redis may hold what an unanswered request recorded: asking again for at least the
    // slots still usable keeps them usable whatever the outcome.
    const hold = this.#failed ? Math.max(this.#held, this.#granted) : this.#held;
    this.#sentHold = hold;
    const need = this.#held + this.#waiting;
    let want = need > 0 ? Math.min(this.#max, need + this.#ahead()) : 0;
    // Resuming (a restarted Redis is empty, the others not yet back in it): no more than the share
    // each process held in fallback, for one lease period, so the first back cannot take the whole budget.
    if (this.#failed || askedAt < this.#resumeUntil)
      want = Math.min(want, Math.max(hold, this.#shareWhenFailed));
    void this.#coordinator.leaseSlots(this.#key, this.#max, hold, Math.max(want, hold)).then((granted) => {
      this.#inFlight = false;
      if (this.#disposed) return;
      if (granted === undefined) {
        // Unknown outcome (a late answer may have been applied): Redis counts at least the slots held
        // when it was sent, perhaps no more, so no more than that are used on the old lease.
        if (!this.#failed)
          this.#shareWhenFailed = Math.max(1, Math.floor(this.#max / this.#coordinator.members));
        this.#failed = true;
        this.#granted = Math.min(this.#granted, this.#sentHold);
      } else {
        if (this.#failed) this.#resumeUntil = askedAt + this.#leaseMs();
        this.#failed = false;
        this.#granted = granted;
        this.#validUntil = askedAt + this.#leaseMs();
      }
      this.#changed();
      const short = this.#waiting > 0 && this.capacity() < this.#held + this.#waiting;
      if (this.#again && !short) this.#lease();
      else if (short) this.#schedule(POLL_MS * (0.5 + Math.random()));
      else this.#schedule(this.#renewEveryMs());
      if (granted === undefined) {
        // The capacity changes when the old lease runs out, and when the start-up wait for Redis ends.
        const now = this.#clock.now();
        if (this.#validUntil > now) this.#schedule(this.#validUntil - now + 1);
        const startWait = this.#startedAt + this.#leaseMs() - now;
        if (this.#neverLeased() && startWait > 0) this.#schedule(startWait + 1);
      }
    });
  }

  /** Renews (or asks again) in `ms`, unless something already runs sooner. */
  #schedule(ms: number): void {
    if (this.#disposed) return;
    const at = this.#clock.now() + ms;
    if (this.#timer !== undefined && this.#timerAt <= at) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = this.#clock.setTimeout(
      () => {
        this.#timer = undefined;
        this.#timerAt = Number.POSITIVE_INFINITY;
        // Nothing held or wanted, and the lease recorded nothing: no lease to keep.
        if (this.#held + this.#waiting === 0 && (this.#granted === 0 || !this.#leased())) {
          this.#changed();
          return;
        }
        this.#lease();
      },
      Math.max(1, ms),
    );
  }
}
