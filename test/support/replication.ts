// A primary and a streaming standby of it, both real embedded PostgreSQL servers on loopback, for the
// failover suites. The standby is built without pg_basebackup: the primary is started, stopped cleanly,
// its data dir copied, `standby.signal` and `primary_conninfo` added to the copy, then both are started.
// With `synchronous: true` the primary waits for the standby on every commit (synchronous_standby_names),
// so an acknowledged commit is on both: nothing acknowledged is lost by a promotion.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { startServer, type TestServer, writeOwnedFile } from './postgres.ts';

export interface ReplicaPair {
  readonly primary: TestServer;
  readonly standby: TestServer;
  /** Promotes the standby (pg_promote, waits until it is done); resolves when it accepts writes. */
  promote(): Promise<void>;
  /** Resolves when the standby has replayed everything the primary has written so far. */
  caughtUp(timeoutMs?: number): Promise<void>;
  /** Closes both servers. */
  close(): Promise<void>;
}

export interface ReplicaPairOptions {
  /** Commit waits for the standby (synchronous_standby_names = '*'); default true. */
  synchronous?: boolean;
  database?: string;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const REPLICATION_SETTINGS: Record<string, string> = {
  wal_level: 'replica',
  max_wal_senders: '5',
  hot_standby: 'on',
  // A standby applies WAL without waiting on conflicting queries of its own.
  max_standby_streaming_delay: '0',
  // The standby starts before the primary is back: retry the primary every 100 ms, not every 5 s.
  wal_retrieve_retry_interval: '100ms',
};

async function until(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`replication: ${what} not within ${timeoutMs} ms`);
    await sleep(25);
  }
}

export async function startReplicaPair(options: ReplicaPairOptions = {}): Promise<ReplicaPair> {
  const primary = await startServer({ database: options.database ?? 'app', settings: REPLICATION_SETTINGS });
  let standby: TestServer | undefined;
  try {
    await primary.stop();
    const source = path.join(primary.baseDir as string, 'data');
    standby = await startServer({
      database: primary.database,
      settings: REPLICATION_SETTINGS,
      copyDataFrom: source,
      prepareDataDir: async (dataDir) => {
        await writeOwnedFile(path.join(dataDir, 'standby.signal'), '');
        const conninfo = `host=${primary.host} port=${primary.port} user=${primary.user} password=${primary.password} application_name=standby1`;
        // Appended to postgresql.auto.conf: read after postgresql.conf, so it wins.
        const auto = path.join(dataDir, 'postgresql.auto.conf');
        const before = await readFile(auto, 'utf8').catch(() => '');
        await writeOwnedFile(auto, `${before}\nprimary_conninfo = '${conninfo.replace(/'/g, "''")}'\n`);
      },
    });
    await primary.start();
    await until('the standby streaming', 20_000, async () => {
      const r = await primary.query(
        `SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'`,
      );
      return r.rows[0]?.n === 1;
    });
    if (options.synchronous !== false) {
      await primary.query(`ALTER SYSTEM SET synchronous_standby_names = '*'`);
      await primary.query('SELECT pg_reload_conf()');
      await until('synchronous replication', 10_000, async () => {
        const r = await primary.query(`SELECT sync_state FROM pg_stat_replication`);
        return r.rows[0]?.sync_state === 'sync';
      });
    }
  } catch (err) {
    await standby?.close().catch(() => {});
    await primary.close().catch(() => {});
    throw err;
  }
  const s = standby;
  return {
    primary,
    standby: s,
    async promote() {
      await s.query('SELECT pg_promote(true, 30)');
      await until('the promoted standby accepting writes', 30_000, async () => {
        const r = await s.query<{ ro: string }>(`SELECT current_setting('transaction_read_only') AS ro`);
        return r.rows[0]?.ro === 'off';
      });
    },
    async caughtUp(timeoutMs = 10_000) {
      const r = await primary.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      const lsn = r.rows[0]?.lsn;
      await until('the standby catching up', timeoutMs, async () => {
        const q = await s.query<{ ok: boolean }>('SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok', [
          lsn,
        ]);
        return q.rows[0]?.ok === true;
      });
    },
    async close() {
      await Promise.all([s.close(), primary.close()]);
    },
  };
}
