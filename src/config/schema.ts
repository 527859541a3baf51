/**
 * zod schemas mirroring src/config/types.ts: one schema for every setting, per-target sections and
 * process-wide ones alike. Every field carries metadata (`.meta()`):
 * - `description`: what it does (published in docs/configuration.md, and in `z.toJSONSchema` output);
 * - `allowed`: what values are accepted, as used in error messages (`must be <allowed>`);
 * - `type`: the value's type, for the docs.
 *
 * Range checks live here. Rules that tie two fields together (initialDelayMs ≤ maxDelayMs…) need the
 * merged configuration and the source of each value: they live in rules.ts, each beside its prose.
 *
 * A new concern (a setting the policies of one target read) gets a section in `settingsSchema`; a
 * process-wide one (read once for the whole process, like `telemetry`) a section in `globalShape`.
 */
import { z } from 'zod';
import { ERROR_CLASSES, type ErrorClass } from '../classify/types.ts';
import {
  BACKPRESSURES,
  BREAKER_MODES,
  type DeepPartial,
  JITTERS,
  LOG_LEVELS,
  OPERATION_SPAN_MODES,
  PROFILE_NAMES,
  type ResilienceOptions,
  type ResilienceSettings,
  type RetryTiming,
  type TelemetrySettings,
  type CoordinationSettings,
} from './types.ts';
import { FLEET_NAME, isRedisUrl } from './redis-url.ts';
import { TARGET_KEY_SHAPE, TARGET_KEYS_ALLOWED } from './rules.ts';

export interface FieldMeta {
  description: string;
  /** Sentence fragment after "must be": `an integer from 1 to 100`. */
  allowed: string;
  /** integer, number, boolean, string, object, function. */
  type: string;
}

// ---- leaves ----

const int = (min: number, max: number, description: string, zero?: string) =>
  z
    .number()
    .int()
    .min(min)
    .max(max)
    .meta({
      description,
      allowed: `an integer from ${min} to ${max}${zero ? ` (0 = ${zero})` : ''}`,
      type: 'integer',
    });

const num = (min: number, max: number, description: string) =>
  z
    .number()
    .min(min)
    .max(max)
    .meta({ description, allowed: `a number from ${min} to ${max}`, type: 'number' });

const bool = (description: string) =>
  z.boolean().meta({ description, allowed: 'true or false', type: 'boolean' });

const oneOf = <const T extends readonly [string, ...string[]]>(values: T, description: string) =>
  z.enum(values).meta({ description, allowed: `one of: ${values.join(', ')}`, type: 'string' });

const object = <T extends z.core.$ZodLooseShape>(shape: T, description: string, allowed?: string) =>
  z.strictObject(shape).meta({
    description,
    allowed: allowed ?? `an object with the keys: ${Object.keys(shape).join(', ')}`,
    type: 'object',
  });

/** Longest single delay or wait accepted: 10 minutes. */
const MAX_DELAY_MS = 600_000;
/** Longest timeout accepted: 24 hours. */
const MAX_TIMEOUT_MS = 86_400_000;

// ---- retry ----

const retryTimingShape = {
  maxAttempts: int(
    1,
    100,
    'Total attempts including the first (1 = no retry). Caps the per-error-class attempts set at a lower layer (profile < file < env < code; a target caps what it inherits).',
  ),
  initialDelayMs: int(0, MAX_DELAY_MS, 'Delay before the first retry, in ms.'),
  maxDelayMs: int(0, MAX_DELAY_MS, 'Upper bound of any single delay between attempts, in ms.'),
  multiplier: num(1, 10, "Growth factor between delays (cockatiel's `exponent`)."),
  jitter: oneOf(
    JITTERS,
    'Randomisation of the delays: decorrelated (cockatiel’s decorrelatedJitterGenerator), full, or none.',
  ),
};

