/**
 * Session state: what the statements sent on a connection changed in its server session, so a
 * substitute connection (src/instrumentation/substitute.ts) is used only when it can be made the same.
 * The rules are in docs/retry-safety.md ("Substitute connections").
 *
 * Every statement passes `mayChangeSession`, a few anchored or single-character searches; only a
 * text that may change the session (a leading SET, RESET, LISTEN…, or `set_config`, `pg_temp`,
 * `advisory_lock`, `INTO TEMP` anywhere) is read exactly (`sessionEffect`, on the text with literals and
 * comments blanked). What it finds is one of:
 * - nothing lasting (most statements, `SET LOCAL`, a cursor without hold…);
 * - an ordinary setting, replayable on a new session (`SET search_path …`, `set_config('x', $1, false)`);
 * - a change a new session cannot have, or that the check cannot read exactly: the session is
 *   "tainted" and no statement of it is substituted any more.
 * The state lives on the client under a symbol, created only when a statement changed something.
 */
import { isSingleStatement, stripSql } from './sql-text.ts';

/** A statement that sets an ordinary setting, replayed on a substitute before the statement. */
export interface Replay {
  readonly text: string;
  readonly values: readonly unknown[] | undefined;
}

export type SessionEffect =
  | { readonly kind: 'replay'; readonly key: string }
  | { readonly kind: 'taint'; readonly what: string; readonly sticky?: true }
  | { readonly kind: 'reset' }
  | undefined;

export interface SessionState {
  /** The last replayable statement per setting, in the order they ran. */
  readonly replay: Map<string, Replay>;
  /** Set once something changed the session that a new session cannot have. */
  taint: string | undefined;
  /** The taint outlives `DISCARD ALL` (a loaded library, a block that may have done anything). */
  sticky: boolean;
}

const SESSION = Symbol('pg-resilience.session');
type Holder = object & { [SESSION]?: SessionState };

