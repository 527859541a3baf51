/**
 * The catalog: every name pg-resilience emits — metric (name, instrument, unit, description,
 * attributes), span, span event, attribute key and log event. The metrics, spans and logs modules, the
 * README's telemetry reference (scripts/gen-telemetry-docs.ts), the Grafana dashboards, the alert rules
 * and the tests all take their names from here; nothing else spells a telemetry name.
 *
 * Naming follows OpenTelemetry: dotted lower-case names, UCUM units (`s`, `{retry}`…), no unit and no
 * `_total` in a name. Stable semantic-convention attributes are reused where they fit (`error.type`,
 * `db.system.name`, `db.namespace`, `server.address`, `server.port`). Cardinality stays bounded: an
 * attribute is a target, an enumerated value or an error type (SQLSTATE, errno code or error class
 * name), never query text, parameter values, client ids or messages.
 *
 * `prometheusName()` gives the series a metric becomes through `@opentelemetry/exporter-prometheus`
 * (non-`[a-zA-Z0-9_]` → `_`, counters get `_total`, histograms `_bucket`/`_sum`/`_count`, no unit
 * suffix).
 */

import { HOST_ROLES } from '../instrumentation/host-choice.ts';
import { LEAK_REASONS } from '../instrumentation/leak-detection.ts';
import { FAILOVER_KINDS } from '../instrumentation/write-availability.ts';
import {
  CANCEL_RESULTS,
  CIRCUIT_STATES,
  COMMIT_OUTCOME_RESULTS,
  RATE_LIMIT_REFUSALS,
  SUPPRESS_REASONS,
} from '../policy/events.ts';
import { COORDINATION_MODES } from '../coordination/coordinator.ts';

/** Attribute keys. */
export const ATTR = {
  /** `host:port/database`: the target the policies belong to. */
  TARGET: 'pg_resilience.target',
  /** `query` | `connect` | `transaction`. */
  OPERATION: 'pg_resilience.operation',
  /** `success` | `failure` | `rejected` (operations), `success` | `failure` (recovery probes). */
  OUTCOME: 'pg_resilience.outcome',
  /** Why a retry was suppressed or a rate-limited call rejected. */
  REASON: 'pg_resilience.reason',
  /** A breaker state: `closed` | `open` | `half_open`. */
  STATE: 'pg_resilience.state',
  FROM: 'pg_resilience.from',
  TO: 'pg_resilience.to',
  /** Where an absorbed client error came from: `pool` | `client`. */
  SOURCE: 'pg_resilience.source',
  /**
   * What a timed-out statement's cancel found: `cancelled` | `completed` | `no_answer`; what settling a
   * COMMIT lost in flight concluded: `committed` | `aborted` | `unknown`.
   */
  RESULT: 'pg_resilience.result',
  /** The transaction id looked up (span events and logs only: unbounded, never a metric attribute). */
  TRANSACTION_ID: 'pg_resilience.transaction_id',
  /** Status lookups made while settling a COMMIT lost in flight. */
  LOOKUPS: 'pg_resilience.lookups',
  /** Span attributes. */
  ATTEMPTS: 'pg_resilience.attempts',
  ATTEMPT: 'pg_resilience.attempt',
  MAX_ATTEMPTS: 'pg_resilience.max_attempts',
  DELAY: 'pg_resilience.delay_ms',
  WAITED: 'pg_resilience.waited_ms',
  NEXT_PROBE_AT: 'pg_resilience.next_probe_at',
  /** Log attributes of a leaked client: how long it was held, and the stack of its checkout. */
  HELD: 'pg_resilience.held_ms',
  /** Fleet coordination: `off` | `fleet` | `fallback`. */
  MODE: 'pg_resilience.mode',
  /** What a failover was detected by: `read_only` | `admin_shutdown` | `crash_shutdown` | `cannot_connect_now` | `endpoint_flip`. */
  KIND: 'pg_resilience.kind',
  /** A host's role as last found: `primary` | `standby` | `read_only` | `unknown`. */
  ROLE: 'pg_resilience.role',
  CODE_STACKTRACE: 'code.stacktrace',
  /** Semantic conventions (stable). */
  ERROR_TYPE: 'error.type',
  DB_SYSTEM_NAME: 'db.system.name',
  DB_NAMESPACE: 'db.namespace',
  SERVER_ADDRESS: 'server.address',
  SERVER_PORT: 'server.port',
} as const;

