// kysely (ES module): PostgresDialect over a pg.Pool; pool.connect() then client.query().
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { abort, legs, run } from './workload.cjs';

const db = new Kysely({
  dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 }) }),
});

await run({
  insert: (key, val) => db.insertInto('items').values({ key, val }).execute(),
  read: async (key) => {
    const row = await db.selectFrom('items').select('val').where('key', '=', key).executeTakeFirst();
    return row ? Number(row.val) : null;
  },
  transfer: (id, src, dst, amount, opts = {}) =>
    db.transaction().execute(async (trx) => {
      for (const [acc, delta] of legs(src, dst, amount)) {
        await trx
          .updateTable('accounts')
          .set({ balance: sql`balance + ${delta}` })
          .where('id', '=', acc)
          .execute();
        if (opts.fail) abort();
      }
      await trx.insertInto('transfers').values({ id, src, dst, amount }).execute();
    }),
  insertAccount: (id) => db.insertInto('accounts').values({ id, balance: 0 }).execute(),
  balance: async (id) =>
    Number(
      (await db.selectFrom('accounts').select('balance').where('id', '=', id).executeTakeFirstOrThrow())
        .balance,
    ),
  close: () => db.destroy(),
});
