/**
 * 1. Happy-path overhead: the same workloads under arms A–E, one long-lived child process per arm
 * (load.ts in slice mode), taking turns: every round each arm measures one short slice, the arms that a
 * target compares (A and D, B and C) back to back and their order reversed every round; per arm the
 * median over the rounds of throughput, p50, p99, CPU per operation and peak RSS, with ratios to A and
 * to B. The targets use each round's own ratio of two slices seconds apart.
 */
import { type ArmId, arms, startSink } from '../lib/arms.ts';
import type { BenchContext, Section, SectionResult, TargetCheck } from '../lib/types.ts';
import { freePort } from '../../test/support/postgres.ts';
import { type LoadResult, type SliceWorker, startSliceWorker } from '../lib/worker.ts';
import { roundRatios, takeTurns } from '../lib/turns.ts';
import { fixed as f, median, ratioSummary } from '../lib/stats.ts';

export interface Workload {
  readonly name: string;
  readonly workload: 'select1' | 'mix';
  readonly concurrency: number;
}

export const WORKLOADS: readonly Workload[] = [
  { name: 'SELECT 1, c1', workload: 'select1', concurrency: 1 },
  { name: 'SELECT 1, c16', workload: 'select1', concurrency: 16 },
  { name: 'read/insert mix, c16', workload: 'mix', concurrency: 16 },
];

const ORDER: readonly ArmId[] = ['A', 'B', 'C', 'D', 'E'];
/** The order of the slices in a round (reversed every other round): the compared arms back to back. */
const SLICE_ORDER: readonly ArmId[] = ['A', 'D', 'B', 'C', 'E'];

export interface ArmSummary {
  readonly throughput: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuUsPerOp: number;
  readonly maxRssMb: number;
  readonly runs: readonly LoadResult[];
}

export function summarise(runs: readonly LoadResult[]): ArmSummary {
  return {
    throughput: median(runs.map((r) => r.throughput)),
    p50Ms: median(runs.map((r) => r.p50Ms ?? Number.NaN)),
    p99Ms: median(runs.map((r) => r.p99Ms ?? Number.NaN)),
    cpuUsPerOp: median(runs.map((r) => r.cpuUsPerOp ?? Number.NaN)),
    maxRssMb: Math.max(...runs.map((r) => r.maxRssMb)),
    runs,
  };
}

export const section: Section = {
  id: 'overhead',
  title: '1. Happy-path overhead',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const rounds = ctx.quick ? 1 : 10;
    const durationMs = ctx.quick ? 500 : 2_000;
    // Before every slice, unmeasured: the callers get going again (and reconnect what the pool closed).
    const sliceWarmupMs = ctx.quick ? 100 : 500;
    const warmupMs = ctx.quick ? 300 : 1_500;
    const sink = await startSink();
    const results: Record<string, Record<ArmId, ArmSummary>> = {};
    const lines: string[] = [];
    const targets: TargetCheck[] = [];
    let labels: Record<ArmId, string> | undefined;
    try {
      for (const w of WORKLOADS) {
        const workers = {} as Record<ArmId, SliceWorker>;
        for (const id of ORDER) {
          // Each arm its own Prometheus port: the processes are up at the same time.
          const arm = arms(ctx.root, sink.url, await freePort())[id];
          labels = { ...labels, [id]: arm.label } as Record<ArmId, string>;
          workers[id] = startSliceWorker(ctx.root, arm, {
            urls: [ctx.server.connectionString],
            concurrency: w.concurrency,
            workload: w.workload,
          });
        }
        const runs = await takeTurns(workers, {
          order: SLICE_ORDER,
          rounds,
          warmupMs,
          sliceWarmupMs,
          durationMs,
          log: (id, round, r) =>
            ctx.log(`overhead ${w.name} round ${round + 1} ${id}: ${r.throughput.toFixed(0)} ops/s`),
        });
        const s = Object.fromEntries(ORDER.map((id) => [id, summarise(runs[id])])) as Record<
          ArmId,
          ArmSummary
        >;
        results[w.name] = s;
        lines.push(
          `**${w.name}**`,
          '',
          '| arm | ops/s | p50 ms | p99 ms | CPU µs/op | peak RSS MB | ops/s ÷ A | ops/s ÷ B | p50 ÷ A | p50 ÷ B |',
          '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
          ...ORDER.map((id) => {
            const a = s[id];
            return `| ${id} ${labels![id]} | ${f(a.throughput, 0)} | ${f(a.p50Ms, 3)} | ${f(a.p99Ms, 3)} | ${f(a.cpuUsPerOp, 1)} | ${f(a.maxRssMb, 0)} | ${f(a.throughput / s.A.throughput)} | ${f(a.throughput / s.B.throughput)} | ${f(a.p50Ms / s.A.p50Ms)} | ${f(a.p50Ms / s.B.p50Ms)} |`;
          }),
          '',
        );
        if (w.workload === 'select1') {
          // Judged per round: the two arms of a pair ran within one round, close in time, so the
          // machine's drift between rounds (large on a shared VM) cancels out of their ratio.
          const pair = (x: ArmId, y: ArmId) => {
            const ratios = (key: 'throughput' | 'p50Ms' | 'cpuUsPerOp') =>
              roundRatios(runs[x], runs[y], (r) => r[key]);
            return { ops: ratios('throughput'), p50: ratios('p50Ms'), cpu: ratios('cpuUsPerOp') };
          };
          for (const [x, y] of [
            ['C', 'B'],
            ['D', 'A'],
          ] as const) {
            const p = pair(x, y);
            const ops = median(p.ops);
            const p50 = median(p.p50);
            targets.push({
              name: `${x} vs ${y}, ${w.name}`,
              target: `${x} within 3 % of ${y} (throughput and p50, median of the rounds' own ratios)`,
              measured: `throughput ${ratioSummary(p.ops)}, p50 ×${f(p50, 3)}, CPU µs/op ×${f(median(p.cpu), 3)}`,
              met: ctx.quick ? null : ops >= 0.97 && p50 <= 1.03,
            });
          }
        }
      }
    } finally {
      await sink.close();
    }
    const markdown = [
      `Closed-loop callers, one child process per arm and workload, all up at once and taking turns: each warmed up for ${warmupMs / 1000} s, then ${rounds} round(s) in which every arm runs alone for ${durationMs / 1000} s (after ${sliceWarmupMs / 1000} s unmeasured), the arms a target compares (A and D, B and C) back to back and the order reversed every round; medians over the rounds. The targets compare two arms round by round (each round's own ratio of two slices a few seconds apart, then the median over the rounds), which cancels the machine's drift between rounds. B, C and E send their spans over OTLP/HTTP to a local sink that discards them and keep metrics on a Prometheus endpoint nobody scrapes; D has no tracing and no instrumentation-pg.`,
      '',
      ...lines,
    ].join('\n');
    return { id: 'overhead', title: this.title, markdown, targets, data: results };
  },
};
