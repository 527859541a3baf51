/** Runs bench/workers/load.ts under an arm, in a child process, and returns what it measured. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { Arm } from './arms.ts';

export interface LoadResult {
  readonly ops: number;
  readonly errors: number;
  readonly durationMs: number;
  readonly throughput: number;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly cpuUsPerOp: number | null;
  readonly maxRssMb: number;
}

export interface LoadOptions {
  readonly urls: readonly string[];
  readonly concurrency: number;
  readonly workload: 'select1' | 'mix';
  readonly durationMs: number;
  readonly warmupMs: number;
}

/** A worker started by startWorker: its result, and `stop()`, which closes its stdin and waits for it. */
export interface StartedWorker<T> {
  readonly result: Promise<T>;
  stop(): Promise<T>;
}

/** `bench/workers/<script>` in a child process under an arm (its flags, then `nodeFlags`; its env, then `env`), and the tail of its stderr. */
function spawnUnder(
  root: string,
  arm: Arm,
  script: string,
  env: Readonly<Record<string, string>>,
  nodeFlags: readonly string[] = [],
) {
  const child = spawn(
    process.execPath,
    [
      ...arm.execArgv,
      ...nodeFlags,
      '--disable-warning=ExperimentalWarning',
      path.join(root, 'bench', 'workers', script),
    ],
    { cwd: root, env: { ...process.env, ...arm.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  // Closing the stdin of a worker that has already exited must not throw (EPIPE).
  child.stdin.on('error', () => {});
  let err = '';
  child.stderr.on('data', (d) => (err = (err + String(d)).slice(-2000)));
  return { child, stderr: () => err };
}

/**
 * Starts `bench/workers/<script>` under an arm in a child process (the arm's flags, then `nodeFlags`; its
 * env, then `env`). `result` resolves with the JSON of the last line it prints, or rejects with the tail
 * of its stderr when it fails; a worker that runs until its stdin closes is ended by `stop()`.
 */
export function startWorker<T>(
  root: string,
  arm: Arm,
  script: string,
  env: Readonly<Record<string, string>>,
  nodeFlags: readonly string[] = [],
): StartedWorker<T> {
  const { child, stderr } = spawnUnder(root, arm, script, env, nodeFlags);
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const result = new Promise<T>((resolve, reject) => {
    child.on('exit', (code) => {
      try {
        if (code !== 0) throw new Error(`exit ${code}`);
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as T);
      } catch (e) {
        reject(new Error(`${script} (arm ${arm.id}) failed (${(e as Error).message}): ${stderr()}`));
      }
    });
  });
  return {
    result,
    stop: () => {
      child.stdin.end();
      return result;
    },
  };
}

/** Runs a worker that needs no stdin (closed at once) and resolves with what it printed (startWorker). */
export function runWorker<T>(
  root: string,
  arm: Arm,
  script: string,
  env: Readonly<Record<string, string>>,
  nodeFlags: readonly string[] = [],
): Promise<T> {
  return startWorker<T>(root, arm, script, env, nodeFlags).stop();
}

export function runLoad(root: string, arm: Arm, options: LoadOptions): Promise<LoadResult> {
  return runWorker<LoadResult>(root, arm, 'load.ts', {
    BENCH_URLS: JSON.stringify(options.urls),
    BENCH_CONCURRENCY: String(options.concurrency),
    BENCH_WORKLOAD: options.workload,
    BENCH_DURATION_MS: String(options.durationMs),
    BENCH_WARMUP_MS: String(options.warmupMs),
  });
}

/** A worker that stays up and measures on demand: each stdin line `<warmupMs> <durationMs>` is one slice. */
export interface SliceWorker<T = LoadResult> {
  /** Runs the workload for `warmupMs` unmeasured, then `durationMs` measured; resolves with that slice. */
  slice(warmupMs: number, durationMs: number): Promise<T>;
  /** Ends the worker (its pools closed). */
  stop(): Promise<void>;
}

/**
 * Starts `bench/workers/<script>` under an arm in slice mode (`BENCH_SLICES=1` added to `env`): set up
 * and idle until asked for a slice, then one JSON line per slice on its stdout.
 */
export function startSlices<T>(
  root: string,
  arm: Arm,
  script: string,
  env: Readonly<Record<string, string>>,
): SliceWorker<T> {
  const { child, stderr } = spawnUnder(root, arm, script, { ...env, BENCH_SLICES: '1' });
  let out = '';
  let waiting: { resolve: (r: T) => void; reject: (e: Error) => void } | undefined;
  const failed = (why: string) => new Error(`${script} (arm ${arm.id}, slices) ${why}: ${stderr()}`);
  child.stdout.on('data', (d) => {
    out += String(d);
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      const w = waiting;
      waiting = undefined;
      w?.resolve(JSON.parse(line) as T);
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  void exited.then((code) => waiting?.reject(failed(`exited with ${code}`)));
  return {
    slice: (warmupMs, durationMs) =>
      new Promise<T>((resolve, reject) => {
        if (child.exitCode !== null) return reject(failed('has exited'));
        waiting = { resolve, reject };
        child.stdin.write(`${warmupMs} ${durationMs}\n`);
      }),
    stop: async () => {
      child.stdin.end();
      const code = await exited;
      if (code !== 0) throw failed(`exited with ${code}`);
    },
  };
}

/** A load worker (load.ts) in slice mode: connected and idle until asked for a slice. */
export function startSliceWorker(
  root: string,
  arm: Arm,
  options: Pick<LoadOptions, 'urls' | 'concurrency' | 'workload'>,
): SliceWorker {
  return startSlices<LoadResult>(root, arm, 'load.ts', {
    BENCH_URLS: JSON.stringify(options.urls),
    BENCH_CONCURRENCY: String(options.concurrency),
    BENCH_WORKLOAD: options.workload,
  });
}
