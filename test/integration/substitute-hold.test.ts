// retry.holdClientErrorWhileSubstituting (docs/retry-safety.md, "Substitute connections"; for slonik,
// docs/orms.md): a standalone client whose connection dies under a read that may run on a substitute
// holds its 'error' and 'end' until the read was answered, so an owner that fails its routine on the
// client's first 'error' (slonik's raceError) gets the rows; the owner still gets both events after.
// A write's or an in-transaction read's 'error' is never held. Real PostgreSQL behind the fault proxy.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { RetryEvent, RetrySuppressedEvent } from '../../src/policy/events.ts';
import type { FaultProxy as FaultProxyType } from '../support/fault-proxy.ts';
import type { TestServer } from '../support/postgres.ts';

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  retry: {
    maxAttempts: 3,
    initialDelayMs: 5,
    maxDelayMs: 20,
    budget: { enabled: false },
    holdClientErrorWhileSubstituting: true,
  },
  circuitBreaker: { enabled: false },
  recovery: { enabled: false },
  telemetry: { logLevel: 'off' },
});
const { startServer } = await import('../support/postgres.ts');
const { FaultProxy } = await import('../support/fault-proxy.ts');
const { requirePg } = await import('../support/pg-under-test.ts');
const pg = requirePg('pg') as typeof import('pg');

const T = { timeout: 30_000 };
type Client = import('pg').Client;

describe(
  "holding a dead standalone client's events while a substitute answers (real PostgreSQL)",
  { timeout: 120_000 },
  () => {
    let server: TestServer;
    let proxy: FaultProxyType;
    let retries: RetryEvent[];
    let suppressed: RetrySuppressedEvent[];
    const open: Client[] = [];

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

    async function standalone(): Promise<{ client: Client }> {
      const client = new pg.Client(proxy.clientConfig(server));
      client.on('error', () => {});
      await client.connect();
      open.push(client);
      return { client };
    }

    const isLost = (e: Error & { code?: string }): boolean =>
      /terminated|ECONNRESET/.test(`${e.message} ${e.code}`);
    const notQueryable = /not queryable/;

    before(async () => {
      server = await startServer();
      proxy = await FaultProxy.forServer(server);
      await server.query(`
      CREATE TABLE writes (key text);
      CREATE TABLE items (v text); INSERT INTO items VALUES ('public');
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
      await Promise.all(open.map((c) => Promise.race([c.end().catch(() => {}), sleep(2_000)])));
      await proxy?.close();
      await server?.close();
    });

    it(
      "an owner that fails its routine on the client's first 'error' (as slonik does) gets the rows; 'error' then 'end' follow the answer",
      T,
      async () => {
        const { client } = await standalone();
        const seen: string[] = [];
        client.on('error', () => seen.push('error'));
        client.on('end', () => seen.push('end'));
        await client.query('SELECT 1');
        // slonik's raceError: the routine is settled by its result or by the client's 'error', first wins.
        const routine = (): Promise<unknown> =>
          new Promise((resolve, reject) => {
            client.once('error', reject);
            client.query('SELECT v FROM items').then(
              (r) => {
                seen.push('rows');
                client.removeListener('error', reject);
                resolve(r.rows);
              },
              (e: unknown) => {
                client.removeListener('error', reject);
                reject(e);
              },
            );
          });
        const rows = await cutMidStatement(routine);
        assert.deepEqual(rows, [{ v: 'public' }]);
        assert.equal(retries.length, 1);
        for (let i = 0; i < 50 && !seen.includes('end'); i++) await sleep(10);
        // pg emits 'error' once or twice (the reset, then 'Connection terminated unexpectedly'), then 'end'.
        assert.equal(seen[0], 'rows', 'the owner still learns the client died, after the answer');
        assert.match(seen.slice(1).join(' '), /^error( error)? end$/);
        await assert.rejects(client.query('SELECT 1'), notQueryable);
      },
    );

    it(
      "a write cut mid-flight: the client's 'error' comes at once, before the statement's error (as bare pg)",
      T,
      async () => {
        const { client } = await standalone();
        const seen: string[] = [];
        client.on('error', () => seen.push('error'));
        await client.query('SELECT 1');
        await assert.rejects(
          cutMidStatement(() =>
            client.query("INSERT INTO writes (key) VALUES ('held-write')").catch((e: unknown) => {
              seen.push('rejected');
              throw e;
            }),
          ),
          isLost,
        );
        assert.deepEqual(seen, ['error', 'rejected']);
        assert.equal(retries.length, 0);
      },
    );

    it("a read inside a transaction: the client's 'error' comes at once (no substitute)", T, async () => {
      const { client } = await standalone();
      const seen: string[] = [];
      client.on('error', () => seen.push('error'));
      await client.query('BEGIN');
      await assert.rejects(
        cutMidStatement(() =>
          client.query('SELECT v FROM items').catch((e: unknown) => {
            seen.push('rejected');
            throw e;
          }),
        ),
        isLost,
      );
      assert.deepEqual(seen, ['error', 'rejected']);
      assert.equal(suppressed[0]?.reason, 'in_transaction');
    });
  },
);
