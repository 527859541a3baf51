/**
 * The shape of pg-resilience's configuration. `ResilienceSettings` is what one target's policies are
 * built from; `ResilienceConfig` is the whole resolved configuration (profile defaults, then the JSON
 * file named by PG_RESILIENCE_CONFIG, then the simple PG_RESILIENCE_* variables, then the object
 * passed in code, each overriding the one before). `ResilienceOptions` is what users write: every
 * field optional, deep.
 *
 * Two kinds of sections: per-target ones (in `ResilienceSettings`, overridable in `targets`) and
 * process-wide ones (`telemetry`). A new concern gets its own section in one of the two, here and in
 * schema.ts (whose zod schema must mirror these types: the compiler checks it).
 *
 * A target is one server and database, named `host:port/database` (like instrumentation-pg's pool name).
 */
import type { ClassifierOverride, ErrorClass } from '../classify/types.ts';

// The enumerated values, each list once: the types, the schema and the docs derive from them.
export const PROFILE_NAMES = ['default', 'batch'] as const;
export type ProfileName = (typeof PROFILE_NAMES)[number];
export const JITTERS = ['decorrelated', 'full', 'none'] as const;
export type Jitter = (typeof JITTERS)[number];
export const BACKPRESSURES = ['wait', 'drop', 'queue'] as const;
export type Backpressure = (typeof BACKPRESSURES)[number];
export const BREAKER_MODES = ['consecutive', 'failure_rate'] as const;
export type BreakerMode = (typeof BREAKER_MODES)[number];
export const LOG_LEVELS = ['off', 'error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/**
 * Which logical operations get a `pg_resilience <operation>` span:
 * - `on_event` (default): those the policies acted on (a retry, a suppressed retry, a rate-limit wait, a
 *   rejection); the span starts when the operation started and parents every attempt from then on. A
 *   healthy operation pays for no span of ours (instrumentation-pg's span is still there).
 * - `always`: every operation, from its start, parent of all its attempts.
 * - `off`: none (metrics and logs only).
 */
export const OPERATION_SPAN_MODES = ['on_event', 'always', 'off'] as const;
export type OperationSpanMode = (typeof OPERATION_SPAN_MODES)[number];

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
  /** Standalone clients: hold the dead client's 'error'/'end' while its read may run on a substitute (slonik). */
  holdClientErrorWhileSubstituting: boolean;
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
  /**
   * After the breaker closes from open or half-open: the window over which this process's new server
   * connections to the target ramp up (few at first, unlimited at the end), in ms. 0: no ramp.
   */
  rampMs: number;
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
  /** When queryMs fires: how long to wait for the server's answer to the cancel request, in ms; 0 = no cancel. */
  cancelGraceMs: number;
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
  /**
   * The first probe after the breaker opens, in ms; the gaps then double up to `intervalMs` (at most
   * `intervalMs`: equal or above, the probes keep to `intervalMs` from the start).
   */
  firstProbeMs: number;
  /** Probes per outage before the loop stops and leaves recovery to traffic; 0 = no limit. */
  maxAttempts: number;
}

export interface LivenessSettings {
  /** TCP keepalive idle time set on each new connection whose pg config sets no keepAlive, in ms; 0 = off (pg's default). */
  keepAliveInitialDelayMs: number;
  /** Close every idle pooled connection of a target when its breaker opens. */
  evictIdleOnOutage: boolean;
}

/**
 * Leak detection: clients checked out with `pool.connect()` and never given back. A checked-out client
 * whose connection ended and that is not released within `deadGraceMs` is certainly leaked; one held
 * idle (no statement running or queued) for `idleThresholdMs` is suspected (off by default).
 */
export interface LeakDetectionSettings {
  /** Watch the clients the app checks out with `pool.connect()`. */
  enabled: boolean;
  /** Warn about a client checked out and idle (no statement running or queued) this long, in ms; 0 = off. */
  idleThresholdMs: number;
  /** Warn about a checked-out client whose connection ended and that is still not released after this long, in ms. */
  deadGraceMs: number;
}

export interface TransactionSettings {
  /**
   * withTransaction: when the connection dies while COMMIT is in flight, how long to keep asking the
   * server (on other connections) whether the transaction committed, in ms; 0 = off (no transaction id
   * is learned, the call fails with TransactionOutcomeUnknownError at once).
   */
  outcomeResolutionMs: number;
}

/** Multi-host targets and endpoint flips (see failover.md). */
export interface FailoverSettings {
  /** How long a host's role, once checked, is trusted before the next connect checks it again, in ms; 0 = until an error says it changed. */
  roleTrustMs: number;
  /** Limit of one role check (its connect, then its query), in ms; a client's own shorter connectionTimeoutMillis wins. */
  roleCheckTimeoutMs: number;
  /** Close the pooled connections to a server whose role changed (idle ones at once, checked-out ones when released). */
  evictOnFailover: boolean;
}

/**
 * The connection budget: the server connections held to a target never exceed `maxConnections`, per
 * process, or for the whole fleet when coordination is on (see fleet.md). A new connection waits for a
 * slot (FIFO), bounded by its connect timeout.
 */
export interface ConnectionBudgetSettings {
  /** Most server connections to the target; 0 = off. */
  maxConnections: number;
}

export interface ResilienceSettings {
  retry: RetrySettings;
  circuitBreaker: CircuitBreakerSettings;
  rateLimit: RateLimitSettings;
  timeout: TimeoutSettings;
  bulkhead: BulkheadSettings;
  recovery: RecoverySettings;
  liveness: LivenessSettings;
  leakDetection: LeakDetectionSettings;
  transaction: TransactionSettings;
  failover: FailoverSettings;
  connectionBudget: ConnectionBudgetSettings;
}

export interface HealthEndpointSettings {
  /** Serve `GET /resilience/health` and `/resilience/state` on this port (0 picks a free one); unset: no endpoint. */
  port?: number;
  /** Address the endpoint binds to. */
  host: string;
}

/** Process-wide: how much pg-resilience logs, which operations get a span, the health endpoint. */
export interface TelemetrySettings {
  /** Console level of resilience events (log records go to the OpenTelemetry logs API at every level). */
  logLevel: LogLevel;
  operationSpans: OperationSpanMode;
  health: HealthEndpointSettings;
}

/**
 * Process-wide: fleet coordination through Redis (see fleet.md). Off unless `redis.url` is set; then a
 * target's `rateLimit` holds for the whole fleet instead of each process.
 */
export interface CoordinationSettings {
  redis: {
    /** `redis://[user:password@]host:port/db` or `rediss://…`; unset: coordination off. */
    url?: string;
    /** The URL is one node of a Redis Cluster (the client follows the cluster's slots). */
    cluster: boolean;
  };
  /** The fleet's name: every key lives under it. Unset: OTEL_SERVICE_NAME, else `default`. */
  fleet?: string;
  /** Longest a Redis command may take before the process falls back to its own share, in ms. */
  timeoutMs: number;
  /** Membership lease: a process that stops renewing it (even killed) leaves the fleet after this long, in ms. */
  leaseMs: number;
}

/** The `telemetry` option: any subset of the telemetry settings. */
export type TelemetryOptions = DeepPartial<TelemetrySettings>;

export interface ResilienceConfig extends ResilienceSettings {
  /** Turn the package off entirely (pg is left unpatched). */
  disabled: boolean;
  profile: ProfileName;
  telemetry: TelemetrySettings;
  coordination: CoordinationSettings;
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
