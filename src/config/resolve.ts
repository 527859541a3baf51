/**
 * Resolves the configuration once, at start-up: profile defaults < JSON file (PG_RESILIENCE_CONFIG) <
 * PG_RESILIENCE_* variables < the options passed in code. Every layer is validated on its own (so each
 * problem names the layer it came from), then the merged result is checked for contradictions (for the
 * base settings and for every target's merged settings). All problems found are thrown together as one
 * ConfigError. The result is deep-frozen.
 */
import { ERROR_CLASSES } from '../classify/types.ts';
import { ConfigError, type ConfigIssue } from './config-error.ts';
import { GLOBAL_DEFAULTS, PROFILES } from './defaults.ts';
import { closest, type EnvLike, killSwitchOn, readEnv } from './env.ts';
import { type ReadFile, readConfigFile, readFileUtf8 } from './file.ts';
import {
  clone,
  deepFreeze,
  deepMerge,
  deleteAt,
  getAt,
  isObject,
  type Obj,
  type Path,
  setOwn,
} from './objects.ts';
import { CODE_ORIGIN, envOrigin, label, type Origin, PROFILE_ORIGIN } from './provenance.ts';
import { CROSS_FIELD_RULES, isValidTargetKey, type Scope, TARGET_KEY_ALLOWED } from './rules.ts';
import {
  fileOptionsSchema,
  keysAt,
  metaOf,
  optionsSchema,
  SETTINGS_SECTIONS,
  schemaAt,
  settingsLeaves,
} from './schema.ts';
import type { ProfileName, ResilienceConfig, ResilienceOptions, ResilienceSettings } from './types.ts';

/** The per-target sections of a (merged) configuration. */
const settingsOf = (config: Obj): ResilienceSettings =>
  Object.fromEntries(SETTINGS_SECTIONS.map((k) => [k, config[k]])) as unknown as ResilienceSettings;

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

function checkRules(scope: Scope): void {
  for (const rule of CROSS_FIELD_RULES) rule.check(scope);
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
  // The kill switch wins over everything and skips the rest of the configuration (telemetry included),
  // so an operator can switch the package off even when a bad file or variable would otherwise stop
  // the app from starting.
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
      originOf: (path) => envOrigin(envLayer.origins.get(label(path))),
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
  const defaults = { ...(clone(PROFILES[profile]) as Obj), ...(clone(GLOBAL_DEFAULTS) as Obj) };
  mergeInto(merged, defaults, [], () => PROFILE_ORIGIN, origins);
  if (fileOrigin) mergeInto(merged, fileData, [], () => fileOrigin, origins);
  mergeInto(merged, envData, [], (p) => envOrigin(envLayer.origins.get(label(p))), origins);
  mergeInto(merged, codeData, [], () => CODE_ORIGIN, origins);

  const rankOf = (path: Path) => origins.get(label(path))?.rank ?? 0;
  capClassAttempts(merged.retry, rankOf(['retry', 'maxAttempts']), (cls) =>
    rankOf(['retry', 'perErrorClass', cls, 'maxAttempts']),
  );

  const settings = settingsOf(merged);
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
    telemetry: merged.telemetry as ResilienceConfig['telemetry'],
    coordination: merged.coordination as ResilienceConfig['coordination'],
    targets,
  };
  const classify = codeData.classify;
  if (typeof classify === 'function') config.classify = classify as ResilienceConfig['classify'];
  return deepFreeze(config);
}

/** What the kill switch resolves to: the defaults, switched off. */
const DISABLED_CONFIG: ResilienceConfig = deepFreeze({
  disabled: true,
  profile: 'default',
  ...(clone(PROFILES.default) as ResilienceSettings),
  ...(clone(GLOBAL_DEFAULTS) as Pick<ResilienceConfig, 'telemetry' | 'coordination'>),
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
    base = deepFreeze(settingsOf(config as unknown as Obj));
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
