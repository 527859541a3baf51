/**
 * `Client.prototype.connect` of a standalone client (one the app created and connects itself).
 *
 * A pool's clients are connected by pg-pool inside `newClient` (scope.poolNewClient): their connect
 * is part of the Pool.connect / Pool.query operation that the pool patches govern, so it passes through
 * (and the client is remembered as a pool client), bounded by the target's `timeout.connectMs` when the
 * pool sets no `connectionTimeoutMillis` of its own (see boundPoolConnect). The package's own probe
 * clients pass through too.
 *
 * A standalone connect gets the breaker, the rate limit, the bulkhead, the connect timeout and retries.
 * pg refuses to connect a Client twice ("Client has already been connected. You cannot reuse a
 * client."), yet ORMs that pool their own `new pg.Client()` (knex, Sequelize, slonik) connect each one
 * once: so a connect that failed transiently before the session was ready (no ReadyForQuery: no
 * statement can have run) is tried again on the same Client, reset to never connected on a fresh
 * connection, its failed attempts' 'end'/'error' held (client-reconnect.ts; the rule is
 * `clientConnectVeto`). A client built on the app's own `stream` or `connection` is not retried. When the
 * package's connect timeout fires, the attempt's half-open connection is closed so it never lingers
 * (as pg's own connect timeout closes it, or with `end()` when the client cannot be reconnected); a
 * connect that finally fails on that timeout leaves the client ended, as before.
 *
 * `end()` during the connect (`c.connect(); c.end()`): pg ends the connection and never answers that
 * connect, neither its callback nor its promise, and emits no error. The same here: when pg ends the
 * client without having answered, the operation ends (its timer is cleared, nothing holds the process)
 * and the app's callback or promise is left unanswered, as pg leaves it (ended-by-app.ts).
 */
import { asPromise, type PromiseCtor, settleCallback } from './callbacks.ts';
import { isOperationTimeoutError } from '../errors.ts';
import { budgetedConnect } from './budget-connect.ts';
import { rampedConnect } from './ramp-connect.ts';
import { clientConnectVeto } from '../safety/retry-safety.ts';
import { Reconnect } from './client-reconnect.ts';
import { ConnectEndedByAppError, endedByApp, never } from './ended-by-app.ts';
import { applyDefaultKeepAlive } from './keepalive.ts';
import { watchForEndpointFlip } from './failover.ts';
import { adoptPoolHostSpec, clientHostSpec } from './multi-host.ts';
import { hostAwareConnect } from './multi-host-connect.ts';
import { scope } from './scope.ts';
import { isSubstitute, rememberPool } from './substitute.ts';
import type { Targets } from './targets.ts';
import { watchTransactionStatus } from './tx-status.ts';
import type { PgClientLike } from './types.ts';
import { clientTarget } from './utils.ts';

type ConnectFn = (this: PgClientLike, ...args: unknown[]) => unknown;
type Callback = (...args: unknown[]) => unknown;
type Emitter = {
  once?: (event: string, listener: () => void) => unknown;
  removeListener?: (event: string, listener: () => void) => unknown;
};

const ignore = (): void => {};

