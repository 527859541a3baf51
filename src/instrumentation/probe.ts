/**
 * The recovery probe for one target: open a new connection of its own, run `SELECT 1`, close it. It
 * runs while the target's breaker is open (src/policy/recovery.ts schedules it), so it must not go
 * through the policies (the open breaker would refuse it): its client is registered in
 * `scope.ownClients`, which every patch passes through untouched. Its 'error' events are listened to
 * (a probe never crashes anything), and aborting the signal (the breaker closed, or shutdown) ends it.
 *
 * The probe's connection is built like the app's: from the pool's options with the pool's Client class,
 * or from a standalone client's connection parameters with its own class. Each step is bounded by
 * pg's own `connectionTimeoutMillis` and `query_timeout`.
 */
import { clientHostSpec, poolHostSpec, setClientHostSpec, singleHostOptions } from './multi-host.ts';
import { scope } from './scope.ts';
import type { PgPoolLike } from './types.ts';

/** A pg Client as far as the probe needs it. */
export interface ProbeClient {
  connect(): Promise<unknown>;
  query(config: { text: string; query_timeout?: number }): Promise<unknown>;
  end(): Promise<void>;
  on(event: 'error', listener: (error: unknown) => void): unknown;
}

export type ProbeClientFactory = (timeoutMs: number) => ProbeClient;

const ignore = (): void => {};

export async function runProbe(
  factory: ProbeClientFactory,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<void> {
  signal.throwIfAborted();
  const client = factory(timeoutMs);
  scope.ownClients.add(client);
  client.on('error', ignore);
  const end = (): void => {
    client.end().catch(ignore);
  };
  signal.addEventListener('abort', end, { once: true });
  try {
    await client.connect();
    await client.query({ text: 'SELECT 1', query_timeout: timeoutMs });
  } finally {
    signal.removeEventListener('abort', end);
    end();
  }
}

type ClientCtor = new (config: Record<string, unknown>) => ProbeClient;

/** A probe connection like the pool's own clients. */
export function poolProbeFactory(pool: {
  Client?: unknown;
  options?: object;
}): ProbeClientFactory | undefined {
  const Client = pool.Client as ClientCtor | undefined;
  if (typeof Client !== 'function') return undefined;
  const spec = poolHostSpec(pool as PgPoolLike);
  const all = (pool.options ?? {}) as Record<string, unknown>;
  // A multi-host pool: constructed for one host, the host chosen at connect (multi-host-connect.ts), so
  // the probe succeeds when a suitable host (the primary, for read-write) accepts connections again.
  const options = spec === undefined ? all : singleHostOptions(all, spec);
  // pg-pool keeps `password` as a non-enumerable property of its options: a spread would drop it.
  return (timeoutMs) => {
    const client = new Client({
      ...options,
      password: options['password'],
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
    });
    if (spec !== undefined) setClientHostSpec(client, spec);
    return client;
  };
}

/**
 * A probe connection like a standalone client's (its resolved connection parameters, same class). A
 * client of a multi-host target (a pool's client is constructed for one host of the list) passes its
 * host list on: the probe chooses its host as the client did, not the host the client was on.
 */
export function clientProbeFactory(client: object): ProbeClientFactory | undefined {
  const Client = (client as { constructor?: unknown }).constructor as ClientCtor | undefined;
  const p = (client as { connectionParameters?: Record<string, unknown> }).connectionParameters;
  if (typeof Client !== 'function' || !p) return undefined;
  const config: Record<string, unknown> = {
    user: p['user'],
    password: (client as { password?: unknown }).password ?? p['password'],
    host: p['host'],
    port: p['port'],
    database: p['database'],
    ssl: (client as { ssl?: unknown }).ssl ?? p['ssl'],
    options: p['options'],
    application_name: p['application_name'],
  };
  let spec;
  try {
    spec = clientHostSpec(client as never);
  } catch {
    spec = undefined;
  }
  return (timeoutMs) => {
    const probe = new Client({ ...config, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
    if (spec !== undefined) setClientHostSpec(probe, spec);
    return probe;
  };
}
