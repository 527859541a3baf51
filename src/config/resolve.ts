/**
 * Resolves the configuration once, at start-up: profile defaults < JSON file (PG_RESILIENCE_CONFIG) <
 * PG_RESILIENCE_* variables < the options passed in code. Every layer is validated on its own (so each
 * problem names the layer it came from), then the merged result is checked for contradictions (for the
 * base settings and for every target's merged settings). All problems found are thrown together as one
 * ConfigError. The result is deep-frozen.
 */
import { ERROR_CLASSES } from '../classify/types.ts';
import { ConfigError, type ConfigIssue } from './config-error.ts';
import { PROFILES } from './defaults.ts';
import { closest, type EnvLike, type EnvOrigin, readEnv } from './env.ts';
import { type ReadFile, readConfigFile, readFileUtf8 } from './file.ts';
import {
  fileOptionsSchema,
  keysAt,
  metaOf,
  optionsSchema,
  schemaAt,
  settingsLeaves,
  TARGET_KEY_ALLOWED,
} from './schema.ts';
import type { ProfileName, ResilienceConfig, ResilienceOptions, ResilienceSettings } from './types.ts';

type Obj = Record<string, unknown>;
type Path = ReadonlyArray<PropertyKey>;

const SETTINGS_KEYS = ['retry', 'circuitBreaker', 'rateLimit', 'timeout', 'bulkhead', 'recovery'] as const;

// ---- small helpers ----

