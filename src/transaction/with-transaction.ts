/**
 * `withTransaction(pool, fn, options?)`: the explicit API for retrying a whole transaction.
 *
 * One `transaction` operation through the target's policies (rate limit, bulkhead, breaker, retry,
 * timeout), each attempt on a freshly checked-out client:
 *   BEGIN [ISOLATION LEVEL …] [READ ONLY] [DEFERRABLE] → `await fn(client)` → the transaction id
 *   (`transaction.outcomeResolutionMs` > 0, not READ ONLY) → COMMIT → release.
 * Retried (the callback runs again, from BEGIN, on another checkout) when the attempt failed before
 * COMMIT was sent, or COMMIT itself was refused by the server, with:
 * - 40001 serialization failure, 40P01 deadlock, 55P03 lock not available (or another transient error
 *   the server answered: the transaction was rolled back, nothing was committed);
 * - the connection lost before COMMIT was sent (the server rolls an open transaction back);
 * - a checkout that failed (nothing was sent);
 * - the connection lost while COMMIT was in flight, and the server, asked afterwards, says the
 *   transaction aborted (commit-outcome.ts, settle-commit.ts).
 * Never retried:
 * - the connection lost while COMMIT was in flight and the server, asked afterwards, says it committed:
 *   the call returns the callback's result; or it cannot say within `transaction.outcomeResolutionMs`:
 *   the call fails with `TransactionOutcomeUnknownError` (the original error is its `cause`, the
 *   transaction id its `transactionId`);
 * - COMMIT answered with ROLLBACK (the callback caught a failed statement's error and carried on):
 *   `TransactionRolledBackError`;
 * - the package's own transaction timeout (`timeout.queryMs`): the callback cannot be stopped, so a
 *   second run could overlap the first; once the attempt has timed out it does not send COMMIT.
 * - any error of the callback's own (a failed check, a constraint violation…): rolled back and rethrown.
 * - any error once the callback ended its client itself (`client.end()`, `client.release(err)`): the
 *   app's decision is final, and what it sent is sent nowhere again.
 * On failure the transaction is rolled back (or the connection discarded when it is broken), and the
 * error the caller gets is the one that ended the last attempt, unchanged.
 *
 * The callback may run more than once: keep side effects outside the database (HTTP calls, messages)
 * out of it, or make them idempotent. Statements inside it are never retried on their own (the
 * connection is in a transaction).
 *
 * @example
 * ```js
 * const { withTransaction } = require('pg-resilience');
 * await withTransaction(pool, async (client) => {
 *   await client.query('UPDATE accounts SET balance = balance - $1 WHERE id = $2', [amount, from]);
 *   await client.query('UPDATE accounts SET balance = balance + $1 WHERE id = $2', [amount, to]);
 * }, { isolationLevel: 'serializable' });
 * ```
 */
import type { ErrorClassification } from '../classify/types.ts';
import { TransactionOutcomeUnknownError, TransactionRolledBackError } from '../errors.ts';
import { endedByApp } from '../instrumentation/ended-by-app.ts';
import { scope } from '../instrumentation/scope.ts';
import { runtime } from '../runtime.ts';
import { transactionVeto } from '../safety/retry-safety.ts';
import { currentTransactionId, settleLostCommit } from './settle-commit.ts';

export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable';

export interface TransactionOptions {
  /** BEGIN's isolation level; default: the server's (`default_transaction_isolation`). */
  readonly isolationLevel?: IsolationLevel;
  /** BEGIN … READ ONLY. */
  readonly readOnly?: boolean;
  /** BEGIN … DEFERRABLE (only meaningful with serializable and readOnly). */
  readonly deferrable?: boolean;
  /**
   * Cancels the call. Already aborted: the call rejects with the signal's reason and `fn` never runs.
   * Aborted during a backoff between attempts, a bulkhead wait or before COMMIT: rejects with the reason
   * (the transaction is rolled back, the client released). Aborted during a rate-limit wait: rejects with
   * `RateLimitedError` (`reason: 'aborted'`). COMMIT already sent: the call settles with COMMIT's outcome.
   */
  readonly signal?: AbortSignal;
}

/** The client a pool hands out, as withTransaction uses it (pg's PoolClient fits). */
export interface TransactionClient {
  query(text: string): Promise<unknown>;
  release(error?: Error | boolean): void;
}

/** A pg Pool, as withTransaction uses it. */
export interface TransactionPool<C extends TransactionClient> {
  connect(): Promise<C>;
}

/**
 * A pg Pool as @types/pg declares it: `connect()` is overloaded (promise, then callback), and TypeScript
 * infers from the last overload, so the client type is taken from the callback form. Without this the
 * callback's `client` would only be a TransactionClient, and `client.query(text, values)` would not
 * type-check.
 */
export interface PgTransactionPool<C extends TransactionClient> {
  connect(): Promise<C>;
  connect(
    callback: (err: Error | undefined, client: C | undefined, done: (release?: unknown) => void) => void,
  ): void;
}

const ISOLATION_LEVELS: readonly IsolationLevel[] = ['read committed', 'repeatable read', 'serializable'];

