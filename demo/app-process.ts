/**
 * The sample app as a child process of the orchestrator (demo/app.ts, started the way users start
 * theirs: `node --import pg-resilience/register`), and what it reports over IPC (protocol.ts). The
 * demo (cli.ts) runs one; the fleet demo (fleet.ts) runs four.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FromApp, ToApp } from './protocol.ts';

/** The repository's root: there `pg-resilience` resolves by self-reference to the build in dist/. */
const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

/** How the sample app is started: an ES module, so the ESM register entry, as users start theirs. */
export const APP_COMMAND = 'node --import pg-resilience/register demo/app.ts';

/** The sample app's process and what it reports. */
export class App {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #onStats: ((m: Extract<FromApp, { type: 'stats' }>) => void) | undefined;
  readonly #waiters = new Map<string, (m: FromApp) => void>();
  readonly events: string[] = [];
  fatal: string | undefined;

  constructor(env: NodeJS.ProcessEnv, onLine: (line: string) => void) {
    if (!existsSync(path.join(ROOT, 'dist', 'esm', 'register.js')))
      throw new Error('pg-resilience demo: the package is not built; run `npm run build`');
    this.child = fork(path.join(ROOT, 'demo', 'app.ts'), [], {
      cwd: ROOT,
      // The orchestrator's own flags (type stripping, warnings) plus the register entry.
      execArgv: [...process.execArgv, '--import', 'pg-resilience/register'],
      env,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    for (const stream of [this.child.stdout, this.child.stderr]) {
      stream?.setEncoding('utf8');
      let buffered = '';
      stream?.on('data', (chunk: string) => {
        buffered += chunk;
        let i: number;
        while ((i = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, i).trimEnd();
          buffered = buffered.slice(i + 1);
          if (line) onLine(line);
        }
      });
    }
    this.child.on('message', (m: FromApp) => {
      if (m.type === 'stats') this.#onStats?.(m);
      else if (m.type === 'fatal') this.fatal = m.message;
      const waiter = this.#waiters.get(m.type);
      if (waiter) {
        this.#waiters.delete(m.type);
        waiter(m);
      }
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  send(message: ToApp): void {
    // The app may be exiting (after Ctrl-C it gets the signal too): a failed send is not an error.
    if (this.alive && this.child.connected) this.child.send(message, () => {});
  }

  onStats(listener: (m: Extract<FromApp, { type: 'stats' }>) => void): void {
    this.#onStats = listener;
  }

  /** The next message of `type`, or an error when the app exits or `timeoutMs` passes. */
  next<T extends FromApp['type']>(type: T, timeoutMs: number): Promise<Extract<FromApp, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(type);
        reject(new Error(`the app sent no '${type}' within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      void this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(
          new Error(`the app exited (${signal ?? `code ${code}`})${this.fatal ? `: ${this.fatal}` : ''}`),
        );
      });
      this.#waiters.set(type, (m) => {
        clearTimeout(timer);
        resolve(m as Extract<FromApp, { type: T }>);
      });
    });
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.send({ type: 'stop' });
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(timer);
  }
}
