/**
 * Retry safety: may this call be sent again? Every rule the retry loop asks (its `canRetry` veto) is
 * here, one section per kind of call, in the order of docs/retry-safety.md. Each returns true, or the
 * reason it refuses (a SuppressReason, reported as `onRetrySuppressed`). The retry loop asks only after
 * an error was classified transient, and a veto that throws refuses (`not_retryable`).
 *
 * The rules they call sit beside this file: sql-text.ts (reading SQL text), read-only.ts (the
 * read-only rule), idempotent.ts (the caller's mark), submittable.ts (pg's Submittables, never
 * retried: the instrumentation does not even ask).
 */
import type { ErrorClassification } from '../classify/types.ts';
import { isOperationTimeoutError } from '../errors.ts';
import type { SuppressReason } from '../policy/events.ts';
import { isMarkedIdempotent } from './idempotent.ts';
import { isReadOnlyStatement } from './read-only.ts';
import { isSingleStatement, stripSql } from './sql-text.ts';

// ── Statements: pool.query, client.query ────────────────────────────────────────────────────────────

/**
 * What the statement veto needs to know about the failed statement call. Built only when a transient
 * failure asks for a retry, so a call that succeeds allocates nothing for it.
 */
export interface StatementFacts {
  /** pg's first argument: text or a query config object. */
  readonly query: unknown;
  /** pg's second argument when it is not a callback. */
  readonly values: unknown;
  /** Retries run on a fresh connection (Pool.query), not on the caller's client. */
  readonly freshConnection: boolean;
  /** The connection's transaction status around the failed attempt (instrumentation/tx-status.ts). */
  readonly txStatus: string | undefined;
  /** Dispatch tracking proved the failed attempt's statement was never sent. */
  readonly provedUnsent: boolean;
  /** Other statements of the app are queued on the same client (client.query only). */
  readonly othersQueued: boolean;
  /** The app had called `end()` on the statement's client when the statement failed (ended-by-app.ts). */
  readonly endedByApp: boolean;
}

/**
 * May the failed statement described by `facts` run again? A statement is retried only when repeating
 * it cannot apply it twice and cannot break a transaction:
 *
 * 0. Never when the app itself ended the client (`client.end()`, `release(err)`): the error that follows
 *    is the app's decision, final, and the statement is sent nowhere again. Reason `not_retryable`.
 * 1. Never inside a transaction (`inTransaction`): the error reaches the caller as it would have.
 *    Reason `in_transaction`.
 * 2. On the same client (a statement on a client the app holds: a pg Client cannot reconnect), only a
 *    statement the server rejected and rolled back (40001, 40P01, 55P03…) is retried, and only while no
 *    other statement of the app is queued on that client (a retry would run after it, reordering them).
 *    Reason `not_retryable`.
 * 3. Certainly never reached the server (the error says so, e.g. a refused connect or a pool checkout
 *    timeout, or dispatch tracking proved the statement was never submitted): retried, on a fresh
 *    connection.
 * 4. Rejected by the server and rolled back: retried when the call holds one statement
 *    (`isOneStatement`: a multi-statement simple query may contain its own COMMIT). Else `unknown_outcome`.
 *    A 25006 (a write reached a read-only server: a hot standby, a demoted primary) is retried on a
 *    fresh connection whatever the statement: a read-only server applied nothing of the call. On the
 *    same client never (the server is still read-only).
 * 5. Outcome unknown (the connection died with the statement on the wire, or a client-side timeout):
 *    retried only when safe to repeat (`isSafeToRepeat`: marked idempotent, or read-only). Else
 *    `unknown_outcome`.
 */
export function statementVeto(facts: StatementFacts, c: ErrorClassification): true | SuppressReason {
  if (facts.endedByApp) return 'not_retryable';
  if (inTransaction(facts.txStatus)) return 'in_transaction';
  if (!facts.freshConnection && (c.reachedServer !== 'rejected' || facts.othersQueued || isReadOnlyServer(c)))
    return 'not_retryable';
  if (isReadOnlyServer(c)) return true;
  if (c.reachedServer === 'no' || facts.provedUnsent) return true;
  if (c.reachedServer === 'rejected')
    return isOneStatement(facts.query, facts.values) ? true : 'unknown_outcome';
  return isSafeToRepeat(facts.query) ? true : 'unknown_outcome';
}

/** 25006 read_only_sql_transaction: the server is read-only (a standby), so the call changed nothing. */
function isReadOnlyServer(c: ErrorClassification): boolean {
  return c.errorType === '25006';
}

/**
 * In a transaction block, healthy ('T') or failed ('E'), from the server's ReadyForQuery status: no
 * statement may be retried on its own (only the whole transaction, see `transactionVeto`).
 */
