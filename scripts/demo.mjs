// `npm run demo [-- options]`: builds the package when dist/ is missing or older than src/, then runs
// `pg-resilience demo` from the build (the sample app must load `pg-resilience/register` the way users
// load it, from the built package). Options: `npm run demo -- --help`.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ensureBuilt } from './ensure-built.mjs';

const root = new URL('..', import.meta.url).pathname;
const bin = join(root, 'dist', 'esm', 'bin.js');
ensureBuilt(root, [bin, join(root, 'dist', 'cjs', 'demo', 'app.js')], 'pg-resilience demo');

const child = spawn(process.execPath, [bin, 'demo', ...process.argv.slice(2)], {
  stdio: 'inherit',
  cwd: root,
});
// Ctrl-C reaches the whole process group: the demo stops itself cleanly; wait for it.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => {});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + 2 : 1)));
