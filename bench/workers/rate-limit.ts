/**
 * The rate-limit section's worker (bench/sections/rate-limit.ts), run with pg-resilience loaded and a
 * PG_RESILIENCE_CONFIG that rate-limits each target. For every target in BENCH_TARGETS
 * (`[{ url, ratePerMinute }]`, each a different `host:port/database`) it offers an open-loop demand of
 * BENCH_DEMAND × the configured rate (calls started on a 5 ms tick, whether or not earlier ones got
 * through) for BENCH_DURATION_MS. Every call is `pool.query` of the server's own clock,
 * `SELECT extract(epoch FROM clock_timestamp())`, so each permitted call reports the moment its
 * statement executed on the server: at or after the moment the limiter let it through (the pool, max
 * 10, is never the bottleneck at these rates). `t0` is taken before the first call, so the limiter's
 * bucket (full when created, and created by the first call) holds at most `burst` tokens at t0.
 *
 * Prints one JSON line `{ t0, tEnd, targets: [{ times, issued, errors }] }` (epoch ms, µs precision),
 * then exits without waiting for the calls still queued in the limiter.
 */
import { createRequire } from 'node:module';

const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const targets = JSON.parse(process.env.BENCH_TARGETS ?? '[]') as Array<{
  url: string;
  ratePerMinute: number;
}>;
const demand = Number(process.env.BENCH_DEMAND ?? 4);
const durationMs = Number(process.env.BENCH_DURATION_MS ?? 8_000);

const runs = targets.map((t) => {
  const pool = new pg.Pool({ connectionString: t.url, max: 10 });
  pool.on('error', () => {});
  return { pool, perMs: (t.ratePerMinute * demand) / 60_000, issued: 0, errors: 0, times: [] as number[] };
});

const SQL = 'SELECT extract(epoch FROM clock_timestamp())::float8 * 1000 AS t';
// Date.now() is whole ms: t0 is at or before the real moment, a bound counted from it is not tighter.
const t0 = Date.now();
const tick = (): void => {
  const due = Date.now() - t0;
  for (const r of runs) {
    while (r.issued < Math.floor(due * r.perMs) + 1) {
      r.issued++;
      r.pool.query<{ t: number }>(SQL).then(
        (res) => r.times.push(res.rows[0]!.t),
        () => r.errors++,
      );
    }
  }
};
tick();
const timer = setInterval(tick, 5);
await new Promise((r) => setTimeout(r, durationMs));
clearInterval(timer);
const tEnd = Date.now();
// Let the calls already permitted finish (a few ms at most), then report.
await new Promise((r) => setTimeout(r, 200));
// Exit once the line is flushed: stdout to a pipe is asynchronous, exit() would cut it short.
process.stdout.write(
  `${JSON.stringify({ t0, tEnd, targets: runs.map((r) => ({ times: r.times, issued: r.issued, errors: r.errors })) })}\n`,
  () => process.exit(0),
);
