import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Jitter, RetryTiming } from '../../src/config/types.ts';
import { createBackoff } from '../../src/policy/backoff.ts';

type Timing = Omit<RetryTiming, 'maxAttempts'>;

function delays(timing: Timing, n: number): number[] {
  const out: number[] = [];
  let b = createBackoff(timing).next(undefined);
  for (let i = 0; i < n; i++) {
    out.push(b.duration);
    b = b.next(undefined);
  }
  return out;
}

const timingArb = (jitter?: Jitter) =>
  fc.record({
    initialDelayMs: fc.oneof(
      fc.constant(0),
      fc.integer({ min: 0, max: 10_000 }),
      fc.double({ min: 0, max: 1e6, noNaN: true }),
    ),
    maxDelayMs: fc.oneof(
      fc.constant(0),
      fc.integer({ min: 0, max: 60_000 }),
      fc.double({ min: 0, max: 1e9, noNaN: true }),
    ),
    multiplier: fc.oneof(fc.constantFrom(1, 1.5, 2, 3, 10), fc.double({ min: 1, max: 100, noNaN: true })),
    jitter: jitter ? fc.constant(jitter) : fc.constantFrom<Jitter>('decorrelated', 'full', 'none'),
  });

describe('createBackoff', () => {
  it('every delay is a finite number within [0, maxDelayMs], for every jitter, even past overflow', () => {
    fc.assert(
      fc.property(timingArb(), fc.integer({ min: 1, max: 80 }), (timing, n) => {
        for (const d of delays(timing, n)) {
          assert.ok(Number.isFinite(d), `finite: ${d}`);
          assert.ok(d >= 0 && d <= timing.maxDelayMs, `${d} within [0, ${timing.maxDelayMs}]`);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("'none' follows initialDelayMs × multiplier^k, capped at maxDelayMs", () => {
    fc.assert(
      fc.property(timingArb('none'), fc.integer({ min: 1, max: 40 }), (timing, n) => {
        delays(timing, n).forEach((d, k) => {
          const expected = Math.min(timing.maxDelayMs, timing.initialDelayMs * timing.multiplier ** k);
          const want = Number.isNaN(expected) ? timing.maxDelayMs : expected;
          assert.ok(Math.abs(d - want) <= 1e-9 * Math.max(1, want), `k=${k}: ${d} vs ${want}`);
        });
      }),
      { numRuns: 500 },
    );
  });

  it("'none' honours a multiplier other than 2 (cockatiel's own noJitterGenerator would not)", () => {
    assert.deepEqual(
      delays({ initialDelayMs: 100, maxDelayMs: 10_000, multiplier: 3, jitter: 'none' }, 5),
      [100, 300, 900, 2700, 8100],
    );
    assert.deepEqual(
      delays({ initialDelayMs: 100, maxDelayMs: 250, multiplier: 1.5, jitter: 'none' }, 4),
      [100, 150, 225, 250],
    );
  });

  it("'full' stays below the uncapped exponential bound and varies", () => {
    const timing = { initialDelayMs: 100, maxDelayMs: 100_000, multiplier: 3, jitter: 'full' as const };
    const runs = Array.from({ length: 50 }, () => delays(timing, 4));
    for (const run of runs) {
      for (const [k, d] of run.entries()) assert.ok(d < 100 * 3 ** k, `k=${k}: ${d}`);
    }
    assert.ok(new Set(runs.map((r) => r[3])).size > 1, 'jittered');
    // With multiplier 3 the 4th delay can exceed 2^3 × 100: proof the multiplier is used.
    assert.ok(
      runs.some((r) => r[3]! > 800),
      'multiplier 3 used',
    );
  });

  it("'decorrelated' (cockatiel's generator) grows with the multiplier, stays capped and jitters", () => {
    const timing = { initialDelayMs: 50, maxDelayMs: 1000, multiplier: 2, jitter: 'decorrelated' as const };
    const runs = Array.from({ length: 200 }, () => delays(timing, 8));
    const means = [0, 7].map((k) => runs.reduce((s, r) => s + r[k]!, 0) / runs.length);
    assert.ok(means[1]! > means[0]!, `later delays are longer on average: ${means}`);
    assert.ok(runs.every((r) => r.every((d) => d <= 1000)));
    assert.ok(new Set(runs.map((r) => r[0])).size > 10, 'jittered');
  });

  it('an unknown jitter name falls back to decorrelated (no crash)', () => {
    const d = delays({ initialDelayMs: 10, maxDelayMs: 100, multiplier: 2, jitter: 'bogus' as Jitter }, 3);
    assert.equal(d.length, 3);
    assert.ok(d.every((x) => x >= 0 && x <= 100));
  });

  it('factories are immutable: walking one sequence does not move another', () => {
    const factory = createBackoff({ initialDelayMs: 10, maxDelayMs: 1000, multiplier: 2, jitter: 'none' });
    const a = factory.next(undefined).next(undefined);
    const b = factory.next(undefined);
    assert.equal(a.duration, 20);
    assert.equal(b.duration, 10);
  });
});
