/**
 * 3. Recovery time. Two workers (bench/workers/recovery.ts) run side by side, each a steady 50 reads/s
 * against the real PostgreSQL: arm A (bare pg) and arm C (pg-resilience/register, default profile). The
 * server is stopped (fast shutdown), kept down, started again; recovery is the time from the moment
 * `start()` resolved (the server answered our own connection) to the first successful read each worker
 * reports (its `ok <epoch ms>` lines).
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { freePort } from '../../test/support/postgres.ts';
import { type Arm, arms, startSink } from '../lib/arms.ts';
import type { BenchContext, Section, SectionResult, TargetCheck } from '../lib/types.ts';

const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const RATE = 50;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A running worker and what it reported so far. */
class Worker {
  readonly arm: Arm;
  readonly oks: number[] = [];
  readonly errs: Array<{ at: number; code: string }> = [];
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #exited: Promise<unknown>;
  #stderr = '';

  constructor(ctx: BenchContext, arm: Arm, url: string) {
    this.arm = arm;
    this.#child = spawn(
      process.execPath,
      [
        ...arm.execArgv,
        '--disable-warning=ExperimentalWarning',
        path.join(ctx.root, 'bench', 'workers', 'recovery.ts'),
      ],
      { cwd: ctx.root, env: { ...process.env, ...arm.env, BENCH_URL: url, BENCH_RATE: String(RATE) } },
    );
    this.#exited = new Promise((r) => this.#child.once('exit', r));
    this.#child.stderr.on('data', (d) => (this.#stderr = (this.#stderr + String(d)).slice(-2000)));
    createInterface({ input: this.#child.stdout }).on('line', (line) => {
      const [kind, at, code] = line.split(' ');
      if (kind === 'ok') this.oks.push(Number(at));
      else if (kind === 'err') this.errs.push({ at: Number(at), code: code ?? '' });
    });
  }

  /** The first success reported after `t` (epoch ms), or null after `timeoutMs`. */
  async firstOkAfter(t: number, timeoutMs: number): Promise<number | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.oks.find((x) => x > t);
      if (found !== undefined) return found;
      if (Date.now() > deadline || this.#child.exitCode !== null) return null;
      await sleep(5);
    }
  }

  get stderr(): string {
    return this.#stderr;
  }

  async stop(): Promise<void> {
    this.#child.stdin.end();
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 5_000);
    await this.#exited;
    clearTimeout(timer);
  }
}

/**
 * When the server accepts connections again (epoch ms): a new pg connection (startup and
 * authentication) tried every 10 ms from before start() is called; the moment the first successful
 * attempt began (the server was accepting then, or within a few ms).
 */
async function firstAccepted(connectionString: string): Promise<number> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const client = new pg.Client({ connectionString, connectionTimeoutMillis: 1_000 });
    client.on('error', () => {});
    const at = Date.now();
    try {
      await client.connect();
      void client.end().catch(() => {});
      return at;
    } catch {
      await client.end().catch(() => {});
    }
    await sleep(10);
  }
  return Number.POSITIVE_INFINITY;
}

export interface RecoveryRep {
  rep: number;
  downMs: number;
  /** start() called → the server accepts connections: the server's own start-up. */
  startupMs: number;
  /** per arm: the server accepts connections → first successful read (null: none within 30 s) */
  recoveryMs: Record<string, number | null>;
  /** per arm: failed reads while the server was down (and until the first success) */
  failedReads: Record<string, number>;
  errorCodes: Record<string, Record<string, number>>;
}

