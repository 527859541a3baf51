/**
 * A standalone client's connect tried again on the same Client object (called by client-connect.ts).
 *
 * pg refuses a second `connect()` on a Client ("Client has already been connected…"), so an ORM that
 * pools its own `new pg.Client()` (knex, Sequelize, slonik) would get no retry of a connect that failed
 * on a flaky network. A connect that failed before the server's first ReadyForQuery never had a session:
 * no statement can have run. Before such a retry, the client is put back in the state pg's constructor
 * leaves it in, with a fresh Connection built as pg builds it (the same in every pg 8.x release):
 * - the failed attempt's Connection is detached from the client (pg's listeners removed, its socket
 *   destroyed) so nothing of it reaches the client any more;
 * - a new Connection of the same class, with the options pg's constructor passes (ssl, sslNegotiation,
 *   keepAlive, keepAliveInitialDelayMillis, encoding) and pg's own default socket, and the listeners that
 *   were on the client's Connection before pg's connect added its own (an ORM's, e.g. Sequelize's
 *   'parameterStatus'; the transaction-status watch);
 * - pg's connect flags back to their constructor values (`_connecting`, `_connected`,
 *   `_connectionError`, `_ending`, `_ended`, `_queryable`, `processID`, `secretKey`, the active query,
 *   the transaction status), each only where this pg release has it; a password function's first
 *   answer is forgotten (pg replaces the function by its answer), so the retry asks it again. The query
 *   queue is left as it is.
 *
 * Only a client whose socket pg made itself: pg makes a plain, unopened `net.Socket`. A client given a
 * `stream` of another kind (a subclass, a Duplex, a tunnel, what a stream factory returned) or a
 * `connection` object of the app's own (pg builds its Connection with a boolean keepAlive; one without
 * it is not pg's) is never reconnected: its stream cannot be opened twice and the app may hold it. A
 * plain `new net.Socket()` passed as `stream` cannot be told from pg's own: a retry uses pg's default
 * socket instead, which is what that client would have had without the option.
 *
 * Events: pg emits 'end' on the client (on nextTick, after the failed attempt's socket closed), and
 * possibly 'error', after a failed connect. An app or ORM listening to them would give up on a connect
 * that a retry then completes (Sequelize fails its acquire on an 'end' before the connect's answer), so
 * while a reconnectable connect is in flight the client's 'end' and 'error' emits are held (the Client.prototype.emit wrapper below). A retry drops what the
 * attempt before it emitted; a success drops everything. When the connect finally fails, what its last
 * attempt emitted is emitted again, in order, once the app was told of the failure: the app sees what
 * bare pg shows for one failed connect (the error, then 'end'). Once the app called `end()` on the
 * client, its events pass at once (client-connect.ts waits for that 'end' to know pg will not answer).
 */
import net from 'node:net';
import { endedByApp } from './ended-by-app.ts';
import type { EmitFn } from './types.ts';

type Held = Array<{ event: string | symbol; args: unknown[] }>;

/** Clients whose 'end' and 'error' emits are held, with what they emitted so far. */
const holding = new WeakMap<object, Held>();
/** How many clients hold now: the emit wrapper's fast path when none does. */
let holders = 0;

/** Wraps `Client.prototype.emit`: 'end' and 'error' of a client inside a reconnectable connect wait. */
export function holdConnectEvents(original: EmitFn): EmitFn {
  return function emit(this: unknown, event: string | symbol, ...args: unknown[]): boolean {
    if (holders > 0 && (event === 'end' || event === 'error')) {
      const held = holding.get(this as object);
      // Once the app called end(), its events pass: its end() is no failed attempt.
      if (held !== undefined && !endedByApp(this)) {
        held.push({ event, args });
        return (this as { listenerCount(e: string | symbol): number }).listenerCount(event) > 0;
      }
    }
    return original.call(this, event, ...args);
  };
}

interface PgConnection {
  constructor: new (options: object) => PgConnection;
  stream?: net.Socket & { destroy(error?: Error): void };
  _keepAlive?: unknown;
  _keepAliveInitialDelayMillis?: unknown;
  _ending?: boolean;
  removeAllListeners(): unknown;
  on(event: string | symbol, listener: (...args: unknown[]) => unknown): unknown;
  once(event: string | symbol, listener: (...args: unknown[]) => unknown): unknown;
  eventNames(): Array<string | symbol>;
  rawListeners(event: string | symbol): unknown[];
}

interface PgClientInternals {
  connection?: PgConnection;
  connectionParameters?: {
    ssl?: unknown;
    sslnegotiation?: unknown;
    client_encoding?: unknown;
    password?: unknown;
  };
  password?: unknown;
  _connecting?: boolean;
  _connected?: boolean;
  connectionTimeoutHandle?: ReturnType<typeof setTimeout>;
  emit(event: string | symbol, ...args: unknown[]): boolean;
}

/** pg's connect state as its Client constructor leaves it (set only where this pg release has it). */
const NEVER_CONNECTED: ReadonlyArray<readonly [string, unknown]> = [
  ['_connecting', false],
  ['_connected', false],
  ['_connectionError', false],
  ['_ending', false],
  ['_ended', false],
  ['_queryable', true],
  ['processID', null],
  ['secretKey', null],
  ['_txStatus', null],
  ['_activeQuery', null],
  ['activeQuery', null],
  ['_connectionCallback', null],
  ['saslSession', null],
];

