/**
 * `Client.prototype.query`: a statement on a client.
 *
 * - Inside an attempt of pg-pool's `Pool.query` (scope.poolQuery), the call is pg-pool's own: it runs
 *   untouched, and only records for that attempt which client ran it, the transaction status before it,
 *   and (dispatch tracking) whether its error proves it was never sent. The Pool.query patch applies
 *   the policies, once.
 * - A client checked out of a pool runs statements inside an admitted checkout: no rate limit,
 *   bulkhead or breaker (`admission: false`); retries and timeouts apply.
 * - A standalone client gets every policy.
 * - Retries on a client are the same client's (pg cannot reconnect one): only a statement the server
 *   rejected and rolled back, outside a transaction, with nothing else queued (src/safety/retry-safety.ts). A read
 *   or idempotent statement whose connection died runs again on a substitute connection instead, when
 *   the session state allows it (substitute.ts).
 * - Submittables (pg-cursor, pg-query-stream…): `client.query(q)` returns `q` itself, as pg does; they
 *   are never retried. A standalone client admits them (breaker closed, rate-limit permit) before pg
 *   sees them; a refusal reaches them through `q.handleError(err)`, the way pg fails a query.
 * - Calls pg rejects synchronously (null query, a callback that is not a function) go straight to pg,
 *   so they throw exactly as they would.
 * Callbacks get the arguments pg gave the attempt that ended the call; promises are of the client's
 * Promise class.
 */
import type { ExecuteContext } from '../policy/types.ts';
import { statementVeto } from '../safety/retry-safety.ts';
import { isSubmittable, type Submittable } from '../safety/submittable.ts';
import { asPromise, invokeCallback, type PromiseCtor, settleCallback } from './callbacks.ts';
import { cancelOnTimeout, lastQuery, type RunningStatement } from './cancel.ts';
import { errorIsForUnsentQuery } from './dispatch.ts';
import { endedByApp, failedByEnd } from './ended-by-app.ts';
import { type PoolQueryAttempt, scope } from './scope.ts';
import { Substitute, substituteReady, substituteVeto, trackSession, usable } from './substitute.ts';
import { watchStatement } from './substitute-events.ts';
import type { Targets } from './targets.ts';
import { transactionStatus } from './tx-status.ts';
import type { PgClientLike } from './types.ts';

type QueryFn = (this: PgClientLike, ...args: unknown[]) => unknown;
type Callback = (...args: unknown[]) => unknown;

/** App statements on this client not settled yet (a retry must not overtake one queued behind it). */
const IN_FLIGHT = Symbol('pg-resilience.inFlight');
type Counted = PgClientLike & { [IN_FLIGHT]?: number };

