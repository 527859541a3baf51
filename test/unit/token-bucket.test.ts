import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { TokenBucket } from '../../src/policy/token-bucket.ts';

const RUNS = { numRuns: 300 };
const EPS = 1e-9;

/** A settable clock: `t.now` ms. */
function manualClock(start = 1_700_000_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe('TokenBucket', () => {
  it('starts full and gives out exactly burst tokens at once', () => {
    const clock = manualClock();
    const b = new TokenBucket(60, 5, clock);
    assert.equal(b.tokens, 5);
    for (let i = 0; i < 5; i++) assert.equal(b.tryTake(), true, `token ${i + 1}`);
    assert.equal(b.tryTake(), false);
    assert.equal(b.tokens, 0);
  });

  it('refills continuously and fractionally at ratePerMinute / 60000 per ms', () => {
    const clock = manualClock();
    const b = new TokenBucket(60, 1, clock); // 1 token per second
    assert.equal(b.tryTake(), true);
    clock.t += 250;
    assert.equal(b.tokens, 0.25);
    assert.equal(b.msUntil(), 750);
    assert.equal(b.tryTake(), false);
    clock.t += 749;
    assert.equal(b.tryTake(), false);
    clock.t += 1;
    assert.equal(b.tryTake(), true);
    assert.equal(b.tokens, 0);
  });

  it('is capped at capacity after a quiet period', () => {
    const clock = manualClock();
    const b = new TokenBucket(6_000, 3, clock);
    b.tryTake(3);
    clock.t += 3_600_000;
    assert.equal(b.tokens, 3);
    assert.equal(b.msUntil(3), 0);
  });

  it('tryTake(n) is all or nothing; msUntil(n) says when n are there', () => {
    const clock = manualClock();
    const b = new TokenBucket(600, 4, clock); // 1 token per 100 ms
    assert.equal(b.tryTake(3), true);
    assert.equal(b.tryTake(2), false);
    assert.equal(b.tokens, 1);
    assert.equal(b.msUntil(2), 100);
    assert.equal(b.msUntil(4), 300);
    clock.t += 100;
    assert.equal(b.tryTake(2), true);
    assert.equal(b.tokens, 0);
  });

  it('msUntil is Infinity for more than the capacity or a zero rate', () => {
    const clock = manualClock();
    assert.equal(new TokenBucket(60, 2, clock).msUntil(3), Number.POSITIVE_INFINITY);
    const still = new TokenBucket(0, 1, clock);
    assert.equal(still.tryTake(), true);
    assert.equal(still.msUntil(), Number.POSITIVE_INFINITY);
    clock.t += 1e9;
    assert.equal(still.tryTake(), false);
  });

  it('a clock stepping back adds nothing and does not freeze refill', () => {
    const clock = manualClock();
    const b = new TokenBucket(60, 1, clock);
    b.tryTake();
    clock.t -= 10_000;
    assert.equal(b.tokens, 0);
    clock.t += 500;
    assert.equal(b.tokens, 0.5);
  });

  it('reserve() takes tokens that are not there yet (a debt paid back first); refund() gives them back', () => {
    const clock = manualClock();
    const b = new TokenBucket(60, 2, clock);
    b.tryTake(2);
    b.reserve(3);
    assert.equal(b.tokens, -3);
    assert.equal(b.msUntil(-2), 1_000, 'the first reservation is paid in 1 s');
    assert.equal(b.msUntil(0), 3_000, 'all of them in 3 s');
    assert.equal(b.msUntil(1), 4_000);
    clock.t += 2_500;
    assert.equal(b.tokens, -0.5);
    assert.equal(b.tryTake(), false);
    b.refund(2);
    assert.equal(b.tokens, 1.5);
    b.refund(5);
    assert.equal(b.tokens, 2, 'a refund never overfills');
  });

  it('a reserved token is not lost to the cap when its taker comes late', () => {
    const clock = manualClock();
    const b = new TokenBucket(60, 1, clock);
    b.tryTake();
    b.reserve();
    clock.t += 1_500; // the taker shows up 500 ms after its token existed
    assert.equal(b.msUntil(0), 0);
    assert.equal(b.tokens, 0.5, 'the half token since then is kept');
  });

  it('exact with integer rates: a million 1 ms steps at 60/min make exactly 1000 tokens', () => {
    const clock = manualClock();
    const b = new TokenBucket(60, 2_000, clock);
    b.tryTake(2_000);
    for (let i = 0; i < 1_000_000; i++) {
      clock.t += 1;
      void b.tokens;
    }
    assert.equal(b.tokens, 1_000);
  });
});

describe('TokenBucket properties', () => {
  const config = fc.record({
    ratePerMinute: fc.integer({ min: 1, max: 600_000 }),
    burst: fc.integer({ min: 1, max: 50 }),
  });
  const steps = fc.array(
    fc.record({ advance: fc.integer({ min: 0, max: 2_000 }), take: fc.integer({ min: 0, max: 5 }) }),
    { maxLength: 200 },
  );

  it('tokens stay within [0, capacity] and match min(capacity, refilled) like a reference model', () => {
    fc.assert(
      fc.property(config, steps, ({ ratePerMinute, burst }, ops) => {
        const clock = manualClock(0);
        const b = new TokenBucket(ratePerMinute, burst, clock);
        let model = burst;
        for (const { advance, take } of ops) {
          clock.t += advance;
          model = Math.min(burst, model + (advance * ratePerMinute) / 60_000);
          for (let i = 0; i < take; i++) {
            const got = b.tryTake();
            if (model >= 1 + 1e-6) assert.equal(got, true, `model has ${model}`);
            if (model < 1 - 1e-6) assert.equal(got, false, `model has ${model}`);
            if (got) model -= 1;
          }
          const t = b.tokens;
          assert.ok(t >= -EPS && t <= burst + EPS, `tokens ${t}`);
          assert.ok(Math.abs(t - model) < 1e-6, `tokens ${t} vs model ${model}`);
        }
      }),
      RUNS,
    );
  });

  it('grants in any window [t, t+T] never exceed burst + rate × T', () => {
    fc.assert(
      fc.property(config, steps, ({ ratePerMinute, burst }, ops) => {
        const clock = manualClock(0);
        const b = new TokenBucket(ratePerMinute, burst, clock);
        const grants: number[] = [];
        for (const { advance, take } of ops) {
          clock.t += advance;
          for (let i = 0; i < take; i++) if (b.tryTake()) grants.push(clock.t);
        }
        const perMs = ratePerMinute / 60_000;
        for (let i = 0; i < grants.length; i++) {
          for (let j = i; j < grants.length; j++) {
            const span = grants[j]! - grants[i]!;
            assert.ok(j - i + 1 <= burst + perMs * span + EPS, `${j - i + 1} grants in ${span} ms`);
          }
        }
      }),
      RUNS,
    );
  });

  it('msUntil(n) is exact: n tokens are there after it, not before', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6_000 }),
        fc.integer({ min: 1, max: 10 }),
        fc.integer({ min: 0, max: 10 }),
        fc.integer({ min: 1, max: 10 }),
        (ratePerMinute, burst, taken, n) => {
          fc.pre(n <= burst);
          const clock = manualClock(0);
          const b = new TokenBucket(ratePerMinute, burst, clock);
          b.tryTake(Math.min(taken, burst));
          const wait = b.msUntil(n);
          assert.ok(Number.isFinite(wait) && wait >= 0);
          if (wait > 0) {
            clock.t += Math.ceil(wait) - 1;
            assert.equal(b.tryTake(n), false, `early at ${Math.ceil(wait) - 1} of ${wait}`);
          }
          clock.t = Math.ceil(wait);
          assert.equal(b.tryTake(n), true, `after ${wait}`);
        },
      ),
      RUNS,
    );
  });
});
