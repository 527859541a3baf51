/**
 * The new-paths section's worker (bench/sections/new-paths.ts): one process per measurement. With
 * BENCH_CONFIG set (JSON), pg-resilience's PgResilienceInstrumentation is created with it before pg is
 * loaded (the documented programmatic use, from the sources); unset, bare pg. BENCH_JOB (JSON) picks the
 * workload; every loop is bounded by a call count and by BENCH_MAX_MS. Prints one JSON line.
 *
 * - `tx`: transactions one after another on a pool of one (BEGIN, INSERT, UPDATE, COMMIT; through
 *   withTransaction when instrumented, by hand when bare), transactions per second;
 * - `select`: `SELECT 1` one after another on a pool of one, statements per second;
 *   (both in slice mode, bench/lib/slice-mode.ts: a measurement per stdin line until stdin closes)
 * - `substitute`: a read on a client checked out of a pg.Pool whose backend is terminated
 *   (pg_terminate_backend from an admin connection) while the read runs, and the same read uncut:
 *   latency and outcome of each;
 * - `timeout`: `SELECT pg_sleep(5)` on a checked-out client under timeout.queryMs: time from the
 *   deadline to the caller's error, and whether pg_stat_activity still shows the backend active then;
 * - `failover`: one write every 20 ms (closed loop, pool of 4) until stdin closes or BENCH_MAX_MS; the
 *   epoch ms of every acknowledged write and the error codes seen.
 */
import { createRequire } from 'node:module';
import { answerSlices } from '../lib/slice-mode.ts';

interface Job {
  readonly url: string;
  readonly workload: 'tx' | 'select' | 'substitute' | 'timeout' | 'failover';
  readonly calls: number;
  readonly maxMs: number;
  /** timeout: the configured timeout.queryMs */
  readonly queryMs?: number;
}
const job = JSON.parse(process.env.BENCH_JOB ?? '{}') as Job;
const config = process.env.BENCH_CONFIG ? (JSON.parse(process.env.BENCH_CONFIG) as object) : null;
const lib = config ? await import('../../src/index.ts') : null;
if (lib) new lib.PgResilienceInstrumentation({ ...config, telemetry: { logLevel: 'off' } });
const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pool = new pg.Pool({ connectionString: job.url, max: 2 });
pool.on('error', () => {});
// (not for `failover`: a multi-host URL is pg-resilience's, bare pg's Client cannot parse it)
const admin = new pg.Client({ connectionString: job.workload === 'failover' ? undefined : job.url });
admin.on('error', () => {});
if (job.workload !== 'failover') await admin.connect();
const deadline = performance.now() + job.maxMs;
const pid = (c: import('pg').PoolClient) => (c as unknown as { processID: number }).processID;
const code = (e: unknown) => {
  const x = e as { code?: string; message?: string };
  return x.code ?? x.message?.slice(0, 40) ?? 'error';
};

