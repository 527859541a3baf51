// Sequelize 6 (CommonJS): its own sequelize-pool of pg Clients.
'use strict';
const { run, legs, abort } = require('./workload.cjs');
const { Sequelize, DataTypes } = require('sequelize');
const sequelize = new Sequelize(process.env.DATABASE_URL, { logging: false, pool: { min: 0, max: 4 } });
const opts = { timestamps: false };
const Item = sequelize.define(
  'Item',
  { key: { type: DataTypes.TEXT, primaryKey: true }, val: DataTypes.INTEGER },
  { ...opts, tableName: 'items' },
);
const Account = sequelize.define(
  'Account',
  { id: { type: DataTypes.INTEGER, primaryKey: true }, balance: DataTypes.INTEGER },
  { ...opts, tableName: 'accounts' },
);
const Transfer = sequelize.define(
  'Transfer',
  {
    id: { type: DataTypes.TEXT, primaryKey: true },
    src: DataTypes.INTEGER,
    dst: DataTypes.INTEGER,
    amount: DataTypes.INTEGER,
  },
  { ...opts, tableName: 'transfers' },
);

run({
  insert: (key, val) => Item.create({ key, val }),
  read: async (key) => {
    const row = await Item.findOne({ where: { key } });
    return row ? Number(row.val) : null;
  },
  transfer: (id, src, dst, amount, o = {}) =>
    sequelize.transaction(async (transaction) => {
      for (const [acc, delta] of legs(src, dst, amount)) {
        await Account.increment('balance', { by: delta, where: { id: acc }, transaction });
        if (o.fail) abort();
      }
      await Transfer.create({ id, src, dst, amount }, { transaction });
    }),
  insertAccount: (id) => Account.create({ id, balance: 0 }),
  balance: async (id) => Number((await Account.findByPk(id)).balance),
  close: () => sequelize.close(),
});
