// pg's lifecycle semantics, exactly, under the instrumentation: what `client.end()` does to a call in
// progress, compared with bare pg on a real PostgreSQL.
// - `connect(); end();` with no await between: a child process (fixtures/connect-end-child.ts) per call
//   form, bare and hooked, so what holds or crashes the process shows as its exit code and timing.
// - a statement in flight when the app ends its client: sent once, never again (no retry on another
//   connection, no replay of a transaction), counted in pg_stat_activity; the callback fires once with
//   pg's own error.
// PG_RESILIENCE_TEST_PG_DIR: run against the pg (and its pg-pool) installed in that directory, as
// retry-rules.test.ts does (pg-versions.test.ts installs the older releases into .tmp/pg-versions/).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { TestServer } from '../support/postgres.ts';
import { hookedThenBare } from '../support/both-arms.ts';

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
// Defaults, except recovery probes (they would only add connections to count).
const instrumentation = new PgResilienceInstrumentation({ recovery: { enabled: false } });
const { startServer } = await import('../support/postgres.ts');
const { idempotent, withTransaction } = await import('../../src/index.ts');
const { requirePg } = await import('../support/pg-under-test.ts');
const pg = requirePg('pg') as typeof import('pg');

const T = { timeout: 60_000 };
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = fileURLToPath(new URL('./fixtures/connect-end-child.ts', import.meta.url));
const REGISTER = fileURLToPath(new URL('../../src/register.ts', import.meta.url));
const SLEEP_TEXT = 'select pg_sleep($1)';

