/**
 * The read-only rule: may a statement whose outcome is unknown (the connection died while it was in
 * flight, or a client-side timeout fired) be sent again without being marked idempotent? Only when
 * its text shows it cannot change anything, so that running it twice is the same as running it once.
 *
 * `isReadOnlyStatement(text)` is true only when ALL of these hold on the text with comments removed
 * and literal contents blanked (`stripSql`, so nothing written inside a string, a quoted identifier,
 * a dollar-quoted body or a comment counts):
 *
 * 1. It is one statement (no `;` but trailing ones) and not empty.
 * 2. Its first word (after any opening parentheses) is SELECT, VALUES, TABLE, SHOW or WITH. (A WITH
 *    holding a data-modifying statement is caught by rule 3: INSERT, UPDATE, DELETE and MERGE are
 *    refused anywhere.)
 * 3. None of these words appears anywhere (whole words, any case): INTO (SELECT … INTO creates a
 *    table), INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY, CALL, DO, LOCK, NEXTVAL, SETVAL; nor a
 *    locking clause (FOR UPDATE, FOR NO KEY UPDATE, FOR SHARE, FOR KEY SHARE: they take row locks).
 * 4. Every function call (a name, optionally qualified, followed by `(`) names a side-effect-free
 *    built-in of `READ_ONLY_FUNCTIONS`; a qualified name is accepted only as `pg_catalog.<name>` (a
 *    `count` in another schema can be anybody's function). Not calls: SQL keywords that take a
 *    parenthesis (IN (…), EXISTS (…), OVER (…), JOIN (…) …), type modifiers (numeric(10,2),
 *    varchar(20), timestamp(3) …), and column lists after AS or in a WITH header (AS t(a, b),
 *    WITH t(n) AS (…)). A quoted name followed by `(` is a call to an unknown function.
 * 5. No plain `'…'` string holds a backslash: with `standard_conforming_strings` off (not the
 *    default) a backslash escapes the quote after it, and the text would not read as rule 1-4 read it.
 *
 * Why it is conservative: anything it does not recognise is refused; a refused statement is simply not
 * retried after an unknown outcome (the error reaches the caller, as without this library), and the
 * caller can mark it with `idempotent()`. Words are matched anywhere, even where they are a column
 * name (`SELECT copy FROM t` is refused). A few keywords that PostgreSQL also allows as function
 * names (OVER, FILTER, BY, JOIN, LIKE …) are taken as keywords only where they follow what they
 * follow in SQL (OVER and FILTER after `)`, BY after ORDER/GROUP/PARTITION, JOIN/LIKE after an
 * operand), so `SELECT filter(1)` is a call. What it cannot see, and assumes side-effect free: the
 * definitions behind views, user-defined operators and types, and row-level-security policies.
 * Never throws.
 */
import { isDigit, isNameChar, isNameStart, isSingleStatement, isWhitespace, scanSql } from './sql-text.ts';

/** Built-in functions that only compute a value: calling them again changes nothing. Lower case. */
export const READ_ONLY_FUNCTIONS: ReadonlySet<string> = new Set([
  // aggregates
  'count',
  'sum',
  'avg',
  'min',
  'max',
  'array_agg',
  'string_agg',
  'json_agg',
  'jsonb_agg',
  'json_object_agg',
  'jsonb_object_agg',
  'bool_and',
  'bool_or',
  'every',
  'percentile_cont',
  'percentile_disc',
  // window functions
  'row_number',
  'rank',
  'dense_rank',
  'lag',
  'lead',
  'first_value',
  'last_value',
  'ntile',
  // conditionals
  'coalesce',
  'nullif',
  'greatest',
  'least',
  // strings
  'lower',
  'upper',
  'length',
  'char_length',
  'substring',
  'substr',
  'trim',
  'btrim',
  'ltrim',
  'rtrim',
  'concat',
  'concat_ws',
  'replace',
  'position',
  'strpos',
  'left',
  'right',
  'md5',
  'encode',
  'decode',
  // numbers
  'abs',
  'round',
  'floor',
  'ceil',
  'ceiling',
  'trunc',
  'mod',
  'power',
  'sqrt',
  'random',
  // date and time
  'now',
  'current_date',
  'current_timestamp',
  'clock_timestamp',
  'statement_timestamp',
  'date_trunc',
  'date_part',
  'extract',
  'age',
  'to_char',
  'to_date',
  'to_timestamp',
  'to_number',
  'make_date',
  'make_interval',
  // JSON (jsonb_set returns a new value, it writes nothing)
  'json_build_object',
  'jsonb_build_object',
  'json_build_array',
  'jsonb_build_array',
  'row_to_json',
  'to_json',
  'to_jsonb',
  'jsonb_set',
  // arrays and sets
  'array_length',
  'cardinality',
  'unnest',
  'generate_series',
  // syntax that looks like a call
  'cast',
  'exists',
  // session information and generators
  'version',
  'current_setting',
  'pg_backend_pid',
  'gen_random_uuid',
]);

