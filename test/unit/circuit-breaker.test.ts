import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import FakeTimers from '@sinonjs/fake-timers';
import type { CircuitBreakerSettings } from '../../src/config/types.ts';
import { CircuitOpenError, isCircuitOpenError } from '../../src/errors.ts';
import { CircuitBreaker } from '../../src/policy/circuit-breaker.ts';
import { type Clock, realClock } from '../../src/policy/clock.ts';
import type { CircuitRejectedEvent, CircuitStateChangeEvent } from '../../src/policy/events.ts';
import { deferred } from '../support/clock.ts';

const START = 1_700_000_000_000;
const TARGET = 'db.example:5432/app';

const SETTINGS: CircuitBreakerSettings = {
  enabled: true,
  mode: 'consecutive',
  consecutiveFailures: 3,
  failureRateThreshold: 0.5,
  failureRateWindowMs: 5_000,
  minimumRps: 2,
  halfOpenAfterMs: 10_000,
  halfOpenMaxProbes: 1,
  successesToClose: 1,
  rampMs: 0,
};

/** Errors that count for the breaker (the target looks down) and errors that do not (it answered). */
class Down extends Error {}
class Answered extends Error {}
const isFailure = (e: unknown): boolean => e instanceof Down;

// cockatiel's SamplingBreaker reads Date.now(): fake Date globally, and drive the breaker's own timers
// with the same fake clock.
let fake: FakeTimers.Clock;
let clock: Clock;
beforeEach(() => {
  fake = FakeTimers.install({ now: START, toFake: ['Date'] });
  clock = {
    now: () => fake.now,
    setTimeout: (cb, ms) => fake.setTimeout(cb, ms),
    clearTimeout: (h) => fake.clearTimeout(h as FakeTimers.TimerId),
  };
});
afterEach(() => fake.uninstall());

function breaker(overrides: Partial<CircuitBreakerSettings> = {}) {
  const b = new CircuitBreaker({ ...SETTINGS, ...overrides }, TARGET, clock);
  const changes: CircuitStateChangeEvent[] = [];
  const rejected: CircuitRejectedEvent[] = [];
  b.onStateChange((e) => changes.push(e));
  b.onRejected((e) => rejected.push(e));
  return { b, changes, rejected };
}

const ok = (b: CircuitBreaker) => b.execute(() => Promise.resolve('ok'), 'query', isFailure);
async function fail(b: CircuitBreaker, error: Error = new Down('down')): Promise<unknown> {
  const got = await b
    .execute(() => Promise.reject(error), 'query', isFailure)
    .then(
      () => assert.fail('should reject'),
      (e: unknown) => e,
    );
  return got;
}

async function trip(b: CircuitBreaker, n = SETTINGS.consecutiveFailures): Promise<void> {
  for (let i = 0; i < n; i++) await fail(b);
  assert.equal(b.state, 'open');
}

