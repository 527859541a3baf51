// The table of pg call forms: the spec of "every call form of pg behaves exactly as without the
// package". Each case runs on its own client or pool against a fresh schema (`ctx.schema`, holding a
// table `t(id int primary key, v text)` with rows 1 'a', 2 'b', 3 'c') and returns only deterministic
// observations: the kind of return value, rows/rowCount/command/fields, error name/code/message,
// callback argument shapes and call counts, event sequences. No timings, pids or ports.
//
// This file is self-contained (no imports from the repo) and receives pg, pg-cursor and
// pg-query-stream from its caller, so call-forms-runner.ts can run it from a scratch app where those
// resolve from the app's node_modules, the way a user's app loads them.
import { isDeepStrictEqual } from 'node:util';

export interface PgModules {
  pg: any;
  Cursor: any;
  QueryStream: any;
}

export interface CaseContext extends PgModules {
  connectionString: string;
  /** a fresh schema holding t(id int primary key, v text) = (1,'a'), (2,'b'), (3,'c') */
  schema: string;
}

export interface CallFormCase {
  name: string;
  run(ctx: CaseContext): Promise<unknown>;
  /** the case's time limit, when longer than CASE_TIMEOUT_MS */
  timeoutMs?: number;
}

/** One observation per case name (or `{ caseFailed: … }` when the case itself threw). */
export type Report = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// observation helpers

const tick = (ms = 0) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A promise class that is not the native one (pg-pool's and pg's `Promise` option, e.g. bluebird). */
class OtherPromise<T> implements PromiseLike<T> {
  #inner: Promise<T>;
  constructor(executor: (resolve: (v: T) => void, reject: (e: unknown) => void) => void) {
    this.#inner = new Promise(executor);
  }
  then<A = T, B = never>(
    onFulfilled?: ((v: T) => A | PromiseLike<A>) | null,
    onRejected?: ((e: unknown) => B | PromiseLike<B>) | null,
  ): OtherPromise<A | B> {
    const next = this.#inner.then(onFulfilled, onRejected);
    return new OtherPromise<A | B>((resolve, reject) => next.then(resolve, reject));
  }
  catch<B = never>(onRejected?: ((e: unknown) => B | PromiseLike<B>) | null): OtherPromise<T | B> {
    return this.then(undefined, onRejected);
  }
}

/** The kind of a value returned by a pg call. */
export function kindOf(value: unknown, submitted?: unknown): string {
  if (submitted !== undefined && value === submitted) return 'same-submittable';
  if (value === undefined) return 'undefined';
  if (value instanceof Promise) return 'promise';
  if (value !== null && typeof (value as { then?: unknown }).then === 'function') return 'thenable';
  return value === null ? 'null' : typeof value;
}

export function describeError(err: unknown): unknown {
  if (err === null || err === undefined) return err ?? null;
  if (typeof err !== 'object') return { notAnObject: typeof err, value: String(err) };
  const e = err as { name?: unknown; code?: unknown; message?: unknown; severity?: unknown };
  return {
    instanceofError: err instanceof Error,
    name: e.name,
    code: e.code ?? null,
    message: e.message,
    severity: e.severity ?? null,
  };
}

export function describeResult(res: any): unknown {
  if (Array.isArray(res)) return { array: res.map(describeResult) };
  if (res === null || typeof res !== 'object') return { notAResult: kindOf(res) };
  return {
    command: res.command,
    rowCount: res.rowCount,
    rows: res.rows,
    fields: (res.fields ?? []).map((f: any) => ({ name: f.name, dataTypeID: f.dataTypeID })),
    rowAsArray: res.rowAsArray ?? null,
  };
}

/** Runs a call that should reject; returns its settled shape. */
async function settle(p: unknown): Promise<unknown> {
  try {
    return { resolved: describeResult(await p) };
  } catch (err) {
    return { rejected: describeError(err) };
  }
}

/** A callback that records its calls; `done` resolves on the first call, `calls` counts later ones. */
function recorder(describe: (value: unknown) => unknown = describeResult) {
  const calls: unknown[][] = [];
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  const cb = (...args: unknown[]) => {
    calls.push(args);
    resolveDone();
  };
  /** waits for the first call, then a little longer to catch a second one */
  const settled = async (extraMs = 30) => {
    await done;
    await tick(extraMs);
    return {
      calls: calls.length,
      argCount: calls[0]?.length,
      err: describeError(calls[0]?.[0]),
      result: calls[0]?.[1] === undefined ? 'undefined' : describe(calls[0][1]),
    };
  };
  return { cb, settled };
}

