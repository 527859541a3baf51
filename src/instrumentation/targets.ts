/**
 * Which target's policies govern a pool or a client, and the recovery probe that goes with them.
 *
 * A target is `host:port/database` (utils.ts); every pool and standalone client pointing at it shares
 * one TargetPolicy from the PolicyRegistry. The lookup is cached per pool / client object (a WeakMap:
 * the target string is computed once). The first time a target is seen, its background recovery loop
 * is created with a probe built from the most recent pool or client seen for it (probe.ts).
 */
import type { PolicyRegistry, TargetPolicy } from '../policy/pipeline.ts';
import { clientProbeFactory, poolProbeFactory, type ProbeClientFactory, runProbe } from './probe.ts';
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

export class Targets {
  readonly registry: PolicyRegistry;
  readonly #byObject = new WeakMap<object, TargetPolicy>();
  readonly #probeFactories = new Map<string, ProbeClientFactory>();

  constructor(registry: PolicyRegistry) {
    this.registry = registry;
  }

  forPool(pool: PgPoolLike): TargetPolicy {
    let policy = this.#byObject.get(pool);
    if (policy === undefined) {
      policy = this.#policy(poolTarget(pool), poolProbeFactory(pool as never));
      this.#byObject.set(pool, policy);
    }
    return policy;
  }

  forClient(client: PgClientLike): TargetPolicy {
    let policy = this.#byObject.get(client);
    if (policy === undefined) {
      policy = this.#policy(clientTarget(client), clientProbeFactory(client));
      this.#byObject.set(client, policy);
    }
    return policy;
  }

  #policy(target: string, factory: ProbeClientFactory | undefined): TargetPolicy {
    if (factory) this.#probeFactories.set(target, factory);
    const policy = this.registry.forTarget(target);
    policy.startRecovery((signal) => {
      const make = this.#probeFactories.get(target);
      if (!make) return Promise.reject(new Error(`no connection settings known for ${target}`));
      return runProbe(make, probeTimeoutMs(policy), signal);
    });
    return policy;
  }
}
