/**
 * The demo's sample app: a small shop on PostgreSQL, started the way users start theirs,
 * `node --import pg-resilience/register demo/app.ts` (the built package), by the orchestrator (cli.ts) with
 * `child_process.fork` (protocol.ts). It knows nothing about the scenarios: it runs the workload it is
 * told to run, reports what its calls returned every STATS_INTERVAL_MS, and on `verify` checks its
 * ledger of non-idempotent inserts and the sum of the balances against the database.
 *
 * Like a plain app it has no pool 'error' listener: absorbing the errors of idle clients is the
 * package's job, and the demo shows it does. Every call's failure is caught and counted; anything
 * else that goes wrong (the app's own logic) is `fatal`, and an error nobody caught crashes the
 * process, which the orchestrator reports as an invariant breach.
 */
import { randomUUID } from 'node:crypto';
// The sample app is an app: it loads pg itself, as users do (the package only patches it).
import pg from 'pg';
import type { Pool, PoolClient, Submittable } from 'pg';
import { classifyError, idempotent, withTransaction } from 'pg-resilience';
import {
  type FromApp,
  type KindStats,
  SEED,
  STATS_INTERVAL_MS,
  type TargetUrls,
  TARGETS_ENV,
  type ToApp,
  type Verification,
  type WorkKind,
  type Workload,
} from './protocol.ts';
import { createSchema, seed, SEED_BALANCE_TOTAL_CENTS, type TableCounts } from './schema.ts';

/** The scheduler's tick: the calls due since the last tick are issued, spread over the ticks. */
const TICK_MS = 10;
/** Latency samples per kind per stats interval at most (a uniform sample beyond it). */
const LATENCY_SAMPLES = 2_000;
/** How long `verify` waits for the calls in flight to settle. */
const SETTLE_TIMEOUT_MS = 30_000;
/** How long `verify` keeps retrying its own queries (a breaker may still be open, a pool refilling). */
const VERIFY_TIMEOUT_MS = 20_000;
/** Refs per verification query. */
const VERIFY_CHUNK = 5_000;
/** How long the start-up keeps retrying the schema and the seed. */
const SEED_TIMEOUT_MS = 15_000;
const RETRY_SLEEP_MS = 250;
/** How long `stop` waits for the pools to end before exiting anyway. */
const STOP_TIMEOUT_MS = 5_000;

type MixKind = 'read' | 'upsert' | 'insert' | 'transaction' | 'cursor';
/** The shares of `Workload.rate`, in %. */
const MIX: readonly (readonly [MixKind, number])[] = [
  ['read', 50],
  ['upsert', 15],
  ['insert', 20],
  ['transaction', 10],
  ['cursor', 5],
];

interface Cursor extends Submittable {
  read(rows: number): Promise<unknown[]>;
  close(): Promise<void>;
}
type CursorClass = new (text: string, values?: unknown[]) => Cursor;

/** One non-idempotent insert, by its client-generated ref. */
interface LedgerEntry {
  readonly ref: string;
  state: 'pending' | 'acknowledged' | 'failed';
}

/** A source of calls at a rate (calls per second), fed by the scheduler. */
interface Stream {
  readonly rate: (w: Workload) => number;
  readonly issue: () => void;
  /** Each group has its own in-flight limit: spike calls waiting for a permit never starve the shop. */
  readonly group: 'shop' | 'spike';
  credit: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const randomInt = (min: number, max: number): number => min + Math.floor(Math.random() * (max - min + 1));

function send(message: FromApp): void {
  // Without a callback a send on a closed channel would emit an 'error' on process: ignore it.
  if (process.connected) process.send?.(message, undefined, undefined, () => {});
}

let exiting = false;

/** The app's own logic failed: tell the orchestrator, exit 1. */
function fatal(error: unknown): void {
  if (exiting) return;
  exiting = true;
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`demo app: fatal: ${error instanceof Error ? error.stack : message}\n`);
  const exit = (): never => process.exit(1);
  setTimeout(exit, 1_000).unref();
  if (process.connected)
    process.send?.({ type: 'fatal', message } satisfies FromApp, undefined, undefined, exit);
  else exit();
}

/**
 * The error's `error.type`, as the package's telemetry labels it (SQLSTATE, errno, PGR_* code, or a
 * short class such as `connection_lost` for pg's message-only errors), so the summary and /metrics agree.
 */
