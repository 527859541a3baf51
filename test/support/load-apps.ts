// App processes under load, for the multi-process tests (too-many-connections, fleet-rate-limit): each a
// child running test/integration/fixtures/pool-load-child.ts (a pg.Pool and as many workers running
// `SELECT 1` in a loop), driven over IPC: 'ready' once its pool exists, 'go' starts the workers, 'pace'
// sets a pause between each worker's calls, cumulative 'stats' every 100 ms, 'stop' ends the pool and exits.
import { type ChildProcess, fork } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

const CHILD = new URL('../integration/fixtures/pool-load-child.ts', import.meta.url).pathname;

/** What a load app reports (cumulative). */
export interface LoadStats {
  ok: number;
  errors: Record<string, number>;
  /** The pool's totalCount at the last report. */
  totalCount: number;
}

/** A served call's latency, as the app measured it, and when its report arrived here. */
export interface LatencySample {
  readonly at: number;
  readonly ms: number;
}

export interface LoadApp {
  readonly child: ChildProcess;
  /** The last stats received. */
  stats: LoadStats;
  /** Every served call's latency so far (reports arrive every 100 ms). */
  readonly latencies: LatencySample[];
  /** Everything the child printed (stdout and stderr), for failure messages. */
  output(): string;
  readonly exited: Promise<number | null>;
}

/**
 * Starts one load app: `LOAD_PG` (the pool's config) and `LOAD_POOL_MAX` go in `env`, on top of this
 * process's environment; `execArgv` loads the hook (or nothing, for a bare baseline).
 */
export function startLoadApp(options: { execArgv: readonly string[]; env: Record<string, string> }): LoadApp {
  const child = fork(CHILD, [], {
    execArgv: ['--disable-warning=ExperimentalWarning', ...options.execArgv],
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (out += c));
  const app: LoadApp = {
    child,
    stats: { ok: 0, errors: {}, totalCount: 0 },
    latencies: [],
    output: () => out,
    exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
  };
  child.on('message', (m: { type?: string } & Partial<LoadStats>) => {
    if (m.type !== 'stats') return;
    app.stats = m as LoadStats;
    const at = performance.now();
    for (const ms of (m as { latencies?: number[] }).latencies ?? []) app.latencies.push({ at, ms });
  });
  return app;
}

/** Resolves when the app's pool exists; rejects if it exits first or takes over 20 s. */
export function loadAppReady(app: LoadApp): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child not ready: ${app.output()}`)), 20_000);
    app.child.on('message', (m: { type?: string }) => {
      if (m.type === 'ready') {
        clearTimeout(timer);
        resolve();
      }
    });
    app.child.once('exit', () => reject(new Error(`child exited: ${app.output()}`)));
  });
}

/** Asks every app to stop; SIGKILLs them all if they have not exited within 15 s. */
export async function stopLoadApps(apps: readonly LoadApp[]): Promise<void> {
  for (const app of apps) if (app.child.connected) app.child.send({ type: 'stop' });
  const all = Promise.all(apps.map((a) => a.exited));
  const timedOut = await Promise.race([all.then(() => false), sleep(15_000).then(() => true)]);
  if (timedOut) for (const app of apps) app.child.kill('SIGKILL');
  await all;
}
