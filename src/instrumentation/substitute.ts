/**
 * Substitute connections: a statement whose connection died under it runs again on a new connection
 * set up like the dead one, and the caller gets that result. The dead client stays dead for its owner
 * (pg-pool, an ORM's pool), which evicts it as it does with bare pg. Rules: docs/retry-safety.md
 * ("Substitute connections"); the session-state part: src/safety/session-state.ts.
 *
 * - `trackSession` runs for every app statement on a client: one regular expression on its text; only
 *   a statement that may change the session is read further and recorded.
 * - `substituteVeto` is asked by client-query.ts's retry veto before the same-client rule: true (the
 *   next attempt runs on a substitute), a refusal reason, or undefined (the substitute rule does not
 *   apply: the usual veto decides).
 * - `Substitute.run` opens the substitute, sets it up, runs the statement, closes it. A pool client's
 *   substitute is made as pg-pool's `newClient` makes one (`new pool.Client(pool.options)`, then the
 *   pool's `onConnect` hook and 'connect' listeners), not through `pool.connect()`: the dead client is
 *   still checked out and counted, so at `max` a checkout could wait for itself. A standalone client's
 *   substitute is a new client of its class with its resolved configuration, then the replayed settings.
 */
import type { ErrorClassification } from '../classify/types.ts';
import type { SuppressReason } from '../policy/events.ts';
import {
  mayChangeSession,
  noteStatement,
  sessionState,
  statementNeedsSession,
} from '../safety/session-state.ts';
import { inTransaction, isSafeToRepeat, queryText, statementVeto } from '../safety/retry-safety.ts';
import { scope } from './scope.ts';
import { transactionStatus } from './tx-status.ts';
import type { EmitFn } from './types.ts';

const POOL = Symbol('pg-resilience.pool');
const SETTING_UP = Symbol('pg-resilience.settingUp');

type Listener = (...args: unknown[]) => unknown;
interface SubClient {
  connect(): Promise<unknown>;
  query(config: unknown, values?: unknown): Promise<unknown>;
  end(): Promise<void>;
  on(event: 'error', listener: Listener): unknown;
}
type ClientCtor = new (config: unknown) => SubClient;
interface PoolLike {
  Client?: unknown;
  options?: Record<string, unknown> & { onConnect?: (client: unknown) => unknown };
  emit?: (event: string, ...args: unknown[]) => boolean;
}
interface ClientInternals {
  _queryable?: boolean;
  _ending?: boolean;
  _ended?: boolean;
  _types?: unknown;
  _connectionTimeoutMillis?: number;
  password?: unknown;
  ssl?: unknown;
  binary?: unknown;
  enableChannelBinding?: unknown;
  connectionParameters?: Record<string, unknown>;
  connection?: { _keepAlive?: unknown; _keepAliveInitialDelayMillis?: unknown };
  [POOL]?: PoolLike;
}

/** The pool whose `newClient` is running (pool-connect.ts sets it around pg-pool's synchronous call). */
let creatingPool: object | undefined;

/** Runs pg-pool's `newClient` with its pool known to the client connect inside it. */
export function inPoolNewClient<T>(pool: object, run: () => T): T {
  const previous = creatingPool;
  creatingPool = pool;
  try {
    return run();
  } finally {
    creatingPool = previous;
  }
}

/**
 * A pool client is connecting (client-connect.ts, inside `newClient`): its substitutes come from that
 * pool. Until the pool first hands it out ('acquire'), its statements are the pool's setup (its
 * `onConnect` hook, its 'connect' listeners), which a substitute from that pool runs again: they are
 * not tracked (a 'connect' listener's `SET ROLE` does not make the pool's clients ineligible).
 */
export function rememberPool(client: object): void {
  if (creatingPool !== undefined) {
    Object.defineProperty(client, POOL, { value: creatingPool, enumerable: false, configurable: true });
    Object.defineProperty(client, SETTING_UP, {
      value: true,
      enumerable: false,
      writable: true,
      configurable: true,
    });
  }
}

/** Wrapper for a Pool's `emit`: 'acquire' ends a new client's setup (pg-pool emits it right after 'connect'). */
export function endSetupOnAcquire(emit: EmitFn): EmitFn {
  return function (this: unknown, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'acquire') {
      const client = args[0] as { [SETTING_UP]?: boolean } | null | undefined;
      if (client?.[SETTING_UP] === true) client[SETTING_UP] = false;
    }
    return emit.call(this, event, ...args);
  };
}

/** The client can still run statements (pg marks it unusable once its connection failed or ended). */
export function usable(client: object): boolean {
  const c = client as ClientInternals;
  return c._queryable !== false && c._ending !== true && c._ended !== true;
}

/**
 * Records what an app statement does to the client's session. `othersInFlight`: app statements on the
 * client not settled yet, this one excluded. Returns a function to call with the statement's success
 * for a setting to replay; undefined for nearly every statement (one regular expression, nothing kept).
 */
