#!/usr/bin/env node
// The `pg-resilience` command. One subcommand for now: `pg-resilience demo` (src/demo/cli.ts).
import './node-guard.ts';
import { parseOptions, runDemo, USAGE } from './demo/cli.ts';

const [command, ...rest] = process.argv.slice(2);
if (command !== 'demo') {
  console.error(
    command === undefined || command === '--help' || command === '-h'
      ? USAGE
      : `unknown command: ${command}\n\n${USAGE}`,
  );
  process.exit(command === undefined || command === '--help' || command === '-h' ? 0 : 2);
}
let options: ReturnType<typeof parseOptions>;
try {
  options = parseOptions(rest);
} catch (error) {
  console.error(`pg-resilience demo: ${error instanceof Error ? error.message : String(error)}\n\n${USAGE}`);
  process.exit(2);
}
if (options === 'help') {
  console.log(USAGE);
  process.exit(0);
}
process.exit(await runDemo(options));
