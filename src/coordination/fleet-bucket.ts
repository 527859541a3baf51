/**
 * A fleet-wide token bucket, as seen by one process: the same interface as `TokenBucket`, so the rate
 * limiter's FIFO, wait, drop and queue work unchanged. The bucket itself lives in Redis (capacity
 * `burst`, refilled at `ratePerMinute`, TAKE_PERMITS in scripts.ts); this process holds a small local
 * stash of permits taken from it in batches, so a call never waits for Redis when the stash has one.
 *
 * - Fleet mode: the stash is topped up in the background when it falls below half a batch (one Redis
 *   command in flight at a time). A batch is the fleet's rate over ~100 ms divided by the live members
 *   (at least 1, at most the burst's share). Every permit granted anywhere came out of the one bucket in
 *   Redis, so fleet-wide grants never exceed `burst + rate × t` plus what the stashes held.
 * - Fallback mode (Redis down or slower than the coordination timeout): the stash refills locally at
 *   the process's share, `rate / members` with a capacity of `burst / members` (members last seen).
 *   Permits left from fallback are dropped when the fleet resumes.
 * - Starting: until Redis first answered, and for at most the coordination timeout after the bucket was
 *   made, nothing is granted locally (calls wait for the first batch). A process that has never heard
 *   from Redis knows of no other member, so its fallback share would be the whole limit: without this
 *   wait, every process starting together would spend a burst of its own.
 */
import type { RateLimitSettings } from '../config/types.ts';
import type { Clock } from '../policy/clock.ts';
import type { PermitBucket } from '../policy/rate-limiter.ts';
import type { FleetCoordinator } from './coordinator.ts';

/** The stash aims to hold about this much of the process's share of the rate. */
const BATCH_MS = 100;
/** Shortest pause between two commands when Redis had fewer permits than asked for. */
const MIN_POLL_MS = 5;

export class FleetBucket implements PermitBucket {
  readonly capacity: number;
  readonly ratePerMinute: number;
  readonly #coordinator: FleetCoordinator;
  readonly #key: string;
  readonly #clock: Clock;
  readonly #ratePerMs: number;
  /** Local permits; below zero while reserved permits are owed to waiters. */
  #level = 0;
  #refilledAt: number;
  #wasFleet = true;
  #inFlight = false;
  #nextFetchAt = 0;
  #timer: unknown;
  #disposed = false;
  /** Until then, while Redis has never answered, nothing is granted locally (see "Starting" above). */
  readonly #startUntil: number;
  readonly #listeners: Array<() => void> = [];

  constructor(coordinator: FleetCoordinator, key: string, settings: RateLimitSettings, clock: Clock) {
    this.#coordinator = coordinator;
    this.#key = key;
    this.#clock = clock;
    this.capacity = Math.max(1, settings.burst);
    this.ratePerMinute = Math.max(0, settings.ratePerMinute);
    this.#ratePerMs = this.ratePerMinute / 60_000;
    this.#refilledAt = clock.now();
    this.#startUntil = this.#refilledAt + coordinator.settings.timeoutMs;
    this.#fetch();
  }

  get tokens(): number {
    this.#refill();
    return this.#level;
  }

  tryTake(n = 1): boolean {
    this.#refill();
    const ok = this.#level >= n;
    if (ok) this.#level -= n;
    this.#fetch();
    return ok;
  }

  msUntil(n = 1): number {
    this.#refill();
    const missing = n - this.#level;
    if (missing <= 0) return 0;
    this.#fetch();
    const starting = this.#startingFor();
    if (starting > 0) return starting;
    const share = this.#ratePerMs / this.#coordinator.members;
    if (share === 0) return Number.POSITIVE_INFINITY;
    // In fleet mode an estimate: a batch arriving sooner wakes the limiter (onRefill).
    return Math.max(1, missing / share);
  }

  reserve(n = 1): void {
    this.#refill();
    this.#level -= n;
    this.#fetch();
  }

  refund(n = 1): void {
    this.#refill();
    this.#level += n;
  }

  onRefill(listener: () => void): void {
    this.#listeners.push(listener);
  }

  /** The fleet is back (or answered for the first time): ask Redis now, not at the next fallback poll. */
  resume(): void {
    if (this.#disposed) return;
    this.#nextFetchAt = 0;
    this.#fetch();
  }

  dispose(): void {
    this.#disposed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#coordinator.release(this);
  }

  /** The process's batch: its share of ~100 ms of the rate, within its share of the burst. */
  get #batch(): number {
    const members = this.#coordinator.members;
    const byRate = Math.ceil((this.#ratePerMs * BATCH_MS) / members);
    return Math.max(1, Math.min(byRate, Math.floor(this.capacity / members)));
  }

  #refill(): void {
    const now = this.#clock.now();
    const elapsed = now - this.#refilledAt;
    this.#refilledAt = now;
    const fleet = this.#coordinator.mode === 'fleet';
    if (fleet) {
      // Back to the fleet: permits from the local fallback were never taken from Redis.
      if (!this.#wasFleet && this.#level > 0) this.#level = 0;
      this.#wasFleet = true;
      return;
    }
    this.#wasFleet = false;
    if (this.#startingFor() > 0) return;
    const members = this.#coordinator.members;
    const cap = Math.max(1, this.capacity / members);
    if (elapsed > 0 && this.#level < cap) {
      this.#level = Math.min(cap, this.#level + (elapsed * this.#ratePerMs) / members);
    }
  }

  /** Ms left of the start wait: Redis has never answered and the wait has not run out (else 0). */
  #startingFor(): number {
    if (this.#coordinator.contacted) return 0;
    return Math.max(0, this.#startUntil - this.#clock.now());
  }

  /** Tops the stash up from Redis when it is low (at most one command in flight). */
  #fetch(): void {
    if (this.#disposed || this.#inFlight) return;
    const batch = this.#batch;
    if (this.#level >= batch / 2) return;
    const now = this.#clock.now();
    if (now < this.#nextFetchAt) {
      this.#schedule(this.#nextFetchAt - now);
      return;
    }
    const want = Math.min(Math.max(this.capacity, batch), Math.ceil(batch - Math.min(0, this.#level)));
    this.#inFlight = true;
    void this.#coordinator.take(this.#key, this.#ratePerMs, this.capacity, want).then((granted) => {
      this.#inFlight = false;
      if (this.#disposed) return;
      this.#refill();
      const at = this.#clock.now();
      if (granted === undefined) {
        // Fallback: the local share serves; try Redis again once the renewal has seen it answer.
        this.#nextFetchAt = at + Math.min(250, this.#coordinator.settings.leaseMs / 3);
      } else {
        this.#level += granted;
        const short = want - granted;
        // Redis had fewer than asked: come back when the fleet's refill could cover the rest (jittered,
        // so the members do not ask in lockstep).
        this.#nextFetchAt =
          short > 0 && this.#ratePerMs > 0
            ? at + Math.max(MIN_POLL_MS, (Math.min(short, batch) / this.#ratePerMs) * (0.5 + Math.random()))
            : at;
      }
      if (granted !== undefined && granted > 0) for (const l of this.#listeners) l();
      // Waiters are owed permits: keep fetching without waiting for a new call.
      if (this.#level < 0 || (granted === undefined && this.#level < 1)) this.#fetch();
    });
  }

  #schedule(ms: number): void {
    if (this.#timer !== undefined || this.#disposed) return;
    this.#timer = this.#clock.setTimeout(
      () => {
        this.#timer = undefined;
        this.#fetch();
      },
      Math.max(1, ms),
    );
  }
}