const ignore = (): void => {};

/**
 * A socket pg made itself: a plain `net.Socket` that was never opened. `connection._keepAlive` is a
 * boolean on every Connection pg's Client constructor builds (`keepAlive: c.keepAlive || false`).
 */
function ownedByPg(client: PgClientInternals): boolean {
  const con = client.connection;
  const stream = con?.stream;
  if (con === undefined || typeof con.constructor !== 'function' || client.connectionParameters === undefined)
    return false;
  if (typeof con._keepAlive !== 'boolean') return false;
  if (stream === undefined || Object.getPrototypeOf(stream) !== net.Socket.prototype) return false;
  return !stream.connecting && !stream.destroyed && stream.remoteAddress === undefined;
}

/** One reconnectable connect of one client, from its first attempt to its end. */
export class Reconnect {
  readonly #client: PgClientInternals;
  readonly #password: unknown;
  readonly #paramsPassword: unknown;
  /** Listeners on the client's Connection before pg's connect added its own: the app's, and ours. */
  readonly #listeners: ReadonlyArray<readonly [string | symbol, (...args: unknown[]) => unknown, boolean]>;
  #holding = true;

  private constructor(client: PgClientInternals) {
    this.#client = client;
    this.#listeners = listenersOf(client.connection!);
    this.#password = client.password;
    this.#paramsPassword = client.connectionParameters?.password;
    holding.set(client, []);
    holders++;
  }

  /**
   * Whether `client`'s connect could be tried again: not under way or done already (pg answers that with
   * its own error), and its stream and connection are pg's. Ask before pg's connect runs.
   */
  static possible(client: object): boolean {
    const c = client as PgClientInternals;
    if (c._connecting === true || c._connected === true || holding.has(client)) return false;
    return ownedByPg(c);
  }

  /** Starts holding `client`'s events for a connect that `possible()` allowed. */
  static begin(client: object): Reconnect {
    return new Reconnect(client as PgClientInternals);
  }

  /** Before a retry: the client back to never connected, on a fresh Connection; drops the events held so far. */
  reset(): void {
    const c = this.#client;
    const old = c.connection!;
    detach(old);
    clearTimeout(c.connectionTimeoutHandle);
    const params = c.connectionParameters!;
    c.connection = new old.constructor({
      ssl: params.ssl,
      sslNegotiation: params.sslnegotiation,
      keepAlive: old._keepAlive,
      keepAliveInitialDelayMillis: old._keepAliveInitialDelayMillis,
      encoding: params.client_encoding || 'utf8',
    });
    for (const [event, listener, once] of this.#listeners) {
      if (once) c.connection.once(event, listener);
      else c.connection.on(event, listener);
    }
    const own = c as unknown as Record<string, unknown>;
    for (const [name, value] of NEVER_CONNECTED) if (Object.hasOwn(own, name)) own[name] = value;
    if (this.#password !== c.password) c.password = this.#password;
    params.password = this.#paramsPassword;
    if (this.#holding) holding.set(c, []);
  }

  /**
   * The attempt's socket is abandoned (the package's connect timeout): pg is made to fail it as with its
   * own `connectionTimeoutMillis`, so the client ends that attempt the way pg does (and emits 'end').
   */
  abandon(): void {
    const con = this.#client.connection;
    if (con?.stream === undefined) return;
    con._ending = true;
    con.stream.destroy(new Error('timeout expired'));
  }

  /** The connect succeeded: what failed attempts emitted is dropped, and the live session's events pass. */
  succeeded(): void {
    this.#stopHolding();
  }

  /**
   * The connect failed for good: once the app has its error (after the current microtasks), what the last
   * attempt emitted is emitted again in order, and the client's events pass from then on.
   */
  failed(): void {
    if (!this.#holding) return;
    setImmediate(() => {
      const held = holding.get(this.#client) ?? [];
      this.#stopHolding();
      for (const { event, args } of held) this.#client.emit(event, ...args);
    });
  }

  #stopHolding(): void {
    if (!this.#holding) return;
    this.#holding = false;
    holding.delete(this.#client);
    holders--;
  }
}

/**
 * What is listening on `con` (an ORM's 'parameterStatus' listener, the transaction-status watch),
 * without the listener pg's Connection constructor adds itself ('newListener'). A `once` listener is
 * kept as once.
 */
function listenersOf(con: PgConnection): Array<[string | symbol, (...args: unknown[]) => unknown, boolean]> {
  const out: Array<[string | symbol, (...args: unknown[]) => unknown, boolean]> = [];
  for (const event of con.eventNames()) {
    if (event === 'newListener') continue;
    for (const raw of con.rawListeners(event)) {
      const wrapped = (raw as { listener?: unknown }).listener;
      if (typeof wrapped === 'function') out.push([event, wrapped as (...args: unknown[]) => unknown, true]);
      else out.push([event, raw as (...args: unknown[]) => unknown, false]);
    }
  }
  return out;
}

/** The failed attempt's Connection no longer reaches the client: pg's listeners go, the socket is closed. */
function detach(con: PgConnection): void {
  con.removeAllListeners();
  con.on('error', ignore); // a late socket error must not throw from an emitter with no listener
  try {
    con.stream?.destroy();
  } catch {
    // already closed
  }
}