function errorCode(error: unknown): string {
  return classifyError(error).errorType;
}

function readTargets(): TargetUrls {
  const raw = process.env[TARGETS_ENV];
  if (raw === undefined || raw === '') throw new Error(`${TARGETS_ENV} is not set (JSON of the target URLs)`);
  const parsed = JSON.parse(raw) as Partial<Record<keyof TargetUrls, unknown>>;
  for (const key of ['main', 'wait', 'queue', 'drop'] as const) {
    if (typeof parsed[key] !== 'string') throw new Error(`${TARGETS_ENV}.${key} must be a connection string`);
  }
  return parsed as TargetUrls;
}

/** pg-cursor (a devDependency of the repository), if installed. */
async function loadCursor(): Promise<CursorClass | undefined> {
  const name = 'pg-cursor'; // a variable: no types needed
  try {
    const ns = (await import(name)) as { default?: CursorClass };
    return ns.default ?? (ns as unknown as CursorClass);
  } catch {
    return undefined;
  }
}

async function retrying<T>(what: string, deadline: number, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() + RETRY_SLEEP_MS > deadline) {
        throw new Error(`${what} kept failing: ${errorCode(error)}: ${(error as Error)?.message}`, {
          cause: error,
        });
      }
      await sleep(RETRY_SLEEP_MS);
    }
  }
}

class App {
  /** The shop's pool (replaced on `retarget`). */
  private main: Pool;
  private readonly spike: Record<'wait' | 'queue' | 'drop', Pool>;
  /** Pools for `slow`, by statement_timeout: the main target, each connection with that timeout. */
  private readonly slowPools = new Map<number, Pool>();
  private readonly mix: readonly (readonly [MixKind, number])[];
  private readonly streams: Stream[];

  private workload: Workload | undefined;
  private verifying = false;
  private stopping = false;
  /** Calls in flight per stream group (each limited to maxInFlight). */
  private readonly inFlightBy = { shop: 0, spike: 0 };
  private rotation = 0;
  private lastTick = performance.now();
  private ticker: NodeJS.Timeout | undefined;
  private reporter: NodeJS.Timeout | undefined;
  private verifications: Promise<void> = Promise.resolve();

  private stats: Partial<Record<WorkKind, KindStats>> = {};
  /** Latencies seen per kind in this interval (for the uniform sample). */
  private seen = new Map<WorkKind, number>();
  private ledger: LedgerEntry[] = [];

  private targets: TargetUrls;
  private readonly Cursor: CursorClass | undefined;

  constructor(targets: TargetUrls, Cursor: CursorClass | undefined) {
    this.targets = targets;
    this.Cursor = Cursor;
    // Deliberately no 'error' listeners: the package must absorb the errors of idle clients.
    this.main = new pg.Pool({ connectionString: targets.main, max: 10 });
    this.spike = {
      wait: new pg.Pool({ connectionString: targets.wait, max: 4 }),
      queue: new pg.Pool({ connectionString: targets.queue, max: 4 }),
      drop: new pg.Pool({ connectionString: targets.drop, max: 4 }),
    };
    // Without pg-cursor its share goes to reads.
    this.mix = Cursor
      ? MIX
      : MIX.filter(([k]) => k !== 'cursor').map(([k, p]) => [k, k === 'read' ? p + 5 : p]);
    this.streams = [
      { rate: (w) => w.rate, issue: () => this.issueMix(), group: 'shop', credit: 0 },
      {
        rate: (w) => w.slowRate,
        issue: () => this.issue('slow', () => this.slow()),
        group: 'shop',
        credit: 0,
      },
      ...(['wait', 'queue', 'drop'] as const).map((strategy): Stream => ({
        rate: (w) => w.spikeRate,
        issue: () => this.issue(`spike_${strategy}`, () => this.spike[strategy].query('SELECT 1')),
        group: 'spike',
        credit: 0,
      })),
    ];
  }

  /** Creates and seeds the shop, retrying the whole of it for a while (it is idempotent). */
  seed(): Promise<TableCounts> {
    return retrying('creating and seeding the shop', Date.now() + SEED_TIMEOUT_MS, async () => {
      await createSchema(this.main);
      return seed(this.main);
    });
  }

