// The pg a suite tests: the one installed in PG_RESILIENCE_TEST_PG_DIR (an older supported release,
// installed by test/integration/pg-versions.test.ts under .tmp/pg-versions/<version>), else the
// devDependency. Importing this loads nothing: suites create the instrumentation before pg loads.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

export const PG_DIR = process.env.PG_RESILIENCE_TEST_PG_DIR || undefined;

/** `require` as seen from the pg under test's directory: `requirePg('pg')`, `requirePg('pg-cursor')`. */
export const requirePg = createRequire(PG_DIR ? join(PG_DIR, 'package.json') : import.meta.url);

/** The version of a package as the pg under test resolves it (by its main file: some do not export package.json). */
export function versionOf(name: 'pg' | 'pg-pool'): string {
  const from = name === 'pg' ? requirePg : createRequire(requirePg.resolve('pg'));
  const main = from.resolve(name);
  const dir = main.slice(0, main.lastIndexOf(`node_modules/${name}/`) + `node_modules/${name}`.length);
  return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
}
