/** Small helpers shared by the patches. No credentials ever leave here: only `host:port/database`. */
import { VERSION } from '../version.ts';
import { clientHostSpec, poolHostSpec } from './multi-host.ts';
import type { PgClientLike, PgPoolLike } from './types.ts';

export const INSTRUMENTATION_NAME = 'pg-resilience';
/** package.json's version (src/version.ts is generated from it at build time). */
export const INSTRUMENTATION_VERSION = VERSION;

/** pg's defaults when nothing is configured (pg/lib/defaults.js). */
const DEFAULT_HOST = 'localhost';
const DEFAULT_PORT = 5432;

function format(host: unknown, port: unknown, database: unknown): string {
  const h = typeof host === 'string' && host !== '' ? host : DEFAULT_HOST;
  const p =
    typeof port === 'number' || (typeof port === 'string' && port !== '')
      ? String(port)
      : String(DEFAULT_PORT);
  const d = typeof database === 'string' && database !== '' ? database : '';
  return `${h}:${p}/${d}`;
}

/** `host:port/database` of a pg Client (its resolved connection parameters); a multi-host client's
 * logical database (`h1:5432,h2:5433/db`, multi-host.ts). */
export function clientTarget(client: PgClientLike): string {
  const spec = clientHostSpec(client);
  if (spec !== undefined) return spec.target;
  return format(client.host, client.port, client.database);
}

/** `host:port/database` of a pg-pool Pool; the client that failed, when given, knows it best. */
export function poolTarget(pool: PgPoolLike, client?: unknown): string {
  if (isClientLike(client)) return clientTarget(client);
  const spec = poolHostSpec(pool);
  if (spec !== undefined) return spec.target;
  const o = pool.options ?? {};
  if (o.host === undefined && typeof o.connectionString === 'string') {
    try {
      const url = new URL(o.connectionString);
      return format(decodeURIComponent(url.hostname), url.port, decodeURIComponent(url.pathname.slice(1)));
    } catch {
      // fall through to the defaults
    }
  }
  return format(o.host, o.port, o.database);
}

function isClientLike(v: unknown): v is PgClientLike {
  return typeof v === 'object' && v !== null && 'host' in v && 'port' in v;
}

/** Module exports as loaded by require or by import-in-the-middle (which may wrap them in `default`). */
export function moduleExports<T>(module: unknown): T {
  const m = module as { [Symbol.toStringTag]?: string; default?: T };
  return (m[Symbol.toStringTag] === 'Module' ? m.default : module) as T;
}
