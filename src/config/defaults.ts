/**
 * The defaults the JSON file, the environment and the code options override: the profiles (complete
 * per-target settings) and the process-wide sections (the same whatever the profile).
 *
 * Every field carries a `//` rationale right above it. `scripts/gen-config-docs.ts` publishes those
 * lines in docs/configuration.md, so keep them directly above the field they explain.
 */
import { deepFreeze } from './objects.ts';
import type { CoordinationSettings, ProfileName, ResilienceSettings, TelemetrySettings } from './types.ts';

/** Where the health endpoint listens unless told otherwise: loopback only. */
export const DEFAULT_HEALTH_HOST = '127.0.0.1';

/** `default`: protect an online app, and never slow a healthy one. */
const DEFAULT_PROFILE: ResilienceSettings = {
  retry: {
    // Retries run only for failures classified safe to repeat, so they are on.
    enabled: true,
    // Two retries ride out a blip (a failover, a dropped connection) without piling up latency.
    maxAttempts: 3,
    // The first retry comes quickly: most transient faults in an online app clear within milliseconds.
    initialDelayMs: 50,
    // No single wait exceeds 1 s, so a request never stalls long on a retry.
    maxDelayMs: 1000,
    // Doubling spreads the attempts out while staying inside a request's patience.
    multiplier: 2,
    // Decorrelated jitter keeps many clients from retrying in lockstep against a recovering server.
    jitter: 'decorrelated',
    perErrorClass: {
      // The server is restarting or failing over: be more patient, nothing reached it.
      connect_refused: { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 2000 },
      // Connection slots free up as other clients finish: wait a little longer before each try.
      too_many_connections: { maxAttempts: 5, initialDelayMs: 200, maxDelayMs: 2000 },
      // A lost connection is a flaky network's usual blip. Only safe statements are retried after one,
      // so more tries cost no safety, and the budget caps their load (at 40 % of connections lost, 5
      // tries still fail 1 % of reads, 7 tries 0.16 %).
      connection_lost: { maxAttempts: 7 },
      // Re-running a statement that already hit the server's timeout makes an overload worse.
      statement_timeout: { maxAttempts: 1 },
    },
    budget: {
      // A budget stops retries from multiplying the load when the whole target is failing.
      enabled: true,
      // At most one retry per five calls: retries add no more than 20% load during an outage.
      ratio: 0.2,
      // Ten seconds of history is enough to judge the recent failure share.
      windowMs: 10000,
      // A quiet target still gets a few retries, whatever the ratio says.
      minRetries: 10,
    },
    // Off: knex's and Sequelize's pools learn of a dead client from its 'error' alone, before reuse.
    holdClientErrorWhileSubstituting: false,
  },
  circuitBreaker: {
    // Failing fast while the database is down spares the app's threads, sockets and users.
    enabled: true,
    // Consecutive failures trip reliably at any traffic level, low traffic included.
    mode: 'consecutive',
    // Five failures in a row is a pattern, not a blip.
    consecutiveFailures: 5,
    // failure_rate mode only: open when half the calls in the window fail.
    failureRateThreshold: 0.5,
    // failure_rate mode only: judge the last ten seconds.
    failureRateWindowMs: 10000,
    // failure_rate mode only: below five calls per second the rate says too little.
    minimumRps: 5,
    // Five seconds gives a restarting server time to come back before it is probed by traffic.
    halfOpenAfterMs: 5000,
    // One probe at a time: a recovering server is not flooded.
    halfOpenMaxProbes: 1,
    // One successful probe closes the breaker, so service resumes as soon as the server answers.
    successesToClose: 1,
    // Two seconds: after an outage a process reopens its pool over a moment, not in one instant, so a
    // fleet coming back together does not exhaust the server's connection slots (53300).
    rampMs: 2000,
  },
  rateLimit: {
    // Off: a rate limit slows a healthy app by design.
    enabled: false,
    // When turned on: 100 calls per second sustained.
    ratePerMinute: 6000,
    // When turned on: absorbs a burst of 100 calls after a quiet period.
    burst: 100,
    // When turned on: callers wait for a permit rather than fail.
    strategy: 'wait',
    // queue strategy only: the queue is bounded, so waiting callers cannot exhaust memory.
    maxQueueSize: 1000,
    // When turned on: a caller waits at most five seconds for a permit, then gets RateLimitedError.
    maxWaitMs: 5000,
  },
  timeout: {
    // Off: the server's statement_timeout bounds a statement without a round trip, and no single
    // deadline fits every statement of an app; set it per service (a timed-out statement is cancelled).
    queryMs: 0,
    // pg waits forever by default: a blackholed server would hang every caller.
    connectMs: 10000,
    // The cancel's answer takes one round trip; a second covers a loaded server, and bounds the wait.
    cancelGraceMs: 1000,
  },
  bulkhead: {
    // Off: the pool already caps concurrency.
    maxConcurrent: 0,
    // When turned on: up to 100 calls wait for a slot before they are rejected.
    maxQueue: 100,
  },
  recovery: {
    // Background probes notice a recovered server without waiting for user traffic to risk it.
    enabled: true,
    // Recovery within about a second of the server coming back.
    intervalMs: 500,
    // A restart is often over in a few hundred ms: probe at 50, 150, 350 and 750 ms, then every interval.
    firstProbeMs: 50,
    // Unlimited: keep probing for as long as the outage lasts.
    maxAttempts: 0,
  },
  liveness: {
    // Linux waits 2 h before the first probe; 10 s (+ Node's 10 probes 1 s apart) finds a vanished server in ~20 s.
    keepAliveInitialDelayMs: 10000,
    // A breaker that opened means the target's connections may be dead: none is handed out afterwards.
    evictIdleOnOutage: true,
  },
  leakDetection: {
    // On: it costs one stack capture per pool.connect() and warns only about clients that are leaked.
    enabled: true,
    // Off, as HikariCP's leakDetectionThreshold: some apps hold a client idle on purpose (a session advisory lock, a dedicated worker), so only the app can say how long is too long.
    idleThresholdMs: 0,
    // A client whose connection ended is useless; code that handles the error releases it within milliseconds, so five seconds still held is a leak.
    deadGraceMs: 5000,
  },
  transaction: {
    // Ten seconds rides out a dropped connection or a quick failover and still answers a request in time.
    outcomeResolutionMs: 10000,
  },
  failover: {
    // Until an error: a demoted primary answers writes with 25006 (or goes away), which drops its role at once; no extra checks on a healthy target.
    roleTrustMs: 0,
    // A role check is one connect and one query; past five seconds the host is as good as down for this connect.
    roleCheckTimeoutMs: 5000,
    // On: connections to a demoted server would fail every write sent on them.
    evictOnFailover: true,
  },
  connectionBudget: {
    // Off: the pool's max caps each process; a budget makes connects wait, so it is a deliberate choice.
    maxConnections: 0,
  },
};

