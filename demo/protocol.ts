/**
 * The demo's two processes and what they say to each other (Node's IPC channel of `child_process.fork`).
 *
 * - The orchestrator (cli.ts): the database, the fault proxies, the scenarios, the live view, the summary.
 * - The sample app (app.ts): a small shop on PostgreSQL, started the way users start theirs,
 *   `node --require pg-resilience/register app.js`. It knows nothing about the scenarios: it runs the
 *   workload it is told to run and reports what its calls returned.
 *
 * The app reads its targets from the environment (DEMO_TARGETS, JSON of `TargetUrls`); its Prometheus
 * endpoint and the pg-resilience configuration come from the standard variables the orchestrator sets
 * (OTEL_METRICS_EXPORTER=prometheus, OTEL_EXPORTER_PROMETHEUS_PORT, PG_RESILIENCE_CONFIG…).
 */

/** Connection strings of the app's pools, each through its own fault proxy (its own target). */
export interface TargetUrls {
  /**
   * The shop's pool: every workload kind except the spike. For the failover scenario, a multi-host URL
   * of a primary and its standby (`retarget`).
   */
  readonly main: string;
  /** Spike pools, one per rate-limit strategy (each proxy port is a target with its own rate limit). */
  readonly wait: string;
  readonly queue: string;
  readonly drop: string;
}

/** The kinds of calls the app makes. */
export const WORK_KINDS = [
  /** `pool.query` SELECT by primary key / small joins (read-only: retried when the outcome is unknown). */
  'read',
  /** `idempotent(...)` upsert of a product's stock (safe to repeat). */
  'upsert',
  /** A plain INSERT of an order with a client-generated `ref` (not idempotent: never repeated blindly). */
  'insert',
  /** `withTransaction` transfer between two customers' balances (the whole transaction is retried). */
  'transaction',
  /** A pg-cursor read of order items on a checked-out client (a Submittable: never retried). */
  'cursor',
  /** A query slower than the stress scenario's statement_timeout (expects 57014). */
  'slow',
  /** Spike reads on the rate-limited targets. */
  'spike_wait',
  'spike_queue',
  'spike_drop',
] as const;
export type WorkKind = (typeof WORK_KINDS)[number];

/** What the app should run now. Rates are calls per second, spread evenly; 0 stops that kind. */
export interface Workload {
  /** Calls per second across read/upsert/insert/transaction/cursor (mixed 50/15/20/10/5 %). */
  readonly rate: number;
  /** Calls per second of `slow` (0 = none). */
  readonly slowRate: number;
  /** statement_timeout for `slow` calls, in ms. */
  readonly slowTimeoutMs: number;
  /** Calls per second sent to each spike target (0 = none). */
  readonly spikeRate: number;
  /** Calls in flight at most (beyond it the app waits, like a server with a request limit). */
  readonly maxInFlight: number;
  /**
   * Each read also holds its connection this long (`pg_sleep`), in ms: the fleet demo's way to make the
   * apps want more connections than the budget. Unset or 0: none.
   */
  readonly readHoldMs?: number;
}

/** Orchestrator → app. */
export type ToApp =
  | { readonly type: 'workload'; readonly workload: Workload }
  /** Stop issuing calls, wait for the ones in flight, then check the ledger and answer `verified`. */
  | { readonly type: 'verify'; readonly scenario: string }
  /**
   * Point the shop's pool at another database (the failover scenario's primary + standby, then back):
   * end the shop's pools, open them on `main`, create and seed the shop there, answer `retargeted`.
   * Sent between scenarios (no workload running).
   */
  | { readonly type: 'retarget'; readonly main: string }
  /** Stop everything, end the pools, exit 0. */
  | { readonly type: 'stop' };

/** Counts of one kind of call over one report interval. */
export interface KindStats {
  ok: number;
  failed: number;
  /** Failures by error code (SQLSTATE, errno, PGR_* typed error code, or the error's name). */
  errors: Record<string, number>;
  /** Latencies of the calls that ended in this interval (ok and failed), in ms. */
  latenciesMs: number[];
}

/** What `verify` found: every acknowledged write exactly once, transfers balanced. */
export interface Verification {
  readonly scenario: string;
  /** Non-idempotent inserts the app saw succeed. */
  readonly acknowledged: number;
  /** Acknowledged inserts missing from the database (must be 0). */
  readonly missing: number;
  /** Inserts (acknowledged or not) present more than once (must be 0). */
  readonly duplicated: number;
  /** Inserts the app saw fail that are in the database anyway (allowed: the outcome was unknown). */
  readonly failedButPresent: number;
  /** Sum of all customer balances minus its value at seed time (must be 0: transfers move money). */
  readonly balanceDrift: number;
  readonly ok: boolean;
}

/** App → orchestrator. */
export type FromApp =
  /** Schema created and seeded (or found seeded); the workload may start. */
  | { readonly type: 'ready'; readonly seeded: Record<string, number> }
  /** Sent every `STATS_INTERVAL_MS` while running. */
  | { readonly type: 'stats'; readonly at: number; readonly kinds: Partial<Record<WorkKind, KindStats>> }
  | { readonly type: 'verified'; readonly result: Verification }
  /** The shop's pool is on the new URL, its schema created and seeded (or found seeded). */
  | { readonly type: 'retargeted'; readonly seeded: Record<string, number> }
  /** Something the app could not survive (it exits after sending it). */
  | { readonly type: 'fatal'; readonly message: string };

export const STATS_INTERVAL_MS = 250;

/** The seed's sizes. */
export const SEED = { customers: 1000, products: 500, orders: 5000, orderItems: 15000 } as const;

/** The app's application_name: the `kills` scenario terminates only these sessions. */
export const APPLICATION_NAME = 'pg-resilience-demo';

/** The environment variable holding the JSON `TargetUrls`. */
export const TARGETS_ENV = 'DEMO_TARGETS';
