/**
 * 5. Memory. One worker process (bench/workers/memory.ts) under arm C (pg-resilience/register,
 * everything on, spans to a discarding sink) with `--expose-gc`: `SELECT 1` at concurrency 16, with the
 * heap and RSS taken after a double `gc()` at 10 k operations and at later checkpoints up to 1 M (50 k
 * quick). The growth from 10 k to the last checkpoint is judged on heapUsed.
 */
import { freePort } from '../../test/support/postgres.ts';
import { type Arm, arms, startSink } from '../lib/arms.ts';
import { runWorker as runSharedWorker } from '../lib/worker.ts';
import type { BenchContext, Section, SectionResult, TargetCheck } from '../lib/types.ts';

const CONCURRENCY = 16;
const LIMIT_MB = 5;

interface Sample {
  ops: number;
  elapsedMs: number;
  heapUsedMb: number;
  rssMb: number;
  externalMb: number;
}

interface WorkerOutput {
  samples: Sample[];
  errors: number;
  throughput: number;
}

/** One memory.ts worker run under `arm`. */
function runWorker(ctx: BenchContext, arm: Arm, env: Record<string, string>): Promise<WorkerOutput> {
  return runSharedWorker<WorkerOutput>(ctx.root, arm, 'memory.ts', env, ['--expose-gc']);
}

export const section: Section = {
  id: 'memory',
  title: '5. Memory',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const target = ctx.quick ? 50_000 : 1_000_000;
    const checkpoints = ctx.quick
      ? [10_000, 30_000, 50_000]
      : [10_000, 100_000, 250_000, 500_000, 750_000, 1_000_000];
    // A slow machine stops after the checkpoint in progress past this; the table says how far it got.
    const maxMs = ctx.quick ? 30_000 : 180_000;
    const sink = await startSink();
    const arm = arms(ctx.root, sink.url, await freePort()).C;
    let out: WorkerOutput;
    try {
      out = await runWorker(ctx, arm, {
        BENCH_URL: ctx.server.connectionString,
        BENCH_CONCURRENCY: String(CONCURRENCY),
        BENCH_CHECKPOINTS: JSON.stringify(checkpoints),
        BENCH_MAX_MS: String(maxMs),
      });
    } finally {
      await sink.close();
    }
    const first = out.samples[0]!;
    const last = out.samples.at(-1)!;
    const second = out.samples[1];
    const heapGrowth = last.heapUsedMb - first.heapUsedMb;
    const rssGrowth = last.rssMb - first.rssMb;
    ctx.log(
      `memory: ${last.ops} ops at ${out.throughput.toFixed(0)} ops/s, heap ${first.heapUsedMb.toFixed(2)} → ${last.heapUsedMb.toFixed(2)} MB, RSS ${first.rssMb.toFixed(1)} → ${last.rssMb.toFixed(1)} MB`,
    );
    const f = (n: number, d = 2) => n.toFixed(d);
    const signed = (n: number, d = 2) => `${n >= 0 ? '+' : ''}${n.toFixed(d)}`;
    const table = [
      '| operations | elapsed s | heapUsed MB | Δ heap vs 10 k | RSS MB | Δ RSS vs 10 k | external MB |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...out.samples.map(
        (s) =>
          `| ${s.ops.toLocaleString('en-US')} | ${f(s.elapsedMs / 1000, 1)} | ${f(s.heapUsedMb)} | ${signed(s.heapUsedMb - first.heapUsedMb)} | ${f(s.rssMb, 1)} | ${signed(s.rssMb - first.rssMb, 1)} | ${f(s.externalMb)} |`,
      ),
    ];
    const reached = last.ops >= target;
    const targets: TargetCheck[] = [
      {
        name: 'memory growth, 10 k → 1 M operations',
        target: `no growth beyond ${LIMIT_MB} MB (heapUsed after gc)`,
        measured: `heapUsed ${signed(heapGrowth)} MB, RSS ${signed(rssGrowth, 1)} MB from ${first.ops.toLocaleString('en-US')} to ${last.ops.toLocaleString('en-US')} operations${second && second !== last ? ` (from ${second.ops.toLocaleString('en-US')}: heapUsed ${signed(last.heapUsedMb - second.heapUsedMb)} MB, RSS ${signed(last.rssMb - second.rssMb, 1)} MB)` : ''}`,
        met: ctx.quick || !reached ? null : heapGrowth <= LIMIT_MB,
      },
    ];
    const markdown = [
      `One worker process under arm C (\`--import pg-resilience/register\`, everything on: instrumentation-pg spans over OTLP to a local sink that discards them, metrics on an unscraped Prometheus endpoint) with \`--expose-gc\`: ${CONCURRENCY} closed-loop callers of \`SELECT 1\` through \`pool.query\` (pool max ${CONCURRENCY}), ${out.throughput.toFixed(0)} ops/s, ${out.errors} errors.`,
      '',
      `At each checkpoint the callers pause, the tracer provider is flushed (no span batch waiting in its queue), \`gc()\` runs twice, and \`process.memoryUsage()\` is read. The target (≤ ${LIMIT_MB} MB growth from 10 k to 1 M operations${ctx.quick ? `; here only to ${target.toLocaleString('en-US')}, not judged` : ''}) is judged on heapUsed: RSS also holds memory V8 and the allocator keep for reuse and does not shrink back after a gc, so it is reported, not judged.${reached ? '' : ` This run stopped at ${last.ops.toLocaleString('en-US')} operations (time cap ${maxMs / 1000} s), short of ${target.toLocaleString('en-US')}: not judged.`}`,
      '',
      ...table,
    ].join('\n');
    return {
      id: 'memory',
      title: this.title,
      markdown,
      targets,
      data: { ...out, heapGrowthMb: heapGrowth, rssGrowthMb: rssGrowth },
    };
  },
};
