/**
 * `node bench/outcome-costs.ts [--quick] [--rounds R] [--workload tx|select|timeout|connect …]`: what the three "never leave the caller guessing"
 * features cost, each side by side with its baseline from the same run:
 * - outcome resolution: withTransaction (BEGIN, INSERT, UPDATE, COMMIT) with
 *   transaction.outcomeResolutionMs = 0 (no transaction id learned) and with the default (the id is
 *   learned before COMMIT, `SELECT txid_current_if_assigned()`), ms per transaction;
 * - the statement-cancel path: `SELECT 1` with timeout.queryMs off, on without the cancel
 *   (timeout.cancelGraceMs = 0) and on with it (the default grace), ms per statement; and when the
 *   timeout fires (`SELECT pg_sleep(5)`, timeout.queryMs = 100 ms), how long after the deadline the
 *   caller has its error, with and without the cancel;
 * - keepalive: a new connection (connect + `SELECT 1` + end) with liveness.keepAliveInitialDelayMs = 0
 *   (pg's default: keepalive off) and with the default (keepalive on), ms per connection.
 * Each workload also runs under bare pg (no instrumentation) for reference.
 *
 * One embedded PostgreSQL on loopback. Every arm runs in its own child process under the sources'
 * PgResilienceInstrumentation, one call after another on a pool of one (or new clients); rounds of the
 * arms alternate, and the median of the rounds is printed (Markdown rows for bench/results.md).
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    workload: { type: 'string', multiple: true },
    worker: { type: 'string' },
  },
});

type Workload = 'tx' | 'select' | 'timeout' | 'connect';

interface Arm {
  label: string;
  /** null: bare pg, no instrumentation */
  config: Record<string, unknown> | null;
}

/** calls per child, per workload */
const CALLS: Record<Workload, [full: number, quick: number]> = {
  tx: [1000, 200],
  select: [3000, 500],
  timeout: [10, 4],
  connect: [200, 40],
};

if (values.worker) {
  // The child: one arm of one workload; prints the mean ms per call (timeout: the median delay past it).
  const job = JSON.parse(values.worker) as { url: string; workload: Workload; arm: Arm; calls: number };
  if (job.arm.config) {
    const { PgResilienceInstrumentation } = await import('../src/index.ts');
    new PgResilienceInstrumentation({ ...job.arm.config, telemetry: { logLevel: 'off' } });
  }
  const { default: pg } = await import('pg');
  const { withTransaction } = await import('../src/index.ts');
  const pool = new pg.Pool({ connectionString: job.url, max: 1 });
  pool.on('error', () => {});
  const codes = new Set<string>();
  let call: () => Promise<unknown>;
  switch (job.workload) {
    case 'tx':
      call = job.arm.config
        ? () =>
            withTransaction(pool, async (client: import('pg').PoolClient) => {
              await client.query('INSERT INTO bench_tx (v) VALUES ($1)', [1]);
              await client.query('UPDATE bench_counter SET n = n + 1 WHERE id = 1');
            })
        : async () => {
            const client = await pool.connect();
            try {
              await client.query('BEGIN');
              await client.query('INSERT INTO bench_tx (v) VALUES ($1)', [1]);
              await client.query('UPDATE bench_counter SET n = n + 1 WHERE id = 1');
              await client.query('COMMIT');
            } finally {
              client.release();
            }
          };
      break;
    case 'select':
      call = () => pool.query('SELECT 1');
      break;
    case 'connect':
      call = async () => {
        const client = new pg.Client({ connectionString: job.url });
        await client.connect();
        await client.query('SELECT 1');
        await client.end();
      };
      break;
    case 'timeout':
      call = () =>
        pool.query('SELECT pg_sleep(5)').then(
          () => codes.add('no error'),
          (e: { code?: string; cancelled?: boolean }) =>
            codes.add(`${e.code}${e.cancelled ? ' cancelled' : ''}`),
        );
      break;
  }
  const warmup = job.workload === 'timeout' ? 1 : 50;
  for (let i = 0; i < warmup; i++) await call();
  const times: number[] = [];
  const started = performance.now();
  for (let i = 0; i < job.calls; i++) {
    const t = performance.now();
    await call();
    times.push(performance.now() - t);
  }
  const total = performance.now() - started;
  await pool.end();
  const sorted = times.sort((a, b) => a - b);
  const ms = job.workload === 'timeout' ? sorted[Math.floor(sorted.length / 2)]! - 100 : total / job.calls;
  process.stdout.write(`${JSON.stringify({ ms, codes: [...codes] })}\n`);
  process.exit(0);
}

const quick = values.quick;
const rounds = Number(values.rounds ?? (quick ? 3 : 5));
const { startServer } = await import('../test/support/postgres.ts');
const server = await startServer({ settings: { synchronous_commit: 'off' } });
await server.query(
  'CREATE TABLE bench_tx (v int); CREATE TABLE bench_counter (id int PRIMARY KEY, n bigint); INSERT INTO bench_counter VALUES (1, 0)',
);

