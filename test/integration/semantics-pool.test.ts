// Pool checkouts under the instrumentation keep pg's semantics: a checkout that timed out waiting for a
// free client is not retried (waiting checkouts keep their FIFO order and the pool's
// connectionTimeoutMillis stays the bound), connectionTimeoutMillis bounds each connect attempt, and
// an open breaker says why it opened and never delays a rejection. In process, against a real
// PostgreSQL and plain TCP servers that accept and never answer. Instrumentation defaults, as the
// register hook uses them.
//
// PG_RESILIENCE_TEST_PG_DIR: run against the pg installed in that directory (an older pg 8.x, as
// retry-rules.test.ts does; pg-versions.test.ts installs them).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { RetryEvent, RetrySuppressedEvent } from '../../src/policy/events.ts';
import type { TestServer } from '../support/postgres.ts';

/** A TCP server that accepts connections and never says a word (a blackholed database). */
async function silentServer(): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

// Started before the instrumentation: its target gets a package connect timeout shorter than the
// pool's connectionTimeoutMillis, to show the pool's bound is the one that holds.
const slowTarget = await silentServer();
const SHORT_CONNECT_MS = 100;
// A relay to the real server (started later) whose target has the same short package connect timeout:
// a pool with no connectionTimeoutMillis of its own waits for a free client as long as bare pg does.
const { startRelay } = await import('../support/relay.ts');
const waitRelay = await startRelay();

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  targets: {
    [`127.0.0.1:${slowTarget.port}/d`]: { timeout: { connectMs: SHORT_CONNECT_MS } },
    [`127.0.0.1:${waitRelay.port}/app`]: { timeout: { connectMs: SHORT_CONNECT_MS } },
  },
});
const { startServer } = await import('../support/postgres.ts');
const { FaultProxy } = await import('../support/fault-proxy.ts');
const { requirePg, versionOf } = await import('../support/pg-under-test.ts');
const pg = requirePg('pg') as typeof import('pg');
const { isCircuitOpenError } = await import('../../src/index.ts');

const POOL_TIMEOUT = 'timeout exceeded when trying to connect';
const T = { timeout: 30_000 };

type Form = 'callback' | 'promise';
interface Outcome {
  error?: Error;
  client?: import('pg').PoolClient;
  /** Callback form: how many times the callback ran (checked again after the call settled). */
  calls: number;
  ms: number;
}

/** One pool.connect() in the given form; resolves when it settles (or with no outcome at `limitMs`). */
function checkout(pool: import('pg').Pool, form: Form, limitMs: number): Promise<Outcome | undefined> {
  const started = performance.now();
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), limitMs);
    const done = (o: Omit<Outcome, 'ms'>) => {
      clearTimeout(timer);
      resolve({ ...o, ms: performance.now() - started });
    };
    if (form === 'promise') {
      pool.connect().then(
        (client) => done({ client, calls: 1 }),
        (error: Error) => done({ error, calls: 1 }),
      );
    } else {
      const outcome = { calls: 0 } as Outcome;
      pool.connect((error, client) => {
        outcome.calls++;
        if (outcome.calls > 1) return;
        done(Object.assign(outcome, { error: error ?? undefined, client }));
      });
    }
  });
}

/**
 * Retries the policies scheduled for `target` while `run` ran, and the retries they refused (the retry
 * budget's refusals included, so a spent budget cannot hide a retry that would have happened).
 */
async function retriesDuring<T>(
  target: string,
  run: () => Promise<T>,
): Promise<[T, RetryEvent[], RetrySuppressedEvent[]]> {
  const events: RetryEvent[] = [];
  const refused: RetrySuppressedEvent[] = [];
  const policy = instrumentation.policies.forTarget(target);
  const subs = [policy.onRetry((e) => events.push(e)), policy.onRetrySuppressed((e) => refused.push(e))];
  try {
    return [await run(), events, refused];
  } finally {
    for (const sub of subs) sub.dispose();
  }
}

const delays = (events: RetryEvent[]) => events.reduce((sum, e) => sum + e.delayMs, 0);

