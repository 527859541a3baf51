/**
 * Stopping a timed-out statement on the server: the protocol's CancelRequest.
 *
 * When the package's statement timeout (`timeout.queryMs`) fires, the timeout policy calls the hook
 * made here (`cancelOnTimeout`). It sends PostgreSQL a CancelRequest for the statement's backend
 * (pg keeps its `processID` and `secretKey` on the Client) on a new connection to the same host and
 * port, then waits at most `timeout.cancelGraceMs` for the statement's own answer:
 * - 57014 (query_canceled): the server cancelled it and rolled it back: the caller gets an
 *   OperationTimeoutError with `outcome: 'not_run'`;
 * - its result (or its own server error) arrives first: it finished, and the caller gets that;
 * - no answer (or the connection is lost): outcome unknown, as without a cancel, and the connection is
 *   closed, so it is never used again (pg-pool discards it; a checked-out client's `release()` does).
 * A statement still queued behind another on its client is taken off pg's queue instead: never sent.
 *
 * PostgreSQL cancels whatever its backend runs when the request arrives, so the statement's answer is
 * handed on (to the caller, or to pg-pool, which then frees the client for the next statement) only once
 * the server has processed the request (it closes the cancel connection) or the grace has expired, and a
 * late cancel cannot hit the connection's next statement. Statements the app queued behind the timed-out
 * one on the same client are sent by pg as soon as the server is ready: one of them may receive a late
 * cancel (docs/retry-safety.md).
 *
 * Sent like pg's own `Client.prototype.cancel`: pg's `Connection` class, its `connect(port, host)` (a
 * host starting with `/` is a Unix socket directory) and its `cancel(processID, secretKey)` message. The
 * request is sent in plain text, as libpq before PostgreSQL 17 sends it: the server accepts a
 * CancelRequest without TLS whatever its `ssl` settings, and the request holds no credentials beyond the
 * per-connection key. Not cancelled: pg-native clients and pipeline mode. A client given a custom
 * `stream` gets its cancel over plain TCP to its host and port.
 */
import { OperationTimeoutError } from '../errors.ts';
import type { CancelHook, CancelOutcome } from '../policy/types.ts';

type Callback = (...args: unknown[]) => unknown;

interface QueryLike {
  callback?: Callback;
}

interface ConnectionLike {
  stream?: { destroy?: () => void };
  constructor: new (config?: object) => CancelConnection;
}

interface CancelConnection {
  stream: {
    once(event: string, listener: (...args: unknown[]) => void): unknown;
    on(event: string, listener: (...args: unknown[]) => void): unknown;
    destroy(): void;
  };
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  connect(port: number | string, host?: string): void;
  cancel(processID: number, secretKey: number): void;
}

/** pg's Client internals the cancel needs (pg 8.0.3 to 8.23). */
interface ClientInternals {
  host?: string;
  port?: number;
  processID?: number | null;
  secretKey?: number | null;
  pipeline?: boolean;
  native?: unknown;
  connection?: ConnectionLike;
  _queryable?: boolean;
  /** pg 8.12+ (`queryQueue` before). */
  _queryQueue?: QueryLike[];
  queryQueue?: QueryLike[];
  _activeQuery?: QueryLike | null;
  activeQuery?: QueryLike | null;
}

/** Clients with a cancel in progress: the pool-query timeout must not close them at the deadline. */
const cancelling = new WeakSet<object>();

/** A cancel runs on this client: its connection stays open until the cancel's outcome is known. */
export function isCancelling(client: object | undefined): boolean {
  return client !== undefined && cancelling.has(client);
}

/**
 * The Query object pg just created for a statement on `client` (call right after `client.query()`):
 * the last one queued, else the active one.
 */
export function lastQuery(client: object): object | undefined {
  const c = client as ClientInternals;
  const queue = queryQueue(c);
  if (queue !== undefined && queue.length > 0) return queue[queue.length - 1];
  return activeQuery(c) ?? undefined;
}

function queryQueue(c: ClientInternals): QueryLike[] | undefined {
  const queue = c._queryQueue ?? c.queryQueue;
  return Array.isArray(queue) ? queue : undefined;
}

function activeQuery(c: ClientInternals): QueryLike | null | undefined {
  // pg 8.21+ keeps it in `_activeQuery` (its `activeQuery` getter warns as deprecated).
  return '_activeQuery' in c ? c._activeQuery : c.activeQuery;
}

/** An attempt's statement: its client, and pg's Query object for it (`lastQuery`). */
export interface RunningStatement {
  readonly client?: object;
  readonly query?: object;
}

/**
 * The timeout policy's cancel hook for an attempt's statement (`running()` at the deadline; none yet,
 * e.g. still waiting for a pool client: no cancel). Returns undefined when the statement cannot be
 * cancelled: the timeout then fails at once, outcome unknown, as without a cancel.
 */
