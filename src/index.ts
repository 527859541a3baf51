// pg-resilience: the public API. The Node.js guard comes first so an unsupported Node fails with one
// clear message before anything else loads.
import './node-guard.ts';

export type { ClassifierOverride, ErrorClass, ErrorClassification, ServerReach } from './classify/types.ts';
export { classifyError } from './classify/index.ts';
export { ERROR_CLASSES } from './classify/types.ts';
export {
  ConfigError,
  type ConfigIssue,
  isConfigError,
  PROFILES,
  resolveConfig,
  settingsForTarget,
} from './config/index.ts';
export type {
  Backpressure,
  BreakerMode,
  BulkheadSettings,
  ConnectionBudgetSettings,
  CircuitBreakerSettings,
  DeepPartial,
  HealthEndpointSettings,
  Jitter,
  LogLevel,
  OperationSpanMode,
  ProfileName,
  RateLimitSettings,
  RecoverySettings,
  ResilienceConfig,
  ResilienceOptions,
  ResilienceSettings,
  RetryBudgetSettings,
  RetrySettings,
  RetryTiming,
  TelemetryOptions,
  TelemetrySettings,
  TimeoutSettings,
} from './config/types.ts';
export {
  BulkheadRejectedError,
  ConnectionBudgetExhaustedError,
  isConnectionBudgetExhaustedError,
  CircuitOpenError,
  isBulkheadRejectedError,
  isCircuitOpenError,
  isOperationTimeoutError,
  isRateLimitedError,
  isResilienceError,
  isTransactionOutcomeUnknownError,
  isTransactionRolledBackError,
  OperationTimeoutError,
  RateLimitedError,
  ResilienceError,
  type ResilienceErrorCode,
  TransactionOutcomeUnknownError,
  TransactionRolledBackError,
} from './errors.ts';
export { PgResilienceInstrumentation } from './instrumentation/instrumentation.ts';
export type { PgResilienceInstrumentationConfig } from './instrumentation/types.ts';
export { MIN_NODE_VERSION } from './node-guard.ts';
export type { ClientErrorAbsorbedEvent, ErrorSource } from './crash-guards/error-guards.ts';
export type {
  HealthReport,
  PoolState,
  RecentState,
  ResilienceState,
  TargetHealth,
  TargetState,
} from './telemetry/health.ts';
export { getResilienceHealth, getResilienceState } from './telemetry/introspection.ts';
export {
  ATTR,
  DURATION_BUCKETS_S,
  LOG_EVENTS,
  type MetricSpec,
  METRICS,
  prometheusName,
  prometheusSeries,
  SPAN_EVENTS,
  SPANS,
} from './telemetry/catalog.ts';
export { IDEMPOTENT, idempotent, isMarkedIdempotent, isReadOnlyStatement } from './safety/index.ts';
export {
  type IsolationLevel,
  type TransactionClient,
  type TransactionOptions,
  type TransactionPool,
  withTransaction,
} from './transaction/with-transaction.ts';
