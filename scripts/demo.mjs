// `npm run demo [-- options]`: builds the package when dist/ is missing or older than src/, then runs
// `pg-resilience demo` from the build (the sample app must load `pg-resilience/register` the way users
// load it, from the built package). Options: `npm run demo -- --help`.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const bin = join(root, 'dist', 'esm', 'bin.js');

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

const appFile = join(root, 'dist', 'cjs', 'demo', 'app.js');
if (!existsSync(bin) || !existsSync(appFile) || newestMtime(join(root, 'src')) > statSync(bin).mtimeMs) {
  console.log('pg-resilience demo: building the package first (npm run build)…');
  const res = spawnSync(process.execPath, [join(root, 'scripts', 'build.mjs')], {
    stdio: 'inherit',
    cwd: root,
  });
  if (res.status !== 0) process.exit(res.status ?? 1);
}

const child = spawn(process.execPath, [bin, 'demo', ...process.argv.slice(2)], {
  stdio: 'inherit',
  cwd: root,
});
// Ctrl-C reaches the whole process group: the demo stops itself cleanly; wait for it.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => {});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + 2 : 1)));