describe('pool checkout semantics', { timeout: 180_000 }, () => {
  let server: TestServer;
  const pools: import('pg').Pool[] = [];
  const silent: { close(): void }[] = [slowTarget];
  const proxies: { close(): Promise<void> }[] = [];

  const newPool = (config: import('pg').PoolConfig) => {
    const pool = new pg.Pool(config);
    pool.on('error', () => {});
    pools.push(pool);
    return pool;
  };
  const target = () => `${server.host}:${server.port}/${server.database}`;

  before(async () => {
    server = await startServer();
    waitRelay.to(server.port);
  });

  after(async () => {
    // Bounded: a failed test may have left a client checked out, and pool.end() waits for it.
    const ended = Promise.all(pools.map((p) => p.end().catch(() => {})));
    await Promise.race([ended, new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
    for (const s of silent) s.close();
    await Promise.all(proxies.map((p) => p.close()));
    await waitRelay.close();
    await server?.close();
  });

  it('runs against a supported pg 8.x and the pg-pool it loads', (t) => {
    t.diagnostic(`pg ${versionOf('pg')}, pg-pool ${versionOf('pg-pool')}`);
    assert.match(versionOf('pg'), /^8\./);
    assert.match(versionOf('pg-pool'), /^3\./);
  });

  describe('a checkout that timed out waiting for a free client', () => {
    // max 1, held; the second waits; at 100 ms a third queues; the holder releases when the second
    // times out. pg: the second fails at connectionTimeoutMillis, the third gets the client.
    for (const form of ['callback', 'promise'] as const) {
      it(`pool.connect (${form}): is not retried, and the next waiter gets the client`, T, async () => {
        const pool = newPool({ ...server.clientConfig(), max: 1, connectionTimeoutMillis: 200 });
        const holder = await pool.connect();
        const [[second, third], retries, refused] = await retriesDuring(target(), async () => {
          const secondP = checkout(pool, form, 5_000);
          const thirdP = new Promise<Outcome | undefined>((resolve) =>
            setTimeout(() => resolve(checkout(pool, form, 5_000)), 100),
          );
          const s = await secondP;
          holder.release();
          return [s, await thirdP];
        });
        after(() => third?.client?.release());
        assert.ok(second, 'the second checkout settled');
        assert.equal(second.error?.message, POOL_TIMEOUT);
        assert.ok(second.ms >= 190 && second.ms < 600, `second failed after ${second.ms} ms, not ~200`);
        assert.ok(third, 'the third checkout settled');
        assert.equal(third.error, undefined, `third: ${third.error?.message}`);
        assert.ok(third.client, 'the third got the client');
        assert.equal((await third.client.query('SELECT 1 AS n')).rows[0].n, 1);
        assert.deepEqual(retries, [], 'no retry');
        assert.deepEqual(refused, [], 'no retry even considered');
        assert.equal(second.calls, 1);
        assert.equal(third.calls, 1);
      });
    }

    it(
      'a pool without connectionTimeoutMillis: a waiting checkout outlasts timeout.connectMs, in FIFO order',
      T,
      async () => {
        // The target's timeout.connectMs is 100 ms; the holder keeps the one client for 400 ms. Bare pg
        // waits; so must the hook (no timeout, no retry at the back of the queue).
        const pool = newPool({ ...server.clientConfig(), port: waitRelay.port, max: 1 });
        const holder = await pool.connect();
        const relayTarget = `127.0.0.1:${waitRelay.port}/${server.database}`;
        const order: string[] = [];
        const [[second, third], retries] = await retriesDuring(relayTarget, async () => {
          const secondP = checkout(pool, 'promise', 5_000).then((o) => (order.push('second'), o));
          const thirdP = new Promise<Outcome | undefined>((resolve) =>
            setTimeout(
              () => resolve(checkout(pool, 'callback', 5_000).then((o) => (order.push('third'), o))),
              50,
            ),
          );
          setTimeout(() => holder.release(), 400);
          const s = await secondP;
          setTimeout(() => s?.client?.release(), 50);
          return [s, await thirdP];
        });
        after(() => third?.client?.release());
        assert.equal(second?.error, undefined, `second: ${second?.error?.message}`);
        assert.ok(
          second && second.ms >= 390,
          `second got a client after ${second?.ms} ms, before the holder released`,
        );
        assert.equal(third?.error, undefined, `third: ${third?.error?.message}`);
        assert.deepEqual(order, ['second', 'third'], 'first come, first served');
        assert.deepEqual(retries, [], 'no retry');
      },
    );

    it('pool.query: is not retried, and the next waiter runs its statement', T, async () => {
      const pool = newPool({ ...server.clientConfig(), max: 1, connectionTimeoutMillis: 200 });
      const holder = await pool.connect();
      const started = performance.now();
      const [[second, third], retries, refused] = await retriesDuring(target(), async () => {
        const secondP = pool.query('SELECT 2 AS n').then(
          () => ({ ms: performance.now() - started }) as { error?: Error; ms: number },
          (error: Error) => ({ error, ms: performance.now() - started }),
        );
        const thirdP = new Promise<unknown>((resolve) => setTimeout(resolve, 100)).then(() =>
          pool.query('SELECT 3 AS n'),
        );
        const s = await secondP;
        holder.release();
        return [s, await thirdP] as const;
      });
      assert.equal(second.error?.message, POOL_TIMEOUT);
      assert.ok(second.ms >= 190 && second.ms < 600, `second failed after ${second.ms} ms, not ~200`);
      assert.equal((third as import('pg').QueryResult).rows[0].n, 3);
      assert.deepEqual(retries, [], 'no retry');
      assert.deepEqual(refused, [], 'no retry even considered');
    });
  });

  it(
    'waiting checkouts are served in the order they asked (promise and callback forms mixed)',
    T,
    async () => {
      const pool = newPool({ ...server.clientConfig(), max: 1, connectionTimeoutMillis: 5_000 });
      const holder = await pool.connect();
      const order: string[] = [];
      const take = (name: string) =>
        pool.connect().then((c) => {
          order.push(name);
          c.release();
        });
      const waiting = [
        take('connect 1'),
        new Promise<void>((resolve) =>
          pool.connect((err, c, done) => {
            order.push(err ? `error ${err.message}` : 'connect 2 (callback)');
            done();
            resolve();
          }),
        ),
        take('connect 3'),
        take('connect 4'),
      ];
      await new Promise((resolve) => setTimeout(resolve, 50));
      holder.release();
      await Promise.all(waiting);
      assert.deepEqual(order, ['connect 1', 'connect 2 (callback)', 'connect 3', 'connect 4']);
    },
  );

  describe('connectionTimeoutMillis bounds each connect attempt', () => {
    it(
      'a silent server: each attempt lasts the pool timeout, not the package connect timeout',
      T,
      async () => {
        const pool = newPool({
          host: '127.0.0.1',
          port: slowTarget.port,
          user: 'x',
          database: 'd',
          connectionTimeoutMillis: 300,
        });
        const name = `127.0.0.1:${slowTarget.port}/d`;
        const maxAttempts = instrumentation.policies.forTarget(name).settings.retry.maxAttempts;
        const [outcome, retries] = await retriesDuring(name, () => checkout(pool, 'promise', 10_000));
        assert.ok(outcome, 'settled');
        // pg-pool's own error, after its own timeout (not the package's 100 ms OperationTimeoutError).
        assert.match(String(outcome.error?.message), /timeout/);
        assert.ok(!outcome.error?.message.includes(`${SHORT_CONNECT_MS} ms`), outcome.error?.message);
        const attempts = retries.length + 1;
        assert.equal(attempts, maxAttempts, 'connect_timeout is retried up to the attempts');
        const bound = attempts * 300 + delays(retries);
        assert.ok(outcome.ms >= attempts * 300 - 20, `${outcome.ms} ms for ${attempts} attempts of 300 ms`);
        assert.ok(outcome.ms <= bound + 300, `${outcome.ms} ms > ${bound} ms + slack`);
      },
    );

    it(
      'a refusing server: retried, and the call ends within attempts × timeout + the retry delays',
      T,
      async () => {
        const closed = await silentServer();
        closed.close(); // nothing listens on that port any more: ECONNREFUSED
        const pool = newPool({
          host: '127.0.0.1',
          port: closed.port,
          user: 'x',
          database: 'd',
          connectionTimeoutMillis: 200,
        });
        const name = `127.0.0.1:${closed.port}/d`;
        const [outcome, retries] = await retriesDuring(name, () => checkout(pool, 'callback', 20_000));
        assert.ok(outcome, 'settled');
        assert.match(String((outcome.error as { code?: string }).code ?? outcome.error), /ECONNREFUSED/);
        assert.ok(retries.length >= 1, 'a refused connect is retried');
        assert.ok(retries.every((e) => e.errorClass === 'connect_refused'));
        const bound = (retries.length + 1) * 200 + delays(retries);
        assert.ok(outcome.ms <= bound + 300, `${outcome.ms} ms > ${bound} ms + slack`);
        assert.equal(outcome.calls, 1);
      },
    );
  });

  describe('a silent server with connectionTimeoutMillis 10', () => {
    // pg: every pool.connect() fails within ~10 ms with a message containing "timeout". Under the
    // instrumentation a connect is retried and the breaker opens; each rejection must still arrive within
    // the attempts × 10 ms plus the retry delays, and a CircuitOpenError must say what opened it.
    /** 20 sequential checkouts of `pool` (target `name`), each checked against the bound. */
    const twentyCheckouts = async (pool: import('pg').Pool, name: string, form: Form) => {
      const retry = instrumentation.policies.forTarget(name).settings.retry;
      const attempts = Math.max(retry.maxAttempts, retry.perErrorClass.connect_timeout?.maxAttempts ?? 0);
      let circuitOpen = 0;
      for (let i = 0; i < 20; i++) {
        const [outcome, retries] = await retriesDuring(name, () => checkout(pool, form, 5_000));
        assert.ok(outcome, `call ${i}: no answer within 5 s`);
        const bound = attempts * 10 + delays(retries) + 250;
        assert.ok(outcome.ms <= bound, `call ${i}: settled after ${outcome.ms} ms > ${bound} ms`);
        const error = outcome.error;
        assert.ok(error, `call ${i}: failed`);
        if (isCircuitOpenError(error)) {
          circuitOpen++;
          const cause = error.cause as Error;
          assert.ok(cause instanceof Error, `call ${i}: the CircuitOpenError carries its cause`);
          assert.match(cause.message, /timeout/);
          assert.ok(
            error.message.endsWith(`(opened after: ${cause.message})`),
            `call ${i}: ${error.message}`,
          );
        } else {
          assert.match(error.message, /timeout/, `call ${i}`);
        }
        assert.equal(outcome.calls, 1);
      }
      assert.ok(circuitOpen > 0, 'the breaker opened (defaults: 5 failures in a row)');
    };

    for (const form of ['callback', 'promise'] as const) {
      it(
        `pool.connect (${form}) × 20, a silent TCP server: each settles in time, says "timeout" or why the breaker opened`,
        T,
        async () => {
          const blackhole = await silentServer();
          silent.push(blackhole);
          const pool = newPool({
            host: '127.0.0.1',
            port: blackhole.port,
            user: 'x',
            database: 'd',
            connectionTimeoutMillis: 10,
          });
          await twentyCheckouts(pool, `127.0.0.1:${blackhole.port}/d`, form);
        },
      );

      it(`pool.connect (${form}) × 20, the fault proxy's blackhole: the same`, T, async () => {
        const proxy = await FaultProxy.forServer(server);
        proxies.push(proxy);
        proxy.blackhole(true);
        const pool = newPool(proxy.clientConfig(server, { connectionTimeoutMillis: 10 }) as object);
        await twentyCheckouts(pool, `${proxy.host}:${proxy.port}/${server.database}`, form);
      });
    }
  });
});
