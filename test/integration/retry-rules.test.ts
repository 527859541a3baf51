// The safe-retry rules of the instrumentation, each against a real PostgreSQL (and the fault proxy for
// lost connections), in process: pg is patched by a PgResilienceInstrumentation created before pg loads.
// Every test asserts what the app sees (rows, errors) and what the server holds (how many times a
// statement really ran), plus the policy events that say why a retry did or did not happen.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { RetryEvent, RetrySuppressedEvent } from '../../src/policy/events.ts';
import type { FaultProxy as FaultProxyType } from '../support/fault-proxy.ts';
import { FLAKY_SQL } from '../support/flaky.ts';
import type { TestServer } from '../support/postgres.ts';

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  retry: { maxAttempts: 4, initialDelayMs: 5, maxDelayMs: 20, budget: { enabled: false } },
  circuitBreaker: { enabled: false },
  recovery: { enabled: false },
});
const { startServer } = await import('../support/postgres.ts');
const { FaultProxy } = await import('../support/fault-proxy.ts');
// PG_RESILIENCE_TEST_PG_DIR: run the rules against the pg (and pg-cursor) installed in that directory,
// e.g. an older pg 8.x (test/integration/pg-versions.test.ts does this for the supported range).
const { requirePg } = await import('../support/pg-under-test.ts');
const pg = requirePg('pg') as typeof import('pg');
const Cursor = requirePg('pg-cursor') as new (text: string) => import('pg').Submittable & {
  read(n: number): Promise<unknown[]>;
  close(): Promise<void>;
};
const { idempotent, withTransaction, isTransactionRolledBackError } = await import('../../src/index.ts');

const T = { timeout: 30_000 };

