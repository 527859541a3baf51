// The chaos app: a child process, copied into a scratch app (as app.mts) where the packed
// pg-resilience, pg, pg-cursor and pg-query-stream are installed, and started by the test with
// `node --expose-gc --import pg-resilience/register app.mts` (arm "pg-resilience") or
// `node --expose-gc app.mts` (arm "bare": the same app, plain pg).
//
// Like a plain app, its pools have NO 'error' listener (absorbing the errors of idle and checked-out
// clients is the package's job; in the bare arm the crash is the observed outcome). The LISTEN client
// has its own listeners, as any listener needs them to know when to reconnect.
//
// Workers of each kind loop: an operation, then a think time. Every operation is tracked from its
// start (in flight, with its start time) to its end (success, or its error code) and reported to the
// parent over IPC in batches. The parent owns the checks; the app only reports what it saw.
// Fatal events (uncaught exception, unhandled rejection) are written synchronously to stderr as a
// `CHAOS-FATAL {json}` line before Node's default handling kills the process.
import { writeSync } from 'node:fs';
import pg from 'pg';
import type { Pool, PoolClient } from 'pg';
import type { AppConfig, BreakerSample, FromApp, InFlight, OpKind, OpRecord, ToApp } from './protocol.ts';

/** What the app uses of pg-resilience (loaded only in the pg-resilience arm). */
interface PgResilience {
  idempotent<T>(query: T): T;
  withTransaction<T>(
    pool: Pool,
    fn: (client: PoolClient) => Promise<T>,
    options?: { isolationLevel?: string },
  ): Promise<T>;
  getResilienceState(): {
    targets: Array<{
      target: string;
      circuit: { state: string };
      rateLimit: { queueSize: number } | null;
      counters: { retries: number; rejections: number; timeouts: number };
    }>;
  };
}

interface Cursor {
  read(rows: number): Promise<unknown[]>;
  close(): Promise<void>;
}
type CursorClass = new (text: string, values?: unknown[]) => Cursor;
type QueryStreamClass = new (
  text: string,
  values?: unknown[],
  options?: { batchSize?: number },
) => AsyncIterable<unknown>;

process.on('uncaughtExceptionMonitor', (error: unknown, origin: string) => {
  const e = error as { name?: unknown; message?: unknown; code?: unknown; stack?: unknown } | null;
  const line = JSON.stringify({
    origin,
    name: String(e?.name ?? typeof error),
    message: String(e?.message ?? error),
    code: e?.code === undefined ? undefined : String(e.code),
    stack: String(e?.stack ?? '')
      .split('\n')
      .slice(0, 8)
      .join('\n'),
  });
  try {
    writeSync(2, `CHAOS-FATAL ${line}\n`);
  } catch {
    // stderr closed: nothing else to do
  }
});

const cfg = JSON.parse(process.env.CHAOS_APP_CONFIG ?? '{}') as AppConfig;
const pkgName = 'pg-resilience'; // a variable: the type checker of the repo does not resolve it
const pgr: PgResilience | undefined =
  cfg.arm === 'pg-resilience' ? ((await import(pkgName)) as PgResilience) : undefined;
// variables: pg-cursor ships no types
const cursorName = 'pg-cursor';
const streamName = 'pg-query-stream';
const Cursor = ((await import(cursorName)) as { default: CursorClass }).default;
const QueryStream = ((await import(streamName)) as { default: QueryStreamClass }).default;

/** mulberry32, seeded per arm and generation: the app's choices (accounts, amounts) are replayable. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(cfg.seed * 31 + cfg.generation * 7919 + (cfg.arm === 'bare' ? 1 : 0));
const randomInt = (min: number, max: number): number => min + Math.floor(random() * (max - min + 1));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function send(message: FromApp): void {
  if (process.connected) process.send?.(message, undefined, undefined, () => {});
}

/** SQLSTATE / errno / PGR_* code, else a short name for pg's message-only errors. */
function errorCode(error: unknown): string {
  const e = error as { code?: unknown; message?: unknown } | null;
  if (e && typeof e.code === 'string' && e.code) return e.code;
  const message = e && typeof e.message === 'string' ? e.message : String(error);
  if (/Connection terminated unexpectedly/i.test(message)) return 'connection_terminated';
  if (/Connection terminated/i.test(message)) return 'connection_terminated';
  if (/timeout exceeded when trying to connect/i.test(message)) return 'pool_connect_timeout';
  if (/timeout expired/i.test(message)) return 'connect_timeout';
  if (/Query read timeout/i.test(message)) return 'query_read_timeout';
  if (/Client has encountered a connection error/i.test(message)) return 'client_unusable';
  if (/not queryable/i.test(message)) return 'client_unusable';
  return message.slice(0, 60);
}

