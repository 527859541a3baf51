// A COMMIT lost in flight gets an answer: withTransaction learns the transaction id before COMMIT and,
// when the connection dies with COMMIT in flight, asks the server on another connection what became of
// it (txid_status). Real PostgreSQL, the fault proxy cutting the connection right after forwarding COMMIT
// (it committed) or right before (it did not), in process: pg is patched by a PgResilienceInstrumentation
// created before pg loads.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { CommitOutcomeEvent, RetryEvent } from '../../src/policy/events.ts';
import type { FaultProxy as FaultProxyType } from '../support/fault-proxy.ts';
import type { TestServer } from '../support/postgres.ts';

const RESOLUTION_MS = 3000;
// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  // connection_lost has its own attempt cap (5 by default): with 15 % of COMMITs cut "before", one transfer
  // in ~13,000 loses five in a row and fails as it should (the 1,000-transfer run saw it once in ~25 runs).
  // Ten attempts keep that run about resolutions, not about exhausting attempts.
  retry: {
    maxAttempts: 6,
    initialDelayMs: 1,
    maxDelayMs: 10,
    budget: { enabled: false },
    perErrorClass: { connection_lost: { maxAttempts: 10 } },
  },
  circuitBreaker: { enabled: false },
  recovery: { enabled: false },
  transaction: { outcomeResolutionMs: RESOLUTION_MS },
});
const { startServer } = await import('../support/postgres.ts');
const { FaultProxy, seededRandom } = await import('../support/fault-proxy.ts');
const { default: pg } = await import('pg');
const { withTransaction, isTransactionOutcomeUnknownError, isTransactionRolledBackError } =
  await import('../../src/index.ts');

const T = { timeout: 30_000 };
const COMMIT = /^COMMIT/;