const retryTimingOverride = z
  .strictObject(retryTimingShape)
  .partial()
  .meta({
    description: 'Overrides of attempts and backoff for one error class; unset fields come from retry.*.',
    allowed: `an object with any of the keys: ${Object.keys(retryTimingShape).join(', ')}`,
    type: 'object',
  });

const perErrorClassSchema = object(
  Object.fromEntries(ERROR_CLASSES.map((c) => [c, retryTimingOverride.optional()])),
  'Per error class overrides of attempts and backoff (e.g. more patient for connect refusals). Keys are the error classes of docs/error-classification.md.',
  `an object keyed by error class (${ERROR_CLASSES.join(', ')})`,
) as unknown as z.ZodType<Partial<Record<ErrorClass, Partial<RetryTiming>>>>;

const budgetSchema = object(
  {
    enabled: bool(
      'Cap retries to a share of recent calls, so retries cannot multiply the load of an outage.',
    ),
    ratio: num(0, 1, 'Retries may not exceed this share of the calls made in the window.'),
    windowMs: int(1, MAX_DELAY_MS, 'Length of the sliding window, in ms.'),
    minRetries: int(
      0,
      1_000_000,
      'Retries always allowed per window whatever the ratio, so a quiet target can still retry.',
    ),
  },
  'Retry budget: a cap on retries relative to traffic. A connect the network refused or reset draws nothing from it (docs/retry-safety.md).',
);

const retrySchema = object(
  {
    enabled: bool('Retry failed calls that are classified transient and safe to repeat.'),
    ...retryTimingShape,
    perErrorClass: perErrorClassSchema,
    budget: budgetSchema,
    holdClientErrorWhileSubstituting: bool(
      "Standalone clients: when the connection dies under a read that may run on a substitute connection, hold the dead client's 'error' and 'end' until the read was answered, then emit them (next turn of the event loop). For owners that fail a statement on the client's first 'error' (slonik). Leave off for owners that learn of a dead client only from its 'error' before handing it out again (knex, Sequelize): they would hand the dead client to their next caller (see orms.md).",
    ),
  },
  'Retries of transient failures, with exponential backoff.',
);

// ---- the others ----

const circuitBreakerSchema = object(
  {
    enabled: bool('Stop calling a target that keeps failing; let probes through after a pause.'),
    mode: oneOf(
      BREAKER_MODES,
      '`consecutive`: open after N failures in a row; `failure_rate`: open when the failure share in a sliding window exceeds a threshold.',
    ),
    consecutiveFailures: int(1, 1000, 'consecutive mode: failures in a row that open the breaker.'),
    failureRateThreshold: num(
      0,
      1,
      'failure_rate mode: share of failed calls that opens the breaker (more than 0, less than 1).',
    ),
    failureRateWindowMs: int(1, MAX_DELAY_MS, 'failure_rate mode: sliding window length, in ms.'),
    minimumRps: num(
      0,
      1_000_000,
      'failure_rate mode: calls per second needed in the window before the rate is judged.',
    ),
    halfOpenAfterMs: int(
      0,
      MAX_DELAY_MS,
      'Time the breaker stays open before it lets probes through (half-open), in ms.',
    ),
    halfOpenMaxProbes: int(
      1,
      1000,
      'Calls let through at once while half-open; the others are rejected at once.',
    ),
    successesToClose: int(1, 1000, 'Successful half-open calls needed to close; any failure re-opens.'),
    rampMs: int(
      0,
      MAX_DELAY_MS,
      'After the breaker closes from open: the window over which new connections to the target ramp up (a few at first, unlimited at its end), in ms (0 = no ramp).',
      'no ramp',
    ),
  },
  'Circuit breaker, one per target.',
);

