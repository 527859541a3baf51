/**
 * 6. Scaling: how the overhead grows with load and with targets. `SELECT 1` via `pool.query` at 1, 4, 16
 * and 64 callers under A, B, C and D; then C and D (and A, the baseline) with the same 16 callers spread
 * over 1 vs 8 targets (8 databases: 8 sets of policies). Long-lived workers taking turns in slices
 * (bench/lib/turns.ts), median and range per point, the ratios per round.
 */
import { type ArmId, arms, startSink } from '../lib/arms.ts';
import type { BenchContext, Section, SectionResult, TargetCheck } from '../lib/types.ts';
import { freePort } from '../../test/support/postgres.ts';
import { type LoadResult, type SliceWorker, startSliceWorker } from '../lib/worker.ts';
import { roundRatios, takeTurns } from '../lib/turns.ts';
import { fixed as f, median, medianRange as spread, ratioSummary } from '../lib/stats.ts';

const CONCURRENCY = [1, 4, 16, 64] as const;
const SCALING_ARMS: readonly ArmId[] = ['A', 'B', 'C', 'D'];
/** The slices' order in a round: the compared arms (D and A, C and B) back to back. */
const SWEEP_ORDER: readonly ArmId[] = ['A', 'D', 'B', 'C'];
const TARGET_ARMS: readonly ArmId[] = ['A', 'C', 'D'];
const TARGET_LABELS = ['1 target', '8 targets'] as const;
const TARGET_CALLERS = 16;

