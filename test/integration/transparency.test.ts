// Transparency: every call form of pg behaves exactly as without the package. The call-forms table
// (test/support/call-forms.ts) runs in child processes, once bare and once with the package loaded the
// way users load it, and the two reports must be deep-equal case by case.
//
// Where it runs: a scratch app (test/support/package.ts) with the packed pg-resilience, pg, pg-cursor
// and pg-query-stream installed from the registry. The runner and the table are copied into the app, so
// `pg` resolves from the app's node_modules and `--require pg-resilience/register` resolves the
// package the way it does for a user (not the repository's src/ or dist/). The bare run uses the same
// app and the same files: the only difference between the runs is the flag. The runs go at once, each in
// a database of its own (they wait on timers and the server far more than they compute).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { diffReports, expectedWithPackage, formatDifferences, type Report } from '../support/call-forms.ts';
import { scratchApp, type ScratchApp } from '../support/package.ts';
import { freshDatabase, type TestServer, useServer } from '../support/postgres.ts';

const SUPPORT = new URL('../support/', import.meta.url).pathname;
const RUNNER = 'call-forms-runner.ts';

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  report?: Report;
}

/** `node ...nodeArgs call-forms-runner.ts <connectionString>` in the app's directory (async: the test
 * process keeps running while the child works). */
function runRunner(
  app: ScratchApp,
  nodeArgs: string[],
  connectionString: string,
  loader: 'require' | 'import' = 'require',
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--disable-warning=ExperimentalWarning', ...nodeArgs, RUNNER, connectionString],
      { cwd: app.dir, env: { ...process.env, NODE_OPTIONS: '', CALL_FORMS_LOADER: loader } },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      let report: Report | undefined;
      try {
        report = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as Report;
      } catch {
        report = undefined;
      }
      resolve({ code, stdout, stderr, ...(report ? { report } : {}) });
    });
  });
}

function reportOf(run: RunResult, label: string): Report {
  assert.equal(run.code, 0, `${label} runner exited ${run.code}\n${run.stderr}`);
  assert.ok(run.report, `${label} runner printed no JSON report:\n${run.stdout}\n${run.stderr}`);
  return run.report;
}

/**
 * The one accepted deviation, kept narrow and visible: with the package loaded, a query callback that
 * gets an error is called as `cb(err, undefined)` (2 arguments) instead of pg's `cb(err)` (1).
 * OpenTelemetry's instrumentation-pg, which `register` starts, wraps query callbacks in
 * `patchedCallback(err, res) { …; cb.call(this, err, res) }` (dist/utils.mjs, `patchCallback`).
 * Only arguments.length sees it. This maps exactly that shape (one call, 2 arguments, an error, no
 * result) back to 1 argument in the loaded report and names the cases it touched; everything else,
 * including argCount in any other shape, is compared as recorded.
 */
function toleratedDeviations(report: Report): { report: Report; touched: string[] } {
  const touched = new Set<string>();
  const walk = (value: unknown, name: string): unknown => {
    if (Array.isArray(value)) return value.map((v) => walk(v, name));
    if (value === null || typeof value !== 'object') return value;
    const o = value as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) out[k] = walk(v, name);
    if (o.calls === 1 && o.argCount === 2 && o.err !== null && o.result === 'undefined') {
      out.argCount = 1;
      touched.add(name);
    }
    return out;
  };
  const out: Report = {};
  for (const [name, value] of Object.entries(report)) out[name] = walk(value, name);
  return { report: out, touched: [...touched] };
}

describe('comparator (the comparison has teeth)', () => {
  const base: Report = {
    'client.query(text)': { kind: 'promise', result: { rows: [{ n: 1 }] } },
    'client.query(text, cb)': { kind: 'undefined', callback: { calls: 1, err: null } },
  };

  it('equal reports: no differences', () => {
    assert.deepEqual(diffReports(base, structuredClone(base)), []);
  });

  it('one case differing deep inside: reports exactly that case, by name', () => {
    const other = structuredClone(base) as any;
    other['client.query(text, cb)'].callback.calls = 2;
    const diffs = diffReports(base, other);
    assert.deepEqual(
      diffs.map((d) => d.name),
      ['client.query(text, cb)'],
    );
    assert.match(formatDifferences(diffs), /case "client\.query\(text, cb\)" differs/);
  });

  it('the tolerated deviation is only (err, undefined) for (err): nothing else is masked', () => {
    const err = { instanceofError: true, name: 'Error', code: null, message: 'x', severity: null };
    const bareCb = { calls: 1, argCount: 1, err, result: 'undefined' };
    const arity = { c: { callback: { ...bareCb, argCount: 2 } } };
    assert.deepEqual(toleratedDeviations(arity), { report: { c: { callback: bareCb } }, touched: ['c'] });
    for (const other of [
      { ...bareCb, argCount: 2, calls: 2 },
      { ...bareCb, argCount: 2, err: null },
      { ...bareCb, argCount: 3 },
      { ...bareCb, argCount: 2, result: { rows: [] } },
    ]) {
      const r = { c: { callback: other } };
      assert.deepEqual(toleratedDeviations(r), { report: r, touched: [] });
    }
  });

  it('a case missing on either side is a difference', () => {
    const fewer = { 'client.query(text)': base['client.query(text)'] };
    assert.deepEqual(
      diffReports(base, fewer).map((d) => d.name),
      ['client.query(text, cb)'],
    );
    assert.deepEqual(
      diffReports(fewer, base).map((d) => d.name),
      ['client.query(text, cb)'],
    );
  });
});

