// `npm run demo [-- options]` (scripts/demo.mjs runs this file with Node's type stripping): parses the
// options and runs the demo (cli.ts). Exit code 0 when every invariant held, 1 when one broke, 2 on a
// bad option, 130 after Ctrl-C.
import { parseOptions, runDemo, USAGE } from './cli.ts';

let options: ReturnType<typeof parseOptions>;
try {
  options = parseOptions(process.argv.slice(2));
} catch (error) {
  console.error(`demo: ${error instanceof Error ? error.message : String(error)}\n\n${USAGE}`);
  process.exit(2);
}
if (options === 'help') {
  console.log(USAGE);
  process.exit(0);
}
process.exit(await runDemo(options));
