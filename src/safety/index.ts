/**
 * Statement safety: what makes a statement whose outcome is unknown safe to send again. A statement
 * qualifies when the caller marked it idempotent (idempotent.ts) or when its text matches the
 * conservative read-only rule (read-only.ts), which reads the text through sql-text.ts.
 */
export { IDEMPOTENT, idempotent, isMarkedIdempotent } from './idempotent.ts';
export { isReadOnlyStatement, READ_ONLY_FUNCTIONS } from './read-only.ts';
export { isSingleStatement, stripSql } from './sql-text.ts';