describe('CircuitBreaker: closed, consecutive mode', () => {
  it('starts closed and passes results and errors through unchanged', async () => {
    const { b, changes } = breaker();
    assert.equal(b.state, 'closed');
    assert.equal(b.stateSince, START);
    assert.equal(b.nextProbeAt, undefined);
    assert.equal(b.lastFailure, undefined);
    assert.equal(await ok(b), 'ok');
    const e = new Down('x');
    assert.equal(await fail(b, e), e);
    assert.equal(b.state, 'closed');
    assert.deepEqual(changes, []);
  });

  it('opens at exactly N consecutive failures, with error and nextProbeAt in the event', async () => {
    const { b, changes } = breaker();
    await fail(b);
    fake.tick(100);
    await fail(b);
    assert.equal(b.state, 'closed');
    fake.tick(100);
    const third = new Down('third');
    await fail(b, third);
    assert.equal(b.state, 'open');
    assert.equal(b.stateSince, START + 200);
    assert.equal(b.nextProbeAt, START + 200 + SETTINGS.halfOpenAfterMs);
    assert.deepEqual(b.lastFailure, { error: third, at: START + 200 });
    assert.deepEqual(changes, [
      {
        target: TARGET,
        from: 'closed',
        to: 'open',
        at: START + 200,
        error: third,
        nextProbeAt: START + 200 + SETTINGS.halfOpenAfterMs,
      },
    ]);
  });

  it('a success resets the consecutive count', async () => {
    const { b } = breaker();
    await fail(b);
    await fail(b);
    await ok(b);
    await fail(b);
    await fail(b);
    assert.equal(b.state, 'closed');
    await fail(b);
    assert.equal(b.state, 'open');
  });

  it('errors that do not count are rethrown unchanged, never trip, and reset the count (they are successes)', async () => {
    const { b } = breaker();
    for (let i = 0; i < 10; i++) {
      const e = new Answered('syntax error');
      assert.equal(await fail(b, e), e);
    }
    assert.equal(b.state, 'closed');
    assert.equal(b.lastFailure, undefined);
    await fail(b);
    await fail(b);
    await fail(b, new Answered('unique violation'));
    await fail(b);
    await fail(b);
    assert.equal(b.state, 'closed');
    await fail(b);
    assert.equal(b.state, 'open');
  });

  it('a synchronous throw of fn is a rejection, classified like any other', async () => {
    const { b } = breaker({ consecutiveFailures: 1 });
    const e = new Down('sync');
    const got = await b
      .execute(
        () => {
          throw e;
        },
        'query',
        isFailure,
      )
      .catch((x: unknown) => x);
    assert.equal(got, e);
    assert.equal(b.state, 'open');
  });

  it('a classifier that throws does not count the error as a failure', async () => {
    const { b } = breaker({ consecutiveFailures: 1 });
    const got = await b
      .execute(
        () => Promise.reject(new Down('x')),
        'query',
        () => {
          throw new Error('classifier bug');
        },
      )
      .catch((x: unknown) => x);
    assert.ok(got instanceof Down);
    assert.equal(b.state, 'closed');
  });
});

describe('CircuitBreaker: open', () => {
  it('rejects at once with CircuitOpenError naming the target, without running fn', async () => {
    const { b, rejected } = breaker();
    await trip(b);
    fake.tick(4_000);
    let ran = false;
    const err = await b
      .execute(
        async () => {
          ran = true;
        },
        'connect',
        isFailure,
      )
      .catch((e: unknown) => e);
    assert.equal(ran, false);
    assert.ok(err instanceof CircuitOpenError);
    assert.ok(isCircuitOpenError(err));
    assert.equal(err.target, TARGET);
    assert.equal(err.state, 'open');
    assert.equal(err.nextProbeAt, START + SETTINGS.halfOpenAfterMs);
    assert.match(err.message, /db\.example:5432\/app/);
    assert.match(err.message, /next probe in 6 s/);
    assert.deepEqual(rejected, [
      { target: TARGET, operation: 'connect', state: 'open', nextProbeAt: START + SETTINGS.halfOpenAfterMs },
    ]);
  });

  it('CircuitOpenError carries the failure that opened the breaker: cause, and the message ends with it', async () => {
    const { b } = breaker();
    await fail(b);
    await fail(b);
    const opener = new Down('timeout exceeded when trying to connect');
    await fail(b, opener);
    const open = await b.execute(async () => 'ran', 'connect', isFailure).catch((e: unknown) => e);
    assert.ok(isCircuitOpenError(open));
    assert.equal(open.cause, opener);
    assert.ok(open.message.endsWith('(opened after: timeout exceeded when trying to connect)'), open.message);
    assert.equal(b.admit('query')?.cause, opener, 'admission refusals carry it too');

    // Half-open with the probe slot busy: still the opener. A failed probe re-opens: its failure now.
    fake.tick(SETTINGS.halfOpenAfterMs);
    const probe = deferred<void>();
    const running = b.execute(() => probe.promise, 'query', isFailure).catch((e: unknown) => e);
    const busy = await b.execute(async () => 'ran', 'query', isFailure).catch((e: unknown) => e);
    assert.ok(isCircuitOpenError(busy) && busy.state === 'half_open');
    assert.equal(busy.cause, opener);
    assert.ok(busy.message.endsWith('(opened after: timeout exceeded when trying to connect)'));
    const second = new Down('Connection terminated due to connection timeout');
    probe.reject(second);
    await running;
    const reopened = await b.execute(async () => 'ran', 'query', isFailure).catch((e: unknown) => e);
    assert.ok(isCircuitOpenError(reopened));
    assert.equal(reopened.cause, second);
    assert.ok(reopened.message.endsWith('(opened after: Connection terminated due to connection timeout)'));

    // Closed again: the next opening names its own failure.
    fake.tick(SETTINGS.halfOpenAfterMs);
    await ok(b);
    assert.equal(b.state, 'closed');
    const third = new Down('');
    Object.assign(third, { code: 'ECONNREFUSED' });
    await fail(b);
    await fail(b);
    await fail(b, third);
    const again = await b.execute(async () => 'ran', 'query', isFailure).catch((e: unknown) => e);
    assert.ok(isCircuitOpenError(again));
    assert.equal(again.cause, third);
    assert.ok(again.message.endsWith('(opened after: ECONNREFUSED)'), again.message);
  });

  it('turns half_open on time with no traffic, and the event fires', async () => {
    const { b, changes } = breaker();
    await trip(b);
    assert.equal(fake.countTimers(), 1);
    fake.tick(SETTINGS.halfOpenAfterMs - 1);
    assert.equal(changes.length, 1);
    fake.tick(1);
    // The listener saw it from the timer: nobody read `state` or called execute.
    assert.equal(changes.length, 2);
    assert.deepEqual(changes[1], {
      target: TARGET,
      from: 'open',
      to: 'half_open',
      at: START + SETTINGS.halfOpenAfterMs,
    });
    assert.equal(b.state, 'half_open');
    assert.equal(b.stateSince, START + SETTINGS.halfOpenAfterMs);
    assert.equal(b.nextProbeAt, undefined);
    assert.equal(fake.countTimers(), 0);
  });

  it('results of calls started while closed are ignored once the state changed', async () => {
    const { b, changes } = breaker({ successesToClose: 1 });
    const slow = deferred<string>();
    const slowCall = b.execute(() => slow.promise, 'query', isFailure);
    const slowFail = deferred<string>();
    const slowFailCall = b.execute(() => slowFail.promise, 'query', isFailure).catch((e: unknown) => e);
    await trip(b);
    fake.tick(SETTINGS.halfOpenAfterMs);
    assert.equal(b.state, 'half_open');
    slow.resolve('late');
    assert.equal(await slowCall, 'late');
    // A success from the closed era must not close the half-open breaker…
    assert.equal(b.state, 'half_open');
    // …nor a failure from then re-open it; and it takes no probe slot.
    slowFail.reject(new Down('late'));
    await slowFailCall;
    assert.equal(b.state, 'half_open');
    assert.equal(changes.length, 2);
    await ok(b);
    assert.equal(b.state, 'closed');
  });
});

