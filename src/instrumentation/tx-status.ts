/**
 * A client's transaction status, from the server's last ReadyForQuery message: 'I' idle (not in a
 * transaction), 'T' in a transaction block, 'E' in a failed transaction block, undefined when unknown
 * (not connected yet).
 *
 * pg ≥ 8.21 exposes it as `client.getTransactionStatus()`. For older 8.x the instrumentation wraps
 * `Client.prototype._handleReadyForQuery(msg)` (the handler pg has had throughout 8.x) and records
 * `msg.status` here, keyed by client.
 */
const recorded = new WeakMap<object, string>();

type Method = (this: object, ...args: unknown[]) => unknown;

/** Wrapper for `Client.prototype._handleReadyForQuery` (installed only when getTransactionStatus is missing). */
export function recordReadyForQuery(original: Method): Method {
  return function _handleReadyForQuery(this: object, ...args: unknown[]): unknown {
    const status = (args[0] as { status?: unknown } | undefined)?.status;
    if (typeof status === 'string') recorded.set(this, status);
    return original.apply(this, args);
  };
}

export function transactionStatus(client: object): string | undefined {
  const c = client as { getTransactionStatus?: () => unknown };
  if (typeof c.getTransactionStatus === 'function') {
    const s = c.getTransactionStatus();
    return typeof s === 'string' ? s : undefined;
  }
  return recorded.get(client);
}

/** In a transaction block, healthy or failed: no statement may be retried on its own. */
export function inTransaction(status: string | undefined): boolean {
  return status === 'T' || status === 'E';
}