const FIRST_WORDS: ReadonlySet<string> = new Set(['select', 'values', 'table', 'show', 'with']);

const FORBIDDEN_WORDS: ReadonlySet<string> = new Set([
  'into',
  'insert',
  'update',
  'delete',
  'merge',
  'truncate',
  'copy',
  'call',
  'do',
  'lock',
  'nextval',
  'setval',
]);

/** After FOR, these start a row-locking clause (FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE). */
const LOCKING_AFTER_FOR: ReadonlySet<string> = new Set(['update', 'no', 'share', 'key']);

/** Keywords PostgreSQL never takes for a function name (reserved or column-name keywords). */
const KEYWORDS: ReadonlySet<string> = new Set([
  'in',
  'exists',
  'any',
  'all',
  'some',
  'values',
  'as',
  'on',
  'using',
  'and',
  'or',
  'not',
  'where',
  'select',
  'from',
  'lateral',
  'row',
  'array',
  'case',
  'when',
  'then',
  'else',
  'group',
  'order',
  'having',
  'limit',
  'offset',
  'union',
  'intersect',
  'except',
  'null',
  'between',
  'to',
  'distinct',
]);

/** Type names that take a modifier in parentheses: numeric(10,2), varchar(20), timestamp(3) … */
const TYPES_WITH_MODIFIER: ReadonlySet<string> = new Set([
  'numeric',
  'decimal',
  'dec',
  'varchar',
  'char',
  'character',
  'nchar',
  'timestamp',
  'time',
  'interval',
  'bit',
  'float',
]);

/** Keywords PostgreSQL also accepts as function names: keywords only after an operand. */
const INFIX_KEYWORDS: ReadonlySet<string> = new Set([
  'join',
  'like',
  'ilike',
  'similar',
  'is',
  'within',
  'partition',
]);

/** Words after which an expression (so possibly a call) starts: never the end of an operand. */
const EXPRESSION_STARTERS: ReadonlySet<string> = new Set([
  ...KEYWORDS,
  ...INFIX_KEYWORDS,
  'by',
  'over',
  'filter',
  'with',
  'recursive',
  'returning',
  'window',
  'fetch',
  'first',
  'next',
  'escape',
  'collate',
  'leading',
  'trailing',
  'both',
  'for',
  'into',
  'set',
  'default',
  'table',
  'only',
  'operator',
  'cast',
  'materialized',
]);

type Kind = 'word' | 'string' | 'quoted' | 'number' | 'param' | 'punct';
interface Token {
  readonly kind: Kind;
  /** Lower-cased (ASCII only, as PostgreSQL folds names) for words, the character for punctuation. */
  readonly value: string;
}

/** True when the statement matches the read-only rule (see above). Never throws. */
export function isReadOnlyStatement(text: string): boolean {
  if (typeof text !== 'string') return false;
  const scan = scanSql(text);
  if (scan.ambiguousBackslash || !isSingleStatement(scan.text)) return false;
  const tokens = tokenize(scan.text);

  let first = 0;
  while (isPunct(tokens[first], '(')) first++;
  const head = tokens[first];
  if (head?.kind !== 'word' || !FIRST_WORDS.has(head.value)) return false;

  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as Token;
    if (t.kind === 'word') {
      if (FORBIDDEN_WORDS.has(t.value)) return false;
      const next = tokens[i + 1];
      if (t.value === 'for' && next?.kind === 'word' && LOCKING_AFTER_FOR.has(next.value)) return false;
    }
    if (
      (t.kind === 'word' || t.kind === 'quoted') &&
      isPunct(tokens[i + 1], '(') &&
      !isAllowedCall(tokens, i)
    ) {
      return false;
    }
  }
  return true;
}

