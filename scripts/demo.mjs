// `npm run demo [-- options]`: builds the package when dist/ is missing or older than src/, then runs
// demo/main.ts with Node's type stripping. The sample app loads `pg-resilience/register` from the build,
// the way users load it. Options: `npm run demo -- --help`; docs/demo.md.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ensureBuilt } from './ensure-built.mjs';

const root = new URL('..', import.meta.url).pathname;
ensureBuilt(root, [join(root, 'dist', 'esm', 'register.js'), join(root, 'dist', 'esm', 'index.js')], 'demo');

// Node 22.15–22.17 strips types only behind a flag (as scripts/test.mjs does for the tests).
const [maj, min] = process.versions.node.split('.').map(Number);
const flags = maj === 22 && min < 18 ? ['--experimental-strip-types'] : [];
const child = spawn(
  process.execPath,
  [
    ...flags,
    '--disable-warning=ExperimentalWarning',
    join(root, 'demo', 'main.ts'),
    ...process.argv.slice(2),
  ],
  { stdio: 'inherit', cwd: root },
);
// Ctrl-C reaches the whole process group: the demo stops itself cleanly; wait for it.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => {});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + 2 : 1)));
