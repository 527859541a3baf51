/**
 * 1. Happy-path overhead: the same workloads under arms A–E in separate child processes, the arms
 * alternated (their order rotates every round) so that machine drift cancels out; per arm the median
 * over the rounds of throughput, p50, p99, CPU per operation and peak RSS, with ratios to A and to B.
 */
import { type ArmId, arms, startSink } from '../lib/arms.ts';
import type { BenchContext, Section, SectionResult, TargetCheck } from '../lib/types.ts';
import { freePort } from '../../test/support/postgres.ts';
import { type LoadResult, runLoad } from '../lib/worker.ts';
import { fixed as f, median, rotated } from '../lib/stats.ts';

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
    const rounds = ctx.quick ? 1 : 3;
    const durationMs = ctx.quick ? 1_000 : 5_000;
    const warmupMs = ctx.quick ? 300 : 1_500;
    const sink = await startSink();
    const all = arms(ctx.root, sink.url, await freePort());
    const results: Record<string, Record<ArmId, ArmSummary>> = {};
    const lines: string[] = [];
    const targets: TargetCheck[] = [];
    try {
      for (const w of WORKLOADS) {
        const runs: Record<ArmId, LoadResult[]> = { A: [], B: [], C: [], D: [], E: [] };
        for (let round = 0; round < rounds; round++) {
          const order = rotated(ORDER, round);
          for (const id of order) {
            const r = await runLoad(ctx.root, all[id], {
              urls: [ctx.server.connectionString],
              concurrency: w.concurrency,
              workload: w.workload,
              durationMs,
              warmupMs,
            });
            runs[id].push(r);
            ctx.log(`overhead ${w.name} round ${round + 1} ${id}: ${r.throughput.toFixed(0)} ops/s`);
          }
        }
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
            return `| ${id} ${all[id].label} | ${f(a.throughput, 0)} | ${f(a.p50Ms, 3)} | ${f(a.p99Ms, 3)} | ${f(a.cpuUsPerOp, 1)} | ${f(a.maxRssMb, 0)} | ${f(a.throughput / s.A.throughput)} | ${f(a.throughput / s.B.throughput)} | ${f(a.p50Ms / s.A.p50Ms)} | ${f(a.p50Ms / s.B.p50Ms)} |`;
          }),
          '',
        );
        if (w.workload === 'select1') {
          const cb = s.C.throughput / s.B.throughput;
          const cbP50 = s.C.p50Ms / s.B.p50Ms;
          const da = s.D.throughput / s.A.throughput;
          const daP50 = s.D.p50Ms / s.A.p50Ms;
          targets.push(
            {
              name: `C vs B, ${w.name}`,
              target: 'C within 3 % of B (throughput and p50)',
              measured: `throughput ×${f(cb, 3)}, p50 ×${f(cbP50, 3)}`,
              met: ctx.quick ? null : cb >= 0.97 && cbP50 <= 1.03,
            },
            {
              name: `D vs A, ${w.name}`,
              target: 'D within 3 % of A (throughput and p50)',
              measured: `throughput ×${f(da, 3)}, p50 ×${f(daP50, 3)}`,
              met: ctx.quick ? null : da >= 0.97 && daP50 <= 1.03,
            },
          );
        }
      }
    } finally {
      await sink.close();
    }
    const markdown = [
      `Closed-loop callers in a child process per measurement; ${rounds} round(s) of ${durationMs / 1000} s per arm and workload after a ${warmupMs / 1000} s warm-up, the arms' order rotating each round; medians over the rounds. B, C and E send their spans over OTLP/HTTP to a local sink that discards them and keep metrics on a Prometheus endpoint nobody scrapes; D has no tracing and no instrumentation-pg.`,
      '',
      ...lines,
    ].join('\n');
    return { id: 'overhead', title: this.title, markdown, targets, data: results };
  },
};