let result: object;
if (job.workload === 'failover') {
  let stop = false;
  process.stdin.resume();
  process.stdin.on('end', () => (stop = true));
  const writer = new pg.Pool({ connectionString: job.url, max: 4, connectionTimeoutMillis: 2_000 });
  writer.on('error', () => {});
  const acks: number[] = [];
  const errors: Record<string, number> = {};
  for (let i = 0; !stop && performance.now() < deadline; i++) {
    try {
      await writer.query('INSERT INTO bench_writes (key) VALUES ($1)', [`w-${process.pid}-${i}`]);
      acks.push(Date.now());
    } catch (e) {
      errors[code(e)] = (errors[code(e)] ?? 0) + 1;
    }
    await sleep(20);
  }
  await Promise.race([writer.end().catch(() => {}), sleep(2_000)]);
  result = { acks, errors };
} else if (job.workload === 'tx' || job.workload === 'select') {
  const one = new pg.Pool({ connectionString: job.url, max: 1 });
  const byHand = async () => {
    const client = await one.connect();
    try {
      await client.query('BEGIN');
      await client.query('INSERT INTO bench_items (k, v) VALUES ($1, $2)', [1, 'tx']);
      await client.query("UPDATE bench_items SET v = 'tx' WHERE id = 1");
      await client.query('COMMIT');
    } finally {
      client.release();
    }
  };
  const call =
    job.workload === 'select'
      ? () => one.query('SELECT 1')
      : lib
        ? () =>
            lib.withTransaction(one, async (client: import('pg').PoolClient) => {
              await client.query('INSERT INTO bench_items (k, v) VALUES ($1, $2)', [1, 'tx']);
              await client.query("UPDATE bench_items SET v = 'tx' WHERE id = 1");
            })
        : byHand;
  /** Calls one after another for `warmup` ms unmeasured, then `duration` ms (at most job.calls) measured. */
  const measure = async (warmup: number, duration: number) => {
    for (const end = performance.now() + warmup; performance.now() < end;) await call();
    let n = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const end = Math.min(t0 + duration, deadline);
    while (n < job.calls && performance.now() < end) {
      await call();
      n++;
    }
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    return {
      calls: n,
      throughput: (n / ms) * 1000,
      cpuUsPerCall: n > 0 ? (cpu.user + cpu.system) / n : null,
    };
  };
  // Always in slice mode (bench/lib/turns.ts takes the measurements): one per stdin line, until it closes.
  await answerSlices(measure);
  result = { done: true };
  await one.end();
} else if (job.workload === 'substitute') {
  // A plain read (classified read-only, no marking) that keeps the server busy for tens of ms.
  const READ =
    'SELECT count(*) AS n FROM (SELECT id FROM bench_items LIMIT 1500) a, (SELECT id FROM bench_items LIMIT 1500) b WHERE a.id > $1';
  const samples: Array<{ cut: boolean; ms: number; ok: boolean; code?: string }> = [];
  for (let i = 0; i < job.calls && performance.now() < deadline; i++) {
    for (const cut of [false, true]) {
      const client = await pool.connect();
      const errors: Error[] = [];
      client.on('error', (e) => errors.push(e));
      await client.query('SELECT 1');
      const t0 = performance.now();
      const p = client.query(READ, [-i]);
      p.catch(() => {}); // awaited below; it may fail while the admin statement runs
      if (cut) {
        await sleep(15);
        await admin.query('SELECT pg_terminate_backend($1)', [pid(client)]);
      }
      try {
        await p;
        samples.push({ cut, ms: performance.now() - t0, ok: true });
      } catch (e) {
        samples.push({ cut, ms: performance.now() - t0, ok: false, code: code(e) });
      }
      client.release(errors[0] ?? (cut ? new Error('cut') : undefined));
    }
  }
  result = { samples };
} else {
  const samples: Array<{ pastDeadlineMs: number; code: string; stillActive: boolean }> = [];
  for (let i = 0; i < job.calls && performance.now() < deadline; i++) {
    const client = await pool.connect();
    const errors: Error[] = [];
    client.on('error', (e) => errors.push(e));
    await client.query('SELECT 1');
    const backend = pid(client);
    const t0 = performance.now();
    let c = 'no error';
    try {
      await client.query('SELECT pg_sleep(5)');
    } catch (e) {
      c = code(e) + ((e as { cancelled?: boolean }).cancelled ? ' cancelled' : '');
    }
    const pastDeadlineMs = performance.now() - t0 - (job.queryMs ?? 0);
    const active = await admin.query(
      "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
      [backend],
    );
    samples.push({ pastDeadlineMs, code: c, stillActive: active.rowCount! > 0 });
    client.release(errors[0] ?? new Error('timed out'));
    // A statement left running (no cancel) is ended here, so the next sample starts clean.
    await admin.query('SELECT pg_terminate_backend($1)', [backend]);
  }
  result = { samples };
}
await Promise.race([
  Promise.all([pool.end(), job.workload === 'failover' ? undefined : admin.end()]).catch(() => {}),
  sleep(2_000),
]);
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
