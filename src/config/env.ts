/**
 * The simple tier of configuration: PG_RESILIENCE_* environment variables, turned into partial options.
 *
 * Values are parsed here (numbers, booleans, names) but validated in resolve.ts with the same schema as
 * every other layer; errors report the raw string. An empty value counts as unset. Any PG_RESILIENCE_*
 * variable that is neither known nor reserved for another module is an error (it is most likely a typo).
 */
import type { ConfigIssue } from './config-error.ts';
import { type Obj, setAt } from './objects.ts';
import type { ResilienceOptions } from './types.ts';

const ENV_PREFIX = 'PG_RESILIENCE_';

/** An environment such as `process.env` (declared here so the package's types need no @types/node). */
export type EnvLike = Readonly<Record<string, string | undefined>>;

/** How a variable's text is read: `name` is trimmed and lower-cased, `text` trimmed, `path` kept as given. */
type EnvKind = 'boolean' | 'integer' | 'number' | 'name' | 'text' | 'path' | 'rateLimit';

export interface EnvVar {
  name: string;
  /** The setting it sets (dotted), if any. */
  setting?: string;
  kind: EnvKind;
  /** What the variable does, for the docs. */
  description: string;
  /** Replaces the setting's own "allowed" text in errors, when the variable accepts something else. */
  allowed?: string;
}

