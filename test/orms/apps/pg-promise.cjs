// pg-promise (CommonJS): ships its own nested copy of pg; pool.connect() then client.query().
'use strict';
const { run, legs, abort } = require('./workload.cjs');
const pgp = require('pg-promise')();
const db = pgp({ connectionString: process.env.DATABASE_URL, max: 4 });

run({
  insert: (key, val) => db.none('INSERT INTO items (key, val) VALUES ($1, $2)', [key, val]),
  read: async (key) => {
    const row = await db.oneOrNone('SELECT val FROM items WHERE key = $1', [key]);
    return row ? Number(row.val) : null;
  },
  transfer: (id, src, dst, amount, opts = {}) =>
    db.tx(async (t) => {
      for (const [acc, delta] of legs(src, dst, amount)) {
        await t.none('UPDATE accounts SET balance = balance + $1 WHERE id = $2', [delta, acc]);
        if (opts.fail) abort();
      }
      await t.none('INSERT INTO transfers (id, src, dst, amount) VALUES ($1, $2, $3, $4)', [
        id,
        src,
        dst,
        amount,
      ]);
    }),
  insertAccount: (id) => db.none('INSERT INTO accounts (id, balance) VALUES ($1, 0)', [id]),
  balance: async (id) => Number((await db.one('SELECT balance FROM accounts WHERE id = $1', [id])).balance),
  close: () => pgp.end(),
});
