/**
 * pg's Submittables (pg-cursor, pg-query-stream, `new pg.Query`): query objects with a `submit` method
 * that pg hands the connection to. They stream rows as they arrive and keep that state, so they are
 * never retried and never count as marked idempotent. The test is pg's own (`typeof config.submit ===
 * 'function'` in `Client.prototype.query`).
 */
export interface Submittable {
  submit: (...args: unknown[]) => unknown;
  handleError?: (error: unknown, connection: unknown) => void;
  callback?: unknown;
}

export function isSubmittable(query: unknown): query is Submittable {
  return (
    query !== null && query !== undefined && typeof (query as { submit?: unknown }).submit === 'function'
  );
}
