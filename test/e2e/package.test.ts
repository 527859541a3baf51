/**
 * The package as users install it: the `npm pack` tarball in scratch CommonJS, ESM and TypeScript
 * apps; a clear failure on an unsupported Node; and the repository's commands (`npm run demo`, `npm test`) on
 * Node 20, where they must run themselves under a supported Node provisioned from the npm registry.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { nodeVersionOf, provisionNode } from '../../scripts/supported-node.mjs';
import { repoRoot, type ScratchApp, scratchApp } from '../support/package.ts';

let app: ScratchApp;
let node20: string;

before(() => {
  app = scratchApp('load');
  node20 = provisionNode(20);
  assert.match(nodeVersionOf(node20), /^v20\./);
});
after(() => app?.remove());

describe('the packed package loads both ways users load it', () => {
  it('require() from a CommonJS app gets the CommonJS build', () => {
    app.write(
      'app.cjs',
      `const p = require('pg-resilience');
       console.log(JSON.stringify({ resolved: require.resolve('pg-resilience'), exports: Object.keys(p) }));`,
    );
    const res = app.node(['app.cjs']);
    assert.equal(res.status, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    assert.match(out.resolved, /node_modules\/pg-resilience\/dist\/cjs\/index\.js$/);
    assert.ok(out.exports.includes('MIN_NODE_VERSION'), res.stdout);
    assert.ok(out.exports.includes('isCircuitOpenError'), res.stdout);
  });

  it('import from an ES module app gets the ESM build', () => {
    app.write(
      'app.mjs',
      `import * as p from 'pg-resilience';
       console.log(JSON.stringify({ resolved: import.meta.resolve('pg-resilience'), exports: Object.keys(p) }));`,
    );
    const res = app.node(['app.mjs']);
    assert.equal(res.status, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    assert.match(out.resolved, /node_modules\/pg-resilience\/dist\/esm\/index\.js$/);
    assert.ok(out.exports.includes('CircuitOpenError'), res.stdout);
  });

  it('pg-resilience/register loads with --require and with --import', () => {
    app.write('plain.cjs', `console.log('app ran');`);
    app.write('plain.mjs', `console.log('app ran');`);
    for (const args of [
      ['--require', 'pg-resilience/register', 'plain.cjs'],
      ['--import', 'pg-resilience/register', 'plain.mjs'],
    ]) {
      const res = app.node(args);
      assert.equal(res.status, 0, `${args.join(' ')}: ${res.stderr}`);
      assert.match(res.stdout, /app ran/);
    }
  });

  it("TypeScript consumers get the package's types under require and import", () => {
    app.write(
      'tsconfig.json',
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          noEmit: true,
          types: [],
        },
        files: ['consumer.cts', 'consumer.mts'],
      }),
    );
    const body = `import { CircuitOpenError, idempotent, isCircuitOpenError, MIN_NODE_VERSION, withTransaction } from 'pg-resilience';
      import type { ErrorClass, ResilienceOptions } from 'pg-resilience';
      const options: ResilienceOptions = { retry: { maxAttempts: 3 }, rateLimit: { strategy: 'drop' } };
      const cls: ErrorClass = 'connection_lost';
      const e: unknown = new CircuitOpenError('db:5432/app', 'open');
      if (isCircuitOpenError(e)) { const t: string = e.target; void t; }
      // @ts-expect-error: a misspelt setting must not type-check
      const bad: ResilienceOptions = { retry: { maxAttempt: 3 } };
      // withTransaction and idempotent() with a pool shaped like pg's (the scratch app has no @types/pg)
      type Client = { query(text: string): Promise<unknown>; release(err?: Error | boolean): void; tag: 'c' };
      declare const pool: { connect(): Promise<Client> };
      const total: Promise<number> = withTransaction(pool, async (client) => {
        const tag: 'c' = client.tag;
        void tag;
        await client.query('SELECT 1');
        return 1;
      }, { isolationLevel: 'serializable', readOnly: true });
      // A pool declared like @types/pg's (connect() overloaded: promise, then callback): the client's own
      // type is inferred, so query(text, values) and its rows type-check without annotations.
      type PgClient = { query(text: string, values?: unknown[]): Promise<{ rows: { n: number }[] }>; release(err?: Error | boolean): void };
      declare const pgPool: {
        connect(): Promise<PgClient>;
        connect(cb: (err: Error | undefined, client: PgClient | undefined, done: (release?: unknown) => void) => void): void;
      };
      const n: Promise<number> = withTransaction(pgPool, async (client) => (await client.query('SELECT $1::int AS n', [1])).rows[0]!.n);
      void n;
      // @ts-expect-error: not an isolation level
      void withTransaction(pool, async () => 1, { isolationLevel: 'snapshot' });
      const marked: { text: string; values: number[] } = idempotent({ text: 'UPDATE t SET a = $1', values: [1] });
      export { options, cls, bad, MIN_NODE_VERSION, total, marked };`;
    app.write('consumer.cts', body);
    app.write('consumer.mts', body);
    const res = spawnSync(`${repoRoot}/node_modules/.bin/tsc`, ['-p', 'tsconfig.json'], {
      cwd: app.dir,
      encoding: 'utf8',
    });
    assert.equal(res.status, 0, res.stdout + res.stderr);
  });
});

describe('on an unsupported Node', () => {
  it('the library fails to load with one clear message (CommonJS and ESM)', () => {
    for (const file of ['app.cjs', 'app.mjs']) {
      const res = app.node([file], { node: node20 });
      assert.notEqual(res.status, 0, `${file} loaded on Node 20`);
      assert.match(res.stderr, /pg-resilience requires Node\.js >= 22\.15\.0; this is Node\.js 20\./, file);
    }
  });

  it('`npm run demo` and the test command provision a supported Node and say so in one line', () => {
    // NODE_TEST_CONTEXT would make the nested `node --test` report to this runner instead of printing.
    const { NODE_TEST_CONTEXT: _, ...parentEnv } = process.env;
    const env = { ...parentEnv, PATH: `${node20.replace(/\/node$/, '')}:${process.env.PATH}` };
    // `--help` runs the demo's own entry point under the provisioned Node; the demo's run itself is
    // test/e2e/demo.test.ts's (a whole run here added four minutes to CI for nothing more).
    const demo = spawnSync('npm', ['run', '--silent', 'demo', '--', '--help'], {
      cwd: repoRoot,
      encoding: 'utf8',
      env,
    });
    assert.equal(demo.status, 0, demo.stderr);
    const notice = demo.stderr.split('\n').filter((l) => l.startsWith('pg-resilience: Node v20.'));
    assert.equal(notice.length, 1, demo.stderr);
    assert.match(notice[0]!, /running under Node v2[2-9]\.\d+\.\d+ from the npm registry/);
    assert.match(demo.stdout, /^Usage: npm run demo -- \[options\]/m);

    const test = spawnSync('npm', ['run', '--silent', 'test:unit', '--', 'test/unit/node-guard.test.ts'], {
      cwd: repoRoot,
      encoding: 'utf8',
      env,
    });
    assert.equal(test.status, 0, test.stdout + test.stderr);
    assert.match(test.stderr, /running under Node v2[2-9]/);
    assert.match(test.stdout, /ℹ pass [1-9]/);
    assert.match(test.stdout, /ℹ fail 0/);
  });
});
