// Tests of the harness itself (test/support/postgres.ts): every control, seen from a real pg client.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import pg from 'pg';
import { portAcceptsConnections, startServer, type TestServer, useServer } from '../support/postgres.ts';

/** Per-test limit: a broken control must fail its test, not hang the file. */
const T = { timeout: 30_000 };

/** A connected pg client that records its 'error' events (a client without a listener would crash). */
interface Tracked {
  client: pg.Client;
  errors: (Error & { code?: string })[];
  nextError: Promise<Error & { code?: string }>;
}

const open = new Set<pg.Client>();

async function connect(config: pg.ClientConfig): Promise<Tracked> {
  const client = new pg.Client({ connectionTimeoutMillis: 5000, ...config });
  const errors: Tracked['errors'] = [];
  let first: (e: Error) => void = () => {};
  const nextError = new Promise<Error & { code?: string }>((resolve) => {
    first = resolve;
  });
  client.on('error', (err) => {
    errors.push(err);
    first(err);
  });
  open.add(client);
  await client.connect();
  return { client, errors, nextError };
}

/** Connects a client that is expected to fail, and returns the error. */
async function connectError(config: pg.ClientConfig): Promise<Error & { code?: string }> {
  const client = new pg.Client({ connectionTimeoutMillis: 5000, ...config });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    return err as Error & { code?: string };
  }
  await client.end();
  assert.fail('connect() succeeded but was expected to fail');
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function endAll(): Promise<void> {
  await Promise.all(
    [...open].map((c) => within(c.end(), 2000, 'client.end()').catch(() => c.connection?.stream?.destroy())),
  );
  open.clear();
}

