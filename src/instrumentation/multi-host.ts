/**
 * Multi-host targets, as libpq reads them: `postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=
 * read-write`, a config `{ host: 'h1,h2', port: '5432,5433' }`, or PGHOST / PGPORT lists; plus
 * `target_session_attrs` (or PGTARGETSESSIONATTRS) and `load_balance_hosts` (or PGLOADBALANCEHOSTS).
 *
 * pg itself cannot use them: a connection string with a host list fails in pg-connection-string
 * ("Invalid URL", thrown by the Client constructor), and `host: 'h1,h2'` is looked up as one DNS name
 * (the port list is cut to its first number). So the hook reads the list here, constructs each client
 * for one host, and picks the host at connect time (host-choice.ts). The target (whose breaker, limits
 * and telemetry apply) is the logical database: the host list plus the database, so its policies follow
 * the primary wherever it is.
 */
import type { PgClientLike, PgPoolLike } from './types.ts';

export type SessionAttrs = 'any' | 'read-write' | 'read-only' | 'primary' | 'standby' | 'prefer-standby';

const SESSION_ATTRS: readonly SessionAttrs[] = [
  'any',
  'read-write',
  'read-only',
  'primary',
  'standby',
  'prefer-standby',
];

export interface HostAddress {
  readonly host: string;
  readonly port: number;
}

export interface HostSpec {
  readonly hosts: readonly HostAddress[];
  readonly attrs: SessionAttrs;
  /** load_balance_hosts=random: hosts tried in a random order. */
  readonly random: boolean;
  /** `h1:5432,h2:5433/db`: the logical database. */
  readonly target: string;
  readonly database: string;
}

const DEFAULT_PORT = 5432;

function attrsOf(value: unknown): SessionAttrs {
  if (value === undefined || value === null || value === '') return 'any';
  if (typeof value === 'string' && (SESSION_ATTRS as readonly string[]).includes(value)) {
    return value as SessionAttrs;
  }
  throw new Error(
    `invalid target_session_attrs value: "${String(value)}" (expected one of ${SESSION_ATTRS.join(', ')})`,
  );
}

function randomOf(value: unknown): boolean {
  if (value === undefined || value === null || value === '' || value === 'disable') return false;
  if (value === 'random') return true;
  throw new Error(`invalid load_balance_hosts value: "${String(value)}" (expected disable or random)`);
}

/** libpq: one port for every host, or one port per host. */
function pair(hosts: string[], ports: string[]): HostAddress[] {
  if (ports.length > 1 && ports.length !== hosts.length) {
    throw new Error(`could not match ${ports.length} port numbers to ${hosts.length} hosts`);
  }
  return hosts.map((host, i) => {
    const p = ports.length === 0 ? '' : ((ports.length === 1 ? ports[0] : ports[i]) ?? '');
    return { host: host === '' ? 'localhost' : host, port: p === '' ? DEFAULT_PORT : Number(p) };
  });
}

function build(
  hosts: HostAddress[],
  database: string,
  attrs: unknown,
  balance: unknown,
): HostSpec | undefined {
  const a = attrsOf(attrs);
  const random = randomOf(balance);
  // One host and nothing to check: pg's own path, untouched.
  if (hosts.length < 2 && a === 'any') return undefined;
  const list = hosts.map((h) => `${h.host.includes(':') ? `[${h.host}]` : h.host}:${h.port}`).join(',');
  return { hosts, attrs: a, random, target: `${list}/${database}`, database };
}