/** `tokens[i]` (a word or quoted name) is followed by `(`: is that allowed? */
function isAllowedCall(tokens: readonly Token[], i: number): boolean {
  const t = tokens[i] as Token;
  const prev = tokens[i - 1];
  if (isPunct(prev, '.')) {
    const schema = tokens[i - 2];
    return (
      t.kind === 'word' &&
      READ_ONLY_FUNCTIONS.has(t.value) &&
      schema?.kind === 'word' &&
      schema.value === 'pg_catalog' &&
      !isPunct(tokens[i - 3], '.')
    );
  }
  // A column list: `AS t(a, b)`, `WITH t(a, b) AS (…)`, `…, u(c) AS (…)`. Never a call.
  if (isWord(prev, 'as') || (isWithHeaderStart(prev) && isCteColumnList(tokens, i + 1))) return true;
  if (t.kind !== 'word') return false;
  const name = t.value;
  if (READ_ONLY_FUNCTIONS.has(name) || KEYWORDS.has(name) || TYPES_WITH_MODIFIER.has(name)) return true;
  switch (name) {
    case 'over':
    case 'filter':
      return isPunct(prev, ')'); // count(*) FILTER (WHERE …) OVER (…)
    case 'by':
      return isWord(prev, 'order') || isWord(prev, 'group') || isWord(prev, 'partition');
    case 'varying':
      return isWord(prev, 'character') || isWord(prev, 'char') || isWord(prev, 'bit');
    case 'materialized':
      return isWord(prev, 'as') || (isWord(prev, 'not') && isWord(tokens[i - 2], 'as'));
  }
  if (INFIX_KEYWORDS.has(name)) {
    return isOperandEnd(prev) || ((name === 'like' || name === 'ilike') && isWord(prev, 'not'));
  }
  return false;
}

function isWithHeaderStart(prev: Token | undefined): boolean {
  return isWord(prev, 'with') || isWord(prev, 'recursive') || isPunct(prev, ',');
}

/** `tokens[open]` is `(`: is it `(name, …) AS` followed by `(`, `MATERIALIZED` or `NOT`? */
function isCteColumnList(tokens: readonly Token[], open: number): boolean {
  let i = open + 1;
  for (;;) {
    const name = tokens[i];
    if (name === undefined || (name.kind !== 'word' && name.kind !== 'quoted')) return false;
    i++;
    if (isPunct(tokens[i], ',')) i++;
    else break;
  }
  if (!isPunct(tokens[i], ')') || !isWord(tokens[i + 1], 'as')) return false;
  const after = tokens[i + 2];
  return isPunct(after, '(') || isWord(after, 'materialized') || isWord(after, 'not');
}

/** The token ends an operand (a name, literal, number, parameter, `)` or `]`). */
function isOperandEnd(t: Token | undefined): boolean {
  if (t === undefined) return false;
  switch (t.kind) {
    case 'word':
      return !EXPRESSION_STARTERS.has(t.value);
    case 'punct':
      return t.value === ')' || t.value === ']';
    default:
      return true;
  }
}

function isPunct(t: Token | undefined, ch: string): boolean {
  return t?.kind === 'punct' && t.value === ch;
}

function isWord(t: Token | undefined, word: string): boolean {
  return t?.kind === 'word' && t.value === word;
}

/** Splits a stripped text into words, literal markers, numbers, parameters and punctuation. */
function tokenize(s: string): Token[] {
  const tokens: Token[] = [];
  const n = s.length;
  let i = 0;
  while (i < n) {
    const ch = s[i] as string;
    const c = s.charCodeAt(i);
    if (isWhitespace(ch)) {
      i++;
    } else if (isNameStart(c)) {
      let j = i + 1;
      while (j < n && isNameChar(s.charCodeAt(j))) j++;
      tokens.push({ kind: 'word', value: asciiLower(s.slice(i, j)) });
      i = j;
    } else if (ch === "'" || ch === '"') {
      // stripSql leaves exactly the two delimiters of each literal or quoted name.
      tokens.push({ kind: ch === "'" ? 'string' : 'quoted', value: '' });
      i += s[i + 1] === ch ? 2 : 1;
    } else if (isDigit(c)) {
      // Digits and dots only: letters right after a number start a word (older PostgreSQL reads
      // `1into` as `1 into`), so no word can hide in a number.
      let j = i + 1;
      while (j < n && (isDigit(s.charCodeAt(j)) || s[j] === '.')) j++;
      tokens.push({ kind: 'number', value: '' });
      i = j;
    } else if (ch === '$' && isDigit(s.charCodeAt(i + 1))) {
      let j = i + 1;
      while (j < n && isDigit(s.charCodeAt(j))) j++;
      tokens.push({ kind: 'param', value: '' });
      i = j;
    } else {
      tokens.push({ kind: 'punct', value: ch });
      i++;
    }
  }
  return tokens;
}

/** PostgreSQL folds unquoted names to lower case for ASCII letters only. */
function asciiLower(word: string): string {
  return word.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}