export const ENV_VARS: ReadonlyArray<EnvVar> = [
  {
    name: 'PG_RESILIENCE_DISABLED',
    setting: 'disabled',
    kind: 'boolean',
    description:
      'Turn the package off entirely: `true`/`false`, `1`/`0`, `yes`/`no`. The kill switch: `true` wins over code and skips validating the rest of the configuration.',
    allowed: 'must be one of: true, false, 1, 0, yes, no',
  },
  {
    name: 'PG_RESILIENCE_PROFILE',
    setting: 'profile',
    kind: 'name',
    description: 'The profile to start from: `default` or `batch`.',
  },
  {
    name: 'PG_RESILIENCE_CONFIG',
    kind: 'path',
    description:
      'Path of a JSON file holding any part of the configuration (relative to the working directory).',
  },
  {
    name: 'PG_RESILIENCE_RETRY_ATTEMPTS',
    setting: 'retry.maxAttempts',
    kind: 'integer',
    description:
      'Total attempts including the first; also caps the per-error-class attempts of lower layers (`1` = no retries at all).',
  },
  {
    name: 'PG_RESILIENCE_RETRY_INITIAL_DELAY_MS',
    setting: 'retry.initialDelayMs',
    kind: 'integer',
    description: 'Delay before the first retry, in ms.',
  },
  {
    name: 'PG_RESILIENCE_RETRY_MAX_DELAY_MS',
    setting: 'retry.maxDelayMs',
    kind: 'integer',
    description: 'Upper bound of any single retry delay, in ms.',
  },
  {
    name: 'PG_RESILIENCE_HOLD_CLIENT_ERROR_WHILE_SUBSTITUTING',
    setting: 'retry.holdClientErrorWhileSubstituting',
    kind: 'boolean',
    description:
      "Standalone clients: hold a dead client's 'error' until its read was answered on a substitute (for slonik; leave off for knex, Sequelize).",
  },
  {
    name: 'PG_RESILIENCE_TIMEOUT_MS',
    setting: 'timeout.queryMs',
    kind: 'integer',
    description: 'Per-attempt statement timeout, in ms (0 = off).',
  },
  {
    name: 'PG_RESILIENCE_CONNECT_TIMEOUT_MS',
    setting: 'timeout.connectMs',
    kind: 'integer',
    description: 'Per-attempt connect / pool checkout timeout, in ms (0 = off).',
  },
  {
    name: 'PG_RESILIENCE_KEEPALIVE_MS',
    setting: 'liveness.keepAliveInitialDelayMs',
    kind: 'integer',
    description:
      "TCP keepalive idle time of new connections whose pg config sets no keepAlive, in ms (0 = off: pg's default).",
  },
  {
    name: 'PG_RESILIENCE_RATE_LIMIT',
    setting: 'rateLimit.ratePerMinute',
    kind: 'rateLimit',
    description:
      'Permits per minute. A positive value also turns the limiter on (`rateLimit.enabled`); 0 turns it off.',
    allowed:
      'must be a number of permits per minute: 0 turns the limiter off, a number greater than 0 and at most 60000000 turns it on',
  },
  {
    name: 'PG_RESILIENCE_RATE_LIMIT_BURST',
    setting: 'rateLimit.burst',
    kind: 'integer',
    description: 'Rate limiter bucket size.',
  },
  {
    name: 'PG_RESILIENCE_RATE_LIMIT_STRATEGY',
    setting: 'rateLimit.strategy',
    kind: 'name',
    description: 'What a call does when no permit is free: `wait`, `drop` or `queue`.',
  },
  {
    name: 'PG_RESILIENCE_BREAKER_FAILURES',
    setting: 'circuitBreaker.consecutiveFailures',
    kind: 'integer',
    description: 'Failures in a row that open the breaker (consecutive mode).',
  },
  {
    name: 'PG_RESILIENCE_BREAKER_HALF_OPEN_AFTER_MS',
    setting: 'circuitBreaker.halfOpenAfterMs',
    kind: 'integer',
    description: 'Time the breaker stays open before it lets a probe through, in ms.',
  },
  {
    name: 'PG_RESILIENCE_BREAKER_RAMP_MS',
    setting: 'circuitBreaker.rampMs',
    kind: 'integer',
    description:
      'After the breaker closes from open: the window over which new connections ramp up, in ms (0 = off).',
  },
  {
    name: 'PG_RESILIENCE_RECOVERY_INTERVAL_MS',
    setting: 'recovery.intervalMs',
    kind: 'integer',
    description: 'Time between background recovery probes, in ms.',
  },
  {
    name: 'PG_RESILIENCE_RECOVERY_FIRST_PROBE_MS',
    setting: 'recovery.firstProbeMs',
    kind: 'integer',
    description:
      'The first background recovery probe after the breaker opens, in ms; the gaps then double up to the interval.',
  },
  {
    name: 'PG_RESILIENCE_TRANSACTION_OUTCOME_RESOLUTION_MS',
    setting: 'transaction.outcomeResolutionMs',
    kind: 'integer',
    description:
      'withTransaction: how long to keep asking whether a COMMIT lost in flight committed, in ms (0 = off).',
  },
  {
    name: 'PG_RESILIENCE_FAILOVER_ROLE_TRUST_MS',
    setting: 'failover.roleTrustMs',
    kind: 'integer',
    description:
      "Multi-host targets: how long a host's checked role is trusted before it is checked again, in ms (0 = until an error says it changed).",
  },
  {
    name: 'PG_RESILIENCE_FAILOVER_ROLE_CHECK_TIMEOUT_MS',
    setting: 'failover.roleCheckTimeoutMs',
    kind: 'integer',
    description: 'Multi-host targets: limit of one role check (connect, then query), in ms.',
  },
  {
    name: 'PG_RESILIENCE_FAILOVER_EVICT',
    setting: 'failover.evictOnFailover',
    kind: 'boolean',
    description:
      'Close the pooled connections to a server whose role changed (a failover or an endpoint flip): `true` (default) or `false` (also `1`/`0`, `yes`/`no`).',
    allowed: 'must be one of: true, false, 1, 0, yes, no',
  },
  {
    name: 'PG_RESILIENCE_BULKHEAD',
    setting: 'bulkhead.maxConcurrent',
    kind: 'integer',
    description: 'Concurrent calls per target (0 = off).',
  },
  {
    name: 'PG_RESILIENCE_MAX_CONNECTIONS',
    setting: 'connectionBudget.maxConnections',
    kind: 'integer',
    description:
      'Most server connections to each target: per process, or for the whole fleet with coordination on (0 = off, the default).',
  },
  {
    name: 'PG_RESILIENCE_LEAK_THRESHOLD_MS',
    setting: 'leakDetection.idleThresholdMs',
    kind: 'integer',
    description:
      'Warn once about a pool client checked out and idle (no statement running) for this long, in ms (0 = off, the default).',
  },
  {
    name: 'PG_RESILIENCE_LEAK_DEAD_GRACE_MS',
    setting: 'leakDetection.deadGraceMs',
    kind: 'integer',
    description:
      'Warn once about a checked-out pool client whose connection ended and that is not released after this long, in ms.',
  },
  {
    name: 'PG_RESILIENCE_LOG_LEVEL',
    setting: 'telemetry.logLevel',
    kind: 'name',
    description:
      'Console log level of resilience events: `off`, `error`, `warn` (default), `info` or `debug`. Log records go to the OpenTelemetry logs API at every level.',
  },
  {
    name: 'PG_RESILIENCE_OPERATION_SPANS',
    setting: 'telemetry.operationSpans',
    kind: 'name',
    description:
      'Which operations get a `pg_resilience <operation>` span: `on_event` (default: those a policy acted on), `always` or `off`.',
  },
  {
    name: 'PG_RESILIENCE_HEALTH_PORT',
    setting: 'telemetry.health.port',
    kind: 'integer',
    description:
      'Serve `GET /resilience/health` and `GET /resilience/state` on this port (1–65535; unset: no endpoint).',
  },
  {
    name: 'PG_RESILIENCE_HEALTH_HOST',
    setting: 'telemetry.health.host',
    kind: 'text',
    description: 'Address the health endpoint binds to (default `127.0.0.1`: loopback only).',
  },
  {
    name: 'PG_RESILIENCE_REDIS_URL',
    setting: 'coordination.redis.url',
    kind: 'text',
    description:
      'Turns fleet coordination on (see fleet.md): `redis://[user:password@]host:port/db` or `rediss://…`. The password is never shown.',
  },
  {
    name: 'PG_RESILIENCE_REDIS_CLUSTER',
    setting: 'coordination.redis.cluster',
    kind: 'boolean',
    description:
      'The Redis URL is one node of a Redis Cluster: `true`/`false`, `1`/`0`, `yes`/`no` (default false).',
    allowed: 'must be one of: true, false, 1, 0, yes, no',
  },
  {
    name: 'PG_RESILIENCE_FLEET',
    setting: 'coordination.fleet',
    kind: 'text',
    description: 'The fleet’s name, under which every key lives (unset: OTEL_SERVICE_NAME, else `default`).',
  },
  {
    name: 'PG_RESILIENCE_COORDINATION_TIMEOUT_MS',
    setting: 'coordination.timeoutMs',
    kind: 'integer',
    description:
      'Longest a Redis command may take before the process uses its own share of each fleet-wide limit, in ms.',
  },
];

