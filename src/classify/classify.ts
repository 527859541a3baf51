/**
 * `classifyError()`: turns anything a pg call can reject with into a decision (error class, transient,
 * reached the server, counts for the breaker, telemetry label). Runs on every failed call, so it is a
 * handful of property reads and map lookups; it never throws, whatever it is given.
 *
 * Order: this package's own errors (brand) → pg's DatabaseError (SQLSTATE + DatabaseError fields) →
 * Node system errors (errno code) → pg's message-only errors (exact message) → for an unrecognised
 * error, the members of `errors` (AggregateError from Node's happy-eyeballs connect) and its `cause`
 * chain, bounded → `unknown`. See docs/error-classification.md for the table and its rationale.
 */
import { isResilienceError } from '../errors.ts';
import { classification } from './classification.ts';
import { isReadOnlyByChoice } from './read-only-by-choice.ts';
import { ERRNO_TABLE, PG_MESSAGES } from './network.ts';
import { classifySqlState, isSqlStateShaped } from './sqlstate.ts';
import {
  type ClassifierOverride,
  ERROR_CLASSES,
  type ErrorClass,
  type ErrorClassification,
  type ServerReach,
} from './types.ts';

/** How deep `cause` / `errors` are followed. */
const MAX_DEPTH = 8;
/** How many errors (outer, causes, aggregate members) are inspected at most: bounds cyclic or huge graphs. */
const MAX_VISITS = 32;
/** Longest `errorType` label accepted (from a constructor name or an override). */
const MAX_LABEL = 40;

const freeze = classification;

/** A write on a standby the target chose on purpose: the app's error, rejected, nothing to retry. */
const READ_ONLY_BY_CHOICE: ErrorClassification = Object.freeze({
  errorClass: 'transaction_state',
  transient: false,
  reachedServer: 'rejected',
  countsForBreaker: false,
  errorType: '25006',
});

const UNKNOWN = freeze('unknown', false, 'unknown', false, 'unknown');

// This package's own rejections: never transient, never counted. Breaker/rate limit/bulkhead
// rejections were not attempted; a timeout or an unknown COMMIT outcome may have reached the server.
const RESILIENCE = new Map<unknown, ErrorClassification>([
  ['PGR_CIRCUIT_OPEN', freeze('resilience_rejection', false, 'no', false, 'PGR_CIRCUIT_OPEN')],
  ['PGR_RATE_LIMITED', freeze('resilience_rejection', false, 'no', false, 'PGR_RATE_LIMITED')],
  ['PGR_BULKHEAD_REJECTED', freeze('resilience_rejection', false, 'no', false, 'PGR_BULKHEAD_REJECTED')],
  [
    'PGR_CONNECTION_BUDGET_EXHAUSTED',
    freeze('resilience_rejection', false, 'no', false, 'PGR_CONNECTION_BUDGET_EXHAUSTED'),
  ],
  [
    'PGR_TRANSACTION_OUTCOME_UNKNOWN',
    freeze('resilience_rejection', false, 'unknown', false, 'PGR_TRANSACTION_OUTCOME_UNKNOWN'),
  ],
  [
    'PGR_TRANSACTION_ROLLED_BACK',
    freeze('resilience_rejection', false, 'rejected', false, 'PGR_TRANSACTION_ROLLED_BACK'),
  ],
]);
// This package's per-attempt timeout is a health signal like pg's own timeouts: a connect (or probe)
// that timed out never sent anything; a statement that timed out may still run on the server.
const OUR_CONNECT_TIMEOUT = freeze('connect_timeout', true, 'no', true, 'PGR_TIMEOUT');
const OUR_QUERY_TIMEOUT = freeze('query_timeout', true, 'unknown', true, 'PGR_TIMEOUT');
// A statement timeout the server answered by cancelling the statement: as the server's own
// statement_timeout (57014): rolled back, not re-run (a slow statement again makes an overload worse),
// not counted (the server answered).
const OUR_CANCELLED_TIMEOUT = freeze('statement_timeout', false, 'rejected', false, 'PGR_TIMEOUT');
const RESILIENCE_OTHER = freeze('resilience_rejection', false, 'unknown', false, 'resilience_rejection');

const CLASS_SET: ReadonlySet<unknown> = new Set<unknown>(ERROR_CLASSES);
const REACH_SET: ReadonlySet<unknown> = new Set<unknown>(['no', 'unknown', 'rejected']);

/** A property read that cannot throw (getters, proxies). */
function get(o: object, key: PropertyKey): unknown {
  try {
    return (o as Record<PropertyKey, unknown>)[key];
  } catch {
    return undefined;
  }
}

/** pg's DatabaseError (and pg-native's query errors) always carry the severity; `routine` as a fallback. */
function hasDatabaseErrorFields(e: object): boolean {
  return typeof get(e, 'severity') === 'string' || typeof get(e, 'routine') === 'string';
}

