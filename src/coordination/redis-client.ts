/**
 * The Redis connection, through ioredis: an optional peer dependency, loaded (dynamic import) only when
 * coordination is on. Why ioredis: a switch to fail a command at once while disconnected
 * (`enableOfflineQueue: false`) and a per-command timeout that clears what a silent server never
 * answers, so "Redis down never blocks a query" is a setting; scripts defined once and sent by SHA with
 * an automatic fallback to EVAL after a Redis restart empties the script cache; Cluster support in the
 * same package; its own types; the peer range other libraries here already use (typeorm: ^5).
 *
 * Nothing here ever logs or throws the URL: errors are reduced to their message with the password removed.
 */
import { withoutSecret } from '../config/redis-url.ts';
import { BREAKER_SYNC, BREAKER_UP, HEARTBEAT, LEASE_SLOTS, TAKE_PERMITS } from './scripts.ts';

/** What the coordinator needs from a Redis connection. */
export interface RedisLink {
  /** HEARTBEAT: renews the lease, returns the raw reply (validated by the caller). */
  heartbeat(membersKey: string, member: string, leaseMs: number): Promise<unknown>;
  /** TAKE_PERMITS: returns the raw reply (validated by the caller). */
  takePermits(
    bucketKey: string,
    membersKey: string,
    ratePerMs: number,
    capacity: number,
    want: number,
    member: string,
    leaseMs: number,
  ): Promise<unknown>;
  /** LEASE_SLOTS: returns the raw reply (validated by the caller). */
  leaseSlots(
    slotsKey: string,
    membersKey: string,
    budget: number,
    hold: number,
    want: number,
    member: string,
    leaseMs: number,
  ): Promise<unknown>;
  /** BREAKER_SYNC: returns the raw reply (validated by the caller). */
  breakerSync(
    stateKey: string,
    votesKey: string,
    membersKey: string,
    member: string,
    leaseMs: number,
    vote: boolean,
    seenEpoch: number,
    quorum: number,
  ): Promise<unknown>;
  /** BREAKER_UP: returns the raw reply. */
  breakerUp(stateKey: string, votesKey: string, lockKey: string, leaseMs: number): Promise<unknown>;
  /** SET lockKey member NX PX ms: 'OK' when taken, null when another member holds it. */
  lock(lockKey: string, member: string, ms: number): Promise<unknown>;
  /** Removes this member (best effort, on shutdown). */
  leave(membersKey: string, member: string): Promise<unknown>;
  /** Connection problems, as messages without the password. */
  onError(listener: (message: string) => void): void;
  /** The connection is up (at first and after each reconnect): commands can run. */
  onReady(listener: () => void): void;
  close(): void;
}

interface IoRedisClient {
  defineCommand(name: string, def: { numberOfKeys: number; lua: string }): void;
  zrem(key: string, member: string): Promise<unknown>;
  on(event: string, listener: (arg: never) => void): unknown;
  disconnect(): void;
  [command: string]: unknown;
}
type IoRedisCtor = new (url: string, options: Record<string, unknown>) => IoRedisClient;
type IoClusterCtor = new (
  startupNodes: Array<{ host: string; port: number }>,
  options: Record<string, unknown>,
) => IoRedisClient;

/** ioredis's two clients: one server (or a primary), and Redis Cluster. */
export interface IoRedisModule {
  readonly Redis: IoRedisCtor;
  readonly Cluster: IoClusterCtor;
}

/** The message shown when coordination is on but ioredis is not installed. */
export const MISSING_CLIENT =
  'pg-resilience: coordination.redis.url is set but the optional peer dependency ioredis is not installed (npm install ioredis); limits stay per process';

/** Loads ioredis; undefined when it is not installed. */
export async function loadIoRedis(): Promise<IoRedisModule | undefined> {
  try {
    const mod = (await import('ioredis')) as unknown as {
      default?: unknown;
      Redis?: unknown;
      Cluster?: unknown;
    };
    const Redis = (mod.Redis ?? mod.default) as IoRedisCtor | undefined;
    const Cluster = (mod.Cluster ?? (mod.default as { Cluster?: unknown } | undefined)?.Cluster) as
      IoClusterCtor | undefined;
    return typeof Redis === 'function' && typeof Cluster === 'function' ? { Redis, Cluster } : undefined;
  } catch {
    return undefined;
  }
}

/** The password in a URL (decoded), to scrub from messages. */
function passwordOf(url: string): string | undefined {
  try {
    const p = new URL(url).password;
    return p ? decodeURIComponent(p) : undefined;
  } catch {
    return undefined;
  }
}

const messageOf = (error: unknown, secret: string | undefined): string =>
  withoutSecret(error instanceof Error ? error.message : String(error), secret);

/**
 * Connects to `url` (with `cluster`, to the Redis Cluster that node belongs to); commands fail at once
 * while disconnected. The coordinator bounds each command by the coordination timeout itself; ioredis's
 * own `commandTimeout` (a generous multiple) only clears commands a silent server never answers, so they
 * cannot pile up.
 */
