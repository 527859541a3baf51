// Runs one ORM app (test/orms/apps) in a child process, bare or under the package's register hook, and
// collects what it printed (the line protocol of apps/workload.cjs) as it goes: a crashed app keeps what
// it acknowledged before dying.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Orm } from './orms.ts';

export const APPS_DIR = new URL('../apps/', import.meta.url).pathname;

export type Arm = 'bare' | 'hooked';
export type OpKind = 'insert' | 'read' | 'transfer';
export type Outcome = 'ok' | 'fail' | 'timeout';

export interface AppRun {
  arm: Arm;
  /** exit code and signal of the child */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** the app printed DONE and exited 0 */
  finished: boolean;
  /** died on its own: an exit code other than 0, or no DONE (not killed by us at the deadline) */
  crashed: boolean;
  /** we had to SIGKILL it at the deadline */
  hung: boolean;
  steps: unknown[];
  counts: Record<OpKind, Record<Outcome, number>>;
  /** ids of the writes the ORM acknowledged */
  acknowledged: { insert: string[]; transfer: string[] };
  /** error codes of failed ops, with how often */
  errors: Record<string, number>;
  /** each loaded copy of pg and the wrappers on its Client.prototype.query */
  pg: Array<{ path: string; wrappers: number }>;
  stderrTail: string;
  /** ms from spawn to READY (loading the ORM, and the hook), and from go() (or READY) to exit */
  readyMs: number;
  runMs: number;
}

export interface RunOptions {
  orm: Orm;
  arm: Arm;
  databaseUrl: string;
  settings: { mode: 'script' | 'load'; durationMs?: number; concurrency?: number; runId?: string };
  /** wait for go() after READY (the workload's clock starts then) */
  waitGo?: boolean;
  /** directory whose node_modules holds the packed pg-resilience (the hooked arm runs there) */
  hookDir: string;
  env?: NodeJS.ProcessEnv;
  /** SIGKILL after this long */
  deadlineMs: number;
}

const emptyCounts = (): AppRun['counts'] => ({
  insert: { ok: 0, fail: 0, timeout: 0 },
  read: { ok: 0, fail: 0, timeout: 0 },
  transfer: { ok: 0, fail: 0, timeout: 0 },
});

export interface Running {
  /** resolves when the app printed READY (or ended before that) */
  ready: Promise<void>;
  /** starts the workload of an app run with waitGo */
  go(): void;
  done: Promise<AppRun>;
}

/** The package rejects PG_RESILIENCE_* variables it does not know (the test runner's own among them). */
function withoutPackageVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('PG_RESILIENCE_')));
}

export function runApp(opts: RunOptions): Running {
  const { orm, arm } = opts;
  const hook =
    arm === 'bare'
      ? []
      : orm.module === 'cjs'
        ? ['--require', 'pg-resilience/register']
        : ['--import', 'pg-resilience/register'];
  // From hookDir, `pg-resilience/register` resolves to the packed package; the app itself (an absolute
  // path in this repo) resolves its ORM and pg from the repo's node_modules.
  const child = spawn(
    process.execPath,
    ['--disable-warning=ExperimentalWarning', ...hook, join(APPS_DIR, orm.app)],
    {
      cwd: opts.hookDir,
      env: {
        ...withoutPackageVariables(process.env),
        ...opts.env,
        ...(arm === 'hooked' ? orm.hookEnv : undefined),
        NODE_OPTIONS: '',
        DATABASE_URL: opts.databaseUrl,
        ORM_MATRIX: JSON.stringify({ ...opts.settings, waitGo: opts.waitGo ?? false }),
        OTEL_METRICS_EXPORTER: 'none',
        OTEL_TRACES_EXPORTER: 'none',
        OTEL_LOGS_EXPORTER: 'none',
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  const run: AppRun = {
    arm,
    code: null,
    signal: null,
    finished: false,
    crashed: false,
    hung: false,
    steps: [],
    counts: emptyCounts(),
    acknowledged: { insert: [], transfer: [] },
    errors: {},
    pg: [],
    stderrTail: '',
    readyMs: NaN,
    runMs: NaN,
  };
  const spawnedAt = Date.now();
  let startedAt = NaN;
  let readyNow!: () => void;
  const ready = new Promise<void>((resolve) => (readyNow = resolve));
  let buffered = '';
  let stderr = '';
  const onLine = (line: string): void => {
    if (line === 'READY') {
      run.readyMs = Date.now() - spawnedAt;
      if (!opts.waitGo) startedAt = Date.now();
      readyNow();
    } else if (line.startsWith('STEP ')) run.steps.push(JSON.parse(line.slice(5)));
    else if (line.startsWith('PG ')) run.pg.push(JSON.parse(line.slice(3)));
    else if (line.startsWith('DONE ')) run.finished = true;
    else if (line.startsWith('OP ')) {
      const [, kind, outcome, id, detail] = /^OP (\w+) (\w+) (\S+) (.*)$/.exec(line) as unknown as [
        string,
        OpKind,
        Outcome,
        string,
        string,
      ];
      run.counts[kind][outcome]++;
      if (outcome === 'ok' && kind !== 'read') run.acknowledged[kind].push(id);
      if (outcome !== 'ok') {
        const key = JSON.parse(detail) as string;
        run.errors[key] = (run.errors[key] ?? 0) + 1;
      }
    }
  };
  child.stdin.on('error', () => {});
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      onLine(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const timer = setTimeout(() => {
    run.hung = true;
    child.kill('SIGKILL');
  }, opts.deadlineMs);
  const done = new Promise<AppRun>((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      readyNow();
      if (buffered) onLine(buffered);
      run.code = code;
      run.signal = signal;
      run.finished &&= code === 0;
      run.crashed = !run.hung && !run.finished;
      run.stderrTail = stderr.slice(-1500);
      run.runMs = Date.now() - startedAt;
      resolve(run);
    });
  });
  const go = (): void => {
    startedAt = Date.now();
    if (child.stdin.writable) child.stdin.write('GO\n');
  };
  return { ready, go, done };
}
