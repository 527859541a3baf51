/**
 * The fleet-aware breaker's rules, pure (the Redis side is BREAKER_SYNC in scripts.ts):
 * - the quorum: how many live members must see a target down before the whole fleet opens;
 * - the reply check: what Redis answered, validated (anything else counts as a failed command);
 * - the decision: what this process's breaker does with the fleet's verdict.
 */

/**
 * Votes needed to open fleet-wide: half the live members (rounded up), at least 2, at most all of
 * them. A fleet of one is itself (1); of two or three, 2; of four, 2; of five, 3. One process's own
 * network fault (one vote) never opens a fleet of two or more.
 */
export function quorum(live: number): number {
  const n = Number.isInteger(live) && live >= 1 ? live : 1;
  return Math.min(n, Math.max(2, Math.ceil(n / 2)));
}

/** BREAKER_SYNC's reply, validated. */
export interface FleetVerdict {
  readonly votes: number;
  readonly live: number;
  readonly open: boolean;
  readonly epoch: number;
}

const MAX_COUNT = 1_000_000;
const MAX_EPOCH = 1e15;

function int(value: unknown, max: number): number | undefined {
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : Number.NaN;
  return Number.isInteger(n) && n >= 0 && n <= max ? n : undefined;
}

/** The verdict in a BREAKER_SYNC reply, or undefined when the reply is not one. */
export function parseVerdict(reply: unknown): FleetVerdict | undefined {
  if (!Array.isArray(reply) || reply.length !== 4) return undefined;
  const [v, l, o, e] = reply as unknown[];
  const votes = int(v, MAX_COUNT);
  const live = int(l, MAX_COUNT);
  const open = int(o, 1);
  const epoch = int(e, MAX_EPOCH);
  if (votes === undefined || live === undefined || open === undefined || epoch === undefined)
    return undefined;
  return { votes, live: Math.max(1, live), open: open === 1, epoch };
}

/** What the local breaker does: hold it open, release it and close, or nothing. */
export type BreakerAction = 'hold' | 'close' | 'none';

/**
 * `held`: the fleet holds this process's breaker open now. Open fleet-wide and not held: hold. Up
 * fleet-wide while held: close (the fleet's probe succeeded, or every vote expired). A breaker that
 * opened on its own while the fleet is up is left to itself.
 */
export function decide(held: boolean, verdict: FleetVerdict): BreakerAction {
  if (verdict.open && !held) return 'hold';
  if (!verdict.open && held) return 'close';
  return 'none';
}
