/**
 * The app ended the client itself (`client.end()`, or `release(err)` which makes pg-pool end it).
 *
 * pg sets `client._ending` in `end()` (every pg 8.x). From then on the client is the app's decision, not a
 * fault: whatever error follows ("Connection terminated", "Client was closed and is not queryable") is
 * final. Nothing the app sent on that client is sent anywhere again (no retry on another connection, no
 * replay of a transaction), and a connect it cut short is left unanswered, as pg leaves it.
 *
 * Read it when the error arrives, before the package releases the client. Inside pg-pool's own
 * `Pool.query`, pg-pool itself ends a client whose connection failed (its 'error' listener releases it
 * with the error) before the statement's callback runs, so there `_ending` alone does not say who ended
 * it: the error does (`failedByEnd`).
 */

/** True once `end()` was called on this pg client. */
export function endedByApp(client: unknown): boolean {
  return (client as { _ending?: unknown } | null | undefined)?._ending === true;
}

/**
 * pg's errors for a statement failed by an `end()` that came first: the connection closed after
 * `end()` ("Connection terminated", where a lost one says "…unexpectedly"), or the statement was issued
 * after it (the same text in every pg 8.x).
 */
const END_ERRORS: ReadonlySet<unknown> = new Set([
  'Connection terminated',
  'Client was closed and is not queryable',
]);

/** The statement failed because `end()` was called on its client, not because the connection failed. */
export function failedByEnd(client: unknown, error: unknown): boolean {
  return endedByApp(client) && END_ERRORS.has((error as { message?: unknown } | null | undefined)?.message);
}

/**
 * What a standalone connect's attempt rejects with when the app ended the client before pg answered the
 * connect: pg never calls that connect's callback (nor settles its promise), so neither do we. Internal:
 * it only ends the policies' operation (its timer, its bookkeeping) and never reaches the app.
 */
export class ConnectEndedByAppError extends Error {
  constructor() {
    super('client.end() was called while the client was connecting');
    this.name = 'ConnectEndedByAppError';
  }
}

/** A promise that never settles: what pg gives the caller of a connect that `end()` cut short. */
export function never<T>(): Promise<T> {
  return new Promise<T>(() => {});
}
