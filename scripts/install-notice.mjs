// `prepare` (runs after `npm ci` / `npm install` in a clone): one line when the Node that installed is
// older than the project supports, saying what the project's scripts do about it. Silent otherwise.
// (The repository's .npmrc sets loglevel=error: npm's own per-package EBADENGINE warnings stay quiet.)
import { isSupported, MIN_NODE, PROVISIONED_MAJOR } from './supported-node.mjs';

if (!isSupported(process.versions.node)) {
  console.error(
    `pg-resilience: Node ${process.version} is older than the supported ${MIN_NODE.join('.')}; ` +
      `\`npm run demo\`, \`npm test\` and the other scripts fetch Node ${PROVISIONED_MAJOR} from the npm registry ` +
      'and run under it.',
  );
}