const pool: Pool = new pg.Pool({
  connectionString: cfg.connectionString,
  max: cfg.poolMax,
  connectionTimeoutMillis: cfg.connectionTimeoutMs,
  statement_timeout: cfg.statementTimeoutMs,
  maxUses: cfg.maxUses,
  idleTimeoutMillis: 5_000,
  application_name: `chaos-${cfg.arm}`,
});
// Deliberately no pool.on('error'): see the file comment.

/**
 * The cancel lane's pool, straight to the server (no proxy fault can keep its statements from reaching
 * it): no server statement_timeout (it would stop the statements first), so what
 * stops them is the package's timeout.queryMs, which cancels them on the server (arm pg-resilience), or
 * pg's query_timeout, which a bare-pg user would set (arm bare: the statement runs on).
 */
const cancelPool: Pool = new pg.Pool({
  connectionString: cfg.cancelConnectionString,
  max: 4,
  connectionTimeoutMillis: cfg.connectionTimeoutMs,
  idleTimeoutMillis: 5_000,
  application_name: `chaos-${cfg.arm}-cancel`,
  ...(pgr ? {} : { query_timeout: cfg.cancelQueryTimeoutMs }),
});

// --- tracking ---------------------------------------------------------------------------------------

const inFlight = new Map<number, InFlight>();
let nextOpId = 0;
let buffered: OpRecord[] = [];
let notified: string[] = [];

async function track(kind: OpKind, fn: (rec: Partial<OpRecord>) => Promise<void>): Promise<void> {
  const id = nextOpId++;
  const t0 = Date.now();
  const rec: Partial<OpRecord> = {};
  const entry: InFlight = { kind, t0 };
  inFlight.set(id, entry);
  // the key, once the operation chose it, is visible in the in-flight list too
  Object.defineProperty(rec, 'key', {
    enumerable: true,
    configurable: true,
    get: () => entry.key,
    set: (key: string) => (entry.key = key),
  });
  try {
    await fn(rec);
    buffered.push({ ...rec, kind, t0, t1: Date.now(), ok: true });
  } catch (error) {
    buffered.push({ ...rec, kind, t0, t1: Date.now(), ok: false, code: errorCode(error) });
  } finally {
    inFlight.delete(id);
  }
}

function flush(): void {
  if (buffered.length > 0) {
    send({ type: 'ops', ops: buffered });
    buffered = [];
  }
  if (notified.length > 0) {
    send({ type: 'notified', payloads: notified, at: Date.now() });
    notified = [];
  }
}
const flusher = setInterval(flush, 200);

// --- the operations ---------------------------------------------------------------------------------

const keyOf = (w: number, seq: number): string => `${cfg.arm}-g${cfg.generation}-w${w}-${seq}`;

/**
 * The package's timeout (timeout.queryMs) does not apply to Submittables (pg-cursor, pg-query-stream) on
 * pooled clients, nor does pg's, usefully: a read whose request a blackholed network swallowed waits
 * forever. So the app bounds each cursor read / close and each whole stream itself; on expiry the
 * client is released with the error, which closes its connection. The bound must stay below the
 * recovery target (check 4b, 5 s): a cursor that started inside a blackhole holds its worker until the
 * bound, so with 10 s a seed whose last fault was a blackhole failed 4b (seed 40535341: first cursor
 * success 7 s after the faults). A whole read is ~70 ms here, ~2 s under the latency fault.
 */
const SUBMITTABLE_TIMEOUT_MS = 4_000;
function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  p.catch(() => {}); // the loser of the race must not become an unhandled rejection
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new Error(`${what} timed out after ${ms} ms`) as Error & { code: string };
      error.code = 'app_submittable_timeout';
      reject(error);
    }, ms);
  });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}

