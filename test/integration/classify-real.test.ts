// classifyError() against what pg really raises: every fault is provoked for real, on a real
// PostgreSQL (test/support/postgres.ts) and through the fault proxy (test/support/fault-proxy.ts).
// Nothing is mocked. Each test records what pg raised (as a test diagnostic) and asserts the whole
// classification.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it, type TestContext } from 'node:test';
import pg from 'pg';
import { classification } from '../../src/classify/classification.ts';
import { classifyError } from '../../src/classify/index.ts';
import type { ErrorClass, ErrorClassification } from '../../src/classify/types.ts';
import { FaultProxy } from '../support/fault-proxy.ts';
import { startServer, type TestServer } from '../support/postgres.ts';

type PgError = Error & { code?: string; severity?: string };

/** The expected classification (the same constructor the tables use). */
const c = classification;

const rejected = (errorClass: ErrorClass, code: string) => c(errorClass, false, 'rejected', false, code);
const CONNECTION_LOST_MSG = c('connection_lost', true, 'unknown', false, 'connection_lost');
const CLIENT_UNUSABLE = c('client_unusable', true, 'no', false, 'client_unusable');

function describeError(err: unknown): string {
  const e = err as PgError & { errors?: PgError[]; cause?: unknown };
  const parts = [
    `${e?.constructor?.name}`,
    e?.code ? `code=${e.code}` : '',
    e?.severity ? `severity=${e.severity}` : '',
  ];
  if (Array.isArray(e?.errors)) parts.push(`errors=[${e.errors.map((x) => x?.code).join(',')}]`);
  if (e?.cause) parts.push(`cause=(${describeError(e.cause)})`);
  return `${parts.filter(Boolean).join(' ')} ${JSON.stringify(e?.message)}`;
}

/** Classifies what pg raised, records it, and compares the whole classification. */
function expectClassified(t: TestContext, what: string, err: unknown, expected: ErrorClassification): void {
  const got = classifyError(err);
  t.diagnostic(`${what}: ${describeError(err)} → ${JSON.stringify(got)}`);
  assert.deepEqual({ ...got }, expected, `${what}: ${describeError(err)}`);
}

