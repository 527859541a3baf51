/**
 * Which target's policies govern a pool or a client, and the recovery probe that goes with them.
 *
 * A target is `host:port/database` (utils.ts); every pool and standalone client pointing at it shares
 * one TargetPolicy from the PolicyRegistry. The lookup is cached per pool / client object (a WeakMap:
 * the target string is computed once). The first time a target is seen, its background recovery loop
 * is created with a probe built from the most recent pool or client seen for it (probe.ts).
 */
import type { TargetPolicy } from '../policy/pipeline.ts';
import type { PolicyRegistry } from '../policy/registry.ts';
import { HealthTracker, type PoolStats } from '../telemetry/health.ts';
import { closeIdleSurplus } from './budget-connect.ts';
import { type ConnectionsEvictedEvent, evictOnOutage } from './eviction.ts';
import { LeakDetector } from './leak-detection.ts';
import { clientProbeFactory, poolProbeFactory, type ProbeClientFactory, runProbe } from './probe.ts';
import { scope } from './scope.ts';
import type { PgClientLike, PgPoolLike } from './types.ts';
import { clientTarget, poolTarget } from './utils.ts';

/**
 * Probe steps' limit: twice the recovery interval, within 1–5 s, and never more than the configured
 * connect timeout. A probe is a health check: one that hangs (a blackholed network) would hold the
 * breaker's half-open slot, so traffic could not close the breaker either.
 */
function probeTimeoutMs(policy: TargetPolicy): number {
  const own = Math.min(5_000, Math.max(1_000, 2 * policy.settings.recovery.intervalMs));
  const connectMs = policy.settings.timeout.connectMs;
  return connectMs > 0 ? Math.min(connectMs, own) : own;
}

/** pg-pool's counters (pg's default pool size is 10). */
interface PoolCounts {
  readonly totalCount?: number;
  readonly idleCount?: number;
  readonly waitingCount?: number;
  readonly options?: { max?: number | string };
}

export class Targets {
  readonly registry: PolicyRegistry;
  readonly #byObject = new WeakMap<object, TargetPolicy>();
  readonly #probeFactories = new Map<string, ProbeClientFactory>();
  /** The pools seen, per target (weakly: a pool the app dropped is not kept alive), for pool stats. */
  readonly #pools = new Map<string, Set<WeakRef<PgPoolLike>>>();
  /** The standalone clients seen, per target (weakly), to know whether a target is still in use. */
  readonly #clients = new Map<string, Set<WeakRef<PgClientLike>>>();
  #health: HealthTracker | undefined;
  /** The policies whose breaker opening evicts their pools' idle clients (eviction.ts). */
  readonly #evicting = new WeakSet<TargetPolicy>();
  readonly #onEvicted: (event: ConnectionsEvictedEvent) => void;
  /** The clients the app checked out with pool.connect(), watched for leaks (leak-detection.ts). */
  readonly leaks = new LeakDetector();

  constructor(registry: PolicyRegistry, onEvicted: (event: ConnectionsEvictedEvent) => void = () => {}) {
    this.registry = registry;
    this.#onEvicted = onEvicted;
  }

  forPool(pool: PgPoolLike): TargetPolicy {
    let policy = this.#byObject.get(pool);
    if (policy === undefined) {
      const target = poolTarget(pool);
      policy = this.#policy(target, poolProbeFactory(pool as never));
      this.#byObject.set(pool, policy);
      let pools = this.#pools.get(target);
      if (pools === undefined) this.#pools.set(target, (pools = new Set()));
      pools.add(new WeakRef(pool));
    }
    return policy;
  }

  /** The live pools of `target` (not ended). */
  *pools(target: string): Generator<PgPoolLike> {
    for (const ref of this.#pools.get(target) ?? []) {
      const pool = ref.deref();
      if (pool !== undefined && pool.ending !== true) yield pool;
    }
  }

  /** Live pools' usage (pg-pool's totalCount, idleCount, waitingCount, options.max), one entry per pool. */
  poolStats(): PoolStats[] {
    const out: PoolStats[] = [];
    for (const [target, refs] of this.#pools) {
      for (const ref of refs) {
        const pool = ref.deref() as (PgPoolLike & PoolCounts) | undefined;
        if (pool === undefined || pool.ending === true) {
          refs.delete(ref);
          continue;
        }
        out.push({
          target,
          total: pool.totalCount ?? 0,
          idle: pool.idleCount ?? 0,
          waiting: pool.waitingCount ?? 0,
          max: Number(pool.options?.max ?? 10),
        });
      }
    }
    return out;
  }

  /** The health tracker over these targets (created on first use; it samples every 5 s on an unref'd timer). */
  health(): HealthTracker {
    this.#health ??= new HealthTracker({
      snapshot: () => this.registry.snapshot(),
      pools: () => this.poolStats(),
    });
    return this.#health;
  }

  /** Stops the health tracker's and the leak detector's timers. */
  dispose(): void {
    this.leaks.dispose();
    this.#health?.dispose();
    this.#health = undefined;
  }

  forClient(client: PgClientLike): TargetPolicy {
    let policy = this.#byObject.get(client);
    if (policy === undefined) {
      const target = clientTarget(client);
      policy = this.#policy(target, clientProbeFactory(client));
      this.#byObject.set(client, policy);
      // Standalone clients only: a pool's clients come and go with it (its pool says whether it is used).
      if (!scope.poolClients.has(client) && typeof client.release !== 'function') {
        let clients = this.#clients.get(target);
        if (clients === undefined) this.#clients.set(target, (clients = new Set()));
        if (clients.size >= 64) this.#prune(clients);
        clients.add(new WeakRef(client));
      }
    }
    return policy;
  }

  /**
   * Whether the app still uses `target`: a pool not ended, or a standalone client not ended, that it can
   * still reach. When every one has ended (a script that finished), recovery stops probing: a probe's
   * connection and its spans and logs (to a collector that may hang) would keep the process alive.
   */
  inUse(target: string): boolean {
    for (const ref of this.#pools.get(target) ?? []) {
      const pool = ref.deref();
      if (pool !== undefined && pool.ending !== true) return true;
    }
    const clients = this.#clients.get(target);
    if (clients !== undefined) {
      this.#prune(clients);
      if (clients.size > 0) return true;
    }
    return false;
  }

  /** Drops the clients that were collected or ended. */
  #prune(clients: Set<WeakRef<PgClientLike>>): void {
    for (const ref of clients) {
      const client = ref.deref() as (PgClientLike & { _ending?: boolean }) | undefined;
      if (client === undefined || client._ending === true) clients.delete(ref);
    }
  }

  #policy(target: string, factory: ProbeClientFactory | undefined): TargetPolicy {
    if (factory) this.#probeFactories.set(target, factory);
    const policy = this.registry.forTarget(target);
    if (!this.#evicting.has(policy)) {
      this.#evicting.add(policy);
      evictOnOutage(policy, () => this.pools(target), this.#onEvicted);
      // Above the process's share of the connection budget: idle connections are closed, not held.
      policy.connectionBudget?.onSurplus((surplus) => closeIdleSurplus(this.pools(target), surplus));
    }
    policy.startRecovery(
      (signal) => {
        const make = this.#probeFactories.get(target);
        if (!make) return Promise.reject(new Error(`no connection settings known for ${target}`));
        // A probe error that shows the server up counts as a success (the policy's rule).
        return runProbe(make, probeTimeoutMs(policy), signal);
      },
      () => this.inUse(target),
    );
    return policy;
  }
}
