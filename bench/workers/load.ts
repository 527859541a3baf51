/**
 * The benchmark's load worker: one process per measurement, started under one of the arms
 * (bench/lib/arms.ts). It runs a closed-loop workload (BENCH_CONCURRENCY callers, each issuing its next
 * call when the previous one answered) against the pools of BENCH_URLS, warms up, measures for
 * BENCH_DURATION_MS, and prints one JSON line: operations, latency percentiles, CPU time and peak RSS.
 *
 * Workloads (BENCH_WORKLOAD): `select1` (`SELECT 1` via `pool.query`), `mix` (an indexed read 80 %,
 * an insert 20 %, on the table bench/run.ts creates).
 */
import { createRequire } from 'node:module';

const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const urls = JSON.parse(process.env.BENCH_URLS ?? '[]') as string[];
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 1);
const workload = process.env.BENCH_WORKLOAD ?? 'select1';
const durationMs = Number(process.env.BENCH_DURATION_MS ?? 5_000);
const warmupMs = Number(process.env.BENCH_WARMUP_MS ?? 1_000);
if (urls.length === 0) throw new Error('BENCH_URLS is empty');

const pools = urls.map((connectionString) => {
  const pool = new pg.Pool({ connectionString, max: Math.max(1, Math.ceil(concurrency / urls.length)) });
  pool.on('error', () => {}); // a well-behaved app: no crash on an idle client's error
  return pool;
});

let seq = Math.floor(Math.random() * 1e9);
function call(i: number): Promise<unknown> {
  const pool = pools[i % pools.length]!;
  if (workload === 'select1') return pool.query('SELECT 1');
  if (Math.random() < 0.8) return pool.query('SELECT v FROM bench_items WHERE k = $1', [seq++ % 10_000]);
  return pool.query('INSERT INTO bench_items (k, v) VALUES ($1, $2)', [seq++ % 10_000, 'bench']);
}

let measuring = false;
let stop = false;
let ops = 0;
let errors = 0;
const latencies: number[] = [];

async function caller(i: number): Promise<void> {
  while (!stop) {
    const t0 = performance.now();
    try {
      await call(i);
    } catch {
      if (measuring) errors++;
      continue;
    }
    if (measuring) {
      ops++;
      if (latencies.length < 2_000_000) latencies.push(performance.now() - t0);
    }
  }
}

const callers = Array.from({ length: concurrency }, (_, i) => caller(i));
await new Promise((r) => setTimeout(r, warmupMs));
const cpu0 = process.cpuUsage();
const t0 = performance.now();
measuring = true;
await new Promise((r) => setTimeout(r, durationMs));
measuring = false;
const elapsed = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
stop = true;
await Promise.all(callers);
latencies.sort((a, b) => a - b);
const pct = (p: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? null;
const result = {
  ops,
  errors,
  durationMs: elapsed,
  throughput: (ops / elapsed) * 1000,
  p50Ms: pct(50),
  p99Ms: pct(99),
  cpuUsPerOp: ops > 0 ? (cpu.user + cpu.system) / ops : null,
  maxRssMb: process.resourceUsage().maxRSS / 1024,
};
await Promise.all(pools.map((p) => p.end().catch(() => {})));
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