const rateLimitSchema = object(
  {
    enabled: bool(
      'Limit the call rate per target (off by default: a rate limit slows a healthy app by design).',
    ),
    ratePerMinute: z.number().gt(0).max(60_000_000).meta({
      description: 'Sustained permits per minute.',
      allowed: 'a number greater than 0 and at most 60000000',
      type: 'number',
    }),
    burst: int(1, 1_000_000, 'Bucket size: permits available at once after a quiet period.'),
    strategy: oneOf(
      BACKPRESSURES,
      'When no permit is free: wait (FIFO, up to maxWaitMs), drop (reject at once), queue (bounded FIFO of maxQueueSize, reject when full).',
    ),
    maxQueueSize: int(0, 1_000_000, 'queue strategy: most calls waiting at once.'),
    maxWaitMs: int(
      0,
      MAX_DELAY_MS,
      'wait and queue strategies: longest a call waits for a permit before it is rejected, in ms (0 = no limit).',
      'no limit',
    ),
  },
  'Token-bucket rate limiter, one per target.',
);

const timeoutSchema = object(
  {
    queryMs: int(
      0,
      MAX_TIMEOUT_MS,
      "Per-attempt limit for a statement, in ms (0 = off: rely on the server's statement_timeout).",
      'off',
    ),
    connectMs: int(
      0,
      MAX_TIMEOUT_MS,
      "Per-attempt limit for opening a connection, in ms (0 = off): a standalone connect, and a pool's new connection when the pool sets no connectionTimeoutMillis. A wait for a free pool client is never cut short.",
      'off',
    ),
    cancelGraceMs: int(
      0,
      MAX_TIMEOUT_MS,
      "When queryMs fires: the server is asked to cancel the statement, and the caller's timeout error waits at most this long for its answer (cancelled: the statement did not run; its result: returned; no answer: outcome unknown, connection closed). 0 = no cancel: the error comes at once, outcome unknown.",
      'no cancel',
    ),
  },
  'Client-side timeouts, per attempt.',
);

const bulkheadSchema = object(
  {
    maxConcurrent: int(0, 100_000, 'Concurrent calls per target (0 = off).', 'off'),
    maxQueue: int(0, 1_000_000, 'Calls that may wait for a slot when maxConcurrent are running.'),
  },
  'Concurrency cap per target.',
);

const recoverySchema = object(
  {
    enabled: bool('Probe a target whose breaker is open in the background (connect + SELECT 1).'),
    intervalMs: int(0, MAX_DELAY_MS, 'Time between probes, in ms.'),
    firstProbeMs: int(
      1,
      MAX_DELAY_MS,
      'The first probe after the breaker opens, in ms; the gaps then double up to intervalMs (at or above intervalMs: no earlier probes).',
    ),
    maxAttempts: int(
      0,
      1_000_000,
      'Probes per outage before the loop stops and leaves recovery to traffic (0 = no limit).',
      'no limit',
    ),
  },
  'Background recovery probes while a breaker is open.',
);

const livenessSchema = object(
  {
    keepAliveInitialDelayMs: int(
      0,
      MAX_TIMEOUT_MS,
      "TCP keepalive on each new connection whose pg config sets no `keepAlive`: idle time before the first probe, in ms (0 = off: pg's default, no keepalive). Node then sends up to 10 probes 1 s apart, so a silent peer is found about this long plus 10 s after the connection went quiet. A `keepAlive` (or `keepAliveInitialDelayMillis`) in the pg config wins.",
      'off',
    ),
    evictIdleOnOutage: bool(
      'When the breaker of a target opens, close the idle connections of every pool of that target, so none is handed out after the outage (a connection the outage killed silently would hang its next statement).',
    ),
  },
  'Finding dead connections before a statement waits on one.',
);

const leakDetectionSchema = object(
  {
    enabled: bool(
      'Watch the clients the app checks out with `pool.connect()` for leaks (see leak-detection.md).',
    ),
    idleThresholdMs: int(
      0,
      MAX_TIMEOUT_MS,
      'Warn once about a client checked out and idle (no statement running or queued) for this long, in ms (0 = off). A long-running statement is never idle; a client with a `notification` listener (LISTEN) is exempt.',
      'off',
    ),
    deadGraceMs: int(
      1,
      MAX_DELAY_MS,
      'Warn once about a checked-out client whose connection ended (killed, lost) and that is still not released after this long, in ms.',
    ),
  },
  'Leak detection for clients checked out with `pool.connect()`.',
);

