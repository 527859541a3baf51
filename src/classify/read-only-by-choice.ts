/**
 * Errors that are the app's own, though their SQLSTATE usually says otherwise: a `25006` from a standby
 * that a multi-host target chose on purpose (`target_session_attrs` `read-only`, `standby`,
 * `prefer-standby`). Another connection of that target reaches a read-only server too, so the error is
 * not transient: it reaches the app as bare pg gives it, without retries.
 */
const marked = new WeakSet<object>();

/** Marks `error` (pg's error object, before pg hands it to the app) as the app's own. */
export function markReadOnlyByChoice(error: unknown): void {
  if (typeof error === 'object' && error !== null) marked.add(error);
}

export function isReadOnlyByChoice(error: unknown): boolean {
  return typeof error === 'object' && error !== null && marked.has(error);
}
