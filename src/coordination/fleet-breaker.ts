/**
 * `FleetBreaker`: one target's breaker joined to the fleet's (coordination on). It publishes this
 * process's vote (its breaker is not closed) with a lease, and reads the fleet's verdict back in the same
 * call (BREAKER_SYNC): every `leaseMs / 3` while all is well, every `pollMs` while the breaker is not
 * closed or the fleet holds it, and at once on every local state change. Never on the query path.
 *
 * - Open fleet-wide (the votes reached the quorum, breaker-verdict.ts): the local breaker is held open;
 *   it half-opens only through a recovery probe, and a probe runs only with the fleet's probe lock
 *   (SET NX PX one probe interval): one probe per interval for the whole fleet.
 * - The lock holder's probe succeeds: it publishes "up" (BREAKER_UP, a new epoch) and every held
 *   process closes at its next poll.
 * - Redis fails or answers garbage: the hold is released and the breaker works alone, as without
 *   coordination; the probe gate lets every probe through.
 */
import type { CircuitBreaker } from '../policy/circuit-breaker.ts';
import { type Clock, realClock } from '../policy/clock.ts';
import type { BreakerFleet } from '../policy/pipeline.ts';
import { decide, parseVerdict, quorum } from './breaker-verdict.ts';
import type { RedisLink } from './redis-client.ts';

/** What the fleet breaker needs from the coordinator. */
export interface FleetBreakerHost {
  readonly member: string;
  readonly members: number;
  /** Runs one bounded command; undefined when Redis failed or was too slow. */
  call(command: (link: RedisLink) => Promise<unknown>): Promise<unknown>;
  /** A probe asked for the lock: taken, or skipped (another process holds it). For telemetry. */
  probeGated?(target: string, taken: boolean): void;
  /** The fleet breaker was disposed. */
  forget?(fleetBreaker: FleetBreaker): void;
}

export interface FleetBreakerOptions {
  readonly stateKey: string;
  readonly votesKey: string;
  readonly membersKey: string;
  readonly lockKey: string;
  readonly leaseMs: number;
  /** The poll while something is open. */
  readonly pollMs: number;
  /** The probe lock's lifetime: the recovery interval. */
  readonly probeIntervalMs: number;
}

/** The fleet-wide breaker state last seen (for telemetry): `alone` while Redis does not answer. */
export type FleetBreakerState = 'closed' | 'open' | 'alone';

export class FleetBreaker implements BreakerFleet {
  readonly #host: FleetBreakerHost;
  readonly #breaker: CircuitBreaker;
  readonly #options: FleetBreakerOptions;
  readonly #clock: Clock;
  readonly #subscription: { dispose(): void };
  #epoch = -1;
  #state: FleetBreakerState = 'closed';
  #timer: unknown;
  #syncing = false;
  #again = false;
  #disposed = false;
  /** Probes this process ran with the lock, and skipped because another process held it. */
  probesTaken = 0;
  probesSkipped = 0;

  constructor(
    host: FleetBreakerHost,
    breaker: CircuitBreaker,
    options: FleetBreakerOptions,
    clock = realClock,
  ) {
    this.#host = host;
    this.#breaker = breaker;
    this.#options = options;
    this.#clock = clock;
    this.#subscription = breaker.onStateChange(() => this.#syncNow());
    this.#schedule(options.pollMs);
  }

  get target(): string {
    return this.#breaker.target;
  }

  /** The fleet-wide state last seen. */
  get state(): FleetBreakerState {
    return this.#state;
  }

  /** Before a recovery probe: true to probe. While the fleet holds the breaker, only with the lock. */
  async mayProbe(): Promise<boolean> {
    if (this.#disposed || !this.#breaker.held) return true;
    const o = this.#options;
    const reply = await this.#host.call((link) => link.lock(o.lockKey, this.#host.member, o.probeIntervalMs));
    // Redis failed: probe alone, as without coordination.
    if (reply === undefined) return true;
    const taken = reply === 'OK';
    if (taken) this.probesTaken++;
    else this.probesSkipped++;
    this.#host.probeGated?.(this.target, taken);
    return taken;
  }

  /** A recovery probe succeeded: while the fleet holds the breaker, tell the fleet it is up. */
  probed(): void {
    if (this.#disposed || !this.#breaker.held) return;
    const o = this.#options;
    void this.#host
      .call((link) => link.breakerUp(o.stateKey, o.votesKey, o.lockKey, o.leaseMs))
      .then(() => this.#syncNow());
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#subscription.dispose();
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#breaker.release();
    this.#host.forget?.(this);
  }

  #syncNow(): void {
    if (this.#disposed) return;
    if (this.#syncing) {
      this.#again = true;
      return;
    }
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    void this.#sync();
  }

  #schedule(ms: number): void {
    if (this.#disposed) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      void this.#sync();
    }, ms);
  }

  async #sync(): Promise<void> {
    this.#syncing = true;
    try {
      const o = this.#options;
      const vote = this.#breaker.state !== 'closed';
      const need = quorum(this.#host.members);
      const reply = await this.#host.call((link) =>
        link.breakerSync(
          o.stateKey,
          o.votesKey,
          o.membersKey,
          this.#host.member,
          o.leaseMs,
          vote,
          this.#epoch,
          need,
        ),
      );
      if (this.#disposed) return;
      const verdict = reply === undefined ? undefined : parseVerdict(reply);
      if (verdict === undefined) {
        // Fail soft: the breaker works alone until Redis answers sanely again.
        this.#state = 'alone';
        this.#breaker.release();
        return;
      }
      const action = decide(this.#breaker.held, verdict);
      this.#epoch = verdict.epoch;
      this.#state = verdict.open ? 'open' : 'closed';
      if (action === 'hold') this.#breaker.holdOpen(new Error(`${this.#breaker.target} is down fleet-wide`));
      else if (action === 'close') this.#breaker.releaseClosed();
    } finally {
      this.#syncing = false;
      if (!this.#disposed) {
        if (this.#again) {
          this.#again = false;
          this.#syncNow();
        } else if (this.#timer === undefined) {
          const busy = this.#breaker.held || this.#breaker.state !== 'closed';
          this.#schedule(busy ? this.#options.pollMs : this.#options.leaseMs / 3);
        }
      }
    }
  }
}