export function inTransaction(status: string | undefined): boolean {
  return status === 'T' || status === 'E';
}

/** Marked idempotent by the caller (idempotent.ts), or read-only by the documented rule (read-only.ts). */
export function isSafeToRepeat(query: unknown): boolean {
  if (isMarkedIdempotent(query)) return true;
  const text = queryText(query);
  return text !== undefined && isReadOnlyStatement(text);
}

/**
 * The call can only hold one statement: the extended protocol (values, a name, `rows`, or
 * `queryMode: 'extended'`, as pg decides in `Query.requiresPreparation`) parses exactly one, and a
 * simple-protocol text is checked for a `;` outside literals and comments (sql-text.ts).
 */
function isOneStatement(query: unknown, values: unknown): boolean {
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

// ── Connects: pool.connect ──────────────────────────────────────────────────────────────────────────

/**
 * A pool checkout is always safe to repeat: no statement has run, and pg-pool discards a client whose
 * connect failed, so the next attempt asks the pool again. (Which failures are worth retrying, e.g.
 * not a checkout that waited `connectionTimeoutMillis`, is the classification's `transient`.) A
 * standalone `client.connect()` has its own rule: `clientConnectVeto`.
 */
export function connectVeto(): true {
  return true;
}

/** What the standalone connect veto needs to know about the client whose connect failed. */
export interface ClientConnectFacts {
  /** pg made the client's socket and Connection itself, so a fresh pair can be made (client-reconnect.ts). */
  readonly reconnectable: boolean;
  /** The app called `end()` on the client (ended-by-app.ts). */
  readonly endedByApp: boolean;
  /** The failed attempt had reached the server's first ReadyForQuery: a session existed. */
  readonly sessionReady: boolean;
}

/**
 * May a standalone `client.connect()` that failed transiently run again, on the same Client object
 * (reset to never connected, on a fresh connection)? Only while nothing can have run on the failed
 * attempt and the client is still the app's to connect:
 *
 * 0. Never when the app ended the client: `end()` during the connect is the app's decision, and pg
 *    leaves that connect unanswered. `not_retryable`.
 * 1. Never once the failed attempt had a session (a ReadyForQuery arrived): from then on statements of
 *    the app could have run on it. `not_retryable`.
 * 2. Never for a client built on a `stream` or `connection` of the app's own: a stream cannot be opened
 *    twice, and the app may hold it. `not_retryable`.
 * 3. Else retried: the connect never got a session, so no statement ran, and nothing was sent but the
 *    startup and authentication.
 */
export function clientConnectVeto(facts: ClientConnectFacts): true | SuppressReason {
  if (facts.endedByApp || facts.sessionReady || !facts.reconnectable) return 'not_retryable';
  return true;
}

// ── Transactions: withTransaction ───────────────────────────────────────────────────────────────────

/** What the transaction veto needs to know about the failed attempt. */
export interface TransactionFacts {
  /** The callback ended its own client (`client.end()`, `release(err)`). */
  readonly appEnded: boolean;
  /** COMMIT was sent in the failed attempt. */
  readonly commitSent: boolean;
}

/**
 * May the whole transaction run again, from BEGIN, on another checkout?
 *
 * 0. Never once the callback ended its own client: the app's decision is final. `not_retryable`.
 * 1. Never after the package's own transaction timeout: the callback cannot be stopped, so a second
 *    run could overlap the first. `unknown_outcome`.
 * 2. The server never got it, or answered with an error (40001, 40P01, 55P03…: the transaction was
 *    rolled back, nothing was committed): retried.
 * 3. The connection was lost: retried when COMMIT was not sent yet (the server rolls an open
 *    transaction back); with COMMIT in flight it may have committed: `unknown_outcome` (withTransaction
 *    reports that as TransactionOutcomeUnknownError).
 */
export function transactionVeto(
  facts: TransactionFacts,
  error: unknown,
  c: ErrorClassification,
): true | SuppressReason {
  if (facts.appEnded) return 'not_retryable';
  if (isOperationTimeoutError(error)) return 'unknown_outcome';
  if (c.reachedServer === 'no' || c.reachedServer === 'rejected') return true;
  return facts.commitSent ? 'unknown_outcome' : true;
}

// ── Anything else: a call that brings no rule of its own ────────────────────────────────────────────

/** Never repeat something that may already have been applied (the retry loop's default veto). */
export function defaultVeto(_error: unknown, c: ErrorClassification): true | SuppressReason {
  return c.reachedServer !== 'unknown' ? true : 'unknown_outcome';
}
