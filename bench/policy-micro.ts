/**
 * Micro-benchmark of the policy pipeline's happy path (no database): what `TargetPolicy.execute` adds
 * to a call that succeeds at once, with the default profile and with a rate limit that never waits.
 * A seed for `npm run bench` (the benchmarks issue), which measures against real pg.
 * Run: node bench/policy-micro.ts [iterations]
 */
import { PolicyRegistry } from '../src/policy/registry.ts';
import { resolveConfig } from '../src/config/index.ts';

const N = Number(process.argv[2] ?? 2_000_000);
const ok = () => Promise.resolve(1);

async function time(label: string, run: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 50_000; i++) await run(); // warm-up
  const best: number[] = [];
  for (let round = 0; round < 5; round++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N / 5; i++) await run();
    best.push(Number(process.hrtime.bigint() - t0) / (N / 5));
  }
  const ns = Math.min(...best);
  console.log(`${label.padEnd(44)} ${ns.toFixed(0).padStart(6)} ns/call`);
  return ns;
}

const plain = await time('bare async call', ok);
for (const [label, options] of [
  ['TargetPolicy.execute, default profile', {}],
  ['… + rate limit 6e7/min (never waits)', { rateLimit: { enabled: true, ratePerMinute: 6e7, burst: 1e6 } }],
] as const) {
  const registry = new PolicyRegistry(resolveConfig({ env: {}, options }));
  const policy = registry.forTarget('127.0.0.1:5432/app');
  const ns = await time(label, () => policy.execute(ok, { operation: 'query' }));
  console.log(`${''.padEnd(44)} +${(ns - plain).toFixed(0)} ns over the bare call`);
  registry.dispose();
}
