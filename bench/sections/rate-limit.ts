/**
 * 4. Rate-limit accuracy. One worker process (bench/workers/rate-limit.ts) under arm D (pg-resilience's
 * policies and metrics, no tracing) with two targets at once, each rate-limited through
 * PG_RESILIENCE_CONFIG (`targets["host:port/database"].rateLimit`, strategy `wait`, no max wait): 300/min
 * burst 50 (the `batch` profile's limit) on the `demo` database and 6000/min burst 100 on `bench_rl`, a
 * second database of the same server (a second target). Demand is 4 × each rate, open loop, for 60 s
 * (8 s quick). Each permitted call reports when its statement ran on the server; the section counts them
 * per window, against `burst + rate × t`, and measures the steady-state rate.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../test/support/postgres.ts';
import { type Arm, arms } from '../lib/arms.ts';
import { runWorker as runSharedWorker } from '../lib/worker.ts';
import type { BenchContext, Section, SectionResult, TargetCheck } from '../lib/types.ts';

const pg = createRequire(import.meta.url)('pg') as typeof import('pg');

const DEMAND = 4;
const SECOND_DB = 'bench_rl';

interface Limit {
  readonly database: string;
  readonly ratePerMinute: number;
  readonly burst: number;
}

const LIMITS: readonly Limit[] = [
  { database: 'demo', ratePerMinute: 300, burst: 50 },
  { database: SECOND_DB, ratePerMinute: 6000, burst: 100 },
];

interface WorkerOutput {
  t0: number;
  tEnd: number;
  targets: Array<{ times: number[]; issued: number; errors: number }>;
}

export interface LimitResult {
  ratePerMinute: number;
  burst: number;
  durationMs: number;
  issued: number;
  errors: number;
  permitted: number;
  bound: number;
  /** max over the permitted calls of (calls so far − (burst + rate × t)); must be ≤ 0 */
  maxExcess: number;
  /** per full window: permits in it, rate × window (+ burst in the first), permits so far, the bound at its end */
  windows: Array<{
    fromS: number;
    toS: number;
    observed: number;
    configured: number;
    cumulative: number;
    bound: number;
  }>;
  steady: { fromS: number; calls: number; ratePerMinute: number; relativeError: number } | null;
}

/** One rate-limit.ts worker run under `arm`. */
function runWorker(ctx: BenchContext, arm: Arm, env: Record<string, string>): Promise<WorkerOutput> {
  return runSharedWorker<WorkerOutput>(ctx.root, arm, 'rate-limit.ts', env);
}

export function analyse(
  limit: Limit,
  out: { t0: number; tEnd: number; times: number[]; issued: number; errors: number },
  windowMs: number,
  settleMs: number,
): LimitResult {
  const { t0, tEnd } = out;
  const perMs = limit.ratePerMinute / 60_000;
  const times = out.times.filter((t) => t <= tEnd).sort((a, b) => a - b);
  let maxExcess = Number.NEGATIVE_INFINITY;
  times.forEach((t, i) => {
    maxExcess = Math.max(maxExcess, i + 1 - (limit.burst + perMs * (t - t0)));
  });
  const windows: LimitResult['windows'] = [];
  for (let from = t0; from + windowMs <= tEnd; from += windowMs) {
    const to = from + windowMs;
    windows.push({
      fromS: (from - t0) / 1000,
      toS: (to - t0) / 1000,
      observed: times.filter((t) => t >= from && t < to).length,
      configured: (from === t0 ? limit.burst : 0) + perMs * windowMs,
      cumulative: times.filter((t) => t < to).length,
      bound: limit.burst + perMs * (to - t0),
    });
  }
  const late = times.filter((t) => t >= t0 + settleMs);
  const span = late.length > 1 ? late.at(-1)! - late[0]! : 0;
  const steadyRate = span > 0 ? ((late.length - 1) / span) * 60_000 : Number.NaN;
  return {
    ratePerMinute: limit.ratePerMinute,
    burst: limit.burst,
    durationMs: tEnd - t0,
    issued: out.issued,
    errors: out.errors,
    permitted: times.length,
    bound: limit.burst + perMs * (tEnd - t0),
    maxExcess,
    windows,
    steady:
      span > 0
        ? {
            fromS: settleMs / 1000,
            calls: late.length,
            ratePerMinute: steadyRate,
            relativeError: steadyRate / limit.ratePerMinute - 1,
          }
        : null,
  };
}

