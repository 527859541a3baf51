import type { InstrumentationConfig } from '@opentelemetry/instrumentation';
import type { ResilienceOptions } from '../config/types.ts';

/**
 * The instrumentation's configuration: the resilience options (the highest-precedence layer of
 * `resolveConfig`, over the profile, the JSON file and the PG_RESILIENCE_* variables; `telemetry`
 * included) plus OpenTelemetry's `enabled`.
 */
export interface PgResilienceInstrumentationConfig extends InstrumentationConfig, ResilienceOptions {}

/** pg's Client as far as the patches need it (src/ never loads pg at run time). */
export interface PgClientLike {
  readonly host?: string;
  readonly port?: number;
  readonly database?: string;
  /** Set by pg-pool on the clients it hands out. */
  readonly release?: unknown;
  listenerCount(event: string): number;
}

/** pg-pool's Pool as far as the patches need it. */
export interface PgPoolLike {
  readonly options?: { host?: string; port?: number | string; database?: string; connectionString?: string };
  /** true once `pool.end()` was called. */
  readonly ending?: boolean;
  listenerCount(event: string): number;
}

/** An EventEmitter's `emit`, as patched on the prototypes. */
export type EmitFn = (this: unknown, event: string | symbol, ...args: unknown[]) => boolean;