describe('test/support/postgres.ts: startServer()', () => {
  let server: TestServer;

  before(async () => {
    server = await startServer({ settings: { max_connections: '23' } });
  });
  after(async () => {
    await endAll();
    await server?.close();
  });
  afterEach(endAll);

  it('serves queries on 127.0.0.1, in the suite database, with the settings given', T, async () => {
    assert.equal(server.host, '127.0.0.1');
    assert.equal(server.database, 'app');
    assert.equal(server.controllable, true);
    assert.equal(
      server.connectionString,
      `postgres://postgres:${server.password}@127.0.0.1:${server.port}/app`,
    );
    const admin = await server.query<{ db: string; su: boolean; n: number }>(
      `SELECT current_database() AS db, rolsuper AS su, $1::int + 1 AS n FROM pg_roles WHERE rolname = current_user`,
      [41],
    );
    assert.deepEqual(admin.rows, [{ db: 'app', su: true, n: 42 }]);

    const { client } = await connect(server.clientConfig({ application_name: 'harness' }));
    const r = await client.query('SHOW max_connections');
    assert.equal(r.rows[0].max_connections, '23');
    const viaUrl = await connect({ connectionString: server.connectionString });
    assert.equal((await viaUrl.client.query('SELECT current_database() AS db')).rows[0].db, 'app');
  });

  it(
    'stop(): an open client gets 57P01, new connects get ECONNREFUSED; start(): same port, same data',
    T,
    async () => {
      await server.query('CREATE TABLE kept (v text)');
      await server.query(`INSERT INTO kept VALUES ('before stop')`);
      const port = server.port;
      const idle = await connect(server.clientConfig());

      await server.stop();
      const err = await within(idle.nextError, 5000, "the open client's error");
      assert.equal(err.code, '57P01'); // terminating connection due to administrator command
      assert.equal(await portAcceptsConnections(port), false);
      assert.equal((await connectError(server.clientConfig())).code, 'ECONNREFUSED');
      await assert.rejects(server.query('SELECT 1'), { code: 'ECONNREFUSED' });
      await server.stop(); // already stopped: no-op

      await server.start();
      assert.equal(server.port, port);
      const { client } = await connect(server.clientConfig());
      assert.deepEqual((await client.query('SELECT v FROM kept')).rows, [{ v: 'before stop' }]);
    },
  );

  it(
    'restart(): the open client is cut off, then queries work on the same port with the same data',
    T,
    async () => {
      await server.query(`INSERT INTO kept VALUES ('before restart')`);
      const port = server.port;
      const idle = await connect(server.clientConfig());
      await server.restart();
      assert.equal((await within(idle.nextError, 5000, "the open client's error")).code, '57P01');
      assert.equal(server.port, port);
      const { client } = await connect(server.clientConfig());
      const rows = (await client.query('SELECT v FROM kept ORDER BY v')).rows.map((r) => r.v);
      assert.deepEqual(rows, ['before restart', 'before stop']);
    },
  );

  it(
    'kill(): SIGKILL of the postmaster cuts the open client, refuses connects; start() recovers committed data',
    T,
    async () => {
      await server.query(`INSERT INTO kept VALUES ('committed before kill')`);
      const idle = await connect(server.clientConfig());
      const pid = (await idle.client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;

      const t0 = Date.now();
      await server.kill();
      const killMs = Date.now() - t0;
      const err = await within(idle.nextError, 5000, "the open client's error");
      // The orphaned backend notices the postmaster's death and says so before it exits.
      assert.ok(
        err.code === '57P01' || /Connection terminated unexpectedly/.test(err.message),
        `unexpected error: ${err.code} ${err.message}`,
      );
      assert.equal((await connectError(server.clientConfig())).code, 'ECONNREFUSED');
      assert.equal(existsSync(`/proc/${pid}`) && !isZombie(pid), false, 'the old backend is gone');
      assert.ok(killMs < 5000, `kill() took ${killMs} ms`);

      await server.start(); // crash recovery: stale postmaster.pid and shared memory must not stop it
      const { client } = await connect(server.clientConfig());
      const rows = (await client.query(`SELECT v FROM kept WHERE v = 'committed before kill'`)).rows;
      assert.equal(rows.length, 1);
      assert.match(server.logTail(50), /database system was interrupted|not properly shut down/);
    },
  );

  it(
    'crash() (extra): everything SIGKILLed; the open client sees a bare connection loss; start() recovers',
    T,
    async () => {
      await server.query(`INSERT INTO kept VALUES ('committed before crash')`);
      const idle = await connect(server.clientConfig());
      await server.crash();
      const err = await within(idle.nextError, 5000, "the open client's error");
      assert.equal(err.code, undefined);
      assert.match(err.message, /Connection terminated unexpectedly/);
      assert.equal((await connectError(server.clientConfig())).code, 'ECONNREFUSED');
      await server.start();
      const rows = await server.query(`SELECT v FROM kept WHERE v = 'committed before crash'`);
      assert.equal(rows.rowCount, 1);
    },
  );

  it(
    'terminateBackends(): every other backend of the database gets 57P01; the filter narrows it',
    T,
    async () => {
      const a1 = await connect(server.clientConfig({ application_name: 'app-a' }));
      const a2 = await connect(server.clientConfig({ application_name: 'app-a' }));
      const b = await connect(server.clientConfig({ application_name: 'app-b' }));
      const other = await connect(server.clientConfig({ database: 'postgres', application_name: 'app-a' }));

      assert.equal(await server.terminateBackends({ applicationName: 'app-a' }), 2);
      for (const t of [a1, a2]) {
        const err = await within(t.nextError, 5000, "the idle client's error");
        assert.equal(err.code, '57P01');
      }
      assert.equal(b.errors.length, 0);
      assert.equal(other.errors.length, 0, 'another database is left alone');
      assert.equal((await b.client.query('SELECT 1 AS x')).rows[0].x, 1);

      assert.equal(await server.terminateBackends(), 1); // b (its own admin connection excluded)
      assert.equal((await within(b.nextError, 5000, "b's error")).code, '57P01');
      assert.equal(await server.terminateBackends(), 0);
      assert.equal(await server.terminateBackends({ database: 'postgres' }), 1);
      assert.equal((await within(other.nextError, 5000, "other's error")).code, '57P01');
    },
  );
});

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

describe('test/support/postgres.ts: close() and startup errors', () => {
  it('close() stops the server, removes the data dir, frees the port; it is idempotent', T, async () => {
    const server = await startServer({ database: 'other' });
    const dataDir = (server as unknown as { baseDir: string }).baseDir;
    assert.equal(existsSync(dataDir), true);
    const idle = await connect(server.clientConfig());
    assert.equal((await idle.client.query('SELECT current_database() AS d')).rows[0].d, 'other');
    await server.close();
    await within(idle.nextError, 5000, "the open client's error");
    open.delete(idle.client);
    assert.equal(existsSync(dataDir), false);
    assert.equal(await portAcceptsConnections(server.port), false);
    await new Promise<void>((resolve, reject) => {
      const probe = net.createServer().once('error', reject);
      probe.listen(server.port, '127.0.0.1', () => probe.close(() => resolve()));
    });
    await server.close();
    await assert.rejects(server.start(), /after close\(\)/);
  });

  it('close() after kill() works too (stale shared memory and pid file)', T, async () => {
    const server = await startServer();
    const dataDir = (server as unknown as { baseDir: string }).baseDir;
    await server.kill();
    await server.close();
    assert.equal(existsSync(dataDir), false);
  });

  it('a server that cannot start rejects with the end of its log', T, async () => {
    await assert.rejects(startServer({ settings: { max_connections: 'not-a-number' } }), (err: Error) => {
      assert.match(err.message, /exited during startup/);
      assert.match(err.message, /server log/);
      assert.match(err.message, /max_connections/);
      return true;
    });
  });
});

describe('test/support/postgres.ts: useServer()', () => {
  let real: TestServer;
  const saved = process.env.PG_RESILIENCE_TEST_DATABASE_URL;

  before(async () => {
    real = await startServer();
  });
  after(async () => {
    if (saved === undefined) delete process.env.PG_RESILIENCE_TEST_DATABASE_URL;
    else process.env.PG_RESILIENCE_TEST_DATABASE_URL = saved;
    await endAll();
    await real?.close();
  });

  it(
    'wraps the server of PG_RESILIENCE_TEST_DATABASE_URL: not controllable, stop()/kill() reject clearly',
    T,
    async () => {
      process.env.PG_RESILIENCE_TEST_DATABASE_URL = real.connectionString;
      const ext = await useServer();
      assert.equal(ext.controllable, false);
      assert.equal(ext.port, real.port);
      assert.equal(ext.database, 'app');
      assert.equal(ext.connectionString, real.connectionString);
      assert.equal((await ext.query('SELECT 7 AS n')).rows[0].n, 7);
      for (const op of [() => ext.stop(), () => ext.start(), () => ext.restart(), () => ext.kill()]) {
        await assert.rejects(op(), /not possible.*external server from PG_RESILIENCE_TEST_DATABASE_URL/);
      }
      const t = await connect(ext.clientConfig({ application_name: 'via-env' }));
      assert.equal(await ext.terminateBackends({ applicationName: 'via-env' }), 1);
      assert.equal((await within(t.nextError, 5000, 'the error')).code, '57P01');
      await ext.close(); // leaves the external server alone
      assert.equal((await real.query('SELECT 1 AS one')).rows[0].one, 1);

      const other = await useServer({ database: 'suite_b' });
      assert.equal(other.controllable, false);
      assert.equal((await other.query('SELECT current_database() AS d')).rows[0].d, 'suite_b');
    },
  );

  it('without the variable it starts an embedded, controllable server', T, async () => {
    delete process.env.PG_RESILIENCE_TEST_DATABASE_URL;
    const own = await useServer();
    try {
      assert.equal(own.controllable, true);
      assert.notEqual(own.port, real.port);
      assert.equal((await own.query('SELECT 1 AS one')).rows[0].one, 1);
    } finally {
      await own.close();
    }
  });
});