const ops: Record<
  Exclude<OpKind, 'listen' | 'slow' | 'cancel'>,
  (w: number, seq: number, rec: Partial<OpRecord>) => Promise<void>
> = {
  /** a pooled read by primary key (read-only: the package may retry it) */
  async read() {
    await pool.query('SELECT id, balance FROM chaos_accounts WHERE id = $1', [randomInt(1, cfg.accounts)]);
  },

  /** sets a key owned by this worker to an increasing version: idempotent */
  async upsert(w, seq, rec) {
    const k = w * cfg.upsertKeysPerWorker + (seq % cfg.upsertKeysPerWorker);
    const v = cfg.generation * 1_000_000 + seq;
    rec.key = `${k}:${v}`;
    const query = {
      text: 'INSERT INTO chaos_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v',
      values: [k, v],
    };
    await pool.query(pgr ? pgr.idempotent(query) : query);
  },

  /** a unique key into a table with no unique constraint: not idempotent */
  async insert(w, seq, rec) {
    rec.key = keyOf(w, seq);
    await pool.query('INSERT INTO chaos_events (key, worker) VALUES ($1, $2)', [rec.key, w]);
  },

  /** moves an amount between two accounts; the transfer id is recorded inside the transaction */
  async transfer(w, seq, rec) {
    const from = randomInt(1, cfg.accounts);
    let to = randomInt(1, cfg.accounts - 1);
    if (to >= from) to++;
    const amount = randomInt(1, 50);
    const tid = keyOf(w, seq);
    rec.key = tid;
    const body = async (client: PoolClient): Promise<void> => {
      await client.query('SELECT id FROM chaos_accounts WHERE id = ANY($1::int[]) ORDER BY id FOR UPDATE', [
        [from, to],
      ]);
      await client.query('UPDATE chaos_accounts SET balance = balance - $1 WHERE id = $2', [amount, from]);
      await client.query('UPDATE chaos_accounts SET balance = balance + $1 WHERE id = $2', [amount, to]);
      await client.query(
        'INSERT INTO chaos_transfers (tid, from_id, to_id, amount) VALUES ($1, $2, $3, $4)',
        [tid, from, to, amount],
      );
    };
    if (pgr) {
      await pgr.withTransaction(pool, body, { isolationLevel: 'repeatable read' });
      return;
    }
    // bare pg: the usual hand-written transaction, no retry
    const client = await pool.connect();
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await body(client);
      await client.query('COMMIT');
      client.release();
    } catch (error) {
      client.release(error as Error); // destroys the connection: the server rolls back
      throw error;
    }
  },

  /** pg-cursor on a pooled client: reads the whole static table in batches */
  async cursor(_w, _seq, rec) {
    const client = await pool.connect();
    try {
      const cursor = client.query(
        new Cursor('SELECT id, payload FROM chaos_static ORDER BY id') as never,
      ) as unknown as Cursor;
      let rows = 0;
      for (;;) {
        const batch = await deadline(cursor.read(250), SUBMITTABLE_TIMEOUT_MS, 'cursor read');
        if (batch.length === 0) break;
        rows += batch.length;
      }
      rec.rows = rows;
      await deadline(cursor.close(), SUBMITTABLE_TIMEOUT_MS, 'cursor close');
      client.release();
    } catch (error) {
      client.release(error as Error);
      throw error;
    }
  },

  /**
   * pg-query-stream on a pooled client. When the connection dies mid-stream, pg-query-stream's
   * destroy() waits in pg-cursor's close() for a ReadyForQuery that never comes, so the stream never
   * errors nor ends (node-postgres #2642, #2588; with or without pg-resilience). The app does what a
   * careful user must: it races the stream against the client's 'end'.
   */
  async stream(_w, _seq, rec) {
    const client = await pool.connect();
    let onEnd: () => void = () => {};
    const connectionLost = new Promise<never>((_, reject) => {
      onEnd = () => reject(new Error('Connection terminated during a pg-query-stream read'));
      client.once('end', onEnd);
    });
    connectionLost.catch(() => {});
    try {
      const stream = client.query(
        new QueryStream('SELECT id, payload FROM chaos_static ORDER BY id', [], { batchSize: 200 }) as never,
      ) as unknown as AsyncIterable<unknown>;
      let rows = 0;
      const consume = async () => {
        for await (const _row of stream) rows++;
      };
      await deadline(Promise.race([consume(), connectionLost]), SUBMITTABLE_TIMEOUT_MS, 'stream');
      rec.rows = rows;
      client.removeListener('end', onEnd);
      client.release();
    } catch (error) {
      client.removeListener('end', onEnd);
      client.release(error as Error);
      throw error;
    }
  },

  /** NOTIFY through the pool; the listener counts what arrives */
  async notify(w, seq, rec) {
    rec.key = keyOf(w, seq);
    await pool.query("SELECT pg_notify('chaos_ch', $1)", [rec.key]);
  },
};