describe('CircuitBreaker: half-open', () => {
  async function halfOpen(overrides: Partial<CircuitBreakerSettings> = {}) {
    const r = breaker(overrides);
    await trip(r.b);
    fake.tick(SETTINGS.halfOpenAfterMs);
    assert.equal(r.b.state, 'half_open');
    return r;
  }

  it('lets halfOpenMaxProbes calls through at once and rejects the next one fast with state half_open', async () => {
    const { b, rejected } = await halfOpen({ halfOpenMaxProbes: 2, successesToClose: 2 });
    const d1 = deferred<string>();
    const d2 = deferred<string>();
    const p1 = b.execute(() => d1.promise, 'query', isFailure);
    const p2 = b.execute(() => d2.promise, 'query', isFailure);
    let ran = false;
    const err = await b
      .execute(
        async () => {
          ran = true;
        },
        'transaction',
        isFailure,
      )
      .catch((e: unknown) => e);
    assert.equal(ran, false);
    assert.ok(err instanceof CircuitOpenError);
    assert.equal(err.state, 'half_open');
    assert.equal(err.nextProbeAt, undefined);
    assert.match(err.message, /half-open/);
    assert.deepEqual(rejected.at(-1), {
      target: TARGET,
      operation: 'transaction',
      state: 'half_open',
      nextProbeAt: undefined,
    });
    // A slot frees when a probe settles.
    d1.resolve('a');
    assert.equal(await p1, 'a');
    assert.equal(b.state, 'half_open');
    const d3 = deferred<string>();
    const p3 = b.execute(() => d3.promise, 'query', isFailure);
    d2.resolve('b');
    d3.resolve('c');
    assert.equal(await p2, 'b');
    assert.equal(await p3, 'c');
    assert.equal(b.state, 'closed');
  });

  it('closes after successesToClose successes, counted across calls', async () => {
    const { b, changes } = await halfOpen({ successesToClose: 3 });
    await ok(b);
    fake.tick(10);
    await fail(b, new Answered('the server answered: counts as a success'));
    assert.equal(b.state, 'half_open');
    fake.tick(10);
    await ok(b);
    assert.equal(b.state, 'closed');
    assert.deepEqual(changes.at(-1), {
      target: TARGET,
      from: 'half_open',
      to: 'closed',
      at: START + SETTINGS.halfOpenAfterMs + 20,
    });
    // Closed again with a fresh count: N more failures are needed.
    await fail(b);
    await fail(b);
    assert.equal(b.state, 'closed');
    await fail(b);
    assert.equal(b.state, 'open');
  });

  it('a failure re-opens with a new wait', async () => {
    const { b, changes } = await halfOpen({ successesToClose: 3 });
    await ok(b);
    fake.tick(500);
    const e = new Down('still down');
    await fail(b, e);
    const at = START + SETTINGS.halfOpenAfterMs + 500;
    assert.equal(b.state, 'open');
    assert.equal(b.nextProbeAt, at + SETTINGS.halfOpenAfterMs);
    assert.deepEqual(changes.at(-1), {
      target: TARGET,
      from: 'half_open',
      to: 'open',
      at,
      error: e,
      nextProbeAt: at + SETTINGS.halfOpenAfterMs,
    });
    fake.tick(SETTINGS.halfOpenAfterMs);
    assert.equal(b.state, 'half_open');
    // The earlier success does not carry over into the new half-open round.
    await ok(b);
    await ok(b);
    assert.equal(b.state, 'half_open');
    await ok(b);
    assert.equal(b.state, 'closed');
  });
});

