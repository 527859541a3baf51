// Substitute connections (docs/retry-safety.md): a read (or idempotent statement) whose connection died
// under it runs again on a new connection set up like the dead one, against a real PostgreSQL behind
// the fault proxy, which resets the connection while the statement is on the wire. Each test asserts
// what the app sees (rows, errors), what the dead client does next, what the server holds, and why a
// substitute was or was not used (the policy's retry and suppressed events).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { RetryEvent, RetrySuppressedEvent } from '../../src/policy/events.ts';
import type { FaultProxy as FaultProxyType } from '../support/fault-proxy.ts';
import type { TestServer } from '../support/postgres.ts';

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  retry: { maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 20, budget: { enabled: false } },
  circuitBreaker: { enabled: false },
  recovery: { enabled: false },
});
const { startServer } = await import('../support/postgres.ts');
const { FaultProxy } = await import('../support/fault-proxy.ts');
// PG_RESILIENCE_TEST_PG_DIR: run against the pg installed in that directory (an older pg 8.x).
const requirePg = createRequire(
  process.env.PG_RESILIENCE_TEST_PG_DIR
    ? `${process.env.PG_RESILIENCE_TEST_PG_DIR}/package.json`
    : import.meta.url,
);
const pg = requirePg('pg') as typeof import('pg');
const { idempotent } = await import('../../src/index.ts');

const T = { timeout: 30_000 };
/** The version of the pg-pool this pg loads (onConnect came in 3.14). */
const pgPoolVersion = (): string => {
  const main = createRequire(requirePg.resolve('pg')).resolve('pg-pool');
  return (JSON.parse(readFileSync(join(dirname(main), 'package.json'), 'utf8')) as { version: string })
    .version;
};
type Client = import('pg').Client;
type PoolClient = import('pg').PoolClient;

