/**
 * Eviction: when the breaker of a target opens, every idle connection of every pool of that target is
 * closed. The breaker opened because the target looked unreachable; the connections already in the pool
 * may have died silently with it (a failed-over host, a dropped network path: no reset ever arrives),
 * and pg-pool has no check on checkout, so each would hang the next statement handed to it until a
 * timeout. Closing them costs, at worst, one new connection each after the outage.
 *
 * Only idle clients: a checked-out client belongs to its caller (its statement has its own timeout).
 * pg-pool keeps them in `pool._idle` (IdleItem with `.client`) and removes one with `_remove(client)`,
 * the path its own idle timeout takes (clears the idle timer, forgets the client, ends it), in every
 * pg-pool 3 release. The socket is then destroyed: ending a connection politely on a dead path would
 * wait on it (pg's `end()` sends a Terminate and waits for the close).
 */
import type { TargetPolicy } from '../policy/pipeline.ts';
import type { PgPoolLike } from './types.ts';

/** Why idle connections were evicted. */
export type EvictionReason = 'breaker_open' | 'failover';

export interface ConnectionsEvictedEvent {
  readonly target: string;
  readonly reason: EvictionReason;
  /** Idle connections closed. */
  readonly count: number;
}

interface IdlePool {
  _idle?: Array<{ client?: unknown }>;
  _remove?: (client: unknown) => unknown;
}

interface StreamOwner {
  connection?: { stream?: { destroy?: () => void } };
}

/** Closes every idle client of `pool` (those `which` selects, when given); returns how many. */
export function evictIdleClients(pool: PgPoolLike, which?: (client: object) => boolean): number {
  const { _idle: idle, _remove: remove } = pool as PgPoolLike & IdlePool;
  if (!Array.isArray(idle) || typeof remove !== 'function') return 0;
  let count = 0;
  for (const item of idle.slice()) {
    const client = item?.client;
    if (client === undefined || (which !== undefined && !which(client as object))) continue;
    try {
      remove.call(pool, client);
      (client as StreamOwner).connection?.stream?.destroy?.();
      count++;
    } catch {
      // a client pg-pool was already dropping: nothing to evict
    }
  }
  return count;
}

/**
 * Evicts the idle clients of `pools()` each time `policy`'s breaker opens (when its settings ask for it)
 * and reports each eviction that closed at least one connection.
 */
export function evictOnOutage(
  policy: TargetPolicy,
  pools: () => Iterable<PgPoolLike>,
  report: (event: ConnectionsEvictedEvent) => void,
): void {
  policy.onCircuitStateChange((e) => {
    if (e.to !== 'open' || !policy.settings.liveness.evictIdleOnOutage) return;
    let count = 0;
    for (const pool of pools()) count += evictIdleClients(pool);
    if (count > 0) report({ target: e.target, reason: 'breaker_open', count });
  });
}
