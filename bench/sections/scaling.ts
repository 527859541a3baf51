/**
 * 6. Scaling: how the overhead grows with load. `SELECT 1` via `pool.query` at 1, 4, 16 and 64 callers
 * under A, B, C and D; and C with the same load spread over 1 vs 8 targets (8 databases: 8 sets of
 * policies).
 */
import { type ArmId, arms, startSink } from '../lib/arms.ts';
import type { BenchContext, Section, SectionResult } from '../lib/types.ts';
import { freePort } from '../../test/support/postgres.ts';
import { runLoad } from '../lib/worker.ts';

const CONCURRENCY = [1, 4, 16, 64] as const;
const SCALING_ARMS: readonly ArmId[] = ['A', 'B', 'C', 'D'];
const f = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : '—');

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
    const durationMs = ctx.quick ? 700 : 3_000;
    const warmupMs = ctx.quick ? 200 : 1_000;
    const sink = await startSink();
    const all = arms(ctx.root, sink.url, await freePort());
    const byConcurrency: Record<number, Record<string, number>> = {};
    let targetsData: Record<string, number> = {};
    try {
      for (const c of CONCURRENCY) {
        byConcurrency[c] = {};
        for (const id of SCALING_ARMS) {
          const r = await runLoad(ctx.root, all[id], {
            urls: [ctx.server.connectionString],
            concurrency: c,
            workload: 'select1',
            durationMs,
            warmupMs,
          });
          byConcurrency[c]![id] = r.throughput;
          ctx.log(`scaling c${c} ${id}: ${r.throughput.toFixed(0)} ops/s`);
        }
      }
      const eight = await targetUrls(ctx, 8);
      for (const [label, urls] of [
        ['1 target', [ctx.server.connectionString]],
        ['8 targets', eight],
      ] as const) {
        for (const id of ['A', 'C'] as const) {
          const r = await runLoad(ctx.root, all[id], {
            urls,
            concurrency: 16,
            workload: 'select1',
            durationMs,
            warmupMs,
          });
          targetsData = { ...targetsData, [`${label} ${id}`]: r.throughput };
          ctx.log(`scaling ${label} ${id}: ${r.throughput.toFixed(0)} ops/s`);
        }
      }
    } finally {
      await sink.close();
    }
    const rows = CONCURRENCY.map((c) => {
      const t = byConcurrency[c]!;
      return `| ${c} | ${f(t.A!, 0)} | ${f(t.B!, 0)} | ${f(t.C!, 0)} | ${f(t.D!, 0)} | ${f(t.C! / t.B!)} | ${f(t.D! / t.A!)} |`;
    });
    const markdown = [
      `\`SELECT 1\` via \`pool.query\` (pool max = callers), ${durationMs / 1000} s per point after ${warmupMs / 1000} s of warm-up, one run per point (noisier than section 1).`,
      '',
      '| callers | A ops/s | B ops/s | C ops/s | D ops/s | C ÷ B | D ÷ A |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...rows,
      '',
      'The same 16 callers spread over 1 or 8 targets (8 databases: 8 sets of policies, 8 breakers):',
      '',
      '| targets | A ops/s | C ops/s | C ÷ A |',
      '| --- | ---: | ---: | ---: |',
      ...(['1 target', '8 targets'] as const).map(
        (l) =>
          `| ${l} | ${f(targetsData[`${l} A`]!, 0)} | ${f(targetsData[`${l} C`]!, 0)} | ${f(targetsData[`${l} C`]! / targetsData[`${l} A`]!)} |`,
      ),
    ].join('\n');
    return {
      id: 'scaling',
      title: this.title,
      markdown,
      targets: [],
      data: { byConcurrency, targets: targetsData },
    };
  },
};
