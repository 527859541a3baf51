// The ledger workload, for the retry-safety rule "a retry must never run a write twice".
//
// A table `ledger(key text, worker int, at timestamptz)` WITHOUT a unique constraint gets many
// concurrent single-row INSERTs, each with its own key, through pool.query and a FaultProxy that resets
// a share of new connections and cuts ready connections right after a share of server messages (after
// ParseComplete or BindComplete the INSERT is running on the server, which also sleeps a few ms in it;
// after CommandComplete it committed but the client never hears so). The faults are counted in
// messages, not time, so a slow machine changes how long the run takes, not what it tests. Each insert's outcome is recorded
// (acknowledged, or failed with its error code); then the table is read directly (not through the
// proxy) and checked: every acknowledged key is there exactly once, and no key is there twice. A
// failed insert may or may not be in the table (the connection can die after the commit, before the
// acknowledgement): that is `failedButPresent`, allowed, and exactly why a blind retry would duplicate.
//
// In-process by default. With `child`, the inserts run in a child process started as
// `node ...child.nodeArgs ledger.ts --ledger-worker <config>` from `child.dir` (this file is copied
// there, so `pg` resolves from that directory's node_modules, e.g. a scratch app's, and
// `--require pg-resilience/register` loads the package as users load it); the proxy, its faults and the
// check stay in this process.
import { spawn } from 'node:child_process';
import { copyFileSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FaultProxy } from './fault-proxy.ts';
import type { TestServer } from './postgres.ts';

export interface LedgerOptions {
  server: TestServer;
  /** the proxy in front of `server` (create it with a seeded `random` for reproducible resets) */
  proxy: FaultProxy;
  workers: number;
  insertsPerWorker: number;
  /** the pg module for the in-process run; default: pg as resolved from this file */
  pgModule?: any;
  /** share of new connections reset on accept; default 0.2 */
  resetNewShare?: number;
  /** share of server messages on a ready connection after which it is reset; default 0.05 */
  cutShare?: number;
  /** server-side sleep inside each INSERT, so that resets land mid-statement; default 3 */
  statementSleepMs?: number;
  /** run the inserts in a child process (see the file comment) */
  child?: { dir: string; nodeArgs: string[]; env?: NodeJS.ProcessEnv; timeoutMs?: number };
  /** table name; default 'ledger' (dropped and re-created at the start) */
  table?: string;
}

export interface LedgerResult {
  acknowledged: string[];
  failed: Array<{ key: string; errorCode: string }>;
  /** keys present more than once (must be empty) */
  duplicates: string[];
  /** acknowledged keys not present (must be empty) */
  missing: string[];
  /** failed keys that are present anyway (allowed: the commit happened, the acknowledgement was lost) */
  failedButPresent: string[];
  /** keys present that were never attempted (must be empty) */
  unexpected: string[];
  /** acknowledged / attempted */
  successShare: number;
  /** how many ready connections were cut after a server message, and how many connects were reset on accept */
  faults: { cutAfterMessage: number; resetOnAccept: number };
  durationMs: number;
}

interface WorkerConfig {
  connectionString: string;
  workers: number;
  insertsPerWorker: number;
  statementSleepMs: number;
  table: string;
}

interface WorkerOutcome {
  acknowledged: string[];
  failed: Array<{ key: string; errorCode: string }>;
}

const keyOf = (worker: number, i: number) => `w${worker}-${i}`;

function errorCode(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (e && typeof e.code === 'string' && e.code) return e.code;
  return e && typeof e.message === 'string' ? e.message : String(err);
}

/** The inserts: `workers` concurrent loops of `insertsPerWorker` sequential pool.query INSERTs. */
async function insertAll(pg: any, cfg: WorkerConfig): Promise<WorkerOutcome> {
  const pool = new pg.Pool({
    connectionString: cfg.connectionString,
    max: cfg.workers,
    connectionTimeoutMillis: 5000,
  });
  // Without it, a reset idle client's 'error' is re-emitted on the pool and kills the process.
  pool.on('error', () => {});
  const acknowledged: string[] = [];
  const failed: WorkerOutcome['failed'] = [];
  const sql = `INSERT INTO ${cfg.table} (key, worker) SELECT $1, $2 FROM pg_sleep($3::float8 / 1000)`;
  try {
    await Promise.all(
      Array.from({ length: cfg.workers }, async (_, w) => {
        for (let i = 0; i < cfg.insertsPerWorker; i++) {
          const key = keyOf(w, i);
          try {
            await pool.query(sql, [key, w, cfg.statementSleepMs]);
            acknowledged.push(key);
          } catch (err) {
            failed.push({ key, errorCode: errorCode(err) });
          }
        }
      }),
    );
  } finally {
    await pool.end().catch(() => {});
  }
  return { acknowledged, failed };
}

