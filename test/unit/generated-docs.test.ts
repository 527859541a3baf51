// The generated docs (docs/configuration.md, docs/telemetry.md) come from the code; this keeps the
// committed files from drifting. (The alerts table of docs/runbook.md: test/unit/alert-rules.test.ts.)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const root = join(import.meta.dirname, '..', '..');

function runCheck(script: string) {
  const [major, minor] = process.versions.node.split('.').map(Number);
  const flags =
    major === 22 && minor! < 18
      ? ['--experimental-strip-types', '--disable-warning=ExperimentalWarning']
      : [];
  return spawnSync(process.execPath, [...flags, join(root, 'scripts', script), '--check'], {
    cwd: root,
    encoding: 'utf8',
  });
}

describe('generated docs', () => {
  for (const script of ['gen-config-docs.ts', 'gen-telemetry-docs.ts']) {
    it(`are up to date with the code (node scripts/${script} --check)`, () => {
      const res = runCheck(script);
      assert.equal(res.status, 0, `${res.stderr}${res.stdout}`);
      assert.match(res.stdout, /up to date/);
    });
  }
});
