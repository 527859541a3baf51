/**
 * Telemetry settings: how much pg-resilience logs, which operations get a span, and the optional health
 * endpoint. From the instrumentation's `telemetry` option (code), else the environment, else defaults.
 * Invalid values fail at start-up with one ConfigError naming the field, the value and what is allowed.
 *
 * | Option (code)          | Variable                           | Default     |
 * |------------------------|------------------------------------|-------------|
 * | `logLevel`             | `PG_RESILIENCE_LOG_LEVEL`          | `warn`      |
 * | `operationSpans`       | `PG_RESILIENCE_OPERATION_SPANS`    | `on_event`  |
 * | `health.port`          | `PG_RESILIENCE_HEALTH_PORT`        | off         |
 * | `health.host`          | `PG_RESILIENCE_HEALTH_HOST`        | `127.0.0.1` |
 */
import { ConfigError, type ConfigIssue } from '../config/config-error.ts';
import type { EnvLike } from '../config/env.ts';

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

export interface TelemetryOptions {
  logLevel?: LogLevel;
  operationSpans?: OperationSpanMode;
  health?: { port?: number; host?: string };
}

export interface TelemetrySettings {
  readonly logLevel: LogLevel;
  readonly operationSpans: OperationSpanMode;
  /** undefined: no health endpoint. */
  readonly health: { readonly port: number; readonly host: string } | undefined;
}

export const DEFAULT_HEALTH_HOST = '127.0.0.1';

export const TELEMETRY_ENV_VARS = [
  {
    name: 'PG_RESILIENCE_LOG_LEVEL',
    option: 'logLevel',
    description:
      'Console log level of resilience events: `off`, `error`, `warn` (default), `info` or `debug`. Log records go to the OpenTelemetry logs API at every level.',
  },
  {
    name: 'PG_RESILIENCE_OPERATION_SPANS',
    option: 'operationSpans',
    description:
      'Which operations get a `pg_resilience <operation>` span: `on_event` (default: those a policy acted on), `always` or `off`.',
  },
  {
    name: 'PG_RESILIENCE_HEALTH_PORT',
    option: 'health.port',
    description:
      'Serve `GET /resilience/health` and `GET /resilience/state` on this port (1–65535; unset: no endpoint).',
  },
  {
    name: 'PG_RESILIENCE_HEALTH_HOST',
    option: 'health.host',
    description: 'Address the health endpoint binds to (default `127.0.0.1`: loopback only).',
  },
] as const;

function oneOf<T extends string>(
  issues: ConfigIssue[],
  field: string,
  source: string,
  value: unknown,
  allowed: readonly T[],
): T | undefined {
  if (value === undefined) return undefined;
  const v = typeof value === 'string' ? value.trim().toLowerCase() : value;
  if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
  issues.push({ field, value, source, allowed: `must be one of: ${allowed.join(', ')}` });
  return undefined;
}

function port(issues: ConfigIssue[], field: string, source: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value.trim()) : value;
  if (typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 65_535) return n;
  issues.push({
    field,
    value,
    source,
    allowed: 'must be an integer from 1 to 65535 (0 picks a free port)',
  });
  return undefined;
}

function host(issues: ConfigIssue[], field: string, source: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string' && value.trim() !== '' && !/[\s/]/.test(value.trim())) return value.trim();
  issues.push({
    field,
    value,
    source,
    allowed: 'must be a host name or IP address, e.g. 127.0.0.1 or 0.0.0.0',
  });
  return undefined;
}

const envValue = (env: EnvLike, name: string): string | undefined => {
  const raw = env[name];
  return raw === undefined || raw === '' ? undefined : raw;
};

/** Code options win over the environment. @throws ConfigError */
export function resolveTelemetrySettings(
  options: TelemetryOptions | undefined = {},
  env: EnvLike = process.env,
): TelemetrySettings {
  const issues: ConfigIssue[] = [];
  if (typeof options !== 'object' || options === null) {
    throw new ConfigError([
      { field: 'telemetry', value: options, source: 'code', allowed: 'must be an object' },
    ]);
  }
  const known = ['logLevel', 'operationSpans', 'health'];
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      issues.push({
        field: `telemetry.${key}`,
        value: (options as Record<string, unknown>)[key],
        source: 'code',
        allowed: `is not a telemetry option; known options: ${known.join(', ')}`,
      });
    }
  }
  const code = (field: string, value: unknown) => ({ field: `telemetry.${field}`, source: 'code', value });
  const fromEnv = (name: string) => ({ field: name, source: `env ${name}`, value: envValue(env, name) });
  const pick = (field: string, name: string, value: unknown) =>
    value !== undefined ? code(field, value) : fromEnv(name);

  const level = pick('logLevel', 'PG_RESILIENCE_LOG_LEVEL', options.logLevel);
  const spans = pick('operationSpans', 'PG_RESILIENCE_OPERATION_SPANS', options.operationSpans);
  const h = options.health;
  if (h !== undefined && (typeof h !== 'object' || h === null)) {
    issues.push({
      field: 'telemetry.health',
      value: h,
      source: 'code',
      allowed: 'must be an object { port, host }',
    });
  }
  const healthObj = typeof h === 'object' && h !== null ? h : {};
  for (const key of Object.keys(healthObj)) {
    if (key !== 'port' && key !== 'host') {
      issues.push({
        field: `telemetry.health.${key}`,
        value: (healthObj as Record<string, unknown>)[key],
        source: 'code',
        allowed: 'is not a telemetry option; known options: port, host',
      });
    }
  }
  const p = pick('health.port', 'PG_RESILIENCE_HEALTH_PORT', healthObj.port);
  const hh = pick('health.host', 'PG_RESILIENCE_HEALTH_HOST', healthObj.host);

  const logLevel = oneOf(issues, level.field, level.source, level.value, LOG_LEVELS) ?? 'warn';
  const operationSpans =
    oneOf(issues, spans.field, spans.source, spans.value, OPERATION_SPAN_MODES) ?? 'on_event';
  const healthPort = port(issues, p.field, p.source, p.value);
  const healthHost = host(issues, hh.field, hh.source, hh.value) ?? DEFAULT_HEALTH_HOST;
  if (issues.length > 0) throw new ConfigError(issues);
  return {
    logLevel,
    operationSpans,
    health: healthPort === undefined ? undefined : { port: healthPort, host: healthHost },
  };
}
