/**
 * 6. Scaling: how the overhead grows with load and with targets. `SELECT 1` via `pool.query` at 1, 4, 16
 * and 64 callers under A, B, C and D; then C and D (and A, the baseline) with the same 16 callers spread
 * over 1 vs 8 targets (8 databases: 8 sets of policies), in rotated rounds, median and range per point.
 */
import { type ArmId, arms, startSink } from '../lib/arms.ts';
import type { BenchContext, Section, SectionResult, TargetCheck } from '../lib/types.ts';
import { freePort } from '../../test/support/postgres.ts';
import { runLoad } from '../lib/worker.ts';
import { fixed as f, median, medianRange as spread, rotated as rotate } from '../lib/stats.ts';

const CONCURRENCY = [1, 4, 16, 64] as const;
const SCALING_ARMS: readonly ArmId[] = ['A', 'B', 'C', 'D'];
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
    const sweepRounds = ctx.quick ? 1 : 2;
    const targetRounds = ctx.quick ? 1 : 5;
    const durationMs = ctx.quick ? 500 : 2_000;
    const warmupMs = ctx.quick ? 200 : 700;
    const sink = await startSink();
    const all = arms(ctx.root, sink.url, await freePort());
    const byConcurrency: Record<number, Record<string, number[]>> = {};
    const byTargets: Record<string, number[]> = {};
    const cpuByTargets: Record<string, number[]> = {};
    try {
      for (const c of CONCURRENCY) {
        const runs: Record<string, number[]> = Object.fromEntries(SCALING_ARMS.map((id) => [id, []]));
        for (let round = 0; round < sweepRounds; round++) {
          for (const id of rotate(SCALING_ARMS, round)) {
            const r = await runLoad(ctx.root, all[id], {
              urls: [ctx.server.connectionString],
              concurrency: c,
              workload: 'select1',
              durationMs,
              warmupMs,
            });
            runs[id]!.push(r.throughput);
            ctx.log(`scaling c${c} round ${round + 1} ${id}: ${r.throughput.toFixed(0)} ops/s`);
          }
        }
        byConcurrency[c] = runs;
      }
      const urlsOf: Record<(typeof TARGET_LABELS)[number], string[]> = {
        '1 target': [ctx.server.connectionString],
        '8 targets': await targetUrls(ctx, 8),
      };
      // Every (arm, targets) point once per round; the points' order rotates each round.
      const points = TARGET_ARMS.flatMap((id) => TARGET_LABELS.map((label) => ({ id, label })));
      for (const p of points) {
        byTargets[`${p.label} ${p.id}`] = [];
        cpuByTargets[`${p.label} ${p.id}`] = [];
      }
      for (let round = 0; round < targetRounds; round++) {
        for (const p of rotate(points, round)) {
          const r = await runLoad(ctx.root, all[p.id], {
            urls: urlsOf[p.label],
            concurrency: TARGET_CALLERS,
            workload: 'select1',
            durationMs,
            warmupMs,
          });
          byTargets[`${p.label} ${p.id}`]!.push(r.throughput);
          cpuByTargets[`${p.label} ${p.id}`]!.push(r.cpuUsPerOp ?? Number.NaN);
          ctx.log(
            `scaling ${p.label} round ${round + 1} ${p.id}: ${r.throughput.toFixed(0)} ops/s, ${f(r.cpuUsPerOp ?? Number.NaN, 1)} CPU µs/op`,
          );
        }
      }
    } finally {
      await sink.close();
    }
    const med = (xs: readonly number[] | undefined) => median(xs ?? [Number.NaN]);
    const rows = CONCURRENCY.map((c) => {
      const t = byConcurrency[c]!;
      const m = (id: ArmId) => med(t[id]);
      return `| ${c} | ${spread(t.A!)} | ${spread(t.B!)} | ${spread(t.C!)} | ${spread(t.D!)} | ${f(m('C') / m('B'))} | ${f(m('D') / m('A'))} |`;
    });
    // 8 ÷ 1 target per round (the two runs of a round are close in time, so drift cancels), then the
    // median and range over the rounds.
    const paired = (id: ArmId) =>
      byTargets[`8 targets ${id}`]!.map((t8, i) => t8 / byTargets[`1 target ${id}`]![i]!);
    const ratioText = (xs: readonly number[]) =>
      xs.length > 1
        ? `×${f(median(xs), 3)} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`
        : `×${f(xs[0]!, 3)}`;
    const targets: TargetCheck[] = (['C', 'D'] as const).map((id) => ({
      name: `${id}, 8 targets vs 1 target, ${TARGET_CALLERS} callers`,
      target: '8 targets ≥ 0.95× 1 target for the same callers',
      measured: `${ratioText(paired(id))} (bare pg A: ${ratioText(paired('A'))}), median (min–max) of ${targetRounds} round(s)' ratios; CPU µs/op 8 ÷ 1: ×${f(med(cpuByTargets[`8 targets ${id}`]) / med(cpuByTargets[`1 target ${id}`]), 3)}`,
      met: ctx.quick ? null : median(paired(id)) >= 0.95,
    }));
    const markdown = [
      `\`SELECT 1\` via \`pool.query\` (pool max = callers), ${durationMs / 1000} s per point after ${warmupMs / 1000} s of warm-up in a fresh process; ops/s as median (min–max) over ${sweepRounds} round(s), the arms' order rotating each round; ratios of medians.`,
      '',
      '| callers | A ops/s | B ops/s | C ops/s | D ops/s | C ÷ B | D ÷ A |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...rows,
      '',
      `The same ${TARGET_CALLERS} callers spread over 1 or 8 targets (8 databases: 8 pools of 2, 8 sets of policies, 8 breakers), ${targetRounds} round(s), the order of the six points rotating each round; median (min–max) ops/s:`,
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
      data: { byConcurrency, byTargets, cpuByTargets },
    };
  },
};
