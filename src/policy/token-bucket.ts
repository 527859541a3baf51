/**
 * A token bucket: holds at most `capacity` tokens, refills continuously (fractional tokens) at
 * `ratePerMinute / 60000` tokens per ms, starts full. Pure: it reads time from the clock it is given and
 * starts no timers. (cockatiel has no rate limiter; its PR #109 was closed unmerged.)
 *
 * Internally it counts in 1/60000 of a token, so that with an integer rate per minute and integer
 * millisecond clocks the arithmetic is exact (no drift from adding 0.001 a million times).
 */
import { type Clock, realClock } from './clock.ts';

const UNITS_PER_TOKEN = 60_000;

export class TokenBucket {
  readonly capacity: number;
  readonly ratePerMinute: number;
  readonly #clock: Pick<Clock, 'now'>;
  readonly #capacityUnits: number;
  /** Tokens × 60000. Refill adds `elapsed ms × ratePerMinute`. */
  #units: number;
  #refilledAt: number;

  constructor(ratePerMinute: number, capacity: number, clock: Pick<Clock, 'now'> = realClock) {
    this.capacity = Math.max(0, capacity);
    this.ratePerMinute = Math.max(0, ratePerMinute);
    this.#clock = clock;
    this.#capacityUnits = this.capacity * UNITS_PER_TOKEN;
    this.#units = this.#capacityUnits;
    this.#refilledAt = clock.now();
  }

  /** Tokens added per millisecond. */
  get ratePerMs(): number {
    return this.ratePerMinute / UNITS_PER_TOKEN;
  }

  /** Tokens available now (fractional; below zero while reserved tokens are owed). */
  get tokens(): number {
    this.#refill();
    return this.#units / UNITS_PER_TOKEN;
  }

  /** Takes `n` tokens if they are all there now; otherwise takes nothing. */
  tryTake(n = 1): boolean {
    this.#refill();
    const need = n * UNITS_PER_TOKEN;
    if (this.#units < need) return false;
    this.#units -= need;
    return true;
  }

  /**
   * Milliseconds until the level reaches `n` tokens (0 if it has; Infinity if it never will). `n` may be
   * 0 or negative to ask when a debt left by `reserve()` is (partly) paid back.
   */
  msUntil(n = 1): number {
    this.#refill();
    const missing = n * UNITS_PER_TOKEN - this.#units;
    if (missing <= 0) return 0;
    if (n > this.capacity || this.ratePerMinute === 0) return Number.POSITIVE_INFINITY;
    return missing / this.ratePerMinute;
  }

  /**
   * Takes `n` tokens now whether or not they are there: the level may go below zero, a debt that refill
   * pays back before anything else. A reserver is served the moment its tokens exist: none of the refill
   * it is owed can be lost to the cap, however late its timer fires.
   */
  reserve(n = 1): void {
    this.#refill();
    this.#units -= n * UNITS_PER_TOKEN;
  }

  /** Gives back `n` reserved tokens (a reserver that gave up), up to the capacity. */
  refund(n = 1): void {
    this.#refill();
    this.#units = Math.min(this.#capacityUnits, this.#units + n * UNITS_PER_TOKEN);
  }

  #refill(): void {
    const now = this.#clock.now();
    const elapsed = now - this.#refilledAt;
    if (elapsed === 0) return;
    this.#refilledAt = now;
    // A clock that steps back adds nothing (and refill resumes from the new reading).
    if (elapsed > 0 && this.#units < this.#capacityUnits) {
      this.#units = Math.min(this.#capacityUnits, this.#units + elapsed * this.ratePerMinute);
    }
  }
}
