/**
 * Retry safety: may this call be sent again? retry-safety.ts answers for every kind of call
 * (statements, connects, transactions, the default); the rules it calls sit beside it: idempotent.ts
 * (the caller's mark), read-only.ts (the read-only rule), sql-text.ts (reading SQL text) and
 * submittable.ts (pg's Submittables, never retried). Mirrored by docs/retry-safety.md.
 */
export { IDEMPOTENT, idempotent, isMarkedIdempotent } from './idempotent.ts';
export { isReadOnlyStatement, READ_ONLY_FUNCTIONS } from './read-only.ts';
export { isSingleStatement, stripSql } from './sql-text.ts';