describe('CircuitBreaker: probe()', () => {
  it('forces half-open early and runs fn as a half-open call', async () => {
    const { b, changes } = breaker();
    await trip(b);
    fake.tick(1_000);
    const result = await b.probe(async () => 'pong');
    assert.equal(result, 'pong');
    assert.deepEqual(
      changes.map((c) => [c.from, c.to, c.at]),
      [
        ['closed', 'open', START],
        ['open', 'half_open', START + 1_000],
        ['half_open', 'closed', START + 1_000],
      ],
    );
    assert.equal(fake.countTimers(), 0, 'the half-open timer was cleared');
  });

  it('a failing probe re-opens; by default every error counts', async () => {
    const { b } = breaker();
    await trip(b);
    fake.tick(1_000);
    const err = await b.probe(() => Promise.reject(new Error('ECONNREFUSED'))).catch((e: unknown) => e);
    assert.equal((err as Error).message, 'ECONNREFUSED');
    assert.equal(b.state, 'open');
    assert.equal(b.nextProbeAt, START + 1_000 + SETTINGS.halfOpenAfterMs);
  });

  it('when closed just executes; when half-open with every slot busy rejects', async () => {
    const { b } = breaker();
    assert.equal(await b.probe(async () => 1), 1);
    assert.equal(b.state, 'closed');
    await trip(b);
    fake.tick(SETTINGS.halfOpenAfterMs);
    const d = deferred<string>();
    const p = b.execute(() => d.promise, 'query', isFailure);
    const err = await b.probe(async () => 'x').catch((e: unknown) => e);
    assert.ok(isCircuitOpenError(err));
    assert.equal(err.state, 'half_open');
    d.resolve('done');
    await p;
  });
});

