// Run as a child process: `node test/support/exit-scenarios.ts <connectionString> <scenario>`.
// Each scenario makes one call whose answer tells the app to close its client or pool, the way an app
// cleans up in its callback or catch. A process whose answer never comes keeps its connection open
// and does not exit: the caller measures how long the process takes to exit after the first line,
// `{"started": <epoch ms>}` (written once pg is loaded). Then one JSON line per answer on stdout. pg is loaded like call-forms-runner.ts does (PG_RESILIENCE_TEST_PG_DIR honoured).
import { createRequire } from 'node:module';
import { join } from 'node:path';

const pgDir = process.env.PG_RESILIENCE_TEST_PG_DIR;
const require = createRequire(pgDir ? join(pgDir, 'package.json') : import.meta.url);
const pg = require('pg');
const [connectionString, scenario] = process.argv.slice(2);

const say = (what: string, err?: unknown): void => {
  const message = err instanceof Error ? err.message : err === undefined ? null : String(err);
  process.stdout.write(`${JSON.stringify({ what, message })}\n`);
};

async function client(): Promise<any> {
  const c = new pg.Client({ connectionString });
  c.on('error', (err: unknown) => say('client error event', err));
  await c.connect();
  return c;
}

function pool(): any {
  const p = new pg.Pool({ connectionString, max: 1 });
  p.on('error', (err: unknown) => say('pool error event', err));
  return p;
}

/** An answer handler: says every answer (a callback, a throw); the first one runs `close`. */
function once(close: () => unknown): (what: string, err?: unknown) => void {
  let closed = false;
  return (what, err) => {
    say(what, err);
    if (closed) return;
    closed = true;
    close();
  };
}

const SCENARIOS: Record<string, () => Promise<void>> = {
  /** client.query({ text: {} }, cb): the callback closes the client. */
  'client.query({ text: {} }, cb)': async () => {
    const c = await client();
    const answer = once(() => c.end());
    c.query({ text: {} }, (err: unknown) => answer('callback', err));
  },
  /** A value pg cannot serialise, callback form: the callback closes the client. */
  'client.query(text, [circular], cb)': async () => {
    const c = await client();
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const answer = once(() => c.end());
    try {
      c.query('SELECT $1::text', [circular], (err: unknown) => answer('callback', err));
    } catch (err) {
      answer('threw', err);
    }
  },
  /** client.query(42, cb): older pg throws synchronously, newer ones call back. */
  'client.query(42, cb)': async () => {
    const c = await client();
    const answer = once(() => c.end());
    try {
      c.query(42, (err: unknown) => answer('callback', err));
    } catch (err) {
      answer('threw', err);
    }
  },
  /** pool.query({}, cb): the callback ends the pool. */
  'pool.query({}, cb)': async () => {
    const p = pool();
    const answer = once(() => p.end());
    p.query({}, (err: unknown) => answer('callback', err));
  },
  /** await pool.query(bad SQL) in a try/catch that ends the pool. */
  'await pool.query(bad SQL)': async () => {
    const p = pool();
    try {
      await p.query('SELECT test FROM nonexistent');
      say('resolved');
    } catch (err) {
      say('rejected', err);
    } finally {
      await p.end();
    }
  },
};

const run = SCENARIOS[scenario ?? ''];
if (!connectionString || !run) {
  process.stderr.write(
    `usage: exit-scenarios.ts <connectionString> <${Object.keys(SCENARIOS).join(' | ')}>\n`,
  );
  process.exit(2);
}
process.stdout.write(`${JSON.stringify({ started: Date.now() })}\n`);
await run();
