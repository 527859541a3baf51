// Builds the package (scripts/build.mjs) when `marker` in dist/ is missing or older than any file in
// src/: the demo and the benchmarks run the built package, as users do. Exits on a failed build.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** @param {string} root the repository root @param {string[]} markers dist files that must be fresh @param {string} who */
export function ensureBuilt(root, markers, who) {
  const src = newestMtime(join(root, 'src'));
  if (markers.every((m) => existsSync(m) && statSync(m).mtimeMs >= src)) return;
  console.error(`${who}: building the package first (npm run build)…`);
  const res = spawnSync(process.execPath, [join(root, 'scripts', 'build.mjs')], {
    stdio: 'inherit',
    cwd: root,
  });
  if (res.status !== 0) process.exit(res.status ?? 1);
}