async function rejection(p: Promise<unknown>, what = 'the call'): Promise<PgError> {
  try {
    await p;
  } catch (err) {
    return err as PgError;
  }
  assert.fail(`${what} succeeded but was expected to fail`);
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Every test and hook is bounded: a hang fails the test that hung instead of the whole run. */
const T = { timeout: 20_000 };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A pg client that records its 'error' events (without a listener, one would crash the process). */
interface Tracked {
  client: pg.Client;
  errors: PgError[];
  /** the first 'error' event */
  firstError: Promise<PgError>;
}

const openClients = new Set<pg.Client>();
const openPools = new Set<pg.Pool>();
const openProxies = new Set<FaultProxy>();

function track(config: pg.ClientConfig): Tracked {
  const client = new pg.Client({ connectionTimeoutMillis: 5000, ...config });
  const errors: PgError[] = [];
  let first: (e: PgError) => void = () => {};
  const firstError = new Promise<PgError>((resolve) => {
    first = resolve;
  });
  client.on('error', (err: PgError) => {
    errors.push(err);
    first(err);
  });
  openClients.add(client);
  return { client, errors, firstError };
}

async function connected(config: pg.ClientConfig): Promise<Tracked> {
  const t = track(config);
  await t.client.connect();
  return t;
}

/** The error of a connect() expected to fail. */
async function connectError(config: pg.ClientConfig): Promise<PgError> {
  const { client } = track(config);
  return rejection(client.connect(), 'connect()');
}

function pool(config: pg.PoolConfig): pg.Pool {
  const p = new pg.Pool(config);
  p.on('error', () => {}); // an idle client's error must not crash the test process
  openPools.add(p);
  return p;
}

async function proxyFor(server: TestServer): Promise<FaultProxy> {
  const proxy = await FaultProxy.start({ targetHost: server.host, targetPort: server.port });
  openProxies.add(proxy);
  return proxy;
}

async function cleanup(): Promise<void> {
  for (const proxy of openProxies) proxy.clear();
  await Promise.all(
    [...openClients].map((client) =>
      within(client.end(), 2000, 'client.end()').catch(() => client.connection?.stream?.destroy()),
    ),
  );
  openClients.clear();
  await Promise.all([...openPools].map((p) => within(p.end(), 2000, 'pool.end()').catch(() => {})));
  openPools.clear();
  await Promise.all([...openProxies].map((p) => within(p.close(), 5000, 'proxy.close()')));
  openProxies.clear();
}

// The server itself is full: every refusal for lack of slots is 53300, whatever the message says.
describe('classifyError on a full server (max_connections 4, one slot reserved for superusers)', () => {
  let server: TestServer;
  before(
    async () => {
      server = await startServer({
        settings: { max_connections: '4', superuser_reserved_connections: '1', reserved_connections: '0' },
      });
      await server.query(`CREATE ROLE plain LOGIN PASSWORD 'plain-pw'`);
    },
    { timeout: 60_000 },
  );
  after(
    async () => {
      await cleanup();
      await server?.close();
    },
    { timeout: 60_000 },
  );

  it(
    'only reserved slots left → 53300; no slot at all → 53300 ("sorry, too many clients already")',
    T,
    async (t) => {
      const plain = server.clientConfig({ user: 'plain', password: 'plain-pw' });
      // The three unreserved slots (retried while the harness's admin backend is still exiting).
      for (let i = 0; i < 3; i++) {
        for (let tries = 1; ; tries++) {
          const { client } = track(plain);
          const failed = await client.connect().then(
            () => undefined,
            (e: PgError) => e,
          );
          if (!failed) break;
          if (failed.code !== '53300' || tries >= 50) throw failed;
          await sleep(100);
        }
      }
      const reserved = await connectError(plain);
      assert.match(reserved.message, /^remaining connection slots are reserved for /);
      expectClassified(t, reserved.message, reserved, c('too_many_connections', true, 'no', false, '53300'));
      await connected(server.clientConfig()); // the superuser takes the reserved slot
      const full = await connectError(server.clientConfig());
      assert.equal(full.message, 'sorry, too many clients already');
      expectClassified(t, full.message, full, c('too_many_connections', true, 'no', false, '53300'));
    },
  );
});

describe('classifyError on real PostgreSQL errors', () => {
  let server: TestServer;
  const cfg = (overrides: Partial<pg.ClientConfig> = {}) => server.clientConfig(overrides);

  before(
    async () => {
      // deadlock_timeout: detect the provoked deadlock in 100 ms instead of 1 s.
      server = await startServer({ settings: { deadlock_timeout: '100ms' } });
      await server.query('CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)');
      await server.query('INSERT INTO items VALUES (1, 0), (2, 0)');
      await server.query(`CREATE ROLE limited LOGIN PASSWORD 'limited-pw'`);
      await server.query('ALTER ROLE limited CONNECTION LIMIT 1');
    },
    { timeout: 60_000 },
  );
  afterEach(cleanup, T);
  after(
    async () => {
      await cleanup();
      await server?.close();
    },
    { timeout: 60_000 },
  );

  describe('errors the server answers with (SQLSTATE)', () => {
    it('syntax error → 42601 syntax_or_access', T, async (t) => {
      const { client } = await connected(cfg());
      expectClassified(
        t,
        'SELEC 1',
        await rejection(client.query('SELEC 1')),
        rejected('syntax_or_access', '42601'),
      );
    });

    it('unique violation → 23505 integrity', T, async (t) => {
      const { client } = await connected(cfg());
      const err = await rejection(client.query('INSERT INTO items VALUES (1, 0)'));
      expectClassified(t, 'duplicate key', err, rejected('integrity', '23505'));
    });

    it('division by zero → 22012 data', T, async (t) => {
      const { client } = await connected(cfg());
      expectClassified(
        t,
        'SELECT 1/0',
        await rejection(client.query('SELECT 1/0')),
        rejected('data', '22012'),
      );
    });

    it('a statement in a failed transaction → 25P02 transaction_state', T, async (t) => {
      const { client } = await connected(cfg());
      await client.query('BEGIN');
      await rejection(client.query('SELECT 1/0'));
      const err = await rejection(client.query('SELECT 1'));
      expectClassified(t, 'statement after a failed one', err, rejected('transaction_state', '25P02'));
      await client.query('ROLLBACK');
    });

    it(
      'a write in a read-only transaction → 25006 transaction_state, transient (a demoted primary)',
      T,
      async (t) => {
        const { client } = await connected(cfg());
        await client.query('BEGIN READ ONLY');
        const err = await rejection(client.query('UPDATE items SET v = v WHERE id = 1'));
        expectClassified(
          t,
          'write in READ ONLY',
          err,
          c('transaction_state', true, 'rejected', false, '25006'),
        );
        await client.query('ROLLBACK');
      },
    );

    it('statement_timeout → 57014 statement_timeout', T, async (t) => {
      const { client } = await connected(cfg());
      await client.query('SET statement_timeout = 50');
      const err = await rejection(client.query('SELECT pg_sleep(1)'));
      expectClassified(t, 'statement_timeout', err, rejected('statement_timeout', '57014'));
    });

    it('wrong password → 28P01 auth', T, async (t) => {
      const err = await connectError(cfg({ password: 'not-the-password' }));
      expectClassified(t, 'wrong password', err, rejected('auth', '28P01'));
    });

    it('unknown database → 3D000 database_missing', T, async (t) => {
      const err = await connectError(cfg({ database: 'no_such_database' }));
      expectClassified(t, 'unknown database', err, rejected('database_missing', '3D000'));
    });

    it('role connection limit reached → 53300 too_many_connections', T, async (t) => {
      const limited = cfg({ user: 'limited', password: 'limited-pw' });
      await connected(limited);
      const err = await connectError(limited);
      expectClassified(t, 'second connection as a role with CONNECTION LIMIT 1', err, {
        ...c('too_many_connections', true, 'no', false, '53300'),
      });
    });

    it('concurrent update under REPEATABLE READ → 40001 serialization_failure', T, async (t) => {
      const a = (await connected(cfg())).client;
      const b = (await connected(cfg())).client;
      await a.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await b.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await a.query('SELECT v FROM items WHERE id = 2');
      await b.query('SELECT v FROM items WHERE id = 2'); // b's snapshot is taken now
      await a.query('UPDATE items SET v = v + 1 WHERE id = 2');
      await a.query('COMMIT');
      const err = await rejection(b.query('UPDATE items SET v = v + 1 WHERE id = 2'));
      expectClassified(t, 'update of a row changed since the snapshot', err, {
        ...c('serialization_failure', true, 'rejected', false, '40001'),
      });
      await b.query('ROLLBACK');
    });

    it('two transactions locking rows in opposite order → 40P01 deadlock', T, async (t) => {
      const a = (await connected(cfg())).client;
      const b = (await connected(cfg())).client;
      await a.query('BEGIN');
      await b.query('BEGIN');
      await a.query('UPDATE items SET v = v + 1 WHERE id = 1');
      await b.query('UPDATE items SET v = v + 1 WHERE id = 2');
      const results = await Promise.allSettled([
        a.query('UPDATE items SET v = v + 1 WHERE id = 2'),
        b.query('UPDATE items SET v = v + 1 WHERE id = 1'),
      ]);
      const failed = results.filter((r) => r.status === 'rejected');
      assert.equal(failed.length, 1, 'exactly one of the two is chosen as the deadlock victim');
      expectClassified(t, 'deadlock', (failed[0] as PromiseRejectedResult).reason, {
        ...c('deadlock', true, 'rejected', false, '40P01'),
      });
      await a.query('ROLLBACK');
      await b.query('ROLLBACK');
    });

    it('FOR UPDATE NOWAIT on a locked row → 55P03 lock_not_available', T, async (t) => {
      const a = (await connected(cfg())).client;
      const b = (await connected(cfg())).client;
      await a.query('BEGIN');
      await a.query('SELECT * FROM items WHERE id = 1 FOR UPDATE');
      const err = await rejection(b.query('SELECT * FROM items WHERE id = 1 FOR UPDATE NOWAIT'));
      expectClassified(
        t,
        'NOWAIT on a locked row',
        err,
        c('lock_not_available', true, 'rejected', false, '55P03'),
      );
      await a.query('ROLLBACK');
    });
  });

  describe('sessions the server ends', () => {
    it(
      'pg_terminate_backend during a query → 57P01 connection_lost; the next query → client_unusable',
      T,
      async (t) => {
        const victim = await connected(cfg({ application_name: 'victim-busy' }));
        const running = rejection(victim.client.query('SELECT pg_sleep(10)'));
        await sleep(100); // the statement is running on the server
        assert.equal(await server.terminateBackends({ applicationName: 'victim-busy' }), 1);
        const err = await within(running, 5000, 'the query to fail');
        expectClassified(t, 'in-flight query of a terminated backend', err, {
          ...c('connection_lost', true, 'unknown', false, '57P01'),
        });
        const event = await within(victim.firstError, 5000, "the client's 'error' event");
        expectClassified(t, "terminated backend: client 'error' event", event, CONNECTION_LOST_MSG);
        const next = await rejection(victim.client.query('SELECT 1'));
        expectClassified(t, 'query on the dead client', next, CLIENT_UNUSABLE);
      },
    );

    it(
      'pg_terminate_backend of an idle client → client error 57P01; the next query → client_unusable',
      T,
      async (t) => {
        const victim = await connected(cfg({ application_name: 'victim-idle' }));
        assert.equal(await server.terminateBackends({ applicationName: 'victim-idle' }), 1);
        const event = await within(victim.firstError, 5000, "the client's 'error' event");
        expectClassified(t, "idle terminated backend: client 'error' event", event, {
          ...c('connection_lost', true, 'unknown', false, '57P01'),
        });
        const next = await rejection(victim.client.query('SELECT 1'));
        expectClassified(t, 'query on the dead client', next, CLIENT_UNUSABLE);
      },
    );

    it('idle_in_transaction_session_timeout → 25P03 connection_lost (not counted)', T, async (t) => {
      const victim = await connected(cfg());
      await victim.client.query(`SET idle_in_transaction_session_timeout = '100ms'`);
      await victim.client.query('BEGIN');
      await victim.client.query('SELECT 1');
      const event = await within(victim.firstError, 5000, "the client's 'error' event");
      expectClassified(t, "idle in transaction: client 'error' event", event, {
        ...c('connection_lost', true, 'unknown', false, '25P03'),
      });
      const next = await rejection(victim.client.query('SELECT 1'));
      expectClassified(t, 'query on the dead client', next, CLIENT_UNUSABLE);
    });

    it('idle_session_timeout → 57P05 connection_lost (not counted)', T, async (t) => {
      const victim = await connected(cfg());
      await victim.client.query(`SET idle_session_timeout = '100ms'`);
      const event = await within(victim.firstError, 5000, "the client's 'error' event");
      expectClassified(t, "idle session: client 'error' event", event, {
        ...c('connection_lost', true, 'unknown', false, '57P05'),
      });
    });

    it(
      'client.end() while a query runs → "Connection terminated" connection_lost (not counted)',
      T,
      async (t) => {
        const { client } = await connected(cfg());
        const running = rejection(client.query('SELECT pg_sleep(5)'));
        await sleep(50);
        await within(client.end(), 5000, 'client.end()');
        expectClassified(t, 'client.end() during a query', await running, {
          ...c('connection_lost', true, 'unknown', false, 'connection_lost'),
        });
      },
    );
  });

  describe('pool and client timeouts', () => {
    it('pool (max 1) with its client checked out → pool_exhausted', T, async (t) => {
      const p = pool(cfg({ max: 1, connectionTimeoutMillis: 200 } as pg.PoolConfig));
      const held = await p.connect();
      try {
        const err = await rejection(p.connect(), 'pool.connect()');
        expectClassified(t, 'pool.connect() with no free client', err, {
          ...c('pool_exhausted', false, 'no', false, 'pool_exhausted'),
        });
        const viaQuery = await rejection(p.query('SELECT 1'), 'pool.query()');
        expectClassified(t, 'pool.query() with no free client', viaQuery, {
          ...c('pool_exhausted', false, 'no', false, 'pool_exhausted'),
        });
      } finally {
        held.release();
      }
    });
  });

  describe('network faults through the fault proxy', () => {
    it('reset of an open connection during a query → connection_lost', T, async (t) => {
      const proxy = await proxyFor(server);
      const victim = await connected(proxy.clientConfig(server));
      const running = rejection(victim.client.query('SELECT pg_sleep(5)'));
      await sleep(100);
      assert.equal(proxy.resetOpenConnections(), 1);
      const err = await within(running, 5000, 'the query to fail');
      expectClassified(
        t,
        'RST during a query',
        err,
        c('connection_lost', true, 'unknown', false, 'ECONNRESET'),
      );
      const next = await rejection(victim.client.query('SELECT 1'));
      expectClassified(t, 'query on the reset client', next, CLIENT_UNUSABLE);
    });

    it(
      'reset of an idle connection → client error connection_lost; the next query → client_unusable',
      T,
      async (t) => {
        const proxy = await proxyFor(server);
        const victim = await connected(proxy.clientConfig(server));
        assert.equal(proxy.resetOpenConnections(), 1);
        const event = await within(victim.firstError, 5000, "the client's 'error' event");
        expectClassified(t, "idle RST: client 'error' event", event, {
          ...c('connection_lost', true, 'unknown', false, 'ECONNRESET'),
        });
        const next = await rejection(victim.client.query('SELECT 1'));
        expectClassified(t, 'query on the reset client', next, CLIENT_UNUSABLE);
      },
    );

    it(
      'connection closed (FIN) while connecting → "Connection terminated unexpectedly" connection_lost',
      T,
      async (t) => {
        const proxy = await proxyFor(server);
        proxy.closeAfterBytes(0); // connections opened from now on are closed at once
        const err = await connectError(proxy.clientConfig(server));
        // 'unknown' by message alone; the instrumentation's dispatch tracking knows nothing was sent.
        expectClassified(t, 'connect through a proxy that closes at once', err, CONNECTION_LOST_MSG);
      },
    );

    it(
      'connection closed (FIN) in the middle of a reply → "Connection terminated unexpectedly"',
      T,
      async (t) => {
        const proxy = await proxyFor(server);
        // Measure how many bytes the server sends while a client connects, then cut the next
        // connection 3 bytes into the reply to its first query (the query reached the server and ran).
        const probe = await connected(proxy.clientConfig(server));
        const handshake = proxy.stats.bytesDown;
        await within(probe.client.end(), 5000, 'client.end()');
        proxy.closeAfterBytes(handshake + 3, 'downstream');
        const victim = await connected(proxy.clientConfig(server));
        const err = await rejection(victim.client.query('SELECT 1'));
        expectClassified(t, 'FIN mid-reply', err, CONNECTION_LOST_MSG);
        const next = await rejection(victim.client.query('SELECT 1'));
        expectClassified(t, 'query on the closed client', next, CLIENT_UNUSABLE);
      },
    );

    it('connect through a refused proxy → ECONNREFUSED connect_refused', T, async (t) => {
      const proxy = await proxyFor(server);
      await proxy.refuse(true);
      const err = await connectError(proxy.clientConfig(server));
      expectClassified(
        t,
        'connect to a closed port',
        err,
        c('connect_refused', true, 'no', true, 'ECONNREFUSED'),
      );
      await proxy.refuse(false);
    });

    it(
      'blackhole while connecting, client connectionTimeoutMillis → "timeout expired" connect_timeout',
      T,
      async (t) => {
        const proxy = await proxyFor(server);
        proxy.blackhole(true);
        const err = await connectError(proxy.clientConfig(server, { connectionTimeoutMillis: 200 }));
        expectClassified(
          t,
          'client connect timeout',
          err,
          c('connect_timeout', true, 'no', true, 'connect_timeout'),
        );
      },
    );

    it(
      'blackhole while a pool connects a new client → "Connection terminated due to connection timeout"',
      T,
      async (t) => {
        const proxy = await proxyFor(server);
        proxy.blackhole(true);
        const p = pool(proxy.clientConfig(server, { connectionTimeoutMillis: 200 } as pg.PoolConfig));
        const err = await rejection(p.query('SELECT 1'), 'pool.query()');
        expectClassified(
          t,
          'pool connect timeout',
          err,
          c('connect_timeout', true, 'no', true, 'connect_timeout'),
        );
      },
    );

    it('blackhole during a query with query_timeout → "Query read timeout" query_timeout', T, async (t) => {
      const proxy = await proxyFor(server);
      const victim = await connected(proxy.clientConfig(server, { query_timeout: 200 } as pg.ClientConfig));
      proxy.blackhole(true);
      const err = await rejection(victim.client.query('SELECT 1'));
      expectClassified(t, 'query_timeout', err, c('query_timeout', true, 'unknown', true, 'query_timeout'));
    });
  });

  // Last: these stop the server.
  describe('the server goes away', () => {
    it(
      'server stopped → ECONNREFUSED connect_refused; server restart with a client connected',
      T,
      async (t) => {
        const idle = await connected(cfg());
        await server.stop();
        try {
          const event = await within(idle.firstError, 5000, "the client's 'error' event");
          expectClassified(t, "server stop: idle client 'error' event", event, {
            ...c('connection_lost', true, 'unknown', false, '57P01'),
          });
          const next = await rejection(idle.client.query('SELECT 1'));
          expectClassified(t, 'query on a client of the stopped server', next, CLIENT_UNUSABLE);
          const err = await connectError(cfg());
          expectClassified(t, 'connect to the stopped server', err, {
            ...c('connect_refused', true, 'no', true, 'ECONNREFUSED'),
          });
          const p = pool(cfg());
          const viaPool = await rejection(p.query('SELECT 1'), 'pool.query()');
          expectClassified(t, 'pool.query() on the stopped server', viaPool, {
            ...c('connect_refused', true, 'no', true, 'ECONNREFUSED'),
          });
        } finally {
          await server.start();
        }
      },
    );

    it('server restart while a client is connected: its error event, then its next query', T, async (t) => {
      const idle = await connected(cfg());
      const p = pool(cfg({ max: 1 } as pg.PoolConfig));
      await p.query('SELECT 1'); // an idle pooled client
      await server.restart();
      const event = await within(idle.firstError, 5000, "the client's 'error' event");
      expectClassified(
        t,
        "restart: client 'error' event",
        event,
        c('connection_lost', true, 'unknown', false, '57P01'),
      );
      const next = await rejection(idle.client.query('SELECT 1'));
      expectClassified(t, 'query after the restart', next, CLIENT_UNUSABLE);
      // The pool dropped its dead idle client: its next query works on a new connection.
      assert.deepEqual((await p.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
    });

    it('server crash (every process SIGKILLed) during a query → connection_lost', T, async (t) => {
      const victim = await connected(cfg());
      const running = rejection(victim.client.query('SELECT pg_sleep(10)'));
      await sleep(100);
      await server.crash();
      try {
        const err = await within(running, 5000, 'the query to fail');
        expectClassified(t, 'server crash during a query', err, CONNECTION_LOST_MSG);
      } finally {
        await server.start();
      }
    });
  });
});
