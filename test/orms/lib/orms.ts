// The ORMs of the matrix: each app's file and how it is loaded (CommonJS apps get the hook with
// `--require`, ES module apps with `--import`), and how the ORM reaches pg (for the report).
export interface Orm {
  name: string;
  app: string;
  module: 'cjs' | 'esm';
  reachesPg: string;
  /** Settings of the hook the ORM's docs recommend (docs/orms.md), set in the hooked arm's environment. */
  hookEnv?: Readonly<Record<string, string>>;
}

export const ORMS: readonly Orm[] = [
  { name: 'knex', app: 'knex.cjs', module: 'cjs', reachesPg: 'own tarn.js pool of `new pg.Client()`' },
  {
    name: 'kysely',
    app: 'kysely.mjs',
    module: 'esm',
    reachesPg: '`pg.Pool`: `pool.connect()` + `client.query()`',
  },
  {
    name: 'drizzle-orm',
    app: 'drizzle.mjs',
    module: 'esm',
    reachesPg: '`pool.query`; transactions via `pool.connect()`',
  },
  {
    name: 'prisma',
    app: 'prisma.mts',
    module: 'esm',
    reachesPg: '`@prisma/adapter-pg`: `pool.query`; transactions via `pool.connect()`',
  },
  {
    name: 'typeorm',
    app: 'typeorm.cjs',
    module: 'cjs',
    reachesPg: '`pg.Pool`: `pool.connect()` + `client.query()`',
  },
  {
    name: 'sequelize',
    app: 'sequelize.cjs',
    module: 'cjs',
    reachesPg: 'own sequelize-pool of `new pg.Client()`',
  },
  { name: 'mikro-orm', app: 'mikro-orm.mjs', module: 'esm', reachesPg: 'through kysely over a `pg.Pool`' },
  {
    name: 'pg-promise',
    app: 'pg-promise.cjs',
    module: 'cjs',
    reachesPg: 'its own nested `pg`: `pool.connect()` + `client.query()`',
  },
  {
    name: 'slonik',
    app: 'slonik.mjs',
    module: 'esm',
    reachesPg: '`@slonik/pg-driver`: own pool of `new pg.Client()`',
    // slonik fails a connection routine on the client's first 'error' (docs/orms.md).
    hookEnv: { PG_RESILIENCE_HOLD_CLIENT_ERROR_WHILE_SUBSTITUTING: 'true' },
  },
];