export type AttributeKey = (typeof ATTR)[keyof typeof ATTR];

/** The enumerated values of the attributes that have them (for zero-valued series and the docs). */
export const ATTRIBUTE_VALUES = {
  [ATTR.OPERATION]: ['query', 'connect', 'transaction'],
  [ATTR.OUTCOME]: ['success', 'failure', 'rejected'],
  [ATTR.STATE]: CIRCUIT_STATES,
  [ATTR.SOURCE]: ['pool', 'client'],
  statementCancellationResult: CANCEL_RESULTS,
  transactionOutcomeResult: COMMIT_OUTCOME_RESULTS,
  retrySuppressedReason: SUPPRESS_REASONS,
  rateLimitRejectedReason: RATE_LIMIT_REFUSALS,
  recoveryOutcome: ['success', 'failure'],
  evictionReason: ['breaker_open', 'failover'],
  leakReason: LEAK_REASONS,
  [ATTR.MODE]: COORDINATION_MODES,
  [ATTR.KIND]: FAILOVER_KINDS,
  [ATTR.ROLE]: HOST_ROLES,
  coordinationOutcome: ['success', 'failure'],
  fleetProbeResult: ['taken', 'skipped'],
} as const;

/**
 * Histogram bucket boundaries for database latency, in seconds: from 1 ms (a loopback `SELECT 1`) to
 * 30 s (a long outage ridden out by retries, or a statement timeout), roughly ×2–2.5 per bucket so p50,
 * p95 and p99 are read with useful precision across the whole range.
 */
export const DURATION_BUCKETS_S: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/**
 * Histogram bucket boundaries for a failover's write-unavailability window, in seconds: from 100 ms (a
 * promote noticed at once) to 5 minutes (a DNS flip waiting out a long TTL).
 */
export const FAILOVER_BUCKETS_S: readonly number[] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export type InstrumentKind = 'counter' | 'histogram' | 'gauge' | 'updowncounter';

export interface MetricSpec {
  /** The OpenTelemetry name. */
  readonly name: string;
  readonly kind: InstrumentKind;
  /** UCUM unit. */
  readonly unit: string;
  readonly description: string;
  /** Attribute keys every data point may carry. */
  readonly attributes: readonly string[];
  /** Histograms only: bucket boundaries. */
  readonly buckets?: readonly number[];
}

const T = ATTR.TARGET;
const OP = ATTR.OPERATION;