const transactionSchema = object(
  {
    outcomeResolutionMs: int(
      0,
      MAX_DELAY_MS,
      'withTransaction: when the connection dies while COMMIT is in flight, how long to keep asking the server (on other connections) whether the transaction committed, in ms. Committed: the call returns the result; aborted: the transaction runs again from BEGIN (an attempt, within the retry limits); still unknown at the end: TransactionOutcomeUnknownError with the transaction id. 0 = off: no transaction id is learned (one round trip less per transaction) and the call fails with TransactionOutcomeUnknownError at once.',
      'off',
    ),
  },
  'withTransaction: settling a COMMIT lost in flight (see retry-safety.md).',
);

const failoverSchema = object(
  {
    roleTrustMs: int(
      0,
      MAX_TIMEOUT_MS,
      'Multi-host targets: how long the role found by a check of a host (primary or standby, read-only or not) is trusted, in ms. Past it, the next new connection checks the hosts again. 0 = until an error says the role changed (25006, 57P01/57P02/57P03, a refused connection): enough for `read-write` and `primary`, whose writes fail on a demoted server; set it for `read-only`, `standby` and `prefer-standby`, where a promoted standby answers reads without an error.',
      'until an error',
    ),
    roleCheckTimeoutMs: int(
      1,
      MAX_DELAY_MS,
      'Multi-host targets: limit of one role check, its connect and then its query, in ms. A host that does not answer in time counts as down for this connect and the next host is checked. A client whose own `connectionTimeoutMillis` is shorter uses that.',
    ),
    evictOnFailover: bool(
      "When a server's role changes under the app (a failover seen as 25006, 57P01/57P02/57P03, or an endpoint flip), close the pooled connections to it: idle ones at once, checked-out ones when released. Off: they stay in the pool and each fails on its own when used.",
    ),
  },
  'Multi-host targets and endpoint flips: role checks, eviction (see failover.md).',
);

const connectionBudgetSchema = object(
  {
    maxConnections: int(
      0,
      1_000_000,
      "Most server connections to the target: per process, or for the whole fleet when coordination is on (see fleet.md). A new connection (pool or standalone) waits for a slot, first come first served, bounded by its connect timeout (the pool's `connectionTimeoutMillis`, else `timeout.connectMs`), then fails with ConnectionBudgetExhaustedError (0 = off).",
      'off',
    ),
  },
  'The connection budget per target (see fleet.md).',
);

/** One target's complete settings. */
export const settingsSchema = object(
  {
    retry: retrySchema,
    circuitBreaker: circuitBreakerSchema,
    rateLimit: rateLimitSchema,
    timeout: timeoutSchema,
    bulkhead: bulkheadSchema,
    recovery: recoverySchema,
    liveness: livenessSchema,
    leakDetection: leakDetectionSchema,
    transaction: transactionSchema,
    failover: failoverSchema,
    connectionBudget: connectionBudgetSchema,
  },
  'The settings one target’s policies are built from.',
);

/** The per-target sections, in schema order. */
export const SETTINGS_SECTIONS = Object.keys(settingsSchema.shape) as ReadonlyArray<keyof ResilienceSettings>;

// ---- process-wide sections ----

const telemetrySchema = object(
  {
    logLevel: oneOf(
      LOG_LEVELS,
      'Console log level of resilience events. Log records go to the OpenTelemetry logs API at every level.',
    ),
    operationSpans: oneOf(
      OPERATION_SPAN_MODES,
      'Which operations get a `pg_resilience <operation>` span: `on_event` (those a policy acted on), `always` or `off`.',
    ),
    health: object(
      {
        port: z
          .number()
          .int()
          .min(0)
          .max(65_535)
          .meta({
            description:
              'Serve `GET /resilience/health` and `GET /resilience/state` on this port (0 picks a free port; unset: no endpoint).',
            allowed: 'an integer from 1 to 65535 (0 picks a free port)',
            type: 'integer',
          })
          .optional(),
        host: z
          .string()
          .regex(/^[^\s/]+$/)
          .meta({
            description: 'Address the health endpoint binds to.',
            allowed: 'a host name or IP address, e.g. 127.0.0.1 or 0.0.0.0',
            type: 'string',
          }),
      },
      'The health endpoint (see health.md).',
    ),
  },
  'Logs, spans and the health endpoint: process-wide, not per target (see telemetry.md).',
);