function insertInChild(
  child: NonNullable<LedgerOptions['child']>,
  cfg: WorkerConfig,
): Promise<WorkerOutcome> {
  const script = join(child.dir, 'ledger.ts');
  copyFileSync(fileURLToPath(import.meta.url), script);
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      [
        '--disable-warning=ExperimentalWarning',
        ...child.nodeArgs,
        script,
        '--ledger-worker',
        JSON.stringify(cfg),
      ],
      { cwd: child.dir, env: { ...process.env, NODE_OPTIONS: '', ...child.env } },
    );
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => proc.kill('SIGKILL'), child.timeoutMs ?? 60_000);
    proc.once('error', reject);
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.split('\n').find((l) => l.startsWith('LEDGER '));
      if (code !== 0 || !line) {
        reject(new Error(`ledger child exited ${code ?? signal}:\n${stdout}\n${stderr}`));
        return;
      }
      resolve(JSON.parse(line.slice('LEDGER '.length)) as WorkerOutcome);
    });
  });
}

export async function runLedger(options: LedgerOptions): Promise<LedgerResult> {
  const { server, proxy, workers, insertsPerWorker } = options;
  const table = options.table ?? 'ledger';
  if (!/^[a-z_][a-z0-9_]*$/.test(table)) throw new Error(`bad table name ${table}`);
  await server.query(
    `DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (key text, worker int, at timestamptz DEFAULT now())`,
  );
  const cfg: WorkerConfig = {
    connectionString: proxy.connectionString(server),
    workers,
    insertsPerWorker,
    statementSleepMs: options.statementSleepMs ?? 3,
    table,
  };
  const started = Date.now();
  const before = { cutAfterMessage: proxy.stats.cutAfterMessage, resetOnAccept: proxy.stats.resetOnAccept };
  proxy.resetNewConnections(options.resetNewShare ?? 0.2);
  proxy.cutAfterServerMessage(options.cutShare ?? 0.05);
  let outcome: WorkerOutcome;
  try {
    outcome = options.child
      ? await insertInChild(options.child, cfg)
      : await insertAll(options.pgModule ?? createRequire(import.meta.url)('pg'), cfg);
  } finally {
    proxy.cutAfterServerMessage(null);
    proxy.resetNewConnections(0);
  }
  const durationMs = Date.now() - started;

  // The check, directly on the server (not through the proxy).
  const counts = new Map<string, number>();
  for (const row of (
    await server.query<{ key: string; n: number }>(
      `SELECT key, count(*)::int AS n FROM ${table} GROUP BY key`,
    )
  ).rows) {
    counts.set(row.key, row.n);
  }
  const attempted = new Set<string>();
  for (let w = 0; w < workers; w++) for (let i = 0; i < insertsPerWorker; i++) attempted.add(keyOf(w, i));
  const sorted = (keys: Iterable<string>) => [...keys].sort();
  return {
    acknowledged: outcome.acknowledged,
    failed: outcome.failed,
    duplicates: sorted([...counts].filter(([, n]) => n > 1).map(([k]) => k)),
    missing: sorted(outcome.acknowledged.filter((k) => !counts.has(k))),
    failedButPresent: sorted(outcome.failed.filter((f) => counts.has(f.key)).map((f) => f.key)),
    unexpected: sorted([...counts.keys()].filter((k) => !attempted.has(k))),
    successShare: outcome.acknowledged.length / attempted.size,
    faults: {
      cutAfterMessage: proxy.stats.cutAfterMessage - before.cutAfterMessage,
      resetOnAccept: proxy.stats.resetOnAccept - before.resetOnAccept,
    },
    durationMs,
  };
}

// The child-process entry: `node ledger.ts --ledger-worker <config JSON>` prints `LEDGER <outcome>`.
function isMain(): boolean {
  try {
    return (
      !!process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
    );
  } catch {
    return false;
  }
}

if (process.argv[2] === '--ledger-worker' && isMain()) {
  const cfg = JSON.parse(process.argv[3] ?? '{}') as WorkerConfig;
  const outcome = await insertAll(createRequire(import.meta.url)('pg'), cfg);
  process.stdout.write(`LEDGER ${JSON.stringify(outcome)}\n`);
}