/** Every metric. The keys are how code refers to them; the names are the public contract. */
export const METRICS = {
  operationDuration: {
    name: 'pg_resilience.operation.duration',
    kind: 'histogram',
    unit: 's',
    description:
      'Duration of each logical operation, from the call to its answer: every attempt, backoff and rate-limit wait included.',
    attributes: [T, OP, ATTR.OUTCOME, ATTR.ERROR_TYPE],
    buckets: DURATION_BUCKETS_S,
  },
  retries: {
    name: 'pg_resilience.retries',
    kind: 'counter',
    unit: '{retry}',
    description: 'Retries performed (one per extra attempt), by the error that caused them.',
    attributes: [T, OP, ATTR.ERROR_TYPE],
  },
  retryExhausted: {
    name: 'pg_resilience.retry.exhausted',
    kind: 'counter',
    unit: '{operation}',
    description: 'Operations that failed with a retryable error after their last allowed attempt.',
    attributes: [T, OP, ATTR.ERROR_TYPE],
  },
  retrySuppressed: {
    name: 'pg_resilience.retry.suppressed',
    kind: 'counter',
    unit: '{operation}',
    description:
      'Transient failures deliberately not retried: inside a transaction, outcome unknown for a write, retry budget spent, or a client that cannot safely repeat.',
    attributes: [T, OP, ATTR.REASON, ATTR.ERROR_TYPE],
  },
  circuitState: {
    name: 'pg_resilience.circuit.state',
    kind: 'gauge',
    unit: '1',
    description: 'Circuit breaker state per target: 1 for the current state, 0 for the others.',
    attributes: [T, ATTR.STATE],
  },
  circuitTransitions: {
    name: 'pg_resilience.circuit.transitions',
    kind: 'counter',
    unit: '{transition}',
    description: 'Circuit breaker state changes, by the states left and entered.',
    attributes: [T, ATTR.FROM, ATTR.TO],
  },
  circuitRejections: {
    name: 'pg_resilience.circuit.rejections',
    kind: 'counter',
    unit: '{operation}',
    description: 'Operations refused at once because the breaker was open (or half-open and busy).',
    attributes: [T, OP],
  },
  rateLimitWaitDuration: {
    name: 'pg_resilience.rate_limit.wait.duration',
    kind: 'histogram',
    unit: 's',
    description: 'Time operations spent waiting for a rate-limit permit (only operations that waited).',
    attributes: [T, OP],
    buckets: DURATION_BUCKETS_S,
  },
  rateLimitQueueSize: {
    name: 'pg_resilience.rate_limit.queue.size',
    kind: 'updowncounter',
    unit: '{operation}',
    description: 'Operations waiting for a rate-limit permit now.',
    attributes: [T],
  },
  rateLimitRejections: {
    name: 'pg_resilience.rate_limit.rejections',
    kind: 'counter',
    unit: '{operation}',
    description:
      'Operations refused by the rate limiter: `drop` (no permit, strategy drop), `queue_full`, `max_wait` (waited too long).',
    attributes: [T, OP, ATTR.REASON],
  },
  bulkheadRejections: {
    name: 'pg_resilience.bulkhead.rejections',
    kind: 'counter',
    unit: '{operation}',
    description: 'Operations refused because the concurrency cap and its queue were full.',
    attributes: [T, OP],
  },
  timeouts: {
    name: 'pg_resilience.timeouts',
    kind: 'counter',
    unit: '{attempt}',
    description: "Attempts abandoned at the package's client-side timeout (query or connect).",
    attributes: [T, OP],
  },
  statementCancellations: {
    name: 'pg_resilience.statement.cancellations',
    kind: 'counter',
    unit: '{statement}',
    description:
      'Timed-out statements the server was asked to cancel, by result: `cancelled` (did not run), `completed` (finished first), `no_answer` (outcome unknown, connection closed).',
    attributes: [T, ATTR.RESULT],
  },
  recoveryAttempts: {
    name: 'pg_resilience.recovery.attempts',
    kind: 'counter',
    unit: '{probe}',
    description: 'Background recovery probes (connect + SELECT 1) while a breaker was open, by outcome.',
    attributes: [T, ATTR.OUTCOME],
  },
  transactionOutcomeResolutions: {
    name: 'pg_resilience.transaction.outcome_resolutions',
    kind: 'counter',
    unit: '{resolution}',
    description:
      'withTransaction COMMITs lost in flight, by what asking the server concluded: `committed` (the result was returned), `aborted` (the transaction ran again), `unknown` (TransactionOutcomeUnknownError: no server answered within transaction.outcomeResolutionMs, or the id was too old).',
    attributes: [T, ATTR.RESULT],
  },
  poolClientErrors: {
    name: 'pg_resilience.pool.client_errors',
    kind: 'counter',
    unit: '{error}',
    description:
      "'error' events on pg pools and clients with no listener, absorbed instead of crashing the process.",
    attributes: [T, ATTR.SOURCE, ATTR.ERROR_TYPE],
  },
  connectionsEvicted: {
    name: 'pg_resilience.pool.connections.evicted',
    kind: 'counter',
    unit: '{connection}',
    description:
      'Idle pooled connections closed before any statement could wait on them, by reason: `breaker_open` (the target looked unreachable, so connections from before the outage are not handed out after it), `failover` (their server answered 25006 or 57P01/57P02/57P03: its role changed, docs/failover.md).',
    attributes: [T, ATTR.REASON],
  },
  failovers: {
    name: 'pg_resilience.failovers',
    kind: 'counter',
    unit: '{failover}',
    description:
      "Failovers detected, by what signalled the first sign of each: a server's error (`read_only` 25006, `admin_shutdown` 57P01, `crash_shutdown` 57P02, `cannot_connect_now` 57P03) or `endpoint_flip` (one address now leading to a read-only server). The signals that follow the first, until a write succeeds again, count as the same failover (docs/failover.md).",
    attributes: [T, ATTR.KIND],
  },
  hostRole: {
    name: 'pg_resilience.host.role',
    kind: 'gauge',
    unit: '1',
    description:
      'Each host of a multi-host target, by role as last found: 1 for the current role, 0 for the others. `primary` (accepts writes), `standby` (in recovery), `read_only` (its sessions are read-only), `unknown` (not checked since an error said its role changed, or unreachable; always with target_session_attrs=any, which checks no role).',
    attributes: [T, ATTR.SERVER_ADDRESS, ATTR.SERVER_PORT, ATTR.ROLE],
  },
  writeUnavailability: {
    name: 'pg_resilience.failover.write_unavailability',
    kind: 'histogram',
    unit: 's',
    description:
      "Each failover's write-unavailability window: from its first signal to the first INSERT, UPDATE, DELETE or MERGE that succeeded on the target again (on the new primary), by what signalled it. Recorded when writes are back.",
    attributes: [T, ATTR.KIND],
    buckets: FAILOVER_BUCKETS_S,
  },
  poolClientLeaks: {
    name: 'pg_resilience.pool.client.leaks',
    kind: 'counter',
    unit: '{client}',
    description:
      'Clients checked out with pool.connect() and reported as leaked, once each: `dead_not_released` (its connection ended and it was not released within the grace), `held_too_long` (idle while checked out past the threshold; off by default).',
    attributes: [T, ATTR.REASON],
  },
  poolClientsLeaked: {
    name: 'pg_resilience.pool.client.leaked',
    kind: 'gauge',
    unit: '{client}',
    description: 'Clients reported as leaked and still not released: pool slots lost until they are.',
    attributes: [T],
  },
  // ---- connection budget (per target) ----
  connectionBudgetHeld: {
    name: 'pg_resilience.connection_budget.held',
    kind: 'gauge',
    unit: '{connection}',
    description:
      "Slots of the target's connection budget this process holds: its server connections open or opening (0 when no budget is set).",
    attributes: [T],
  },
  connectionBudgetCapacity: {
    name: 'pg_resilience.connection_budget.capacity',
    kind: 'gauge',
    unit: '{connection}',
    description:
      'Slots this process may hold now: the budget (per process), or its lease of the fleet-wide budget from Redis, or its fallback share (budget / live members) while Redis is unreachable (0 when no budget is set).',
    attributes: [T],
  },
  connectionBudgetWaitDuration: {
    name: 'pg_resilience.connection_budget.wait.duration',
    kind: 'histogram',
    unit: 's',
    description:
      'Time new connections waited for a slot of the connection budget (only those that waited), by outcome: `success` (got one), `rejected` (waited the whole connect timeout: ConnectionBudgetExhaustedError).',
    attributes: [T, ATTR.OUTCOME],
    buckets: DURATION_BUCKETS_S,
  },
  connectionBudgetExhausted: {
    name: 'pg_resilience.connection_budget.exhausted',
    kind: 'counter',
    unit: '{connect}',
    description:
      'New connections that failed with ConnectionBudgetExhaustedError: every slot of the budget stayed in use for the whole connect timeout.',
    attributes: [T],
  },
  // ---- fleet coordination (process-wide: no target) ----
  coordinationMode: {
    name: 'pg_resilience.coordination.mode',
    kind: 'gauge',
    unit: '1',
    description:
      'Fleet coordination: 1 for the current mode, 0 for the others. `off` (no Redis configured), `fleet` (limits shared through Redis), `fallback` (Redis unreachable or slow: each limit holds per process at its share).',
    attributes: [ATTR.MODE],
  },
  coordinationMembers: {
    name: 'pg_resilience.coordination.members',
    kind: 'gauge',
    unit: '{process}',
    description:
      'Live members of the fleet this process last saw in Redis, itself included (1 when coordination is off).',
    attributes: [],
  },
  coordinationCommands: {
    name: 'pg_resilience.coordination.commands',
    kind: 'counter',
    unit: '{command}',
    description:
      'Redis commands of fleet coordination (permit batches, lease renewals), by outcome: `failure` covers errors, refusals and answers slower than coordination.timeoutMs.',
    attributes: [ATTR.OUTCOME],
  },
  coordinationLatency: {
    name: 'pg_resilience.coordination.latency',
    kind: 'gauge',
    unit: 's',
    description:
      'The slowest Redis command of fleet coordination since the previous collection (0 when none ran).',
    attributes: [],
  },
  // ---- fleet-aware breaker (coordination on) ----
  circuitFleetOpen: {
    name: 'pg_resilience.circuit.fleet_open',
    kind: 'gauge',
    unit: '1',
    description:
      'Fleet-aware breaker, per target: 1 while the target is open fleet-wide (a quorum of live members saw it down; every process holds its breaker open), 0 otherwise. Only with coordination on.',
    attributes: [T],
  },
  circuitFleetProbes: {
    name: 'pg_resilience.circuit.fleet_probes',
    kind: 'counter',
    unit: '{probe}',
    description:
      "Recovery probes due while a target is open fleet-wide, by `pg_resilience.result`: `taken` (this process held the fleet's probe lock and probed), `skipped` (another process held it). Fleet-wide, about one `taken` per recovery interval.",
    attributes: [T, ATTR.RESULT],
  },
} as const satisfies Record<string, MetricSpec>;

