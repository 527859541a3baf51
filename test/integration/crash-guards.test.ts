// The crash guards (src/crash-guards/error-guards.ts) against a real PostgreSQL. Every scenario runs in a
// child process (fixtures/crash-child.ts) so that a crash is observable as an exit code: bare pg must
// die (proving the scenario really crashes), the instrumentation must keep the process alive.
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { ClientErrorAbsorbedEvent } from '../../src/index.ts';
import { startServer, type TestServer } from '../support/postgres.ts';

const T = { timeout: 60_000 };
const CHILD = new URL('./fixtures/crash-child.ts', import.meta.url).pathname;

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  result?: {
    before: number;
    afterError: number;
    queryOk: boolean;
    events: ClientErrorAbsorbedEvent[];
    listenerErrors: string[];
  };
}

type Mode = 'bare' | 'guarded' | 'disabled';
type Scenario = 'idle' | 'checkedout' | 'listener';

/** Starts the child, waits for READY, runs `fault`, tells the child to go on, and collects its exit. */
async function runChild(
  server: TestServer,
  mode: Mode,
  scenario: Scenario,
  fault: () => Promise<unknown>,
): Promise<ChildResult> {
  const child: ChildProcessWithoutNullStreams = spawn(
    process.execPath,
    ['--disable-warning=ExperimentalWarning', CHILD],
    {
      env: {
        ...process.env,
        CRASH_MODE: mode,
        CRASH_SCENARIO: scenario,
        CRASH_PG: JSON.stringify(server.clientConfig({ connectionTimeoutMillis: 5000 })),
      },
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdin.on('error', () => {}); // the child may already be dead
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('exit', (code, signal) => resolve([code, signal])),
  );
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.includes('READY ')) resolve();
    });
    child.stderr.on('data', (chunk: string) => (stderr += chunk));
    void exited.then(() => reject(new Error(`child exited before READY: ${stderr}`)));
  });
  try {
    await ready;
    await fault();
    child.stdin.write('go\n');
    const [code, signal] = await exited;
    const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
    const result = line ? (JSON.parse(line.slice('RESULT '.length)) as ChildResult['result']) : undefined;
    return { code, signal, stdout, stderr, ...(result ? { result } : {}) };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

describe('crash guards (child processes, real PostgreSQL)', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.close();
  });

  const terminate = () => server.terminateBackends();

  describe('(a) an idle pooled client, no pool error listener, backend terminated', () => {
    it('bare pg: the process dies with the uncaught error', T, async () => {
      const r = await runChild(server, 'bare', 'idle', terminate);
      assert.notEqual(r.code, 0, `expected a crash, got exit ${r.code}: ${r.stdout}`);
      assert.match(r.stderr, /terminating connection|Connection terminated/);
      assert.equal(r.result, undefined);
    });

    it(
      'with the instrumentation: survives, reports the event, evicts the client, next query works',
      T,
      async () => {
        const r = await runChild(server, 'guarded', 'idle', terminate);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.result);
        assert.equal(r.result.queryOk, true);
        assert.equal(r.result.before, 1);
        assert.equal(r.result.afterError, 0, 'pg-pool evicted the dead client');
        assert.deepEqual(r.result.events, [
          { target: `${server.host}:${server.port}/${server.database}`, source: 'pool', errorType: '57P01' },
        ]);
      },
    );

    it('after disable(): the crash is back', T, async () => {
      const r = await runChild(server, 'disabled', 'idle', terminate);
      assert.notEqual(r.code, 0, `expected a crash, got exit ${r.code}: ${r.stdout}`);
      assert.match(r.stderr, /terminating connection|Connection terminated/);
    });
  });

  describe('(b) a checked-out client with no error listener, backend terminated', () => {
    it('bare pg: the process dies', T, async () => {
      const r = await runChild(server, 'bare', 'checkedout', terminate);
      assert.notEqual(r.code, 0, `expected a crash, got exit ${r.code}: ${r.stdout}`);
      assert.match(r.stderr, /terminating connection|Connection terminated/);
    });

    it('with the instrumentation: survives, reports the event, next query works', T, async () => {
      const r = await runChild(server, 'guarded', 'checkedout', terminate);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.result);
      assert.equal(r.result.queryOk, true);
      // pg emits the FATAL 57P01, then (on the socket's end) "Connection terminated unexpectedly":
      // two errors, each absorbed and reported once.
      const target = `${server.host}:${server.port}/${server.database}`;
      assert.deepEqual(r.result.events[0], { target, source: 'client', errorType: '57P01' });
      for (const e of r.result.events) assert.deepEqual([e.target, e.source], [target, 'client']);
      assert.ok(r.result.events.length <= 2, JSON.stringify(r.result.events));
    });
  });

  describe("(c) the app's own pool.on('error') listener", () => {
    it('still receives the error, and nothing is absorbed', T, async () => {
      const r = await runChild(server, 'guarded', 'listener', terminate);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.result);
      assert.deepEqual(r.result.listenerErrors, ['57P01']);
      assert.deepEqual(r.result.events, []);
      assert.equal(r.result.queryOk, true);
    });
  });

  describe('(d) server stop while idle clients exist', () => {
    it('bare pg: the process dies', T, async () => {
      const r = await runChild(server, 'bare', 'idle', async () => {
        await server.stop();
        await new Promise((res) => setTimeout(res, 300));
        await server.start();
      });
      assert.notEqual(r.code, 0, `expected a crash, got exit ${r.code}: ${r.stdout}`);
    });

    it('with the instrumentation: survives, and queries work once the server is back', T, async () => {
      const r = await runChild(server, 'guarded', 'idle', async () => {
        await server.stop();
        await new Promise((res) => setTimeout(res, 300));
        await server.start();
      });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.result);
      assert.equal(r.result.queryOk, true);
      assert.equal(r.result.afterError, 0);
      assert.equal(r.result.events.length, 1, JSON.stringify(r.result.events));
      assert.equal(r.result.events[0]?.source, 'pool');
    });
  });
});