describe('substitute connections (real PostgreSQL)', { timeout: 240_000 }, () => {
  let server: TestServer;
  let proxy: FaultProxyType;
  let retries: RetryEvent[];
  let suppressed: RetrySuppressedEvent[];
  const open: Array<{ end(): Promise<void> }> = [];

  const rowsWithKey = async (key: string): Promise<number> =>
    Number((await server.query('SELECT count(*)::int AS n FROM writes WHERE key = $1', [key])).rows[0].n);

  /** Runs `run` while the proxy delays traffic, and resets every open connection 60 ms in. */
  async function cutMidStatement<R>(run: () => Promise<R>): Promise<R> {
    proxy.setLatency(150);
    const p = run();
    p.catch(() => {});
    await sleep(60);
    proxy.resetOpenConnections();
    proxy.setLatency(0);
    return p;
  }

  /** A standalone client through the proxy (an ORM's own pooled connection), with its 'error' recorded. */
  async function standalone(overrides: object = {}): Promise<{ client: Client; errors: Error[] }> {
    const client = new pg.Client(proxy.clientConfig(server, overrides));
    const errors: Error[] = [];
    client.on('error', (e) => errors.push(e));
    await client.connect();
    open.push({ end: () => client.end().catch(() => {}) });
    return { client, errors };
  }

  const isLost = (e: Error & { code?: string }): boolean =>
    /terminated|ECONNRESET/.test(`${e.message} ${e.code}`);
  const notQueryable = /not queryable/;

  before(async () => {
    server = await startServer();
    proxy = await FaultProxy.forServer(server);
    await server.query(`
      CREATE TABLE writes (key text, at timestamptz DEFAULT clock_timestamp());
      CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
      INSERT INTO accounts VALUES (1, 100);
      CREATE TABLE items (v text); INSERT INTO items VALUES ('public');
      CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.items (v text); INSERT INTO tenant_a.items VALUES ('tenant_a');
      CREATE ROLE reader; GRANT SELECT ON items TO reader;
    `);
    const policy = instrumentation.policies.forTarget(`${proxy.host}:${proxy.port}/${server.database}`);
    policy.onRetry((e) => retries.push(e));
    policy.onRetrySuppressed((e) => suppressed.push(e));
  });

  beforeEach(() => {
    retries = [];
    suppressed = [];
    proxy.clear();
  });

  after(async () => {
    // Bounded: a pool whose test failed with a client still checked out would wait for it forever.
    await Promise.all(open.map((c) => Promise.race([c.end().catch(() => {}), sleep(2_000)])));
    await proxy?.close();
    await server?.close();
  });

  describe('a client checked out of a pg.Pool', () => {
    it(
      "a read cut mid-flight gets its rows from a substitute set up by the pool's 'connect' listener; the client stays dead for its owner",
      T,
      async () => {
        const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 1 });
        open.push(pool);
        const setUp: unknown[] = [];
        pool.on('connect', (c) => {
          setUp.push(c);
          void c.query('SET search_path TO tenant_a');
        });
        const removed: unknown[] = [];
        pool.on('remove', (c) => removed.push(c));
        const client: PoolClient = await pool.connect();
        const errors: Error[] = [];
        client.on('error', (e) => errors.push(e));
        await client.query('SELECT 1');

        // The pool is at max (1) with the dead client still checked out: the substitute must not wait for it.
        const r = await cutMidStatement(() => client.query('SELECT v FROM items'));
        assert.deepEqual(r.rows, [{ v: 'tenant_a' }], 'run in the schema the pool set up');
        assert.equal(retries.length, 1);
        assert.equal(suppressed.length, 0);
        assert.equal(setUp.length, 2, "the 'connect' listener ran on the substitute");
        assert.notEqual(setUp[1], client);
        for (let i = 0; i < 50 && removed.length === 0; i++) await sleep(20);
        assert.deepEqual(removed, [setUp[1]], 'the substitute was closed and reported as removed');

        // Dead for its owner, as with bare pg: its 'error' was emitted, its next statement fails.
        assert.ok(errors.length >= 1);
        await assert.rejects(client.query('SELECT 1'), notQueryable);
        client.release(errors[0]);
        assert.equal(pool.totalCount, 0, 'the pool evicted the dead client');
        assert.deepEqual((await pool.query('SELECT v FROM items')).rows, [{ v: 'tenant_a' }]);
      },
    );

    it(
      'a SET run on the checked-out client is replayed on the substitute (a tenant set per checkout)',
      T,
      async () => {
        const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 2 });
        open.push(pool);
        const client = await pool.connect();
        client.on('error', () => {});
        await client.query('SET search_path TO tenant_a');
        await client.query("SELECT set_config('app.tenant', $1, false)", ['a']);
        const r = await cutMidStatement(() =>
          client.query("SELECT v, current_setting('app.tenant') AS tenant FROM items"),
        );
        assert.deepEqual(r.rows, [{ v: 'tenant_a', tenant: 'a' }]);
        assert.equal(retries.length, 1);
        client.release(true);
      },
    );

    it('refused after SET ROLE on the checked-out client (session_state)', T, async () => {
      const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 2 });
      open.push(pool);
      const client = await pool.connect();
      client.on('error', () => {});
      await client.query('SET ROLE reader');
      await assert.rejects(
        cutMidStatement(() => client.query('SELECT v FROM items')),
        isLost,
      );
      assert.equal(retries.length, 0);
      assert.deepEqual(
        suppressed.map((e) => e.reason),
        ['session_state'],
      );
      client.release(true);
    });

    it("the pool's onConnect hook sets the substitute up too", T, async (t) => {
      if (!/^3\.(?:1[4-9]|[2-9]\d)/.test(pgPoolVersion())) {
        t.skip('pg-pool without onConnect');
        return;
      }
      const hooked: unknown[] = [];
      const pool = new pg.Pool({
        ...proxy.clientConfig(server),
        max: 1,
        onConnect: async (c: import('pg').PoolClient) => {
          hooked.push(c);
          await c.query('SET search_path TO tenant_a');
        },
      } as never);
      open.push(pool);
      const client = await pool.connect();
      client.on('error', () => {});
      const r = await cutMidStatement(() => client.query('SELECT v FROM items'));
      assert.deepEqual(r.rows, [{ v: 'tenant_a' }]);
      assert.equal(hooked.length, 2);
      client.release(true);
    });

    it("a 'connect' listener's SET ROLE is the pool's setup: the substitute runs it too", T, async () => {
      const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 1 });
      open.push(pool);
      pool.on('connect', (c) => void c.query('SET ROLE reader'));
      const client = await pool.connect();
      client.on('error', () => {});
      await client.query('SELECT 1');
      const r = await cutMidStatement(() => client.query('SELECT current_user AS u, v FROM items'));
      assert.deepEqual(r.rows, [{ u: 'reader', v: 'public' }]);
      assert.equal(retries.length, 1);
      client.release(true);
    });

    it(
      'a read on a checked-out client whose connection died while idle gets its rows from a substitute; a write fails as bare; the pool discards the client',
      T,
      async () => {
        const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 1 });
        open.push(pool);
        const client: PoolClient = await pool.connect();
        const errors: Error[] = [];
        client.on('error', (e) => errors.push(e));
        await client.query('SET search_path TO tenant_a');
        proxy.resetOpenConnections();
        for (let i = 0; i < 50 && errors.length === 0; i++) await sleep(20);
        assert.ok(errors.length >= 1, "the connection died while the client was idle in the app's hands");
        const r = await client.query('SELECT v FROM items');
        assert.deepEqual(r.rows, [{ v: 'tenant_a' }], 'with the session replayed');
        assert.equal(retries.length, 1);
        await assert.rejects(client.query("INSERT INTO writes (key) VALUES ('idle-dead')"), notQueryable);
        assert.equal(await rowsWithKey('idle-dead'), 0);
        client.release();
        assert.equal(pool.totalCount, 0, 'pg-pool discarded the dead client on release');
        assert.deepEqual((await pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      },
    );

    it(
      'once a statement of its owner failed on the dead client, a later read fails as with bare pg',
      T,
      async () => {
        const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 1 });
        open.push(pool);
        const client: PoolClient = await pool.connect();
        client.on('error', () => {});
        await client.query('SELECT 1');
        await assert.rejects(
          cutMidStatement(() => client.query("INSERT INTO writes (key) VALUES ('cut-write')")),
          isLost,
        );
        await assert.rejects(client.query('SELECT v FROM items'), notQueryable);
        assert.equal(retries.length, 0);
        client.release(true);
      },
    );

    it('a read inside a transaction is never substituted', T, async () => {
      const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 2 });
      open.push(pool);
      const client = await pool.connect();
      client.on('error', () => {});
      await client.query('BEGIN');
      await assert.rejects(
        cutMidStatement(() => client.query('SELECT v FROM items')),
        isLost,
      );
      assert.equal(retries.length, 0);
      assert.deepEqual(
        suppressed.map((e) => e.reason),
        ['in_transaction'],
      );
      client.release(true);
    });

    it('a write is never substituted; the row is there at most once', T, async () => {
      const pool = new pg.Pool({ ...proxy.clientConfig(server), max: 2 });
      open.push(pool);
      const client = await pool.connect();
      client.on('error', () => {});
      await client.query('SELECT 1');
      await assert.rejects(
        cutMidStatement(() => client.query("INSERT INTO writes (key) VALUES ('pooled-insert')")),
        isLost,
      );
      assert.equal(retries.length, 0);
      assert.deepEqual(
        suppressed.map((e) => e.reason),
        ['not_retryable'],
      );
      await sleep(200); // let the server finish whatever reached it
      assert.ok((await rowsWithKey('pooled-insert')) <= 1);
      client.release(true);
    });
  });

  describe('a standalone Client (an ORM pooling its own connections)', () => {
    it('a read cut mid-flight gets its rows from a new client with the same configuration', T, async () => {
      const { client, errors } = await standalone({ application_name: 'orm-conn' });
      await client.query('SELECT 1');
      const r = await cutMidStatement(() =>
        client.query("SELECT current_setting('application_name') AS app, v FROM items"),
      );
      assert.deepEqual(r.rows, [{ app: 'orm-conn', v: 'public' }]);
      assert.equal(retries.length, 1);
      await new Promise(setImmediate); // its 'error' follows the answer (below)
      assert.ok(errors.length >= 1, "the dead client emitted its 'error', as with bare pg");
      await assert.rejects(client.query('SELECT 1'), notQueryable);
    });

    it(
      "by default the dead client's 'error' comes at once, before the read's rows from the substitute (owners evict on it)",
      T,
      async () => {
        const { client } = await standalone();
        const seen: string[] = [];
        client.on('error', () => seen.push('error'));
        await client.query('SELECT 1');
        const r = await cutMidStatement(() => client.query('SELECT v FROM items'));
        seen.push('rows');
        assert.deepEqual(r.rows, [{ v: 'public' }]);
        assert.equal(
          seen[0],
          'error',
          'as with bare pg: knex and Sequelize mark the client dead before reuse',
        );
        assert.equal(seen.at(-1), 'rows');
      },
    );

    it(
      'a substitute whose connect is reset is connected again (a connect retry), not given up',
      T,
      async () => {
        const { client } = await standalone();
        await client.query('SELECT 1');
        // Every new connection is reset until the first substitute connect was; then they pass.
        proxy.resetNewConnections(1);
        const before = proxy.stats.resetOnAccept;
        const watch = setInterval(() => {
          if (proxy.stats.resetOnAccept > before) proxy.resetNewConnections(0);
        }, 1);
        try {
          const r = await cutMidStatement(() => client.query('SELECT v FROM items'));
          assert.deepEqual(r.rows, [{ v: 'public' }]);
        } finally {
          clearInterval(watch);
        }
        assert.deepEqual(
          retries.map((e) => e.operation),
          ['query', 'connect'],
          'the statement moved to a substitute once; its reset connect was tried again as a connect',
        );
      },
    );

    it(
      "an owner that ends the client from its 'error' listener (evicting it) still gets the rows",
      T,
      async () => {
        const { client } = await standalone();
        client.on('error', () => void client.end().catch(() => {}));
        await client.query('SELECT 1');
        const r = await cutMidStatement(() => client.query('SELECT v FROM items'));
        assert.deepEqual(r.rows, [{ v: 'public' }]);
        assert.equal(retries.length, 1);
      },
    );

    it('a read in flight when the app itself ends the client is never substituted', T, async () => {
      const { client } = await standalone();
      await client.query('SELECT 1');
      proxy.setLatency(150);
      const p = client.query('SELECT v FROM items');
      p.catch(() => {});
      await sleep(60);
      await client.end();
      proxy.setLatency(0);
      await assert.rejects(p, /Connection terminated$/);
      assert.equal(retries.length, 0);
    });

    it(
      'a session the server terminated (57P01, pg_terminate_backend) mid-statement: rows from a substitute',
      T,
      async () => {
        const { client } = await standalone();
        await client.query('SELECT 1');
        const pid = (client as unknown as { processID: number }).processID;
        const p = client.query(idempotent('SELECT pg_sleep(0.3), v FROM items'));
        p.catch(() => {});
        await sleep(100);
        await server.query('SELECT pg_terminate_backend($1)', [pid]);
        const r = await p;
        assert.equal(r.rows[0].v, 'public');
        assert.equal(retries.length, 1);
        assert.equal(retries[0]!.errorType, '57P01');
      },
    );

    it('callback form: the callback gets the substitute result once', T, async () => {
      const { client } = await standalone();
      await client.query('SELECT 1');
      proxy.setLatency(150);
      const calls: unknown[][] = [];
      const done = new Promise<void>((resolve) => {
        client.query('SELECT v FROM items', (...args: unknown[]) => {
          calls.push(args);
          resolve();
        });
      });
      await sleep(60);
      proxy.resetOpenConnections();
      proxy.setLatency(0);
      await done;
      await sleep(50);
      assert.equal(calls.length, 1);
      assert.equal(calls[0]![0], null);
      assert.deepEqual((calls[0]![1] as { rows: unknown[] }).rows, [{ v: 'public' }]);
    });

    it("knex's SET search_path is replayed: the read resolves in the right schema", T, async () => {
      const { client } = await standalone();
      await client.query('set search_path to "tenant_a"'); // what knex runs on a new connection
      await client.query("SELECT set_config('app.tenant', $1, false)", ['a']);
      const r = await cutMidStatement(() =>
        client.query("SELECT v, current_setting('app.tenant') AS tenant FROM items"),
      );
      assert.deepEqual(r.rows, [{ v: 'tenant_a', tenant: 'a' }]);
      assert.equal(retries.length, 1);
      assert.equal(suppressed.length, 0);
    });

    it('a plain SET of an ordinary setting is accepted and holds on the substitute', T, async () => {
      const { client } = await standalone();
      await client.query('SET statement_timeout = 12345');
      await client.query('SET LOCAL work_mem = 1024'); // outside a transaction: no lasting effect
      const r = await cutMidStatement(() => client.query("SELECT current_setting('statement_timeout') AS t"));
      assert.deepEqual(r.rows, [{ t: '12345ms' }]);
      assert.equal(retries.length, 1);
    });

    it(
      "Sequelize's multi-statement SET on connect is replayed whole: the read sees its settings",
      T,
      async () => {
        const { client } = await standalone();
        await client.query(
          "SET standard_conforming_strings=on;SET client_min_messages TO warning;SET TIME ZONE 'Pacific/Honolulu';",
        );
        const r = await cutMidStatement(() =>
          client.query(
            "SELECT v, current_setting('TimeZone') AS tz, current_setting('client_min_messages') AS m FROM items",
          ),
        );
        assert.deepEqual(r.rows, [{ v: 'public', tz: 'Pacific/Honolulu', m: 'warning' }]);
        assert.equal(retries.length, 1);
        assert.equal(suppressed.length, 0);
      },
    );

    it(
      "slonik's DISCARD ALL on release makes the session a new one: a later read is substituted",
      T,
      async () => {
        const { client } = await standalone();
        await client.query('SET search_path TO tenant_a');
        await client.query('SET ROLE reader');
        await client.query('LISTEN jobs');
        await client.query('DISCARD ALL');
        const r = await cutMidStatement(() =>
          client.query('SELECT v, current_user = session_user AS me FROM items'),
        );
        assert.deepEqual(r.rows, [{ v: 'public', me: true }]);
        assert.equal(retries.length, 1);
        assert.equal(suppressed.length, 0);
      },
    );

    const refused: Array<[string, string[], string]> = [
      ['a LOAD, even after DISCARD ALL', ["LOAD 'auto_explain'", 'DISCARD ALL'], 'SELECT v FROM items'],
      [
        'a multi-statement text with a SET ROLE beside a setting',
        ["SET TIME ZONE 'UTC'; SET ROLE reader"],
        'SELECT v FROM items',
      ],
      [
        'a temporary table created on the session',
        ['CREATE TEMP TABLE items (v text)'],
        'SELECT v FROM items',
      ],
      ['SET ROLE', ['SET ROLE reader'], 'SELECT v FROM items'],
      ['LISTEN', ['LISTEN jobs'], 'SELECT v FROM items'],
      ['a session advisory lock', ['SELECT pg_advisory_lock(42)'], 'SELECT v FROM items'],
      ['SET SESSION AUTHORIZATION', ['SET SESSION AUTHORIZATION reader'], 'SELECT v FROM items'],
      ['a DISCARD', ['DISCARD PLANS'], 'SELECT v FROM items'],
    ];
    for (const [what, setup, read] of refused) {
      it(`refused after ${what}: the error reaches the app (session_state)`, T, async () => {
        const { client } = await standalone();
        for (const s of setup) await client.query(s);
        await assert.rejects(
          cutMidStatement(() => client.query(read)),
          isLost,
        );
        assert.equal(retries.length, 0);
        assert.deepEqual(
          suppressed.map((e) => e.reason),
          ['session_state'],
        );
      });
    }

    it('refused for a statement prepared with PREPARE on the session (session_state)', T, async () => {
      const { client } = await standalone();
      await client.query('PREPARE balance AS SELECT balance FROM accounts WHERE id = 1');
      await assert.rejects(
        cutMidStatement(() => client.query(idempotent('EXECUTE balance'))),
        isLost,
      );
      assert.deepEqual(
        suppressed.map((e) => e.reason),
        ['session_state'],
      );
    });

    it('refused for a pg named statement sent without its text (session_state)', T, async () => {
      const { client } = await standalone();
      await client.query({ name: 'bal', text: 'SELECT balance FROM accounts WHERE id = $1', values: [1] });
      await assert.rejects(
        cutMidStatement(() => client.query(idempotent({ name: 'bal', values: [1] } as never))),
        isLost,
      );
      assert.deepEqual(
        suppressed.map((e) => e.reason),
        ['session_state'],
      );
    });

    it('a pg named statement with its text is prepared anew on the substitute', T, async () => {
      const { client } = await standalone();
      const q = { name: 'bal2', text: 'SELECT balance FROM accounts WHERE id = $1', values: [1] };
      await client.query(q);
      const r = await cutMidStatement(() => client.query(q));
      assert.equal(typeof r.rows[0].balance, 'number');
      assert.equal(retries.length, 1);
    });

    it(
      'a write is not substituted: the error reaches the app and the row is there at most once',
      T,
      async () => {
        const { client } = await standalone();
        await client.query('SELECT 1');
        await assert.rejects(
          cutMidStatement(() => client.query("INSERT INTO writes (key) VALUES ('standalone-insert')")),
          isLost,
        );
        assert.equal(retries.length, 0);
        assert.deepEqual(
          suppressed.map((e) => e.reason),
          ['not_retryable'],
        );
        await sleep(200);
        assert.ok((await rowsWithKey('standalone-insert')) <= 1);
      },
    );

    it('a write marked idempotent() is substituted and applied', T, async () => {
      const { client } = await standalone();
      await client.query('SELECT 1');
      const r = await cutMidStatement(() =>
        client.query(idempotent({ text: 'UPDATE accounts SET balance = $1 WHERE id = 1', values: [250] })),
      );
      assert.equal(r.rowCount, 1);
      assert.equal(retries.length, 1);
      assert.equal((await server.query('SELECT balance FROM accounts WHERE id = 1')).rows[0].balance, 250);
    });

    it('inside a transaction never', T, async () => {
      const { client } = await standalone();
      await client.query('BEGIN');
      await assert.rejects(
        cutMidStatement(() => client.query('SELECT v FROM items')),
        isLost,
      );
      assert.equal(retries.length, 0);
      assert.deepEqual(
        suppressed.map((e) => e.reason),
        ['in_transaction'],
      );
    });

    it('pipelined statements fail together, as with bare pg (nothing reordered)', T, async () => {
      const { client } = await standalone();
      await client.query('SELECT 1');
      proxy.setLatency(150);
      const a = client.query('SELECT v FROM items');
      const b = client.query('SELECT count(*) FROM items');
      a.catch(() => {});
      b.catch(() => {});
      await sleep(60);
      proxy.resetOpenConnections();
      proxy.setLatency(0);
      await assert.rejects(a, isLost);
      await assert.rejects(b, isLost);
      assert.equal(retries.length, 0);
    });

    it('a statement issued after the connection died fails as with bare pg', T, async () => {
      const { client, errors } = await standalone();
      await client.query('SELECT 1');
      proxy.resetOpenConnections();
      await sleep(100);
      assert.ok(errors.length >= 1);
      await assert.rejects(client.query('SELECT v FROM items'), notQueryable);
      assert.equal(retries.length, 0);
    });
  });
});