export function trackSession(
  client: object,
  query: unknown,
  values: unknown,
  othersInFlight: number,
): ((ok: boolean) => void) | undefined {
  const text = typeof query === 'string' ? query : queryText(query);
  if (text === undefined || !mayChangeSession(text)) return undefined;
  if (!usable(client)) return undefined; // pg sends nothing on a failed client
  if ((client as { [SETTING_UP]?: boolean })[SETTING_UP] === true) return undefined; // the pool's own setup
  // No status yet only before the first ReadyForQuery (a statement sent from a connect callback): no transaction.
  const quiet = othersInFlight === 0 && !inTransaction(transactionStatus(client));
  return noteStatement(client, text, values, quiet);
}

/** What the veto needs about the failed statement call. */
export interface SubstituteFacts {
  readonly client: object;
  /** The failed attempt's error. */
  readonly error: unknown;
  readonly query: unknown;
  readonly values: unknown;
  /** The client was usable when the statement was issued. */
  readonly usableAtIssue: boolean;
  readonly othersQueued: boolean;
  /** The statement failed because the app ended the client (ended-by-app.ts `failedByEnd`). */
  readonly endedByApp: boolean;
}

/**
 * May the failed statement run on a substitute? true, a refusal reason, or undefined when the rule does
 * not apply. `current`: the substitute the failed attempt ran on, if it ran on one.
 */
export function substituteVeto(
  facts: SubstituteFacts,
  c: ErrorClassification,
  current: Substitute | undefined,
): true | SuppressReason | undefined {
  if (current !== undefined) {
    // The failed attempt was already a substitute's: a new one is as fresh as a pool's next client.
    if (current.setupRefused) return 'session_state';
    return statementVeto(
      {
        query: facts.query,
        values: facts.values,
        freshConnection: true,
        txStatus: undefined,
        provedUnsent: false,
        othersQueued: false,
        endedByApp: false,
      },
      c,
    );
  }
  if (c.errorClass === 'client_unusable') return diedIdleVeto(facts);
  if (c.errorClass !== 'connection_lost') return undefined;
  markLostUnderStatement(facts.client);
  if (facts.endedByApp || !facts.usableAtIssue) return undefined;
  if (inTransaction(transactionStatus(facts.client)) || facts.othersQueued) return undefined;
  if (!isSafeToRepeat(facts.query)) return undefined;
  // pg gave the connection up, or the server ended the session (a FATAL error: pg closes it right after).
  if (usable(facts.client) && (facts.error as { severity?: unknown } | null)?.severity !== 'FATAL') {
    return undefined;
  }
  // A connection that died while connecting: the app's connect failed, its statements fail with it.
  if ((facts.client as { _connected?: unknown })._connected === false) return undefined;
  return sameSession(facts);
}

/**
 * A statement pg refused to send ("…is not queryable") on a pool's client whose connection died while
 * nothing of its owner's was in flight on it (between its checkout and this statement: its owner has
 * had no error from it). Nothing was sent. A pool's client only: pg-pool discards a client that is not
 * queryable when it is released, whatever its owner knows, so the dead client leaves circulation as
 * with bare pg. Once a statement of the owner's failed on it, every later one fails as with bare pg.
 */
function diedIdleVeto(facts: SubstituteFacts): SuppressReason | true | undefined {
  const client = facts.client as ClientInternals & { [LOST_UNDER_STATEMENT]?: true };
  if (client[POOL] === undefined || client[LOST_UNDER_STATEMENT] === true) return undefined;
  if (facts.endedByApp || facts.othersQueued) return undefined;
  if (inTransaction(transactionStatus(client)) || !isSafeToRepeat(facts.query)) return undefined;
  return sameSession(facts);
}

/**
 * At the moment a standalone client's connection dies (substitute-events.ts): could its statement in
 * flight, issued on a usable client, run on a substitute? The same checks as `substituteVeto` makes
 * once the statement failed, except those that need its error.
 */
export function substituteReady(client: object, query: unknown, values: unknown): boolean {
  if ((client as { _connected?: unknown })._connected !== true) return false;
  if (inTransaction(transactionStatus(client)) || !isSafeToRepeat(query)) return false;
  return sameSession({ client, query, values }) === true;
}

/** The last checks: a substitute can be made, set up the same, and the statement needs no more. */
function sameSession(
  facts: Pick<SubstituteFacts, 'client' | 'query' | 'values'>,
): SuppressReason | true | undefined {
  if (factory(facts.client) === undefined) return undefined;
  const state = sessionState(facts.client);
  if (state?.taint !== undefined) return 'session_state';
  if (statementNeedsSession(facts.query, facts.values) !== undefined) return 'session_state';
  return true;
}

/** A statement of the owner's failed on this client because its connection died. */
const LOST_UNDER_STATEMENT = Symbol('pg-resilience.lostUnderStatement');

