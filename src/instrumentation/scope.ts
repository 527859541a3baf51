/**
 * Call scope shared by the patches: synchronous markers that tell an inner patched call that it runs
 * on behalf of an outer one, so policies apply once per logical operation (attempts never multiply
 * across pg-pool's layers) and the package's own connections skip them.
 *
 * pg-pool's `Pool.query` calls `this.connect(cb)` synchronously, and its `cb` calls `client.query()`
 * synchronously; `Pool.connect` / `_pulseQueue` call `newClient()`, which calls `client.connect()`
 * synchronously. Each marker is set just around such a synchronous call and restored in `finally`, so
 * no marker outlives the call that set it (no AsyncLocalStorage needed).
 *
 * The scope lives on `globalThis` under a registered symbol: the CommonJS build (loaded by
 * `--require pg-resilience/register`) and the ESM build (imported by an app for `withTransaction`) are
 * two module instances that must see the same markers.
 */

/** What one attempt of `Pool.query` learned from the calls made inside it (filled by the inner patches). */
export interface PoolQueryAttempt {
  /** The client pg-pool checked out for this attempt, once it has one. */
  client: object | undefined;
  /** pg's Query object for the attempt's statement, once handed to the client (a cancel targets it). */
  query?: object;
  /** The client's transaction status when the statement was handed to it ('I', 'T', 'E', or undefined when unknown). */
  txStatus: string | undefined;
  /** The statement's error was delivered to a query that pg never submitted: it never reached the server. */
  provedUnsent: boolean;
  /** pg-pool's checkout for this attempt failed (its connect callback got an error): no statement was sent. */
  checkoutFailed?: boolean;
  /** The app itself ended the attempt's client (`client.end()`) before its statement failed: the error is final. */
  endedByApp?: boolean;
  /** The package's timeout gave up on this attempt (its reason): a statement not sent yet must not be sent. */
  abandoned?: unknown;
}

export interface CallScope {
  /** Set while pg-pool's own `Pool.query` runs one of our attempts (and inside its connect callback). */
  poolQuery: PoolQueryAttempt | undefined;
  /** > 0 while pg-pool creates a pool client (`newClient`): its `client.connect()` is pg-pool's, not a standalone connect. */
  poolNewClient: number;
  /** > 0 while the package itself checks out a client (withTransaction): `Pool.connect` passes through. */
  ownConnect: number;
  /** Clients the package opened itself (recovery probes): every patch passes them through. */
  readonly ownClients: WeakSet<object>;
  /** Clients created by a pg-pool Pool: their statements run inside an admitted checkout. */
  readonly poolClients: WeakSet<object>;
}

const KEY = Symbol.for('pg-resilience.call-scope');

function create(): CallScope {
  return {
    poolQuery: undefined,
    poolNewClient: 0,
    ownConnect: 0,
    ownClients: new WeakSet(),
    poolClients: new WeakSet(),
  };
}

const holder = globalThis as { [KEY]?: CallScope };
export const scope: CallScope = (holder[KEY] ??= create());