const URL_RE = /^(postgres(?:ql)?:\/\/)([^@/?#]*@)?([^/?#]*)(.*)$/i;

interface ParsedUrl {
  readonly spec: HostSpec | undefined;
  /** The same connection string naming only `host` (what pg can parse). */
  readonly forHost: (host: HostAddress) => string;
}

/** A connection string's host list (undefined when it names at most one host and no session attrs). */
export function parseConnectionString(url: string): ParsedUrl | undefined {
  const m = URL_RE.exec(url);
  if (!m) return undefined;
  const [, scheme = '', userinfo = '', hostPart = '', rest = ''] = m;
  const hosts: string[] = [];
  const ports: string[] = [];
  for (const item of hostPart.split(',')) {
    const v6 = /^\[([^\]]*)\](?::(\d*))?$/.exec(item);
    if (v6) {
      hosts.push(v6[1] ?? '');
      ports.push(v6[2] ?? '');
      continue;
    }
    const i = item.lastIndexOf(':');
    hosts.push(decodeURIComponent(i < 0 ? item : item.slice(0, i)));
    ports.push(i < 0 ? '' : item.slice(i + 1));
  }
  const q = rest.indexOf('?');
  const params = new URLSearchParams(q < 0 ? '' : rest.slice(q + 1).split('#')[0]);
  const path = (q < 0 ? rest : rest.slice(0, q)).split('#')[0] ?? '';
  const database = decodeURIComponent(path.replace(/^\//, ''));
  const spec = build(
    pair(hosts, ports.every((p) => p === '') ? [] : ports),
    database,
    params.get('target_session_attrs') ?? process.env.PGTARGETSESSIONATTRS,
    params.get('load_balance_hosts') ?? process.env.PGLOADBALANCEHOSTS,
  );
  return {
    spec,
    forHost: (h) => `${scheme}${userinfo}${h.host.includes(':') ? `[${h.host}]` : h.host}:${h.port}${rest}`,
  };
}

interface ConfigLike {
  connectionString?: unknown;
  host?: unknown;
  port?: unknown;
  database?: unknown;
  user?: unknown;
  target_session_attrs?: unknown;
  load_balance_hosts?: unknown;
}

function listOf(v: unknown): string[] {
  if (typeof v === 'number') return [String(v)];
  if (typeof v !== 'string' || v === '') return [];
  return v.split(',').map((s) => s.trim());
}

/** The host list of a config object (or of PGHOST / PGPORT when it names no host). */
export function parseConfig(config: ConfigLike): HostSpec | undefined {
  if (typeof config.connectionString === 'string') {
    const fromUrl = parseConnectionString(config.connectionString);
    if (fromUrl !== undefined) return fromUrl.spec;
  }
  const env = process.env;
  const hosts = listOf(config.host ?? env.PGHOST);
  if (hosts.length === 0) hosts.push('localhost');
  if (hosts.some((h) => h.startsWith('/'))) return undefined; // Unix sockets: pg's own path
  const database =
    typeof config.database === 'string'
      ? config.database
      : (env.PGDATABASE ?? (typeof config.user === 'string' ? config.user : (env.PGUSER ?? '')));
  return build(
    pair(hosts, listOf(config.port ?? env.PGPORT)),
    database,
    config.target_session_attrs ?? env.PGTARGETSESSIONATTRS,
    config.load_balance_hosts ?? env.PGLOADBALANCEHOSTS,
  );
}

const poolSpecs = new WeakMap<object, HostSpec | null>();
const clientSpecs = new WeakMap<object, HostSpec | null>();

/** The pool's host list (read once per pool), undefined for a single-host pool or unreadable options. */
export function poolHostSpec(pool: PgPoolLike): HostSpec | undefined {
  let spec = poolSpecs.get(pool);
  if (spec === undefined) {
    try {
      spec = parseConfig((pool.options ?? {}) as ConfigLike) ?? null;
    } catch {
      spec = null; // invalid values: pg reports them (or ignores them) as it would without the hook
    }
    poolSpecs.set(pool, spec);
  }
  return spec ?? undefined;
}

/** Remembers the host list of a client constructed for one of its hosts (a pool's client). */
export function setClientHostSpec(client: object, spec: HostSpec): void {
  clientSpecs.set(client, spec);
}

/**
 * The client's host list: given by its pool (setClientHostSpec), else read from its own host (a host
 * list from its config or PGHOST; the port list from PGPORT, since pg keeps only the first port).
 */
export function clientHostSpec(client: PgClientLike): HostSpec | undefined {
  let spec = clientSpecs.get(client);
  if (spec === undefined) {
    spec = null;
    const c = client as PgClientLike & { connectionParameters?: { target_session_attrs?: unknown } };
    const host = client.host;
    const attrs = c.connectionParameters?.target_session_attrs;
    if ((typeof host === 'string' && host.includes(',')) || (attrs !== undefined && attrs !== 'any')) {
      try {
        const port = process.env.PGPORT?.includes(',') ? process.env.PGPORT : client.port;
        spec = parseConfig({ host, port, database: client.database, target_session_attrs: attrs }) ?? null;
      } catch {
        spec = null;
      }
    }
    clientSpecs.set(client, spec);
  }
  return spec ?? undefined;
}

/**
 * The options a pool's client is constructed with: the pool's own, naming only the first host (pg
 * cannot construct a client for a host list); the host is chosen at connect time.
 */
export function singleHostOptions(options: Record<string, unknown>, spec: HostSpec): Record<string, unknown> {
  const first = spec.hosts[0] as HostAddress;
  // Every property kept as it is: pg-pool makes `password` non-enumerable (a spread would drop it).
  const copy = Object.defineProperties({}, Object.getOwnPropertyDescriptors(options)) as Record<
    string,
    unknown
  >;
  if (typeof options.connectionString === 'string') {
    const parsed = parseConnectionString(options.connectionString);
    if (parsed !== undefined) {
      copy.connectionString = parsed.forHost(first);
      return copy;
    }
  }
  copy.host = first.host;
  copy.port = first.port;
  return copy;
}

/** The host list of the pool whose `newClient` runs now (its client is constructed for one host). */
let constructing: HostSpec | undefined;

/**
 * Runs a pool's `newClient` with its options naming one host of its list (pg cannot construct a client
 * for a list), and tells the client connected inside it the whole list (adoptPoolHostSpec).
 */
export function inMultiHostNewClient<T>(pool: PgPoolLike, fn: () => T): T {
  const spec = poolHostSpec(pool);
  if (spec === undefined) return fn();
  const p = pool as unknown as { options: Record<string, unknown> };
  const options = p.options;
  const previous = constructing;
  p.options = singleHostOptions(options, spec);
  constructing = spec;
  try {
    return fn();
  } finally {
    p.options = options;
    constructing = previous;
  }
}

/** Called by the connect of a pool's new client: it belongs to the list of the pool constructing it. */
export function adoptPoolHostSpec(client: object): void {
  if (constructing !== undefined) setClientHostSpec(client, constructing);
}
