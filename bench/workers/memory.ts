/**
 * The memory section's worker (bench/sections/memory.ts), run with `--expose-gc`: BENCH_CONCURRENCY
 * closed-loop callers of `SELECT 1` (`pool.query`, pool max = concurrency) at BENCH_URL. At each count
 * of BENCH_CHECKPOINTS (completed operations, ascending) the callers pause, the OpenTelemetry tracer
 * provider (if any) is flushed so that no batch of spans waits in its queue, `global.gc()` runs twice,
 * and heapUsed, RSS and external memory are recorded. Stops early, after the checkpoint in progress,
 * once BENCH_MAX_MS has passed. Prints one JSON line: the samples and the throughput.
 */
import { createRequire } from 'node:module';
import { trace } from '@opentelemetry/api';

const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const url = process.env.BENCH_URL ?? '';
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 16);
const checkpoints = JSON.parse(process.env.BENCH_CHECKPOINTS ?? '[10000]') as number[];
const maxMs = Number(process.env.BENCH_MAX_MS ?? 150_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!url) throw new Error('BENCH_URL is empty');
if (!gc) throw new Error('run with --expose-gc');

const pool = new pg.Pool({ connectionString: url, max: concurrency });
pool.on('error', () => {});

let started = 0;
let done = 0;
let errors = 0;

async function runTo(n: number): Promise<void> {
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (started < n) {
        started++;
        try {
          await pool.query('SELECT 1');
        } catch {
          errors++;
        }
        done++;
      }
    }),
  );
}

async function flushTelemetry(): Promise<void> {
  const provider = trace.getTracerProvider() as { getDelegate?: () => { forceFlush?: () => Promise<void> } };
  try {
    await provider.getDelegate?.().forceFlush?.();
  } catch {
    // no SDK, or nothing to flush
  }
}

const MB = 1024 * 1024;
const t0 = performance.now();
const samples: Array<{
  ops: number;
  elapsedMs: number;
  heapUsedMb: number;
  rssMb: number;
  externalMb: number;
}> = [];
for (const n of checkpoints) {
  await runTo(n);
  const elapsedMs = performance.now() - t0;
  await flushTelemetry();
  await new Promise((r) => setTimeout(r, 50));
  gc();
  await new Promise((r) => setImmediate(r));
  gc();
  const m = process.memoryUsage();
  samples.push({
    ops: done,
    elapsedMs,
    heapUsedMb: m.heapUsed / MB,
    rssMb: m.rss / MB,
    externalMb: m.external / MB,
  });
  if (performance.now() - t0 > maxMs) break;
}
await pool.end().catch(() => {});
const last = samples.at(-1)!;
// Exit once the line is flushed: stdout to a pipe is asynchronous, exit() would cut it short.
process.stdout.write(
  `${JSON.stringify({ samples, errors, throughput: (last.ops / last.elapsedMs) * 1000 })}\n`,
  () => process.exit(0),
);