// --- workers ----------------------------------------------------------------------------------------

let running = false;
let paused = false;
let stopping = false;
let resume: (() => void) | undefined;
let resumed = Promise.resolve();
const workers: Promise<void>[] = [];

async function worker(kind: keyof typeof ops, w: number): Promise<void> {
  let seq = 0;
  while (!stopping) {
    if (paused) {
      await resumed;
      continue;
    }
    const n = seq++;
    await track(kind, (rec) => ops[kind](w, n, rec));
    const [min, max] = cfg.thinkMs;
    await sleep(randomInt(min, max));
  }
}

let storm = false;
async function stormWorker(): Promise<void> {
  while (storm && !stopping) {
    await track('slow', async () => {
      await pool.query('SELECT pg_sleep($1)', [cfg.stormSleepMs / 1000]);
    });
  }
}

let bursts = 0;
/** The cancel lane: `n` statements at once that outlast the timeout; each key is in its SQL text. */
async function cancelBurst(n: number): Promise<void> {
  const burst = bursts++;
  const keys: string[] = [];
  const codes: string[] = [];
  let cancelled = 0;
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      track('cancel', async (rec) => {
        const key = `${cfg.arm}-g${cfg.generation}-c${burst}-${i}`;
        rec.key = key;
        keys.push(key);
        try {
          await cancelPool.query(`SELECT pg_sleep($1) /* chaos-cancel ${key} */`, [cfg.cancelSleepMs / 1000]);
          codes.push('ok');
        } catch (error) {
          codes.push(errorCode(error));
          if ((error as { cancelled?: unknown }).cancelled === true) {
            rec.cancelled = true;
            cancelled++;
          }
          throw error;
        }
      }),
    ),
  );
  flush();
  send({ type: 'cancel-burst', keys, cancelled, codes });
}

// --- the listener: LISTEN on its own client, reconnecting (and re-listening) whenever it dies --------

let listener: InstanceType<typeof pg.Client> | undefined;
async function listenLoop(): Promise<void> {
  while (!stopping) {
    const client = new pg.Client({
      connectionString: cfg.connectionString,
      connectionTimeoutMillis: cfg.connectionTimeoutMs,
      query_timeout: 3_000,
      application_name: `chaos-${cfg.arm}-listener`,
    });
    let died: () => void = () => {};
    const dead = new Promise<void>((resolve) => (died = resolve));
    client.on('error', () => died());
    client.on('end', () => died());
    client.on('notification', (m: { payload?: string }) => {
      if (m.payload !== undefined) notified.push(m.payload);
    });
    listener = client;
    let ok = false;
    await track('listen', async () => {
      await client.connect();
      await client.query('LISTEN chaos_ch');
      ok = true;
    });
    if (ok) {
      send({ type: 'listening', at: Date.now() });
      // A heartbeat: a connection that went silent (a blackhole) is noticed and replaced.
      let alive = true;
      void dead.then(() => (alive = false));
      while (alive && !stopping) {
        await Promise.race([dead, sleep(1_000)]);
        if (!alive || stopping) break;
        try {
          await client.query('SELECT 1');
        } catch {
          alive = false;
        }
      }
    }
    await Promise.race([client.end().catch(() => {}), sleep(1_000)]);
    if (!stopping) await sleep(200);
  }
}

// --- state, memory, stop ----------------------------------------------------------------------------

