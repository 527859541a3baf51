// Run as a child process: `node test/support/call-forms-runner.ts <connectionString> [case name…]`
// runs the call-forms table (call-forms.ts) against that server and prints one JSON report on stdout.
//
// pg, pg-cursor and pg-query-stream are loaded with require() relative to this file, so that a copy
// of this file and call-forms.ts placed in a scratch app loads that app's pg (the way a user's app
// does) and `--require pg-resilience/register`, which patches pg's CommonJS modules as they load,
// sees them. With CALL_FORMS_LOADER=import they are loaded with import() instead (pg's ESM entry, the
// way an ES module app loads them; for `--import pg-resilience/register`).
// With PG_RESILIENCE_TEST_PG_DIR set, pg and pg-cursor are loaded from that directory instead (an
// older pg installed there, see test/integration/pg-versions.test.ts); pg-query-stream too when it is
// installed there, else the one beside this file.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { runCases } from './call-forms.ts';

const pgDir = process.env.PG_RESILIENCE_TEST_PG_DIR;
const own = createRequire(import.meta.url);
const require = pgDir ? createRequire(join(pgDir, 'package.json')) : own;
const [connectionString, ...only] = process.argv.slice(2);
if (!connectionString) {
  process.stderr.write('usage: node call-forms-runner.ts <connectionString> [case name…]\n');
  process.exit(2);
}
const load = async (name: string): Promise<any> => {
  if (process.env.CALL_FORMS_LOADER !== 'import') return require(name);
  const ns = await import(pgDir ? require.resolve(name) : name);
  return ns.default ?? ns;
};
const pg = await load('pg');
const Cursor = await load('pg-cursor');
let qs: any;
try {
  qs = await load('pg-query-stream');
} catch (error) {
  if (!pgDir) throw error;
  qs = own('pg-query-stream');
}
const QueryStream = qs.default ?? qs;

const report = await runCases({ pg, Cursor, QueryStream }, connectionString, only.length ? only : undefined);
process.stdout.write(`${JSON.stringify(report)}\n`);
