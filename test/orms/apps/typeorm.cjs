// TypeORM (CommonJS, entity schemas instead of decorators): pool.connect() then client.query().
'use strict';
const { run, legs, abort } = require('./workload.cjs');
const { DataSource, EntitySchema } = require('typeorm');

const Item = new EntitySchema({
  name: 'Item',
  tableName: 'items',
  columns: { key: { type: 'text', primary: true }, val: { type: 'int' } },
});
const Account = new EntitySchema({
  name: 'Account',
  tableName: 'accounts',
  columns: { id: { type: 'int', primary: true }, balance: { type: 'int' } },
});
const Transfer = new EntitySchema({
  name: 'Transfer',
  tableName: 'transfers',
  columns: {
    id: { type: 'text', primary: true },
    src: { type: 'int' },
    dst: { type: 'int' },
    amount: { type: 'int' },
  },
});
const ds = new DataSource({
  type: 'postgres',
  url: process.env.DATABASE_URL,
  entities: [Item, Account, Transfer],
  poolSize: 4,
  logging: false,
});

ds.initialize().then(() =>
  run({
    insert: (key, val) => ds.getRepository(Item).insert({ key, val }),
    read: async (key) => {
      const row = await ds.getRepository(Item).findOneBy({ key });
      return row ? Number(row.val) : null;
    },
    transfer: (id, src, dst, amount, opts = {}) =>
      ds.transaction(async (m) => {
        for (const [acc, delta] of legs(src, dst, amount)) {
          await m.increment(Account, { id: acc }, 'balance', delta);
          if (opts.fail) abort();
        }
        await m.insert(Transfer, { id, src, dst, amount });
      }),
    insertAccount: (id) => ds.getRepository(Account).insert({ id, balance: 0 }),
    balance: async (id) => Number((await ds.getRepository(Account).findOneBy({ id })).balance),
    close: () => ds.destroy(),
  }),
);
