// A standalone `new pg.Client()` (what knex, Sequelize and slonik pool themselves) whose connect fails
// before its session is ready is connected again on the same Client object (client-reconnect.ts),
// against a real PostgreSQL behind the fault proxy, which resets chosen new connections right after
// accepting them. Each test runs the app's view (the connect's answer, the client's 'end' and 'error'
// events, a query afterwards) under the hook and, where it compares, bare (the package disabled).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { RetryEvent, RetrySuppressedEvent } from '../../src/policy/events.ts';
import type { FaultProxy as FaultProxyType } from '../support/fault-proxy.ts';
import type { TestServer } from '../support/postgres.ts';
import { hookedThenBare } from '../support/both-arms.ts';

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const fast = { initialDelayMs: 5, maxDelayMs: 20 };
const instrumentation = new PgResilienceInstrumentation({
  retry: {
    maxAttempts: 4,
    ...fast,
    budget: { enabled: false },
    perErrorClass: {
      connection_lost: { maxAttempts: 4, ...fast },
      connect_refused: { maxAttempts: 3, ...fast },
    },
  },
  circuitBreaker: { enabled: false },
  recovery: { enabled: false },
});
const { startServer } = await import('../support/postgres.ts');
const { FaultProxy } = await import('../support/fault-proxy.ts');
// PG_RESILIENCE_TEST_PG_DIR: run against the pg installed in that directory (an older pg 8.x).
const { requirePg } = await import('../support/pg-under-test.ts');
const pg = requirePg('pg') as typeof import('pg');

const T = { timeout: 30_000 };
type Client = import('pg').Client;

/** A socket class of the app's own, as a tunnel or a wrapper would pass in `stream`. */
class AppSocket extends net.Socket {}

