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
 * - Fallback (the last lease failed: Redis down or slower than the coordination timeout): the capacity
 *   is the process's share, budget / live members last seen. Before Redis ever answered, a connect
 *   waits for it up to one lease period from start (so a fleet starting together does not open the
 *   whole budget in every process), then the share applies.
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
  /** Slots granted by the last lease that succeeded; undefined while the last lease failed. */
  #granted: number | undefined;
  #held = 0;
  #waiting = 0;
  #inFlight = false;
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
    if (this.#granted !== undefined) return this.#granted;
    return this.fallbackShare();
  }

  /** The process's share while the lease is not known: budget / live members (0 while Redis was never reached, for one lease period). */
  fallbackShare(): number {
    if (
      !this.#coordinator.contacted &&
      this.#clock.now() - this.#startedAt < this.#coordinator.settings.leaseMs
    )
      return 0;
    return Math.max(1, Math.floor(this.#max / this.#coordinator.members));
  }

  demand(held: number, waiting: number): void {
    this.#held = held;
    this.#waiting = waiting;
    const granted = this.#granted;
    const need = held + waiting;
    if (granted === undefined) {
      // Not leased yet, or Redis failed: ask now when someone waits, else at the next renewal.
      if (waiting > 0) this.#lease();
      else this.#schedule(this.#renewEveryMs());
      return;
    }
    if (need > granted || granted - need > 2 * this.#ahead()) this.#lease();
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

  /** Slots asked for beyond the need: about a quarter of the process's share, at least 1. */
  #ahead(): number {
    return Math.max(1, Math.floor(this.#max / this.#coordinator.members / 4));
  }

  #renewEveryMs(): number {
    const lease = this.#coordinator.settings.leaseMs;
    return this.#granted === undefined ? Math.min(250, lease / 3) : lease / 3;
  }

  #lease(): void {
    if (this.#disposed) return;
    if (this.#inFlight) {
      this.#again = true;
      return;
    }
    this.#inFlight = true;
    this.#again = false;
    const hold = this.#held;
    const need = hold + this.#waiting;
    const want = need > 0 ? Math.min(this.#max, need + this.#ahead()) : 0;
    void this.#coordinator.leaseSlots(this.#key, this.#max, hold, Math.max(want, hold)).then((granted) => {
      this.#inFlight = false;
      if (this.#disposed) return;
      this.#granted = granted;
      for (const l of this.#listeners) l();
      const short = this.#waiting > 0 && (granted === undefined || granted < this.#held + this.#waiting);
      if (this.#again && !short) this.#lease();
      else if (short) this.#schedule(POLL_MS * (0.5 + Math.random()));
      else this.#schedule(this.#renewEveryMs());
      // Before Redis first answered, the fallback share starts one lease period after start.
      if (granted === undefined && !this.#coordinator.contacted) {
        const at = this.#startedAt + this.#coordinator.settings.leaseMs - this.#clock.now();
        if (at > 0) this.#schedule(at + 1);
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
        // Nothing held, wanted or leased: no lease to keep.
        if (this.#held + this.#waiting === 0 && !this.#granted) {
          for (const l of this.#listeners) l();
          return;
        }
        this.#lease();
      },
      Math.max(1, ms),
    );
  }
}