describe(
  'a COMMIT lost in flight gets an answer (real PostgreSQL, fault proxy)',
  { timeout: 180_000 },
  () => {
    let server: TestServer;
    let proxy: FaultProxyType;
    let pool: import('pg').Pool;
    let outcomes: CommitOutcomeEvent[];
    let retries: RetryEvent[];

    const rowsWithKey = async (key: string): Promise<number> =>
      Number((await server.query('SELECT count(*)::int AS n FROM writes WHERE key = $1', [key])).rows[0].n);
    const insert = (client: import('pg').PoolClient, key: string) =>
      client.query('INSERT INTO writes (key) VALUES ($1)', [key]);

    before(async () => {
      server = await startServer({ settings: { max_connections: '60' } });
      proxy = await FaultProxy.start({
        targetHost: server.host,
        targetPort: server.port,
        random: seededRandom(20261204),
      });
      await server.query('CREATE TABLE writes (key text)');
      pool = new pg.Pool({ ...proxy.clientConfig(server), max: 10 });
      pool.on('error', () => {}); // a cut idle client must not kill the process
      const policy = instrumentation.policies.forTarget(`${proxy.host}:${proxy.port}/${server.database}`);
      policy.onCommitOutcome((e) => outcomes.push(e));
      policy.onRetry((e) => retries.push(e));
    });

    beforeEach(async () => {
      outcomes = [];
      retries = [];
      proxy.clear();
      proxy.resetStats();
      await server.query("SET lock_timeout = '5s'; TRUNCATE writes"); // a backend left stuck by a failure must not hang the rest
    });

    after(async () => {
      await pool?.end();
      await proxy?.close();
      await server?.close();
      instrumentation.disable();
    });

    it(
      'cut right after COMMIT was forwarded: it committed, the call returns the result, ran once',
      T,
      async () => {
        proxy.cutOnMessage({ match: COMMIT, when: 'after', limit: 1 });
        let runs = 0;
        const result = await withTransaction(pool, async (client: import('pg').PoolClient) => {
          runs++;
          await insert(client, 'committed');
          return 'done';
        });
        assert.equal(result, 'done');
        assert.equal(runs, 1);
        assert.equal(proxy.stats.cutOnMessage, 1, 'the COMMIT really was cut');
        assert.equal(await rowsWithKey('committed'), 1);
        assert.equal(outcomes.length, 1);
        assert.equal(outcomes[0]!.result, 'committed');
        assert.match(outcomes[0]!.transactionId ?? '', /^\d+$/);
        assert.ok(outcomes[0]!.lookups >= 1);
        assert.equal(retries.length, 0);
      },
    );

    it(
      'cut right before COMMIT was forwarded: it aborted, the transaction ran again and committed once',
      T,
      async () => {
        proxy.cutOnMessage({ match: COMMIT, when: 'before', limit: 1 });
        let runs = 0;
        const result = await withTransaction(pool, async (client: import('pg').PoolClient) => {
          runs++;
          await insert(client, 'aborted');
          return runs;
        });
        assert.equal(result, 2, 'the second run returned');
        assert.equal(proxy.stats.cutOnMessage, 1);
        assert.equal(await rowsWithKey('aborted'), 1, 'the first run did not commit, the second did');
        assert.deepEqual(
          outcomes.map((e) => e.result),
          ['aborted'],
        );
        assert.deepEqual(
          retries.map((e) => e.operation),
          ['transaction'],
          'the re-run counts as an attempt',
        );
      },
    );

    it(
      'a partition the server does not notice, before COMMIT: its backend waits idle in transaction; it is ended, found aborted, and the transaction runs again',
      T,
      async () => {
        proxy.cutOnMessage({ match: COMMIT, when: 'before', mode: 'partition', limit: 1 });
        let runs = 0;
        const started = Date.now();
        const result = await withTransaction(pool, async (client: import('pg').PoolClient) => {
          runs++;
          await insert(client, 'partition');
          return runs;
        });
        const elapsed = Date.now() - started;
        assert.equal(result, 2);
        assert.equal(await rowsWithKey('partition'), 1);
        assert.deepEqual(
          outcomes.map((e) => e.result),
          ['aborted'],
        );
        assert.ok(elapsed < RESOLUTION_MS / 2, `settled without waiting for the bound: ${elapsed} ms`);
      },
    );

    it(
      'a partition the server does not notice, after COMMIT: it committed, the result is returned',
      T,
      async () => {
        proxy.cutOnMessage({ match: COMMIT, when: 'after', mode: 'partition', limit: 1 });
        let runs = 0;
        await withTransaction(pool, async (client: import('pg').PoolClient) => {
          runs++;
          await insert(client, 'partition-after');
        });
        assert.equal(runs, 1);
        assert.equal(await rowsWithKey('partition-after'), 1);
        assert.deepEqual(
          outcomes.map((e) => e.result),
          ['committed'],
        );
      },
    );

    it(
      'a failed transaction (an error caught inside) whose COMMIT is lost: TransactionRolledBackError, as COMMIT would have answered',
      T,
      async () => {
        proxy.cutOnMessage({ match: COMMIT, when: 'after', limit: 1 });
        let runs = 0;
        await assert.rejects(
          withTransaction(pool, async (client: import('pg').PoolClient) => {
            runs++;
            await insert(client, 'swallowed');
            await client.query('SELECT 1/0').catch(() => {});
          }),
          (e: unknown) => isTransactionRolledBackError(e),
        );
        assert.equal(runs, 1);
        assert.equal(proxy.stats.cutOnMessage, 1);
        assert.equal(await rowsWithKey('swallowed'), 0);
      },
    );

    it(
      'a transaction that wrote nothing needs no lookup: its result stands (not under SERIALIZABLE)',
      T,
      async () => {
        proxy.cutOnMessage({ match: COMMIT, when: 'after', limit: 1 });
        let runs = 0;
        const n = await withTransaction(pool, async (client: import('pg').PoolClient) => {
          runs++;
          return (await client.query('SELECT count(*)::int AS n FROM writes')).rows[0].n as number;
        });
        assert.equal(n, 0);
        assert.equal(runs, 1);
        assert.deepEqual(
          outcomes.map((e) => [e.result, e.transactionId, e.lookups]),
          [['committed', undefined, 0]],
        );

        // SERIALIZABLE: COMMIT is the last serializability check, so it runs again (it wrote nothing).
        proxy.cutOnMessage({ match: COMMIT, when: 'after', limit: 1 });
        runs = 0;
        await withTransaction(
          pool,
          async (client: import('pg').PoolClient) => {
            runs++;
            await client.query('SELECT 1');
          },
          { isolationLevel: 'serializable' },
        );
        assert.equal(runs, 2);
        assert.equal(outcomes[1]?.result, 'aborted');
      },
    );

    it(
      'server unreachable for longer than outcomeResolutionMs: TransactionOutcomeUnknownError carrying the transaction id',
      T,
      async () => {
        proxy.cutOnMessage({ match: COMMIT, when: 'after', limit: 1, onCut: () => void proxy.refuse(true) });
        let runs = 0;
        const started = Date.now();
        let error: unknown;
        try {
          await withTransaction(pool, async (client: import('pg').PoolClient) => {
            runs++;
            await insert(client, 'unknown');
          });
          assert.fail('resolved while the server was unreachable');
        } catch (e) {
          error = e;
        } finally {
          await proxy.refuse(false);
        }
        const elapsed = Date.now() - started;
        assert.ok(isTransactionOutcomeUnknownError(error), String(error));
        const id = error.transactionId;
        assert.match(id ?? '', /^\d+$/);
        assert.ok(error.message.includes(`txid_status(${id})`), error.message);
        assert.equal(runs, 1, 'never re-run');
        assert.ok(elapsed >= RESOLUTION_MS - 50 && elapsed < RESOLUTION_MS + 2000, `took ${elapsed} ms`);
        assert.deepEqual(
          outcomes.map((e) => [e.result, e.transactionId]),
          [['unknown', id]],
        );
        assert.ok(outcomes[0]!.lookups >= 2, 'it kept asking');
        // What an operator would do: the id answers by hand, and agrees with the table.
        let status: string | null = 'in progress';
        for (let i = 0; i < 100 && status === 'in progress'; i++) {
          status = (await server.query('SELECT txid_status($1::bigint) AS s', [id])).rows[0].s;
          if (status === 'in progress') await sleep(20);
        }
        assert.ok(status === 'committed' || status === 'aborted', String(status));
        assert.equal(await rowsWithKey('unknown'), status === 'committed' ? 1 : 0);
      },
    );

    it(
      '1,000 transfers with COMMITs cut before and after: the ledger is exact, no outcome left unknown',
      { timeout: 90_000 },
      async () => {
        const ACCOUNTS = 20;
        const WORKERS = 8;
        const TRANSFERS = 1000;
        const INITIAL = 1_000_000;
        await server.query(`
      DROP TABLE IF EXISTS accounts, transfers;
      CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
      CREATE TABLE transfers (id text NOT NULL, src int NOT NULL, dst int NOT NULL, amount int NOT NULL);
      INSERT INTO accounts SELECT i, ${INITIAL} FROM generate_series(1, ${ACCOUNTS}) i;
    `);
        const plan = Array.from({ length: TRANSFERS }, (_, i) => ({
          id: `t${i}`,
          src: 1 + (i % ACCOUNTS),
          dst: 1 + ((i * 7 + 3) % ACCOUNTS),
          amount: 1 + (i % 97),
        })).filter((t) => t.src !== t.dst);
        // Half the run loses COMMIT's answer after the server got it, half loses COMMIT itself.
        const cut = (when: 'before' | 'after') => proxy.cutOnMessage({ match: COMMIT, when, share: 0.15 });
        cut('after');
        const acknowledged: string[] = [];
        const failures: unknown[] = [];
        let next = 0;
        const started = Date.now();
        await Promise.all(
          Array.from({ length: WORKERS }, async () => {
            while (next < plan.length && Date.now() - started < 60_000) {
              const t = plan[next++]!;
              if (next === Math.floor(plan.length / 2)) cut('before');
              try {
                await withTransaction(pool, async (client: import('pg').PoolClient) => {
                  await client.query('INSERT INTO transfers VALUES ($1, $2, $3, $4)', [
                    t.id,
                    t.src,
                    t.dst,
                    t.amount,
                  ]);
                  // In id order, so concurrent transfers never deadlock.
                  for (const [id, delta] of [
                    [t.src, -t.amount],
                    [t.dst, t.amount],
                  ].sort((a, b) => a[0]! - b[0]!)) {
                    await client.query('UPDATE accounts SET balance = balance + $2 WHERE id = $1', [
                      id,
                      delta,
                    ]);
                  }
                });
                acknowledged.push(t.id);
              } catch (e) {
                failures.push(e);
              }
            }
          }),
        );
        const elapsed = Date.now() - started;
        proxy.cutOnMessage(null);
        const counts = { committed: 0, aborted: 0, unknown: 0 };
        for (const e of outcomes) counts[e.result]++;

        assert.ok(elapsed < 60_000, `bounded: ${elapsed} ms`);
        assert.equal(acknowledged.length + failures.length, plan.length, 'every transfer ran');
        assert.equal(
          failures.filter((e) => isTransactionOutcomeUnknownError(e)).length,
          0,
          'no outcome unknown',
        );
        assert.deepEqual(failures.map(String), [], 'every transfer succeeded');
        assert.ok(
          counts.committed >= 20 && counts.aborted >= 20,
          `faults bit both ways: ${JSON.stringify(counts)}`,
        );
        assert.equal(counts.unknown, 0);

        // The ledger, read directly on the server: each acknowledged transfer applied exactly once.
        const applied = (await server.query('SELECT id, count(*)::int AS n FROM transfers GROUP BY id'))
          .rows as Array<{
          id: string;
          n: number;
        }>;
        assert.deepEqual(
          applied.filter((r) => r.n !== 1).map((r) => r.id),
          [],
          'no transfer applied twice',
        );
        assert.deepEqual(
          applied.map((r) => r.id).sort(),
          [...acknowledged].sort(),
          'exactly the acknowledged ones',
        );
        const expected = new Map<number, number>();
        for (let a = 1; a <= ACCOUNTS; a++) expected.set(a, INITIAL);
        for (const t of plan) {
          expected.set(t.src, expected.get(t.src)! - t.amount);
          expected.set(t.dst, expected.get(t.dst)! + t.amount);
        }
        const balances = (await server.query('SELECT id, balance::int AS balance FROM accounts ORDER BY id'))
          .rows;
        assert.deepEqual(
          balances.map((r: { id: number; balance: number }) => [r.id, r.balance]),
          [...expected],
          'balances match the transfers',
        );
        console.log(
          `# ledger: ${plan.length} transfers in ${elapsed} ms, ${proxy.stats.cutOnMessage} COMMITs cut, resolutions ${JSON.stringify(counts)}`,
        );
      },
    );
  },
);
