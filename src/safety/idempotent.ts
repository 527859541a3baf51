/**
 * Marking a statement idempotent: the caller's word that running it twice leaves the database in the
 * same state as running it once (`UPDATE accounts SET plan = $1 WHERE id = $2` is; `UPDATE accounts
 * SET balance = balance + $1` and a plain INSERT are not).
 *
 *   pool.query(idempotent({ text: 'UPDATE accounts SET plan = $1 WHERE id = $2', values: [plan, id] }))
 *   pool.query(idempotent('DELETE FROM sessions WHERE expires_at < now()'))
 *
 * What the mark changes: when the connection is lost while the statement is in flight, nobody knows
 * whether the server ran it (the outcome is unknown). An unmarked statement is then retried only when
 * it matches the read-only rule (read-only.ts); a marked one becomes eligible for retry too. The mark
 * never makes a statement inside a transaction retryable (the transaction is gone with the
 * connection: see withTransaction), and it does not bypass any other check (transient error, retry
 * budget, circuit breaker).
 *
 * Two ways to mark, both read by `isMarkedIdempotent`:
 * - `idempotent(query)`, which sets the `IDEMPOTENT` symbol (a registered symbol,
 *   `Symbol.for('pg-resilience.idempotent')`, so two copies of this package agree on it);
 * - for plain JavaScript callers who would rather not import anything, an own property
 *   `idempotent: true` on the query config object.
 * pg ignores both: it only reads the config fields it knows.
 *
 * Why it is conservative: only an explicit `true` counts, and Submittables (objects with a `submit`
 * method, such as pg-cursor and pg-query-stream) are never marked and never count as marked: pg hands
 * them the connection and they stream rows to their consumer as they arrive and keep that state, so
 * sending one again would deliver rows twice from an object that cannot be reset. They are never retried.
 */

import { isSubmittable } from './submittable.ts';

export const IDEMPOTENT: unique symbol = Symbol.for('pg-resilience.idempotent');

/** Marks a statement text: returns the query config `{ text }` carrying the mark. */
export function idempotent(text: string): { text: string };
/**
 * Marks a query config (`{ text, values, name, rowMode, … }`): returns a shallow copy with the same
 * prototype and property descriptors, carrying the mark. The argument is not changed. A Submittable
 * is returned unchanged (see above).
 */
export function idempotent<T extends object>(config: T): T;
export function idempotent(query: string | object): object {
  if (typeof query === 'string') return { text: query, [IDEMPOTENT]: true };
  if (typeof query !== 'object' || query === null || isSubmittable(query)) return query;
  const descriptors: Record<PropertyKey, PropertyDescriptor> = Object.getOwnPropertyDescriptors(query);
  delete descriptors[IDEMPOTENT];
  const copy = Object.create(Object.getPrototypeOf(query), descriptors) as object;
  Object.defineProperty(copy, IDEMPOTENT, {
    value: true,
    enumerable: true,
    writable: true,
    configurable: true,
  });
  return copy;
}

/**
 * True when the query (pg's first argument) was marked: an object whose `[IDEMPOTENT]` is `true`, or
 * that has an own property `idempotent` set to `true`. False for anything else, Submittables included.
 * Never throws.
 */
export function isMarkedIdempotent(query: unknown): boolean {
  if (typeof query !== 'object' || query === null) return false;
  try {
    if (isSubmittable(query)) return false;
    if ((query as { [IDEMPOTENT]?: unknown })[IDEMPOTENT] === true) return true;
    return (
      Object.prototype.hasOwnProperty.call(query, 'idempotent') &&
      (query as { idempotent?: unknown }).idempotent === true
    );
  } catch {
    return false; // a throwing getter or proxy trap: not marked
  }
}
