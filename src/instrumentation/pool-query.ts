/**
 * `Pool.prototype.query`: one `query` operation, end to end.
 *
 * pg-pool's `query` checks a client out (`this.connect`), runs the statement, releases the client.
 * Each attempt runs pg-pool's own `query` unchanged; the inner connect and statement recognise the
 * attempt (scope.poolQuery) and pass through, so the policies apply once: rate limit, bulkhead and
 * breaker before any pool slot is taken, and the configured attempts are the attempts, end to end.
 * A failed attempt's client was released with the error by pg-pool (a dead connection is discarded),
 * so a retry runs on another connection.
 *
 * Retried when safe (retry-safety.ts): the checkout failed (nothing sent), dispatch tracking proved the
 * statement unsent, the server rejected and rolled back a single statement, or the outcome is unknown
 * and the statement is marked idempotent or read-only. Never when the checked-out connection was inside
 * a transaction, never a Submittable.
 */
import { asPromise, type PromiseCtor, settleCallback } from './callbacks.ts';
import { statementVeto } from './retry-safety.ts';
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
      const isSubmittable =
        typeof text === 'object' &&
        text !== null &&
        typeof (text as { submit?: unknown }).submit === 'function';
      let current: PoolQueryAttempt | undefined;
      let last: unknown[] | undefined;
      const operation = targets()
        .forPool(pool)
        .execute(
          () =>
            new Promise((resolve, reject) => {
              const attempt: PoolQueryAttempt = {
                client: undefined,
                txStatus: undefined,
                provedUnsent: false,
              };
              current = attempt;
              const previous = scope.poolQuery;
              scope.poolQuery = attempt;
              try {
                original.call(pool, text, values, (...cbArgs: unknown[]) => {
                  if (current !== attempt) return; // a late answer to an attempt that timed out
                  last = cbArgs;
                  if (cbArgs[0]) reject(cbArgs[0]);
                  else resolve(cbArgs[1]);
                });
              } finally {
                scope.poolQuery = previous;
              }
            }),
          {
            operation: 'query',
            retry: !isSubmittable,
            canRetry: statementVeto({
              query: text,
              values,
              freshConnection: true,
              txStatus: () => current?.txStatus,
              provedUnsent: () => current?.provedUnsent === true,
              othersQueued: () => false,
            }),
          },
        );
      if (typeof cb === 'function') {
        settleCallback(operation, cb as Callback, () => last);
        return undefined;
      }
      return asPromise(operation, (pool as { Promise?: PromiseCtor }).Promise);
    };
}
