// slonik (ES module): its own pool of pg Clients through @slonik/pg-driver.
import { createPool, sql } from 'slonik';
import { abort, legs, run } from './workload.cjs';

const pool = await createPool(process.env.DATABASE_URL, { maximumPoolSize: 4 });

await run({
  insert: (key, val) => pool.query(sql.unsafe`INSERT INTO items (key, val) VALUES (${key}, ${val})`),
  read: async (key) => {
    const row = await pool.maybeOne(sql.unsafe`SELECT val FROM items WHERE key = ${key}`);
    return row ? Number(row.val) : null;
  },
  transfer: (id, src, dst, amount, opts = {}) =>
    pool.transaction(async (t) => {
      for (const [acc, delta] of legs(src, dst, amount)) {
        await t.query(sql.unsafe`UPDATE accounts SET balance = balance + ${delta} WHERE id = ${acc}`);
        if (opts.fail) abort();
      }
      await t.query(
        sql.unsafe`INSERT INTO transfers (id, src, dst, amount) VALUES (${id}, ${src}, ${dst}, ${amount})`,
      );
    }),
  insertAccount: (id) => pool.query(sql.unsafe`INSERT INTO accounts (id, balance) VALUES (${id}, 0)`),
  balance: async (id) =>
    Number(await pool.oneFirst(sql.unsafe`SELECT balance FROM accounts WHERE id = ${id}`)),
  close: () => pool.end(),
});
