/**
 * SQLSTATE → classification. Exact codes are looked up first, then the two-character class, then the
 * default (`other_server_error`). The rationale for every row is in docs/error-classification.md (a
 * unit test keeps the two in sync).
 */
import type { ErrorClass, ErrorClassification, ServerReach } from './types.ts';

/** A classification without its `errorType` (for SQLSTATEs the label is the code itself). */
export type Verdict = Omit<ErrorClassification, 'errorType'>;

const verdict = (
  errorClass: ErrorClass,
  transient: boolean,
  reachedServer: ServerReach,
  countsForBreaker: boolean,
): Verdict => Object.freeze({ errorClass, transient, reachedServer, countsForBreaker });

/** A statement the server received and refused with an error: nothing applied, not worth repeating. */
const rejected = (errorClass: ErrorClass): Verdict => verdict(errorClass, false, 'rejected', false);

/** Exact codes; checked before the class prefixes. */
export const SQLSTATE_EXACT: ReadonlyMap<string, Verdict> = new Map<string, Verdict>([
  // class 08 exceptions
  ['08001', verdict('connect_refused', true, 'no', true)], // sqlclient_unable_to_establish_sqlconnection
  ['08004', verdict('connect_refused', true, 'no', true)], // sqlserver_rejected_establishment_of_sqlconnection
  ['08P01', rejected('protocol')], // protocol_violation
  // class 57 (operator intervention)
  ['57P01', verdict('connection_lost', true, 'unknown', false)], // admin_shutdown (also pg_terminate_backend)
  ['57P02', verdict('connection_lost', true, 'unknown', false)], // crash_shutdown
  ['57P03', verdict('connect_refused', true, 'no', true)], // cannot_connect_now (starting up / shutting down)
  ['57P05', verdict('connection_lost', true, 'unknown', false)], // idle_session_timeout (PG 14+)
  ['57014', rejected('statement_timeout')], // query_canceled (statement_timeout, pg_cancel_backend)
  // class 53 (insufficient resources)
  ['53300', verdict('too_many_connections', true, 'no', false)], // too_many_connections: load, not an outage
  // class 40 / 55 (concurrency)
  ['40001', verdict('serialization_failure', true, 'rejected', false)], // serialization_failure
  ['40P01', verdict('deadlock', true, 'rejected', false)], // deadlock_detected
  ['55P03', verdict('lock_not_available', true, 'rejected', false)], // lock_not_available
  // class 25 exception: the server closed the session
  ['25P03', verdict('connection_lost', true, 'unknown', false)], // idle_in_transaction_session_timeout
  // A write reached a read-only server (a demoted primary after a failover): nothing was applied, and
  // a fresh connection may reach the new primary.
  ['25006', verdict('transaction_state', true, 'rejected', false)], // read_only_sql_transaction
  // class 3D
  ['3D000', verdict('database_missing', false, 'rejected', false)], // invalid_catalog_name
]);

/** Two-character SQLSTATE classes. */
export const SQLSTATE_CLASSES: ReadonlyMap<string, Verdict> = new Map<string, Verdict>([
  ['08', verdict('connection_lost', true, 'unknown', false)], // connection_exception
  ['53', verdict('insufficient_resources', true, 'rejected', true)], // insufficient_resources
  ['25', rejected('transaction_state')], // invalid_transaction_state
  ['28', rejected('auth')], // invalid_authorization_specification
  ['42', rejected('syntax_or_access')], // syntax_error_or_access_rule_violation
  ['23', rejected('integrity')], // integrity_constraint_violation
  ['22', rejected('data')], // data_exception
]);

/** Any other SQLSTATE the server sent. */
const SQLSTATE_OTHER: Verdict = rejected('other_server_error');

/** `A`–`Z` or `0`–`9`: the characters a SQLSTATE is made of. */
const isSqlStateChar = (c: number): boolean => (c >= 48 && c <= 57) || (c >= 65 && c <= 90);

/** Five characters from [0-9A-Z] (note: 'EPIPE' matches too, so check the error's shape as well). */
export function isSqlStateShaped(code: string): boolean {
  if (code.length !== 5) return false;
  for (let i = 0; i < 5; i++) if (!isSqlStateChar(code.charCodeAt(i))) return false;
  return true;
}

/** The verdict for a SQLSTATE (assumed shaped: see `isSqlStateShaped`). */
function sqlStateVerdict(code: string): Verdict {
  return SQLSTATE_EXACT.get(code) ?? SQLSTATE_CLASSES.get(code.slice(0, 2)) ?? SQLSTATE_OTHER;
}

// Classifications are immutable and shared; the SQLSTATEs a server sends are a small set, so cache them.
const cache = new Map<string, ErrorClassification>();
const CACHE_LIMIT = 1024;

/** The full classification of a server error with this SQLSTATE (`errorType` = the code). */
export function classifySqlState(code: string): ErrorClassification {
  const hit = cache.get(code);
  if (hit) return hit;
  const result: ErrorClassification = Object.freeze({ ...sqlStateVerdict(code), errorType: code });
  if (cache.size < CACHE_LIMIT) cache.set(code, result);
  return result;
}
