// The test command: `npm test` runs `all`; `npm run test:unit|test:integration|test:e2e|test:chaos` one suite.
// all = lint + type-check + unit + integration + e2e (from a packed tarball) + orms (nine ORM apps bare and
// under the packed register hook, docs/orms.md) + chaos (seeded fault schedule
// and load run, CI mode, one file at a time) + the packed package check.
// PG_RESILIENCE_TEST_CHAOS_MODE=long (and PG_RESILIENCE_TEST_CHAOS_SEED) select the long run; see docs/chaos.md.
// Every suite runs on Node's own test runner against the TypeScript sources (type stripping).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const bin = (name) => join(root, 'node_modules', '.bin', name);
const SUITES = {
  unit: 'test/unit/**/*.test.ts',
  integration: 'test/integration/**/*.test.ts',
  e2e: 'test/e2e/**/*.test.ts',
  orms: 'test/orms/**/*.test.ts',
  chaos: 'test/chaos/**/*.test.ts',
};

const which = process.argv[2] ?? 'all';
// Optional file patterns after the suite name narrow it: `npm run test:unit -- test/unit/retry.test.ts`.
const only = process.argv.slice(3);
if (which !== 'all' && !SUITES[which]) {
  console.error(`usage: scripts/test.mjs all|${Object.keys(SUITES).join('|')}`);
  process.exit(2);
}

function run(title, cmd, args, env = {}) {
  console.log(`\n== ${title}`);
  const res = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, env: { ...process.env, ...env } });
  if (res.status !== 0) {
    console.error(`\n${title}: failed (${res.status ?? res.signal})`);
    process.exit(res.status || 1);
  }
}

/** Packs the package once (prepack builds it) and returns the tarball's path. */
function pack() {
  const dir = join(root, '.tmp', 'pack');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  run('npm pack', 'npm', ['pack', '--silent', '--pack-destination', dir]);
  const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  return join(dir, tgz);
}

function nodeTest(patterns, env, extra = []) {
  const [maj, min] = process.versions.node.split('.').map(Number);
  const flags = maj === 22 && min < 18 ? ['--experimental-strip-types'] : [];
  run(
    `node --test ${patterns.join(' ')}`,
    process.execPath,
    [
      ...flags,
      '--disable-warning=ExperimentalWarning',
      '--test',
      '--test-timeout=300000',
      ...extra,
      ...patterns,
    ],
    env,
  );
}

if (which === 'all') {
  run('lint (eslint)', bin('eslint'), ['.']);
  run('format (prettier --check)', bin('prettier'), ['--check', '.']);
  run('type-check (tsc)', bin('tsc'), ['-p', 'tsconfig.json', '--noEmit']);
  const tarball = pack();
  nodeTest([SUITES.unit, SUITES.integration, SUITES.e2e], { PG_RESILIENCE_TEST_TARBALL: tarball });
  // After the others: the matrix runs its apps two at a time, one ORM after another.
  nodeTest([SUITES.orms], { PG_RESILIENCE_TEST_TARBALL: tarball });
  // After the others, alone: each chaos file loads the machine and starts its own servers.
  nodeTest([SUITES.chaos], { PG_RESILIENCE_TEST_TARBALL: tarball }, ['--test-concurrency=1']);
  run('packed package (publint, attw)', process.execPath, [
    join(root, 'scripts', 'check-package.mjs'),
    tarball,
  ]);
} else if (which === 'e2e' || which === 'orms') {
  nodeTest(only.length ? only : [SUITES[which]], { PG_RESILIENCE_TEST_TARBALL: pack() });
} else {
  // Chaos files run one after another (each starts its own servers and loads the machine), against the
  // packed package the way a user installs it.
  const chaos = which === 'chaos';
  nodeTest(
    only.length ? only : [SUITES[which]],
    chaos ? { PG_RESILIENCE_TEST_TARBALL: process.env.PG_RESILIENCE_TEST_TARBALL ?? pack() } : {},
    chaos ? ['--test-concurrency=1'] : [],
  );
}