/** A leading command that may change the session, a leading comment or parenthesis (read exactly). */
const LEADING =
  /^\s*(?:(?:set|reset|discard|listen|prepare|declare|load|do|call|alter|create)\b|\/\*|--|\()/i;
/** Settings that change who the session is: never replayed. */
const IDENTITY = new Set(['role', 'session_authorization']);

/**
 * Cheap pre-check, run on every statement: can this text change the session? False for nearly every
 * statement an app sends. Built from anchored or single-character searches (a case-insensitive
 * alternation over the whole text cost several times more on long ORM statements): a leading command
 * word, a `;` with more text after it, `_conf`/`_lock` (set_config, the advisory locks), or `temp`
 * anywhere (`INTO TEMP`, `pg_temp`). Anything it lets through is read exactly by `sessionEffect`.
 */
export function mayChangeSession(text: string): boolean {
  return LEADING.test(text) || moreAfterSemicolon(text) || underscoreWord(text) || tempWord(text);
}

function moreAfterSemicolon(text: string): boolean {
  for (let i = text.indexOf(';'); i !== -1; i = text.indexOf(';', i + 1)) {
    for (let j = i + 1; j < text.length; j++) if (text.charCodeAt(j) > 0x20) return true;
  }
  return false;
}

/** `temp` in any case, found from its `m` (a single-character search is the fast one). */
function tempWord(text: string): boolean {
  return tempAround(text, 'm') || tempAround(text, 'M');
}

function tempAround(text: string, m: string): boolean {
  for (let i = text.indexOf(m, 2); i !== -1; i = text.indexOf(m, i + 1)) {
    if (
      (text.charCodeAt(i - 2) | 0x20) === 0x74 &&
      (text.charCodeAt(i - 1) | 0x20) === 0x65 &&
      (text.charCodeAt(i + 1) | 0x20) === 0x70
    ) {
      return true;
    }
  }
  return false;
}

/** `_` followed by conf or lock, in any case. */
function underscoreWord(text: string): boolean {
  for (let i = text.indexOf('_'); i !== -1; i = text.indexOf('_', i + 1)) {
    const a = text.charCodeAt(i + 1) | 0x20;
    const b = text.charCodeAt(i + 2) | 0x20;
    const c = text.charCodeAt(i + 3) | 0x20;
    const d = text.charCodeAt(i + 4) | 0x20;
    if (a === 0x63 && b === 0x6f && c === 0x6e && d === 0x66) return true; // conf
    if (a === 0x6c && b === 0x6f && c === 0x63 && d === 0x6b) return true; // lock
  }
  return false;
}

/** What one statement text does to the session (see the module comment). */
export function sessionEffect(text: string, values: unknown): SessionEffect {
  const stripped = stripSql(text).toLowerCase();
  if (!isSingleStatement(stripped)) return multiStatementEffect(stripped);
  return statementEffect(stripped, text, values);
}

/**
 * A multi-statement text (simple protocol: no parameters). Made only of ordinary `SET`/`RESET`s (as
 * Sequelize sets up each connection: `SET client_min_messages TO warning;SET TIME ZONE 'UTC'`), it is
 * replayed whole, keyed by its settings; any other part beside a setting taints.
 */
function multiStatementEffect(stripped: string): SessionEffect {
  const keys: string[] = [];
  let other = false;
  for (const part of stripped.split(';')) {
    const s = part.trim();
    if (s === '') continue;
    const effect = statementEffect(s, '', undefined);
    if (effect?.kind === 'taint') return effect;
    if (effect?.kind === 'reset') return { kind: 'taint', what: 'DISCARD ALL in a multi-statement text' };
    if (effect !== undefined && /^(?:set|reset)\b/.test(s)) keys.push(effect.key);
    else other = true;
  }
  if (keys.length === 0) return undefined;
  if (other) return { kind: 'taint', what: 'a setting in a multi-statement text' };
  return { kind: 'replay', key: keys.join('; ') };
}

/** One statement, stripped and lower-cased; `raw` and `values` only to read set_config's name. */
function statementEffect(stripped: string, raw: string, values: unknown): SessionEffect {
  const s = stripped.replace(/\s+/g, ' ').trim().replace(/;$/, '').trim();
  if (s === '') return undefined;
  const word = /^[a-z_]+/.exec(s)?.[0];
  switch (word) {
    case 'set':
      return setEffect(s.slice(4));
    case 'reset': {
      const name = s.slice(6).trim();
      if (name === 'all' || name === 'role' || name === 'session authorization') {
        return { kind: 'taint', what: `RESET ${name.toUpperCase()}` };
      }
      return { kind: 'replay', key: settingKey(name) };
    }
    case 'discard':
      // DISCARD ALL makes the session a new one (slonik runs it on every release); the others do not.
      return s === 'discard all' ? { kind: 'reset' } : { kind: 'taint', what: 'DISCARD' };
    case 'listen':
      return { kind: 'taint', what: 'LISTEN' };
    case 'prepare':
      return { kind: 'taint', what: 'PREPARE' };
    case 'declare':
      return /\bwith hold\b/.test(s) ? { kind: 'taint', what: 'DECLARE … WITH HOLD' } : undefined;
    case 'load':
      return { kind: 'taint', what: 'LOAD', sticky: true };
    case 'do':
    case 'call':
      return { kind: 'taint', what: word.toUpperCase(), sticky: true };
    case 'alter':
      return /^alter (?:role|user|database)\b.*\b(?:set|reset)\b/.test(s)
        ? { kind: 'taint', what: 'ALTER … SET (new sessions start differently)', sticky: true }
        : undefined;
    default:
  }
  if (/\b(?:create (?:(?:global|local) )?(?:temp|temporary)|into (?:temp|temporary))\b|\bpg_temp\b/.test(s)) {
    return { kind: 'taint', what: 'a temporary object' };
  }
  if (/\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(/.test(s))
    return { kind: 'taint', what: 'an advisory lock' };
  if (/\bset_config\s*\(/.test(s)) return setConfigEffect(s, raw, values);
  return undefined;
}

/** `SET …` after the word SET. */
function setEffect(rest: string): SessionEffect {
  let r = rest.trim();
  if (r.startsWith('local ')) return undefined; // ends with its transaction
  if (r.startsWith('transaction ') || r.startsWith('constraints ')) return undefined;
  if (r.startsWith('session ')) {
    r = r.slice(8);
    if (r.startsWith('authorization')) return { kind: 'taint', what: 'SET SESSION AUTHORIZATION' };
    if (r.startsWith('characteristics ')) return { kind: 'replay', key: 'session characteristics' };
  }
  if (r.startsWith('time zone')) return { kind: 'replay', key: 'timezone' };
  if (r.startsWith('names')) return { kind: 'replay', key: 'client_encoding' };
  if (r.startsWith('schema')) return { kind: 'replay', key: 'search_path' };
  if (r.startsWith('xml option')) return { kind: 'replay', key: 'xmloption' };
  const name = /^([a-z_][a-z0-9_$.]*)\s*(?:to\b|=)/.exec(r)?.[1];
  if (name === undefined) {
    if (r.startsWith('role')) return { kind: 'taint', what: 'SET ROLE' };
    return { kind: 'taint', what: 'a SET the check cannot read' };
  }
  if (IDENTITY.has(name)) return { kind: 'taint', what: `SET ${name.toUpperCase()}` };
  return { kind: 'replay', key: settingKey(name) };
}

/** `SELECT set_config(name, value, is_local)`, alone: replayable when the name is known and ordinary. */
function setConfigEffect(s: string, raw: string, values: unknown): SessionEffect {
  const m =
    /^select (?:pg_catalog\.)?set_config ?\( ?(''|\$\d+) ?, ?(''|\$\d+)(?: ?:: ?text)? ?, ?(false|true|\$\d+) ?\)(?: (?:as )?[a-z_][a-z0-9_]*)?$/.exec(
      s,
    );
  if (m === null) return { kind: 'taint', what: 'set_config in a statement the check cannot read' };
  const local = m[3]!.startsWith('$') ? param(values, m[3]!) : m[3];
  if (local === true || local === 'true' || local === 't') return undefined;
  if (!(local === false || local === 'false' || local === 'f')) {
    return { kind: 'taint', what: 'set_config with a computed is_local' };
  }
  let name: unknown;
  if (m[1]!.startsWith('$')) name = param(values, m[1]!);
  else name = /set_config\s*\(\s*'((?:[^']|'')*)'/i.exec(raw)?.[1];
  if (typeof name !== 'string' || name === '')
    return { kind: 'taint', what: 'set_config with a computed name' };
  const key = settingKey(name.toLowerCase());
  if (IDENTITY.has(key)) return { kind: 'taint', what: `set_config('${key}')` };
  return { kind: 'replay', key };
}

function param(values: unknown, ref: string): unknown {
  return Array.isArray(values) ? values[Number(ref.slice(1)) - 1] : undefined;
}

function settingKey(name: string): string {
  const n = name.replace(/"/g, '').trim();
  if (n === 'time zone') return 'timezone';
  return n;
}

/** The session state recorded for a client, if any statement changed it. */
export function sessionState(client: object): SessionState | undefined {
  return (client as Holder)[SESSION];
}

function stateOf(client: object): SessionState {
  const holder = client as Holder;
  let state = holder[SESSION];
  if (state === undefined) {
    state = { replay: new Map(), taint: undefined, sticky: false };
    Object.defineProperty(holder, SESSION, { value: state, enumerable: false, configurable: true });
  }
  return state;
}

/** At most this many settings are replayed; beyond, the session counts as changed. */
const MAX_REPLAY = 32;

/**
 * Records a statement sent on `client`. `quiet`: outside a transaction and alone on the client (a
 * setting sent otherwise may be rolled back or interleaved: it counts as a change). Returns, for a
 * replayable setting, the function to call once it succeeded (a failed one taints the session).
 */
export function noteStatement(
  client: object,
  text: string,
  values: unknown,
  quiet: boolean,
): ((ok: boolean) => void) | undefined {
  const effect = sessionEffect(text, values);
  if (effect === undefined) return undefined;
  const state = stateOf(client);
  if (effect.kind === 'taint') {
    state.taint ??= effect.what;
    // Any sticky change outlives DISCARD ALL, whatever changed the session before it.
    if (effect.sticky === true) state.sticky = true;
    return undefined;
  }
  if (!quiet) {
    state.taint ??= 'a setting changed inside a transaction or beside another statement';
    return undefined;
  }
  if (effect.kind === 'reset') {
    return (ok) => {
      if (!ok || state.sticky) return;
      state.replay.clear();
      state.taint = undefined;
    };
  }
  const replay: Replay = { text, values: Array.isArray(values) ? [...(values as unknown[])] : undefined };
  return (ok) => {
    if (!ok) {
      state.taint ??= 'a setting whose statement failed';
      return;
    }
    state.replay.delete(effect.key);
    state.replay.set(effect.key, replay);
    if (state.replay.size > MAX_REPLAY) state.taint ??= 'too many settings to replay';
  };
}

/** Session-bound values a new session does not have (the failed statement's own text). */
const SESSION_BOUND = /\b(?:currval|lastval|pg_backend_pid)\b/i;

/**
 * Why the failed statement itself cannot run on another session, or undefined when it can: it changes
 * the session, reads session-bound values (currval, lastval, pg_backend_pid), or is a pg named statement sent without its text.
 */
export function statementNeedsSession(query: unknown, values: unknown): string | undefined {
  let text: unknown = query;
  if (typeof query === 'object' && query !== null) {
    const q = query as { text?: unknown; name?: unknown };
    text = q.text;
    if (typeof text !== 'string' && q.name) return 'a prepared statement sent without its text';
  }
  if (typeof text !== 'string') return 'a statement without text';
  if (SESSION_BOUND.test(text) && SESSION_BOUND.test(stripSql(text))) return 'a session-bound value';
  if (mayChangeSession(text) && sessionEffect(text, values) !== undefined) return 'it changes the session';
  return undefined;
}
