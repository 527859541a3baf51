/**
 * `Client.prototype.connect` of a standalone client (one the app created and connects itself).
 *
 * A pool's clients are connected by pg-pool inside `newClient` (scope.poolNewClient): their connect
 * is part of the Pool.connect / Pool.query operation that the pool patches govern, so it passes through
 * (and the client is remembered as a pool client), bounded by the target's `timeout.connectMs` when the
 * pool sets no `connectionTimeoutMillis` of its own (see boundPoolConnect). The package's own probe
 * clients pass through too.
 *
 * A standalone connect gets the breaker, the rate limit, the bulkhead and the connect timeout, but is
 * never retried: pg cannot connect a Client twice ("Client has already been connected. You cannot
 * reuse a client."), and a Pool is how pg gets fresh connections. When the package's connect timeout
 * fires, the half-open connection is ended so it never lingers.
 */
import { asPromise, type PromiseCtor, settleCallback } from './callbacks.ts';
import { scope } from './scope.ts';
import type { Targets } from './targets.ts';
import { watchTransactionStatus } from './tx-status.ts';
import type { PgClientLike } from './types.ts';
import { clientTarget } from './utils.ts';

type ConnectFn = (this: PgClientLike, ...args: unknown[]) => unknown;
type Callback = (...args: unknown[]) => unknown;

const ignore = (): void => {};

export function patchClientConnect(targets: () => Targets): (original: ConnectFn) => ConnectFn {
  return (original) =>
    function connect(this: PgClientLike, ...args: unknown[]): unknown {
      const callback = args[0];
      watchTransactionStatus(this); // pg < 8.21 only
      if (scope.poolNewClient > 0) {
        scope.poolClients.add(this);
        boundPoolConnect(this, targets);
        return original.apply(this, args);
      }
      if (scope.ownClients.has(this) || (callback !== undefined && typeof callback !== 'function')) {
        return original.apply(this, args);
      }
      // eslint-disable-next-line @typescript-eslint/no-this-alias -- named for the closures below
      const client = this;
      let last: unknown[] | undefined;
      const operation = targets()
        .forClient(client)
        .execute(
          (_attempt, signal) =>
            new Promise((resolve, reject) => {
              signal?.addEventListener('abort', () => endQuietly(client), { once: true });
              original.call(client, (...cbArgs: unknown[]) => {
                last = cbArgs;
                if (cbArgs[0]) reject(cbArgs[0]);
                else resolve(client);
              });
            }),
          { operation: 'connect', retry: false },
        );
      if (typeof callback === 'function') {
        settleCallback(operation, callback as Callback, () => last);
        return undefined;
      }
      return asPromise(operation, (client as { _Promise?: PromiseCtor })._Promise);
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

function endQuietly(client: PgClientLike): void {
  try {
    (client as { end?: (cb: () => void) => unknown }).end?.(ignore);
  } catch {
    // already ended
  }
}