/** `batch`: background jobs that prefer waiting over failing, and must not overload the database. */
const BATCH_PROFILE: ResilienceSettings = {
  retry: {
    // As default: retries run only for failures classified safe to repeat.
    enabled: true,
    // As default: two retries.
    maxAttempts: 3,
    // A job can afford to wait a second before retrying, which gives the database room to recover.
    initialDelayMs: 1000,
    // Waits of up to ten seconds are fine for a job and kind to a struggling server.
    maxDelayMs: 10000,
    // As default: doubling between attempts.
    multiplier: 2,
    // As default: decorrelated jitter keeps workers from retrying in lockstep.
    jitter: 'decorrelated',
    perErrorClass: {
      // As default: more patient when the server refuses connections.
      connect_refused: { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 2000 },
      // As default: wait for connection slots to free up.
      too_many_connections: { maxAttempts: 5, initialDelayMs: 200, maxDelayMs: 2000 },
      // As default: more tries after a lost connection (only safe statements are retried).
      connection_lost: { maxAttempts: 7 },
      // As default: never re-run a statement that hit the server's timeout.
      statement_timeout: { maxAttempts: 1 },
    },
    budget: {
      // As default: retries must not multiply the load during an outage.
      enabled: true,
      // As default: retries add at most 20% load.
      ratio: 0.2,
      // As default: a ten-second window.
      windowMs: 10000,
      // As default: a quiet target still gets a few retries.
      minRetries: 10,
    },
    // As default: off.
    holdClientErrorWhileSubstituting: false,
  },
  circuitBreaker: {
    // As default: stop hammering a database that is down.
    enabled: true,
    // As default: failures in a row.
    mode: 'consecutive',
    // As default: five failures in a row.
    consecutiveFailures: 5,
    // As default (failure_rate mode only).
    failureRateThreshold: 0.5,
    // As default (failure_rate mode only).
    failureRateWindowMs: 10000,
    // As default (failure_rate mode only).
    minimumRps: 5,
    // Thirty seconds: a job can wait, and the database gets real time to recover.
    halfOpenAfterMs: 30000,
    // As default: one probe at a time.
    halfOpenMaxProbes: 1,
    // Two successes before closing: do not unleash a whole batch on a server that answered once.
    successesToClose: 2,
    // Five seconds: a batch reconnects gently to a database that was just down.
    rampMs: 5000,
  },
  rateLimit: {
    // On: a batch must not starve the online traffic sharing the database.
    enabled: true,
    // Five calls per second sustained.
    ratePerMinute: 300,
    // Up to 50 calls at once after a quiet period.
    burst: 50,
    // Jobs wait for a permit rather than fail.
    strategy: 'wait',
    // queue strategy only: as default.
    maxQueueSize: 1000,
    // No limit: batch jobs accept long waits.
    maxWaitMs: 0,
  },
  timeout: {
    // As default: rely on the server's statement_timeout (batch statements can legitimately run long).
    queryMs: 0,
    // Thirty seconds: a busy server may be slow to accept, and a job can wait.
    connectMs: 30000,
    // As default: one second for the cancel's answer when queryMs is turned on.
    cancelGraceMs: 1000,
  },
  bulkhead: {
    // As default: off, the pool already caps concurrency.
    maxConcurrent: 0,
    // As default: 100 waiting calls when turned on.
    maxQueue: 100,
  },
  recovery: {
    // As default: probe in the background while the breaker is open.
    enabled: true,
    // Every thirty seconds: no hurry, and the probes stay light on a struggling server.
    intervalMs: 30000,
    // No earlier probes: the first comes after the interval too.
    firstProbeMs: 30000,
    // Three probes per outage, then recovery is left to the jobs' own traffic.
    maxAttempts: 3,
  },
  liveness: {
    // As default: a vanished server is found in about 20 s, not after Linux's 2 h.
    keepAliveInitialDelayMs: 10000,
    // As default: no connection from before an outage is handed out after it.
    evictIdleOnOutage: true,
  },
  leakDetection: {
    // As default: watch the clients checked out with pool.connect().
    enabled: true,
    // As default: off (jobs may hold a client idle for long on purpose).
    idleThresholdMs: 0,
    // As default: a dead client still held after five seconds is leaked.
    deadGraceMs: 5000,
  },
  transaction: {
    // A minute: a job would rather wait out a failover than stop on a transaction it cannot account for.
    outcomeResolutionMs: 60000,
  },
  failover: {
    // As default: until an error says the role changed.
    roleTrustMs: 0,
    // As default: five seconds per role check.
    roleCheckTimeoutMs: 5000,
    // As default: connections to a demoted server are closed.
    evictOnFailover: true,
  },
  connectionBudget: {
    // As default: off.
    maxConnections: 0,
  },
};