// pg loaded with require() (a CommonJS app) or import() (an ES module app: pg's ESM entry). The
// bare import() run must already equal the bare require() one: pg's ESM entry re-exports the
// CommonJS classes.
const VARIANTS = [
  ['bare, pg loaded with import()', [], 'import'],
  [
    '--require pg-resilience/register, pg loaded with require()',
    ['--require', 'pg-resilience/register'],
    'require',
  ],
  [
    '--import pg-resilience/register, pg loaded with require()',
    ['--import', 'pg-resilience/register'],
    'require',
  ],
  [
    '--import pg-resilience/register, pg loaded with import()',
    ['--import', 'pg-resilience/register'],
    'import',
  ],
] as const;

const PERTURB = `const { Client } = require('pg');
const query = Client.prototype.query;
Client.prototype.query = function (...args) {
  const ret = query.apply(this, args);
  return typeof args[args.length - 1] === 'function' && ret === undefined ? Promise.resolve() : ret;
};
`;

describe(
  'transparency: every pg call form behaves the same with the package loaded',
  { timeout: 240_000 },
  () => {
    let server: TestServer;
    let app: ScratchApp;
    let bare: Report;
    /** Every run at once (they wait on timers and the server far more than they compute). */
    const runs = new Map<string, Promise<RunResult>>();

    before(async () => {
      server = await useServer({ database: 'transparency' });
      app = scratchApp('transparency', ['pg-cursor@^2', 'pg-query-stream@^4']);
      for (const file of ['call-forms.ts', RUNNER]) copyFileSync(join(SUPPORT, file), join(app.dir, file));
      // A typical wrapper bug, for the comparator's teeth: client.query returns a promise even when a
      // callback was passed.
      app.write('perturb.cjs', PERTURB);
      // Each run in a database of its own (the cases create schemas by name).
      const databaseFor = (run: number) => freshDatabase(server, `${server.database}_${run}`);
      const started = Date.now();
      for (const [i, [label, nodeArgs, loader]] of VARIANTS.entries())
        runs.set(label, runRunner(app, [...nodeArgs], await databaseFor(i + 1), loader));
      runs.set('perturbed', runRunner(app, ['--require', './perturb.cjs'], await databaseFor(0)));
      // Awaited by their tests; a spawn failure is reported there, not as an unhandled rejection.
      for (const run of runs.values()) run.catch(() => undefined);
      bare = reportOf(await runRunner(app, [], server.connectionString), 'bare');
      console.log(`bare call-forms run: ${Object.keys(bare).length} cases in ${Date.now() - started} ms`);
    });

    after(async () => {
      app?.remove();
      await server?.close();
    });

    it('the bare run is a meaningful baseline: every case ran, key facts of pg hold', () => {
      const failed = Object.entries(bare).filter(([, v]) => (v as { caseFailed?: unknown }).caseFailed);
      assert.deepEqual(failed, [], 'no case may fail in the bare run');
      assert.ok(Object.keys(bare).length >= 30, `only ${Object.keys(bare).length} cases`);
      const b = bare as any;
      assert.equal(b['client.query(text)'].kind, 'promise');
      assert.equal(b['client.query(text, values, cb)'].kind, 'undefined');
      assert.equal(b['pg-cursor: read 2 then close'].kind, 'same-submittable');
      assert.equal(
        b['query_timeout (client config) with pg_sleep'].settled.rejected.message,
        'Query read timeout',
      );
      assert.equal(
        b['synchronous throws: null/undefined query, non-function callback'].nullQuery.threw.name,
        'TypeError',
      );
      assert.equal(b['release(err) destroys the client'].after, 0);
    });

    for (const [label, nodeArgs] of VARIANTS) {
      it(`${label}: same report as bare pg, case by case`, async (t) => {
        const raw = reportOf(await runs.get(label)!, label);
        const { report: loaded, touched } = toleratedDeviations(raw);
        if (touched.length) {
          t.diagnostic(`tolerated (err, undefined) callback arity in: ${touched.join('; ')}`);
        }
        // The package's deliberate differences (call-forms.ts, expectedWithPackage); none for bare runs.
        const expected = nodeArgs.length === 0 ? bare : expectedWithPackage(bare).report;
        for (const name of Object.keys(expected)) {
          await t.test(name, () => {
            assert.deepEqual(loaded[name], expected[name], `case "${name}" differs with ${label}`);
          });
        }
        const diffs = diffReports(expected, loaded);
        assert.deepEqual(
          diffs.map((d) => d.name),
          [],
          formatDifferences(diffs),
        );
      });
    }

    it('a preload that changes one pg behaviour is caught, naming the cases it changed', async () => {
      const perturbed = reportOf(await runs.get('perturbed')!, 'perturbed');
      const names = diffReports(bare, perturbed).map((d) => d.name);
      assert.ok(names.includes('client.query(text, values, cb)'), `not caught: ${names.join(', ')}`);
      assert.ok(names.includes('client.query(text, cb)'), `not caught: ${names.join(', ')}`);
      assert.ok(!names.includes('client.query(text)'), `promise forms are unchanged: ${names.join(', ')}`);
    });
  },
);
