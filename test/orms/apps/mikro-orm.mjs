// MikroORM (ES module): the PostgreSQL driver (through kysely over a pg.Pool).
import { EntitySchema, MikroORM } from '@mikro-orm/postgresql';
import { abort, legs, run } from './workload.cjs';

const Item = new EntitySchema({
  name: 'Item',
  tableName: 'items',
  properties: { key: { type: 'string', primary: true }, val: { type: 'number' } },
});
const Account = new EntitySchema({
  name: 'Account',
  tableName: 'accounts',
  properties: { id: { type: 'number', primary: true }, balance: { type: 'number' } },
});
const Transfer = new EntitySchema({
  name: 'Transfer',
  tableName: 'transfers',
  properties: {
    id: { type: 'string', primary: true },
    src: { type: 'number' },
    dst: { type: 'number' },
    amount: { type: 'number' },
  },
});
const orm = await MikroORM.init({
  clientUrl: process.env.DATABASE_URL,
  entities: [Item, Account, Transfer],
  pool: { min: 0, max: 4 },
  debug: false,
});

await run({
  insert: (key, val) => orm.em.fork().insert(Item, { key, val }),
  read: async (key) => {
    const row = await orm.em.fork().findOne(Item, { key });
    return row ? Number(row.val) : null;
  },
  transfer: (id, src, dst, amount, opts = {}) =>
    orm.em.fork().transactional(async (em) => {
      for (const [acc, delta] of legs(src, dst, amount)) {
        await em.execute('UPDATE accounts SET balance = balance + ? WHERE id = ?', [delta, acc]);
        if (opts.fail) abort();
      }
      await em.insert(Transfer, { id, src, dst, amount });
    }),
  insertAccount: (id) => orm.em.fork().insert(Account, { id, balance: 0 }),
  balance: async (id) => Number((await orm.em.fork().findOneOrFail(Account, { id })).balance),
  close: () => orm.close(true),
});