/** The classification of one error by its own fields, or undefined when it is not recognised. */
function recognise(e: object): ErrorClassification | undefined {
  let branded = false;
  try {
    branded = isResilienceError(e);
  } catch {
    // a proxy that throws on the brand read: not ours
  }
  if (branded) {
    const ownCode = get(e, 'code');
    if (ownCode === 'PGR_TIMEOUT') {
      const op = get(e, 'operation');
      if (op === 'connect' || op === 'probe') return OUR_CONNECT_TIMEOUT;
      return get(e, 'outcome') === 'not_run' ? OUR_CANCELLED_TIMEOUT : OUR_QUERY_TIMEOUT;
    }
    return RESILIENCE.get(ownCode) ?? RESILIENCE_OTHER;
  }

  const code = get(e, 'code');
  if (typeof code === 'string') {
    if (isSqlStateShaped(code) && hasDatabaseErrorFields(e)) return classifySqlState(code);
    const system = ERRNO_TABLE.get(code);
    if (system) return system;
  }
  const message = get(e, 'message');
  if (typeof message === 'string') return PG_MESSAGES.get(message);
  return undefined;
}

interface Walk {
  visits: number;
}

/** The error itself, else its aggregate members, else its cause chain (bounded). */
function find(value: unknown, depth: number, walk: Walk): ErrorClassification | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  if (++walk.visits > MAX_VISITS) return undefined;
  const own = recognise(value);
  if (own) return own;
  if (depth >= MAX_DEPTH) return undefined;

  const errors = get(value, 'errors');
  if (Array.isArray(errors)) {
    const n = Math.min(errors.length, MAX_VISITS);
    for (let i = 0; i < n; i++) {
      const found = find(get(errors, i), depth + 1, walk);
      if (found) return found;
    }
  }
  const cause = get(value, 'cause');
  return cause === value ? undefined : find(cause, depth + 1, walk);
}

const unknownByName = new Map<string, ErrorClassification>();

function isLabel(s: string): boolean {
  return s.length > 0 && s.length <= MAX_LABEL && /^[A-Za-z_$][\w$]*$/.test(s);
}

/** `unknown`, labelled with the constructor's name when it is a plain identifier (e.g. TypeError). */
function unknownFor(value: unknown): ErrorClassification {
  if (typeof value !== 'object' || value === null) return UNKNOWN;
  const ctor = get(value, 'constructor');
  if (typeof ctor !== 'function') return UNKNOWN;
  const name = get(ctor, 'name');
  if (typeof name !== 'string') return UNKNOWN;
  const hit = unknownByName.get(name);
  if (hit) return hit;
  if (!isLabel(name)) return UNKNOWN;
  const result = freeze('unknown', false, 'unknown', false, name);
  if (unknownByName.size < 256) unknownByName.set(name, result);
  return result;
}

/** Printable ASCII without spaces, 1–40 characters: safe as a telemetry label. */
function isValidErrorType(v: unknown): v is string {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_LABEL) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c <= 32 || c >= 127) return false;
  }
  return true;
}

/** Runs the user's hook; a hook that throws or returns anything invalid leaves the defaults standing. */
function applyOverride(
  error: unknown,
  defaults: ErrorClassification,
  override: ClassifierOverride,
): ErrorClassification {
  let patch: unknown;
  try {
    patch = override(error, defaults);
  } catch {
    return defaults;
  }
  if (typeof patch !== 'object' || patch === null) return defaults;
  try {
    // Inside the try: Array.isArray throws on a revoked Proxy.
    if (Array.isArray(patch)) return defaults;
    const then = (patch as { then?: unknown }).then;
    if (typeof then === 'function') {
      // An async hook: its result comes too late to use; keep a rejection from going unhandled.
      then.call(patch, undefined, () => {});
      return defaults;
    }
    const p = patch as Record<keyof ErrorClassification, unknown>;
    const errorClass = p.errorClass ?? defaults.errorClass;
    const transient = p.transient ?? defaults.transient;
    const reachedServer = p.reachedServer ?? defaults.reachedServer;
    const countsForBreaker = p.countsForBreaker ?? defaults.countsForBreaker;
    const errorType = p.errorType ?? defaults.errorType;
    if (
      !CLASS_SET.has(errorClass) ||
      typeof transient !== 'boolean' ||
      !REACH_SET.has(reachedServer) ||
      typeof countsForBreaker !== 'boolean' ||
      !isValidErrorType(errorType)
    ) {
      return defaults;
    }
    return Object.freeze({
      errorClass: errorClass as ErrorClass,
      transient,
      reachedServer: reachedServer as ServerReach,
      countsForBreaker,
      errorType,
    });
  } catch {
    return defaults;
  }
}

/**
 * Classifies anything a pg call (or this package) can reject with. Never throws. With `override`, the
 * user's hook sees the default classification and may return a partial to merge into it; a hook that
 * throws or returns an invalid value is ignored.
 */
export function classifyError(error: unknown, override?: ClassifierOverride): ErrorClassification {
  let result: ErrorClassification;
  try {
    result = isReadOnlyByChoice(error)
      ? READ_ONLY_BY_CHOICE
      : (find(error, 0, { visits: 0 }) ?? unknownFor(error));
  } catch {
    result = UNKNOWN;
  }
  return typeof override === 'function' ? applyOverride(error, result, override) : result;
}