// ---- coordination (process-wide) ----

const coordinationSchema = object(
  {
    redis: object(
      {
        url: z
          .string()
          .refine(isRedisUrl)
          .meta({
            description:
              'Turns fleet coordination on: `redis://[user:password@]host:port/db` or `rediss://…` (TLS). The password never appears in logs, spans, metrics or errors.',
            allowed: 'a redis:// or rediss:// URL, e.g. redis://redis.internal:6379/0',
            type: 'string',
          })
          .optional(),
        cluster: bool(
          'The URL is one node of a Redis Cluster: the client discovers the others and follows the slot of the fleet’s keys (they share one hash tag). User, password and TLS of the URL apply to every node.',
        ),
      },
      'The Redis the fleet coordinates through (see fleet.md).',
    ),
    fleet: z
      .string()
      .regex(FLEET_NAME)
      .meta({
        description:
          'The fleet’s name: every key lives under `{pgr:<fleet>}` (unset: OTEL_SERVICE_NAME, else `default`). Processes with the same name share their limits.',
        allowed: '1 to 100 characters among letters, digits and . _ - : /',
        type: 'string',
      })
      .optional(),
    timeoutMs: int(
      1,
      10_000,
      'Longest a Redis command may take: past it the process stops waiting and uses its own share of each fleet-wide limit, in ms.',
    ),
    leaseMs: int(
      100,
      MAX_DELAY_MS,
      'Membership lease, in ms: renewed every third of it; a process that stops renewing (even killed with SIGKILL) leaves the fleet after this long, and a process cut off from Redis falls back to its own share within it.',
    ),
  },
  'Fleet coordination through Redis: process-wide (see fleet.md).',
);

/** The process-wide sections: one value for the whole process (not overridable per target). */
const globalShape = { telemetry: telemetrySchema, coordination: coordinationSchema };

// ---- partial schemas: what the layers (file, env, code, per-target overrides) may hold ----

function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema;
  while (s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
  return s;
}

/** The same schema with every object field optional, at every depth (zod 4 has no deepPartial). */
function deepPartial(schema: z.ZodType): z.ZodType {
  const s = unwrap(schema);
  if (!(s instanceof z.ZodObject)) return s;
  const shape: Record<string, z.ZodType> = {};
  for (const [key, field] of Object.entries(s.shape as Record<string, z.ZodType>)) {
    shape[key] = deepPartial(field).optional();
  }
  return z.strictObject(shape).meta(s.meta() ?? {});
}

/** What a per-target override may hold: any subset of the settings. */
const settingsOverrideSchema = deepPartial(settingsSchema) as z.ZodType<DeepPartial<ResilienceSettings>>;

const configFieldsShape = {
  disabled: bool('Turn the package off entirely (pg is left unpatched).'),
  profile: oneOf(
    PROFILE_NAMES,
    'The defaults to start from: `default` (online apps) or `batch` (background jobs).',
  ),
  targets: z.record(z.string(), settingsOverrideSchema.optional()).meta({
    description: `Per-target overrides, keyed ${TARGET_KEY_SHAPE} exactly as pg-resilience names the target, deep-merged over the settings above.`,
    allowed: TARGET_KEYS_ALLOWED,
    type: 'object',
  }),
};

const classifySchema = z
  .custom<NonNullable<ResilienceOptions['classify']>>((v) => typeof v === 'function')
  .meta({
    description:
      'Extend or override the error classification: `(error, defaults) => Partial<ErrorClassification> | undefined` (code only).',
    allowed: 'a function (error, defaults) => Partial<ErrorClassification> | undefined',
    type: 'function',
  });

