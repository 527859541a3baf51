// drizzle-orm (ES module): node-postgres driver over a pg.Pool; pool.query, transactions via pool.connect().
import { eq, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { integer, pgTable, text } from 'drizzle-orm/pg-core';
import pg from 'pg';
import { abort, legs, run } from './workload.cjs';

const items = pgTable('items', { key: text('key').notNull(), val: integer('val').notNull() });
const accounts = pgTable('accounts', {
  id: integer('id').primaryKey(),
  balance: integer('balance').notNull(),
});
const transfers = pgTable('transfers', {
  id: text('id').notNull(),
  src: integer('src').notNull(),
  dst: integer('dst').notNull(),
  amount: integer('amount').notNull(),
});
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
const db = drizzle({ client: pool });

await run({
  insert: (key, val) => db.insert(items).values({ key, val }),
  read: async (key) => {
    const [row] = await db.select({ val: items.val }).from(items).where(eq(items.key, key));
    return row ? Number(row.val) : null;
  },
  transfer: (id, src, dst, amount, opts = {}) =>
    db.transaction(async (tx) => {
      for (const [acc, delta] of legs(src, dst, amount)) {
        await tx
          .update(accounts)
          .set({ balance: sql`${accounts.balance} + ${delta}` })
          .where(eq(accounts.id, acc));
        if (opts.fail) abort();
      }
      await tx.insert(transfers).values({ id, src, dst, amount });
    }),
  insertAccount: (id) => db.insert(accounts).values({ id, balance: 0 }),
  balance: async (id) => {
    const [row] = await db.select({ balance: accounts.balance }).from(accounts).where(eq(accounts.id, id));
    return Number(row.balance);
  },
  close: () => pool.end(),
});
