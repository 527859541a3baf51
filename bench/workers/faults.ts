/**
 * The faults section's worker (bench/sections/faults.ts): BENCH_CONCURRENCY closed-loop callers on one
 * pg Pool (max = concurrency) through a fault-injecting proxy at BENCH_URL, for BENCH_DURATION_MS. Each
 * call is, with even odds, an idempotent read (`SELECT v FROM bench_fault_items WHERE id = $1`, read-only
 * by pg-resilience's rule) or a non-idempotent insert of a unique client-generated key
 * (`INSERT INTO bench_fault_ledger (key) VALUES ($1)`). Prints one JSON line: per kind the successes,
 * the failures by error code and latency percentiles; the inserts' acknowledged and failed keys (the
 * section checks them against the table).
 *
 * The pool has an 'error' listener (a reset idle client must not crash the process, under bare pg too).
 * BENCH_MAX_USES > 0 sets pg-pool's `maxUses`: each connection is closed after that many checkouts, so
 * the pool keeps opening new connections (the connect-reset run needs that).
 */
import { createRequire } from 'node:module';

const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const url = process.env.BENCH_URL ?? '';
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 8);
const durationMs = Number(process.env.BENCH_DURATION_MS ?? 3_000);
const maxUses = Number(process.env.BENCH_MAX_USES ?? 0);
if (!url) throw new Error('BENCH_URL is empty');

const pool = new pg.Pool({
  connectionString: url,
  max: concurrency,
  connectionTimeoutMillis: 5_000,
  ...(maxUses > 0 ? { maxUses } : {}),
});
pool.on('error', () => {}); // a well-behaved app: an idle client's error does not crash it

interface Kind {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  latencies: number[];
}
const kind = (): Kind => ({ ok: 0, failed: 0, errors: {}, latencies: [] });
const reads = kind();
const inserts = kind();
const acked: string[] = [];
const failedKeys: string[] = [];

function code(err: unknown): string {
  const e = err as { code?: unknown; name?: unknown; message?: unknown } | null;
  if (e && typeof e.code === 'string' && e.code) return e.code;
  if (e && typeof e.name === 'string' && e.name !== 'Error') return e.name;
  return e && typeof e.message === 'string' ? e.message.slice(0, 60) : String(err);
}

const deadline = performance.now() + durationMs;

async function caller(c: number): Promise<void> {
  for (let n = 0; performance.now() < deadline; n++) {
    const isRead = Math.random() < 0.5;
    const k = isRead ? reads : inserts;
    const key = `${c}.${n}`;
    const t0 = performance.now();
    try {
      if (isRead) {
        await pool.query('SELECT v FROM bench_fault_items WHERE id = $1', [
          1 + Math.floor(Math.random() * 10_000),
        ]);
      } else {
        await pool.query('INSERT INTO bench_fault_ledger (key) VALUES ($1)', [key]);
        acked.push(key);
      }
      k.ok++;
      k.latencies.push(performance.now() - t0);
    } catch (err) {
      k.failed++;
      const ec = code(err);
      k.errors[ec] = (k.errors[ec] ?? 0) + 1;
      if (!isRead) failedKeys.push(key);
    }
  }
}

const started = performance.now();
await Promise.all(Array.from({ length: concurrency }, (_, c) => caller(c)));
const elapsedMs = performance.now() - started;
await pool.end().catch(() => {});

function summary(k: Kind) {
  const s = k.latencies.sort((a, b) => a - b);
  const pct = (p: number) => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? null;
  return {
    ok: k.ok,
    failed: k.failed,
    errors: k.errors,
    p50Ms: pct(50),
    p99Ms: pct(99),
    maxMs: s.at(-1) ?? null,
  };
}

// Exit once the line is flushed: stdout to a pipe is asynchronous, exit() would cut it short.
process.stdout.write(
  `${JSON.stringify({ elapsedMs, reads: summary(reads), inserts: summary(inserts), acked, failedKeys })}\n`,
  () => process.exit(0),
);