export function withTransaction<T, C extends TransactionClient>(
  pool: PgTransactionPool<C>,
  fn: (client: C) => Promise<T> | T,
  options?: TransactionOptions,
): Promise<T>;
export function withTransaction<T, C extends TransactionClient>(
  pool: TransactionPool<C>,
  fn: (client: C) => Promise<T> | T,
  options?: TransactionOptions,
): Promise<T>;
export async function withTransaction<T, C extends TransactionClient>(
  pool: TransactionPool<C>,
  fn: (client: C) => Promise<T> | T,
  options: TransactionOptions = {},
): Promise<T> {
  const begin = beginStatement(options);
  if (typeof pool !== 'object' || pool === null || typeof pool.connect !== 'function') {
    throw new TypeError('withTransaction(pool, fn): pool must be a pg Pool (an object with connect())');
  }
  if (typeof fn !== 'function') {
    throw new TypeError(`withTransaction(pool, fn): fn must be a function, got ${typeof fn}`);
  }
  // Already aborted: nothing runs, not even a checkout (fn must never run for a cancelled call).
  options.signal?.throwIfAborted();
  const targets = runtime();
  const policy = targets.forPool(pool as never);
  const target = policy.target;
  const classify = (e: unknown): ErrorClassification => targets.registry.classify(e);
  const resolutionMs = policy.settings.transaction.outcomeResolutionMs;
  // A READ ONLY transaction can get no id: nothing to learn before its COMMIT.
  const learnId = resolutionMs > 0 && options.readOnly !== true;
  let commitSent = false;
  let appEnded = false;

  return policy.execute(
    async (_attempt, signal, report) => {
      commitSent = false;
      appEnded = false;
      const client = await checkout(pool);
      let discard: unknown;
      let released = false;
      let result: T | undefined;
      let transactionId: string | null | undefined;
      // The id query found the transaction already failed: its COMMIT can only answer ROLLBACK.
      let failedBeforeCommit = false;
      try {
        await client.query(begin);
        result = await fn(client);
        signal?.throwIfAborted();
        if (learnId) {
          transactionId = await currentTransactionId(client);
          failedBeforeCommit = transactionId === undefined;
        } else if (resolutionMs > 0) transactionId = null; // READ ONLY: it has no id, it wrote nothing
        commitSent = true;
        const answer = (await client.query('COMMIT')) as { command?: unknown } | undefined;
        if (answer?.command === 'ROLLBACK') throw new TransactionRolledBackError(target);
        return result;
      } catch (error) {
        appEnded = endedByApp(client); // read before release() below ends a discarded client
        const c = classify(error);
        if (commitSent && c.reachedServer === 'unknown') {
          discard = error;
          if (failedBeforeCommit) throw new TransactionRolledBackError(target);
          if (transactionId === undefined) throw new TransactionOutcomeUnknownError(target, error);
          const backendPid = (client as { processID?: unknown }).processID;
          // Give the dead connection back first: the lookups may need its pool slot.
          released = true;
          release(client, discard);
          const outcome = await settleLostCommit({
            connect: () => checkout(pool),
            transactionId,
            backendPid: typeof backendPid === 'number' ? backendPid : undefined,
            withinMs: resolutionMs,
            isolationLevel: options.isolationLevel,
            error,
            errorType: c.errorType,
            target,
            report,
          });
          if (outcome === 'committed') return result as T;
          // Aborted: COMMIT never took effect, so the transaction may run again like one lost before COMMIT.
          if (outcome === 'aborted') commitSent = false;
          else throw new TransactionOutcomeUnknownError(target, error, transactionId ?? undefined);
          throw error;
        }
        if (connectionBroken(c)) discard = error;
        else if (!commitSent) discard = await rollback(client);
        throw error;
      } finally {
        if (!released) release(client, discard);
      }
    },
    {
      operation: 'transaction',
      signal: options.signal,
      canRetry: (error, c) => transactionVeto({ appEnded, commitSent }, error, c),
    },
  );
}

function beginStatement(options: TransactionOptions): string {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`withTransaction options must be an object, got ${String(options)}`);
  }
  const { isolationLevel, readOnly, deferrable } = options;
  let sql = 'BEGIN';
  if (isolationLevel !== undefined) {
    if (!ISOLATION_LEVELS.includes(isolationLevel)) {
      throw new TypeError(
        `withTransaction option isolationLevel: ${JSON.stringify(isolationLevel)} is not allowed; ` +
          `use one of ${ISOLATION_LEVELS.map((l) => `'${l}'`).join(', ')}`,
      );
    }
    sql += ` ISOLATION LEVEL ${isolationLevel.toUpperCase()}`;
  }
  for (const [name, value, keyword] of [
    ['readOnly', readOnly, 'READ ONLY'],
    ['deferrable', deferrable, 'DEFERRABLE'],
  ] as const) {
    if (value === undefined) continue;
    if (typeof value !== 'boolean') {
      throw new TypeError(
        `withTransaction option ${name}: ${JSON.stringify(value)} is not allowed; use true or false`,
      );
    }
    if (value) sql += ` ${keyword}`;
  }
  return sql;
}

/** A client from the pool, without a second `connect` operation (the transaction operation governs it). */
function checkout<C>(pool: TransactionPool<C & TransactionClient>): Promise<C & TransactionClient> {
  scope.ownConnect++;
  try {
    return pool.connect();
  } finally {
    scope.ownConnect--;
  }
}

/** Error classes after which the connection must be discarded rather than rolled back. */
const BROKEN = new Set(['connection_lost', 'client_unusable', 'query_timeout', 'protocol']);

/**
 * The connection cannot be reused: pg-pool must discard it (a dead connection, or a statement still
 * running after a client-side timeout, behind which a ROLLBACK would wait).
 */
function connectionBroken(c: ErrorClassification): boolean {
  return BROKEN.has(c.errorClass);
}

/** Rolls back; returns the error to discard the connection with when that fails. */
async function rollback(client: TransactionClient): Promise<unknown> {
  try {
    await client.query('ROLLBACK');
    return undefined;
  } catch (error) {
    return error;
  }
}

function release(client: TransactionClient, discard: unknown): void {
  try {
    client.release(discard === undefined ? undefined : discard instanceof Error ? discard : true);
  } catch {
    // The callback released the client itself: pg-pool refuses a second release. Nothing to do.
  }
}
