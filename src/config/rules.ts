/**
 * The rules between fields: each one's prose (published in docs/configuration.md) beside its check.
 * They run on the merged configuration and again on every target's merged settings, and report a
 * contradiction on the field set with the highest precedence (the one the user most likely just
 * changed), naming the other field, its value and where that came from.
 */
import type { ConfigIssue } from './config-error.ts';
import { getAt, type Path } from './objects.ts';
import { label, type Origin, PROFILE_ORIGIN } from './provenance.ts';
import type { ResilienceSettings } from './types.ts';

export interface Scope {
  /** [] for the base settings, ['targets', key] for a target. */
  prefix: string[];
  settings: ResilienceSettings;
  origins: Map<string, Origin>;
  /** Fields already reported invalid (a rule touching one stays quiet). */
  invalid: Set<string>;
  issues: ConfigIssue[];
}

export interface CrossFieldRule {
  /** The rule in a sentence, for the docs. */
  readonly doc: string;
  check(scope: Scope): void;
}

// ---- target keys (checked on each layer, before merging) ----

const TARGET_KEY = /^(\S+):(\d{1,5})\/([^/\s]+)$/;
const TARGET_KEY_HELP = 'host:port/database with a port from 1 to 65535, e.g. "db.internal:5432/app"';
export const TARGET_KEY_SHAPE = '`host:port/database` (port from 1 to 65535)';
export const TARGET_KEYS_ALLOWED = `an object keyed ${TARGET_KEY_HELP}`;
export const TARGET_KEY_ALLOWED = `a key shaped ${TARGET_KEY_HELP}`;
export const TARGET_KEY_RULE =
  'Target keys are shaped `host:port/database` with a numeric port from 1 to 65535.';

export function isValidTargetKey(key: string): boolean {
  const m = TARGET_KEY.exec(key);
  if (!m) return false;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535;
}

// ---- naming the fields involved ----

const full = (scope: Scope, rel: Path) => [...scope.prefix, ...rel];

/** Set by this scope itself (always true for the base settings; for a target: by its override). */
const own = (scope: Scope, rel: Path) =>
  scope.prefix.length === 0 || scope.origins.has(label(full(scope, rel)));

function originOf(scope: Scope, rel: Path): Origin {
  const mine = scope.origins.get(label(full(scope, rel)));
  if (mine) return scope.prefix.length ? { ...mine, rank: mine.rank + 10 } : mine;
  return scope.origins.get(label(rel)) ?? PROFILE_ORIGIN;
}

const valueAt = (scope: Scope, rel: Path): unknown => getAt(scope.settings, rel);

function shown(scope: Scope, rel: Path): string {
  const v = originOf(scope, rel).raw ?? valueAt(scope, rel);
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** `retry.maxDelayMs (1000, from profile)`: another field, as referred to in a message. */
function ref(scope: Scope, rel: Path): string {
  return `${label(own(scope, rel) ? full(scope, rel) : rel)} (${shown(scope, rel)}, from ${originOf(scope, rel).source})`;
}

/** `rateLimit.strategy is queue (from code)`: a condition on another field. */
function is(scope: Scope, rel: Path): string {
  return `${label(own(scope, rel) ? full(scope, rel) : rel)} is ${shown(scope, rel)} (from ${originOf(scope, rel).source})`;
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
 * Reports a contradiction between fields on the one set with the highest precedence. `candidates`
 * lists each field with the message used if it is picked.
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

// ---- the rules ----

export const CROSS_FIELD_RULES: ReadonlyArray<CrossFieldRule> = [
  {
    doc: '`retry.initialDelayMs` ≤ `retry.maxDelayMs`, and the same for every `retry.perErrorClass` entry once merged with `retry.*`.',
    check(scope) {
      checkDelays(scope, ['retry', 'initialDelayMs'], ['retry', 'maxDelayMs'], true);
      for (const [cls, timing] of Object.entries(scope.settings.retry.perErrorClass ?? {})) {
        if (!timing) continue;
        const path = (f: 'initialDelayMs' | 'maxDelayMs'): Path =>
          timing[f] !== undefined ? ['retry', 'perErrorClass', cls, f] : ['retry', f];
        const initial = path('initialDelayMs');
        const max = path('maxDelayMs');
        // Both inherited: the same pair as retry.* above, already checked.
        checkDelays(scope, initial, max, initial.length > 2 || max.length > 2);
      }
    },
  },
  {
    // A queue strategy with no room in the queue rejects every call that has to wait.
    doc: '`rateLimit.strategy` `queue` needs `rateLimit.maxQueueSize` ≥ 1.',
    check(scope) {
      const r = scope.settings.rateLimit;
      if (r.strategy !== 'queue' || r.maxQueueSize !== 0) return;
      conflict(scope, [
        [['rateLimit', 'maxQueueSize'], `must be at least 1 when ${is(scope, ['rateLimit', 'strategy'])}`],
        [
          ['rateLimit', 'strategy'],
          `must not be queue while ${is(scope, ['rateLimit', 'maxQueueSize'])}: raise maxQueueSize, or use wait or drop`,
        ],
      ]);
    },
  },
  {
    // A threshold of 0 opens on any failure, 1 or more never opens.
    doc: '`circuitBreaker.mode` `failure_rate` needs `circuitBreaker.failureRateThreshold` above 0 and below 1.',
    check(scope) {
      const { mode, failureRateThreshold: threshold } = scope.settings.circuitBreaker;
      if (mode !== 'failure_rate' || (threshold > 0 && threshold < 1)) return;
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
    },
  },
  {
    // Probing with no interval would spin.
    doc: '`recovery.enabled` needs `recovery.intervalMs` ≥ 1.',
    check(scope) {
      const r = scope.settings.recovery;
      if (!r.enabled || r.intervalMs !== 0) return;
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
    },
  },
  {
    doc: 'An enabled retry budget with `ratio` 0 and `minRetries` 0 would block every retry: set `retry.enabled` false instead.',
    check(scope) {
      const { enabled, budget } = scope.settings.retry;
      if (!enabled || !budget.enabled || budget.ratio !== 0 || budget.minRetries !== 0) return;
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
    },
  },
];