function breakers(): BreakerSample[] | null {
  if (!pgr) return null;
  return pgr.getResilienceState().targets.map((t) => ({
    target: t.target,
    state: t.circuit.state,
    rateLimitQueue: t.rateLimit ? t.rateLimit.queueSize : null,
    retries: t.counters.retries,
    rejections: t.counters.rejections,
    timeouts: t.counters.timeouts,
  }));
}

async function waitIdle(timeoutMs: number): Promise<InFlight[]> {
  const deadline = Date.now() + timeoutMs;
  const workerOps = () => [...inFlight.values()].filter((o) => o.kind !== 'listen');
  while (workerOps().length > 0 && Date.now() < deadline) await sleep(20);
  return workerOps();
}

async function gcTwice(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Diagnostics for the app log: every pool client not idle at stop (what it is doing). */
function describeHeldClients(): void {
  const p = pool as unknown as { _clients?: unknown[]; _idle?: Array<{ client: unknown }> };
  const idle = new Set((p._idle ?? []).map((i) => i.client));
  for (const c of p._clients ?? []) {
    if (idle.has(c)) continue;
    const x = c as {
      activeQuery?: { text?: unknown; constructor?: { name?: string } } | null;
      queryQueue?: unknown[];
      _connected?: boolean;
      _connecting?: boolean;
      _ending?: boolean;
      _queryable?: boolean;
      connection?: { stream?: { destroyed?: boolean; readyState?: string } };
    };
    process.stderr.write(
      `HELD CLIENT ${JSON.stringify({
        active: x.activeQuery
          ? `${x.activeQuery.constructor?.name}: ${String(x.activeQuery.text).slice(0, 60)}`
          : null,
        queued: x.queryQueue?.length,
        connected: x._connected,
        connecting: x._connecting,
        ending: x._ending,
        queryable: x._queryable,
        stream: x.connection?.stream
          ? `${x.connection.stream.readyState} destroyed=${x.connection.stream.destroyed}`
          : null,
      })}\n`,
    );
  }
}

async function stop(timeoutMs: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  storm = false;
  paused = false;
  resume?.();
  const left = await waitIdle(timeoutMs);
  flush();
  clearInterval(flusher);
  send({ type: 'stopped', inFlight: left });
  describeHeldClients();
  await Promise.race([Promise.allSettled([pool.end(), cancelPool.end(), listener?.end()]), sleep(3_000)]);
  // No process.exit(): the app must end by itself once its pools are closed (exit code 0).
  process.disconnect?.();
}

process.on('message', (message: ToApp) => {
  switch (message.type) {
    case 'run': {
      if (running) {
        paused = false;
        resume?.();
        return;
      }
      running = true;
      for (const [kind, n] of Object.entries(cfg.workers) as [OpKind, number][]) {
        if (kind === 'listen' || kind === 'slow' || kind === 'cancel') continue;
        for (let w = 0; w < n; w++) workers.push(worker(kind, w));
      }
      void listenLoop();
      return;
    }
    case 'pause': {
      paused = true;
      resumed = new Promise<void>((resolve) => (resume = resolve));
      void waitIdle(message.timeoutMs).then((left) => {
        flush();
        send({ type: 'idle', inFlight: left });
      });
      return;
    }
    case 'storm': {
      const was = storm;
      storm = message.on;
      if (storm && !was) for (let i = 0; i < cfg.stormWorkers; i++) void stormWorker();
      return;
    }
    case 'cancel-burst':
      void cancelBurst(message.statements);
      return;
    case 'memory': {
      void gcTwice().then(() => {
        const m = process.memoryUsage();
        send({ type: 'memory', heapUsed: m.heapUsed, rss: m.rss });
      });
      return;
    }
    case 'state':
      send({
        type: 'state',
        at: Date.now(),
        breakers: breakers(),
        inFlight: [...inFlight.values()],
        pool: { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount },
      });
      return;
    case 'probe-notify': {
      pool.query("SELECT pg_notify('chaos_ch', $1)", [message.payload]).then(
        () => send({ type: 'probe-notify', ok: true }),
        (error: unknown) => send({ type: 'probe-notify', ok: false, code: errorCode(error) }),
      );
      return;
    }
    case 'stop':
      void stop(message.timeoutMs);
      return;
  }
});
process.on('disconnect', () => void stop(5_000));

send({ type: 'ready', pid: process.pid });
