/**
 * A lexical pass over SQL text that keeps its structure and drops everything a statement cannot be
 * "made of": comments and the contents of literals. What remains is what the safety rules read
 * (statement separators, keywords, function names), so a `;`, a keyword or a function name written
 * inside a string, a quoted identifier, a dollar-quoted body or a comment is never taken for code.
 *
 * It follows PostgreSQL's lexer (scan.l) for the pieces that matter:
 * - `-- …` to the end of the line (`\n` or `\r`) and `/* … *\/` (nested, as PostgreSQL nests them) become one space;
 * - `'…'` (with `''`), `E'…'` (with `''` and backslash escapes, and their continuation across a
 *   newline), `"…"` (with `""`) and `$$…$$` /
 *   `$tag$…$tag$` keep only their delimiters: `'abc'` → `''`, `"x"` → `""`, `$t$…$t$` → `''`;
 *   prefixes (`E`, `U&`, `B`, `X`, `N`) stay in the text as the word they are;
 * - `$` inside a name (`a$b`) and `$1` parameters are not dollar quotes, exactly as in PostgreSQL.
 *
 * Why it is conservative: it never throws, and when the text is not well formed an unterminated
 * literal or comment swallows the rest of the text, which hides nothing the server would run (the
 * server rejects such a text). The one thing a lexer cannot know is the server's
 * `standard_conforming_strings`: when it is off (it has been on by default since PostgreSQL 9.1),
 * a backslash inside a plain `'…'` string escapes the next character, so `'\'` does not end there.
 * `scanSql` reports plain strings holding a backslash (`ambiguousBackslash`) so that a rule that
 * must not be fooled (the read-only rule) can refuse such a text.
 */

/** The result of one pass: the stripped text and what the pass could not decide. */
export interface SqlScan {
  /** Comments replaced by a space, literals reduced to their delimiters. */
  readonly text: string;
  /**
   * A plain (non-E) `'…'` string contains a backslash: its extent depends on the server's
   * `standard_conforming_strings` (this pass assumes it is on, the default).
   */
  readonly ambiguousBackslash: boolean;
}

/** A character that can start an unquoted name (PostgreSQL's `ident_start`: letters, `_`, non-ASCII). */
export function isNameStart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f || c >= 0x80;
}

/** A character that can continue an unquoted name (`ident_cont`: adds digits and `$`). */
export function isNameChar(c: number): boolean {
  return isNameStart(c) || isDigit(c) || c === 0x24;
}

export function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** Dollar-quote tags follow `ident_start`/`ident_cont` without the `$`. */
function isTagChar(c: number): boolean {
  return isNameStart(c) || isDigit(c);
}

/** Returns the SQL with comments removed and the contents of literals blanked. Never throws. */
export function stripSql(text: string): string {
  return scanSql(text).text;
}

/** The same pass as `stripSql`, also telling whether a plain string held a backslash. Never throws. */
export function scanSql(text: string): SqlScan {
  if (typeof text !== 'string') return { text: '', ambiguousBackslash: false };
  const n = text.length;
  let out = '';
  let ambiguousBackslash = false;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (isNameStart(c)) {
      // A whole name (or keyword), so that a `$` or a quote inside or after it is read as PostgreSQL does.
      let j = i + 1;
      while (j < n && isNameChar(text.charCodeAt(j))) j++;
      out += text.slice(i, j);
      if (j === i + 1 && (c === 0x45 || c === 0x65) && text.charCodeAt(j) === 0x27) {
        // E'…': backslash escapes, and '' as well.
        out += "''";
        i = skipQuoted(text, j + 1, 0x27, true);
      } else {
        i = j;
      }
    } else if (c === 0x27 /* ' */) {
      const end = skipQuoted(text, i + 1, 0x27, false);
      if (text.slice(i + 1, end).includes('\\')) ambiguousBackslash = true;
      out += "''";
      i = end;
    } else if (c === 0x22 /* " */) {
      out += '""';
      i = skipQuoted(text, i + 1, 0x22, false);
    } else if (c === 0x24 /* $ */) {
      if (isDigit(text.charCodeAt(i + 1))) {
        // $1: a parameter.
        let j = i + 1;
        while (j < n && isDigit(text.charCodeAt(j))) j++;
        out += text.slice(i, j);
        i = j;
        continue;
      }
      let j = i + 1;
      if (j < n && isNameStart(text.charCodeAt(j))) {
        while (j < n && isTagChar(text.charCodeAt(j))) j++;
      }
      if (text.charCodeAt(j) === 0x24) {
        // $tag$ … $tag$: the body ends at the first repetition of the opening delimiter.
        const tag = text.slice(i, j + 1);
        const close = text.indexOf(tag, j + 1);
        out += "''";
        i = close === -1 ? n : close + tag.length;
      } else {
        out += '$';
        i++;
      }
    } else if (c === 0x2d /* - */ && text.charCodeAt(i + 1) === 0x2d) {
      // To the end of the line: PostgreSQL ends it at a carriage return too (`non_newline [^\n\r]`).
      let j = i + 2;
      while (j < n && text[j] !== '\n' && text[j] !== '\r') j++;
      out += ' ';
      i = j; // the line break itself stays: it is whitespace
    } else if (c === 0x2f /* / */ && text.charCodeAt(i + 1) === 0x2a /* * */) {
      out += ' ';
      i = skipBlockComment(text, i + 2);
    } else {
      out += text[i];
      i++;
    }
  }
  return { text: out, ambiguousBackslash };
}