// One attempt, and no breaker: a timed-out read without the cancel has an unknown outcome, which the
// retry rules may re-run and the breaker counts (it would open and fail the next calls at once).
const NO_RETRY = { retry: { enabled: false }, circuitBreaker: { enabled: false } };
const workloads: Array<{ workload: Workload; title: string; unit: string; arms: Arm[] }> = [
  {
    workload: 'tx',
    title: 'outcome resolution, withTransaction (INSERT + UPDATE)',
    unit: 'ms per transaction',
    arms: [
      { label: 'bare pg (BEGIN … COMMIT by hand)', config: null },
      {
        label: 'off: transaction.outcomeResolutionMs 0',
        config: { transaction: { outcomeResolutionMs: 0 } },
      },
      { label: 'on (default): txid learned before COMMIT', config: {} },
    ],
  },
  {
    workload: 'select',
    title: 'statement cancel armed, SELECT 1 (happy path)',
    unit: 'ms per statement',
    arms: [
      { label: 'bare pg', config: null },
      { label: 'timeout.queryMs 0 (default)', config: {} },
      {
        label: 'queryMs 5000, cancelGraceMs 0 (no cancel)',
        config: { timeout: { queryMs: 5000, cancelGraceMs: 0 } },
      },
      { label: 'queryMs 5000, cancel armed (grace 1000)', config: { timeout: { queryMs: 5000 } } },
    ],
  },
  {
    workload: 'timeout',
    title: 'the timeout fires: SELECT pg_sleep(5), queryMs 100',
    unit: 'median ms of a call beyond the 100 ms timeout; each call opens a new connection, as pg-pool discards a timed-out one',
    arms: [
      {
        label: 'cancelGraceMs 0: error at once, the statement runs on',
        config: { ...NO_RETRY, timeout: { queryMs: 100, cancelGraceMs: 0 } },
      },
      {
        label: 'cancel (default grace): error once the server cancelled it',
        config: { ...NO_RETRY, timeout: { queryMs: 100 } },
      },
    ],
  },
  {
    workload: 'connect',
    title: 'keepalive, a new connection (connect + SELECT 1 + end)',
    unit: 'ms per connection',
    arms: [
      { label: 'bare pg (keepalive off)', config: null },
      {
        label: 'liveness.keepAliveInitialDelayMs 0 (off)',
        config: { liveness: { keepAliveInitialDelayMs: 0 } },
      },
      { label: 'keepalive on (default, 10 s)', config: {} },
    ],
  },
];

function runArm(workload: Workload, arm: Arm): Promise<{ ms: number; codes: string[] }> {
  const calls = CALLS[workload][quick ? 1 : 0];
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--disable-warning=ExperimentalWarning',
        import.meta.filename,
        '--worker',
        JSON.stringify({ url: server.connectionString, workload, arm, calls }),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.once('close', (code) => {
      if (code !== 0) reject(new Error(`worker exited ${code}`));
      else resolve(JSON.parse(out.trim()) as { ms: number; codes: string[] });
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const started = Date.now();
const out: string[] = [];
try {
  for (const w of workloads.filter((x) => !values.workload || values.workload.includes(x.workload))) {
    const samples = w.arms.map(() => [] as number[]);
    const codes = w.arms.map(() => new Set<string>());
    for (let r = 0; r < rounds; r++) {
      // the arms' order rotates each round
      for (let i = 0; i < w.arms.length; i++) {
        const a = (i + r) % w.arms.length;
        const res = await runArm(w.workload, w.arms[a]!);
        samples[a]!.push(res.ms);
        for (const c of res.codes) codes[a]!.add(c);
      }
    }
    const meds = samples.map(median);
    const base = meds[w.workload === 'timeout' ? 0 : 1]!;
    out.push(
      '',
      `**${w.title}** (${w.unit})`,
      '',
      '| arm | ms | vs the feature off (same run) | errors seen |',
      '| --- | --: | --: | --- |',
    );
    w.arms.forEach((arm, i) => {
      const d = meds[i]! - base;
      out.push(
        `| ${arm.label} | ${meds[i]!.toFixed(3)} | ${arm.config === null ? '—' : `${d >= 0 ? '+' : ''}${d.toFixed(3)}`} | ${[...codes[i]!].join(', ') || '—'} |`,
      );
    });
    process.stderr.write(`${w.workload} done\n`);
  }
} finally {
  await server.close();
}
console.log(
  `outcome-costs: ${quick ? 'quick' : 'full'}, ${rounds} rounds, ${Math.round((Date.now() - started) / 1000)} s`,
);
console.log(out.join('\n'));