function syncCall(fn: () => unknown): unknown {
  try {
    const value = fn();
    if (value instanceof Promise) value.catch(() => {});
    return { returned: kindOf(value) };
  } catch (err) {
    return { threw: describeError(err) };
  }
}

async function withClient<T>(ctx: CaseContext, fn: (client: any) => Promise<T>, config: object = {}) {
  const client = new ctx.pg.Client({ connectionString: ctx.connectionString, ...config });
  client.on('error', () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

async function withPool<T>(ctx: CaseContext, fn: (pool: any) => Promise<T>, config: object = {}) {
  const pool = new ctx.pg.Pool({ connectionString: ctx.connectionString, max: 2, ...config });
  pool.on('error', () => {});
  try {
    return await fn(pool);
  } finally {
    await pool.end().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// the cases

export const CASES: CallFormCase[] = [
  {
    name: 'client.query(text)',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const p = c.query(`SELECT id, v FROM ${ctx.schema}.t ORDER BY id`);
        return { kind: kindOf(p), result: describeResult(await p) };
      }),
  },
  {
    name: 'client.query(text, values)',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const p = c.query(`SELECT id, v FROM ${ctx.schema}.t WHERE id = $1`, [2]);
        return { kind: kindOf(p), result: describeResult(await p) };
      }),
  },
  {
    name: 'client.query(text, values, cb)',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const r = recorder();
        const ret = c.query(`SELECT $1::int AS n, $2::text AS s`, [7, 'x'], r.cb);
        return { kind: kindOf(ret), callback: await r.settled() };
      }),
  },
  {
    name: 'client.query(text, cb)',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const r = recorder();
        const ret = c.query(`SELECT count(*)::int AS n FROM ${ctx.schema}.t`, r.cb);
        return { kind: kindOf(ret), callback: await r.settled() };
      }),
  },
  {
    name: 'client.query({text, values})',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const p = c.query({ text: `SELECT v FROM ${ctx.schema}.t WHERE id > $1 ORDER BY id`, values: [1] });
        return { kind: kindOf(p), result: describeResult(await p) };
      }),
  },
  {
    name: "client.query({text, values, rowMode: 'array'})",
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const p = c.query({
          text: `SELECT id, v FROM ${ctx.schema}.t WHERE id <= $1 ORDER BY id`,
          values: [2],
          rowMode: 'array',
        });
        return { kind: kindOf(p), result: describeResult(await p) };
      }),
  },
  {
    name: 'client.query({name, text, values}) twice (prepared once)',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const text = `SELECT v FROM ${ctx.schema}.t WHERE id = $1`;
        const first = describeResult(await c.query({ name: 'cf_prepared', text, values: [1] }));
        const second = describeResult(await c.query({ name: 'cf_prepared', text, values: [3] }));
        const prepared = await c.query(
          `SELECT name, parameter_types::text[] AS types FROM pg_prepared_statements ORDER BY name`,
        );
        return { first, second, preparedOnServer: prepared.rows };
      }),
  },
  {
    name: 'client.query({name}) with different text under the same name',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        await c.query({ name: 'cf_clash', text: 'SELECT 1 AS n' });
        return settle(c.query({ name: 'cf_clash', text: 'SELECT 2 AS n' }));
      }),
  },
  {
    name: 'client.query({text, types}) custom type parser',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const types = {
          getTypeParser: (oid: number, format: string) =>
            oid === 23 ? (v: string) => `int:${v}` : ctx.pg.types.getTypeParser(oid, format),
        };
        const p = c.query({ text: `SELECT id, v FROM ${ctx.schema}.t WHERE id = 1`, types });
        return { kind: kindOf(p), result: describeResult(await p) };
      }),
  },
  {
    name: 'query_timeout (client config) with pg_sleep',
    run: (ctx) =>
      withClient(
        ctx,
        async (c) => {
          const p = c.query('SELECT pg_sleep(0.4)');
          return { kind: kindOf(p), settled: await settle(p) };
        },
        { query_timeout: 100 },
      ),
  },
  {
    name: 'query_timeout (query config) via callback',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const r = recorder();
        const ret = c.query({ text: 'SELECT pg_sleep(0.4)', query_timeout: 100 }, r.cb);
        return { kind: kindOf(ret), callback: await r.settled(450) };
      }),
  },
  {
    name: 'SQL syntax error (42601) via promise',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const p = c.query('SELEC 1');
        const settled = await settle(p);
        const after = describeResult(await c.query('SELECT 1 AS ok'));
        return { kind: kindOf(p), settled, after };
      }),
  },
  {
    name: 'unique violation (23505) via callback',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const r = recorder();
        const ret = c.query(`INSERT INTO ${ctx.schema}.t (id, v) VALUES ($1, $2)`, [1, 'dup'], r.cb);
        const callback = await r.settled();
        const rows = (await c.query(`SELECT id, v FROM ${ctx.schema}.t ORDER BY id`)).rows;
        return { kind: kindOf(ret), callback, rows };
      }),
  },
  {
    name: 'argument error: no text and no name (promise and callback)',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const promise = syncCall(() => c.query({}));
        const settled = await settle(c.query({ values: [1] }));
        const r = recorder();
        const cbRet = syncCall(() => c.query({}, r.cb));
        const callback = await r.settled();
        const after = describeResult(await c.query('SELECT 1 AS ok'));
        return { promise, settled, cbRet, callback, after };
      }),
  },
  {
    name: 'argument error: values not an array (promise and callback)',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const promise = syncCall(() => c.query({ text: 'SELECT $1::int', values: 5 }));
        const settled = await settle(c.query({ text: 'SELECT $1::int', values: 5 }));
        const r = recorder();
        const cbRet = syncCall(() => c.query({ text: 'SELECT $1::int', values: 'x' }, r.cb));
        const callback = await r.settled();
        const after = describeResult(await c.query('SELECT 1 AS ok'));
        return { promise, settled, cbRet, callback, after };
      }),
  },
  {
    name: 'synchronous throws: null/undefined query, non-function callback',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const nullQuery = syncCall(() => c.query(null));
        const undefinedQuery = syncCall(() => c.query(undefined));
        const notAFunction = syncCall(() => c.query('SELECT 1', [], 'not a function'));
        const objectCallback = syncCall(() => c.query({ text: 'SELECT 1', callback: 42 }));
        const after = describeResult(await c.query('SELECT 1 AS ok'));
        return { nullQuery, undefinedQuery, notAFunction, objectCallback, after };
      }),
  },
  {
    name: 'pg-cursor: read 2 then close',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const cursor = new ctx.Cursor(`SELECT id, v FROM ${ctx.schema}.t ORDER BY id`);
        const ret = c.query(cursor);
        const first = await cursor.read(2);
        const readCb = recorder((rows) => rows);
        cursor.read(1, readCb.cb);
        const second = await readCb.settled();
        await cursor.close();
        const after = describeResult(await c.query('SELECT 1 AS ok'));
        return { kind: kindOf(ret, cursor), first, second, after };
      }),
  },
  {
    name: 'pg-query-stream: rows via async iteration',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const qs = new ctx.QueryStream(`SELECT id, v FROM ${ctx.schema}.t ORDER BY id`, [], { batchSize: 2 });
        const ret = c.query(qs);
        const events: string[] = [];
        for (const e of ['end', 'close', 'error']) qs.on(e, () => events.push(e));
        const rows: unknown[] = [];
        for await (const row of qs) rows.push(row);
        await tick(10);
        return { kind: kindOf(ret, qs), rows, events };
      }),
  },
  {
    name: 'pool.query promise',
    run: (ctx) =>
      withPool(ctx, async (pool) => {
        const p = pool.query(`SELECT v FROM ${ctx.schema}.t WHERE id = $1`, [3]);
        const result = describeResult(await p);
        return { kind: kindOf(p), result, total: pool.totalCount, idle: pool.idleCount };
      }),
  },
  {
    name: "pool.query promise, the pool's Promise option another promise class",
    run: (ctx) =>
      withPool(
        ctx,
        async (pool) => {
          const p = pool.query(`SELECT v FROM ${ctx.schema}.t WHERE id = $1`, [3]);
          const isOther = p instanceof OtherPromise;
          const result = describeResult(await p);
          const failed = pool.query('SELECT 1/0');
          return {
            kind: kindOf(p),
            isOther,
            result,
            settled: await settle(failed),
            other: failed instanceof OtherPromise,
          };
        },
        { Promise: OtherPromise },
      ),
  },
  {
    name: 'pool.query callback',
    run: (ctx) =>
      withPool(ctx, async (pool) => {
        const r = recorder();
        const ret = pool.query(`SELECT v FROM ${ctx.schema}.t WHERE id = $1`, [2], r.cb);
        return { kind: kindOf(ret), callback: await r.settled() };
      }),
  },
  {
    name: 'pool.query SQL error (client destroyed)',
    run: (ctx) =>
      withPool(ctx, async (pool) => {
        await pool.query('SELECT 1');
        const before = pool.totalCount;
        const settled = await settle(pool.query('SELECT 1/0'));
        await tick(20);
        return { before, settled, total: pool.totalCount };
      }),
  },
  {
    name: 'pool.connect() promise + release()',
    run: (ctx) =>
      withPool(ctx, async (pool) => {
        const p = pool.connect();
        const client = await p;
        const during = { total: pool.totalCount, idle: pool.idleCount };
        const result = describeResult(await client.query('SELECT 1 AS n'));
        const released = syncCall(() => client.release());
        return { kind: kindOf(p), during, result, released, total: pool.totalCount, idle: pool.idleCount };
      }),
  },
  {
    name: 'pool.connect(cb) + done()',
    run: (ctx) =>
      withPool(ctx, async (pool) => {
        const seen: unknown[] = [];
        let resolve!: () => void;
        const finished = new Promise<void>((r) => (resolve = r));
        const ret = pool.connect((err: unknown, client: any, done: any) => {
          seen.push({ err: describeError(err), client: typeof client, done: typeof done });
          client.query('SELECT 2 AS n', (qerr: unknown, res: unknown) => {
            seen.push({ qerr: describeError(qerr), res: describeResult(res) });
            done();
            resolve();
          });
        });
        await finished;
        await tick(20);
        return { kind: kindOf(ret), seen, total: pool.totalCount, idle: pool.idleCount };
      }),
  },
  {
    name: 'release(err) destroys the client',
    run: (ctx) =>
      withPool(ctx, async (pool) => {
        const client = await pool.connect();
        const before = pool.totalCount;
        const events: string[] = [];
        pool.on('remove', () => events.push('remove'));
        client.release(new Error('broken'));
        await tick(30);
        return { before, after: pool.totalCount, idle: pool.idleCount, events };
      }),
  },
  {
    name: 'client.connect() promise and callback; second connect fails',
    run: async (ctx) => {
      const a = new ctx.pg.Client({ connectionString: ctx.connectionString });
      a.on('error', () => {});
      const p = a.connect();
      const promiseKind = kindOf(p);
      await p;
      const again = await settle(a.connect());
      await a.end();
      const b = new ctx.pg.Client({ connectionString: ctx.connectionString });
      b.on('error', () => {});
      const r = recorder((value) => (value === b ? 'the client' : kindOf(value)));
      const cbRet = b.connect(r.cb);
      const callback = await r.settled();
      const ok = describeResult(await b.query('SELECT 1 AS ok'));
      await b.end();
      return { promiseKind, again, callbackKind: kindOf(cbRet), callback, ok };
    },
  },
  {
    name: "'notice' event (RAISE NOTICE in DO)",
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const notices: unknown[] = [];
        c.on('notice', (n: any) => notices.push({ name: n.name, severity: n.severity, message: n.message }));
        const result = describeResult(
          await c.query(`DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$`),
        );
        return { result, notices };
      }),
  },
  {
    name: "'notification' event (LISTEN/NOTIFY round trip)",
    run: (ctx) =>
      withClient(ctx, async (listener) => {
        const got: unknown[] = [];
        let resolve!: () => void;
        const arrived = new Promise<void>((r) => (resolve = r));
        listener.on('notification', (n: any) => {
          got.push({ channel: n.channel, payload: n.payload, processId: typeof n.processId });
          resolve();
        });
        await listener.query('LISTEN cf_channel');
        await withClient(ctx, (sender) => sender.query(`SELECT pg_notify('cf_channel', 'payload-1')`));
        await arrived;
        await tick(20);
        return { got };
      }),
  },
  {
    name: "'end' event on client.end(), then query on the ended client",
    run: async (ctx) => {
      const c = new ctx.pg.Client({ connectionString: ctx.connectionString });
      const events: string[] = [];
      c.on('error', () => events.push('error'));
      c.on('end', () => events.push('end'));
      await c.connect();
      const p = c.end();
      const kind = kindOf(p);
      await p;
      events.push('end() resolved');
      await tick(10);
      const promise = await settle(c.query('SELECT 1'));
      const r = recorder();
      const cbRet = c.query('SELECT 1', r.cb);
      const callback = await r.settled();
      const endAgain = await settle(c.end());
      return { kind, events, promise, callbackKind: kindOf(cbRet), callback, endAgain };
    },
  },
  {
    name: 'transaction BEGIN / INSERT / ROLLBACK',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const seq: unknown[] = [];
        seq.push(describeResult(await c.query('BEGIN')));
        seq.push(describeResult(await c.query(`INSERT INTO ${ctx.schema}.t VALUES (10, 'x'), (11, 'y')`)));
        seq.push(describeResult(await c.query(`SELECT count(*)::int AS n FROM ${ctx.schema}.t`)));
        seq.push(await settle(c.query('SELEC broken')));
        seq.push(await settle(c.query('SELECT 1')));
        seq.push(describeResult(await c.query('ROLLBACK')));
        const rows = (await c.query(`SELECT id FROM ${ctx.schema}.t ORDER BY id`)).rows;
        return { seq, rows };
      }),
  },
  {
    name: 'multi-statement text',
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const p = c.query(`SELECT 1 AS a; SELECT 2 AS b; UPDATE ${ctx.schema}.t SET v = v WHERE id < 3`);
        const result = describeResult(await p);
        const withValues = await settle(c.query('SELECT $1::int; SELECT 2', [1]));
        return { kind: kindOf(p), result, withValues };
      }),
  },
  {
    // pg ≥ 8.22's pipeline mode (`new Client({ pipeline: true })`): several statements on the wire at
    // once, one failing in the middle. On a pg without it the option is ignored and the same calls run
    // one by one; the report says which (`pipeline`), so bare and patched runs still compare.
    name: 'pipeline mode: concurrent statements, one failing',
    run: (ctx) =>
      withClient(
        ctx,
        async (c) => {
          const calls = [
            c.query('SELECT 1 AS n'),
            c.query({ text: `SELECT v FROM ${ctx.schema}.t WHERE id = $1`, values: [2] }),
            c.query('SELECT 1/0'),
            c.query(`UPDATE ${ctx.schema}.t SET v = v WHERE id = 3`),
          ];
          return { pipeline: c.pipeline === true, results: await Promise.all(calls.map(settle)) };
        },
        { pipeline: true },
      ),
  },
  {
    name: 'queries queued before connect finishes',
    run: async (ctx) => {
      const c = new ctx.pg.Client({ connectionString: ctx.connectionString });
      c.on('error', () => {});
      const connected = c.connect();
      const a = c.query('SELECT 1 AS n');
      const b = c.query('SELECT 2 AS n');
      await connected;
      const results = [describeResult(await a), describeResult(await b)];
      await c.end();
      return { results };
    },
  },
];

