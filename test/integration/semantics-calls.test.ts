// pg's semantics, exactly: the semantic rows of the call-forms table (test/support/call-forms.ts) — async
// stack traces of rejected calls, and malformed arguments on a standalone Client, a Client from
// pool.connect() and Pool.query — run bare and with the package (test/support/hook-preload.ts, the
// sources' PgResilienceInstrumentation), in child processes, and compared case by case: channel (throw,
// callback, promise, uncaught exception, unhandled rejection), how many callbacks, error class and
// message, whether the stack names the caller's async functions, 'drain'/'error'/'end' events, and
// whether the connection still answers. Then a few calls whose answer closes the app's connection: the
// process must exit as soon as bare pg's does (an answer that never comes keeps it alive).
//
// PG_RESILIENCE_TEST_PG_DIR: run against the pg installed in that directory (pg-versions.test.ts
// installs the older supported releases under .tmp/pg-versions/<version>); else the devDependency.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CASES,
  diffReports,
  expectedWithPackage,
  formatDifferences,
  type Report,
} from '../support/call-forms.ts';
import { freshDatabase, type TestServer, useServer } from '../support/postgres.ts';

const SUPPORT = new URL('../support/', import.meta.url).pathname;
const PRELOAD = ['--import', join(SUPPORT, 'hook-preload.ts')];
const PG_DIR = process.env.PG_RESILIENCE_TEST_PG_DIR;

/** The version of the pg these runs load. */
const PG_VERSION = (() => {
  const req = createRequire(PG_DIR ? join(PG_DIR, 'package.json') : import.meta.url);
  const main = req.resolve('pg');
  return JSON.parse(readFileSync(join(main, '..', '..', 'package.json'), 'utf8')).version as string;
})();
const [MAJOR, MINOR] = PG_VERSION.split('.').map(Number);
/** pg re-captures a rejected query's stack so it names the app's async callers (8.11.5 does, 8.0.3 not). */
const PG_RESTORES_FRAMES = MAJOR! > 8 || (MAJOR === 8 && MINOR! >= 11);

const SEMANTIC = CASES.map((c) => c.name).filter(
  (n) => n.startsWith('async stack:') || n.startsWith('malformed'),
);

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** epoch ms when the process exited */
  endedAt: number;
  stdout: string;
  stderr: string;
}

/** `node ...nodeArgs file ...args`; killed after `killAfterMs`. */
function runNode(nodeArgs: string[], file: string, args: string[], killAfterMs: number): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--disable-warning=ExperimentalWarning', ...nodeArgs, join(SUPPORT, file), ...args],
      { env: { ...process.env, NODE_OPTIONS: '', NODE_TEST_CONTEXT: '' } },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, endedAt: Date.now(), stdout, stderr });
    });
  });
}

interface Answer {
  what: string;
  message: string | null;
}

/** Did the scenario's process exit within 2 s of starting its call, with which code and answers? */
function exitShape(e: Exit): { exitedWithin2s: boolean; code: number | null; answers: Answer[] } {
  const lines = e.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Answer & { started?: number });
  const started = lines[0]?.started;
  assert.ok(typeof started === 'number', `the scenario never started:\n${e.stderr}`);
  return {
    exitedWithin2s: e.signal === null && e.endedAt - started < 2000,
    code: e.code,
    answers: lines.slice(1).map(({ what, message }) => ({ what, message })),
  };
}

/** The table's semantic rows run in a child, in a database of its own (the cases create schemas by name). */
async function tableReport(nodeArgs: string[], server: TestServer, label: string): Promise<Report> {
  const url = await freshDatabase(server, `${server.database}_${label.replace(/\W+/g, '_')}`);
  const run = await runNode(nodeArgs, 'call-forms-runner.ts', [url, ...SEMANTIC], 120_000);
  assert.equal(run.code, 0, `${label} runner exited ${run.code}\n${run.stderr}`);
  return JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '') as Report;
}

describe('expectedWithPackage (the one deliberate difference, kept narrow)', () => {
  it("maps only a callback called ['error', 'result'] to ['error'], and names the case", () => {
    const err = { name: 'Error', message: 'x' };
    const bare = {
      a: { f: { callbackCalls: ['error', 'result'], callbackErr: err } },
      b: { f: { callbackCalls: ['error', 'error'] }, g: { callbackCalls: ['result'] } },
      c: { f: { callbackCalls: ['error'] } },
    };
    const { report, touched } = expectedWithPackage(bare);
    assert.deepEqual(report, { ...bare, a: { f: { callbackCalls: ['error'], callbackErr: err } } });
    assert.deepEqual(touched, ['a']);
  });
});

