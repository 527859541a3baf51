/**
 * The series `@opentelemetry/instrumentation-pg` (0.77) exports, as scraped through
 * `@opentelemetry/exporter-prometheus` (dots → underscores, no unit suffix). They are not ours, so they
 * are not in the catalog (src/telemetry/catalog.ts): this is the one place the dashboards spell them.
 * Checked against a real exposition (`PG_RESILIENCE_TEST_DUMP_METRICS=/tmp/metrics.txt npm run
 * test:integration -- test/integration/telemetry.test.ts`).
 */

/** Metric names (histograms: the base name; their series add `_bucket`, `_sum`, `_count`). */
export const PG_CLIENT_METRICS = {
  /** Histogram (s): `db.client.operation.duration`, one observation per query. */
  operationDuration: 'db_client_operation_duration',
  /** Gauge: `db.client.connection.count`, connections per pool and state (`used` | `idle`). */
  connectionCount: 'db_client_connection_count',
  /** Gauge: `db.client.connection.pending_requests`, callers waiting for a pooled connection. */
  connectionPendingRequests: 'db_client_connection_pending_requests',
  /** Gauge: `db.client.connection.max`, the pool's `max`. */
  connectionMax: 'db_client_connection_max',
} as const;

/** Their labels. */
export const PG_CLIENT_LABELS = {
  /** `SELECT`, `INSERT`, `BEGIN`… (operationDuration). */
  operationName: 'db_operation_name',
  /** SQLSTATE of a failed query (operationDuration; absent on success). */
  errorType: 'error_type',
  /** `host:port/database` (the connection gauges): the same string as `pg_resilience_target`. */
  poolName: 'db_client_connection_pool_name',
  /** `used` | `idle` (connectionCount). */
  connectionState: 'db_client_connection_state',
} as const;

/** Every series name instrumentation-pg's metrics become. */
export const PG_CLIENT_SERIES: readonly string[] = [
  `${PG_CLIENT_METRICS.operationDuration}_bucket`,
  `${PG_CLIENT_METRICS.operationDuration}_sum`,
  `${PG_CLIENT_METRICS.operationDuration}_count`,
  PG_CLIENT_METRICS.connectionCount,
  PG_CLIENT_METRICS.connectionPendingRequests,
  PG_CLIENT_METRICS.connectionMax,
];
