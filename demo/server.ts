/**
 * The demo's PostgreSQL, from the harness (test/support/postgres.ts): an embedded one (a real server in
 * a temp directory, removed at the end), or an existing one (`--database-url`), which the demo cannot
 * stop: the outage then comes from the fault proxy refusing connections, and the scenario says so.
 */
import { externalServer, startServer, type TestServer } from '../test/support/postgres.ts';

export interface DemoServer extends TestServer {
  /** One line for the demo's header: where the server runs (and its data). */
  readonly description: string;
}

/** The demo's settings: room for its pools, and no durability cost (the data is thrown away). */
const SETTINGS = { max_connections: '200', synchronous_commit: 'off' };

/** An embedded PostgreSQL on a free loopback port, database `demo`; close() removes its data. */
export async function startEmbedded(): Promise<DemoServer> {
  const server = await startServer({ database: 'demo', settings: SETTINGS }).catch((error: unknown) => {
    throw new Error(
      `${error instanceof Error ? error.message : String(error)}; or pass --database-url postgres://user:password@host:5432/db`,
      { cause: error },
    );
  });
  return Object.assign(server, {
    description: `embedded PostgreSQL on ${server.host}:${server.port} (data in ${server.baseDir})`,
  });
}

/** An existing PostgreSQL (`--database-url`): never stopped, its other databases left alone. */
export async function useExisting(url: string): Promise<DemoServer> {
  const server = await externalServer(url, '--database-url');
  return Object.assign(server, {
    description: `PostgreSQL at ${server.host}:${server.port}/${server.database}`,
  });
}