// ---------------------------------------------------------------------------------------------
// semantics: async stack traces and malformed arguments
//
// Where a call's answer comes back (a synchronous throw, the callback, the returned promise, an
// uncaught exception, an unhandled rejection), how many times, and what the connection did afterwards
// ('drain', 'error', 'end' events; does the next statement still run). Every wait is bounded.

/** A rejection's stack names the app's async callers (pg ≥ 8.11 restores them on purpose). */
async function innerFunction(call: () => unknown): Promise<unknown> {
  return await (call() as Promise<unknown>);
}
async function outerFunction(call: () => unknown): Promise<unknown> {
  return await innerFunction(call);
}

/** How `call()` settled when awaited from two named async functions: and does its stack name them? */
async function stackOf(call: () => unknown): Promise<unknown> {
  try {
    return { resolved: describeResult(await outerFunction(call)) };
  } catch (err) {
    const stack = String((err as { stack?: unknown } | null)?.stack ?? '');
    return {
      rejected: describeError(err),
      callerFramesKept: stack.includes('innerFunction') && stack.includes('outerFunction'),
    };
  }
}

/** Resolves with `p`'s value, or `onTimeout` after `ms` (never leaves a case waiting forever). */
function within<T>(p: Promise<T>, ms: number, onTimeout: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<T>((resolve) => (timer = setTimeout(() => resolve(onTimeout), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * Every channel an answer can come back on: a synchronous throw or return, the callback (each call:
 * 'error' or 'result'), the returned promise, an uncaught exception, an unhandled rejection. Watched
 * until the first answer (at most `waitMs`), then `extraMs` more to catch a second one.
 */
async function channels(
  invoke: (cb: (...args: unknown[]) => void) => unknown,
  waitMs = 3000,
  extraMs = 60,
): Promise<unknown> {
  const callbacks: unknown[][] = [];
  const uncaught: unknown[] = [];
  const unhandled: unknown[] = [];
  let answered!: () => void;
  const firstAnswer = new Promise<void>((resolve) => (answered = resolve));
  const onUncaught = (err: unknown) => {
    uncaught.push(describeError(err));
    answered();
  };
  const onUnhandled = (err: unknown) => {
    unhandled.push(describeError(err));
    answered();
  };
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUnhandled);
  let sync: unknown;
  let promise: unknown = 'none';
  try {
    const ret = invoke((...args) => {
      callbacks.push(args);
      answered();
    });
    sync = { returned: kindOf(ret) };
    if (ret !== null && typeof (ret as { then?: unknown })?.then === 'function') {
      promise = 'pending';
      (ret as Promise<unknown>).then(
        (value) => {
          promise = { resolved: describeResult(value) };
          answered();
        },
        (err) => {
          promise = { rejected: describeError(err) };
          answered();
        },
      );
    }
  } catch (err) {
    sync = { threw: describeError(err) };
    answered();
  }
  await within(firstAnswer, waitMs, undefined);
  await tick(extraMs);
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUnhandled);
  return {
    sync,
    callbackCalls: callbacks.map((args) => (args[0] ? 'error' : 'result')),
    callbackErr: describeError(callbacks[0]?.[0]),
    promise,
    uncaught,
    unhandled,
  };
}

/** Counts of the events a pg Client or Pool emitted while a case ran. */
function eventCounter(emitter: any, names: string[]) {
  const counts: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
  for (const n of names) emitter.on(n, () => (counts[n] = (counts[n] ?? 0) + 1));
  return counts;
}

/** The malformed first (and second) arguments of a query call. */
const MALFORMED: Array<[string, () => unknown[]]> = [
  ['null', () => [null]],
  ['undefined', () => [undefined]],
  ['{}', () => [{}]],
  ['{ text: {} }', () => [{ text: {} }]],
  ['a number', () => [42]],
  ['an empty array', () => [[]]],
  ['an array of text', () => [['SELECT 1']]],
  ['values not an array', () => ['SELECT $1::int', 5]],
  [
    'a value whose toPostgres throws',
    () => [
      'SELECT $1::text',
      [
        {
          toPostgres() {
            throw new Error('toPostgres failed');
          },
        },
      ],
    ],
  ],
  [
    'a circular value',
    () => {
      const o: Record<string, unknown> = {};
      o.self = o;
      return ['SELECT $1::text', [o]];
    },
  ],
  [
    'a Submittable whose submit throws',
    () => [
      {
        submit() {
          throw new Error('submit failed');
        },
        handleError() {},
      },
    ],
  ],
];

/**
 * Each malformed argument in promise form and in callback form, then a string as the callback, on a
 * target that runs `query(...args)`; after each call, does the target still answer a statement?
 * `fresh()` gives a new target per call (a malformed call may leave a client stuck, as pg does), and
 * `dispose` closes it (bounded: a stuck client's socket is destroyed).
 */
async function malformedCalls<T>(
  fresh: () => Promise<T>,
  query: (target: T, args: unknown[]) => unknown,
  dispose: (target: T) => Promise<void>,
  emitterOf: (target: T) => any,
): Promise<unknown> {
  const out: Record<string, unknown> = {};
  const forms: Array<[string, (cb: (...args: unknown[]) => void) => unknown[]]> = [];
  for (const [label, args] of MALFORMED) {
    forms.push([`${label}, promise`, () => args()]);
    forms.push([`${label}, callback`, (cb) => [...args(), cb]]);
  }
  forms.push(['a string as the callback', () => ['SELECT 1', [], 'not a function']]);
  forms.push(['a string as the only callback', () => ['SELECT 1', 'not a function']]);
  for (const [label, argsFor] of forms) {
    const target = await fresh();
    const events = eventCounter(emitterOf(target), ['drain', 'error', 'end']);
    const seen = await channels((cb) => query(target, argsFor(cb)));
    const next = await within(
      Promise.resolve()
        .then(() => query(target, ['SELECT 1 AS ok']))
        .then(
          (r) => describeResult(r),
          (err) => ({ rejected: describeError(err) }),
        ),
      1500,
      'no answer within 1500 ms' as unknown,
    );
    await dispose(target);
    out[label] = { ...(seen as object), next, events: { ...events } };
  }
  return out;
}

async function connectedClient(ctx: CaseContext): Promise<any> {
  const c = new ctx.pg.Client({ connectionString: ctx.connectionString });
  c.on('error', () => {});
  await c.connect();
  return c;
}

/** end(), or the socket destroyed when end() does not finish (a client pg left stuck). */
async function endBounded(c: any): Promise<void> {
  const ended = await within(
    Promise.resolve(c.end()).then(
      () => true,
      () => true,
    ),
    500,
    false,
  );
  if (!ended) c.connection?.stream?.destroy?.();
}

const SEMANTIC_CASES: CallFormCase[] = [
  {
    name: 'async stack: await client.query() rejected (standalone client)',
    run: (ctx) => withClient(ctx, (c) => stackOf(() => c.query('SELECT test FROM nonexistent'))),
  },
  {
    name: 'async stack: await client.query() rejected (client from pool.connect())',
    run: (ctx) =>
      withPool(ctx, async (pool) => {
        const client = await pool.connect();
        try {
          return await stackOf(() => client.query('SELECT test FROM nonexistent'));
        } finally {
          client.release();
        }
      }),
  },
  {
    name: 'async stack: await pool.query() rejected',
    run: (ctx) => withPool(ctx, (pool) => stackOf(() => pool.query('SELECT test FROM nonexistent'))),
  },
  {
    name: 'async stack: await pool.connect() rejected (no such database)',
    run: (ctx) =>
      withPool(ctx, (pool) => stackOf(() => pool.connect()), {
        connectionString: ctx.connectionString.replace(/\/[^/?]*(\?|$)/, '/cf_no_such_db$1'),
      }),
  },
  {
    name: 'async stack: await pool.query() rejected at checkout (no such database)',
    run: (ctx) =>
      withPool(ctx, (pool) => stackOf(() => pool.query('SELECT 1')), {
        connectionString: ctx.connectionString.replace(/\/[^/?]*(\?|$)/, '/cf_no_such_db$1'),
      }),
  },
  {
    name: 'async stack: await client.connect() rejected (no such database)',
    run: async (ctx) => {
      const c = new ctx.pg.Client({
        connectionString: ctx.connectionString.replace(/\/[^/?]*(\?|$)/, '/cf_no_such_db$1'),
      });
      c.on('error', () => {});
      return stackOf(() => c.connect());
    },
  },
  {
    name: "malformed: client.query({ text: {} }, cb) then client.query({}, cb) ('drain')",
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const events = eventCounter(c, ['drain', 'error', 'end']);
        const first = recorder();
        c.query({ text: {} }, first.cb);
        const second = recorder();
        c.query({}, second.cb);
        const settled = await Promise.all(
          [first, second].map((r) => within(r.settled(), 500, 'not called within 500 ms' as unknown)),
        );
        return { first: settled[0], second: settled[1], events: { ...events } };
      }),
  },
  {
    // The order matters: pg calls the first callback in its own tick, before it looks at its queue again,
    // so a statement issued from that callback is queued first and 'drain' comes once, after both.
    name: "malformed: client.query({}, cb) issued from client.query({ text: {} }, cb)'s callback (event order)",
    run: (ctx) =>
      withClient(ctx, async (c) => {
        const order: string[] = [];
        c.on('drain', () => order.push('drain'));
        const both = new Promise<void>((resolve) => {
          c.query({ text: {} }, (err: Error | null) => {
            order.push(`first: ${err?.message ?? 'no error'}`);
            c.query({}, (err2: Error | null) => {
              order.push(`second: ${err2?.message ?? 'no error'}`);
              resolve();
            });
          });
        });
        await within(both, 500, undefined);
        await tick(50);
        const rows = await within(
          c.query('SELECT 1 AS n').then((r: any) => r.rows),
          1000,
          'no answer' as unknown,
        );
        return { order, nextStatement: rows };
      }),
  },
  {
    name: 'malformed arguments: standalone client.query',
    timeoutMs: 40_000,
    run: (ctx) =>
      malformedCalls(
        () => connectedClient(ctx),
        (c, args) => c.query(...args),
        endBounded,
        (c) => c,
      ),
  },
  {
    name: 'malformed arguments: client.query on a client from pool.connect()',
    timeoutMs: 40_000,
    run: (ctx) =>
      malformedCalls(
        async () => {
          const pool = new ctx.pg.Pool({ connectionString: ctx.connectionString, max: 1 });
          pool.on('error', () => {});
          const client = await pool.connect();
          return { pool, client };
        },
        (t, args) => t.client.query(...args),
        async (t) => {
          try {
            t.client.release(true);
          } catch {
            // released already
          }
          await endPoolBounded(t.pool);
        },
        (t) => t.client,
      ),
  },
  {
    name: 'malformed arguments: pool.query',
    timeoutMs: 40_000,
    run: (ctx) =>
      malformedCalls(
        async () => {
          const pool = new ctx.pg.Pool({ connectionString: ctx.connectionString, max: 1 });
          pool.on('error', () => {});
          return pool;
        },
        (pool, args) => pool.query(...args),
        endPoolBounded,
        (pool) => pool,
      ),
  },
];

