// The parent's side of the chaos app: forks app.mts in the scratch app (with or without
// `--import pg-resilience/register`), collects what it reports, notices when it dies (exit code,
// signal, the CHAOS-FATAL line it wrote) and answers request/response pairs over IPC.
import { type ChildProcess, fork } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import type { AppConfig, FromApp, OpRecord, ToApp } from './protocol.ts';

export interface Fatal {
  origin: string;
  name: string;
  message: string;
  code?: string;
  stack?: string;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
  /** the CHAOS-FATAL lines the app wrote before it died */
  fatals: Fatal[];
}

export interface AppSinks {
  onOps(ops: OpRecord[]): void;
  onNotified(payloads: string[], at: number): void;
  onListening(at: number): void;
}

export class AppProcess {
  readonly child: ChildProcess;
  readonly generation: number;
  readonly exited: Promise<ExitInfo>;
  readonly fatals: Fatal[] = [];
  #waiters: Array<{ type: FromApp['type']; resolve: (m: FromApp) => void }> = [];
  #stderrTail = '';

  private constructor(child: ChildProcess, generation: number, sinks: AppSinks, logFile: string) {
    this.child = child;
    this.generation = generation;
    child.on('message', (m: FromApp) => {
      switch (m.type) {
        case 'ops':
          sinks.onOps(m.ops);
          break;
        case 'notified':
          sinks.onNotified(m.payloads, m.at);
          break;
        case 'listening':
          sinks.onListening(m.at);
          break;
        default:
          break;
      }
      const i = this.#waiters.findIndex((w) => w.type === m.type);
      if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(m);
    });
    const log = (chunk: string) => {
      try {
        appendFileSync(logFile, chunk);
      } catch {
        // the log is a convenience
      }
    };
    child.stdout?.setEncoding('utf8').on('data', log);
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      log(chunk);
      this.#stderrTail += chunk;
      let nl: number;
      while ((nl = this.#stderrTail.indexOf('\n')) >= 0) {
        const line = this.#stderrTail.slice(0, nl);
        this.#stderrTail = this.#stderrTail.slice(nl + 1);
        if (line.startsWith('CHAOS-FATAL ')) {
          try {
            this.fatals.push(JSON.parse(line.slice('CHAOS-FATAL '.length)) as Fatal);
          } catch {
            this.fatals.push({ origin: 'unknown', name: 'unparsed', message: line });
          }
        }
      }
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        // stderr may still hold the last line: let it drain
        setTimeout(() => resolve({ code, signal, at: Date.now(), fatals: this.fatals }), 100);
      });
    });
    child.on('error', () => {});
  }

  static async start(options: {
    dir: string;
    config: AppConfig;
    env: NodeJS.ProcessEnv;
    sinks: AppSinks;
    logFile: string;
  }): Promise<AppProcess> {
    const { config } = options;
    const execArgv = ['--expose-gc', '--disable-warning=ExperimentalWarning'];
    if (config.arm === 'pg-resilience') execArgv.push('--import', 'pg-resilience/register');
    const child = fork('app.mts', [], {
      cwd: options.dir,
      execArgv,
      env: { ...options.env, NODE_OPTIONS: '', CHAOS_APP_CONFIG: JSON.stringify(config) },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    appendFileSync(
      options.logFile,
      `\n=== ${new Date().toISOString()} generation ${config.generation}: node ${execArgv.join(' ')} app.mts\n`,
    );
    const app = new AppProcess(child, config.generation, options.sinks, options.logFile);
    const ready = app.waitFor('ready', 30_000);
    const early = app.exited.then((e) => {
      throw new Error(
        `the chaos app exited during start-up (code ${e.code}, signal ${e.signal}): ` +
          `${JSON.stringify(e.fatals)}; see ${options.logFile}`,
      );
    });
    await Promise.race([ready, early]);
    return app;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  send(message: ToApp): void {
    if (this.child.connected) this.child.send(message, undefined, undefined, () => {});
  }

  /** The next message of this type; rejects after timeoutMs or when the app exits first. */
  waitFor<T extends FromApp['type']>(type: T, timeoutMs: number): Promise<Extract<FromApp, { type: T }>> {
    return new Promise((resolve, reject) => {
      const waiter = { type, resolve: resolve as (m: FromApp) => void };
      this.#waiters.push(waiter);
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`no '${type}' from the chaos app within ${timeoutMs} ms`));
      }, timeoutMs);
      void this.exited.then(() => {
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`the chaos app exited before answering '${type}'`));
      });
      const done = waiter.resolve;
      waiter.resolve = (m) => {
        clearTimeout(timer);
        done(m);
      };
    });
  }

  request<T extends FromApp['type']>(
    message: ToApp,
    reply: T,
    timeoutMs: number,
  ): Promise<Extract<FromApp, { type: T }>> {
    const answer = this.waitFor(reply, timeoutMs);
    this.send(message);
    return answer;
  }

  kill(): void {
    if (this.alive) this.child.kill('SIGKILL');
  }
}