describe(`pg ${PG_VERSION}: calls behave as bare pg with the package loaded`, { timeout: 300_000 }, () => {
  let server: TestServer;
  let bare: Report;
  let loaded: Report;

  before(async () => {
    server = await useServer({ database: 'semantics' });
    // Side by side: the runs wait on timers and the server far more than they compute.
    [bare, loaded] = await Promise.all([
      tableReport([], server, 'bare'),
      tableReport(PRELOAD, server, 'with the package'),
    ]);
  });

  after(async () => {
    await server?.close();
  });

  it('the bare run is a meaningful baseline: every case ran, key facts of this pg hold', () => {
    assert.deepEqual(Object.keys(bare).sort(), [...SEMANTIC].sort());
    const failed = Object.entries(bare).filter(([, v]) => (v as { caseFailed?: unknown }).caseFailed);
    assert.deepEqual(failed, [], 'no case may fail in the bare run');
    const b = bare as any;
    assert.equal(b['async stack: await pool.query() rejected'].rejected.code, '42P01');
    assert.equal(b['async stack: await pool.query() rejected'].callerFramesKept, PG_RESTORES_FRAMES);
    assert.equal(
      b['async stack: await client.query() rejected (standalone client)'].callerFramesKept,
      PG_RESTORES_FRAMES,
    );
    const textObject = b["malformed: client.query({ text: {} }, cb) then client.query({}, cb) ('drain')"];
    assert.equal(textObject.first.calls, 1);
    assert.match(textObject.first.err.message, /A query must have either text or a name/);
    assert.equal(textObject.second.calls, 1);
    assert.ok(textObject.events.drain >= 1, "the client emits 'drain'");
    const standalone = b['malformed arguments: standalone client.query'];
    assert.equal(standalone['null, promise'].sync.threw.name, 'TypeError');
    assert.deepEqual(standalone['{}, callback'].callbackCalls, ['error']);
    assert.equal(
      standalone['a Submittable whose submit throws, promise'].sync.threw.message,
      'submit failed',
    );
  });

  it('same report as bare pg, case by case (deliberate differences applied)', async (t) => {
    const { report: expected, touched } = expectedWithPackage(bare);
    if (touched.length)
      t.diagnostic(`pg calls back twice (error, then result); once expected in: ${touched.join('; ')}`);
    for (const name of SEMANTIC) {
      await t.test(name, () => {
        assert.deepEqual(loaded[name], expected[name], `case "${name}" differs with the package`);
      });
    }
    const diffs = diffReports(expected, loaded);
    assert.deepEqual(
      diffs.map((d) => d.name),
      [],
      formatDifferences(diffs),
    );
  });

  // A process whose answer comes back closes its connection and exits at once; one whose answer never
  // comes hangs (killed at 8 s here). Exits within 2 s of starting its call with the package exactly
  // when it does bare, with the same answers.
  for (const scenario of [
    'client.query({ text: {} }, cb)',
    'client.query(text, [circular], cb)',
    'client.query(42, cb)',
    'pool.query({}, cb)',
    'await pool.query(bad SQL)',
  ]) {
    it(`exit: ${scenario}`, async () => {
      const args = [server.connectionString, scenario];
      const b = exitShape(await runNode([], 'exit-scenarios.ts', args, 8000));
      const l = exitShape(await runNode(PRELOAD, 'exit-scenarios.ts', args, 8000));
      assert.equal(b.exitedWithin2s, true, `bare pg must exit promptly: ${JSON.stringify(b)}`);
      assert.ok(b.answers.length >= 1, 'bare pg answers');
      // The deliberate difference: for a value it cannot serialise pg calls back a second time for the
      // same query (a result, or 'Connection terminated' once the first callback ended the client);
      // the package calls back once.
      const expected =
        scenario === 'client.query(text, [circular], cb)' ? { ...b, answers: b.answers.slice(0, 1) } : b;
      assert.deepEqual(l, expected);
    });
  }
});
