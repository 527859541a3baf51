import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { isSupported, parseVersion } from '../../scripts/supported-node.mjs';

describe('supported Node detection (scripts/supported-node.mjs)', () => {
  it('parses versions with or without the v prefix', () => {
    assert.deepEqual(parseVersion('v22.15.1'), [22, 15, 1]);
    assert.deepEqual(parseVersion('20.20.2'), [20, 20, 2]);
  });
  it('accepts 22.15.0 and later, rejects anything older', () => {
    for (const v of ['22.15.0', '22.15.1', '22.20.0', '24.0.0', '26.1.0'])
      assert.equal(isSupported(v), true, v);
    for (const v of ['20.20.2', '22.14.9', '22.0.0', '18.20.0']) assert.equal(isSupported(v), false, v);
  });
});

describe('library guard (src/node-guard.ts)', () => {
  it('loads silently on this (supported) Node', () => {
    const res = spawnSync(process.execPath, ['--input-type=module', '-e', "await import('./src/index.ts')"], {
      encoding: 'utf8',
    });
    assert.equal(res.status, 0, res.stderr);
  });
});