export type MetricKey = keyof typeof METRICS;

/** Span names. `operation` spans are named `pg_resilience <operation>`. */
export const SPANS = {
  /** One logical operation the policies acted on: parent of its attempts' pg spans. */
  operation: (operation: string): string => `pg_resilience ${operation}`,
  operationNames: ['pg_resilience query', 'pg_resilience connect', 'pg_resilience transaction'],
  /** One background recovery probe (connect + SELECT 1). */
  recoveryProbe: 'pg_resilience recovery.probe',
  /** A breaker state change that no traced operation caused. */
  circuitStateChange: 'pg_resilience circuit.state_change',
} as const;

/** Span events on an operation span (and `circuit.state_change` on whichever span caused it). */
export const SPAN_EVENTS = {
  retry: 'retry',
  retrySuppressed: 'retry.suppressed',
  retryExhausted: 'retry.exhausted',
  rateLimitWait: 'rate_limit.wait',
  circuitRejected: 'circuit.rejected',
  rateLimitRejected: 'rate_limit.rejected',
  bulkheadRejected: 'bulkhead.rejected',
  circuitStateChange: 'circuit.state_change',
  transactionOutcomeResolution: 'transaction.outcome_resolution',
} as const;

/** The `event.name` of each log record (the OpenTelemetry logs API's event name). */
export const LOG_EVENTS = {
  retry: 'pg_resilience.retry',
  retrySuppressed: 'pg_resilience.retry.suppressed',
  retryExhausted: 'pg_resilience.retry.exhausted',
  circuitStateChange: 'pg_resilience.circuit.state_change',
  rateLimitRejected: 'pg_resilience.rate_limit.rejected',
  bulkheadRejected: 'pg_resilience.bulkhead.rejected',
  timeout: 'pg_resilience.timeout',
  recoveryAttempt: 'pg_resilience.recovery.attempt',
  clientErrorAbsorbed: 'pg_resilience.pool.client_error',
  connectionsEvicted: 'pg_resilience.pool.connections.evicted',
  clientLeaked: 'pg_resilience.pool.client.leak',
  transactionOutcomeResolution: 'pg_resilience.transaction.outcome_resolution',
  failover: 'pg_resilience.failover',
  writesRestored: 'pg_resilience.failover.writes_restored',
} as const;

/** The Prometheus series names a metric becomes through @opentelemetry/exporter-prometheus. */
export function prometheusName(spec: MetricSpec): string {
  const base = spec.name.replace(/[^a-zA-Z0-9_]/g, '_');
  return spec.kind === 'counter' ? `${base}_total` : base;
}

/** Every series name of a metric as scraped (histograms: `_bucket`, `_sum`, `_count`). */
export function prometheusSeries(spec: MetricSpec): string[] {
  const base = prometheusName(spec);
  return spec.kind === 'histogram' ? [`${base}_bucket`, `${base}_sum`, `${base}_count`] : [base];
}

/** A metric attribute key as a Prometheus label. */
export function prometheusLabel(key: string): string {
  return key.replace(/[^a-zA-Z0-9_]/g, '_');
}
