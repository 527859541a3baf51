// Builds dist/esm (ES modules) and dist/cjs (CommonJS) from src/ with tsc, declarations beside each.
// First writes src/version.ts from package.json's version, so both builds and the sources (run directly
// under type stripping) report the version package.json says.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const tsc = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'tsc.cmd' : 'tsc');

const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const versionFile = join(root, 'src', 'version.ts');
const versionSource = readFileSync(versionFile, 'utf8').replace(
  /^export const VERSION = .*$/m,
  `export const VERSION = ${JSON.stringify(version).replaceAll('"', "'")};`,
);
if (versionSource !== readFileSync(versionFile, 'utf8')) writeFileSync(versionFile, versionSource);

rmSync(join(root, 'dist'), { recursive: true, force: true });
for (const project of ['tsconfig.build.json', 'tsconfig.build.cjs.json']) {
  const res = spawnSync(tsc, ['-p', join(root, project)], { stdio: 'inherit', cwd: root });
  if (res.status !== 0) process.exit(res.status ?? 1);
}
mkdirSync(join(root, 'dist', 'cjs'), { recursive: true });
writeFileSync(join(root, 'dist', 'cjs', 'package.json'), '{ "type": "commonjs" }\n');
writeFileSync(join(root, 'dist', 'esm', 'package.json'), '{ "type": "module" }\n');