export function patchClientQuery(targets: () => Targets): (original: QueryFn) => QueryFn {
  return (original) =>
    function query(this: PgClientLike, ...args: unknown[]): unknown {
      const attempt = scope.poolQuery;
      if (attempt !== undefined) return forPoolQuery(original, this, attempt, args);
      const [config, values, callback] = args;
      if (config == null || scope.ownClients.has(this)) return original.apply(this, args);

      const pooled = scope.poolClients.has(this) || typeof this.release === 'function';
      if (isSubmittable(config)) {
        trackSession(this, config, (config as { values?: unknown }).values, 1)?.(false);
        if (pooled) return original.apply(this, args);
        return submittable(original, this, targets(), config as Submittable, args);
      }

      const cb =
        callback ??
        (typeof values === 'function' ? values : undefined) ??
        (typeof config === 'object' ? (config as { callback?: unknown }).callback : undefined);
      if (cb !== undefined && cb !== null && typeof cb !== 'function') {
        return original.apply(this, args); // pg throws 'callback is not a function'
      }

      const client = this as Counted;
      const statementValues = typeof values === 'function' ? undefined : values;
      const usableAtIssue = usable(client);
      const noted = trackSession(client, config, statementValues, client[IN_FLIGHT] ?? 0);
      // Set once the connection died under a statement that may run on a substitute: every later attempt does.
      let substitute: Substitute | undefined;
      let failure: unknown;
      // pg threw inside the call itself (a malformed argument, a value it cannot serialise): like pg,
      // the caller gets that throw, synchronously, and nothing else (no callback, no retry).
      let calling = true;
      let thrown: { error: unknown } | undefined;
      let running: RunningStatement | undefined; // the attempt's statement, for a cancel at its deadline
      const ctx: ExecuteContext = {
        operation: 'query',
        admission: !pooled,
        cancel: cancelOnTimeout(() => running),
        canRetry: (error, c) => {
          if (thrown !== undefined) return 'not_retryable';
          failure = error;
          const othersQueued = (client[IN_FLIGHT] ?? 0) > 1;
          const instead = substituteVeto(
            {
              client,
              error,
              query: config,
              values: statementValues,
              usableAtIssue,
              othersQueued,
              // The app's end() cut it short; an owner that ends the client after it died (evicting it) does not count.
              endedByApp: failedByEnd(client, error),
            },
            c,
            substitute,
          );
          if (instead === true) substitute ??= new Substitute(client, policy.settings.timeout.connectMs);
          if (instead !== undefined) return instead;
          return statementVeto(
            {
              query: config,
              values: statementValues,
              freshConnection: false,
              txStatus: transactionStatus(client),
              provedUnsent: false,
              othersQueued,
              endedByApp: endedByApp(client),
            },
            c,
          );
        },
      };
      client[IN_FLIGHT] = (client[IN_FLIGHT] ?? 0) + 1;
      const tgts = targets();
      const policy = tgts.forClient(client);
      // Opt-in: a standalone client's 'error' waits while this statement may still be answered on a substitute.
      const unwatch =
        !pooled && usableAtIssue && policy.settings.retry.holdClientErrorWhileSubstituting
          ? watchStatement(
              client,
              () => client[IN_FLIGHT] === 1 && substituteReady(client, config, statementValues),
            )
          : undefined;
      let inFlight = true;
      const done = (): void => {
        if (!inFlight) return;
        inFlight = false;
        client[IN_FLIGHT] = (client[IN_FLIGHT] ?? 1) - 1;
        unwatch?.();
      };
      const send = (target: object, own: Callback): void => {
        if (statementValues === undefined) original.call(target as PgClientLike, config, own);
        else original.call(target as PgClientLike, config, statementValues, own);
      };

      if (typeof cb === 'function') {
        let last: unknown[] | undefined;
        let delivered = false;
        const deliver = (...args: unknown[]): void => {
          if (delivered) return;
          delivered = true;
          done();
          (cb as Callback)(...args);
        };
        const operation = policy.execute(
          (_attempt, signal) =>
            new Promise((resolve, reject) => {
              const own = (...args: unknown[]): void => {
                last = args;
                // Certainly the call's outcome (a result, or an error never retried): hand it to the app
                // now, in pg's own tick, as pg does, so what pg does next ('drain', the next queued
                // statement) follows the callback as it does bare.
                if (!signal?.aborted && (!args[0] || !tgts.registry.classify(args[0]).transient)) {
                  invokeCallback(deliver, args);
                }
                if (args[0]) reject(args[0]);
                else resolve(args[1]);
              };
              if (substitute !== undefined) {
                substitute
                  .run(
                    (target) =>
                      new Promise((finish) => {
                        send(target, (...a) => finish(own(...a)));
                        running = { client: target, query: lastQuery(target) };
                      }),
                    failure,
                    signal,
                  )
                  .catch(reject);
                return;
              }
              try {
                send(client, own);
                running = { client, query: lastQuery(client) };
              } catch (error) {
                if (calling) thrown = { error };
                throw error;
              }
            }),
          ctx,
        );
        calling = false;
        operation.then(done, done);
        if (noted)
          operation.then(
            () => noted(true),
            () => noted(false),
          );
        if (thrown) throw thrown.error;
        settleCallback(operation, deliver, () => last);
        return undefined;
      }

      const operation = policy.execute((_n, signal) => {
        if (substitute !== undefined) {
          return substitute.run(
            (target) => {
              const result = original.call(target as never, config, values) as Promise<unknown>;
              running = { client: target, query: lastQuery(target) };
              return result;
            },
            failure,
            signal,
          );
        }
        try {
          const result = original.apply(client, args) as Promise<unknown>;
          running = { client, query: lastQuery(client) };
          return result;
        } catch (error) {
          if (calling) thrown = { error };
          throw error;
        }
      }, ctx);
      calling = false;
      // One chain from pg's promise to the caller's: V8 follows a promise's async callers only through
      // a single reaction, and pg (8.11.5 does, 8.0.3 not) re-captures the stack on rejection through it.
      const counted = operation.then(
        (value) => {
          done();
          noted?.(true);
          return value;
        },
        (error: unknown) => {
          done();
          noted?.(false);
          throw error;
        },
      );
      if (thrown) {
        counted.catch(() => {});
        throw thrown.error;
      }
      return asPromise(counted, (client as { _Promise?: PromiseCtor })._Promise);
    };
}

/** pg-pool's own statement inside one Pool.query attempt: record what the attempt needs, run it as is. */
function forPoolQuery(
  original: QueryFn,
  client: PgClientLike,
  attempt: PoolQueryAttempt,
  args: unknown[],
): unknown {
  scope.poolQuery = undefined; // this attempt's one statement; restored by the Pool.query patch
  const cb = args[2];
  if (attempt.abandoned !== undefined && typeof cb === 'function') {
    // The attempt timed out while waiting for this client: do not send a statement nobody waits for.
    // pg-pool releases the client with the error (and discards it); the caller already has its answer.
    const reason = attempt.abandoned;
    process.nextTick(() => (cb as Callback)(reason instanceof Error ? reason : new Error(String(reason))));
    return undefined;
  }
  attempt.client = client;
  attempt.txStatus = transactionStatus(client);
  const noted = trackSession(client, args[0], args[1], 0);
  if (typeof cb !== 'function') return original.apply(client, args);
  const result = original.call(client, args[0], args[1], function (this: unknown, ...cbArgs: unknown[]) {
    noted?.(!cbArgs[0]);
    if (cbArgs[0]) {
      attempt.provedUnsent = errorIsForUnsentQuery();
      attempt.endedByApp = failedByEnd(client, cbArgs[0]); // before pg-pool's callback releases it
    }
    return (cb as Callback).apply(this, cbArgs);
  });
  attempt.query = lastQuery(client);
  return result;
}

function submittable(
  original: QueryFn,
  client: PgClientLike,
  targets: Targets,
  query: Submittable,
  saved: unknown[],
): unknown {
  const gate = targets.forClient(client).admit('query');
  if (gate === undefined) return original.apply(client, saved);
  gate.then(
    () => original.apply(client, saved),
    (error: unknown) => {
      // What pg does with a callback given alongside a Submittable, then how it fails a query.
      if (!query.callback) {
        if (typeof saved[1] === 'function') query.callback = saved[1];
        else if (saved[2]) query.callback = saved[2];
      }
      if (typeof query.handleError === 'function') {
        query.handleError(error, (client as { connection?: unknown }).connection);
      }
    },
  );
  return query;
}