describe(
  'a standalone client reconnected after a failed connect (real PostgreSQL)',
  { timeout: 120_000 },
  () => {
    let server: TestServer;
    let proxy: FaultProxyType;
    let retries: RetryEvent[];
    let suppressed: RetrySuppressedEvent[];
    let listeners: Array<{ dispose(): void }> = [];
    /** How many of the next new connections the proxy resets at once. */
    let resetsLeft = 0;
    const open: Client[] = [];

    /** A client through the proxy with every 'end' and 'error' it emits recorded, in order. */
    function tracked(overrides: object = {}): { client: Client; seen: string[] } {
      const client = new pg.Client(proxy.clientConfig(server, overrides));
      const seen: string[] = [];
      client.on('end', () => seen.push('end'));
      client.on('error', (e: Error & { code?: string }) => seen.push(`error:${e.code ?? e.message}`));
      open.push(client);
      return { client, seen };
    }

    /** connect() as the app awaits it: what it answered, recorded in `seen` where the events are. */
    async function connect(client: Client, seen: string[]): Promise<void> {
      await client.connect().then(
        () => seen.push('connected'),
        (e: Error & { code?: string }) => seen.push(`rejected:${e.code ?? e.message}`),
      );
    }

    before(async () => {
      server = await startServer();
      // The proxy's random draw decides which new connections are reset: the next `resetsLeft` are.
      proxy = await FaultProxy.start({
        targetHost: server.host,
        targetPort: server.port,
        random: () => (resetsLeft-- > 0 ? 0 : 0.999),
      });
    });

    beforeEach(() => {
      retries = [];
      suppressed = [];
      resetsLeft = 0;
      proxy.clear();
      proxy.resetStats();
      // enable() after disable() starts from fresh policies: listen to this test's.
      const policy = instrumentation.policies.forTarget(`${proxy.host}:${proxy.port}/${server.database}`);
      listeners = [
        policy.onRetry((e) => retries.push(e)),
        policy.onRetrySuppressed((e) => suppressed.push(e)),
      ];
    });

    afterEach(() => {
      for (const l of listeners) l.dispose();
    });

    after(async () => {
      await Promise.all(open.map((c) => Promise.race([c.end().catch(() => {}), sleep(2_000)])));
      await proxy?.close();
      await server?.close();
    });

    it(
      'a connect whose first new connections are reset succeeds under the hook (bare pg fails it), emits no end/error for them, and the client queries normally',
      T,
      async () => {
        const { hooked, bare } = await hookedThenBare(instrumentation, async () => {
          proxy.resetNewConnections(0.9);
          proxy.resetStats();
          resetsLeft = 2;
          const { client, seen } = tracked();
          await connect(client, seen);
          await sleep(100); // any late 'end' or 'error' of a failed attempt would arrive by now
          const connected = seen.includes('connected');
          const rows = connected ? (await client.query('SELECT 41 + 1 AS n')).rows : undefined;
          const accepted = proxy.stats.accepted;
          const resetOnAccept = proxy.stats.resetOnAccept;
          resetsLeft = 0;
          // pg 8.0: end() never settles after a failed connect (it waits for an end already emitted).
          await Promise.race([client.end().catch(() => {}), sleep(500)]);
          await sleep(20);
          return { seen, rows, accepted, resetOnAccept, retries: retries.map((r) => r.operation) };
        });
        // Under the hook: two reset connections, then the third connects; the app sees one connect, no
        // 'end' or 'error' of the failed attempts, its query, and then the 'end' of its own end().
        assert.deepEqual(hooked.seen, ['connected', 'end']);
        assert.deepEqual(hooked.rows, [{ n: 42 }]);
        assert.equal(hooked.accepted, 3);
        assert.equal(hooked.resetOnAccept, 2);
        assert.deepEqual(hooked.retries, ['connect', 'connect']);
        // Bare pg: the first reset fails the connect, then 'end'.
        assert.deepEqual(bare.seen, ['rejected:ECONNRESET', 'end']);
        assert.equal(bare.accepted, 1);
      },
    );

    it('the callback form gets one answer, (null, client), after the retries', T, async () => {
      proxy.resetNewConnections(0.9);
      resetsLeft = 1;
      const { client, seen } = tracked();
      const answers: unknown[][] = [];
      await new Promise<void>((resolve) => {
        client.connect((...args: unknown[]) => {
          answers.push(args);
          resolve();
        });
      });
      await sleep(50);
      assert.equal(answers.length, 1);
      assert.equal(answers[0]![0], null);
      assert.deepEqual(seen, []);
      assert.equal(retries.length, 1);
      assert.deepEqual((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
    });

    it(
      "listeners put on client.connection before connect (Sequelize's 'parameterStatus') hear the connection that succeeded",
      T,
      async () => {
        proxy.resetNewConnections(0.9);
        resetsLeft = 1;
        const { client, seen } = tracked();
        const connection = (client as unknown as { connection: import('node:events').EventEmitter })
          .connection;
        const params: string[] = [];
        connection.on('parameterStatus', (m: { parameterName: string }) => params.push(m.parameterName));
        await connect(client, seen);
        assert.deepEqual(seen, ['connected']);
        assert.equal(retries.length, 1);
        assert.ok(params.includes('server_version'), `parameterStatus heard: ${params.join(', ')}`);
      },
    );

    it(
      'when every attempt fails (the proxy refuses), the app gets the error and then one end, as with bare pg',
      T,
      async () => {
        await proxy.refuse(true);
        try {
          const { hooked, bare } = await hookedThenBare(instrumentation, async () => {
            const { client, seen } = tracked();
            await connect(client, seen);
            await sleep(100);
            return { seen, retries: retries.length };
          });
          assert.deepEqual(hooked.seen, ['rejected:ECONNREFUSED', 'end']);
          assert.equal(hooked.retries, 2); // connect_refused: 3 attempts
          assert.deepEqual(bare.seen, hooked.seen);
        } finally {
          await proxy.refuse(false);
        }
      },
    );

    it('a connect whose attempts are all reset: the last error, then one end', T, async () => {
      proxy.resetNewConnections(1);
      const { client, seen } = tracked();
      await connect(client, seen);
      await sleep(100);
      assert.deepEqual(seen, ['rejected:ECONNRESET', 'end']);
      assert.equal(proxy.stats.accepted, 4); // connection_lost: 4 attempts
      assert.equal(retries.length, 3);
    });

    it(
      'a Client given a stream of its own is not reconnected: bare pg’s error and end, the retry suppressed',
      T,
      async () => {
        proxy.resetNewConnections(0.9);
        resetsLeft = 1;
        const { client, seen } = tracked({ stream: new AppSocket() });
        await connect(client, seen);
        await sleep(100);
        assert.deepEqual(seen, ['rejected:ECONNRESET', 'end']);
        assert.equal(proxy.stats.accepted, 1);
        assert.equal(retries.length, 0);
        assert.deepEqual(
          suppressed.map((s) => [s.operation, s.reason]),
          [['connect', 'not_retryable']],
        );
      },
    );

    it(
      'end() between two attempts: the connect stays unanswered, as pg leaves a connect that end() cut short; one end, nothing reconnects',
      T,
      async () => {
        proxy.resetNewConnections(0.9);
        resetsLeft = 1;
        const { client, seen } = tracked();
        let ended: Promise<void> | undefined;
        const policy = instrumentation.policies.forTarget(`${proxy.host}:${proxy.port}/${server.database}`);
        const listener = policy.onRetry(() => {
          ended ??= client.end();
        });
        try {
          void connect(client, seen);
          await sleep(300);
          assert.ok(ended, 'the connect was retried');
          await Promise.race([ended, sleep(2_000)]);
          assert.deepEqual(seen, ['end']); // no answer to the connect, the end of the failed attempt
          assert.equal(proxy.stats.accepted, 1);
        } finally {
          listener.dispose();
        }
      },
    );
  },
);