/** pool.end(), and every socket of the pool destroyed when it does not finish (a client left stuck). */
async function endPoolBounded(pool: any): Promise<void> {
  const clients: any[] = [...(pool._clients ?? [])];
  const ended = await within(
    Promise.resolve(pool.end()).then(
      () => true,
      () => true,
    ),
    500,
    false,
  );
  if (!ended) for (const c of clients) c.connection?.stream?.destroy?.();
}

CASES.push(...SEMANTIC_CASES);

// ---------------------------------------------------------------------------------------------
// runner and comparator

const CASE_TIMEOUT_MS = 5000;

function schemaName(index: number): string {
  return `cf_case_${index}`;
}

async function adminSql(mods: PgModules, connectionString: string, sql: string): Promise<void> {
  const c = new mods.pg.Client({ connectionString });
  c.on('error', () => {});
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** Runs every case (or those named in `only`) in order; each gets a fresh schema. */
export async function runCases(mods: PgModules, connectionString: string, only?: string[]): Promise<Report> {
  const report: Report = {};
  for (const [i, c] of CASES.entries()) {
    if (only && !only.includes(c.name)) continue;
    const schema = schemaName(i);
    await adminSql(
      mods,
      connectionString,
      `DROP SCHEMA IF EXISTS ${schema} CASCADE; CREATE SCHEMA ${schema};
       CREATE TABLE ${schema}.t (id int PRIMARY KEY, v text);
       INSERT INTO ${schema}.t VALUES (1, 'a'), (2, 'b'), (3, 'c');`,
    );
    let timer: NodeJS.Timeout | undefined;
    try {
      report[c.name] = await Promise.race([
        c.run({ ...mods, connectionString, schema }),
        new Promise((_, reject) => {
          const ms = c.timeoutMs ?? CASE_TIMEOUT_MS;
          timer = setTimeout(() => reject(new Error(`case timed out after ${ms} ms`)), ms);
        }),
      ]);
    } catch (err) {
      report[c.name] = { caseFailed: describeError(err) };
    } finally {
      clearTimeout(timer);
    }
    await adminSql(mods, connectionString, `DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  }
  // the JSON round trip drops undefined and normalises what the child's report would be
  return JSON.parse(JSON.stringify(report)) as Report;
}

export interface CaseDifference {
  name: string;
  expected: unknown;
  actual: unknown;
}

/** The cases whose observations differ (a case missing on one side counts as different). */
export function diffReports(expected: Report, actual: Report): CaseDifference[] {
  const names = [...new Set([...Object.keys(expected), ...Object.keys(actual)])];
  return names
    .filter((name) => !isDeepStrictEqual(expected[name], actual[name]))
    .map((name) => ({ name, expected: expected[name], actual: actual[name] }));
}

/**
 * The package's deliberate differences from pg in this table (docs/compatibility.md), applied to a bare
 * report to give what the package must produce: where pg calls a query callback twice for one failed
 * query, first with the error and then with a result (pg 8.0.3 and 8.23 when a value cannot be
 * serialised: they report the error, then complete the query anyway), the package calls it once, with
 * the error. Only that exact shape (`callbackCalls: ['error', 'result']`) is mapped; the entries touched
 * are named.
 */
export function expectedWithPackage(bare: Report): { report: Report; touched: string[] } {
  const touched = new Set<string>();
  const walk = (value: unknown, name: string): unknown => {
    if (Array.isArray(value)) return value.map((v) => walk(v, name));
    if (value === null || typeof value !== 'object') return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = walk(v, name);
    if (isDeepStrictEqual(out.callbackCalls, ['error', 'result'])) {
      out.callbackCalls = ['error'];
      touched.add(name);
    }
    return out;
  };
  const report: Report = {};
  for (const [name, value] of Object.entries(bare)) report[name] = walk(value, name);
  return { report, touched: [...touched] };
}

/** A one-line-per-case description of the differences, for assertion messages. */
export function formatDifferences(diffs: CaseDifference[]): string {
  return diffs
    .map(
      (d) =>
        `case "${d.name}" differs:\n  bare:    ${JSON.stringify(d.expected)}\n  loaded:  ${JSON.stringify(d.actual)}`,
    )
    .join('\n');
}