export const section: Section = {
  id: 'recovery',
  title: '3. Recovery time',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const reps = ctx.quick ? 1 : 3;
    const downMs = ctx.quick ? 3_000 : 5_000;
    const admin = new pg.Client({ connectionString: ctx.server.connectionString });
    admin.on('error', () => {});
    await admin.connect();
    await admin.query(
      `DROP TABLE IF EXISTS bench_rec_items;
       CREATE TABLE bench_rec_items (id int PRIMARY KEY, v text NOT NULL);
       INSERT INTO bench_rec_items SELECT g, 'item ' || g FROM generate_series(1, 1000) g`,
    );
    await admin.end();
    const sink = await startSink();
    const all = arms(ctx.root, sink.url, await freePort());
    const workers = [all.A, all.C].map((arm) => new Worker(ctx, arm, ctx.server.connectionString));
    const results: RecoveryRep[] = [];
    let down = false;
    try {
      for (const w of workers) {
        if ((await w.firstOkAfter(0, 15_000)) === null) {
          throw new Error(`recovery worker (arm ${w.arm.id}) never succeeded: ${w.stderr}`);
        }
      }
      await sleep(2_000);
      for (let rep = 1; rep <= reps; rep++) {
        await ctx.server.stop();
        down = true;
        const downAt = Date.now();
        await sleep(downMs);
        const startCalled = Date.now();
        const accepted = firstAccepted(ctx.server.connectionString);
        await ctx.server.start();
        down = false;
        const upAt = Math.min(Date.now(), await accepted);
        const firsts = await Promise.all(workers.map((w) => w.firstOkAfter(downAt, 30_000)));
        const r: RecoveryRep = {
          rep,
          downMs: startCalled - downAt,
          startupMs: upAt - startCalled,
          recoveryMs: {},
          failedReads: {},
          errorCodes: {},
        };
        workers.forEach((w, i) => {
          const first = firsts[i] ?? null;
          r.recoveryMs[w.arm.id] = first === null ? null : first - upAt;
          const errs = w.errs.filter((e) => e.at >= downAt && (first === null || e.at <= first));
          r.failedReads[w.arm.id] = errs.length;
          const codes: Record<string, number> = {};
          for (const e of errs) codes[e.code] = (codes[e.code] ?? 0) + 1;
          r.errorCodes[w.arm.id] = codes;
        });
        results.push(r);
        ctx.log(
          `recovery rep ${rep}: A ${r.recoveryMs.A} ms, C ${r.recoveryMs.C} ms (server start-up ${r.startupMs} ms)`,
        );
        await sleep(2_000);
      }
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
      await sink.close();
      if (down) await ctx.server.start();
    }

    const ms = (x: number | null | undefined) =>
      x === null || x === undefined ? 'none within 30 s' : `${x}`;
    const codes = (c: Record<string, number> | undefined) =>
      Object.entries(c ?? {})
        .sort((a, b) => b[1] - a[1])
        .slice(0, 3)
        .map(([k, n]) => `${k} ×${n}`)
        .join(', ') || '—';
    const maxOf = (id: string) => {
      const xs = results.map((r) => r.recoveryMs[id]);
      return xs.some((x) => x === null || x === undefined) ? null : Math.max(...(xs as number[]));
    };
    const table = [
      '| outage | down s | server start-up ms | A recovery ms | C recovery ms | A failed reads | C failed reads | C errors while down |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
      ...results.map(
        (r) =>
          `| ${r.rep} | ${(r.downMs / 1000).toFixed(1)} | ${r.startupMs} | ${ms(r.recoveryMs.A)} | ${ms(r.recoveryMs.C)} | ${r.failedReads.A} | ${r.failedReads.C} | ${codes(r.errorCodes.C)} |`,
      ),
      `| **max** | | | ${ms(maxOf('A'))} | ${ms(maxOf('C'))} | | | |`,
    ];
    const maxC = maxOf('C');
    const targets: TargetCheck[] = [
      {
        name: 'recovery after a restart, defaults',
        target: '≤ 1 s from "server accepts connections" to the first successful application query',
        measured: `C: max ${ms(maxC)} ms over ${results.length} restart(s) (A, bare pg: max ${ms(maxOf('A'))} ms)`,
        met: maxC !== null && maxC <= 1_000,
      },
    ];
    const markdown = [
      `Two worker processes side by side, each starting ${RATE} reads/s (\`SELECT v FROM bench_rec_items WHERE id = $1\`, open loop: one every ${1000 / RATE} ms whether or not earlier ones answered) on a pool of 10: A bare pg (with a pool 'error' listener, so the shutdown does not crash it), C \`--import pg-resilience/register\` with the default profile (spans over OTLP to a local discarding sink). The server is stopped (fast shutdown: sessions terminated), kept down ${downMs / 1000} s, started again; ${reps} outage(s).`,
      '',
      'Recovery = the first success a worker reports (its own clock, taken when the call settled) minus the moment the server accepts connections again: when the first of the harness\'s own connection attempts (startup and authentication, one every 10 ms from before `start()` is called) that succeeds began, or `start()` resolving if that is earlier. A few ms either way are the probe\'s resolution (a negative value: the app got through first). "Server start-up" is from `start()` called to that moment. "Failed reads" count the calls that failed from the stop to the first success.',
      '',
      ...table,
    ].join('\n');
    return { id: 'recovery', title: this.title, markdown, targets, data: results };
  },
};
