/**
 * `Pool.prototype.query`: one `query` operation, end to end.
 *
 * pg-pool's `query` checks a client out (`this.connect`), runs the statement, releases the client.
 * Each attempt runs pg-pool's own `query` unchanged; the inner connect and statement recognise the
 * attempt (scope.poolQuery) and pass through, so the policies apply once: rate limit, bulkhead and
 * breaker before any pool slot is taken. A failed attempt's client was released with the error by
 * pg-pool (a dead connection is discarded), so a retry runs on another connection. A failed checkout
 * (`connecting`) is counted apart from the statement's attempts (policy/retry.ts), as a substitute's
 * connect is: a flaky network's refused or reset connects do not use up a read's attempts.
 *
 * Retried when safe (src/safety/retry-safety.ts): the checkout failed (pg-pool's connect callback got an error, so
 * nothing was sent), dispatch tracking proved the statement unsent, the server rejected and rolled back
 * a single statement, or the outcome is unknown and the statement is marked idempotent or read-only. Never when the checked-out connection was inside
 * a transaction, never a Submittable.
 */
import { statementVeto } from '../safety/retry-safety.ts';
import { isSubmittable } from '../safety/submittable.ts';
import { asPromise, type PromiseCtor, settleCallback } from './callbacks.ts';
import { cancelOnTimeout, isCancelling } from './cancel.ts';
import { type PoolQueryAttempt, scope } from './scope.ts';
import type { Targets } from './targets.ts';
import type { PgPoolLike } from './types.ts';

type Fn = (this: PgPoolLike, ...args: unknown[]) => unknown;
type Callback = (...args: unknown[]) => unknown;

export function patchPoolQuery(targets: () => Targets): (original: Fn) => Fn {
  return (original) =>
    function query(this: PgPoolLike, ...args: unknown[]): unknown {
      const text = args[0];
      let [, values, cb] = args;
      if (typeof values === 'function') {
        cb = values;
        values = undefined;
      }
      if (
        typeof text === 'function' ||
        scope.poolQuery !== undefined ||
        this.ending === true ||
        (cb !== undefined && typeof cb !== 'function')
      ) {
        return original.apply(this, args);
      }
      // eslint-disable-next-line @typescript-eslint/no-this-alias -- named for the closures below
      const pool = this;
      const submittable = isSubmittable(text);
      let current: PoolQueryAttempt | undefined;
      let last: unknown[] | undefined;
      const operation = targets()
        .forPool(pool)
        .execute(
          (_n, signal) => {
            const attempt: PoolQueryAttempt = {
              client: undefined,
              txStatus: undefined,
              provedUnsent: false,
            };
            current = attempt;
            signal?.addEventListener('abort', () => abandon(attempt, signal.reason), { once: true });
            const previous = scope.poolQuery;
            scope.poolQuery = attempt;
            try {
              // Promise form: pg-pool's own promise, returned as it is when it is a native one (the
              // policies react on it directly), so a rejection keeps the caller's async frames exactly
              // when that pg-pool version restores them (3.6.2 does, 3.1.1 does not). Another Promise
              // class (pg-pool's `Promise` option) is followed through a native promise's resolving functions.
              if (typeof cb !== 'function') {
                const answer = original.call(pool, text, values) as PromiseLike<unknown>;
                if (answer instanceof Promise) return answer;
                return new Promise((resolve, reject) => answer.then(resolve, reject));
              }
              return new Promise((resolve, reject) => {
                original.call(pool, text, values, (...cbArgs: unknown[]) => {
                  if (current !== attempt) return; // a late answer to an attempt that timed out
                  last = cbArgs;
                  if (cbArgs[0]) reject(cbArgs[0]);
                  else resolve(cbArgs[1]);
                });
              });
            } finally {
              scope.poolQuery = previous;
            }
          },
          {
            operation: 'query',
            retry: !submittable,
            cancel: submittable ? undefined : cancelOnTimeout(() => current),
            // No client yet: the checkout (a connect) failed.
            connecting: () => current !== undefined && current.client === undefined,
            canRetry: (_error, c) =>
              statementVeto(
                {
                  query: text,
                  values,
                  freshConnection: true,
                  txStatus: current?.txStatus,
                  // A failed checkout sent nothing; else dispatch tracking may have proved it.
                  provedUnsent: current?.checkoutFailed === true || current?.provedUnsent === true,
                  othersQueued: false,
                  endedByApp: current?.endedByApp === true,
                },
                c,
              ),
          },
        );
      if (typeof cb === 'function') {
        settleCallback(operation, cb as Callback, () => last);
        return undefined;
      }
      return asPromise(operation, (pool as { Promise?: PromiseCtor }).Promise);
    };
}

/**
 * The package's timeout gave up on an attempt: nobody waits for its answer any more.
 * - Its statement not sent yet (still waiting for a pool client): it will not be sent (client-query.ts
 *   checks `abandoned` when pg-pool hands the statement over).
 * - Its statement on a checked-out client: one that never answers (a blackholed network) would keep
 *   that pool slot forever, so the connection is closed: pg fails the statement, pg-pool's own query
 *   callback releases the client with that error, and the pool discards it. (The statement's outcome
 *   was already unknown; the server ends it when it notices the closed connection.) With
 *   `timeout.cancelGraceMs`, the statement is first cancelled on the server (cancel.ts), which closes
 *   the connection only when no answer comes within the grace.
 */
function abandon(attempt: PoolQueryAttempt, reason: unknown): void {
  attempt.abandoned = reason ?? true;
  if (isCancelling(attempt.client)) return; // cancel.ts closes it if the server does not answer
  const client = attempt.client as { connection?: { stream?: { destroy?: () => void } } } | undefined;
  try {
    client?.connection?.stream?.destroy?.();
  } catch {
    // already closed
  }
}
