import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { RetryBudgetSettings } from '../../src/config/types.ts';
import type { Clock } from '../../src/policy/clock.ts';
import { RetryBudget } from '../../src/policy/retry-budget.ts';

/** A manual clock: only `now` matters to the budget (it sets no timer). */
function manualClock(start = 1_000_000): Clock & { t: number } {
  const c = {
    t: start,
    now: () => c.t,
    setTimeout: () => {
      throw new Error('the budget must not set timers');
    },
    clearTimeout: () => {
      throw new Error('the budget must not set timers');
    },
  };
  return c;
}

const settings = (o: Partial<RetryBudgetSettings> = {}): RetryBudgetSettings => ({
  enabled: true,
  ratio: 0.2,
  windowMs: 10_000,
  minRetries: 2,
  ...o,
});

function drain(b: RetryBudget): number {
  let n = 0;
  while (b.tryAcquire()) n++;
  return n;
}

describe('RetryBudget', () => {
  it('allows minRetries per window even with no calls', () => {
    const b = new RetryBudget(settings({ minRetries: 3 }), manualClock());
    assert.equal(b.remaining, 3);
    assert.equal(drain(b), 3);
    assert.equal(b.remaining, 0);
  });

  it('allows ratio × calls when that exceeds minRetries', () => {
    const b = new RetryBudget(settings({ ratio: 0.2, minRetries: 2 }), manualClock());
    for (let i = 0; i < 100; i++) b.recordCall();
    assert.equal(b.remaining, 20);
    assert.equal(drain(b), 20);
  });

  it('a fractional allowance rounds up: retries < ratio × calls', () => {
    const b = new RetryBudget(settings({ ratio: 0.25, minRetries: 0 }), manualClock());
    for (let i = 0; i < 10; i++) b.recordCall(); // 2.5 allowed: 0, 1, 2 < 2.5
    assert.equal(b.remaining, 3);
    assert.equal(drain(b), 3);
  });

  it('forgets calls and retries once they slide out of the window', () => {
    const clock = manualClock();
    const b = new RetryBudget(settings({ ratio: 0.5, minRetries: 0, windowMs: 10_000 }), clock);
    for (let i = 0; i < 10; i++) b.recordCall();
    assert.equal(drain(b), 5);
    clock.t += 5_000; // half the window: everything still counts
    assert.equal(b.tryAcquire(), false);
    for (let i = 0; i < 4; i++) b.recordCall(); // 14 calls → 7 allowed, 5 used
    assert.equal(b.remaining, 2);
    clock.t += 5_500; // the first 10 calls and 5 retries are gone; the 4 later calls remain
    assert.equal(b.remaining, 2);
    clock.t += 10_000; // all gone
    assert.equal(b.remaining, 0);
    assert.equal(b.tryAcquire(), false);
  });

  it('a long idle period clears the whole window in bounded work', () => {
    const clock = manualClock();
    const b = new RetryBudget(settings({ ratio: 1, minRetries: 0 }), clock);
    for (let i = 0; i < 50; i++) b.recordCall();
    clock.t += 1e12;
    assert.equal(b.remaining, 0);
    b.recordCall();
    assert.equal(b.remaining, 1);
  });

  it('disabled: always allows, remaining is Infinity', () => {
    const b = new RetryBudget(settings({ enabled: false, minRetries: 0, ratio: 0 }), manualClock());
    for (let i = 0; i < 1000; i++) assert.equal(b.tryAcquire(), true);
    assert.equal(b.remaining, Number.POSITIVE_INFINITY);
  });

  it('property: matches a reference model (10 buckets of windowMs/10; granted iff retries < max(minRetries, ratio × calls))', () => {
    fc.assert(
      fc.property(
        fc.record({
          ratio: fc.double({ min: 0, max: 1, noNaN: true }),
          minRetries: fc.integer({ min: 0, max: 5 }),
          windowMs: fc.constantFrom(1_000, 10_000, 60_000),
        }),
        fc.array(
          fc.tuple(fc.constantFrom('call', 'retry', 'remaining'), fc.integer({ min: 0, max: 3_000 })),
          {
            maxLength: 300,
          },
        ),
        ({ ratio, minRetries, windowMs }, ops) => {
          const clock = manualClock(0);
          const b = new RetryBudget(settings({ ratio, minRetries, windowMs }), clock);
          const bucket = (t: number) => Math.floor(t / (windowMs / 10));
          const calls: number[] = [];
          const retries: number[] = [];
          const live = (ts: number[]) => ts.filter((t) => bucket(t) > bucket(clock.t) - 10).length;
          for (const [op, dt] of ops) {
            clock.t += dt;
            const allowed = Math.max(minRetries, ratio * live(calls));
            if (op === 'call') {
              b.recordCall();
              calls.push(clock.t);
            } else if (op === 'retry') {
              const expected = live(retries) < allowed;
              assert.equal(b.tryAcquire(), expected);
              if (expected) retries.push(clock.t);
            } else {
              assert.equal(b.remaining, Math.max(0, Math.ceil(allowed - live(retries))));
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
