/**
 * A real `redis-server` for tests (Debian's, /usr/bin/redis-server, or REDIS_SERVER): started on a free
 * loopback port with no persistence (no RDB, no AOF), optionally with a password. It can be killed
 * (SIGKILL, like a crash) and restarted on the same port, which is what the fail-soft tests need.
 * Every server started here is killed when the test process exits.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './postgres.ts';

const HOST = '127.0.0.1';
/** Longest wait for a server to say it accepts connections. */
const READY_TIMEOUT_MS = 10_000;

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** The password it requires (`requirepass`), if any. */
  readonly password: string | undefined;
  /** `redis://[:password@]127.0.0.1:port/0` (`rediss://` on TLS). */
  readonly url: string;
  /** On TLS: the CA certificate that signed the server's (trust it to connect). */
  readonly caFile: string | undefined;
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

function launch(
  port: number,
  password: string | undefined,
  extra: readonly string[] = [],
): Promise<ChildProcess> {
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
  args.push(...extra);
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

/**
 * A certificate authority and a server certificate for 127.0.0.1 (openssl), in `dir`: for a redis-server
 * on TLS, and for clients that trust `ca.crt` (NODE_EXTRA_CA_CERTS).
 */
async function makeCertificates(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const f = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileAsync('openssl', args, { timeout: 30_000 });
  await openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=pg-resilience test CA',
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.crt'),
  );
  await openssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    f('server.key'),
    '-out',
    f('server.csr'),
  );
  writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  await openssl(
    'x509',
    '-req',
    '-in',
    f('server.csr'),
    '-CA',
    f('ca.crt'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    f('san.ext'),
    '-out',
    f('server.crt'),
  );
  return { ca: f('ca.crt'), cert: f('server.crt'), key: f('server.key') };
}

/**
 * Starts a redis-server on a free loopback port. With `tls`, it speaks only TLS there (a certificate for
 * 127.0.0.1 from a CA of its own, `caFile`), and `url` is `rediss://`.
 */
export async function startRedis(options: { password?: string; tls?: boolean } = {}): Promise<RedisServer> {
  const port = await freePort(HOST);
  const { password } = options;
  let extra: string[] = [];
  let caFile: string | undefined;
  let certDir: string | undefined;
  if (options.tls) {
    certDir = mkdtempSync(path.join(os.tmpdir(), 'pg-resilience-redis-tls-'));
    const { ca, cert, key } = await makeCertificates(certDir);
    caFile = ca;
    extra = [
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--tls-cert-file',
      cert,
      '--tls-key-file',
      key,
      '--tls-ca-cert-file',
      ca,
      '--tls-auth-clients',
      'no',
    ];
  }
  let child: ChildProcess | undefined = await launch(port, password, extra);
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
    caFile,
    url: `${options.tls ? 'rediss' : 'redis'}://${auth}${HOST}:${port}/0`,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    kill: stopChild,
    async restart() {
      await stopChild();
      child = await launch(port, password, extra);
    },
    async stop() {
      await stopChild();
      if (certDir) rmSync(certDir, { recursive: true, force: true });
    },
  };
}

export interface RedisCluster {
  /** The nodes' ports (every node a primary, no replicas). */
  readonly ports: readonly number[];
  readonly password: string | undefined;
  /** `redis://[:password@]127.0.0.1:port/0` of one node. */
  url(port: number): string;
  /** The port of the node that serves `key`'s slot. */
  ownerOf(key: string): Promise<number>;
  /** Stops every node and removes their cluster files. */
  stop(): Promise<void>;
}

const execFileAsync = promisify(execFile);

/** redis-cli, next to redis-server. */
function redisCliPath(): string {
  const server = redisServerPath();
  return server.includes('/') ? path.join(path.dirname(server), 'redis-cli') : 'redis-cli';
}

/**
 * A real Redis Cluster of `nodes` primaries on free loopback ports (`redis-cli --cluster create`), ready
 * (`cluster_state:ok` on every node) when this resolves.
 */
export async function startRedisCluster(
  options: { nodes?: number; password?: string } = {},
): Promise<RedisCluster> {
  const { password } = options;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pg-resilience-redis-cluster-'));
  const children: ChildProcess[] = [];
  const ports: number[] = [];
  const cli = (port: number, ...args: string[]) =>
    execFileAsync(
      redisCliPath(),
      ['-h', HOST, '-p', String(port), ...(password ? ['-a', password, '--no-auth-warning'] : []), ...args],
      {
        encoding: 'utf8',
        timeout: 10_000,
      },
    ).then((r) => r.stdout.trim());
  const stop = async () => {
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(children.map(exited));
    for (const c of children) live.delete(c);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < (options.nodes ?? 3); i++) {
      const port = await freePort(HOST);
      const extra = [
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--dir',
        dir,
        '--cluster-node-timeout',
        '2000',
      ];
      if (password !== undefined) extra.push('--masterauth', password);
      children.push(await launch(port, password, extra));
      ports.push(port);
    }
    await execFileAsync(
      redisCliPath(),
      [
        ...(password ? ['-a', password, '--no-auth-warning'] : []),
        '--cluster',
        'create',
        ...ports.map((p) => `${HOST}:${p}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    const deadline = Date.now() + 15_000;
    for (const port of ports) {
      while (!(await cli(port, 'CLUSTER', 'INFO')).includes('cluster_state:ok')) {
        if (Date.now() > deadline) throw new Error(`redis cluster: node ${port} not ok within 15 s`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const auth = password === undefined ? '' : `:${encodeURIComponent(password)}@`;
  return {
    ports,
    password,
    url: (port) => `redis://${auth}${HOST}:${port}/0`,
    async ownerOf(key) {
      const slot = Number(await cli(ports[0]!, 'CLUSTER', 'KEYSLOT', key));
      return slotOwner(await cli(ports[0]!, 'CLUSTER', 'NODES'), slot);
    },
    stop,
  };
}

/** The port of the primary serving `slot`, from `CLUSTER NODES` output. */
function slotOwner(nodes: string, slot: number): number {
  for (const line of nodes.split('\n')) {
    const fields = line.trim().split(' ');
    if (!fields[2]?.includes('master')) continue;
    const port = Number(/:(\d+)@/.exec(fields[1] ?? '')?.[1]);
    for (const range of fields.slice(8)) {
      const [from, to] = range.split('-').map(Number);
      if (slot >= from! && slot <= (to ?? from)!) return port;
    }
  }
  throw new Error(`redis cluster: no node serves slot ${slot}:\n${nodes}`);
}
