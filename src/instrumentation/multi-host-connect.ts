/**
 * A client's connect to a multi-host target (multi-host.ts): the host is chosen first (host-choice.ts),
 * then pg connects the client to it, with `host`/`port` rewritten on the client just before pg reads
 * them. A failed connect forgets what was known about that host; a connected client is watched for the
 * errors that say its server's role changed (failover.ts).
 */
import { watchForFailover } from './failover.ts';
import { chooseHost, markHostStale, type RoleCheckOptions } from './host-choice.ts';
import { clientHostSpec, type HostAddress } from './multi-host.ts';
import type { Targets } from './targets.ts';
import type { PgClientLike } from './types.ts';

type ConnectFn = (this: PgClientLike, ...args: unknown[]) => unknown;
type Callback = (...args: unknown[]) => unknown;

/** The role checks' limit and trust when the target's settings cannot be read (the defaults). */
const FALLBACK: RoleCheckOptions = { timeoutMs: 5_000, trustMs: 0 };

interface Addressable {
  host?: string;
  port?: number;
  _connectionTimeoutMillis?: number;
  connectionParameters?: { host?: string; port?: number };
}

/** The host a multi-host client is connected to (undefined for any other client). */
const connectedHost = new WeakMap<object, HostAddress>();

export function hostOf(client: object): HostAddress | undefined {
  return connectedHost.get(client);
}

function setAddress(client: PgClientLike, h: HostAddress): void {
  const c = client as unknown as Addressable;
  c.host = h.host;
  c.port = h.port;
  if (c.connectionParameters) {
    c.connectionParameters.host = h.host;
    c.connectionParameters.port = h.port;
  }
}

/** The target's `failover` settings for role checks; a client's own shorter connect timeout wins. */
function roleCheckOptions(target: string, own: unknown, targets: () => Targets): RoleCheckOptions {
  let options = FALLBACK;
  try {
    const { roleCheckTimeoutMs, roleTrustMs } = targets().registry.forTarget(target).settings.failover;
    options = { timeoutMs: roleCheckTimeoutMs, trustMs: roleTrustMs };
  } catch {
    // never in the way of pg's connect
  }
  return typeof own === 'number' && own > 0 && own < options.timeoutMs
    ? { ...options, timeoutMs: own }
    : options;
}

/**
 * `original` (pg's connect, called with a callback) made host-aware: a client of a multi-host target
 * connects to the chosen host; any other client connects as pg would, synchronously.
 */
export function hostAwareConnect(original: ConnectFn, targets: () => Targets): ConnectFn {
  return function connect(this: PgClientLike, ...args: unknown[]): unknown {
    let spec;
    try {
      spec = clientHostSpec(this);
    } catch {
      spec = undefined;
    }
    const cb = args[0];
    if (spec === undefined || (cb !== undefined && typeof cb !== 'function'))
      return original.apply(this, args);
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- named for the closures below
    const client = this;
    if (cb === undefined) {
      // The promise form (the package's own probe connections use it): pg resolves with the client.
      const P = (client as { _Promise?: PromiseConstructor })._Promise ?? Promise;
      return new P((resolve, reject) => {
        connect.call(client, (err: unknown) => (err ? reject(err) : resolve(client)));
      });
    }
    const check = roleCheckOptions(spec.target, (client as Addressable)._connectionTimeoutMillis, targets);
    // From a microtask: the role checks' own connections must not start inside pg-pool's synchronous
    // newClient (they would be taken for the pool's client).
    Promise.resolve()
      .then(() => chooseHost(spec, client, check))
      .then(
        (h) => {
          setAddress(client, h);
          original.call(client, (...cbArgs: unknown[]) => {
            if (cbArgs[0]) markHostStale(h, true);
            else {
              connectedHost.set(client, h);
              watchForFailover(client, h, spec, targets, hostOf);
            }
            return (cb as Callback)(...cbArgs);
          });
        },
        (err: unknown) => (cb as Callback)(err),
      );
    return undefined;
  };
}