/** Variables other parts of pg-resilience read: accepted here, not interpreted. */
export const RESERVED_ENV_VARS: ReadonlyArray<string> = ['PG_RESILIENCE_NODE_CACHE'];
/** Prefixes reserved for other modules (the test harness). */
export const RESERVED_ENV_PREFIXES: ReadonlyArray<string> = ['PG_RESILIENCE_TEST_'];

const BY_NAME = new Map(ENV_VARS.map((v) => [v.name, v]));
const NUMBER_TEXT = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const BOOLEANS: Record<string, boolean> = {
  true: true,
  false: false,
  1: true,
  0: false,
  yes: true,
  no: false,
};

/** True when a variable's text (trimmed) is a number as JavaScript writes one: `3`, `-0.5`, `1e3`. */
export const isNumberText = (text: string): boolean => NUMBER_TEXT.test(text.trim());

/** `true`/`false`, `1`/`0`, `yes`/`no` in any case; undefined for anything else. */
function parseBoolean(raw: string): boolean | undefined {
  const key = raw.trim().toLowerCase();
  return Object.hasOwn(BOOLEANS, key) ? BOOLEANS[key] : undefined;
}

/** Where an env-derived setting came from: the variable and its raw value. */
export interface EnvOrigin {
  name: string;
  raw: string;
  /** Replaces the setting's "allowed" text in errors. */
  allowed?: string;
}

