// `npm run bench [-- --quick] [--section ID] [--out DIR]`: builds the package when dist/ is missing or
// older than src/ (arms C and E load it through `--require pg-resilience/register`, as users do), then
// runs bench/run.ts.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ensureBuilt } from './ensure-built.mjs';

const root = new URL('..', import.meta.url).pathname;
ensureBuilt(
  root,
  [join(root, 'dist', 'cjs', 'register-cjs.js'), join(root, 'dist', 'esm', 'index.js')],
  'pg-resilience bench',
);
const child = spawn(process.execPath, [join(root, 'bench', 'run.ts'), ...process.argv.slice(2)], {
  stdio: 'inherit',
  cwd: root,
});
child.on('exit', (code) => process.exit(code ?? 1));
