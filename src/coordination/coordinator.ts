/**
 * `FleetCoordinator`: this process's membership of the fleet and its link to Redis. It renews a
 * membership lease every third of `leaseMs`, learns how many members are live, and runs the permit
 * scripts for the fleet-wide rate limiters (fleet-bucket.ts).
 *
 * Modes: `fleet` while Redis answers within `timeoutMs`; `fallback` from the first command that fails or
 * times out (each limit then holds per process at its share: the limit divided by the live members last
 * seen), back to `fleet` at the first command that succeeds again (the renewal keeps trying).
 */
import { diag } from '@opentelemetry/api';
import type { CoordinationSettings, RateLimitSettings } from '../config/types.ts';
import { redactRedisUrl } from '../config/redis-url.ts';
import type { Event } from 'cockatiel';
import { type Clock, realClock } from '../policy/clock.ts';
import { SafeEventEmitter } from '../policy/events.ts';
import { FleetBucket } from './fleet-bucket.ts';
import { FleetSlots } from './fleet-slots.ts';
import { FleetBreaker, type FleetBreakerHost, type FleetBreakerState } from './fleet-breaker.ts';
import { breakerKey, fleetName, membersKey, probeLockKey, rateKey, slotsKey, votesKey } from './keys.ts';
import type { CircuitBreaker } from '../policy/circuit-breaker.ts';
import { connectRedis, loadIoRedis, MISSING_CLIENT, type RedisLink } from './redis-client.ts';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/** `off` is reported by telemetry when no Redis is configured; a coordinator is `fleet` or `fallback`. */
export const COORDINATION_MODES = ['off', 'fleet', 'fallback'] as const;
export type CoordinationMode = 'fleet' | 'fallback';

/** One Redis command finished (for telemetry): how long it took and whether it succeeded in time. */
export interface CoordinationCommandEvent {
  readonly ok: boolean;
  readonly durationMs: number;
}

/** How often a fleet breaker reads the verdict while something is open: a fleet-wide close reaches every process within this. */
const FLEET_BREAKER_POLL_MS = 200;

/** A recovery probe asked for the fleet's probe lock (for telemetry). */
export interface FleetProbeEvent {
  readonly target: string;
  readonly taken: boolean;
}

/** Most members a reply may claim (anything above is garbage). */
const MAX_MEMBERS = 1_000_000;

/** A reply's count, if it is a sane non-negative integer up to `max`. */
function count(value: unknown, max: number): number | undefined {
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : Number.NaN;
  return Number.isInteger(n) && n >= 0 && n <= max ? n : undefined;
}

export class FleetCoordinator {
  readonly fleet: string;
  readonly member: string;
  readonly settings: CoordinationSettings;
  readonly #clock: Clock;
  #link: RedisLink | undefined;
  #ready: Promise<RedisLink | undefined>;
  #mode: CoordinationMode = 'fallback';
  /** Whether Redis ever answered (before that, the fallback share counts this process alone). */
  #contacted = false;
  #members = 1;
  /**
   * Members seen before an outage, trusted for one lease period after Redis returns: Redis may come back
   * empty, and the first process to rejoin would otherwise count itself alone and take the whole burst
   * while its peers wait. Peers that died meanwhile only make the shares smaller for that period.
   */
  #membersBefore = 1;
  #membersBeforeUntil = 0;
  #timer: unknown;
  /** A renewal is running (the ready signal and the timer never run two at once). */
  #renewing = false;
  #disposed = false;
  #lastError: string | undefined;
  readonly #buckets = new Set<FleetBucket>();
  readonly #slots = new Set<FleetSlots>();
  readonly #command = new SafeEventEmitter<CoordinationCommandEvent>();
  /** A Redis command finished. */
  readonly onCommand: Event<CoordinationCommandEvent> = this.#command.addListener;
  readonly #fleetBreakers = new Set<FleetBreaker>();
  readonly #fleetProbe = new SafeEventEmitter<FleetProbeEvent>();
  /** A recovery probe asked for the fleet's probe lock: taken or skipped. */
  readonly onFleetProbe: Event<FleetProbeEvent> = this.#fleetProbe.addListener;

  constructor(
    settings: CoordinationSettings,
    options: { clock?: Clock; env?: Readonly<Record<string, string | undefined>> } = {},
  ) {
    this.settings = settings;
    this.#clock = options.clock ?? realClock;
    this.fleet = fleetName(settings, options.env);
    this.member = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    this.#ready = this.#connect();
  }

  /** `fleet` while Redis answers, `fallback` otherwise. */
  get mode(): CoordinationMode {
    return this.#mode;
  }

