/**
 * The public introspection API: what the policies are doing now, per target, for an app's own health
 * checks and admin pages. The same answers as the health endpoint (`GET /resilience/state`,
 * `GET /resilience/health`), without HTTP. Works with or without the instrumentation: with none enabled
 * it answers for the policies `withTransaction` uses on its own.
 */
import { runtime } from '../runtime.ts';
import type { HealthReport, ResilienceState } from './health.ts';

/**
 * Per target: breaker state and since when, last failure, next probe time, rate-limit tokens and queue
 * length, retry budget left, pool usage, counters and the recent failure ratio. JSON-serialisable.
 */
export function getResilienceState(): ResilienceState {
  return runtime().health().state();
}

/** The health report: healthy (every breaker closed), a 0–100 score, and the reasons when not healthy. */
export function getResilienceHealth(): HealthReport {
  return runtime().health().health();
}
