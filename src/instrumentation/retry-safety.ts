/**
 * The safety veto asked before retrying a statement (the policies' `canRetry`). A statement is retried
 * only when repeating it cannot apply it twice and cannot break a transaction:
 *
 * 0. Never when the app itself ended the client (`client.end()`, `release(err)`): the error that follows
 *    is the app's decision, final, and the statement is sent nowhere again. Reason `not_retryable`.
 * 1. Never inside a transaction: when the connection's status is 'T' or 'E' (see tx-status.ts), the
 *    error reaches the caller as it would have. Reason `in_transaction`.
 * 2. On the same client (a statement on a client the app holds: a pg Client cannot reconnect), only a
 *    statement the server rejected and rolled back (40001, 40P01, 55P03…) is retried, and only while no
 *    other statement of the app is queued on that client (a retry would run after it, reordering them).
 *    Reason `not_retryable`.
 * 3. Certainly never reached the server (the error says so, e.g. a refused connect or a pool checkout
 *    timeout, or dispatch tracking proved the statement was never submitted): retried, on a fresh
 *    connection.
 * 4. Rejected by the server and rolled back: retried when the text is a single statement (a multi-
 *    statement simple query may contain its own COMMIT). Else `unknown_outcome`.
 * 5. Outcome unknown (the connection died with the statement on the wire, or a client-side timeout):
 *    retried only when the caller marked it idempotent (`idempotent()`) or it matches the conservative
 *    read-only rule (src/safety/read-only.ts). Else `unknown_outcome`.
 * The classification's `transient` was checked before the veto is asked.
 */
import type { ErrorClassification } from '../classify/types.ts';
import type { SuppressReason } from '../policy/events.ts';
import { isMarkedIdempotent, isReadOnlyStatement, isSingleStatement, stripSql } from '../safety/index.ts';
import { inTransaction } from './tx-status.ts';

/**
 * What the veto needs to know about the failed statement call. Built only when a transient failure asks
 * for a retry, so a call that succeeds allocates nothing for it.
 */
export interface StatementFacts {
  /** pg's first argument: text or a query config object. */
  readonly query: unknown;
  /** pg's second argument when it is not a callback. */
  readonly values: unknown;
  /** Retries run on a fresh connection (Pool.query), not on the caller's client. */
  readonly freshConnection: boolean;
  /** The connection's transaction status around the failed attempt. */
  readonly txStatus: string | undefined;
  /** Dispatch tracking proved the failed attempt's statement was never sent. */
  readonly provedUnsent: boolean;
  /** Other statements of the app are queued on the same client (client.query only). */
  readonly othersQueued: boolean;
  /** The app had called `end()` on the statement's client when the statement failed (ended-by-app.ts). */
  readonly endedByApp: boolean;
}

/** May the failed statement described by `facts` run again? true, or why not. */
export function statementVeto(facts: StatementFacts, c: ErrorClassification): true | SuppressReason {
  if (facts.endedByApp) return 'not_retryable';
  if (inTransaction(facts.txStatus)) return 'in_transaction';
  if (!facts.freshConnection && (c.reachedServer !== 'rejected' || facts.othersQueued))
    return 'not_retryable';
  if (c.reachedServer === 'no' || facts.provedUnsent) return true;
  if (c.reachedServer === 'rejected')
    return isOneStatement(facts.query, facts.values) ? true : 'unknown_outcome';
  return isSafeToRepeat(facts.query) ? true : 'unknown_outcome';
}

/** Marked idempotent by the caller, or read-only by the documented rule. */
export function isSafeToRepeat(query: unknown): boolean {
  if (isMarkedIdempotent(query)) return true;
  const text = queryText(query);
  return text !== undefined && isReadOnlyStatement(text);
}

/**
 * The call can only hold one statement: the extended protocol (values, a name, `rows`, or
 * `queryMode: 'extended'`, as pg decides in `Query.requiresPreparation`) parses exactly one, and a
 * simple-protocol text is checked for a `;` outside literals and comments.
 */
export function isOneStatement(query: unknown, values: unknown): boolean {
  if (Array.isArray(values) && values.length > 0) return true;
  if (typeof query === 'object' && query !== null) {
    const q = query as { values?: unknown; name?: unknown; rows?: unknown; queryMode?: unknown };
    if ((Array.isArray(q.values) && q.values.length > 0) || q.name || q.rows || q.queryMode === 'extended') {
      return true;
    }
  }
  const text = queryText(query);
  return text !== undefined && isSingleStatement(stripSql(text));
}

export function queryText(query: unknown): string | undefined {
  if (typeof query === 'string') return query;
  if (typeof query === 'object' && query !== null) {
    const text = (query as { text?: unknown }).text;
    if (typeof text === 'string') return text;
  }
  return undefined;
}
