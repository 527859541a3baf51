// knex (CommonJS): its own tarn.js pool of pg Clients.
'use strict';
const { run, legs, abort } = require('./workload.cjs');
const knex = require('knex')({
  client: 'pg',
  connection: process.env.DATABASE_URL,
  pool: { min: 0, max: 4 },
});

run({
  insert: (key, val) => knex('items').insert({ key, val }),
  read: async (key) => {
    const row = await knex('items').where({ key }).first();
    return row ? Number(row.val) : null;
  },
  transfer: (id, src, dst, amount, opts = {}) =>
    knex.transaction(async (trx) => {
      for (const [acc, delta] of legs(src, dst, amount)) {
        await trx('accounts').where({ id: acc }).increment('balance', delta);
        if (opts.fail) abort();
      }
      await trx('transfers').insert({ id, src, dst, amount });
    }),
  insertAccount: (id) => knex('accounts').insert({ id, balance: 0 }),
  balance: async (id) => Number((await knex('accounts').where({ id }).first()).balance),
  close: () => knex.destroy(),
});