describe('CircuitBreaker: failure_rate mode (cockatiel SamplingBreaker)', () => {
  // window 5 s, minimumRps 2 → at least 10 calls in the window before the rate is judged.
  const RATE = {
    mode: 'failure_rate' as const,
    failureRateThreshold: 0.5,
    failureRateWindowMs: 5_000,
    minimumRps: 2,
  };

  it('does not judge below minimumRps × window calls', async () => {
    const { b } = breaker(RATE);
    for (let i = 0; i < 9; i++) await fail(b);
    assert.equal(b.state, 'closed');
    await fail(b);
    assert.equal(b.state, 'open');
  });

  it('opens when the failure share exceeds the threshold (strictly)', async () => {
    const { b } = breaker(RATE);
    for (let i = 0; i < 5; i++) {
      await ok(b);
      fake.tick(100);
    }
    for (let i = 0; i < 5; i++) {
      await fail(b);
      fake.tick(100);
    }
    assert.equal(b.state, 'closed', '5 of 10 is not above 50 %');
    await fail(b);
    assert.equal(b.state, 'open', '6 of 11 is');
  });

  it('non-counting errors are successes for the rate', async () => {
    const { b } = breaker(RATE);
    for (let i = 0; i < 20; i++) await fail(b, new Answered('constraint'));
    for (let i = 0; i < 19; i++) await fail(b);
    assert.equal(b.state, 'closed', '19 of 39');
    await fail(b);
    await fail(b);
    assert.equal(b.state, 'open', '21 of 41');
  });

  it('failures older than the window slide out under steady traffic', async () => {
    const { b } = breaker(RATE);
    for (let i = 0; i < 9; i++) await fail(b);
    // One success a second for 6 s: the 5 s window now holds 5 successes and none of the failures.
    for (let i = 0; i < 6; i++) {
      fake.tick(1_000);
      await ok(b);
    }
    // 4 more failures: 9 calls in the window, below the minimum (had the old ones stayed: 13 of 19).
    for (let i = 0; i < 4; i++) await fail(b);
    assert.equal(b.state, 'closed');
    await fail(b);
    assert.equal(b.state, 'closed', '5 of 10 is not above 50 %');
    await fail(b);
    assert.equal(b.state, 'open', '6 of 11');
  });

  it('failures of a past outage do not count after a quiet window (cockatiel ages windows only per call)', async () => {
    const { b } = breaker(RATE);
    for (let i = 0; i < 9; i++) await fail(b);
    fake.tick(60_000);
    await fail(b);
    assert.equal(b.state, 'closed');
  });

  it('a threshold of 1 never trips (a share cannot exceed 1)', async () => {
    const { b } = breaker({ ...RATE, failureRateThreshold: 1 });
    for (let i = 0; i < 50; i++) await fail(b);
    assert.equal(b.state, 'closed');
  });

  it('minimumRps 0 means no minimum', async () => {
    const { b } = breaker({ ...RATE, minimumRps: 0 });
    await fail(b);
    assert.equal(b.state, 'open');
  });

  it('after closing, the rate starts from a clean window', async () => {
    const { b } = breaker(RATE);
    for (let i = 0; i < 10; i++) await fail(b);
    assert.equal(b.state, 'open');
    fake.tick(SETTINGS.halfOpenAfterMs);
    await ok(b);
    assert.equal(b.state, 'closed');
    for (let i = 0; i < 9; i++) await fail(b);
    assert.equal(b.state, 'closed');
  });
});

describe('CircuitBreaker: disabled, listeners, dispose', () => {
  it('a disabled breaker just runs fn and stays closed', async () => {
    const { b, changes, rejected } = breaker({ enabled: false, consecutiveFailures: 1 });
    for (let i = 0; i < 5; i++) await fail(b);
    assert.equal(await ok(b), 'ok');
    assert.equal(await b.probe(async () => 'p'), 'p');
    assert.equal(b.state, 'closed');
    assert.deepEqual(changes, []);
    assert.deepEqual(rejected, []);
    assert.equal(fake.countTimers(), 0);
  });

  it('a throwing listener breaks neither the call nor the other listeners', async () => {
    const { b, changes } = breaker({ consecutiveFailures: 1 });
    b.onStateChange(() => {
      throw new Error('bad listener');
    });
    const e = new Down('x');
    assert.equal(await fail(b, e), e);
    assert.equal(changes.length, 1);
    assert.equal(b.state, 'open');
  });

  it('a disposed listener no longer hears events', async () => {
    const b = new CircuitBreaker({ ...SETTINGS, consecutiveFailures: 1 }, TARGET, clock);
    let heard = 0;
    const sub = b.onStateChange(() => heard++);
    sub.dispose();
    await fail(b);
    assert.equal(heard, 0);
  });

  it('dispose clears the half-open timer (no pending timers)', async () => {
    const { b } = breaker();
    await trip(b);
    assert.equal(fake.countTimers(), 1);
    b.dispose();
    assert.equal(fake.countTimers(), 0);
    // Still answers: it half-opens when a call comes after the wait, without starting timers.
    fake.tick(SETTINGS.halfOpenAfterMs);
    assert.equal(b.state, 'half_open');
    await fail(b);
    assert.equal(b.state, 'open');
    assert.equal(fake.countTimers(), 0);
  });

  it('the real clock’s timers are unref’d (a breaker never keeps the process alive)', () => {
    const handle = realClock.setTimeout(() => assert.fail('cleared'), 60_000) as NodeJS.Timeout;
    assert.equal(handle.hasRef(), false);
    realClock.clearTimeout(handle);
    assert.ok(Math.abs(realClock.now() - Date.now()) < 5);
  });
});
