// `node --import ./test/support/hook-preload.ts app`: the package's instrumentation from the sources,
// with its default configuration, enabled before the app loads pg (require-in-the-middle patches pg's
// CommonJS modules as they load, wherever they are installed). No SDK and no instrumentation-pg: the
// behaviour compared with bare pg is the package's own.
import { PgResilienceInstrumentation } from '../../src/index.ts';

new PgResilienceInstrumentation();
