// The connect ramp (policy/connect-ramp.ts) on a fake clock: nothing before the breaker has closed from
// open; after the close one connect at once, the next ones at the allowance's times, a waiting connect
// let go at its bound (never refused), and no limit once the window is over.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import FakeTimers from '@sinonjs/fake-timers';
import type { CircuitBreakerSettings } from '../../src/config/types.ts';
import { CircuitBreaker } from '../../src/policy/circuit-breaker.ts';
import type { Clock } from '../../src/policy/clock.ts';
import { ConnectRamp, rampAllowance } from '../../src/policy/connect-ramp.ts';

const SETTINGS: CircuitBreakerSettings = {
  enabled: true,
  mode: 'consecutive',
  consecutiveFailures: 3,
  failureRateThreshold: 0.5,
  failureRateWindowMs: 10_000,
  minimumRps: 0,
  halfOpenAfterMs: 5_000,
  halfOpenMaxProbes: 1,
  successesToClose: 1,
  rampMs: 2_000,
};

function setup(): { fake: FakeTimers.Clock; ramp: ConnectRamp; breaker: CircuitBreaker } {
  const fake = FakeTimers.createClock(1_700_000_000_000);
  const clock: Clock = {
    now: () => fake.now,
    setTimeout: (cb, ms) => fake.setTimeout(cb, ms),
    clearTimeout: (h) => fake.clearTimeout(h as FakeTimers.TimerId),
  };
  const breaker = new CircuitBreaker(SETTINGS, 'db:5432/app', clock);
  return { fake, breaker, ramp: new ConnectRamp(breaker, SETTINGS.rampMs, clock) };
}

describe('ConnectRamp', () => {
  it('the allowance: one at once, 4 in 250 ms, 33 in 1 s, unlimited from the window end (2 s)', () => {
    assert.equal(Math.floor(rampAllowance(0, 2_000)), 1);
    assert.equal(Math.floor(rampAllowance(250, 2_000)), 4);
    assert.equal(Math.floor(rampAllowance(1_000, 2_000)), 33);
    assert.equal(rampAllowance(2_000, 2_000), Number.POSITIVE_INFINITY);
  });

  it('admits everything at once until the breaker has closed from open', () => {
    const { ramp, breaker } = setup();
    for (let i = 0; i < 100; i++) assert.equal(ramp.admit(0), undefined);
    breaker.holdOpen(new Error('down'));
    assert.equal(ramp.admit(0), undefined, 'opening starts no window');
    assert.equal(ramp.started, 0);
  });

  it('after the close: one at once, then in turn at the allowance; none refused; no limit after the window', async () => {
    const { fake, ramp, breaker } = setup();
    breaker.holdOpen(new Error('down'));
    breaker.releaseClosed();
    assert.equal(ramp.started, 1);
    assert.equal(ramp.admit(0), undefined, 'the first connect goes at once');
    const granted: number[] = [];
    const start = fake.now;
    const waits = Array.from({ length: 10 }, () => ramp.admit(0));
    waits.forEach((w) => {
      assert.ok(w, 'the others wait');
      void w.then(() => granted.push(fake.now - start));
    });
    await fake.tickAsync(250);
    assert.equal(granted.length, Math.floor(rampAllowance(250, 2_000)) - 1, `granted by 250 ms: ${granted}`);
    await fake.tickAsync(2_000);
    assert.equal(granted.length, 10, 'every waiter went by the window end');
    for (let i = 1; i < granted.length; i++) assert.ok(granted[i]! >= granted[i - 1]!, 'in order');
    assert.equal(ramp.admit(0), undefined, 'no limit after the window');
    assert.equal(ramp.active, false);
  });

  it('a waiting connect goes ahead at its bound rather than fail', async () => {
    const { fake, ramp, breaker } = setup();
    breaker.holdOpen(new Error('down'));
    breaker.releaseClosed();
    ramp.admit(0);
    const waits = Array.from({ length: 5 }, () => ramp.admit(50));
    let done = 0;
    for (const w of waits) void w!.then(() => done++);
    await fake.tickAsync(51);
    assert.equal(done, 5, 'all five let go at their 50 ms bound');
  });
});