describe('pg lifecycle semantics under the instrumentation (real PostgreSQL)', { timeout: 300_000 }, () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.close();
  });

  // ---- connect(); end(); ----

  interface ChildRun {
    code: number | null;
    stdout: string;
    stderr: string;
    /** What the fixture recorded at exit. */
    result: { events: string[]; code: number; msAfterCalls: number } | undefined;
  }

  /** Runs the fixture; kills it (and fails) after 20 s. */
  async function runChild(mode: 'bare' | 'hooked', form: string, register = false): Promise<ChildRun> {
    const args = ['--disable-warning=ExperimentalWarning'];
    if (register) args.push('--import', REGISTER);
    const child = spawn(process.execPath, [...args, CHILD], {
      cwd: ROOT,
      env: {
        ...process.env,
        NODE_TEST_CONTEXT: undefined,
        LIFECYCLE_MODE: mode,
        LIFECYCLE_FORM: form,
        LIFECYCLE_PG: JSON.stringify(server.clientConfig()),
        OTEL_TRACES_EXPORTER: 'none',
        OTEL_METRICS_EXPORTER: 'none',
        OTEL_LOGS_EXPORTER: 'none',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
    clearTimeout(killer);
    const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
    const result = line ? (JSON.parse(line.slice('RESULT '.length)) as ChildRun['result']) : undefined;
    return { code, stdout, stderr, result };
  }

  /** Under the hook: the same exit code and events as bare pg, nothing of ours printed, no lingering. */
  function assertLikeBare(hooked: ChildRun, bare: ChildRun): void {
    assert.ok(bare.result, `bare child printed no RESULT: ${bare.stderr}`);
    assert.ok(hooked.result, `hooked child printed no RESULT (killed?): ${hooked.stderr}`);
    assert.doesNotMatch(`${hooked.stdout}${hooked.stderr}`, /pg-resilience|OperationTimeoutError/);
    assert.equal(hooked.code, bare.code, hooked.stderr);
    assert.deepEqual(hooked.result.events, bare.result.events);
    assert.ok(
      hooked.result.msAfterCalls < 2_000,
      `the process lingered ${hooked.result.msAfterCalls} ms after connect(); end()`,
    );
  }

  describe('connect(); end(); with no await in between', () => {
    for (const form of ['raw', 'promise', 'callback', 'allSettled']) {
      it(`${form}: settles (or not) as bare pg, exits at once, logs nothing`, T, async () => {
        const bare = await runChild('bare', form);
        const hooked = await runChild('hooked', form);
        // What bare pg does (every supported 8.x): end() ends the connection, the connect is never
        // answered (neither callback nor promise), no 'error' event, and the process exits at once.
        assert.ok(bare.result, bare.stderr);
        assert.ok(
          !bare.result.events.some((e) => e.startsWith('connect') || e.startsWith('allSettled')),
          JSON.stringify(bare.result.events),
        );
        assertLikeBare(hooked, bare);
      });
    }

    it('under the register hook (--import pg-resilience/register): the same', T, async () => {
      const bare = await runChild('bare', 'promise');
      const registered = await runChild('bare', 'promise', true);
      assertLikeBare(registered, bare);
    });
  });

  // ---- a statement in flight when the app ends its client ----

  let appSeq = 0;
  /** A config whose backends are told apart by application_name (pg_sleep backends outlive their client). */
  const tagged = (): { config: import('pg').ClientConfig; app: string } => {
    const app = `lifecycle-${process.pid}-${++appSeq}`;
    return { config: server.clientConfig({ application_name: app }), app };
  };

  /** Backends of `app` running the app's statement. */
  const running = async (app: string): Promise<number> =>
    Number(
      (
        await server.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE query = $1 AND state = 'active' AND application_name = $2`,
          [SLEEP_TEXT, app],
        )
      ).rows[0].n,
    );

  /** Waits until the statement runs on the server (bounded). */
  async function untilRunning(app: string): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if ((await running(app)) >= 1) return;
      await sleep(20);
    }
    assert.fail('the statement never started on the server');
  }

  /** The most backends seen running the statement over `ms` (a retry or replay would show up). */
  async function mostRunning(app: string, ms = 1_000): Promise<number> {
    let most = 0;
    const until = performance.now() + ms;
    while (performance.now() < until) {
      most = Math.max(most, await running(app));
      await sleep(50);
    }
    return most;
  }

  interface Seen {
    /** Errors the app's callback or promise got, in order (each once, or it shows). */
    errors: string[];
    /** Backends running the statement, at most, after end(). */
    running: number;
  }

  const sleepQuery = () => new pg.Query({ name: 'sleep query', text: SLEEP_TEXT, values: [5] });
  const sleepConfig = () => ({ name: 'sleep query', text: SLEEP_TEXT, values: [5] });
  const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

  function assertSentOnce({ hooked, bare }: { hooked: Seen; bare: Seen }): void {
    assert.deepEqual(bare, { errors: ['Connection terminated'], running: 1 }, 'bare pg');
    assert.deepEqual(hooked, bare);
  }

  describe('a named statement in flight when the app ends its client: sent once, never again', () => {
    it('standalone Client, client.query(new Query(…), callback), client.end()', T, async () => {
      assertSentOnce(
        await hookedThenBare(instrumentation, async () => {
          const { config, app } = tagged();
          const client = new pg.Client(config);
          client.on('error', () => {});
          await client.connect();
          const errors: string[] = [];
          client.query(sleepQuery() as never, (e: Error | null) => errors.push(e ? e.message : 'ok'));
          await untilRunning(app);
          await client.end();
          return { running: await mostRunning(app), errors };
        }),
      );
    });

    it('standalone Client, promise form with a plain config, client.end()', T, async () => {
      assertSentOnce(
        await hookedThenBare(instrumentation, async () => {
          const { config, app } = tagged();
          const client = new pg.Client(config);
          client.on('error', () => {});
          await client.connect();
          const errors: string[] = [];
          const done = client.query(sleepConfig()).then(
            () => errors.push('ok'),
            (e: unknown) => errors.push(message(e)),
          );
          await untilRunning(app);
          await client.end();
          const most = await mostRunning(app);
          await done;
          return { running: most, errors };
        }),
      );
    });

    for (const how of ['client.end()', 'release(true)'] as const) {
      it(`pooled client (pool.connect()), callback and promise forms, then ${how}`, T, async () => {
        for (const form of ['callback', 'promise'] as const) {
          assertSentOnce(
            await hookedThenBare(instrumentation, async () => {
              const { config, app } = tagged();
              const pool = new pg.Pool({ ...config, max: 2 });
              pool.on('error', () => {});
              try {
                const client = await pool.connect();
                client.on('error', () => {});
                const errors: string[] = [];
                if (form === 'callback') {
                  client.query(sleepQuery() as never, (e: Error | null) => errors.push(e ? e.message : 'ok'));
                } else {
                  void client.query(sleepConfig()).then(
                    () => errors.push('ok'),
                    (e: unknown) => errors.push(message(e)),
                  );
                }
                await untilRunning(app);
                if (how === 'release(true)') client.release(true);
                else await client.end();
                return { running: await mostRunning(app), errors };
              } finally {
                await Promise.race([pool.end(), sleep(1_000)]);
              }
            }),
          );
        }
      });
    }

    it(
      'Pool.query, even marked idempotent, when the app ends the client it was given (acquire)',
      T,
      async () => {
        for (const form of ['callback', 'promise'] as const) {
          assertSentOnce(
            await hookedThenBare(instrumentation, async () => {
              const { config, app } = tagged();
              const pool = new pg.Pool({ ...config, max: 2 });
              pool.on('error', () => {});
              const acquired: import('pg').PoolClient[] = [];
              pool.on('acquire', (c) => acquired.push(c));
              try {
                const errors: string[] = [];
                const q = idempotent(sleepConfig());
                if (form === 'callback') {
                  pool.query(q, (e: Error | null) => {
                    errors.push(e ? e.message : 'ok');
                  });
                } else {
                  void pool.query(q).then(
                    () => errors.push('ok'),
                    (e: unknown) => errors.push(message(e)),
                  );
                }
                await untilRunning(app);
                assert.equal(acquired.length, 1);
                await acquired[0]!.end();
                return { running: await mostRunning(app), errors };
              } finally {
                await Promise.race([pool.end(), sleep(1_000)]);
              }
            }),
          );
        }
      },
    );

    it('withTransaction: the callback ends its client: not run again', T, async () => {
      const { config, app } = tagged();
      const pool = new pg.Pool({ ...config, max: 2 });
      pool.on('error', () => {});
      try {
        const errors: string[] = [];
        let runs = 0;
        const outcome = await withTransaction(pool, async (client) => {
          runs++;
          const statement = client.query(sleepConfig());
          await untilRunning(app);
          await (client as unknown as import('pg').PoolClient).end();
          await statement.catch((e: unknown) => {
            errors.push(message(e));
            throw e;
          });
        }).then(
          () => 'ok',
          (e: unknown) => message(e),
        );
        assert.deepEqual(
          { outcome, runs, errors, running: await mostRunning(app) },
          { outcome: 'Connection terminated', runs: 1, errors: ['Connection terminated'], running: 1 },
        );
      } finally {
        await Promise.race([pool.end(), sleep(1_000)]);
      }
    });
  });
});