export function patchClientConnect(targets: () => Targets): (original: ConnectFn) => ConnectFn {
  return (pgConnect) => {
    // A client of a multi-host target connects to the host chosen for it (multi-host-connect.ts).
    // After the breaker closed from open, new server connections ramp up (ramp-connect.ts); each then
    // takes a slot of the target's connection budget, when one is set.
    const original = hostAwareConnect(rampedConnect(budgetedConnect(pgConnect, targets), targets), targets);
    return function connect(this: PgClientLike, ...args: unknown[]): unknown {
      const callback = args[0];
      if (scope.poolNewClient > 0 && !scope.ownClients.has(this)) adoptPoolHostSpec(this);
      // Read before the keepalive default touches the connection (client-reconnect.ts).
      const reconnectable = Reconnect.possible(this);
      watchTransactionStatus(this); // pg < 8.21 only
      defaultKeepAlive(this, targets);
      if (scope.poolNewClient > 0) {
        scope.poolClients.add(this);
        rememberPool(this);
        boundPoolConnect(this, targets);
        watchPoolClientForFlip(this, targets);
        return original.apply(this, args);
      }
      if (scope.ownClients.has(this) || (callback !== undefined && typeof callback !== 'function')) {
        return original.apply(this, args);
      }
      // eslint-disable-next-line @typescript-eslint/no-this-alias -- named for the closures below
      const client = this;
      // end() before connect() is pg's no-op (the connect then goes ahead); only a later end() cuts it short.
      const endedBefore = endedByApp(client);
      // Tried again on the same client when it failed before the session was ready (client-reconnect.ts).
      const policy = targets().forClient(client);
      const reconnect = reconnectable && !endedBefore ? Reconnect.begin(client) : undefined;
      let last: unknown[] | undefined;
      const operation = policy.execute(
        (attempt, signal) =>
          new Promise((resolve, reject) => {
            // The app ended the client while this connect waited for a permit: pg would never answer it.
            if (!endedBefore && endedByApp(client)) {
              reject(new ConnectEndedByAppError());
              return;
            }
            if (attempt > 1 && reconnect) {
              reconnect.reset();
              defaultKeepAlive(client, targets);
            }
            const abandon = reconnect ? () => reconnect.abandon() : () => endQuietly(client);
            signal?.addEventListener('abort', abandon, { once: true });
            // pg emits 'end' after answering a connect that failed; 'end' with no answer means none comes.
            const emitter = client as Emitter;
            const unanswered = (): void => reject(new ConnectEndedByAppError());
            emitter.once?.('end', unanswered);
            original.call(client, (...cbArgs: unknown[]) => {
              emitter.removeListener?.('end', unanswered);
              last = cbArgs;
              if (cbArgs[0]) reject(cbArgs[0]);
              else {
                reconnect?.succeeded();
                resolve(client);
              }
            });
          }),
        {
          operation: 'connect',
          // A substitute's connect is part of its statement's call, admitted already (substitute.ts).
          admission: !isSubstitute(client),
          retry: endedBefore ? false : undefined,
          canRetry: () =>
            clientConnectVeto({
              reconnectable: reconnect !== undefined,
              endedByApp: endedByApp(client),
              sessionReady: (client as { _connected?: unknown })._connected === true,
            }),
        },
      );
      operation.then(undefined, (error: unknown) => {
        if (!reconnect) return;
        // The package's connect timeout ended it: the client is ended as before (the app's end()).
        if (isOperationTimeoutError(error)) endQuietly(client);
        reconnect.failed();
      });
      // A connect cut short by the app's end() stays unanswered, as with pg.
      const answered = operation.catch((error: unknown) =>
        error instanceof ConnectEndedByAppError ? never<PgClientLike>() : Promise.reject(error),
      );
      if (typeof callback === 'function') {
        settleCallback(answered, callback as Callback, () => last);
        return undefined;
      }
      return asPromise(answered, (client as { _Promise?: PromiseCtor })._Promise);
    };
  };
}

/**
 * A pool client's connect, left to pg, waits forever when the pool sets no `connectionTimeoutMillis`
 * (pg's default): a connection whose handshake is lost (a blackholed network, a middlebox that dropped
 * the flow) then holds one of the pool's slots for good, long after the call that caused it gave up (the
 * package's timeout abandons the attempt, not pg-pool's pending connect). Seen in the chaos suite: after
 * a blackhole, 9 of a pool's 10 slots held by nobody. So the target's `timeout.connectMs` becomes pg's own
 * connection timeout for that client: pg then fails the connect ('timeout expired'), pg-pool frees the
 * slot, and a waiting call gets a connect_timeout (retried: nothing was sent). A pool's own setting wins.
 */
function boundPoolConnect(client: PgClientLike, targets: () => Targets): void {
  try {
    const c = client as PgClientLike & { _connectionTimeoutMillis?: unknown };
    if (typeof c._connectionTimeoutMillis === 'number' && c._connectionTimeoutMillis > 0) return;
    const connectMs = targets().registry.forTarget(clientTarget(client)).settings.timeout.connectMs;
    if (connectMs > 0) c._connectionTimeoutMillis = connectMs;
  } catch {
    // never in the way of pg's connect
  }
}

/** A single-address pool client: its address may flip to another server (failover.ts). */
function watchPoolClientForFlip(client: PgClientLike, targets: () => Targets): void {
  try {
    if (clientHostSpec(client) === undefined)
      watchForEndpointFlip(client, () => clientTarget(client), targets);
  } catch {
    // never in the way of pg's connect
  }
}

/** TCP keepalive when the app's config set none (keepalive.ts), before pg opens the socket. */
function defaultKeepAlive(client: PgClientLike, targets: () => Targets): void {
  try {
    const { liveness } = targets().registry.forTarget(clientTarget(client)).settings;
    applyDefaultKeepAlive(client, liveness.keepAliveInitialDelayMs);
  } catch {
    // never in the way of pg's connect
  }
}

function endQuietly(client: PgClientLike): void {
  try {
    (client as { end?: (cb: () => void) => unknown }).end?.(ignore);
  } catch {
    // already ended
  }
}
