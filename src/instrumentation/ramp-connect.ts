/**
 * The connect ramp at pg's own connect (`circuitBreaker.rampMs`, policy/connect-ramp.ts): in the window
 * after the target's breaker closed from open, a new server connection (a pool's or a standalone
 * client's) waits for its turn before pg opens the socket; outside such a window, and always for the
 * package's own connections (probes, outcome checks), pg's connect runs at once, synchronously, as
 * without the ramp. It runs before the connection budget (budget-connect.ts), so a connect waiting for
 * its turn holds no slot.
 *
 * A waiting connect is never failed by the ramp: it goes ahead at its turn, at the window's end, or after
 * half its connect timeout (the client's own `connectionTimeoutMillis`, a pool passes its own, else
 * `timeout.connectMs`), so the connect itself keeps at least half its timeout. A client ended while it
 * waited (`end()`) does not connect and is not answered, as pg does.
 */
import { endedByApp } from './ended-by-app.ts';
import { scope } from './scope.ts';
import type { Targets } from './targets.ts';
import type { PgClientLike } from './types.ts';
import { clientTarget } from './utils.ts';

type ConnectFn = (this: PgClientLike, ...args: unknown[]) => unknown;

export function rampedConnect(original: ConnectFn, targets: () => Targets): ConnectFn {
  return function connect(this: PgClientLike, ...args: unknown[]): unknown {
    const cb = args[0];
    if (cb !== undefined && typeof cb !== 'function') return original.apply(this, args);
    if (scope.ownClients.has(this)) return original.apply(this, args);
    let waiting: Promise<void> | undefined;
    try {
      const policy = targets().registry.forTarget(clientTarget(this));
      const ramp = policy.connectRamp;
      if (ramp !== undefined && ramp.active) {
        const own = (this as { _connectionTimeoutMillis?: unknown })._connectionTimeoutMillis;
        const limit = typeof own === 'number' && own > 0 ? own : policy.settings.timeout.connectMs;
        waiting = ramp.admit(limit > 0 ? Math.floor(limit / 2) : 0);
      }
    } catch {
      waiting = undefined;
    }
    if (waiting === undefined) return original.apply(this, args);
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- named for the closures below
    const client = this;
    // end() before connect() is pg's no-op (the connect then goes ahead); only a later end() cuts it short.
    const endedBefore = endedByApp(client);
    const cutShort = (): boolean => !endedBefore && endedByApp(client);
    if (cb === undefined) {
      // pg's promise form: answered by the connect that runs after the wait.
      const P = (client as { _Promise?: PromiseConstructor })._Promise ?? Promise;
      return new P((resolve, reject) => {
        void waiting.then(() => {
          if (cutShort()) return;
          Promise.resolve()
            .then(() => original.apply(client, args))
            .then(resolve, reject);
        });
      });
    }
    const callback = cb as (...cbArgs: unknown[]) => unknown;
    void waiting.then(() => {
      if (cutShort()) return;
      try {
        original.apply(client, args);
      } catch (error) {
        callback(error);
      }
    });
    return undefined;
  };
}