  /** Moves the shop's pools to `url` (the old ones ended), then creates and seeds the shop there. */
  private async retarget(url: string): Promise<TableCounts> {
    const old = [this.main, ...this.slowPools.values()];
    this.slowPools.clear();
    this.targets = { ...this.targets, main: url };
    this.main = new pg.Pool({ connectionString: url, max: 10 });
    await Promise.race([Promise.allSettled(old.map((p) => p.end())), sleep(STOP_TIMEOUT_MS)]);
    return this.seed();
  }

  start(): void {
    this.lastTick = performance.now();
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.reporter = setInterval(() => this.report(), STATS_INTERVAL_MS);
  }

  onMessage(message: ToApp): void {
    if (this.stopping) return;
    switch (message.type) {
      case 'workload':
        this.workload = message.workload;
        return;
      case 'verify': {
        const { scenario } = message;
        this.workload = undefined;
        this.verifying = true;
        this.verifications = this.verifications
          .then(() => this.verify(scenario))
          .then((result) => send({ type: 'verified', result }))
          .finally(() => (this.verifying = false))
          .catch(fatal);
        return;
      }
      case 'retarget': {
        const { main } = message;
        this.workload = undefined;
        this.verifications = this.verifications
          .then(() => this.retarget(main))
          .then((seeded) => send({ type: 'retargeted', seeded }))
          .catch(fatal);
        return;
      }
      case 'stop':
        void this.stop();
        return;
      default:
        throw new Error(`unknown message from the orchestrator: ${JSON.stringify(message)}`);
    }
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.workload = undefined;
    clearInterval(this.ticker);
    clearInterval(this.reporter);
    const pools = [this.main, ...Object.values(this.spike), ...this.slowPools.values()];
    const ended = Promise.allSettled(pools.map((p) => p.end()));
    await Promise.race([ended, sleep(STOP_TIMEOUT_MS)]);
    process.exit(0);
  }

  // --- scheduling -------------------------------------------------------------------------------

  /** Issues the calls due since the last tick, round-robin across the streams, up to maxInFlight. */
  private tick(): void {
    try {
      const now = performance.now();
      const seconds = (now - this.lastTick) / 1000;
      this.lastTick = now;
      const w = this.workload;
      if (w === undefined || this.verifying || this.stopping) {
        for (const s of this.streams) s.credit = 0;
        return;
      }
      // A late tick (a busy event loop) must not turn into a burst: at most 100 ms worth carried.
      for (const s of this.streams) {
        const rate = Math.max(0, s.rate(w));
        s.credit = rate === 0 ? 0 : Math.min(s.credit + rate * seconds, Math.max(1, rate * 0.1));
      }
      const order = this.streams.map((_, i) => this.streams[(i + this.rotation) % this.streams.length]!);
      this.rotation = (this.rotation + 1) % this.streams.length;
      let issued = true;
      while (issued) {
        issued = false;
        for (const s of order) {
          if (s.credit < 1 || this.inFlightBy[s.group] >= w.maxInFlight) continue;
          s.credit -= 1;
          s.issue();
          issued = true;
        }
      }
      // Calls that could not start (at the in-flight limit) are skipped, not queued: one stays due.
      for (const s of this.streams) s.credit = Math.min(s.credit, 1);
    } catch (error) {
      fatal(error);
    }
  }

  private issueMix(): void {
    const total = this.mix.reduce((sum, [, share]) => sum + share, 0);
    let pick = Math.random() * total;
    let kind: MixKind = 'read';
    for (const [k, share] of this.mix) {
      kind = k;
      pick -= share;
      if (pick < 0) break;
    }
    switch (kind) {
      case 'read':
        return this.issue('read', () => this.read());
      case 'upsert':
        return this.issue('upsert', () => this.upsert());
      case 'insert':
        return this.issue('insert', () => this.insert());
      case 'transaction':
        return this.issue('transaction', () => this.transfer());
      case 'cursor':
        return this.issue('cursor', () => this.cursorRead());
    }
  }

  /** Starts one call: timed, its outcome counted, never a rejection left unhandled. */
  private issue(kind: WorkKind, call: () => Promise<unknown>): void {
    const group = kind.startsWith('spike_') ? 'spike' : 'shop';
    this.inFlightBy[group]++;
    const t0 = performance.now();
    let p: Promise<unknown>;
    try {
      p = call();
    } catch (error) {
      p = Promise.reject(error);
    }
    p.then(
      () => this.record(kind, t0, true, undefined),
      (error: unknown) => this.record(kind, t0, false, error),
    )
      .finally(() => this.inFlightBy[group]--)
      .catch(fatal);
  }

