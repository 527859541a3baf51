// The safe-retry rules and pg's semantics under the hook (FILES below) against older pg releases across
// the supported range (`>=8.0.3 <9`): the oldest, one before `getTransactionStatus()` existed (8.20),
// and a widely deployed one (8.11), each with the pg-pool of its time. Each version is installed from
// the npm registry once into .tmp/pg-versions/<version> (reused by later runs), and the files run in a
// child `node --test` with PG_RESILIENCE_TEST_PG_DIR pointing at it. The devDependency pg (latest 8.x)
// is covered by the files themselves in the integration suite.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
/** Each file honours PG_RESILIENCE_TEST_PG_DIR; `min` is how many tests must pass (none skipped away). */
const FILES = [
  { file: 'retry-rules.test.ts', min: 18 },
  { file: 'semantics-calls.test.ts', min: 18 },
  { file: 'semantics-lifecycle.test.ts', min: 11 },
  { file: 'semantics-pool.test.ts', min: 12 },
  { file: 'dead-connections.test.ts', min: 8 },
  { file: 'statement-cancel.test.ts', min: 8 },
  { file: 'leak-detection.test.ts', min: 5 },
  { file: 'substitute.test.ts', min: 27 },
  { file: 'client-reconnect.test.ts', min: 7 },
].map((f) => ({ ...f, path: fileURLToPath(new URL(`./${f.file}`, import.meta.url)) }));

const VERSIONS = [
  { pg: '8.0.3', pgPool: '3.1.1' },
  { pg: '8.11.5', pgPool: '3.6.2' },
  { pg: '8.20.0', pgPool: '3.13.0' },
];

/** The pg in `dir`, and the pg-pool that this pg itself loads. */
function versionsIn(dir: string): { pg?: string; pgPool?: string } {
  try {
    const req = createRequire(join(dir, 'package.json'));
    const pgDir = dirname(req.resolve('pg'));
    const poolMain = createRequire(join(pgDir, 'index.js')).resolve('pg-pool');
    const version = (file: string) => JSON.parse(readFileSync(file, 'utf8')).version as string;
    return {
      pg: version(join(pgDir, '..', 'package.json')),
      pgPool: version(join(dirname(poolMain), 'package.json')),
    };
  } catch {
    return {};
  }
}

async function install(v: { pg: string; pgPool: string }): Promise<string> {
  const dir = join(root, '.tmp', 'pg-versions', v.pg);
  if (existsSync(dir) && versionsIn(dir).pg === v.pg && versionsIn(dir).pgPool === v.pgPool) return dir;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `pg-${v.pg}`, private: true }));
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  await run(
    npm,
    ['install', '--no-audit', '--no-fund', '--no-save', `pg@${v.pg}`, `pg-pool@${v.pgPool}`, 'pg-cursor@2'],
    { cwd: dir, timeout: 180_000 },
  );
  return dir;
}

// The versions run side by side, each its files one after another (each file starts its own server):
// the files mostly wait (timeouts, child processes, server restarts), so three streams fit two cores.
describe(
  "the safe-retry rules and pg's semantics on older pg 8.x releases",
  { timeout: 1_200_000, concurrency: VERSIONS.length },
  () => {
    for (const v of VERSIONS) {
      describe(`pg ${v.pg}`, { concurrency: 1 }, () => {
        for (const f of FILES) {
          it(`pg ${v.pg} (pg-pool ${v.pgPool}): ${f.file}`, async (t) => {
            const dir = await install(v);
            assert.deepEqual(versionsIn(dir), v, 'pg and the pg-pool it loads');
            // Without NODE_TEST_CONTEXT: the child is a test runner of its own, reporting in TAP.
            const { NODE_TEST_CONTEXT: _, ...env } = process.env;
            const result = await run(process.execPath, ['--test', '--test-reporter=tap', f.path], {
              cwd: root,
              env: { ...env, PG_RESILIENCE_TEST_PG_DIR: dir },
              timeout: 300_000,
            }).catch((e: { stdout?: string; stderr?: string }) => e);
            const out = `${result.stdout ?? ''}${result.stderr ?? ''}`;
            const pass = /^# pass (\d+)/m.exec(out)?.[1];
            const fail = /^# fail (\d+)/m.exec(out)?.[1];
            t.diagnostic(`pg ${v.pg}, ${f.file}: ${pass} passed, ${fail} failed`);
            assert.equal(
              fail,
              '0',
              out
                .split('\n')
                .filter((l) => /not ok|Error|expected|actual/.test(l))
                .join('\n'),
            );
            assert.ok(Number(pass) >= f.min, `only ${pass} tests of ${f.file} ran`);
          });
        }
      });
    }
  },
);