describe('safe retries (real PostgreSQL)', { timeout: 180_000 }, () => {
  let server: TestServer;
  let proxy: FaultProxyType;
  let pool: import('pg').Pool;
  let retries: RetryEvent[];
  let suppressed: RetrySuppressedEvent[];

  /** How many times flaky() ran since the last restart of its sequence. */
  const seq = async (): Promise<number> =>
    Number(
      (await server.query('SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM flaky_seq'))
        .rows[0].n,
    );
  const rowsWithKey = async (key: string): Promise<number> =>
    Number((await server.query('SELECT count(*)::int AS n FROM writes WHERE key = $1', [key])).rows[0].n);

  before(async () => {
    server = await startServer();
    proxy = await FaultProxy.forServer(server);
    await server.query(FLAKY_SQL);
    await server.query(`
      CREATE TABLE writes (key text, at timestamptz DEFAULT clock_timestamp());
      CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
    `);
    pool = new pg.Pool({ ...proxy.clientConfig(server), max: 4 });
    const policy = instrumentation.policies.forTarget(`${proxy.host}:${proxy.port}/${server.database}`);
    policy.onRetry((e) => retries.push(e));
    policy.onRetrySuppressed((e) => suppressed.push(e));
  });

  beforeEach(async () => {
    retries = [];
    suppressed = [];
    proxy.clear();
    await server.query('ALTER SEQUENCE flaky_seq RESTART');
  });

  after(async () => {
    await pool?.end();
    await proxy?.close();
    await server?.close();
    instrumentation.disable();
  });

  describe('statements the server rejected and rolled back (40001)', () => {
    it('Pool.query outside a transaction is retried until it succeeds', T, async () => {
      const r = await pool.query('SELECT flaky($1) AS n', [2]);
      assert.equal(r.rows[0].n, 3, 'the third run succeeded');
      assert.equal(await seq(), 3, 'the statement ran three times on the server');
      assert.deepEqual(
        retries.map((e) => [e.operation, e.errorType]),
        [
          ['query', '40001'],
          ['query', '40001'],
        ],
      );
    });

    it('the same statement inside a transaction is never retried', T, async () => {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await assert.rejects(client.query('SELECT flaky(5)'), { code: '40001' });
        await client.query('ROLLBACK');
      } finally {
        client.release();
      }
      assert.equal(await seq(), 1, 'ran once');
      assert.deepEqual(
        suppressed.map((e) => e.reason),
        ['in_transaction'],
      );
      assert.equal(retries.length, 0);
    });

    it('a standalone client retries it on the same connection', T, async () => {
      const client = new pg.Client(proxy.clientConfig(server));
      await client.connect();
      try {
        const pid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
        const r = await client.query({ text: 'SELECT flaky($1) AS n, pg_backend_pid() AS pid', values: [1] });
        assert.equal(r.rows[0].n, 2);
        assert.equal(r.rows[0].pid, pid, 'same connection');
      } finally {
        await client.end();
      }
      assert.equal(retries.length, 1);
    });

    it(
      'a client with another statement queued behind it does not retry (it would reorder them)',
      T,
      async () => {
        const client = new pg.Client(proxy.clientConfig(server));
        await client.connect();
        try {
          const first = client.query('SELECT flaky(1)');
          const second = client.query('SELECT 2 AS two');
          await assert.rejects(first, { code: '40001' });
          assert.equal((await second).rows[0].two, 2);
        } finally {
          await client.end();
        }
        assert.deepEqual(
          suppressed.map((e) => e.reason),
          ['not_retryable'],
        );
      },
    );

    it('a multi-statement text is not retried (it may hold its own COMMIT)', T, async () => {
      await assert.rejects(pool.query("INSERT INTO writes (key) VALUES ('multi'); SELECT flaky(1)"), {
        code: '40001',
      });
      assert.equal(await rowsWithKey('multi'), 0, 'the implicit transaction was rolled back');
      assert.deepEqual(
        suppressed.map((e) => e.reason),
        ['unknown_outcome'],
      );
    });

    it('a Submittable (pg-cursor) is never retried', T, async () => {
      const client = await pool.connect();
      try {
        const cursor = client.query(new Cursor('SELECT flaky(1)'));
        await assert.rejects(cursor.read(1), { code: '40001' });
        await cursor.close();
      } finally {
        client.release();
      }
      assert.equal(await seq(), 1);
      assert.equal(retries.length, 0);
    });

    it('callback form: the callback gets the final result once', T, async () => {
      const calls: unknown[][] = [];
      await new Promise<void>((resolve) => {
        pool.query('SELECT flaky(1) AS n', (...args: unknown[]) => {
          calls.push(args);
          resolve();
        });
      });
      await sleep(50);
      assert.equal(calls.length, 1);
      assert.equal(calls[0]![0], undefined);
      assert.equal((calls[0]![1] as { rows: Array<{ n: number }> }).rows[0]!.n, 2);
    });
  });

  describe('connections lost while a statement was in flight (outcome unknown)', () => {
    /** Runs `run` while the proxy delays traffic, and resets every open connection 60 ms in. */
    async function cutMidStatement<R>(run: () => Promise<R>): Promise<R> {
      proxy.setLatency(150);
      const p = run();
      await sleep(60);
      proxy.resetOpenConnections();
      proxy.setLatency(0);
      return p;
    }

    it(
      'an INSERT is not retried: the error reaches the app and the row is there at most once',
      T,
      async () => {
        await pool.query('SELECT 1'); // a warm pooled connection, so the INSERT is dispatched at once
        await assert.rejects(
          cutMidStatement(() => pool.query("INSERT INTO writes (key) VALUES ('cut-insert')")),
          (e: Error & { code?: string }) => /terminated|ECONNRESET/.test(`${e.message} ${e.code}`),
        );
        assert.ok((await rowsWithKey('cut-insert')) <= 1);
        assert.deepEqual(
          suppressed.map((e) => e.reason),
          ['unknown_outcome'],
        );
      },
    );

    it('a read-only SELECT is retried on a fresh connection and returns its rows', T, async () => {
      await pool.query('SELECT 1');
      const r = await cutMidStatement(() => pool.query('SELECT count(*)::int AS n FROM writes'));
      assert.equal(typeof r.rows[0].n, 'number');
      assert.ok(retries.length >= 1, 'retried');
      assert.equal(suppressed.length, 0);
    });

    it(
      "failed checkouts do not use up the read's attempts (counted apart, as a substitute's connect)",
      T,
      async () => {
        const one = new pg.Pool({ ...proxy.clientConfig(server), max: 1 });
        try {
          await one.query('SELECT 1'); // its one connection, warm
          // Six attempts where four are allowed: the read is cut twice, and the three checkouts after the
          // first cut are reset on accept (nothing sent). Three statement attempts, at most three
          // consecutive failed checkouts: each within retry.maxAttempts = 4.
          proxy.cutOnMessage({ match: /checkouts_apart/, when: 'after', mode: 'rst', limit: 2 });
          proxy.resetStats();
          proxy.resetNextConnections(3); // the warm connection needs no accept: these are the checkouts after the first cut
          const r = await one.query('SELECT 42 AS checkouts_apart');
          assert.equal(r.rows[0].checkouts_apart, 42);
          assert.equal(proxy.stats.cutOnMessage, 2, 'the read was cut twice');
          assert.equal(proxy.stats.resetOnAccept, 3, 'three checkouts were reset');
          assert.equal(retries.length, 5, 'six attempts in all');
          assert.equal(suppressed.length, 0);
        } finally {
          await one.end();
        }
      },
    );

    it('a statement marked idempotent() is retried', T, async () => {
      await pool.query('INSERT INTO accounts VALUES (1, 100) ON CONFLICT (id) DO UPDATE SET balance = 100');
      await pool.query('SELECT 1');
      const r = await cutMidStatement(() =>
        pool.query(idempotent({ text: 'UPDATE accounts SET balance = $1 WHERE id = 1', values: [250] })),
      );
      assert.equal(r.rowCount, 1);
      assert.ok(retries.length >= 1, 'retried');
      assert.equal((await server.query('SELECT balance FROM accounts WHERE id = 1')).rows[0].balance, 250);
    });
  });

  describe('connects', () => {
    it(
      'a refused connection is retried, and attempts do not multiply across Pool.query and Pool.connect',
      T,
      async () => {
        const fresh = new pg.Pool({ ...proxy.clientConfig(server), max: 2 });
        try {
          proxy.resetStats();
          proxy.resetNewConnections(1);
          await assert.rejects(fresh.query('SELECT 1'));
          assert.equal(proxy.stats.resetOnAccept, 4, 'retry.maxAttempts = 4 connections, end to end');
          assert.equal(retries.length, 3);
          proxy.resetNewConnections(0);
          assert.equal((await fresh.query('SELECT 1 AS one')).rows[0].one, 1);
        } finally {
          await fresh.end();
        }
      },
    );

    it('an INSERT whose checkout was reset (never sent) is retried and written exactly once', T, async () => {
      const fresh = new pg.Pool({ ...proxy.clientConfig(server), max: 2 });
      try {
        proxy.resetStats();
        proxy.resetNewConnections(1); // the checkout's connection dies before any statement is sent
        const heal = instrumentation.policies
          .forTarget(`${proxy.host}:${proxy.port}/${server.database}`)
          .onRetry(() => proxy.resetNewConnections(0));
        const r = await fresh.query("INSERT INTO writes (key) VALUES ('reset-checkout')");
        heal.dispose();
        assert.equal(r.rowCount, 1);
        assert.equal(proxy.stats.resetOnAccept, 1);
        assert.deepEqual(
          retries.map((e) => e.operation),
          ['query'],
        );
        assert.equal(suppressed.length, 0);
        assert.equal(await rowsWithKey('reset-checkout'), 1);
      } finally {
        await fresh.end();
      }
    });

    it('Pool.connect retries until a connection succeeds, then hands over a working client', T, async () => {
      const fresh = new pg.Pool({ ...proxy.clientConfig(server), max: 2 });
      try {
        proxy.resetStats();
        proxy.resetNewConnections(1);
        const heal = instrumentation.policies
          .forTarget(`${proxy.host}:${proxy.port}/${server.database}`)
          .onRetry(() => proxy.resetNewConnections(0));
        const client = await fresh.connect();
        try {
          assert.equal((await client.query('SELECT 1 AS one')).rows[0].one, 1);
        } finally {
          client.release();
        }
        heal.dispose();
        assert.equal(proxy.stats.resetOnAccept, 1);
        assert.deepEqual(
          retries.map((e) => e.operation),
          ['connect'],
        );
      } finally {
        await fresh.end();
      }
    });
  });

  describe('withTransaction', () => {
    beforeEach(async () => {
      await server.query(
        'TRUNCATE writes; DELETE FROM accounts; INSERT INTO accounts VALUES (1, 100), (2, 0)',
      );
    });

    it('re-runs the whole transaction after a serialization failure, and commits once', T, async () => {
      let runs = 0;
      const result = await withTransaction(pool, async (client: import('pg').PoolClient) => {
        runs++;
        await client.query("INSERT INTO writes (key) VALUES ('tx')");
        await client.query('SELECT flaky(2)');
        return 'done';
      });
      assert.equal(result, 'done');
      assert.equal(runs, 3);
      assert.equal(await rowsWithKey('tx'), 1, 'the failed runs were rolled back');
      assert.deepEqual(
        retries.map((e) => [e.operation, e.errorType]),
        [
          ['transaction', '40001'],
          ['transaction', '40001'],
        ],
      );
    });

    it('re-runs it after the connection is lost before COMMIT', T, async () => {
      let runs = 0;
      await withTransaction(pool, async (client: import('pg').PoolClient) => {
        runs++;
        await client.query("INSERT INTO writes (key) VALUES ('tx-lost')");
        if (runs === 1) proxy.resetOpenConnections();
        await client.query('UPDATE accounts SET balance = balance - 10 WHERE id = 1');
      });
      assert.equal(runs, 2);
      assert.equal(await rowsWithKey('tx-lost'), 1);
      assert.equal((await server.query('SELECT balance FROM accounts WHERE id = 1')).rows[0].balance, 90);
    });

    it(
      'the connection dies while COMMIT runs: asked on another connection, it committed: returns, not re-run',
      T,
      async () => {
        await server.query(`
        CREATE OR REPLACE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN PERFORM pg_sleep(0.4); RETURN NULL; END $$;
        DROP TRIGGER IF EXISTS slow_commit ON writes;
        CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON writes DEFERRABLE INITIALLY DEFERRED
          FOR EACH ROW EXECUTE FUNCTION slow_commit();
      `);
        let runs = 0;
        try {
          const result = await withTransaction(pool, async (client: import('pg').PoolClient) => {
            runs++;
            await client.query("INSERT INTO writes (key) VALUES ('tx-commit')");
            setTimeout(() => proxy.resetOpenConnections(), 150); // COMMIT is running its deferred trigger
            return 'done';
          });
          assert.equal(result, 'done');
          assert.equal(runs, 1);
          assert.equal(await rowsWithKey('tx-commit'), 1);
          assert.deepEqual(retries, [], 'not re-run');
        } finally {
          await server.query('DROP TRIGGER slow_commit ON writes');
        }
      },
    );

    it('raises TransactionRolledBackError when a failed statement was swallowed inside', T, async () => {
      await assert.rejects(
        withTransaction(pool, async (client: import('pg').PoolClient) => {
          await client.query("INSERT INTO writes (key) VALUES ('swallowed')");
          await client.query('SELECT 1/0').catch(() => {});
        }),
        (e: unknown) => isTransactionRolledBackError(e),
      );
      assert.equal(await rowsWithKey('swallowed'), 0);
    });

    it("rolls back and rethrows the callback's own error without retrying", T, async () => {
      let runs = 0;
      await assert.rejects(
        withTransaction(pool, async (client: import('pg').PoolClient) => {
          runs++;
          await client.query("INSERT INTO writes (key) VALUES ('own-error')");
          throw new Error('insufficient funds');
        }),
        /insufficient funds/,
      );
      assert.equal(runs, 1);
      assert.equal(await rowsWithKey('own-error'), 0);
    });

    it('rejects bad options with a message naming the option and what is allowed', async () => {
      await assert.rejects(
        withTransaction(pool, async () => {}, { isolationLevel: 'snapshot' as never }),
        /isolationLevel: "snapshot" is not allowed; use one of 'read committed', 'repeatable read', 'serializable'/,
      );
    });
  });

  describe('disable() and enable()', () => {
    it('disable() leaves pg untouched (no retry), enable() patches it again', T, async () => {
      instrumentation.disable();
      try {
        await assert.rejects(pool.query('SELECT flaky(1)'), { code: '40001' });
        assert.equal(retries.length, 0, 'no retry while disabled');
      } finally {
        instrumentation.enable();
      }
      await server.query('ALTER SEQUENCE flaky_seq RESTART');
      // The pool created before disable() is governed by the re-enabled policies (one breaker per target).
      const policy = instrumentation.policies.forTarget(`${proxy.host}:${proxy.port}/${server.database}`);
      let retried = 0;
      policy.onRetry(() => retried++);
      assert.equal((await pool.query('SELECT flaky(1) AS n')).rows[0].n, 2);
      assert.equal(retried, 1, 'retried again after enable(), by the target policy now in use');
    });
  });
});