export interface EnvLayer {
  /** The settings the variables set (values parsed; a value that does not parse stays the raw string). */
  options: ResilienceOptions;
  /** Dotted setting path → the variable that set it. */
  origins: Map<string, EnvOrigin>;
  /** PG_RESILIENCE_CONFIG, if set. */
  configPath?: string;
  /** Unknown PG_RESILIENCE_* variables. */
  issues: ConfigIssue[];
}

/**
 * The kill switch: PG_RESILIENCE_DISABLED set to `true`, `1` or `yes` (any case) switches the package
 * off, whatever else the configuration says.
 */
export function killSwitchOn(env: EnvLike = process.env): boolean {
  const raw = env.PG_RESILIENCE_DISABLED;
  return typeof raw === 'string' && parseBoolean(raw) === true;
}

function parseNumber(raw: string): number | string {
  return isNumberText(raw) ? Number(raw.trim()) : raw;
}

/** Reads the PG_RESILIENCE_* variables of `env`. */
export function readEnv(env: EnvLike): EnvLayer {
  const options: Obj = {};
  const origins = new Map<string, EnvOrigin>();
  const issues: ConfigIssue[] = [];
  let configPath: string | undefined;

  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith(ENV_PREFIX)) continue;
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    const spec = BY_NAME.get(name);
    if (!spec) {
      if (RESERVED_ENV_VARS.includes(name) || RESERVED_ENV_PREFIXES.some((p) => name.startsWith(p))) continue;
      const known = [...ENV_VARS.map((v) => v.name), ...RESERVED_ENV_VARS];
      const guess = closest(name, known, ENV_PREFIX);
      issues.push({
        field: name,
        value: raw,
        source: `env ${name}`,
        allowed: `is not a pg-resilience variable${guess ? ` (did you mean ${guess}?)` : ''}; known variables: ${known.join(', ')}`,
      });
      continue;
    }
    const origin: EnvOrigin = spec.allowed ? { name, raw, allowed: spec.allowed } : { name, raw };
    switch (spec.kind) {
      case 'path':
        // Kept as given: file.ts reports a blank one (which would otherwise name the working directory).
        configPath = raw;
        break;
      case 'boolean':
        setAt(options, spec.setting!, parseBoolean(raw) ?? raw);
        origins.set(spec.setting!, origin);
        break;
      case 'name':
        setAt(options, spec.setting!, raw.trim().toLowerCase());
        origins.set(spec.setting!, origin);
        break;
      case 'text':
        setAt(options, spec.setting!, raw.trim());
        origins.set(spec.setting!, origin);
        break;
      case 'integer':
      case 'number':
        setAt(options, spec.setting!, parseNumber(raw));
        origins.set(spec.setting!, origin);
        break;
      case 'rateLimit': {
        const value = parseNumber(raw);
        if (value === 0) {
          setAt(options, 'rateLimit.enabled', false);
          origins.set('rateLimit.enabled', origin);
        } else {
          if (typeof value === 'number' && value > 0) {
            setAt(options, 'rateLimit.enabled', true);
            origins.set('rateLimit.enabled', origin);
          }
          setAt(options, spec.setting!, value);
          origins.set(spec.setting!, origin);
        }
        break;
      }
    }
  }
  return configPath === undefined
    ? { options: options as ResilienceOptions, origins, issues }
    : { options: options as ResilienceOptions, origins, issues, configPath };
}

// ---- "did you mean" ----

function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/**
 * The candidate closest to `word` (case-insensitive edit distance), if it is close enough to be a
 * likely typo: at most a third of the word's length (at least 2) edits away.
 */
export function closest(word: string, candidates: Iterable<string>, strip = ''): string | undefined {
  const norm = (s: string) => (strip && s.startsWith(strip) ? s.slice(strip.length) : s).toLowerCase();
  const w = norm(word);
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = distance(w, norm(c));
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return bestD <= Math.max(2, Math.floor(w.length / 3)) ? best : undefined;
}