export function cancelOnTimeout(running: () => RunningStatement | undefined): CancelHook {
  return (timeout, graceMs) => {
    const statement = running();
    const query = statement?.query as QueryLike | undefined;
    const c = statement?.client as ClientInternals | undefined;
    if (c === undefined || query === undefined || typeof query.callback !== 'function') return undefined;
    if (c.native !== undefined || c.pipeline === true) return undefined;
    const queue = queryQueue(c);
    const queued = queue !== undefined ? queue.indexOf(query) : -1;
    if (queued >= 0) {
      queue!.splice(queued, 1); // never sent: pg will never answer it
      return Promise.resolve({
        result: 'cancelled',
        ok: false,
        error: timeoutError(timeout, 'not_run', 'it was still queued on its client and was never sent'),
      });
    }
    if (activeQuery(c) !== query) return undefined; // answered already, or not ours
    if (typeof c.processID !== 'number' || typeof c.secretKey !== 'number') return undefined;
    if (typeof c.connection?.constructor !== 'function' || c.connection.stream === undefined)
      return undefined;
    return cancelStatement(c, query, timeout, graceMs);
  };
}

function cancelStatement(
  c: ClientInternals,
  query: QueryLike,
  timeout: OperationTimeoutError,
  graceMs: number,
): Promise<CancelOutcome> {
  cancelling.add(c);
  const request = sendCancelRequest(c);
  const deliver = query.callback!;
  return new Promise<CancelOutcome>((resolve) => {
    let ended = false;
    let answer: { args: unknown[]; outcome: CancelOutcome } | undefined;
    const end = (outcome: CancelOutcome): void => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      cancelling.delete(c);
      request.close();
      if (answer !== undefined) {
        // pg's own delivery, now safe. Like pg, a throw in it is not caught into a promise.
        try {
          deliver.apply(query, answer.args);
        } catch (error) {
          process.nextTick(() => {
            throw error;
          });
        }
      }
      resolve(outcome);
    };
    // pg hands the statement's answer to `query.callback`: hold it until the server has processed the
    // cancel, so nothing follows on this connection while the cancel may still arrive.
    query.callback = (...args: unknown[]) => {
      if (ended) return deliver.apply(query, args);
      answer = { args, outcome: judge(timeout, args) };
      if (answer.outcome.result === 'no_answer') {
        end(answer.outcome); // the connection is gone: nothing can follow on it
        return;
      }
      void request.processed.then(() => end(answer!.outcome));
    };
    const timer = setTimeout(() => {
      if (answer !== undefined) {
        // Answered, but the server has not confirmed the cancel: it might still land on a later
        // statement, so the connection is closed rather than reused.
        destroy(c);
        end(answer.outcome);
        return;
      }
      destroy(c); // pg now fails the statement with a lost connection; its callback is ours, ended
      end({
        result: 'no_answer',
        ok: false,
        error: timeoutError(
          timeout,
          'unknown',
          `the server did not answer its cancel within ${graceMs} ms, so its outcome is unknown and its connection was closed`,
        ),
      });
    }, graceMs);
  });
}

/** What the statement's answer, after the cancel was sent, says about it. */
function judge(timeout: OperationTimeoutError, args: unknown[]): CancelOutcome {
  const error = args[0];
  if (!error) return { result: 'completed', ok: true, value: args[1] };
  if (isServerError(error)) {
    if ((error as { code?: unknown }).code === '57014') {
      return {
        result: 'cancelled',
        ok: false,
        error: timeoutError(timeout, 'not_run', undefined, error),
      };
    }
    return { result: 'completed', ok: false, error }; // it ended with its own error
  }
  return {
    result: 'no_answer',
    ok: false,
    error: timeoutError(
      timeout,
      'unknown',
      'its connection was lost while it was being cancelled, so its outcome is unknown',
      error,
    ),
  };
}

function isServerError(error: unknown): boolean {
  return (
    typeof error === 'object' &&
    error !== null &&
    typeof (error as { severity?: unknown }).severity === 'string' &&
    typeof (error as { code?: unknown }).code === 'string'
  );
}

function timeoutError(
  timeout: OperationTimeoutError,
  outcome: 'not_run' | 'unknown',
  detail: string | undefined,
  cause?: unknown,
): OperationTimeoutError {
  return new OperationTimeoutError(timeout.target, timeout.operation, timeout.timeoutMs, {
    outcome,
    detail,
    cause,
  });
}

/** Closes the connection; pg-pool discards a client that is no longer queryable when it is released. */
function destroy(c: ClientInternals): void {
  c._queryable = false;
  try {
    c.connection?.stream?.destroy?.();
  } catch {
    // already closed
  }
}

interface CancelRequest {
  /** Settles once the server closed the request's connection (it processed it), or it failed. */
  readonly processed: Promise<void>;
  close(): void;
}

/** Sends the CancelRequest for `c`'s backend on a new connection, as pg's `Client.prototype.cancel`. */
function sendCancelRequest(c: ClientInternals): CancelRequest {
  let con: CancelConnection;
  try {
    con = new c.connection!.constructor();
  } catch {
    return { processed: Promise.resolve(), close() {} };
  }
  const processed = new Promise<void>((resolve) => {
    con.stream.once('close', () => resolve());
  });
  con.on('error', () => {}); // refused or reset: the statement's own answer decides
  con.on('connect', () => {
    try {
      con.cancel(c.processID!, c.secretKey!);
    } catch {
      con.stream.destroy();
    }
  });
  try {
    const host = c.host ?? 'localhost';
    const port = c.port ?? 5432;
    if (host.startsWith('/')) con.connect(`${host}/.s.PGSQL.${port}`);
    else con.connect(port, host);
  } catch {
    con.stream.destroy();
  }
  return { processed, close: () => con.stream.destroy() };
}
