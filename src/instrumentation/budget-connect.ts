/**
 * The connection budget at pg's own connect (`connectionBudget.maxConnections`, ConnectionBudget):
 * every new server connection to a target, a pool's or a standalone client's, takes a slot before pg
 * opens the socket, and gives it back when that connection ends (the client's 'end') or fails to
 * connect. With a slot free, pg's connect runs at once (synchronously, as without a budget); otherwise
 * it waits for one, first come first served, bounded by the connect timeout: the client's own
 * `connectionTimeoutMillis` (a pool passes its own to its clients) else `timeout.connectMs`, less 10 ms
 * so the budget answers before pg-pool's or the policy's own timer with the typed
 * ConnectionBudgetExhaustedError. Both 0: no bound.
 *
 * A pool client waiting for a slot stays in pg-pool's `_clients`, as one connecting: the pool counts it,
 * the checkout waits longer, and a failure is pg-pool's ordinary failed connect (the client is dropped,
 * the next waiter served). The package's own connections (probes, outcome checks) are not counted.
 * A client ended while it waited (`end()`) does not connect, and is not answered, as pg does.
 */
import type { ReleaseSlot } from '../policy/connection-budget.ts';
import { endedByApp } from './ended-by-app.ts';
import { scope } from './scope.ts';
import type { Targets } from './targets.ts';
import type { PgClientLike, PgPoolLike } from './types.ts';
import { clientTarget } from './utils.ts';

type ConnectFn = (this: PgClientLike, ...args: unknown[]) => unknown;

/**
 * How much sooner than the connect timeout the budget gives up: pg-pool's own timer for the same
 * connect was started a moment earlier (Node stamps each timer with the current ms), and when it fires
 * first the pool replaces the typed error with "Connection terminated due to connection timeout".
 */
const ANSWER_FIRST_MS = 10;
type Callback = (...args: unknown[]) => unknown;
type Emitter = {
  once?: (event: string, listener: () => void) => unknown;
  removeListener?: (event: string, listener: () => void) => unknown;
};

export function budgetedConnect(original: ConnectFn, targets: () => Targets): ConnectFn {
  return function connect(this: PgClientLike, ...args: unknown[]): unknown {
    const cb = args[0];
    if (cb !== undefined && typeof cb !== 'function') return original.apply(this, args);
    if (scope.ownClients.has(this)) return original.apply(this, args);
    let budget;
    let connectMs = 0;
    try {
      const policy = targets().registry.forTarget(clientTarget(this));
      budget = policy.connectionBudget;
      connectMs = policy.settings.timeout.connectMs;
    } catch {
      budget = undefined;
    }
    if (budget === undefined) return original.apply(this, args);
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- named for the closures below
    const client = this;
    if (cb === undefined) {
      const P = (client as { _Promise?: PromiseConstructor })._Promise ?? Promise;
      return new P((resolve, reject) => {
        connect.call(client, (err: unknown) => (err ? reject(err) : resolve(client)));
      });
    }
    const callback = cb as Callback;
    const now = budget.tryAcquire();
    if (now) return connectHolding(client, original, callback, now);
    const own = (client as { _connectionTimeoutMillis?: unknown })._connectionTimeoutMillis;
    const limit = typeof own === 'number' && own > 0 ? own : connectMs;
    const bound = limit > 0 ? Math.max(1, limit - ANSWER_FIRST_MS) : 0;
    budget.acquire(bound).then(
      (release) => {
        // Ended while it waited: pg would not connect it, nor answer.
        if (endedByApp(client)) {
          release();
          return;
        }
        connectHolding(client, original, callback, release);
      },
      (error: unknown) => callback(error),
    );
    return undefined;
  };
}

/** pg's connect, holding `release` until the connection ends or the connect fails. */
function connectHolding(
  client: PgClientLike,
  original: ConnectFn,
  callback: Callback,
  release: ReleaseSlot,
): unknown {
  const emitter = client as Emitter;
  emitter.once?.('end', release);
  try {
    return original.call(client, (...cbArgs: unknown[]) => {
      if (cbArgs[0]) {
        emitter.removeListener?.('end', release);
        release();
      }
      return callback(...cbArgs);
    });
  } catch (error) {
    emitter.removeListener?.('end', release);
    release();
    throw error;
  }
}

interface IdlePool {
  _idle?: Array<{ client?: unknown }>;
  _remove?: (client: unknown) => unknown;
}

/**
 * Closes up to `count` idle clients of `pools` (a process above its share of the budget gives the slots
 * back rather than holding them idle). Gracefully (pg-pool's own removal: `client.end()`), so the slot is
 * given back when the server has closed the connection, not before.
 */
export function closeIdleSurplus(pools: Iterable<PgPoolLike>, count: number): void {
  let left = count;
  for (const pool of pools) {
    const { _idle: idle, _remove: remove } = pool as PgPoolLike & IdlePool;
    if (!Array.isArray(idle) || typeof remove !== 'function') continue;
    for (const item of idle.slice()) {
      if (left <= 0) return;
      try {
        remove.call(pool, item?.client);
        left--;
      } catch {
        // a client pg-pool was already dropping
      }
    }
  }
}
