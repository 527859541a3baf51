/**
 * The demo shop's schema and seed: customers with a balance, products with a stock, orders and their
 * items. Idempotent: the tables are created if missing and seeded only when empty, in one transaction
 * (all or nothing), with set-based `INSERT … SELECT generate_series(…)` (well under a second).
 *
 * `orders.ref` (a client-generated uuid) is indexed but deliberately NOT unique: a non-idempotent
 * insert run twice must show up as a duplicate in the ledger check, not be prevented by a constraint.
 * Ids are seeded explicitly (1..n) and the sequences set after them, so the app can pick random
 * existing ids even if an earlier seeding attempt rolled back after taking sequence values.
 */
import type { Pool, PoolClient } from 'pg';
import { withTransaction } from 'pg-resilience';
import { SEED } from './protocol.ts';

/** Every customer's balance at seed time; transfers move money, so the sum stays n × this. */
export const INITIAL_BALANCE_CENTS = 10_000;

/** The sum of all balances right after seeding (what `verify` compares against). */
export const SEED_BALANCE_TOTAL_CENTS = SEED.customers * INITIAL_BALANCE_CENTS;

/** Rows per table, keyed like `SEED`. */
export type TableCounts = Record<keyof typeof SEED, number>;

/**
 * The demo's own schema: its connections set `search_path` to it (cli.ts puts `options=-c
 * search_path=…` in their URLs), so on a database of yours (`--database-url`) the shop's tables never
 * meet your own.
 */
// Not `pg_…`: PostgreSQL reserves that prefix for system schemas.
export const DEMO_SCHEMA = 'resilience_demo';

const SCHEMA = `
CREATE SCHEMA IF NOT EXISTS ${DEMO_SCHEMA};
CREATE TABLE IF NOT EXISTS customers (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL UNIQUE,
  balance_cents bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
  id serial PRIMARY KEY,
  name text NOT NULL,
  price_cents int NOT NULL,
  stock int NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
  id bigserial PRIMARY KEY,
  ref uuid NOT NULL,
  customer_id int NOT NULL REFERENCES customers (id),
  created_at timestamptz NOT NULL DEFAULT now(),
  total_cents int NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_ref_idx ON orders (ref);
CREATE INDEX IF NOT EXISTS orders_customer_created_idx ON orders (customer_id, created_at DESC);
CREATE TABLE IF NOT EXISTS order_items (
  id bigserial PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES orders (id),
  product_id int NOT NULL REFERENCES products (id),
  qty int NOT NULL,
  price_cents int NOT NULL
);
CREATE INDEX IF NOT EXISTS order_items_order_idx ON order_items (order_id);
`;

/** Creates the tables and indexes that do not exist yet. */
export async function createSchema(pool: Pool): Promise<void> {
  // One transaction: either every table exists afterwards or none was created.
  await withTransaction(pool, async (client: PoolClient) => {
    await client.query(SCHEMA);
  });
}

/** Seeds the shop when it is empty (in one transaction); returns the rows per table either way. */
export async function seed(pool: Pool): Promise<TableCounts> {
  await withTransaction(pool, async (client: PoolClient) => {
    // Two seeders at once would both see empty tables: the second waits here, then sees the rows.
    await client.query('LOCK TABLE customers IN SHARE ROW EXCLUSIVE MODE');
    const { rows } = await client.query<{ any: boolean }>('SELECT EXISTS (SELECT 1 FROM customers) AS any');
    if (rows[0]?.any) return;
    await client.query(
      `INSERT INTO customers (id, name, email, balance_cents)
       SELECT g, 'Customer ' || g, 'customer' || g || '@example.com', $2::bigint
       FROM generate_series(1, $1::int) AS g`,
      [SEED.customers, INITIAL_BALANCE_CENTS],
    );
    await client.query(
      `INSERT INTO products (id, name, price_cents, stock)
       SELECT g, 'Product ' || g, 100 + (g * 37) % 9900, 1000
       FROM generate_series(1, $1::int) AS g`,
      [SEED.products],
    );
    await client.query(
      `INSERT INTO orders (id, ref, customer_id, created_at, total_cents)
       SELECT g, gen_random_uuid(), 1 + (g * 7919) % $2::int, now() - g * interval '17 minutes', 0
       FROM generate_series(1, $1::int) AS g`,
      [SEED.orders, SEED.customers],
    );
    await client.query(
      `INSERT INTO order_items (id, order_id, product_id, qty, price_cents)
       SELECT g, 1 + (g - 1) % $2::int, p.id, 1 + g % 5, p.price_cents
       FROM generate_series(1, $1::int) AS g
       JOIN products AS p ON p.id = 1 + (g * 131) % $3::int`,
      [SEED.orderItems, SEED.orders, SEED.products],
    );
    await client.query(
      `UPDATE orders AS o SET total_cents = s.total
       FROM (SELECT order_id, sum(qty * price_cents)::int AS total FROM order_items GROUP BY order_id) AS s
       WHERE o.id = s.order_id`,
    );
    for (const table of ['customers', 'products', 'orders', 'order_items']) {
      await client.query(
        `SELECT setval(pg_get_serial_sequence('${table}', 'id'), (SELECT max(id) FROM ${table}))`,
      );
    }
    await client.query('ANALYZE customers, products, orders, order_items');
  });
  return countRows(pool);
}

/** Rows per table, keyed like `SEED`. */
export async function countRows(pool: Pool): Promise<TableCounts> {
  const { rows } = await pool.query<{ customers: number; products: number; orders: number; items: number }>(
    `SELECT (SELECT count(*)::int FROM customers) AS customers,
            (SELECT count(*)::int FROM products) AS products,
            (SELECT count(*)::int FROM orders) AS orders,
            (SELECT count(*)::int FROM order_items) AS items`,
  );
  const r = rows[0];
  if (r === undefined) throw new Error('counting the seeded rows returned no row');
  return { customers: r.customers, products: r.products, orders: r.orders, orderItems: r.items };
}
