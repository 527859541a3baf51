/**
 * Dispatch tracking: did pg ever send this statement to the server?
 *
 * pg reports a dead connection with the same error ("Connection terminated unexpectedly", ECONNRESET…)
 * to the statement that was on the wire and to the statements still waiting in the client's queue. Only
 * the latter certainly never reached the server. pg sends a statement in exactly one place:
 * `Query.prototype.submit(connection)`, called when the client takes it off its queue. So:
 * - `submit` is wrapped to mark the query objects pg submitted (a symbol-keyed property: invisible to
 *   `Object.keys`, `for…in` and JSON, and cheaper on the hot path than a WeakSet insert);
 * - `handleError` (how pg delivers any error to a query: server errors, dead connections, unusable or
 *   ended clients) is wrapped to say, while it runs, whether the query it is failing was never submitted.
 *   pg calls the query's callback synchronously from `handleError`, so the patch that owns the callback
 *   reads `errorIsForUnsentQuery()` from inside it.
 * Anything not proven unsent counts as sent (its outcome is unknown): the rule can only err on the side
 * of not retrying. Custom Submittables (pg-cursor, pg-query-stream) have their own `submit` and are never
 * retried, so they are not tracked.
 */

const SUBMITTED = Symbol('pg-resilience.submitted');
let failingUnsent = false;

type Method = (this: object, ...args: unknown[]) => unknown;
type Marked = object & { [SUBMITTED]?: true };

/** Wrapper for `Query.prototype.submit(connection)` (pg passes exactly one argument). */
export function trackSubmit(original: Method): Method {
  return function submit(this: Marked, connection: unknown): unknown {
    this[SUBMITTED] = true;
    return original.call(this, connection);
  };
}

/** Wrapper for `Query.prototype.handleError`. */
export function trackHandleError(original: Method): Method {
  return function handleError(this: object, ...args: unknown[]): unknown {
    const previous = failingUnsent;
    failingUnsent = (this as Marked)[SUBMITTED] !== true;
    try {
      return original.apply(this, args);
    } finally {
      failingUnsent = previous;
    }
  };
}

/** True only inside a query callback that pg is calling with an error for a query it never submitted. */
export function errorIsForUnsentQuery(): boolean {
  return failingUnsent;
}
