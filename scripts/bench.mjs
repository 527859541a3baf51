// `npm run bench [-- --quick] [--section ID] [--out DIR]`: builds the package when dist/ is missing or
// older than src/ (arms C and E load it through `--require pg-resilience/register`, as users do), then
// runs bench/run.ts.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const marker = join(root, 'dist', 'cjs', 'register-cjs.js');

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

if (!existsSync(marker) || newestMtime(join(root, 'src')) > statSync(marker).mtimeMs) {
  console.error('pg-resilience bench: building the package first (npm run build)…');
  const res = spawnSync(process.execPath, [join(root, 'scripts', 'build.mjs')], {
    stdio: 'inherit',
    cwd: root,
  });
  if (res.status !== 0) process.exit(res.status ?? 1);
}
const child = spawn(process.execPath, [join(root, 'bench', 'run.ts'), ...process.argv.slice(2)], {
  stdio: 'inherit',
  cwd: root,
});
child.on('exit', (code) => process.exit(code ?? 1));
