/**
 * What the policies need to know about an error. Produced by `classifyError()` for anything pg (or the
 * network, or this package) can raise; users can extend or override it through configuration.
 */

/**
 * The error classes that retry settings can be tuned for (`retry.perErrorClass`). Stable names: they
 * appear in configuration and documentation.
 */
export const ERROR_CLASSES = [
  /** The server could not be reached at all: ECONNREFUSED, ENOTFOUND, EAI_AGAIN, EHOSTUNREACH, ENETUNREACH, 57P03 (cannot connect now), 08001, 08004. Never reached the server. */
  'connect_refused',
  /** Connecting took too long: pg's "timeout expired", "Connection terminated due to connection timeout", ETIMEDOUT, and this package's own connect/probe timeout (PGR_TIMEOUT). */
  'connect_timeout',
  /** The pool had no client to give within its `connectionTimeoutMillis`: "timeout exceeded when trying to connect". Never reached the server; load, not a fault: never retried, never counted by the breaker. */
  'pool_exhausted',
  /** The server refused a new connection for lack of slots: 53300 (too many connections). */
  'too_many_connections',
  /** An established connection died: ECONNRESET, EPIPE, "Connection terminated unexpectedly", 08000/08003/08006, 57P01, 57P02, 25P03 (idle-in-transaction timeout). Outcome of an in-flight statement unknown. */
  'connection_lost',
  /** pg refuses to use a client whose connection already failed ("Client has encountered a connection error and is not queryable"): nothing was sent. */
  'client_unusable',
  /** pg's client-side `query_timeout` fired ("Query read timeout"), or this package's statement timeout (PGR_TIMEOUT): the statement may still run on the server. */
  'query_timeout',
  /** 40001 serialization failure: the transaction was rolled back; safe to re-run the whole transaction. */
  'serialization_failure',
  /** 40P01 deadlock detected: rolled back like 40001. */
  'deadlock',
  /** 55P03 lock not available (NOWAIT / lock_timeout): the statement failed, nothing applied. */
  'lock_not_available',
  /** Other class 53 (insufficient resources: out of memory, disk full…). */
  'insufficient_resources',
  /** 57014 statement timeout or cancel, and this package's statement timeout when the server cancelled the statement (PGR_TIMEOUT, `outcome: 'not_run'`): permanent, fail fast (retrying a slow query makes an overload worse). */
  'statement_timeout',
  /** 25P02 (in failed transaction), 25006 (read-only transaction) and other class 25: the transaction state forbids it. */
  'transaction_state',
  /** Class 28 (invalid authorization, wrong password). Permanent; never trips the breaker. */
  'auth',
  /** 3D000 (database does not exist). Permanent; never trips the breaker. */
  'database_missing',
  /** Class 42: syntax error or access rule violation. */
  'syntax_or_access',
  /** Class 23: integrity constraint violation. */
  'integrity',
  /** Class 22: data exception. */
  'data',
  /** 08P01 protocol violation: a bug, not a network fault. */
  'protocol',
  /** Any other SQLSTATE the server sent. */
  'other_server_error',
  /** Rejections produced by this package's own policies (breaker open, rate limited, bulkhead full, unknown COMMIT outcome). Never retried, never counted by the breaker. Its timeouts are classed connect_timeout / query_timeout. */
  'resilience_rejection',
  /** Anything else (programming errors, unknown shapes). */
  'unknown',
] as const;

export type ErrorClass = (typeof ERROR_CLASSES)[number];

/**
 * Did the failed operation reach the server?
 * - `no`: certainly not (nothing was sent, or the connection was never established): safe to repeat.
 * - `unknown`: it may have been applied (the connection died while it was in flight).
 * - `rejected`: the server received it and answered with an error: nothing was applied by that
 *   statement (outside a transaction it was rolled back).
 */
export type ServerReach = 'no' | 'unknown' | 'rejected';

export interface ErrorClassification {
  readonly errorClass: ErrorClass;
  /** Worth another attempt, if the call's safety rules allow it. */
  readonly transient: boolean;
  readonly reachedServer: ServerReach;
  /** Counts as a failure for the circuit breaker (the target looks unhealthy). */
  readonly countsForBreaker: boolean;
  /**
   * Low-cardinality label for telemetry's `error.type`: the SQLSTATE (e.g. `40001`), the errno
   * (e.g. `ECONNRESET`) or a short class name (e.g. `connection_lost`). Never a message.
   */
  readonly errorType: string;
}

/**
 * A user hook: return a partial classification to override the default one for this error, or
 * `undefined` to keep it.
 */
export type ClassifierOverride = (
  error: unknown,
  defaults: ErrorClassification,
) => Partial<ErrorClassification> | undefined;
