/**
 * `PolicyRegistry`: every target's policies (`TargetPolicy`, pipeline.ts), created lazily from the
 * resolved configuration, one per `host:port/database`.
 */
import type { Event } from 'cockatiel';
import { classifyError } from '../classify/classify.ts';
import type { ErrorClassification } from '../classify/types.ts';
import { settingsForTarget } from '../config/resolve.ts';
import type { ResilienceConfig } from '../config/types.ts';
import type { Clock } from './clock.ts';
import { SafeEventEmitter } from './events.ts';
import { FleetCoordinator } from '../coordination/coordinator.ts';
import { TargetPolicy } from './pipeline.ts';
import type { TargetSnapshot } from './types.ts';

/** A target's policies were created (first call to that target). */
export interface TargetCreatedEvent {
  readonly target: string;
  readonly policy: TargetPolicy;
}

/**
 * The policies of every target, created lazily on first use from `settingsForTarget(config, target)`
 * (so per-target overrides apply) and cached.
 */
export class PolicyRegistry {
  readonly config: ResilienceConfig;
  readonly #clock: Clock | undefined;
  readonly #classify: (error: unknown) => ErrorClassification;
  readonly #policies = new Map<string, TargetPolicy>();
  /** Fleet coordination through Redis, when `coordination.redis.url` is set. */
  #coordinator: FleetCoordinator | undefined;
  readonly #created = new SafeEventEmitter<TargetCreatedEvent>();
  /** A target's policies were just created. */
  readonly onTargetCreated: Event<TargetCreatedEvent> = this.#created.addListener;

  constructor(config: ResilienceConfig, clock?: Clock) {
    this.config = config;
    this.#clock = clock;
    const override = config.classify;
    this.#classify = override ? (e) => classifyError(e, override) : (e) => classifyError(e);
    // Started at once (not on the first call), so the link to Redis is up by the time queries run.
    if (config.coordination?.redis.url && !config.disabled)
      this.#coordinator = new FleetCoordinator(config.coordination, clock ? { clock } : {});
  }

  /** The fleet coordinator, when coordination is on. */
  get coordinator(): FleetCoordinator | undefined {
    return this.#coordinator;
  }

  /** The configured classification of an error (with the config's `classify` override). */
  classify(error: unknown): ErrorClassification {
    return this.#classify(error);
  }

  /** The target's policies, created on first use. After dispose(), creates fresh ones again. */
  forTarget(target: string): TargetPolicy {
    let policy = this.#policies.get(target);
    if (!policy) {
      const coordinator = this.#coordinator;
      policy = new TargetPolicy(
        settingsForTarget(this.config, target),
        target,
        this.#classify,
        this.#clock,
        coordinator
          ? {
              rateBucket: (s) => coordinator.rateBucket(target, s),
              connectionSlots: (max) => coordinator.connectionSlots(target, max),
              breakerFleet: (breaker, intervalMs) => coordinator.fleetBreaker(target, breaker, intervalMs),
            }
          : {},
      );
      this.#policies.set(target, policy);
      this.#created.emit({ target, policy });
    }
    return policy;
  }

  /** The target's policies if they exist (never creates them). */
  get(target: string): TargetPolicy | undefined {
    return this.#policies.get(target);
  }

  /** The targets with policies, in creation order. */
  targets(): string[] {
    return [...this.#policies.keys()];
  }

  /** Every target's snapshot. */
  snapshot(): TargetSnapshot[] {
    return [...this.#policies.values()].map((p) => p.snapshot());
  }

  /** Disposes every target's policies and forgets them; leaves the fleet. */
  dispose(): void {
    for (const policy of this.#policies.values()) policy.dispose();
    this.#policies.clear();
    this.#coordinator?.dispose();
    this.#coordinator = undefined;
  }
}