  // --- the calls --------------------------------------------------------------------------------

  /** A customer by primary key, or their last orders with an item count: read-only. */
  private read(): Promise<unknown> {
    const customer = randomInt(1, SEED.customers);
    const holdMs = this.workload?.readHoldMs ?? 0;
    if (holdMs > 0) {
      return this.main.query(
        'SELECT id, name, email, balance_cents, pg_sleep($2) FROM customers WHERE id = $1',
        [customer, holdMs / 1000],
      );
    }
    if (Math.random() < 0.5) {
      return this.main.query('SELECT id, name, email, balance_cents FROM customers WHERE id = $1', [
        customer,
      ]);
    }
    return this.main.query(
      `SELECT o.id, o.total_cents, o.created_at, count(i.id)::int AS items
       FROM orders AS o LEFT JOIN order_items AS i ON i.order_id = o.id
       WHERE o.customer_id = $1
       GROUP BY o.id ORDER BY o.created_at DESC LIMIT 5`,
      [customer],
    );
  }

  /** Sets a product's stock (sets, never increments: running it twice changes nothing). */
  private upsert(): Promise<unknown> {
    const id = randomInt(1, SEED.products);
    return this.main.query(
      idempotent({
        text: `INSERT INTO products (id, name, price_cents, stock) VALUES ($1, $2, $3, $4)
               ON CONFLICT (id) DO UPDATE SET stock = EXCLUDED.stock`,
        values: [id, `Product ${id}`, 100, randomInt(0, 1000)],
      }),
    );
  }

  /** A new order with a client-generated ref (not idempotent), recorded in the ledger. */
  private async insert(): Promise<void> {
    const entry: LedgerEntry = { ref: randomUUID(), state: 'pending' };
    this.ledger.push(entry);
    try {
      await this.main.query('INSERT INTO orders (ref, customer_id, total_cents) VALUES ($1, $2, $3)', [
        entry.ref,
        randomInt(1, SEED.customers),
        randomInt(100, 50_000),
      ]);
      entry.state = 'acknowledged';
    } catch (error) {
      entry.state = 'failed';
      throw error;
    }
  }

  /** Moves a small amount between two customers: the sum of the balances never changes. */
  private transfer(): Promise<void> {
    const from = randomInt(1, SEED.customers);
    let to = randomInt(1, SEED.customers - 1);
    if (to >= from) to++;
    const amount = randomInt(1, 100);
    return withTransaction(this.main, async (client: PoolClient) => {
      // Both rows locked in id order: two opposite transfers cannot deadlock.
      await client.query('SELECT id FROM customers WHERE id = ANY($1::int[]) ORDER BY id FOR UPDATE', [
        [from, to],
      ]);
      await client.query('UPDATE customers SET balance_cents = balance_cents - $1 WHERE id = $2', [
        amount,
        from,
      ]);
      await client.query('UPDATE customers SET balance_cents = balance_cents + $1 WHERE id = $2', [
        amount,
        to,
      ]);
    });
  }

  /** ~50 order items through pg-cursor on a checked-out client (a Submittable: never retried). */
  private async cursorRead(): Promise<void> {
    const Cursor = this.Cursor;
    if (Cursor === undefined) throw new Error('pg-cursor is not installed');
    const client = await this.main.connect();
    let failed = false;
    try {
      const cursor = client.query(
        new Cursor(
          `SELECT id, order_id, product_id, qty, price_cents FROM order_items
           WHERE order_id >= $1 ORDER BY order_id, id`,
          [randomInt(1, SEED.orders)],
        ),
      );
      await cursor.read(50);
      await cursor.close();
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      // After a failure the connection may be broken or mid-protocol: discard it.
      client.release(failed);
    }
  }

