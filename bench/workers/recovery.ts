/**
 * The recovery section's worker (bench/sections/recovery.ts): a steady open-loop load of BENCH_RATE
 * reads per second (`SELECT v FROM bench_rec_items WHERE id = $1`, one started every 1000/BENCH_RATE ms
 * whether or not the previous ones answered, at most 500 in flight) on one pg Pool at BENCH_URL. Prints
 * a line per outcome, `ok <epoch ms>` or `err <epoch ms> <code>`, the time taken when the call settled.
 * Runs until its stdin closes. The pool has an 'error' listener (bare pg would otherwise crash when the
 * server shuts down under its idle clients).
 */
import { createRequire } from 'node:module';

const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const url = process.env.BENCH_URL ?? '';
const rate = Number(process.env.BENCH_RATE ?? 50);
if (!url) throw new Error('BENCH_URL is empty');

const pool = new pg.Pool({ connectionString: url, max: 10 });
pool.on('error', () => {});

function code(err: unknown): string {
  const e = err as { code?: unknown; name?: unknown } | null;
  if (e && typeof e.code === 'string' && e.code) return e.code;
  return e && typeof e.name === 'string' ? e.name : 'error';
}

let inFlight = 0;
const timer = setInterval(() => {
  if (inFlight >= 500) return;
  inFlight++;
  pool
    .query('SELECT v FROM bench_rec_items WHERE id = $1', [1 + Math.floor(Math.random() * 1000)])
    .then(
      () => process.stdout.write(`ok ${Date.now()}\n`),
      (err: unknown) => process.stdout.write(`err ${Date.now()} ${code(err)}\n`),
    )
    .finally(() => inFlight--);
}, 1000 / rate);

process.stdin.resume();
process.stdin.on('end', () => {
  clearInterval(timer);
  process.exit(0);
});