/** What the JSON file (PG_RESILIENCE_CONFIG) may hold: everything but `classify`. */
export const fileOptionsSchema = z
  .strictObject({
    ...(deepPartial(settingsSchema) as z.ZodObject).shape,
    disabled: configFieldsShape.disabled.optional(),
    profile: configFieldsShape.profile.optional(),
    targets: configFieldsShape.targets.optional(),
    ...(deepPartial(z.strictObject(globalShape)) as z.ZodObject).shape,
  })
  .meta({ description: 'The JSON file', allowed: 'a JSON object', type: 'object' });

/** What code may pass (`ResilienceOptions`). */
export const optionsSchema = fileOptionsSchema
  .extend({ classify: classifySchema.optional() })
  .meta({ description: 'The options object', allowed: 'an object', type: 'object' });

/** The whole resolved configuration (for JSON Schema generation and the docs). */
export const configSchema = settingsSchema
  .extend({ ...configFieldsShape, ...globalShape, classify: classifySchema.optional() })
  .meta(settingsSchema.meta() ?? {});

// ---- walking the schemas ----

/** The metadata of a schema node (unwrapping `optional`). */
export function metaOf(schema: z.ZodType): FieldMeta | undefined {
  const m = unwrap(schema).meta() as Partial<FieldMeta> | undefined;
  return m?.description !== undefined && m.allowed !== undefined && m.type !== undefined
    ? (m as FieldMeta)
    : undefined;
}

/** The schema node at `path` under `root`, or undefined if the path leaves the schema. */
export function schemaAt(root: z.ZodType, path: ReadonlyArray<PropertyKey>): z.ZodType | undefined {
  let s: z.ZodType | undefined = unwrap(root);
  for (const key of path) {
    if (s instanceof z.ZodObject) {
      const shape: Record<string, z.ZodType> = s.shape;
      const next: z.ZodType | undefined = Object.hasOwn(shape, String(key)) ? shape[String(key)] : undefined;
      s = next === undefined ? undefined : unwrap(next);
    } else if (s instanceof z.ZodRecord) {
      s = unwrap(s.valueType as z.ZodType);
    } else {
      return undefined;
    }
    if (s === undefined) return undefined;
  }
  return s;
}

/** The keys an object node accepts (for "did you mean" and "known keys" hints). */
export function keysAt(root: z.ZodType, path: ReadonlyArray<PropertyKey>): string[] {
  const s = schemaAt(root, path);
  return s instanceof z.ZodObject ? Object.keys(s.shape) : [];
}

export interface LeafField {
  path: string[];
  schema: z.ZodType;
  meta: FieldMeta;
}

/** Every leaf of the settings (perErrorClass and its classes count as one leaf: an object). */
export function settingsLeaves(root: z.ZodType = settingsSchema, prefix: string[] = []): LeafField[] {
  const s = unwrap(root);
  const out: LeafField[] = [];
  if (s instanceof z.ZodObject) {
    for (const [key, field] of Object.entries(s.shape as Record<string, z.ZodType>)) {
      const child = unwrap(field);
      const meta = metaOf(child);
      if (child instanceof z.ZodObject && key !== 'perErrorClass')
        out.push(...settingsLeaves(child, [...prefix, key]));
      else if (meta) out.push({ path: [...prefix, key], schema: child, meta });
    }
  }
  return out;
}

// ---- the schemas mirror the contract (a type error here means types.ts and this file disagree) ----

type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const settingsMirror: Equals<z.infer<typeof settingsSchema>, ResilienceSettings> = true;
const telemetryMirror: Equals<z.infer<typeof telemetrySchema>, TelemetrySettings> = true;
void settingsMirror;
void telemetryMirror;
const coordinationMirror: Equals<z.infer<typeof coordinationSchema>, CoordinationSettings> = true;
void coordinationMirror;
