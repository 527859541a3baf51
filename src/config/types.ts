/**
 * The shape of pg-resilience's configuration. `ResilienceSettings` is what one target's policies are
 * built from; `ResilienceConfig` is the whole resolved configuration (profile defaults, then the JSON
 * file named by PG_RESILIENCE_CONFIG, then the simple PG_RESILIENCE_* variables, then the object
 * passed in code, each overriding the one before). `ResilienceOptions` is what users write: every
 * field optional, deep.
 *
 * A target is one server and database, named `host:port/database` (like instrumentation-pg's pool name).
 */
import type { ClassifierOverride, ErrorClass } from '../classify/types.ts';

export type ProfileName = 'default' | 'batch';
export type Jitter = 'decorrelated' | 'full' | 'none';
export type Backpressure = 'wait' | 'drop' | 'queue';
export type BreakerMode = 'consecutive' | 'failure_rate';

/** Backoff and attempts: the part of retry settings that `perErrorClass` can override. */
export interface RetryTiming {
  /** Total attempts including the first (1 = no retry). */
  maxAttempts: number;
  /** Delay before the first retry, in ms. */
  initialDelayMs: number;
  /** Upper bound of any single delay, in ms. */
  maxDelayMs: number;
  /** Growth factor between delays (cockatiel's `exponent`). */
  multiplier: number;
  /** Jitter: decorrelated (default; cockatiel's decorrelatedJitterGenerator), full, or none. */
  jitter: Jitter;
}

export interface RetryBudgetSettings {
  enabled: boolean;
  /** Retries may not exceed this share of the calls made in the window (0..1). */
  ratio: number;
  /** Length of the sliding window, in ms. */
  windowMs: number;
  /** Retries always allowed per window whatever the ratio, so a quiet target can still retry. */
  minRetries: number;
}

export interface RetrySettings extends RetryTiming {
  enabled: boolean;
  /** Per error class overrides of attempts and backoff (e.g. more patient for connect refusals). */
  perErrorClass: Partial<Record<ErrorClass, Partial<RetryTiming>>>;
  budget: RetryBudgetSettings;
}

export interface CircuitBreakerSettings {
  enabled: boolean;
  /** `consecutive`: open after N failures in a row; `failure_rate`: open when the failure share in a sliding window exceeds a threshold. */
  mode: BreakerMode;
  /** consecutive mode: failures in a row that open the breaker. */
  consecutiveFailures: number;
  /** failure_rate mode: share of failed calls (0..1, exclusive of 0) that opens the breaker. */
  failureRateThreshold: number;
  /** failure_rate mode: sliding window length, in ms. */
  failureRateWindowMs: number;
  /** failure_rate mode: calls per second needed in the window before the rate is judged. */
  minimumRps: number;
  /** Time the breaker stays open before it lets probes through (half-open), in ms. */
  halfOpenAfterMs: number;
  /** Calls let through at once while half-open; the others are rejected at once. */
  halfOpenMaxProbes: number;
  /** Successful half-open calls needed to close; any failure re-opens. */
  successesToClose: number;
}

export interface RateLimitSettings {
  /** Off by default: a rate limit slows a healthy app by design. */
  enabled: boolean;
  /** Sustained permits per minute. */
  ratePerMinute: number;
  /** Bucket size: permits available at once after a quiet period. */
  burst: number;
  /** What a call does when no permit is free: wait (FIFO, up to maxWaitMs), drop (reject at once), queue (bounded FIFO of maxQueueSize, reject when full). */
  strategy: Backpressure;
  /** queue strategy: most calls waiting at once. */
  maxQueueSize: number;
  /** wait and queue strategies: longest a call waits for a permit before it is rejected, in ms (0 = no limit). */
  maxWaitMs: number;
}

export interface TimeoutSettings {
  /** Per-attempt limit for a statement, in ms; 0 = off (rely on the server's statement_timeout). */
  queryMs: number;
  /** Per-attempt limit for getting a connection (connect or pool checkout), in ms; 0 = off. */
  connectMs: number;
}

export interface BulkheadSettings {
  /** Concurrent calls per target; 0 = off. */
  maxConcurrent: number;
  /** Calls that may wait for a slot when maxConcurrent are running. */
  maxQueue: number;
}

export interface RecoverySettings {
  /** Probe a target whose breaker is open in the background (connect + SELECT 1). */
  enabled: boolean;
  /** Time between probes, in ms. */
  intervalMs: number;
  /** Probes per outage before the loop stops and leaves recovery to traffic; 0 = no limit. */
  maxAttempts: number;
}

export interface ResilienceSettings {
  retry: RetrySettings;
  circuitBreaker: CircuitBreakerSettings;
  rateLimit: RateLimitSettings;
  timeout: TimeoutSettings;
  bulkhead: BulkheadSettings;
  recovery: RecoverySettings;
}

export interface ResilienceConfig extends ResilienceSettings {
  /** Turn the package off entirely (pg is left unpatched). */
  disabled: boolean;
  profile: ProfileName;
  /** Per-target overrides, keyed `host:port/database`, applied over the settings above. */
  targets: Record<string, DeepPartial<ResilienceSettings>>;
  /** Extend or override the error classification (code only; not expressible in JSON or env). */
  classify?: ClassifierOverride;
}

export type DeepPartial<T> = {
  [K in keyof T]?: T[K] extends (...args: never[]) => unknown
    ? T[K]
    : T[K] extends object
      ? DeepPartial<T[K]>
      : T[K];
};

/** What users pass in code (and what the JSON file holds): any subset of the configuration. */
export type ResilienceOptions = DeepPartial<ResilienceConfig>;