export const section: Section = {
  id: 'rate-limit',
  title: '4. Rate-limit accuracy',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const durationMs = ctx.quick ? 8_000 : 60_000;
    const windowMs = ctx.quick ? 2_000 : 10_000;
    const settleMs = ctx.quick ? 4_000 : 10_000;
    const admin = new pg.Client({ connectionString: ctx.server.connectionString });
    admin.on('error', () => {});
    await admin.connect();
    try {
      const { rows } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [SECOND_DB]);
      if (rows.length === 0) await admin.query(`CREATE DATABASE ${SECOND_DB}`);
    } finally {
      await admin.end();
    }
    const base = new URL(ctx.server.connectionString);
    const urlFor = (db: string) => Object.assign(new URL(base), { pathname: `/${db}` }).toString();
    const targetKey = (db: string) => `${ctx.server.host}:${ctx.server.port}/${db}`;
    const config = {
      targets: Object.fromEntries(
        LIMITS.map((l) => [
          targetKey(l.database),
          {
            rateLimit: {
              enabled: true,
              ratePerMinute: l.ratePerMinute,
              burst: l.burst,
              strategy: 'wait',
              maxWaitMs: 0,
            },
          },
        ]),
      ),
    };
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pg-resilience-bench-rl-'));
    const configPath = path.join(dir, 'pg-resilience.json');
    await writeFile(configPath, JSON.stringify(config, null, 2));
    // Arm D sends no spans: no sink needed.
    const arm = arms(ctx.root, '', await freePort()).D;
    let out: WorkerOutput;
    try {
      out = await runWorker(ctx, arm, {
        PG_RESILIENCE_CONFIG: configPath,
        BENCH_TARGETS: JSON.stringify(
          LIMITS.map((l) => ({ url: urlFor(l.database), ratePerMinute: l.ratePerMinute })),
        ),
        BENCH_DEMAND: String(DEMAND),
        BENCH_DURATION_MS: String(durationMs),
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const results = LIMITS.map((l, i) =>
      analyse(l, { t0: out.t0, tEnd: out.tEnd, ...out.targets[i]! }, windowMs, settleMs),
    );
    for (const r of results) {
      ctx.log(
        `rate-limit ${r.ratePerMinute}/min: ${r.permitted} permitted (bound ${r.bound.toFixed(1)}), max excess ${r.maxExcess.toFixed(2)}, steady ${r.steady?.ratePerMinute.toFixed(1)}/min`,
      );
    }

    const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '—');
    const signedPct = (x: number | undefined) =>
      x === undefined || !Number.isFinite(x) ? '—' : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(2)} %`;
    const label = (r: LimitResult) => `${r.ratePerMinute}/min burst ${r.burst}`;
    const windowTable = [
      `| window s | ${results.map((r) => `${label(r)}: permitted | configured | so far | bound`).join(' | ')} |`,
      `| --- | ${results.map(() => '---: | ---: | ---: | ---:').join(' | ')} |`,
      ...results[0]!.windows.map((w, k) => {
        const cells = results.map((r) => {
          const x = r.windows[k];
          return x ? `${x.observed} | ${f(x.configured)} | ${x.cumulative} | ${f(x.bound)}` : '— | — | — | —';
        });
        return `| ${f(w.fromS, 0)}–${f(w.toS, 0)} | ${cells.join(' | ')} |`;
      }),
    ];
    const summaryTable = [
      '| limit | demand /min | s | calls offered | permitted | burst + rate × t | max (permitted so far − bound) | steady-state rate /min (from) | relative error | errors |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...results.map(
        (r) =>
          `| ${label(r)} | ${r.ratePerMinute * DEMAND} | ${f(r.durationMs / 1000)} | ${r.issued} | ${r.permitted} | ${f(r.bound)} | ${f(r.maxExcess, 2)} | ${f(r.steady?.ratePerMinute ?? Number.NaN, 1)} (${r.steady?.fromS ?? '—'} s) | ${signedPct(r.steady?.relativeError)} | ${r.errors} |`,
      ),
    ];
    const targets: TargetCheck[] = results.flatMap((r) => [
      {
        name: `rate-limit accuracy, ${label(r)}`,
        target: 'steady-state rate within ±2 % of the configured rate',
        measured: `${f(r.steady?.ratePerMinute ?? Number.NaN, 1)}/min (${signedPct(r.steady?.relativeError)}) over ${r.steady?.calls ?? 0} calls`,
        met: ctx.quick || !r.steady ? null : Math.abs(r.steady.relativeError) <= 0.02,
      },
      {
        name: `rate-limit bound, ${label(r)}`,
        target: 'never above burst + rate × t',
        measured: `max (permitted so far − (burst + rate × t)) = ${f(r.maxExcess, 2)} over ${r.permitted} permits`,
        met: r.permitted > 0 && r.maxExcess <= 0,
      },
    ]);
    const markdown = [
      `One worker process under arm D (pg-resilience's policies and metrics, no tracing), two targets at once through \`PG_RESILIENCE_CONFIG\`: ${LIMITS.map((l) => `${l.ratePerMinute}/min burst ${l.burst} on database \`${l.database}\``).join(', ')} (two databases of the same server are two targets), strategy \`wait\`, no maximum wait. Demand is ${DEMAND} × each rate, open loop (calls started on a 5 ms tick whether or not earlier ones got through), for ${durationMs / 1000} s.`,
      '',
      `Every call is \`SELECT extract(epoch FROM clock_timestamp())\`: a permitted call reports when its statement ran on the server, at or after the moment the limiter let it through (same host clock as the worker's t0, taken before the first call; the bucket is full, at most \`burst\`, at t0). Counting those moments can only under-count permits at any t, so "max (permitted so far − bound)" ≤ 0 checks the bound. The steady-state rate is (calls − 1) / (last − first) over the calls from ${settleMs / 1000} s on (the burst spent); the ±2 % target is judged in a full run only.`,
      '',
      ...summaryTable,
      '',
      `Permits per ${windowMs / 1000} s window: "configured" is rate × window (plus the burst in the first window; at ${DEMAND} × the rate, demand spends the 300/min burst in about 3 s, so with windows shorter than that the second window still gets part of it); "so far" and "bound" are the cumulative count and \`burst + rate × t\` at the window's end.`,
      '',
      ...windowTable,
    ].join('\n');
    return { id: 'rate-limit', title: this.title, markdown, targets, data: results };
  },
};