function markLostUnderStatement(client: object): void {
  const c = client as { [LOST_UNDER_STATEMENT]?: true };
  if (c[LOST_UNDER_STATEMENT] === undefined) {
    Object.defineProperty(c, LOST_UNDER_STATEMENT, { value: true, enumerable: false, configurable: true });
  }
}

/** Substitute clients, whose connect the connect patch runs without admission. */
const substitutes = new WeakSet<object>();

/** Is `client` a substitute (client-connect.ts: its connect takes no rate-limit permit or bulkhead slot)? */
export function isSubstitute(client: object): boolean {
  return substitutes.has(client);
}

/** The substitute for one statement call; each attempt opens its own connection. */
export class Substitute {
  readonly #client: object;
  readonly #connectMs: number;
  /** A replayed setting or the pool's setup failed on a substitute: no further substitute. */
  setupRefused = false;

  /** `connectMs`: the target's `timeout.connectMs`, the substitute's connect bound when none is configured. */
  constructor(client: object, connectMs: number) {
    this.#client = client;
    this.#connectMs = connectMs;
  }

  /**
   * Opens a substitute, sets it up, runs `exec` on it and closes it. `original`: the failed attempt's
   * error, what the caller gets when the setup (not the connection) fails.
   */
  async run<T>(
    exec: (target: SubClient) => Promise<T>,
    original: unknown,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    const make = factory(this.#client);
    if (make === undefined) throw original;
    const { client: sub, pool } = make();
    // A lost handshake must not hold the call (pg waits forever without a connect timeout).
    const bounded = sub as SubClient & { _connectionTimeoutMillis?: unknown };
    if (!(Number(bounded._connectionTimeoutMillis) > 0) && this.#connectMs > 0) {
      bounded._connectionTimeoutMillis = this.#connectMs;
    }
    sub.on('error', ignore);
    let closed = false;
    const close = (): void => {
      if (closed) return;
      closed = true;
      sub.end().then(
        () => pool?.emit?.('remove', sub),
        () => pool?.emit?.('remove', sub),
      );
    };
    signal?.addEventListener('abort', close, { once: true });
    try {
      // Through the connect patch, as a standalone connect without admission: a connect that fails before
      // the session is ready is tried again on the same client, so one reset does not use up the
      // statement's attempts (the call's own admission covers it).
      substitutes.add(sub);
      await sub.connect();
      scope.ownClients.add(sub); // its statements (replay, the statement) pass through the patches
      try {
        if (pool !== undefined) {
          // As pg-pool sets up a new client: its onConnect hook, then its 'connect' listeners.
          if (typeof pool.options?.onConnect === 'function') await pool.options.onConnect(sub);
          pool.emit?.('connect', sub);
        }
        const state = sessionState(this.#client);
        if (state?.taint !== undefined) throw new Error(`session changed: ${state.taint}`);
        for (const r of state?.replay.values() ?? []) {
          await (r.values === undefined ? sub.query(r.text) : sub.query(r.text, r.values));
        }
      } catch (error) {
        if (!usable(sub)) throw error; // the substitute's connection failed: a connection error, retried as such
        this.setupRefused = true;
        throw original;
      }
      return await exec(sub);
    } finally {
      signal?.removeEventListener('abort', close);
      close();
    }
  }
}

const ignore = (): void => {};

/** How to make a substitute for `client`, or undefined when its configuration is not known. */
function factory(client: object): (() => { client: SubClient; pool: PoolLike | undefined }) | undefined {
  const c = client as ClientInternals;
  const pool = c[POOL];
  if (pool !== undefined) {
    const Client = pool.Client as ClientCtor | undefined;
    // An ending pool opens no new connection (pg-pool refuses new checkouts once `end()` was called).
    if (typeof Client !== 'function' || (pool as { ending?: unknown }).ending === true) return undefined;
    return () => ({ client: new Client(pool.options), pool });
  }
  // A pool's client whose pool is unknown: a client of our own would miss the pool's setup.
  if (scope.poolClients.has(client) || typeof (client as { release?: unknown }).release === 'function') {
    return undefined;
  }
  const Client = (client as { constructor?: unknown }).constructor as ClientCtor | undefined;
  const p = c.connectionParameters;
  if (typeof Client !== 'function' || p === undefined) return undefined;
  return () => ({ client: new Client(standaloneConfig(c, p)), pool: undefined });
}

/** A standalone client's configuration, rebuilt from what pg kept of it. */
function standaloneConfig(c: ClientInternals, p: Record<string, unknown>): Record<string, unknown> {
  return {
    ...p,
    // Non-enumerable in pg: a spread drops them. A password function is called again for the new one.
    password: typeof p['password'] === 'function' ? p['password'] : (c.password ?? p['password']),
    ssl: c.ssl ?? p['ssl'],
    connectionTimeoutMillis: c._connectionTimeoutMillis || undefined,
    keepAlive: c.connection?._keepAlive,
    keepAliveInitialDelayMillis: c.connection?._keepAliveInitialDelayMillis,
    types: c._types,
    binary: c.binary,
    enableChannelBinding: c.enableChannelBinding,
  };
}
