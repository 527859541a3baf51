// The telemetry reference (docs/telemetry.md and the README's telemetry-reference region) are generated
// from the catalog; this keeps the committed files from drifting.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const root = join(import.meta.dirname, '..', '..');

describe('telemetry docs', () => {
  it('are up to date with the code (node scripts/gen-telemetry-docs.ts --check)', () => {
    const [major, minor] = process.versions.node.split('.').map(Number);
    const flags =
      major === 22 && minor! < 18
        ? ['--experimental-strip-types', '--disable-warning=ExperimentalWarning']
        : [];
    const res = spawnSync(
      process.execPath,
      [...flags, join(root, 'scripts', 'gen-telemetry-docs.ts'), '--check'],
      {
        cwd: root,
        encoding: 'utf8',
      },
    );
    assert.equal(res.status, 0, `${res.stderr}${res.stdout}`);
    assert.match(res.stdout, /up to date/);
  });
});
