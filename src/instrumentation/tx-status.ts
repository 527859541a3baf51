/**
 * A client's transaction status, from the server's last ReadyForQuery message: 'I' idle (not in a
 * transaction), 'T' in a transaction block, 'E' in a failed transaction block, undefined when unknown
 * (not connected yet).
 *
 * pg ≥ 8.21 exposes it as `client.getTransactionStatus()`. Older 8.x releases read the message but do
 * not keep its status (8.0–8.x handle it in a listener of their own, later in `_handleReadyForQuery`),
 * so for them the Client.connect patch calls `watchTransactionStatus(client)`, which listens to the
 * client's connection for 'readyForQuery' (the event pg's connection has emitted throughout 8.x) and
 * records the status here, keyed by client.
 */
const recorded = new WeakMap<object, string>();

interface Watchable {
  getTransactionStatus?: () => unknown;
  connection?: { on?: (event: string, listener: (msg: { status?: unknown } | undefined) => void) => unknown };
}

/** For pg < 8.21: start recording the client's transaction status (call before it connects). */
export function watchTransactionStatus(client: object): void {
  const c = client as Watchable;
  if (typeof c.getTransactionStatus === 'function' || recorded.has(client)) return;
  const connection = c.connection;
  if (typeof connection?.on !== 'function') return;
  recorded.set(client, '');
  connection.on('readyForQuery', (msg) => {
    if (typeof msg?.status === 'string') recorded.set(client, msg.status);
  });
}

export function transactionStatus(client: object): string | undefined {
  const c = client as Watchable;
  if (typeof c.getTransactionStatus === 'function') {
    const s = c.getTransactionStatus();
    return typeof s === 'string' ? s : undefined;
  }
  return recorded.get(client) || undefined;
}
