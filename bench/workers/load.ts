/**
 * The benchmark's load worker: one process per measurement, started under one of the arms
 * (bench/lib/arms.ts). It runs a closed-loop workload (BENCH_CONCURRENCY callers, each issuing its next
 * call when the previous one answered) against the pools of BENCH_URLS, warms up, measures for
 * BENCH_DURATION_MS, and prints one JSON line: operations, latency percentiles, CPU time and peak RSS.
 *
 * BENCH_SLICES=1: the worker stays up and measures on demand instead. Each stdin line `<warmupMs>
 * <durationMs>` runs the callers for that long (warm-up unmeasured) and prints that slice's JSON line;
 * between slices the callers are stopped and the pools keep their connections. Closing stdin ends it.
 * This lets two arms' processes take turns every few seconds (bench/sections/overhead.ts).
 *
 * Workloads (BENCH_WORKLOAD): `select1` (`SELECT 1` via `pool.query`), `mix` (an indexed read 80 %,
 * an insert 20 %, on the table bench/run.ts creates).
 */
import { createRequire } from 'node:module';
import { answerSlices } from '../lib/slice-mode.ts';

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
let latencies: number[] = [];

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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs the callers for `warmup + duration` ms and returns what the `duration` part measured. */
async function measure(warmup: number, duration: number) {
  stop = false;
  ops = 0;
  errors = 0;
  latencies = [];
  const callers = Array.from({ length: concurrency }, (_, i) => caller(i));
  await sleep(warmup);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  measuring = true;
  await sleep(duration);
  measuring = false;
  const elapsed = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  stop = true;
  await Promise.all(callers);
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? null;
  return {
    ops,
    errors,
    durationMs: elapsed,
    throughput: (ops / elapsed) * 1000,
    p50Ms: pct(50),
    p99Ms: pct(99),
    cpuUsPerOp: ops > 0 ? (cpu.user + cpu.system) / ops : null,
    cpuSystemUsPerOp: ops > 0 ? cpu.system / ops : null,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
  };
}

if (process.env.BENCH_SLICES === '1') {
  await answerSlices(measure);
} else {
  process.stdout.write(`${JSON.stringify(await measure(warmupMs, durationMs))}\n`);
}
await Promise.all(pools.map((p) => p.end().catch(() => {})));
process.exit(0);
