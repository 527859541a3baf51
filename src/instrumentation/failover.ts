/**
 * Failover detection for multi-host targets. A server that answers a connection of the target with
 *
 * - 25006 (read_only_sql_transaction: a write reached a server that is, or became, read-only),
 * - 57P01 / 57P02 / 57P03 (admin shutdown, crash shutdown, cannot connect now: shutting down, starting
 *   up, in recovery),
 *
 * no longer is what the hook believed: what was known about that host is dropped (the next connect
 * checks the hosts again, host-choice.ts), and, unless the target's `failover.evictOnFailover` is off,
 * its idle pooled connections are closed at once (eviction.ts) and its checked-out connections are
 * discarded when released (pg-pool removes a client whose use count reached `maxUses`: the count is set
 * to Infinity, so the caller keeps a working client until then).
 *
 * Each detection is reported (`onFailoverDetected`); the first of a failover opens the target's
 * write-unavailability window (write-availability.ts), closed by the next write that succeeds.
 *
 * Two of these errors are not always a failover:
 *
 * - 57P01 is also what an administrator's `pg_terminate_backend` sends to the one backend it ends. So
 *   the host's role is forgotten at once (the next connect checks the hosts again, as for any signal),
 *   but counting and eviction wait for a check of the host off the query path (bounded by
 *   `failover.roleCheckTimeoutMs`): still accepting connections in a role that suits the target → only
 *   that connection was ended; shutting down, refused, or its role changed → a failover.
 * - 25006 on a target that chose a read-only server (`read-only`, `standby`, `prefer-standby`) is the
 *   app's own write on a standby: nothing is dropped, and the error reaches the app without retries
 *   (read-only-by-choice.ts).
 */
import { markReadOnlyByChoice } from '../classify/read-only-by-choice.ts';
import { evictIdleClients } from './eviction.ts';
import { markHostStale, stillSuits } from './host-choice.ts';
import { type HostAddress, type HostSpec } from './multi-host.ts';
import type { Targets } from './targets.ts';
import type { PgClientLike } from './types.ts';
import { type FailoverKind, failoverSignalled, watchWrites, writesRestoredAt } from './write-availability.ts';

/** Targets whose connections go to a read-only server on purpose. */
const WANTS_READ_ONLY: ReadonlySet<string> = new Set(['read-only', 'standby', 'prefer-standby']);

/** The SQLSTATEs that say a server's role changed, or that it is going away. */
export const ROLE_CHANGE_CODES: ReadonlySet<string> = new Set(['25006', '57P01', '57P02', '57P03']);

interface Connectionful {
  connection?: { prependListener?: (event: string, listener: (msg: { code?: unknown }) => void) => unknown };
}

interface PoolInternals {
  _clients?: unknown[];
}

/** The clients connected to `h` (the connect patch remembers each multi-host client's host). */
type HostOf = (client: object) => HostAddress | undefined;

/** What each role-change code says happened. */
const KIND_OF: Readonly<Record<string, FailoverKind>> = {
  '25006': 'read_only',
  '57P01': 'admin_shutdown',
  '57P02': 'crash_shutdown',
  '57P03': 'cannot_connect_now',
};

export interface FailoverEvent {
  readonly target: string;
  /** `host:port` of the server that changed (never credentials). */
  readonly host: string;
  readonly code: string;
  readonly kind: FailoverKind;
  /** The first signal of this failover (it opened the target's write-unavailability window). */
  readonly first: boolean;
  /** Idle connections closed. */
  readonly evicted: number;
  /** Checked-out connections that will be discarded when released. */
  readonly discarded: number;
}

const listeners = new Set<(event: FailoverEvent) => void>();