/**
 * Index just past the quote closing a literal whose body starts at `from` (or the text's length when
 * it is unterminated). A doubled quote is an escaped quote; with `backslash`, `\` escapes any character.
 */
function skipQuoted(text: string, from: number, quote: number, backslash: boolean): number {
  const n = text.length;
  let i = from;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (backslash && c === 0x5c) {
      i += 2;
    } else if (c === quote) {
      if (text.charCodeAt(i + 1) === quote) {
        i += 2;
      } else {
        const next = backslash ? continuation(text, i + 1) : -1;
        if (next === -1) return i + 1;
        i = next;
      }
    } else {
      i++;
    }
  }
  return n;
}

/**
 * PostgreSQL continues a string across `'…'<whitespace with a newline>'…'`, and an `E'…'` string's
 * continuation keeps the backslash escapes. Returns the index just past the continuation's opening
 * quote, or -1. It only recognises plain whitespace (not comments) between the parts: missing a
 * continuation PostgreSQL would see reads its body as a plain string, which `scanSql` flags when it
 * holds a backslash (the only way the two readings differ).
 */
function continuation(text: string, from: number): number {
  let i = from;
  while (text[i] === ' ' || text[i] === '\t' || text[i] === '\f') i++;
  if (text[i] !== '\n' && text[i] !== '\r') return -1;
  while (text[i] === ' ' || text[i] === '\t' || text[i] === '\f' || text[i] === '\n' || text[i] === '\r') i++;
  return text[i] === "'" ? i + 1 : -1;
}

/** Index just past the `*\/` closing a (nested) block comment whose body starts at `from`, or the length. */
function skipBlockComment(text: string, from: number): number {
  const n = text.length;
  let depth = 1;
  let i = from;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x2f && text.charCodeAt(i + 1) === 0x2a) {
      depth++;
      i += 2;
    } else if (c === 0x2a && text.charCodeAt(i + 1) === 0x2f) {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else {
      i++;
    }
  }
  return n;
}

/**
 * True when a stripped text (see `stripSql`) holds one statement: it is not empty and has no `;`
 * except trailing ones (with whitespace around them). Never throws.
 */
export function isSingleStatement(stripped: string): boolean {
  if (typeof stripped !== 'string') return false;
  let end = stripped.length;
  while (end > 0) {
    const ch = stripped[end - 1] as string;
    if (ch === ';' || isWhitespace(ch)) end--;
    else break;
  }
  if (end === 0) return false;
  return stripped.lastIndexOf(';', end - 1) === -1;
}

/**
 * PostgreSQL's whitespace: space, tab, newline, carriage return, form feed, vertical tab. (Not the
 * other Unicode spaces: PostgreSQL reads non-ASCII characters as parts of names.)
 */
export function isWhitespace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || ch === '\f' || ch === '\v';
}
