/**
 * How the circuit breaker and the recovery probe count outcomes, from an error's classification.
 * The breaker (circuit-breaker.ts) takes these as predicates; the pipeline classifies and asks here.
 *
 * - A failure is an error that says the target cannot be reached (`countsForBreaker`).
 * - A lost established connection is neutral: one network blip drops every open connection at once.
 * - Anything else, including a server that answered with an error, counts as a success. That includes
 *   `too_many_connections` (53300: "too many connections for role", "sorry, too many clients already",
 *   "remaining connection slots are reserved…"): the server is up and busy. That is load, not an
 *   outage: opening the breaker would not free a slot, it would only lock this process out while others
 *   take every slot.
 * - A recovery probe proves the server up when it connects and runs `SELECT 1`, or when the server
 *   answers the probe's connection itself: refused for lack of slots, or rejected with an error that
 *   says nothing about its health (a wrong password, a missing database: the app's other pools work).
 */
import type { ErrorClassification } from '../classify/types.ts';

/** A failure for the breaker: the target looks unreachable. */
export function isBreakerFailure(c: ErrorClassification): boolean {
  return c.countsForBreaker;
}

/** Neither a failure nor a success: a lost connection says nothing about the target by itself. */
export function isBreakerNeutral(c: ErrorClassification): boolean {
  return c.errorClass === 'connection_lost' || c.errorClass === 'client_unusable';
}

/** A recovery probe that failed so still found the server up (the probe then counts as a success). */
export function probeFoundServerUp(c: ErrorClassification): boolean {
  if (c.errorClass === 'too_many_connections') return true;
  return c.reachedServer === 'rejected' && !c.countsForBreaker;
}

/** How long every connect must have failed before those failures count for the breaker. */
const CONNECT_OUTAGE_MS = 1_000;

/**
 * The connect-outage rule. An operation that failed, as a whole, because its connection was lost while
 * connecting counts once for the breaker, but only when connecting has failed for everyone for a while:
 * no operation succeeded since the first of these failures, at least CONNECT_OUTAGE_MS ago, and at
 * least three of them. A proxy or load balancer in front of a server that is down accepts each
 * connection and resets it, so there an outage looks like ECONNRESET while connecting; a storm of
 * resets that some connects survive is not an outage (opening the breaker would turn a partial failure
 * into a total one), and concurrent fast failures would otherwise line up "in a row".
 */
export class ConnectOutage {
  #count = 0;
  #since = 0;

  /** An operation of the target succeeded: connecting works. */
  success(): void {
    if (this.#count > 0) this.#count = 0;
  }

  /**
   * An operation failed with `c`; `connecting`: it failed while getting its connection. True when the
   * failure should count once for the breaker now.
   */
  failed(c: ErrorClassification, connecting: boolean, now: number): boolean {
    // Other failures say nothing about connecting now (a statement lost on a connection made earlier).
    if (c.errorClass !== 'connection_lost' || !connecting) return false;
    if (this.#count++ === 0) this.#since = now;
    return this.#count >= 3 && now - this.#since >= CONNECT_OUTAGE_MS;
  }
}
