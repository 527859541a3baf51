/**
 * TCP keepalive on by default: a connection whose server vanished without a reset (a dropped network
 * path, a failed-over host, a blackhole) otherwise looks alive for as long as nothing is sent on it,
 * and Linux waits 2 hours of idleness before its first keepalive probe (`tcp_keepalive_time`) when
 * keepalive is on at all. pg leaves keepalive off unless the app sets `keepAlive: true`.
 *
 * pg reads its choice at socket connect time, from the Connection it built in the Client's constructor
 * (`connection._keepAlive`, `_keepAliveInitialDelayMillis`, then `stream.setKeepAlive(true, delay)`),
 * the same in every pg 8 release. So the connect patch sets both on the Connection before pg connects,
 * when the app's config chose nothing: `connectionParameters.keepalives` is set only by an explicit
 * `keepAlive: true | false`, and `keepalives_idle` only by `keepAliveInitialDelayMillis`.
 *
 * - `keepAlive: false` in the app's config: left off.
 * - `keepAlive: true` without a delay: the delay is filled in (pg would pass 0: the OS's 2 hours).
 * - A stream without `setKeepAlive` (a custom `stream` option): left alone; pg would throw calling it.
 * - The native client (pg-native, libpq) has no such Connection: left to libpq, which turns keepalive
 *   on by default (with the OS's idle time).
 *
 * What the delay buys: Node's `setKeepAlive` sets TCP_KEEPIDLE to the delay and, since Node 13.12,
 * TCP_KEEPINTVL to 1 s and TCP_KEEPCNT to 10, so an idle connection to a silent peer fails (ETIMEDOUT)
 * about delay + 10 s after it went quiet; pg emits the error and pg-pool drops the idle client.
 * Keepalive probes only idle connections: a statement sent into a dead path waits on TCP
 * retransmissions instead (about 15 minutes on Linux). TCP_USER_TIMEOUT would bound that, but Node
 * offers no way to set it; the package's `timeout.queryMs` is the bound there.
 */
import type { PgClientLike } from './types.ts';

interface PgConnectionLike {
  _keepAlive?: unknown;
  _keepAliveInitialDelayMillis?: unknown;
  stream?: { setKeepAlive?: unknown };
}

interface KeepAliveClient {
  connection?: PgConnectionLike;
  connectionParameters?: { keepalives?: unknown; keepalives_idle?: unknown };
}

/** Turns keepalive on for `client` with `delayMs` of idleness before the first probe, unless the app chose. */
export function applyDefaultKeepAlive(client: PgClientLike, delayMs: number): void {
  if (!(delayMs > 0)) return;
  const { connection, connectionParameters: params } = client as PgClientLike & KeepAliveClient;
  if (connection === undefined || params === undefined) return;
  if (typeof connection.stream?.setKeepAlive !== 'function') return;
  if (params.keepalives === undefined) connection._keepAlive = true;
  else if (!params.keepalives) return; // keepAlive: false
  if (params.keepalives_idle === undefined) connection._keepAliveInitialDelayMillis = delayMs;
}
