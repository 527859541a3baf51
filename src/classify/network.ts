/**
 * Node system errors (by errno code) and node-postgres's own message-only errors (by exact message:
 * they are stable strings in pg 8 / pg-pool 3). The rationale for every row is in
 * docs/error-classification.md (a unit test keeps the two in sync).
 */
import { classification } from './classification.ts';
import type { ErrorClassification } from './types.ts';

const entry = classification;

const refused = (errno: string) => entry('connect_refused', true, 'no', true, errno);
const lost = (errno: string) => entry('connection_lost', true, 'unknown', false, errno);

/** Node system error codes (`err.code` of errors with `syscall`/`errno`, or of a happy-eyeballs AggregateError). */
export const ERRNO_TABLE: ReadonlyMap<string, ErrorClassification> = new Map<string, ErrorClassification>([
  ['ECONNREFUSED', refused('ECONNREFUSED')],
  ['ENOTFOUND', refused('ENOTFOUND')],
  ['EAI_AGAIN', refused('EAI_AGAIN')],
  ['EHOSTUNREACH', refused('EHOSTUNREACH')],
  ['ENETUNREACH', refused('ENETUNREACH')],
  ['ECONNRESET', lost('ECONNRESET')],
  ['EPIPE', lost('EPIPE')],
  // A socket ETIMEDOUT can also hit an established connection (TCP retransmission / keepalive
  // timeout), so the statement's fate is unknown; the instrumentation's dispatch tracking narrows it
  // to 'no' when nothing was sent.
  ['ETIMEDOUT', entry('connect_timeout', true, 'unknown', true, 'ETIMEDOUT')],
]);

/**
 * The errnos of a connection the network refused or reset, before any server process answered it: a
 * connect's retry after one draws nothing from the retry budget (policy/retry.ts). Not ETIMEDOUT (it
 * may be a server too busy to accept), nor a name lookup's failure.
 */
export const REFUSED_OR_RESET: ReadonlySet<unknown> = new Set<unknown>([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

/** pg's and pg-pool's errors that carry nothing but a message (exact match). */
export const PG_MESSAGES: ReadonlyMap<string, ErrorClassification> = new Map<string, ErrorClassification>([
  // pg client: the socket ended without client.end() (server closed it / FIN).
  ['Connection terminated unexpectedly', entry('connection_lost', true, 'unknown', false, 'connection_lost')],
  // pg client: client.end() was called while queries were queued or in flight. The application (or
  // the pool destroying a broken client) closed it: says nothing about the server's health.
  ['Connection terminated', entry('connection_lost', true, 'unknown', false, 'connection_lost')],
  // pg client: its own connectionTimeoutMillis fired while connecting.
  ['timeout expired', entry('connect_timeout', true, 'no', true, 'connect_timeout')],
  // pg-pool: its connectionTimeoutMillis fired while a new client was connecting.
  [
    'Connection terminated due to connection timeout',
    entry('connect_timeout', true, 'no', true, 'connect_timeout'),
  ],
  // pg-pool: no client became free within connectionTimeoutMillis (every client checked out). The pool is
  // busy, not the server: load, not a fault. Not retried: the caller's own bound has passed, and a retry
  // would queue again behind (and take the slot of) callers that waited less.
  ['timeout exceeded when trying to connect', entry('pool_exhausted', false, 'no', false, 'pool_exhausted')],
  // pg client: its query_timeout fired; pg does not cancel the statement on the server.
  ['Query read timeout', entry('query_timeout', true, 'unknown', true, 'query_timeout')],
  // pg client: the client's connection already failed; pg refused to send anything.
  [
    'Client has encountered a connection error and is not queryable',
    entry('client_unusable', true, 'no', false, 'client_unusable'),
  ],
]);