  /** Live members last seen (this process included; 1 before Redis first answered). */
  get members(): number {
    if (this.#membersBeforeUntil === 0 || this.#clock.now() >= this.#membersBeforeUntil) return this.#members;
    return Math.max(this.#members, this.#membersBefore);
  }

  /** The URL with its password redacted, for logs and state. */
  get redisUrl(): string {
    return redactRedisUrl(this.settings.redis.url);
  }

  /** A fleet-wide token bucket for one target's rate limiter. */
  rateBucket(target: string, settings: RateLimitSettings): FleetBucket {
    const bucket = new FleetBucket(this, rateKey(this.fleet, target), settings, this.#clock);
    this.#buckets.add(bucket);
    return bucket;
  }

  /** One target's breaker joined to the fleet's (fleet-breaker.ts); `probeIntervalMs`: the recovery interval. */
  fleetBreaker(target: string, breaker: CircuitBreaker, probeIntervalMs: number): FleetBreaker {
    const currentMembers = (): number => this.members;
    const host: FleetBreakerHost = {
      member: this.member,
      get members() {
        return currentMembers();
      },
      call: (command) => this.call(command),
      probeGated: (t: string, taken: boolean) => this.#fleetProbe.emit({ target: t, taken }),
      forget: (fb: FleetBreaker) => this.#fleetBreakers.delete(fb),
    };
    const fleetBreaker = new FleetBreaker(
      host,
      breaker,
      {
        stateKey: breakerKey(this.fleet, target),
        votesKey: votesKey(this.fleet, target),
        membersKey: membersKey(this.fleet),
        lockKey: probeLockKey(this.fleet, target),
        leaseMs: this.settings.leaseMs,
        pollMs: FLEET_BREAKER_POLL_MS,
        probeIntervalMs: Math.max(1, probeIntervalMs),
      },
      this.#clock,
    );
    this.#fleetBreakers.add(fleetBreaker);
    return fleetBreaker;
  }

  /** Every target's fleet-wide breaker state last seen (`alone`: Redis did not answer). */
  fleetBreakerStates(): Map<string, FleetBreakerState> {
    return new Map([...this.#fleetBreakers].map((fb) => [fb.target, fb.state]));
  }

  /**
   * Runs one command on the link, bounded by the coordination timeout. Resolves with the raw reply, or
   * undefined when Redis failed or was too slow (the process is then in fallback). Never rejects.
   */
  async call(command: (link: RedisLink) => Promise<unknown>): Promise<unknown> {
    const link = await this.#linkWithin();
    if (!link) return undefined;
    try {
      return await this.#bounded(command(link));
    } catch (error) {
      return this.#failed((error as Error).message);
    }
  }

  /** The fleet-wide slots of one target's connection budget. */
  connectionSlots(target: string, maxConnections: number): FleetSlots {
    const slots = new FleetSlots(this, slotsKey(this.fleet, target), maxConnections, this.#clock);
    this.#slots.add(slots);
    return slots;
  }

  /** Forgets a disposed bucket or slot lease. */
  release(owner: FleetBucket | FleetSlots): void {
    if (owner instanceof FleetBucket) this.#buckets.delete(owner);
    else this.#slots.delete(owner);
  }

  /**
   * Sets this member's lease of the slots at `key` (LEASE_SLOTS): `hold` open, `want` wanted. Resolves
   * with the slots granted, or undefined when Redis failed or was too slow. Never rejects.
   */
  async leaseSlots(key: string, budget: number, hold: number, want: number): Promise<number | undefined> {
    const link = await this.#linkWithin();
    if (!link) return undefined;
    try {
      const reply = await this.#bounded(
        link.leaseSlots(key, membersKey(this.fleet), budget, hold, want, this.member, this.settings.leaseMs),
      );
      const [granted, members] = Array.isArray(reply) ? (reply as unknown[]) : [];
      const g = count(granted, Math.max(want, budget));
      const m = count(members, MAX_MEMBERS);
      if (g === undefined || m === undefined) return this.#failed('a slot lease reply was not valid');
      this.#succeeded(m);
      return g;
    } catch (error) {
      return this.#failed((error as Error).message);
    }
  }

  /**
   * Takes up to `want` permits from the fleet-wide bucket at `key`. Resolves with the permits granted,
   * or undefined when Redis failed or was too slow (the process is then in fallback). Never rejects.
   */
  async take(key: string, ratePerMs: number, capacity: number, want: number): Promise<number | undefined> {
    const link = await this.#linkWithin();
    if (!link) return undefined;
    try {
      const reply = await this.#bounded(
        link.takePermits(
          key,
          membersKey(this.fleet),
          ratePerMs,
          capacity,
          want,
          this.member,
          this.settings.leaseMs,
        ),
      );
      const [granted, members] = Array.isArray(reply) ? (reply as unknown[]) : [];
      const g = count(granted, want);
      const m = count(members, MAX_MEMBERS);
      if (g === undefined || m === undefined) return this.#failed('a permit reply was not valid');
      this.#succeeded(m);
      return g;
    } catch (error) {
      return this.#failed((error as Error).message);
    }
  }

  /** Stops renewing, leaves the fleet (best effort) and closes the connection. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    for (const b of this.#buckets) b.dispose();
    for (const s of this.#slots) s.dispose();
    const link = this.#link;
    if (link) {
      void link
        .leave(membersKey(this.fleet), this.member)
        .catch(() => undefined)
        .finally(() => link.close());
    }
  }

  async #connect(): Promise<RedisLink | undefined> {
    const io = await loadIoRedis();
    if (this.#disposed) return undefined;
    if (!io) {
      diag.warn(MISSING_CLIENT);
      return undefined;
    }
    const { url, cluster } = this.settings.redis;
    const link = connectRedis(io, url!, this.settings.timeoutMs, cluster === true);
    link.onError((message) => this.#failed(message));
    // Commands fail at once until the connection is up: renew as soon as it is, rather than at the next
    // fallback poll, so a process starting (or Redis returning) joins the fleet within a round trip.
    link.onReady(() => {
      if (this.#disposed || this.#mode === 'fleet') return;
      if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
      this.#timer = undefined;
      void this.#renew();
    });
    this.#link = link;
    void this.#renew();
    return link;
  }

  /** The link, waiting for the client to load at most the coordination timeout. */
  async #linkWithin(): Promise<RedisLink | undefined> {
    if (this.#link || this.#disposed) return this.#link;
    let timer: unknown;
    const late = new Promise<undefined>((resolve) => {
      timer = this.#clock.setTimeout(() => resolve(undefined), this.settings.timeoutMs);
    });
    try {
      return await Promise.race([this.#ready, late]);
    } finally {
      this.#clock.clearTimeout(timer);
    }
  }

  /**
   * The command's reply, or a rejection once `timeoutMs` has passed. When the timer fires, the decision
   * waits one turn of the event loop (setImmediate): a reply already sitting in the socket while the
   * loop was busy is read first, so a blocked event loop is not mistaken for a slow Redis.
   */
  #bounded(command: Promise<unknown>): Promise<unknown> {
    const start = performance.now();
    const done = (ok: boolean) => this.#command.emit({ ok, durationMs: performance.now() - start });
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = this.#clock.setTimeout(() => {
        setImmediate(() => {
          if (settled) return;
          settled = true;
          done(false);
          reject(new Error(`no answer within ${this.settings.timeoutMs} ms`));
        });
      }, this.settings.timeoutMs);
      command.then(
        (value) => {
          if (settled) return;
          settled = true;
          this.#clock.clearTimeout(timer);
          done(true);
          resolve(value);
        },
        (error: unknown) => {
          if (settled) return;
          settled = true;
          this.#clock.clearTimeout(timer);
          done(false);
          reject(error instanceof Error ? error : new Error(String(error)));
        },
      );
    });
  }

  async #renew(): Promise<void> {
    if (this.#disposed || this.#renewing) return;
    this.#renewing = true;
    try {
      await this.#renewOnce();
    } finally {
      this.#renewing = false;
    }
    if (this.#disposed) return;
    // Every third of the lease while Redis answers; every few hundred ms while it does not, so the
    // fleet-wide limits resume soon after it returns.
    const every =
      this.#mode === 'fleet' ? this.settings.leaseMs / 3 : Math.min(250, this.settings.leaseMs / 3);
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = this.#clock.setTimeout(() => void this.#renew(), every);
  }

  async #renewOnce(): Promise<void> {
    const link = this.#link;
    if (link) {
      try {
        const reply = await this.#bounded(
          link.heartbeat(membersKey(this.fleet), this.member, this.settings.leaseMs),
        );
        const m = count(reply, MAX_MEMBERS);
        if (m === undefined) this.#failed('a membership reply was not valid');
        else this.#succeeded(m);
      } catch (error) {
        this.#failed((error as Error).message);
      }
    }
  }

  #succeeded(members: number): void {
    const resuming = this.#mode !== 'fleet' && this.#contacted;
    if (resuming) {
      this.#membersBefore = this.#members;
      this.#membersBeforeUntil = this.#clock.now() + this.settings.leaseMs;
    }
    // This process renewed its own lease in the same script: at least one member is live.
    this.#members = Math.max(1, members);
    this.#contacted = true;
    if (this.#mode !== 'fleet') {
      this.#mode = 'fleet';
      // Buckets that fell back ask Redis again now, not at their next fallback poll.
      for (const b of this.#buckets) b.resume();
      if (this.#lastError !== undefined)
        diag.info(`pg-resilience: fleet coordination through ${this.redisUrl} resumed`);
      this.#lastError = undefined;
    }
  }

  #failed(message: string): undefined {
    if (this.#mode === 'fleet' || this.#lastError === undefined) {
      diag.warn(
        `pg-resilience: fleet coordination through ${this.redisUrl} failed (${message}); limits hold per process at their share (1/${this.#members}) until Redis answers`,
      );
    }
    this.#lastError = message;
    this.#mode = 'fallback';
    return undefined;
  }

  /** Whether Redis ever answered. */
  get contacted(): boolean {
    return this.#contacted;
  }
}
