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

/** Probe steps' limit when no connect timeout is configured: the recovery interval, within 1–10 s. */
function probeTimeoutMs(policy: TargetPolicy): number {
  const connectMs = policy.settings.timeout.connectMs;
  if (connectMs > 0) return connectMs;
  return Math.min(10_000, Math.max(1_000, policy.settings.recovery.intervalMs));
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
