// The instrumentation scope version (otel_scope_version on every series) is package.json's version:
// src/version.ts is generated from it by scripts/build.mjs, and this keeps the committed copy in step.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { INSTRUMENTATION_VERSION } from '../../src/instrumentation/utils.ts';
import { VERSION } from '../../src/version.ts';

const pkg = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as {
  version: string;
};

describe('version', () => {
  it("src/version.ts matches package.json's version (run `npm run build` after a version bump)", () => {
    assert.equal(VERSION, pkg.version);
  });

  it('the instrumentation reports it as its scope version', () => {
    assert.equal(INSTRUMENTATION_VERSION, pkg.version);
  });
});
