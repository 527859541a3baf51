/**
 * `Pool.prototype.connect` (and `newClient`, which marks the pool's own client connects and tells
 * each new client its pool, for substitute connections: substitute.ts).
 *
 * - Called by pg-pool's own `Pool.query` (scope.poolQuery): part of that attempt, so it passes through;
 *   its callback runs with the attempt back in scope, so the statement pg-pool issues in it is
 *   recognised as the attempt's.
 * - Called by the package itself (withTransaction, scope.ownConnect): passes through; the transaction
 *   operation governs it.
 * - Called by the app: one `connect` operation. Rate limit, bulkhead and breaker run before pg-pool is
 *   asked for a client, so a refused call never holds a pool slot. Transient failures are retried (no
 *   statement has run: a connect is always safe to repeat, `connectVeto`), each attempt asking the pool again (a
 *   failed new client is discarded by pg-pool, so a retry gets a fresh connection).
 * - A checkout that waited the pool's `connectionTimeoutMillis` for a free client (pool_exhausted) is
 *   not retried (the classification says so): the caller's bound has passed, and a retry would queue
 *   again behind, and take the client of, callers that waited less. The package's own connect timeout
 *   never cuts a checkout short: each attempt is one checkout, bounded as bare pg bounds it, and a new
 *   client's connect is bounded by `timeout.connectMs` when the pool sets no timeout of its own.
 */
import { connectVeto } from '../safety/retry-safety.ts';
import { asPromise, type PromiseCtor, settleCallback } from './callbacks.ts';
import { inMultiHostNewClient } from './multi-host.ts';
import { type PoolQueryAttempt, scope } from './scope.ts';
import { inPoolNewClient } from './substitute.ts';
import type { Targets } from './targets.ts';
import type { PgPoolLike } from './types.ts';

type Fn = (this: PgPoolLike, ...args: unknown[]) => unknown;
type Callback = (...args: unknown[]) => unknown;

export function patchPoolConnect(targets: () => Targets): (original: Fn) => Fn {
  return (original) =>
    function connect(this: PgPoolLike, ...args: unknown[]): unknown {
      const cb = args[0];
      const attempt = scope.poolQuery;
      if (attempt !== undefined && typeof cb === 'function') {
        return original.call(this, inAttemptScope(attempt, cb as Callback));
      }
      if (
        attempt !== undefined ||
        scope.ownConnect > 0 ||
        this.ending === true ||
        (cb !== undefined && typeof cb !== 'function')
      ) {
        return original.apply(this, args);
      }
      // eslint-disable-next-line @typescript-eslint/no-this-alias -- named for the closures below
      const pool = this;
      let last: unknown[] | undefined;
      const tgts = targets();
      const policy = tgts.forPool(pool);
      const checkout = tgts.leaks.checkout(policy, connect);
      const operation = policy.execute(
        () =>
          new Promise((resolve, reject) => {
            if (typeof cb !== 'function') {
              // pg-pool's own promise, settling the attempt through its resolving functions (V8 follows
              // those), so a rejection keeps the caller's async frames when that pg-pool restores them.
              (original.call(pool) as Promise<unknown>).then(resolve, reject);
              return;
            }
            original.call(pool, (...cbArgs: unknown[]) => {
              last = cbArgs;
              if (cbArgs[0]) reject(cbArgs[0]);
              else resolve(cbArgs[1]);
            });
          }),
        // No package timeout on a checkout: a wait for a free client is load, bounded only by the
        // pool's connectionTimeoutMillis as with bare pg (cutting it short would retry it at the back
        // of the queue); a new client's connect is bounded by that option or timeout.connectMs
        // (client-connect.ts, boundPoolConnect).
        { operation: 'connect', canRetry: connectVeto, timeout: false },
      );
      const watched = checkout ? tgts.leaks.watch(checkout, operation, () => last) : operation;
      if (typeof cb === 'function') {
        settleCallback(watched, cb as Callback, () => last);
        return undefined;
      }
      return asPromise(watched, (pool as { Promise?: PromiseCtor }).Promise);
    };
}

/**
 * The connect callback of a Pool.query attempt, run with that attempt in scope. An error here means
 * pg-pool got no client for the attempt, so it fails the query without sending it (recorded for the
 * retry-safety veto: a failed checkout is always safe to retry).
 */
function inAttemptScope(attempt: PoolQueryAttempt, cb: Callback): Callback {
  return function (this: unknown, ...args: unknown[]): unknown {
    if (args[0]) attempt.checkoutFailed = true;
    const previous = scope.poolQuery;
    scope.poolQuery = attempt;
    try {
      return cb.apply(this, args);
    } finally {
      scope.poolQuery = previous;
    }
  };
}

/** The pool bounds its checkouts itself (pg-pool's `connectionTimeoutMillis`). */
/** Wrapper for `Pool.prototype.newClient`: the client.connect() inside is the pool's own. */
export function markPoolNewClient(original: Fn): Fn {
  return function newClient(this: PgPoolLike, ...args: unknown[]): unknown {
    scope.poolNewClient++;
    try {
      return inPoolNewClient(this, () => inMultiHostNewClient(this, () => original.apply(this, args)));
    } finally {
      scope.poolNewClient--;
    }
  };
}
