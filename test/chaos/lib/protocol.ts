// What the chaos app (app.mts, a child process) and the test (the parent) say to each other over the
// IPC channel of child_process.fork. Type-only: app.mts imports it with `import type` (erased), so
// the file is copied into the scratch app only for the type checker's sake.

/** The two arms: the same app with `--import pg-resilience/register`, and with bare pg. */
export type Arm = 'pg-resilience' | 'bare';

export const OP_KINDS = [
  'read',
  'upsert',
  'insert',
  'transfer',
  'cursor',
  'stream',
  'notify',
  'listen',
  'slow',
  'cancel',
] as const;
export type OpKind = (typeof OP_KINDS)[number];

/** The app's configuration, passed as JSON in CHAOS_APP_CONFIG. */
export interface AppConfig {
  arm: Arm;
  /** seed of the app's own choices (keys, amounts); the fault schedule is the parent's */
  seed: number;
  /** incremented by the parent for every (re)start of the app: part of every key */
  generation: number;
  /** through the fault proxy, as the non-superuser app role */
  connectionString: string;
  /** the cancel lane's: straight to the server (a second target), as the app role */
  cancelConnectionString: string;
  /** concurrent workers per kind */
  workers: Partial<Record<OpKind, number>>;
  /** think time between two operations of a worker, ms (uniform in [min, max]) */
  thinkMs: [number, number];
  poolMax: number;
  /** the pool's connections get this server-side statement_timeout (ms) */
  statementTimeoutMs: number;
  /** pg-pool's connectionTimeoutMillis (checkout / connect) */
  connectionTimeoutMs: number;
  /** pg-pool's maxUses: connections are retired and replaced, so faults on new connections bite */
  maxUses: number;
  accounts: number;
  /** rows of chaos_static (what cursors and streams read) */
  staticRows: number;
  /** upsert keys per worker (each worker owns its keys) */
  upsertKeysPerWorker: number;
  /** workers of the slow-query storm (SELECT pg_sleep longer than statement_timeout) */
  stormWorkers: number;
  stormSleepMs: number;
  /**
   * The cancel lane's statements (SELECT pg_sleep of this many ms) run on a pool of their own, without
   * the server's statement_timeout, so the timeout that stops them is the package's timeout.queryMs
   * (arm pg-resilience) or pg's query_timeout (arm bare: cancelQueryTimeoutMs).
   */
  cancelSleepMs: number;
  cancelQueryTimeoutMs: number;
}

/** One finished operation. Times are epoch ms (parent and child share the clock). */
export interface OpRecord {
  kind: OpKind;
  t0: number;
  t1: number;
  ok: boolean;
  /** error code: SQLSTATE, errno, PGR_* or a short name for message-only errors */
  code?: string;
  /** insert: the key; upsert: `${k}:${v}`; transfer: the transfer id; notify: the payload */
  key?: string;
  /** cursor/stream: rows read (checked against staticRows) */
  rows?: number;
  /** cancel: the error said the statement was cancelled on the server (OperationTimeoutError.cancelled) */
  cancelled?: boolean;
}

export interface BreakerSample {
  target: string;
  state: string;
  rateLimitQueue: number | null;
  retries: number;
  rejections: number;
  timeouts: number;
}

export interface PoolSample {
  total: number;
  idle: number;
  waiting: number;
}

export type ToApp =
  | { type: 'run' }
  /** stop issuing operations; answer `idle` when nothing is in flight (or after timeoutMs) */
  | { type: 'pause'; timeoutMs: number }
  | { type: 'storm'; on: boolean }
  /** run `statements` concurrent cancel-lane statements; answer `cancel-burst` when each has ended */
  | { type: 'cancel-burst'; statements: number }
  /** gc() twice, answer `memory` */
  | { type: 'memory' }
  /** answer `state` (breakers, in-flight operations) */
  | { type: 'state' }
  /** send NOTIFY with this payload through the pool (the recovery check of the listener) */
  | { type: 'probe-notify'; payload: string }
  | { type: 'stop'; timeoutMs: number };

export interface InFlight {
  kind: OpKind;
  t0: number;
  /** the operation's key, once chosen (see OpRecord.key) */
  key?: string;
}

export type FromApp =
  | { type: 'ready'; pid: number }
  | { type: 'ops'; ops: OpRecord[] }
  /** notification payloads received by the listener since the last message */
  | { type: 'notified'; payloads: string[]; at: number }
  | { type: 'listening'; at: number }
  | { type: 'idle'; inFlight: InFlight[] }
  | { type: 'memory'; heapUsed: number; rss: number }
  | {
      type: 'state';
      at: number;
      breakers: BreakerSample[] | null;
      inFlight: InFlight[];
      /** the app pool's clients: total, idle, and callers waiting for one */
      pool: PoolSample;
    }
  | { type: 'probe-notify'; ok: boolean; code?: string }
  /** the keys the burst's statements carry in their SQL text (a comment), and how each ended */
  | { type: 'cancel-burst'; keys: string[]; cancelled: number; codes: string[] }
  | { type: 'stopped'; inFlight: InFlight[] }
  | { type: 'log'; message: string };
