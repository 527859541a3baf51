// The ledger of the ORM matrix in its database: the schema each run starts from, and the invariants
// checked afterwards, read directly from the server (never through the proxy):
// every acknowledged insert and transfer present exactly once, no id present twice, the total balance
// conserved, and each account's balance equal to its recorded transfers (no half-applied transfer).
import pg from 'pg';
import type { AppRun } from './run-app.ts';

export const ACCOUNTS = 10;
export const START_BALANCE = 1000;

const SCHEMA = `
DROP TABLE IF EXISTS items, accounts, transfers;
-- No unique constraints on items and transfers: a write run twice must show as two rows.
CREATE TABLE items (key text NOT NULL, val int NOT NULL);
CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
CREATE TABLE transfers (id text NOT NULL, src int NOT NULL, dst int NOT NULL, amount int NOT NULL);
INSERT INTO accounts SELECT g, ${START_BALANCE} FROM generate_series(1, ${ACCOUNTS}) g;
`;

export interface LedgerCheck {
  /** acknowledged inserts or transfers missing from the table */
  missing: string[];
  /** ids present more than once */
  duplicated: string[];
  /** total balance minus the starting total (must be 0) */
  totalDrift: number;
  /** accounts whose balance differs from start - sent + received */
  unbalanced: number[];
  /** acknowledged writes checked */
  checked: number;
}

async function withClient<T>(config: pg.ClientConfig, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(config);
  client.on('error', () => {}); // a server restart must not kill the test process
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

export function resetLedger(config: pg.ClientConfig): Promise<void> {
  return withClient(config, async (c) => {
    await c.query(SCHEMA);
  });
}

export function checkLedger(config: pg.ClientConfig, run: AppRun): Promise<LedgerCheck> {
  return withClient(config, async (c) => {
    const countsOf = async (table: string): Promise<Map<string, number>> => {
      const col = table === 'items' ? 'key' : 'id';
      const res = await c.query<{ id: string; n: number }>(
        `SELECT ${col} AS id, count(*)::int AS n FROM ${table} GROUP BY ${col}`,
      );
      return new Map(res.rows.map((r) => [r.id, r.n]));
    };
    const items = await countsOf('items');
    const transfers = await countsOf('transfers');
    const missing = [
      ...run.acknowledged.insert.filter((k) => !items.has(k)),
      ...run.acknowledged.transfer.filter((k) => !transfers.has(k)),
    ];
    const duplicated = [...items, ...transfers].filter(([, n]) => n > 1).map(([id]) => id);
    const total = await c.query<{ total: number }>('SELECT sum(balance)::int AS total FROM accounts');
    const unbalanced = await c.query<{ id: number }>(`
      SELECT a.id FROM accounts a
      WHERE a.balance <> ${START_BALANCE}
        - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)
        + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
      ORDER BY a.id`);
    return {
      missing,
      duplicated,
      totalDrift: total.rows[0]!.total - ACCOUNTS * START_BALANCE,
      unbalanced: unbalanced.rows.map((r) => r.id),
      checked: run.acknowledged.insert.length + run.acknowledged.transfer.length,
    };
  });
}

/** The invariants hold. */
export function ledgerHolds(check: LedgerCheck): boolean {
  return (
    check.missing.length === 0 &&
    check.duplicated.length === 0 &&
    check.totalDrift === 0 &&
    check.unbalanced.length === 0
  );
}