/** Creates databases bench_t1..bench_tN (idempotent) and returns their connection strings. */
async function targetUrls(ctx: BenchContext, n: number): Promise<string[]> {
  const { createRequire } = await import('node:module');
  const pg = createRequire(import.meta.url)('pg') as typeof import('pg');
  const admin = new pg.Client({ connectionString: ctx.server.connectionString });
  admin.on('error', () => {});
  await admin.connect();
  const urls: string[] = [];
  try {
    for (let i = 1; i <= n; i++) {
      const name = `bench_t${i}`;
      const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
      if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${name}`);
      const u = new URL(ctx.server.connectionString);
      u.pathname = `/${name}`;
      urls.push(u.toString());
    }
  } finally {
    await admin.end();
  }
  return urls;
}

export const section: Section = {
  id: 'scaling',
  title: '6. Scaling',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const sweepRounds = ctx.quick ? 1 : 3;
    const targetRounds = ctx.quick ? 1 : 10;
    const targetDurationMs = ctx.quick ? 500 : 3_000;
    const durationMs = ctx.quick ? 500 : 2_000;
    const sliceWarmupMs = ctx.quick ? 100 : 500;
    const warmupMs = ctx.quick ? 300 : 1_500;
    const sink = await startSink();
    const byConcurrency: Record<number, Record<string, number[]>> = {};
    const sweepRatios: Record<number, { CB: number[]; DA: number[] }> = {};
    const byTargets: Record<string, number[]> = {};
    const cpuByTargets: Record<string, number[]> = {};
    // Each worker its own Prometheus port: the processes are up at the same time.
    const armFor = async (id: ArmId) => arms(ctx.root, sink.url, await freePort())[id];
    const turns = { warmupMs, sliceWarmupMs, durationMs };
    try {
      for (const c of CONCURRENCY) {
        const workers = {} as Record<ArmId, SliceWorker>;
        for (const id of SCALING_ARMS) {
          workers[id] = startSliceWorker(ctx.root, await armFor(id), {
            urls: [ctx.server.connectionString],
            concurrency: c,
            workload: 'select1',
          });
        }
        const runs = await takeTurns(workers, {
          ...turns,
          order: SWEEP_ORDER,
          rounds: sweepRounds,
          log: (id, round, r) =>
            ctx.log(`scaling c${c} round ${round + 1} ${id}: ${r.throughput.toFixed(0)} ops/s`),
        });
        byConcurrency[c] = Object.fromEntries(
          SCALING_ARMS.map((id) => [id, runs[id].map((r) => r.throughput)]),
        );
        const ops = (r: LoadResult) => r.throughput;
        sweepRatios[c] = { CB: roundRatios(runs.C, runs.B, ops), DA: roundRatios(runs.D, runs.A, ops) };
      }
      const urlsOf: Record<(typeof TARGET_LABELS)[number], string[]> = {
        '1 target': [ctx.server.connectionString],
        '8 targets': await targetUrls(ctx, 8),
      };
      // Per arm, its own block: a worker per number of targets, the two taking turns with each other
      // only. A slice right after other processes' slices runs slow for a while, the more so the more
      // state its process keeps warm (docs/benchmarks.md): 1 and 8 targets differ in exactly that.
      for (const id of TARGET_ARMS) {
        const workers = {} as Record<string, SliceWorker>;
        for (const label of TARGET_LABELS) {
          workers[`${label} ${id}`] = startSliceWorker(ctx.root, await armFor(id), {
            urls: urlsOf[label],
            concurrency: TARGET_CALLERS,
            workload: 'select1',
          });
        }
        const runs = await takeTurns(workers, {
          ...turns,
          durationMs: targetDurationMs,
          order: TARGET_LABELS.map((label) => `${label} ${id}`),
          rounds: targetRounds,
          log: (p, round, r) =>
            ctx.log(
              `scaling ${p} round ${round + 1}: ${r.throughput.toFixed(0)} ops/s, ${f(r.cpuUsPerOp ?? Number.NaN, 1)} CPU µs/op`,
            ),
        });
        for (const [p, slices] of Object.entries(runs)) {
          byTargets[p] = slices.map((r) => r.throughput);
          cpuByTargets[p] = slices.map((r) => r.cpuUsPerOp ?? Number.NaN);
        }
      }
    } finally {
      await sink.close();
    }
    const med = (xs: readonly number[] | undefined) => median(xs ?? [Number.NaN]);
    const ratioText = (xs: readonly number[]) =>
      xs.length > 1
        ? `×${f(median(xs), 3)} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`
        : `×${f(xs[0]!, 3)}`;
    const rows = CONCURRENCY.map((c) => {
      const t = byConcurrency[c]!;
      const r = sweepRatios[c]!;
      return `| ${c} | ${spread(t.A!)} | ${spread(t.B!)} | ${spread(t.C!)} | ${spread(t.D!)} | ${ratioText(r.CB)} | ${ratioText(r.DA)} |`;
    });
    // 8 ÷ 1 target per round (the two runs of a round are close in time, so drift cancels), then the
    // median and range over the rounds.
    const paired = (id: ArmId) =>
      roundRatios(byTargets[`8 targets ${id}`]!, byTargets[`1 target ${id}`]!, (x) => x);
    const targets: TargetCheck[] = (['C', 'D'] as const).map((id) => ({
      name: `${id}, 8 targets vs 1 target, ${TARGET_CALLERS} callers`,
      target: '8 targets ≥ 0.95× 1 target for the same callers',
      measured: `${ratioSummary(paired(id))}, median of ${targetRounds} round(s)' ratios (bare pg A: ${ratioText(paired('A'))}); CPU µs/op 8 ÷ 1: ×${f(med(cpuByTargets[`8 targets ${id}`]) / med(cpuByTargets[`1 target ${id}`]), 3)}`,
      met: ctx.quick ? null : median(paired(id)) >= 0.95,
    }));
    const markdown = [
      `\`SELECT 1\` via \`pool.query\` (pool max = callers). As in section 1, one long-lived process per arm (per point below), warmed up for ${warmupMs / 1000} s, then taking turns: ${sweepRounds} round(s) of one ${durationMs / 1000} s slice each (after ${sliceWarmupMs / 1000} s unmeasured), the compared arms back to back and the order reversed every round. ops/s as median (min–max) over the rounds; the ratios are each round's own ratio of two slices seconds apart, median (min–max).`,
      '',
      '| callers | A ops/s | B ops/s | C ops/s | D ops/s | C ÷ B, per round | D ÷ A, per round |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...rows,
      '',
      `The same ${TARGET_CALLERS} callers spread over 1 or 8 targets (8 databases: 8 pools of 2, 8 sets of policies, 8 breakers): one process per point, each arm in a block of its own in which its two points take turns, ${targetRounds} round(s) of one ${targetDurationMs / 1000} s slice each (after ${sliceWarmupMs / 1000} s unmeasured); median (min–max) ops/s. (Taking turns with the other arms' processes too, a slice right after theirs runs slow for a while, the more so the more state its process keeps warm, which the ratio of two points must not absorb: docs/benchmarks.md.)`,
      '',
      '| targets | A ops/s | C ops/s | D ops/s | C ÷ A | D ÷ A |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
      ...TARGET_LABELS.map((l) => {
        const m = (id: ArmId) => med(byTargets[`${l} ${id}`]);
        return `| ${l} | ${spread(byTargets[`${l} A`]!)} | ${spread(byTargets[`${l} C`]!)} | ${spread(byTargets[`${l} D`]!)} | ${f(m('C') / m('A'))} | ${f(m('D') / m('A'))} |`;
      }),
      `| 8 ÷ 1, per round | ${TARGET_ARMS.map((id) => ratioText(paired(id))).join(' | ')} | | |`,
      '',
      `CPU µs per call, median over the rounds (less sensitive than throughput to the other work on the machine): ${TARGET_ARMS.map((id) => `${id} ${f(med(cpuByTargets[`1 target ${id}`]), 1)} → ${f(med(cpuByTargets[`8 targets ${id}`]), 1)}`).join(', ')} (1 → 8 targets).`,
    ].join('\n');
    return {
      id: 'scaling',
      title: this.title,
      markdown,
      targets,
      data: { byConcurrency, sweepRatios, byTargets, cpuByTargets },
    };
  },
};
