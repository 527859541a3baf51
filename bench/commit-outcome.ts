/**
 * `node bench/commit-outcome.ts [--transactions N] [--rounds R]`: what learning the transaction id
 * before COMMIT (`SELECT txid_current_if_assigned()`, one round trip) costs per withTransaction call.
 *
 * One embedded PostgreSQL; a FaultProxy in front of it adds a one-way delay per chunk (0 = loopback, 1 ms
 * ≈ a 2 ms round trip). For each delay, rounds of two arms run alternately in child processes under the
 * sources' PgResilienceInstrumentation: `off` (transaction.outcomeResolutionMs = 0: no id is learned) and
 * `on` (the default). Each child runs N transactions (BEGIN, INSERT, UPDATE, COMMIT) one after another on
 * a pool of one; the median per-transaction time per arm and the difference are printed.
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    transactions: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '3' },
    worker: { type: 'string' },
  },
});

if (values.worker) {
  // The child: one arm, N transactions; prints the mean ms per transaction.
  const { PgResilienceInstrumentation } = await import('../src/index.ts');
  new PgResilienceInstrumentation({ telemetry: { logLevel: 'off' } });
  const { default: pg } = await import('pg');
  const { withTransaction } = await import('../src/index.ts');
  const pool = new pg.Pool({ connectionString: values.worker, max: 1 });
  const n = Number(values.transactions);
  const run = () =>
    withTransaction(pool, async (client: import('pg').PoolClient) => {
      await client.query('INSERT INTO bench_tx (v) VALUES ($1)', [1]);
      await client.query('UPDATE bench_counter SET n = n + 1 WHERE id = 1');
    });
  for (let i = 0; i < 50; i++) await run(); // warm-up
  const started = performance.now();
  for (let i = 0; i < n; i++) await run();
  const ms = (performance.now() - started) / n;
  await pool.end();
  process.stdout.write(`${JSON.stringify({ ms })}\n`);
  process.exit(0);
}

const { startServer } = await import('../test/support/postgres.ts');
const { FaultProxy } = await import('../test/support/fault-proxy.ts');
const server = await startServer();
const proxy = await FaultProxy.forServer(server);
await server.query(
  'CREATE TABLE bench_tx (v int); CREATE TABLE bench_counter (id int PRIMARY KEY, n bigint); INSERT INTO bench_counter VALUES (1, 0)',
);

function arm(resolutionMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--disable-warning=ExperimentalWarning',
        import.meta.filename,
        '--worker',
        proxy.connectionString(server),
        '--transactions',
        values.transactions,
      ],
      {
        env: { ...process.env, PG_RESILIENCE_TRANSACTION_OUTCOME_RESOLUTION_MS: String(resolutionMs) },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.once('close', (code) => {
      if (code !== 0) reject(new Error(`worker exited ${code}`));
      else resolve((JSON.parse(out.trim()) as { ms: number }).ms);
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows: string[] = [];
try {
  for (const delayMs of [0, 1]) {
    proxy.setLatency(delayMs);
    const off: number[] = [];
    const on: number[] = [];
    for (let r = 0; r < Number(values.rounds); r++) {
      off.push(await arm(0));
      on.push(await arm(10_000));
    }
    const [a, b] = [median(off), median(on)];
    rows.push(
      `| ${delayMs === 0 ? 'loopback' : `+${delayMs} ms each way`} | ${a.toFixed(3)} | ${b.toFixed(3)} | +${(b - a).toFixed(3)} ms (+${((b / a - 1) * 100).toFixed(0)} %) |`,
    );
  }
} finally {
  await proxy.close();
  await server.close();
}
console.log('| network | off: ms per transaction | on: ms per transaction | cost of the id |');
console.log('| --- | --- | --- | --- |');
for (const row of rows) console.log(row);
