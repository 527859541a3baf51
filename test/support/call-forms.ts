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
}

/** One observation per case name (or `{ caseFailed: … }` when the case itself threw). */
export type Report = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// observation helpers

const tick = (ms = 0) => new Promise<void>((resolve) => setTimeout(resolve, ms));

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
          timer = setTimeout(
            () => reject(new Error(`case timed out after ${CASE_TIMEOUT_MS} ms`)),
            CASE_TIMEOUT_MS,
          );
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

/** A one-line-per-case description of the differences, for assertion messages. */
export function formatDifferences(diffs: CaseDifference[]): string {
  return diffs
    .map(
      (d) =>
        `case "${d.name}" differs:\n  bare:    ${JSON.stringify(d.expected)}\n  loaded:  ${JSON.stringify(d.actual)}`,
    )
    .join('\n');
}
