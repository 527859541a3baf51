/**
 * Retry budget: retries may not exceed `ratio` × the calls made in a sliding window (with a floor of
 * `minRetries` per window, so a quiet target can still retry). It keeps a retry storm from multiplying
 * the load on a struggling server: when most calls fail, most of them fail once, not `maxAttempts`
 * times.
 *
 * The window is `BUCKETS` buckets of `windowMs / BUCKETS` each, kept in two ring buffers with running
 * totals: `recordCall()` and `tryAcquire()` are O(1) (rotating over skipped buckets is bounded by
 * `BUCKETS`), allocate nothing and set no timer. Time comes from the injectable clock.
 */
import type { RetryBudgetSettings } from '../config/types.ts';
import { type Clock, realClock } from './clock.ts';

const BUCKETS = 10;

export class RetryBudget {
  private readonly enabled: boolean;
  private readonly ratio: number;
  private readonly minRetries: number;
  private readonly bucketMs: number;
  private readonly clock: Clock;
  private readonly calls = new Float64Array(BUCKETS);
  private readonly retries = new Float64Array(BUCKETS);
  private totalCalls = 0;
  private totalRetries = 0;
  /** Absolute number (time / bucketMs) of the newest bucket. */
  private head = 0;

  constructor(settings: RetryBudgetSettings, clock: Clock = realClock) {
    this.enabled = settings.enabled;
    this.ratio = Math.max(0, settings.ratio);
    this.minRetries = Math.max(0, settings.minRetries);
    this.bucketMs = Math.max(1, settings.windowMs / BUCKETS);
    this.clock = clock;
    this.head = Math.floor(clock.now() / this.bucketMs);
  }

  /** Count one logical operation (call it once per operation, not per attempt). */
  recordCall(): void {
    if (!this.enabled) return;
    const i = this.rotate();
    this.calls[i]!++;
    this.totalCalls++;
  }

  /** Take a retry from the budget: true if allowed (and counted), false if the budget is spent. */
  tryAcquire(): boolean {
    if (!this.enabled) return true;
    const i = this.rotate();
    if (this.totalRetries >= this.allowed()) return false;
    this.retries[i]!++;
    this.totalRetries++;
    return true;
  }

  /** Retries still allowed in the current window (Infinity when the budget is off). */
  get remaining(): number {
    if (!this.enabled) return Number.POSITIVE_INFINITY;
    this.rotate();
    return Math.max(0, Math.ceil(this.allowed() - this.totalRetries));
  }

  /** Retries allowed in the current window (the ratio of the calls, at least minRetries). */
  get allowance(): number {
    if (!this.enabled) return Number.POSITIVE_INFINITY;
    this.rotate();
    return Math.ceil(this.allowed());
  }

  private allowed(): number {
    const byRatio = this.ratio * this.totalCalls;
    return Math.max(byRatio, this.minRetries);
  }

  /** Drop the buckets that slid out of the window; returns the index of the current bucket. */
  private rotate(): number {
    const now = Math.floor(this.clock.now() / this.bucketMs);
    let head = this.head;
    if (now > head) {
      const steps = Math.min(now - head, BUCKETS);
      for (let s = 0; s < steps; s++) {
        head++;
        const j = mod(head);
        this.totalCalls -= this.calls[j]!;
        this.totalRetries -= this.retries[j]!;
        this.calls[j] = 0;
        this.retries[j] = 0;
      }
      this.head = now;
    }
    // A clock going backwards (never with the monotonic default) keeps counting into the newest bucket.
    return mod(this.head);
  }
}

const mod = (n: number): number => ((n % BUCKETS) + BUCKETS) % BUCKETS;