/** `telemetry`: the same in every profile. */
const TELEMETRY_DEFAULTS: TelemetrySettings = {
  // Problems only: a healthy app's output stays quiet, and a retry storm still shows.
  logLevel: 'warn',
  // Spans only for operations a policy acted on: a healthy operation pays for no span of ours.
  operationSpans: 'on_event',
  health: {
    // Unset: no endpoint unless asked for (it opens a port).
    port: undefined,
    // Loopback only: the endpoint reveals target names, so exposing it is a deliberate choice.
    host: DEFAULT_HEALTH_HOST,
  },
};

/** `coordination`: the same in every profile. */
const COORDINATION_DEFAULTS: CoordinationSettings = {
  redis: {
    // Unset: coordination is off and every limit holds per process, as without a fleet.
    url: undefined,
    // A single Redis (or a primary with replicas) unless said otherwise: a Cluster needs its own client.
    cluster: false,
  },
  // Unset: the service's name (OTEL_SERVICE_NAME), so replicas of one service share limits by default.
  fleet: undefined,
  // Tens of ms: a loopback or in-zone Redis answers in about 1 ms; past 50 ms a query must not wait on it.
  timeoutMs: 50,
  // Five seconds: a dead process's share comes back quickly, and a renewal every 1.7 s costs Redis nothing.
  leaseMs: 5000,
};

/** The profiles, frozen. `default` is used unless `profile` / PG_RESILIENCE_PROFILE says otherwise. */
export const PROFILES: Record<ProfileName, ResilienceSettings> = deepFreeze({
  default: DEFAULT_PROFILE,
  batch: BATCH_PROFILE,
});

/** The process-wide sections' defaults, frozen. */
export const GLOBAL_DEFAULTS: {
  readonly telemetry: TelemetrySettings;
  readonly coordination: CoordinationSettings;
} = deepFreeze({
  telemetry: TELEMETRY_DEFAULTS,
  coordination: COORDINATION_DEFAULTS,
});

/** What each profile is for (one line each, for the docs). */
export const PROFILE_SUMMARIES: Readonly<Record<ProfileName, string>> = Object.freeze({
  default: 'protect an online app, and never slow a healthy one',
  batch: 'background jobs that prefer waiting over failing, and must not overload the database',
});