export function connectRedis(io: IoRedisModule, url: string, timeoutMs: number, cluster = false): RedisLink {
  const secret = passwordOf(url);
  const perConnection = {
    commandTimeout: Math.max(1000, timeoutMs * 10),
    connectTimeout: Math.max(1000, timeoutMs),
    maxRetriesPerRequest: 0,
    connectionName: 'pg-resilience',
  };
  // Reconnect quickly at first, then every second: the fleet-wide limits resume soon after Redis does.
  const retry = (times: number) => Math.min(times * 50, 1000);
  const client = cluster
    ? new io.Cluster([seedNode(url)], {
        enableOfflineQueue: false,
        clusterRetryStrategy: retry,
        redisOptions: { ...perConnection, ...credentials(url) },
      })
    : new io.Redis(url, {
        ...perConnection,
        enableOfflineQueue: false,
        enableReadyCheck: false,
        retryStrategy: retry,
      });
  client.defineCommand('pgrHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT });
  client.defineCommand('pgrTake', { numberOfKeys: 2, lua: TAKE_PERMITS });
  client.defineCommand('pgrLeaseSlots', { numberOfKeys: 2, lua: LEASE_SLOTS });
  client.defineCommand('pgrBreakerSync', { numberOfKeys: 3, lua: BREAKER_SYNC });
  client.defineCommand('pgrBreakerUp', { numberOfKeys: 3, lua: BREAKER_UP });
  // Neither the connection nor the reconnect timer may keep the app alive: an app that is done exits as
  // it would without Redis, up or down. (ioredis emits status events on the next tick, once the socket
  // or the timer exists.)
  const unref = (handle: unknown) => (handle as { unref?: () => void } | null | undefined)?.unref?.();
  const unrefConnection = (redis: IoRedisClient) => {
    redis.on('connecting', () => unref(redis.stream));
    redis.on('connect', () => unref(redis.stream));
    redis.on('reconnecting', () => unref(redis.reconnectTimeout));
  };
  unrefConnection(client);
  // A Cluster opens one connection per node it learns of; their errors come as 'node error'.
  client.on('+node', unrefConnection);
  const listeners: Array<(message: string) => void> = [];
  // Without a listener ioredis prints every connection error to the console.
  const report = (error: unknown) => {
    const message = messageOf(error, secret);
    for (const l of listeners) l(message);
  };
  client.on('error', report);
  if (cluster) client.on('node error', report);
  // Send times of the commands Redis has not answered yet. ioredis's command timers keep the process
  // alive, so while one is unanswered past the coordination timeout (a silent Redis) no other is sent:
  // each fails at once, and an app that is done exits when that one command's timer ends.
  const unanswered = new Set<{ at: number }>();
  const run = async (p: () => unknown): Promise<unknown> => {
    const now = performance.now();
    for (const c of unanswered)
      if (now - c.at > timeoutMs)
        throw new Error(`no answer to an earlier command for ${Math.round(now - c.at)} ms`);
    const sent = { at: now };
    unanswered.add(sent);
    try {
      return await (p() as Promise<unknown>);
    } catch (error) {
      // No `cause`: ioredis's error objects may carry the connection options, password included.
      // eslint-disable-next-line preserve-caught-error
      throw new Error(messageOf(error, secret));
    } finally {
      unanswered.delete(sent);
    }
  };
  const command = (name: string, ...args: unknown[]) =>
    run(() => (client[name] as (...a: unknown[]) => unknown).apply(client, args));
  return {
    heartbeat: (members, member, leaseMs) => command('pgrHeartbeat', members, member, leaseMs),
    takePermits: (bucket, members, ratePerMs, capacity, want, member, leaseMs) =>
      command('pgrTake', bucket, members, ratePerMs, capacity, want, member, leaseMs),
    leaseSlots: (slots, members, budget, hold, want, member, leaseMs) =>
      command('pgrLeaseSlots', slots, members, budget, hold, want, member, leaseMs),
    breakerSync: (state, votes, members, member, leaseMs, vote, seen, quorum) =>
      command('pgrBreakerSync', state, votes, members, member, leaseMs, vote ? 1 : 0, seen, quorum),
    breakerUp: (state, votes, lock, leaseMs) => command('pgrBreakerUp', state, votes, lock, leaseMs),
    lock: (key, member, ms) => command('set', key, member, 'PX', Math.max(1, Math.round(ms)), 'NX'),
    leave: (members, member) => run(() => client.zrem(members, member)),
    onError: (l) => listeners.push(l),
    onReady: (l) => client.on('ready', l),
    close: () => client.disconnect(),
  };
}

/** The cluster node a URL names: where the client starts discovering the cluster. */
function seedNode(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: u.port ? Number(u.port) : 6379 };
}

/** What every node connection of a Cluster takes from the URL: user, password, TLS (a Cluster has only database 0). */
function credentials(url: string): Record<string, unknown> {
  const u = new URL(url);
  const out: Record<string, unknown> = {};
  if (u.username) out.username = decodeURIComponent(u.username);
  if (u.password) out.password = decodeURIComponent(u.password);
  if (u.protocol === 'rediss:') out.tls = {};
  return out;
}