  /** A query slower than the statement_timeout of its connection (expects 57014). */
  private slow(): Promise<unknown> {
    const timeoutMs = Math.max(1, Math.round(this.workload?.slowTimeoutMs ?? 1_000));
    let pool = this.slowPools.get(timeoutMs);
    if (pool === undefined) {
      // The main target (same connection string: same breaker, rate limit, bulkhead), with the
      // timeout set for every statement of these connections only.
      pool = new pg.Pool({ connectionString: this.targets.main, max: 4, statement_timeout: timeoutMs });
      this.slowPools.set(timeoutMs, pool);
    }
    return pool.query('SELECT pg_sleep($1)', [(timeoutMs * 2) / 1000 + 0.5]);
  }

  // --- stats --------------------------------------------------------------------------------------

  private record(kind: WorkKind, t0: number, ok: boolean, error: unknown): void {
    const ms = Math.round((performance.now() - t0) * 10) / 10;
    const s = (this.stats[kind] ??= { ok: 0, failed: 0, errors: {}, latenciesMs: [] });
    if (ok) s.ok++;
    else {
      s.failed++;
      const code = errorCode(error);
      s.errors[code] = (s.errors[code] ?? 0) + 1;
    }
    const n = (this.seen.get(kind) ?? 0) + 1;
    this.seen.set(kind, n);
    if (s.latenciesMs.length < LATENCY_SAMPLES) s.latenciesMs.push(ms);
    else {
      const j = Math.floor(Math.random() * n);
      if (j < LATENCY_SAMPLES) s.latenciesMs[j] = ms;
    }
  }

  private report(): void {
    const kinds = this.stats;
    this.stats = {};
    this.seen = new Map();
    const active = this.workload !== undefined && !this.verifying;
    if (active || Object.keys(kinds).length > 0) send({ type: 'stats', at: Date.now(), kinds });
  }

  // --- verification ---------------------------------------------------------------------------------

  private async verify(scenario: string): Promise<Verification> {
    const settleBy = Date.now() + SETTLE_TIMEOUT_MS;
    while (this.inFlightBy.shop + this.inFlightBy.spike > 0 && Date.now() < settleBy) await sleep(20);
    // Inserts still in flight (past the cap) are checked with the next scenario, once they settle.
    const entries = this.ledger.filter((e) => e.state !== 'pending');
    this.ledger = this.ledger.filter((e) => e.state === 'pending');

    const deadline = Date.now() + VERIFY_TIMEOUT_MS;
    const copies = new Map<string, number>();
    for (let i = 0; i < entries.length; i += VERIFY_CHUNK) {
      const refs = entries.slice(i, i + VERIFY_CHUNK).map((e) => e.ref);
      const { rows } = await retrying('the ledger check', deadline, () =>
        this.main.query<{ ref: string; n: number }>(
          'SELECT ref::text AS ref, count(*)::int AS n FROM orders WHERE ref = ANY($1::uuid[]) GROUP BY ref',
          [refs],
        ),
      );
      for (const row of rows) copies.set(row.ref, row.n);
    }
    const { rows } = await retrying('the balance check', deadline, () =>
      this.main.query<{ total: string | null }>('SELECT sum(balance_cents)::text AS total FROM customers'),
    );
    const total = Number(rows[0]?.total ?? 0);

    let acknowledged = 0;
    let missing = 0;
    let duplicated = 0;
    let failedButPresent = 0;
    for (const e of entries) {
      const n = copies.get(e.ref) ?? 0;
      if (n > 1) duplicated++;
      if (e.state === 'acknowledged') {
        acknowledged++;
        if (n === 0) missing++;
      } else if (n > 0) failedButPresent++;
    }
    const balanceDrift = total - SEED_BALANCE_TOTAL_CENTS;
    return {
      scenario,
      acknowledged,
      missing,
      duplicated,
      failedButPresent,
      balanceDrift,
      ok: missing === 0 && duplicated === 0 && balanceDrift === 0,
    };
  }
}

async function main(): Promise<void> {
  if (typeof process.send !== 'function') {
    process.stderr.write('demo app: start it with the demo (`npm run demo`): it needs an IPC channel\n');
    process.exitCode = 2;
    return;
  }
  const targets = readTargets();
  const app = new App(targets, await loadCursor());
  process.on('message', (message: ToApp) => {
    try {
      app.onMessage(message);
    } catch (error) {
      fatal(error);
    }
  });
  process.on('disconnect', () => void app.stop());
  const seeded = await app.seed();
  send({ type: 'ready', seeded });
  app.start();
}

main().catch(fatal);
