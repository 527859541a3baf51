// Checks the packed package as users get it: publint (package.json and files) and
// @arethetypeswrong/cli (types resolve for require and import under every module resolution).
// Usage: node scripts/check-package.mjs [TARBALL]   (packs the package itself without one)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const bin = (name) => join(root, 'node_modules', '.bin', name);
let tarball = process.argv[2];
if (!tarball) {
  const dir = mkdtempSync(join(tmpdir(), 'pg-resilience-pack-'));
  const res = spawnSync('npm', ['pack', '--silent', '--pack-destination', dir], {
    stdio: 'inherit',
    cwd: root,
  });
  if (res.status !== 0) process.exit(res.status ?? 1);
  tarball = join(
    dir,
    readdirSync(dir).find((f) => f.endsWith('.tgz')),
  );
}
for (const [cmd, args] of [
  [bin('publint'), ['run', '--strict', tarball]],
  [bin('attw'), [tarball, '--profile', 'node16']],
]) {
  const res = spawnSync(cmd, args, { stdio: 'inherit', cwd: root });
  if (res.status !== 0) process.exit(res.status ?? 1);
}