const isObject = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Sets an own property, even for keys such as `__proto__` (JSON.parse makes those own properties). */
function setOwn(obj: Obj, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function clone(v: unknown): unknown {
  if (!isObject(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) setOwn(out, k, clone(x));
  return out;
}

function getAt(v: unknown, path: Path): unknown {
  let node = v;
  for (const key of path) {
    if (!isObject(node) || !Object.hasOwn(node, key)) return undefined;
    node = node[key as string];
  }
  return node;
}

function deleteAt(v: Obj, path: Path): void {
  const parent = getAt(v, path.slice(0, -1));
  if (isObject(parent)) delete parent[path[path.length - 1] as string];
}

/** `retry.maxAttempts`, `targets["db:5432/app"].retry.maxAttempts`. */
export function label(path: Path): string {
  let out = '';
  path.forEach((key, i) => {
    const k = String(key);
    if (i === 1 && path[0] === 'targets') out += `[${JSON.stringify(k)}]`;
    else out += out ? `.${k}` : k;
  });
  return out;
}

function deepFreeze<T>(value: T): T {
  if (isObject(value) && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** `override` over `base`, recursively; `undefined` in the override means unset. Neither is modified. */
function deepMerge<T>(base: T, override: unknown): T {
  if (!isObject(base) || !isObject(override)) return (override === undefined ? base : override) as T;
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(override)) {
    if (v === undefined) continue;
    setOwn(out, k, isObject(v) && isObject(out[k]) ? deepMerge(out[k], v) : v);
  }
  return out as T;
}

// ---- target keys ----

const TARGET_KEY = /^(\S+):(\d{1,5})\/([^/\s]+)$/;

export function isValidTargetKey(key: string): boolean {
  const m = TARGET_KEY.exec(key);
  if (!m) return false;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535;
}

// ---- where each value came from ----

interface Origin {
  /** `profile`, `file /path`, `env PG_RESILIENCE_X`, `code`. */
  source: string;
  /** Precedence: profile 0, file 1, env 2, code 3. */
  rank: number;
  /** Environment variables: the raw string, reported instead of the parsed value. */
  raw?: string;
  /** Environment variables that accept something else than the setting's own values. */
  allowed?: string;
}

const PROFILE_ORIGIN: Origin = { source: 'profile', rank: 0 };
const CODE_ORIGIN: Origin = { source: 'code', rank: 3 };

function envOrigin(o: EnvOrigin): Origin {
  const origin: Origin = { source: `env ${o.name}`, rank: 2, raw: o.raw };
  if (o.allowed) origin.allowed = o.allowed;
  return origin;
}

interface Layer {
  kind: 'file' | 'env' | 'code';
  /** What the layer holds, as given. */
  data: unknown;
  schema: typeof fileOptionsSchema | typeof optionsSchema;
  /** The field name for an issue with the whole layer (it is not an object). */
  rootName: string;
  originOf(path: Path): Origin;
}

// ---- validating one layer ----

function unknownKeyHint(layer: Layer, parent: Path, key: string): string {
  if (layer.kind === 'file' && parent.length === 0 && key === 'classify') {
    return 'can only be set in code (a function), not in the JSON file';
  }
  const siblings = keysAt(layer.schema, parent);
  const where = parent.length ? label(parent) : 'the top level';
  if (parent[parent.length - 1] === 'perErrorClass') {
    const guess = closest(key, ERROR_CLASSES);
    return `is not an error class${guess ? ` (did you mean ${guess}?)` : ''}; error classes: ${ERROR_CLASSES.join(', ')}`;
  }
  let guesses: string[];
  const sibling = closest(key, siblings);
  if (sibling) guesses = [label([...parent, sibling])];
  else {
    // A known setting put at the wrong depth: `maxAttempts` at the top level → retry.maxAttempts?
    const node = schemaAt(layer.schema, parent);
    const leaves = node ? settingsLeaves(node).filter((l) => !l.path.includes('perErrorClass')) : [];
    guesses = leaves
      .filter((l) => l.path[l.path.length - 1]!.toLowerCase() === key.toLowerCase())
      .map((l) => label([...parent, ...l.path]));
  }
  const hint = guesses.length ? ` (did you mean ${guesses.join(' or ')}?)` : '';
  return `is not a known setting${hint}; ${where} accepts: ${siblings.join(', ')}`;
}

/** Validates a layer; returns its data with every invalid part removed (so the rest can still be checked). */
function validateLayer(layer: Layer, issues: ConfigIssue[], invalid: Set<string>): Obj {
  const data: Obj = isObject(layer.data) ? (clone(layer.data) as Obj) : {};
  const drop: Path[] = [];
  const seen = new Set<string>();
  const add = (path: Path, allowed: string) => {
    const field = path.length ? label(path) : layer.rootName;
    if (seen.has(field)) return;
    seen.add(field);
    const origin = layer.originOf(path);
    issues.push({
      field,
      value: origin.raw ?? getAt(layer.data, path),
      source: origin.source,
      allowed: origin.allowed ?? allowed,
    });
    drop.push(path);
  };

  const result = layer.schema.safeParse(layer.data);
  for (const zi of result.success ? [] : result.error.issues) {
    if (zi.code === 'unrecognized_keys') {
      for (const key of zi.keys) add([...zi.path, key], unknownKeyHint(layer, zi.path, key));
      continue;
    }
    const node = schemaAt(layer.schema, zi.path);
    const meta = node && metaOf(node);
    let allowed = meta ? `must be ${meta.allowed}` : `is not valid: ${zi.message}`;
    if (zi.path.length === 0) allowed = layer.kind === 'file' ? 'must be a JSON object' : 'must be an object';
    add(zi.path, allowed);
  }
  // Target keys: host:port/database.
  if (isObject(data.targets)) {
    for (const key of Object.keys(data.targets)) {
      if (!isValidTargetKey(key)) {
        const origin = layer.originOf(['targets', key]);
        issues.push({
          field: 'targets',
          value: key,
          source: origin.source,
          allowed: `must have ${TARGET_KEY_ALLOWED}`,
        });
        drop.push(['targets', key]);
      }
    }
  }
  for (const path of drop) {
    invalid.add(path.length ? label(path) : '');
    if (path.length) deleteAt(data, path);
    else for (const k of Object.keys(data)) delete data[k];
  }
  return data;
}

// ---- merging with provenance ----

function mergeInto(
  into: Obj,
  data: Obj,
  path: string[],
  originOf: (p: Path) => Origin,
  origins: Map<string, Origin>,
) {
  for (const [k, v] of Object.entries(data)) {
    if (v === undefined) continue;
    const p = [...path, k];
    if (isObject(v)) {
      if (!isObject(into[k])) setOwn(into, k, {});
      mergeInto(into[k] as Obj, v, p, originOf, origins);
    } else {
      setOwn(into, k, v);
      origins.set(label(p), originOf(p));
    }
  }
}

// ---- rules between fields ----

interface Scope {
  /** [] for the base settings, ['targets', key] for a target. */
  prefix: string[];
  settings: ResilienceSettings;
  origins: Map<string, Origin>;
  invalid: Set<string>;
  issues: ConfigIssue[];
}

const full = (scope: Scope, rel: Path) => [...scope.prefix, ...rel];

/** Set by this scope itself (always true for the base settings; for a target: by its override). */
const own = (scope: Scope, rel: Path) =>
  scope.prefix.length === 0 || scope.origins.has(label(full(scope, rel)));

function originOf(scope: Scope, rel: Path): Origin {
  const mine = scope.origins.get(label(full(scope, rel)));
  if (mine) return scope.prefix.length ? { ...mine, rank: mine.rank + 10 } : mine;
  return scope.origins.get(label(rel)) ?? PROFILE_ORIGIN;
}

function valueAt(scope: Scope, rel: Path): unknown {
  return getAt(scope.settings, rel);
}

/** `retry.maxDelayMs (1000, from profile)`: another field, as referred to in a message. */
function ref(scope: Scope, rel: Path): string {
  const origin = originOf(scope, rel);
  const shown = origin.raw ?? valueAt(scope, rel);
  return `${label(own(scope, rel) ? full(scope, rel) : rel)} (${typeof shown === 'string' ? shown : JSON.stringify(shown)}, from ${origin.source})`;
}

/** `rateLimit.strategy is queue (from code)`: a condition on another field. */
function is(scope: Scope, rel: Path): string {
  const origin = originOf(scope, rel);
  const shown = origin.raw ?? valueAt(scope, rel);
  return `${label(own(scope, rel) ? full(scope, rel) : rel)} is ${typeof shown === 'string' ? shown : JSON.stringify(shown)} (from ${origin.source})`;
}

function touchesInvalid(scope: Scope, rel: Path): boolean {
  const labels = [label(full(scope, rel)), label(rel)];
  for (const bad of scope.invalid) {
    if (bad === '') return true;
    if (labels.some((l) => l === bad || l.startsWith(`${bad}.`) || l.startsWith(`${bad}[`))) return true;
  }
  return false;
}

/**
 * Reports a contradiction between fields on the one set with the highest precedence (the one the user
 * most likely just changed). `candidates` lists each field with the message used if it is picked.
 */
function conflict(scope: Scope, candidates: Array<[rel: Path, allowed: string]>, relevant = true): void {
  if (!relevant) return;
  if (candidates.some(([rel]) => touchesInvalid(scope, rel))) return;
  // A target only reports what its own override takes part in (the rest was reported for the base).
  if (!candidates.some(([rel]) => own(scope, rel))) return;
  let best = candidates[0]!;
  for (const c of candidates) if (originOf(scope, c[0]).rank > originOf(scope, best[0]).rank) best = c;
  const [rel, allowed] = best;
  const origin = originOf(scope, rel);
  scope.issues.push({
    field: label(own(scope, rel) ? full(scope, rel) : rel),
    value: origin.raw ?? valueAt(scope, rel),
    source: origin.source,
    allowed,
  });
}

function checkDelays(scope: Scope, initial: Path, max: Path, relevant: boolean): void {
  const a = valueAt(scope, initial) as number;
  const b = valueAt(scope, max) as number;
  if (!(a > b)) return;
  const candidates: Array<[Path, string]> = [
    [initial, `must not exceed ${ref(scope, max)}`],
    [max, `must be at least ${ref(scope, initial)}`],
  ];
  // A per-class field wins a tie with the retry.* field it overrides.
  candidates.sort((x, y) => y[0].length - x[0].length);
  conflict(scope, candidates, relevant);
}

function checkRules(scope: Scope): void {
  const s = scope.settings;
  // Backoff: the first delay cannot exceed the cap, for retry.* and for every error class once merged.
  checkDelays(scope, ['retry', 'initialDelayMs'], ['retry', 'maxDelayMs'], true);
  for (const [cls, timing] of Object.entries(s.retry.perErrorClass ?? {})) {
    if (!timing) continue;
    const path = (f: 'initialDelayMs' | 'maxDelayMs'): Path =>
      timing[f] !== undefined ? ['retry', 'perErrorClass', cls, f] : ['retry', f];
    const initial = path('initialDelayMs');
    const max = path('maxDelayMs');
    // Both inherited: the same pair as retry.* above, already checked.
    checkDelays(scope, initial, max, initial.length > 2 || max.length > 2);
  }
  // A queue strategy with no room in the queue rejects every call that has to wait.
  if (s.rateLimit.strategy === 'queue' && s.rateLimit.maxQueueSize === 0) {
    conflict(scope, [
      [['rateLimit', 'maxQueueSize'], `must be at least 1 when ${is(scope, ['rateLimit', 'strategy'])}`],
      [
        ['rateLimit', 'strategy'],
        `must not be queue while ${is(scope, ['rateLimit', 'maxQueueSize'])}: raise maxQueueSize, or use wait or drop`,
      ],
    ]);
  }
  // failure_rate: a threshold of 0 opens on any failure, 1 or more never opens.
  const threshold = s.circuitBreaker.failureRateThreshold;
  if (s.circuitBreaker.mode === 'failure_rate' && (threshold <= 0 || threshold >= 1)) {
    conflict(scope, [
      [
        ['circuitBreaker', 'failureRateThreshold'],
        `must be above 0 and below 1 when ${is(scope, ['circuitBreaker', 'mode'])}`,
      ],
      [
        ['circuitBreaker', 'mode'],
        `must not be failure_rate while ${is(scope, ['circuitBreaker', 'failureRateThreshold'])}: the threshold must be above 0 and below 1`,
      ],
    ]);
  }
  // Recovery probing with no interval would spin.
  if (s.recovery.enabled && s.recovery.intervalMs === 0) {
    conflict(scope, [
      [
        ['recovery', 'intervalMs'],
        `must be at least 1 while ${is(scope, ['recovery', 'enabled'])}; set recovery.enabled to false to turn probing off`,
      ],
      [
        ['recovery', 'enabled'],
        `must not be true while ${is(scope, ['recovery', 'intervalMs'])}: set intervalMs to at least 1`,
      ],
    ]);
  }
  // A budget that allows no retry at all.
  const budget = s.retry.budget;
  if (s.retry.enabled && budget.enabled && budget.ratio === 0 && budget.minRetries === 0) {
    const why = 'together they block every retry; set retry.enabled to false to turn retries off';
    conflict(scope, [
      [
        ['retry', 'budget', 'ratio'],
        `must be above 0 while ${is(scope, ['retry', 'budget', 'minRetries'])}: ${why}`,
      ],
      [
        ['retry', 'budget', 'minRetries'],
        `must be at least 1 while ${is(scope, ['retry', 'budget', 'ratio'])}: ${why}`,
      ],
    ]);
  }
}

// ---- the public API ----

export interface ResolveInput {
  /** The options passed in code: they override everything else. */
  options?: ResilienceOptions;
  /** Defaults to process.env. */
  env?: EnvLike;
  /** Reads the PG_RESILIENCE_CONFIG file (UTF-8); defaults to fs.readFileSync. Injectable for tests. */
  readFile?: (path: string) => string;
}

/**
 * Resolves, validates and freezes the configuration. Throws one ConfigError listing every problem.
 *
 * Precedence, lowest first: profile defaults < JSON file (PG_RESILIENCE_CONFIG) < PG_RESILIENCE_*
 * variables < `options` (code wins over env, as in OpenTelemetry JS). The profile is options.profile,
 * else PG_RESILIENCE_PROFILE, else the file's `profile`, else `default`.
 */
export function resolveConfig(input: ResolveInput = {}): ResilienceConfig {
  const env = input.env ?? process.env;
  // The kill switch: PG_RESILIENCE_DISABLED=true wins over everything and skips the rest of the
  // configuration, so an operator can switch the package off even when a bad file or variable would
  // otherwise stop the app from starting.
  if (killSwitchOn(env)) return DISABLED_CONFIG;
  const readFile: ReadFile = input.readFile ?? readFileUtf8;
  const issues: ConfigIssue[] = [];
  const invalid = new Set<string>();

  // Read the layers.
  const envLayer = readEnv(env);
  issues.push(...envLayer.issues);
  const file = envLayer.configPath === undefined ? undefined : readConfigFile(envLayer.configPath, readFile);
  if (file) issues.push(...file.issues);

  // Validate each on its own, so every problem names its source.
  const fileOrigin: Origin | undefined = file && { source: file.source, rank: 1 };
  const fileData =
    file && fileOrigin && 'content' in file
      ? validateLayer(
          {
            kind: 'file',
            data: file.content,
            schema: fileOptionsSchema,
            rootName: '(file)',
            originOf: () => fileOrigin,
          },
          issues,
          invalid,
        )
      : {};
  const envData = validateLayer(
    {
      kind: 'env',
      data: envLayer.options,
      schema: fileOptionsSchema,
      rootName: '(env)',
      originOf: (path) => {
        const o = envLayer.origins.get(label(path));
        return o ? envOrigin(o) : { source: 'env', rank: 2 };
      },
    },
    issues,
    invalid,
  );
  const codeData = validateLayer(
    {
      kind: 'code',
      data: input.options ?? {},
      schema: optionsSchema,
      rootName: 'options',
      originOf: () => CODE_ORIGIN,
    },
    issues,
    invalid,
  );

  // The profile: code, else env, else the file, else default.
  const profile = (codeData.profile ?? envData.profile ?? fileData.profile ?? 'default') as ProfileName;

  // Merge, remembering where each value came from.
  const origins = new Map<string, Origin>();
  const merged: Obj = {};
  mergeInto(merged, clone(PROFILES[profile]) as Obj, [], () => PROFILE_ORIGIN, origins);
  if (fileOrigin) mergeInto(merged, fileData, [], () => fileOrigin, origins);
  mergeInto(
    merged,
    envData,
    [],
    (p) => {
      const o = envLayer.origins.get(label(p));
      return o ? envOrigin(o) : { source: 'env', rank: 2 };
    },
    origins,
  );
  mergeInto(merged, codeData, [], () => CODE_ORIGIN, origins);

  const rankOf = (path: Path) => origins.get(label(path))?.rank ?? 0;
  capClassAttempts(merged.retry, rankOf(['retry', 'maxAttempts']), (cls) =>
    rankOf(['retry', 'perErrorClass', cls, 'maxAttempts']),
  );

  const settings = Object.fromEntries(
    SETTINGS_KEYS.map((k) => [k, merged[k]]),
  ) as unknown as ResilienceSettings;
  const targets = (isObject(merged.targets) ? merged.targets : {}) as ResilienceConfig['targets'];

  // Rules between fields: for the base settings, then for every target's merged settings.
  checkRules({ prefix: [], settings, origins, invalid, issues });
  for (const [key, override] of Object.entries(targets)) {
    checkRules({
      prefix: ['targets', key],
      settings: deepMerge(settings, override),
      origins,
      invalid,
      issues,
    });
  }

  if (issues.length > 0) throw new ConfigError(issues);

  const config: ResilienceConfig = {
    disabled: merged.disabled === true,
    profile,
    ...settings,
    targets,
  };
  const classify = codeData.classify;
  if (typeof classify === 'function') config.classify = classify as ResilienceConfig['classify'];
  return deepFreeze(config);
}

const KILL_SWITCH_ON = new Set(['true', '1', 'yes']);
/** PG_RESILIENCE_DISABLED switches the package off (`true`, `1` or `yes`, any case): the kill switch. */
export function killSwitchOn(env: EnvLike = process.env): boolean {
  const raw = env.PG_RESILIENCE_DISABLED;
  return typeof raw === 'string' && KILL_SWITCH_ON.has(raw.trim().toLowerCase());
}
const DISABLED_CONFIG: ResilienceConfig = deepFreeze({
  disabled: true,
  profile: 'default',
  ...(clone(PROFILES.default) as ResilienceSettings),
  targets: {},
});

/**
 * `retry.maxAttempts` caps the per-error-class attempts that come from a lower-precedence layer: set
 * `retry.maxAttempts: 1` (in the file, env or code) and nothing is retried, not "nothing except the
 * classes the profile makes more patient". A per-class value set at the same or a higher layer stands.
 */
function capClassAttempts(retry: unknown, maxRank: number, classRank: (cls: string) => number): void {
  if (!isObject(retry) || !isObject(retry.perErrorClass) || maxRank <= 0) return;
  const cap = retry.maxAttempts;
  if (typeof cap !== 'number') return;
  for (const [cls, timing] of Object.entries(retry.perErrorClass)) {
    if (!isObject(timing) || typeof timing.maxAttempts !== 'number' || timing.maxAttempts <= cap) continue;
    if (classRank(cls) < maxRank) timing.maxAttempts = cap;
  }
}

const baseCache = new WeakMap<ResilienceConfig, ResilienceSettings>();
const targetCache = new WeakMap<ResilienceConfig, Map<string, ResilienceSettings>>();

/**
 * The settings for one target (`host:port/database`): the base settings deep-merged with
 * `config.targets[target]`, frozen. Memoised per config and target; a target without an override gets
 * the base settings.
 */
export function settingsForTarget(config: ResilienceConfig, target: string): ResilienceSettings {
  let perTarget = targetCache.get(config);
  if (!perTarget) {
    perTarget = new Map();
    targetCache.set(config, perTarget);
  }
  const hit = perTarget.get(target);
  if (hit) return hit;
  let base = baseCache.get(config);
  if (!base) {
    base = deepFreeze(
      Object.fromEntries(SETTINGS_KEYS.map((k) => [k, config[k]])) as unknown as ResilienceSettings,
    );
    baseCache.set(config, base);
  }
  const targets = config.targets ?? {};
  const override = Object.hasOwn(targets, target) ? targets[target] : undefined;
  let settings = base;
  if (override) {
    const merged = deepMerge(base, override) as unknown as Obj;
    // A target's own retry.maxAttempts caps the per-class attempts it inherits (see capClassAttempts).
    const own = isObject(override.retry) ? (override.retry as Obj) : undefined;
    const ownClasses = own && isObject(own.perErrorClass) ? own.perErrorClass : {};
    if (own && typeof own.maxAttempts === 'number') {
      merged.retry = clone(merged.retry);
      capClassAttempts(merged.retry, 1, (cls) => {
        const t = ownClasses[cls];
        return isObject(t) && typeof t.maxAttempts === 'number' ? 1 : 0;
      });
    }
    settings = deepFreeze(merged as unknown as ResilienceSettings);
  }
  perTarget.set(target, settings);
  return settings;
}
