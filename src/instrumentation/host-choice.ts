/**
 * Which host of a multi-host target (multi-host.ts) a new connection goes to, with libpq's semantics:
 *
 * - hosts are tried in order (a random order with load_balance_hosts=random);
 * - `read-write` / `read-only` accept a server whose `transaction_read_only` is off / on;
 *   `primary` / `standby` one where `pg_is_in_recovery()` is false / true; `any` any server that
 *   accepts connections; `prefer-standby` a standby, else any server.
 *
 * libpq checks each connection it opens. pg cannot connect a Client twice, so the hook checks a host's
 * role on a short-lived connection of its own (the package's own client, which no patch governs) and
 * remembers it: later connects go straight to the host remembered as suitable. What is remembered about
 * a host is dropped ("stale") when a connection to it fails, when the server answers with an error that
 * says its role changed (failover.ts), or when it is older than the target's `failover.roleTrustMs`:
 * the next connect checks every host again. When no remembered host suits, every host is checked again
 * before the connect fails.
 */
import { scope } from './scope.ts';
import type { HostAddress, HostSpec, SessionAttrs } from './multi-host.ts';

interface HostRole {
  readonly inRecovery: boolean;
  readonly readOnly: boolean;
  /** When the check found it (Date.now()). */
  readonly at: number;
}

/** How a target's hosts are checked (its `failover` settings). */
export interface RoleCheckOptions {
  /** Limit of one check (connect, then query), in ms. */
  readonly timeoutMs: number;
  /** How long a checked role is trusted, in ms; 0 = until an error. */
  readonly trustMs: number;
}

/** `host:port` → what the last check found; absent when unknown or stale. */
const roles = new Map<string, HostRole>();
/** `host:port` → when a connection to it last failed (skipped for a moment by `any`). */
const down = new Map<string, number>();
const DOWN_MS = 1_000;

export const hostKey = (h: HostAddress): string => `${h.host}:${h.port}`;

/** Forgets what was known about a host (its role changed, or it is gone). */
export function markHostStale(h: HostAddress, unreachable = false): void {
  roles.delete(hostKey(h));
  if (unreachable) down.set(hostKey(h), Date.now());
}

/**
 * A host's role as last found: `primary` (accepts writes), `standby` (in recovery), `read_only` (not in
 * recovery, but its sessions are read-only: a fenced or demoted primary), `unknown` (never checked, or
 * stale: an error said it changed, or it was unreachable).
 */
export const HOST_ROLES = ['primary', 'standby', 'read_only', 'unknown'] as const;
export type KnownRole = (typeof HOST_ROLES)[number];

/** What is remembered about a host (for tests and telemetry). */
export function knownRole(h: HostAddress): KnownRole {
  const r = roles.get(hostKey(h));
  if (r === undefined) return 'unknown';
  return r.inRecovery ? 'standby' : r.readOnly ? 'read_only' : 'primary';
}

/** Target → its hosts, for every multi-host target a connection was made for. */
const targetHosts = new Map<string, readonly HostAddress[]>();

export interface HostRoleReading {
  readonly target: string;
  readonly host: string;
  readonly port: number;
  readonly role: KnownRole;
}

/** Every host of every multi-host target seen, with its role as last found (the role gauge). */
export function hostRoles(): HostRoleReading[] {
  const out: HostRoleReading[] = [];
  for (const [target, hosts] of targetHosts) {
    for (const h of hosts) out.push({ target, host: h.host, port: h.port, role: knownRole(h) });
  }
  return out;
}

function suits(role: HostRole, attrs: SessionAttrs): boolean {
  switch (attrs) {
    case 'read-write':
      return !role.readOnly;
    case 'read-only':
      return role.readOnly;
    case 'primary':
      return !role.inRecovery;
    case 'standby':
    case 'prefer-standby':
      return role.inRecovery;
    default:
      return true;
  }
}

/** No host of the list suits `target_session_attrs` (or none accepts connections). */
export class NoSuitableHostError extends Error {
  override readonly name = 'NoSuitableHostError';
  /** As a refused connect (08001, sqlclient_unable_to_establish_sqlconnection): nothing was sent,
   * always safe to try again; the fields make the classification read it as the server's code. */
  readonly code = '08001';
  readonly severity = 'FATAL';
  constructor(spec: HostSpec, cause?: unknown) {
    super(
      `no host of ${spec.target} is suitable for target_session_attrs=${spec.attrs}` +
        (cause instanceof Error ? `: ${cause.message}` : ''),
      { cause },
    );
  }
}

