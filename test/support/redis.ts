/**
 * A real `redis-server` for tests (Debian's, /usr/bin/redis-server, or REDIS_SERVER): started on a free
 * loopback port with no persistence (no RDB, no AOF), optionally with a password. It can be killed
 * (SIGKILL, like a crash) and restarted on the same port, which is what the fail-soft tests need.
 * Every server started here is killed when the test process exits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { freePort } from './postgres.ts';

const HOST = '127.0.0.1';
/** Longest wait for a server to say it accepts connections. */
const READY_TIMEOUT_MS = 10_000;

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** The password it requires (`requirepass`), if any. */
  readonly password: string | undefined;
  /** `redis://[:password@]127.0.0.1:port/0`. */
  readonly url: string;
  /** Whether the server process is running now. */
  readonly running: boolean;
  /** Kills it with SIGKILL (a crash: no goodbye to the clients) and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: no persistence). */
  restart(): Promise<void>;
  /** Stops it for good. */
  stop(): Promise<void>;
}

/** Where redis-server is: REDIS_SERVER, else Debian's path, else the PATH. */
export function redisServerPath(): string {
  const fromEnv = process.env.REDIS_SERVER;
  if (fromEnv) return fromEnv;
  return existsSync('/usr/bin/redis-server') ? '/usr/bin/redis-server' : 'redis-server';
}

const live = new Set<ChildProcess>();
let exitHook = false;
function killAllSync(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}

function launch(port: number, password: string | undefined): Promise<ChildProcess> {
  const args = [
    '--port',
    String(port),
    '--bind',
    HOST,
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'no',
    '--protected-mode',
    'yes',
    '--loglevel',
    'notice',
  ];
  if (password !== undefined) args.push('--requirepass', password);
  const child = spawn(redisServerPath(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', killAllSync);
  }
  return new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`redis-server did not start within ${READY_TIMEOUT_MS} ms:\n${output}`));
    }, READY_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('Ready to accept connections')) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        child.stdout?.resume();
        resolve(child);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    child.once('error', (error) => {
      clearTimeout(timer);
      live.delete(child);
      // A missing binary fails the suite (never a skip): .ci/run installs it.
      reject(
        new Error(`cannot start ${redisServerPath()} (apt-get install redis-server): ${error.message}`, {
          cause: error,
        }),
      );
    });
    child.once('exit', (code, signal) => {
      live.delete(child);
      clearTimeout(timer);
      reject(new Error(`redis-server exited (${code ?? signal}) before it was ready:\n${output}`));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Starts a redis-server on a free loopback port. */
export async function startRedis(options: { password?: string } = {}): Promise<RedisServer> {
  const port = await freePort(HOST);
  const { password } = options;
  let child: ChildProcess | undefined = await launch(port, password);
  const auth = password === undefined ? '' : `:${encodeURIComponent(password)}@`;
  const stopChild = async () => {
    const c = child;
    child = undefined;
    if (!c) return;
    c.kill('SIGKILL');
    await exited(c);
    live.delete(c);
  };
  return {
    host: HOST,
    port,
    password,
    url: `redis://${auth}${HOST}:${port}/0`,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    kill: stopChild,
    async restart() {
      await stopChild();
      child = await launch(port, password);
    },
    stop: stopChild,
  };
}