/** Hears about each detection (telemetry, tests); returns the function that stops it. */
export function onFailoverDetected(listener: (event: FailoverEvent) => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function onFailover(event: FailoverEvent): void {
  for (const listener of listeners) listener(event);
}

/** When each watched connection was opened (single address) or connected (multi-host). */
const openedAt = new WeakMap<object, number>();
/** Host (`host:port`) or single-address target → when its last failover signal came. */
const lastSignal = new Map<string, number>();

/**
 * Reports a signal to the target's write-unavailability window; true when it opened one (a new
 * failover). A late echo of a failover is never a new one: a signal on a connection opened before the
 * previous signal of the same server (a client checked out before it, released after writes resumed),
 * or opened before the target's writes were last restored (while the address still led to the old
 * server; its connections are evicted all the same).
 */
function signalled(key: string, client: object | undefined, target: string, kind: FailoverKind): boolean {
  const opened = client === undefined ? undefined : openedAt.get(client);
  const echoesUntil = Math.max(lastSignal.get(key) ?? -Infinity, writesRestoredAt(target) ?? -Infinity);
  if (opened !== undefined && opened <= echoesUntil) return false;
  lastSignal.set(key, Date.now());
  return failoverSignalled(target, kind);
}

const same = (a: HostAddress | undefined, b: HostAddress): boolean =>
  a !== undefined && a.host === b.host && a.port === b.port;

/** The target's `failover.evictOnFailover` (on when its settings cannot be read). */
function evicting(targets: Targets, target: string): boolean {
  try {
    return targets.registry.forTarget(target).settings.failover.evictOnFailover;
  } catch {
    return true;
  }
}

/** Evicts the pooled clients of `target` that `which` selects: idle ones now, checked-out ones when released. */
function evictClients(
  targets: Targets,
  target: string,
  which: (client: object) => boolean,
): { evicted: number; discarded: number } {
  let evicted = 0;
  let discarded = 0;
  if (!evicting(targets, target)) return { evicted, discarded };
  for (const pool of targets.pools(target)) {
    evicted += evictIdleClients(pool, which);
    for (const c of (pool as unknown as PoolInternals)._clients ?? []) {
      if (typeof c !== 'object' || c === null || !which(c)) continue;
      const counted = c as { _poolUseCount?: number };
      if (counted._poolUseCount !== Infinity) {
        counted._poolUseCount = Infinity;
        discarded++;
      }
    }
  }
  return { evicted, discarded };
}

/** Drops what was known about `h` and the pooled connections to it; returns what was done. `client`: the
 * connection that got the error. */
export function hostRoleChanged(
  h: HostAddress,
  spec: HostSpec,
  code: string,
  targets: Targets,
  hostOf: HostOf,
  client?: object,
): FailoverEvent {
  markHostStale(h);
  const { evicted, discarded } = evictClients(targets, spec.target, (c) => same(hostOf(c), h));
  const kind = KIND_OF[code] ?? 'read_only';
  const first = signalled(`${h.host}:${h.port}`, client, spec.target, kind);
  const event: FailoverEvent = {
    target: spec.target,
    host: `${h.host}:${h.port}`,
    code,
    kind,
    first,
    evicted,
    discarded,
  };
  try {
    onFailover(event);
  } catch {
    // a listener never breaks the app's connection
  }
  return event;
}

/** Watches a connected client of a multi-host target for the errors that say its server's role changed. */
export function watchForFailover(
  client: PgClientLike,
  h: HostAddress,
  spec: HostSpec,
  targets: () => Targets,
  hostOf: HostOf,
): void {
  openedAt.set(client, Date.now());
  watchWrites(client, () => spec.target);
  const con = (client as unknown as Connectionful).connection;
  // Prepended: the host is forgotten before pg hands the error to the app (and to a retry's connect).
  con?.prependListener?.('errorMessage', (msg) => {
    const code = typeof msg?.code === 'string' ? msg.code : '';
    if (!ROLE_CHANGE_CODES.has(code)) return;
    try {
      if (code === '25006' && WANTS_READ_ONLY.has(spec.attrs)) markReadOnlyByChoice(msg);
      else if (code === '57P01') confirmShutdown(h, spec, code, targets, hostOf, client);
      else hostRoleChanged(h, spec, code, targets(), hostOf, client);
    } catch {
      // never in the way of pg's own error handling
    }
  });
}

/** `host:port` → the check of that host under way (every connection of a stopping server gets a 57P01). */
const confirming = new Map<string, Promise<boolean>>();

/** The target's `failover.roleCheckTimeoutMs` (its default when the settings cannot be read). */
function roleCheckTimeout(targets: Targets, target: string): number {
  try {
    return targets.registry.forTarget(target).settings.failover.roleCheckTimeoutMs;
  } catch {
    return 5_000;
  }
}

/**
 * A 57P01: the server is shutting down, or an administrator ended this one backend. The host's role is
 * forgotten now; a failover is reported (and the host's connections evicted) only when a check of the
 * host finds it gone or changed. Runs off the query path: pg hands the error on at once.
 */
function confirmShutdown(
  h: HostAddress,
  spec: HostSpec,
  code: string,
  targets: () => Targets,
  hostOf: HostOf,
  client: object,
): void {
  markHostStale(h);
  const key = `${h.host}:${h.port}`;
  let check = confirming.get(key);
  if (check === undefined) {
    check = stillSuits(client, h, spec, roleCheckTimeout(targets(), spec.target));
    confirming.set(key, check);
    void check.finally(() => confirming.delete(key));
  }
  void check.then((suits) => {
    if (suits) return;
    try {
      hostRoleChanged(h, spec, code, targets(), hostOf, client);
    } catch {
      // a check never breaks the app
    }
  });
}

// ── One address whose destination changes (a DNS or proxy flip) ─────────────────────────────────────

interface Reporting {
  connection?: {
    on?: (
      event: string,
      listener: (msg: { parameterName?: unknown; parameterValue?: unknown }) => void,
    ) => unknown;
    prependListener?: (event: string, listener: (msg: { code?: unknown }) => void) => unknown;
  };
  host?: string;
  port?: number;
}

/**
 * Watches a pool client of a single address for the endpoint flip: connections opened before the flip
 * still reach the demoted node. A `25006` on a connection whose server reports itself read-only (the
 * `in_hot_standby` or `default_transaction_read_only` parameters the server sends, PostgreSQL 14+) is
 * not the app's own READ ONLY transaction: every connection of that target opened before it is
 * evicted (idle ones now, checked-out ones when released), so the retry, and every later call, gets a
 * connection opened after the flip. Called before the client connects (the parameters come with the
 * handshake).
 */
export function watchForEndpointFlip(
  client: PgClientLike,
  target: () => string,
  targets: () => Targets,
): void {
  const con = (client as unknown as Reporting).connection;
  if (con?.on === undefined || con.prependListener === undefined) return;
  openedAt.set(client, Date.now());
  watchWrites(client, target);
  const reported = new Map<string, string>();
  con.on('parameterStatus', (msg) => {
    if (typeof msg?.parameterName === 'string' && typeof msg.parameterValue === 'string') {
      if (msg.parameterName === 'in_hot_standby' || msg.parameterName === 'default_transaction_read_only') {
        reported.set(msg.parameterName, msg.parameterValue);
      }
    }
  });
  con.prependListener('errorMessage', (msg) => {
    if (msg?.code !== '25006') return;
    if (reported.get('in_hot_standby') !== 'on' && reported.get('default_transaction_read_only') !== 'on')
      return;
    try {
      addressFlipped(client, target(), targets());
    } catch {
      // never in the way of pg's own error handling
    }
  });
}

function addressFlipped(client: PgClientLike, target: string, targets: Targets): void {
  const at = Date.now();
  // Connections opened from now on are after the flip.
  const before = (c: object): boolean => (openedAt.get(c) ?? Infinity) <= at;
  const { evicted, discarded } = evictClients(targets, target, before);
  const r = client as unknown as Reporting;
  const first = signalled(target, client, target, 'endpoint_flip');
  try {
    onFailover({
      target,
      host: `${r.host}:${r.port}`,
      code: '25006',
      kind: 'endpoint_flip',
      first,
      evicted,
      discarded,
    });
  } catch {
    // a listener never breaks the app's connection
  }
}