type ClientCtor = new (config: Record<string, unknown>) => ProbeClient;
interface ProbeClient {
  connect(): Promise<unknown>;
  query(text: string): Promise<{ rows: Array<{ rec?: boolean; ro?: string }> }>;
  end(): Promise<unknown>;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
}

/** Connection settings of `client` for a check on another host (its credentials, database, TLS). */
function probeConfig(client: object, h: HostAddress, timeoutMs: number): Record<string, unknown> {
  const c = client as {
    user?: unknown;
    password?: unknown;
    database?: unknown;
    connectionParameters?: { ssl?: unknown; password?: unknown };
  };
  return {
    host: h.host,
    port: h.port,
    user: c.user,
    password: c.password ?? c.connectionParameters?.password,
    database: c.database,
    ssl: c.connectionParameters?.ssl,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'pg-resilience-role-check',
  };
}

/** Checks a host's role on a connection of the package's own; remembers it. Rejects when unreachable. */
async function checkRole(client: object, h: HostAddress, timeoutMs: number): Promise<HostRole> {
  const Ctor = (client as { constructor: ClientCtor }).constructor;
  const probe = new Ctor(probeConfig(client, h, timeoutMs));
  scope.ownClients.add(probe);
  probe.on('error', () => {});
  try {
    await probe.connect();
    const r = await probe.query(
      `SELECT pg_is_in_recovery() AS rec, current_setting('transaction_read_only') AS ro`,
    );
    const role: HostRole = {
      inRecovery: r.rows[0]?.rec === true,
      readOnly: r.rows[0]?.ro === 'on',
      at: Date.now(),
    };
    roles.set(hostKey(h), role);
    down.delete(hostKey(h));
    return role;
  } catch (err) {
    markHostStale(h, true);
    throw err;
  } finally {
    probe.end().catch(() => {});
  }
}

/**
 * Does `h` still accept connections in a role that suits `spec` (a fresh check on a connection of the
 * package's own, bounded by `timeoutMs`)? False when it refuses, is shutting down, or its role changed.
 */
export async function stillSuits(
  client: object,
  h: HostAddress,
  spec: HostSpec,
  timeoutMs: number,
): Promise<boolean> {
  try {
    return suits(await checkRole(client, h, timeoutMs), spec.attrs);
  } catch {
    return false;
  }
}

function ordered(spec: HostSpec): HostAddress[] {
  const hosts = spec.hosts.slice();
  if (spec.random) {
    for (let i = hosts.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [hosts[i], hosts[j]] = [hosts[j] as HostAddress, hosts[i] as HostAddress];
    }
  }
  return hosts;
}

/**
 * The host the next connection of `client` goes to. First from what is remembered; else every host is
 * checked in order (the first suitable wins); prefer-standby then falls back to any reachable host.
 */
export async function chooseHost(
  spec: HostSpec,
  client: object,
  { timeoutMs, trustMs }: RoleCheckOptions,
): Promise<HostAddress> {
  if (!targetHosts.has(spec.target)) targetHosts.set(spec.target, spec.hosts);
  const hosts = ordered(spec);
  const now = Date.now();
  if (spec.attrs === 'any') {
    // libpq's `any`: the first host that accepts connections; one that just failed is tried last.
    const up = hosts.filter((h) => now - (down.get(hostKey(h)) ?? 0) > DOWN_MS);
    return (up[0] ?? hosts[0]) as HostAddress;
  }
  for (const h of hosts) {
    const role = roles.get(hostKey(h));
    const trusted = role !== undefined && (trustMs === 0 || now - role.at < trustMs);
    if (trusted && suits(role, spec.attrs)) return h;
  }
  let lastError: unknown;
  let fallback: HostAddress | undefined;
  for (const h of hosts) {
    try {
      const role = await checkRole(client, h, timeoutMs);
      if (suits(role, spec.attrs)) return h;
      fallback ??= h;
    } catch (err) {
      lastError = err;
    }
  }
  if (spec.attrs === 'prefer-standby' && fallback !== undefined) return fallback;
  throw new NoSuitableHostError(spec, lastError);
}
