import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CircuitBreakerSettings, RecoverySettings } from '../../src/config/types.ts';
import { CircuitOpenError } from '../../src/errors.ts';
import { CircuitBreaker } from '../../src/policy/circuit-breaker.ts';
import type { CircuitStateChangeEvent, RecoveryAttemptEvent } from '../../src/policy/events.ts';
import { RecoveryLoop } from '../../src/policy/recovery.ts';
import { fakeClock } from '../support/clock.ts';

const START = 1_700_000_000_000;
const TARGET = 'db.example:5432/app';

const BREAKER: CircuitBreakerSettings = {
  enabled: true,
  mode: 'consecutive',
  consecutiveFailures: 1,
  failureRateThreshold: 0.5,
  failureRateWindowMs: 10_000,
  minimumRps: 5,
  // Long, so that only the recovery loop half-opens the breaker in these tests (unless a test says so).
  halfOpenAfterMs: 600_000,
  halfOpenMaxProbes: 1,
  successesToClose: 1,
  rampMs: 0,
};
const RECOVERY: RecoverySettings = { enabled: true, intervalMs: 1_000, firstProbeMs: 1_000, maxAttempts: 0 };

class Down extends Error {}
const isFailure = (e: unknown) => e instanceof Down;

/** A target whose health the test controls; the probe answers after `probeMs` of fake time. */
function setup(
  opts: {
    breaker?: Partial<CircuitBreakerSettings>;
    recovery?: Partial<RecoverySettings>;
    active?: () => boolean;
  } = {},
) {
  const { fake, clock } = fakeClock(START, 10_000);
  const breaker = new CircuitBreaker({ ...BREAKER, ...opts.breaker }, TARGET, clock);
  const server = {
    up: false,
    probeMs: 10,
    probes: [] as number[],
    running: 0,
    maxRunning: 0,
    signals: [] as AbortSignal[],
  };
  const probe = (signal: AbortSignal): Promise<void> => {
    server.probes.push(fake.now - START);
    server.signals.push(signal);
    server.running++;
    server.maxRunning = Math.max(server.maxRunning, server.running);
    const up = server.up;
    return new Promise<void>((resolve, reject) => {
      fake.setTimeout(() => {
        server.running--;
        if (up) resolve();
        else reject(new Down('ECONNREFUSED'));
      }, server.probeMs);
    });
  };
  const loop = new RecoveryLoop(
    { ...RECOVERY, ...opts.recovery },
    breaker,
    probe,
    TARGET,
    clock,
    undefined,
    opts.active,
  );
  const attempts: RecoveryAttemptEvent[] = [];
  const changes: CircuitStateChangeEvent[] = [];
  loop.onAttempt((e) => attempts.push(e));
  breaker.onStateChange((e) => changes.push(e));
  /** One failing call from traffic. */
  const failCall = () =>
    breaker.execute(() => Promise.reject(new Down('down')), 'query', isFailure).catch(() => {});
  const okCall = () => breaker.execute(() => Promise.resolve(), 'query', isFailure);
  // tickAsync lets promise callbacks run between timers.
  const tick = (ms: number) => fake.tickAsync(ms);
  return { fake, breaker, loop, server, attempts, changes, failCall, okCall, tick };
}

describe('RecoveryLoop', () => {
  it('probes every intervalMs only while the breaker is open, and stops when it closes', async () => {
    const { breaker, loop, server, attempts, failCall, tick, fake } = setup();
    await tick(10_000);
    assert.deepEqual(server.probes, [], 'no probes while closed');
    assert.equal(loop.nextAttemptAt, undefined);

    await failCall();
    const openedAt = fake.now - START;
    assert.equal(breaker.state, 'open');
    assert.equal(loop.nextAttemptAt, fake.now + 1_000);
    await tick(999);
    assert.deepEqual(server.probes, []);
    await tick(1);
    assert.deepEqual(server.probes, [openedAt + 1_000]);
    assert.equal(breaker.state, 'half_open', 'the probe forced half-open');
    await tick(3_010);
    assert.deepEqual(
      server.probes,
      [1, 2, 3, 4].map((k) => openedAt + k * 1_000),
    );
    assert.equal(breaker.state, 'open', 'each failed probe re-opens');
    assert.deepEqual(
      attempts.map((a) => [a.attempt, a.outcome, a.durationMs, (a.error as Error).message]),
      [1, 2, 3, 4].map((k) => [k, 'failure', 10, 'ECONNREFUSED']),
    );
    assert.equal(attempts[0]?.target, TARGET);

    server.up = true;
    await tick(1_000);
    assert.equal(breaker.state, 'closed');
    assert.deepEqual(attempts.at(-1), { target: TARGET, attempt: 5, outcome: 'success', durationMs: 10 });
    assert.equal(loop.nextAttemptAt, undefined);
    await tick(10_000);
    assert.equal(server.probes.length, 5, 'no probes once closed');
    assert.equal(fake.countTimers(), 0);
  });

  it('firstProbeMs: the first probes come sooner, the gaps doubling up to intervalMs, then every interval', async () => {
    const { breaker, server, failCall, tick, fake } = setup({ recovery: { firstProbeMs: 100 } });
    await failCall();
    const openedAt = fake.now - START;
    await tick(3_000);
    // Gaps of 100, 200, 400 and 800 (each below the 1 s interval), then 1 s from there on.
    assert.deepEqual(
      server.probes,
      [100, 300, 700, 1_500, 2_500].map((t) => openedAt + t),
    );
    // A server back after 250 ms closes the breaker at the 300 ms probe, not at 1 s.
    const second = setup({ recovery: { firstProbeMs: 100 } });
    await second.failCall();
    await second.tick(250);
    second.server.up = true;
    await second.tick(60);
    assert.equal(second.breaker.state, 'closed');
    assert.equal(second.server.probes.length, 2);
    // A probe slower than a gap skips the schedule points it ran over.
    const slow = setup({ recovery: { firstProbeMs: 100 } });
    slow.server.probeMs = 250;
    await slow.failCall();
    const slowOpened = slow.fake.now - START;
    await slow.tick(1_800);
    assert.deepEqual(
      slow.server.probes,
      [100, 700, 1_500].map((t) => slowOpened + t),
      'the 300 ms point passed during the first probe',
    );
    assert.equal(slow.server.maxRunning, 1);
    assert.equal(breaker.state, 'open');
  });

  it("the next probe a rejection and the opening announce is the loop's, when it comes before the half-open timer", async () => {
    const { breaker, changes, failCall, tick, fake, server } = setup({ recovery: { firstProbeMs: 100 } });
    await failCall();
    const openedAt = fake.now;
    // The opening event: the loop's first probe (100 ms), not the half-open timer (600 s).
    assert.equal(changes.at(-1)?.nextProbeAt, openedAt + 100);
    const rejected = await breaker
      .execute(() => Promise.resolve(), 'query', isFailure)
      .catch((e: unknown) => e);
    assert.ok(rejected instanceof CircuitOpenError);
    assert.equal(rejected.nextProbeAt, openedAt + 100);
    // After the failed first probe the breaker re-opens; the next probe announced is the schedule's.
    await tick(150);
    assert.equal(server.probes.length, 1);
    const later = await breaker.execute(() => Promise.resolve(), 'query', isFailure).catch((e: unknown) => e);
    assert.ok(later instanceof CircuitOpenError);
    assert.equal(later.nextProbeAt, openedAt + 300);
    // Without a recovery loop, the half-open timer.
    const bare = new CircuitBreaker(BREAKER, TARGET, fakeClock(START, 10_000).clock);
    await bare.execute(() => Promise.reject(new Down('down')), 'query', isFailure).catch(() => {});
    const alone = await bare.execute(() => Promise.resolve(), 'query', isFailure).catch((e: unknown) => e);
    assert.ok(alone instanceof CircuitOpenError);
    assert.equal(alone.nextProbeAt, bare.nextProbeAt);
  });

  it('skips probes while nobody uses the target (active() false), and resumes when someone does', async () => {
    let inUse = true;
    const { breaker, server, attempts, failCall, tick } = setup({ active: () => inUse });
    await failCall();
    await tick(1_010);
    assert.equal(server.probes.length, 1);
    inUse = false; // the app ended every pool of the target
    await tick(5_000);
    assert.equal(server.probes.length, 1, 'no probe while the target is unused');
    assert.equal(attempts.length, 1, 'a skipped probe is not an attempt');
    assert.equal(breaker.state, 'open', 'and it does not touch the breaker');
    inUse = true;
    server.up = true;
    await tick(1_010);
    assert.equal(server.probes.length, 2, 'probing resumes on the grid');
    assert.equal(breaker.state, 'closed');
  });

  it('a successful probe closes the breaker with no traffic at all', async () => {
    const { breaker, server, changes, failCall, tick, fake } = setup();
    server.up = true;
    await failCall();
    await tick(1_010);
    assert.equal(breaker.state, 'closed');
    assert.deepEqual(
      changes.map((c) => [c.from, c.to, c.at - START]),
      [
        ['closed', 'open', 0],
        ['open', 'half_open', 1_000],
        ['half_open', 'closed', 1_010],
      ],
    );
    assert.equal(fake.countTimers(), 0);
  });

  it('keeps probing while half-open until successesToClose', async () => {
    const { breaker, server, attempts, failCall, tick } = setup({ breaker: { successesToClose: 3 } });
    server.up = true;
    await failCall();
    await tick(1_010);
    assert.equal(breaker.state, 'half_open');
    await tick(2_000);
    assert.equal(breaker.state, 'closed');
    assert.deepEqual(
      attempts.map((a) => [a.attempt, a.outcome]),
      [
        [1, 'success'],
        [2, 'success'],
        [3, 'success'],
      ],
    );
    assert.deepEqual(server.probes, [1_000, 2_000, 3_000]);
  });

  it('honours maxAttempts per outage, leaves recovery to traffic, and starts afresh on the next outage', async () => {
    const { breaker, loop, server, attempts, failCall, okCall, tick } = setup({
      breaker: { halfOpenAfterMs: 20_000 },
      recovery: { maxAttempts: 3 },
    });
    await failCall();
    await tick(10_000);
    assert.deepEqual(server.probes, [1_000, 2_000, 3_000]);
    assert.equal(loop.nextAttemptAt, undefined);
    assert.equal(breaker.state, 'open');
    // The breaker's own timer half-opens it 20 s after the last failed probe; traffic closes it.
    await tick(3_010 + 20_000 - 10_000);
    assert.equal(breaker.state, 'half_open');
    await okCall();
    assert.equal(breaker.state, 'closed');
    // Next outage: three fresh attempts.
    await failCall();
    const t = server.probes.length;
    await tick(10_000);
    assert.equal(server.probes.length - t, 3);
    assert.deepEqual(
      attempts.map((a) => a.attempt),
      [1, 2, 3, 1, 2, 3],
    );
  });

  it('maxAttempts counts across re-openings within one outage', async () => {
    const { breaker, server, failCall, tick } = setup({
      breaker: { halfOpenAfterMs: 500 },
      recovery: { maxAttempts: 4 },
    });
    await failCall();
    // The breaker half-opens on its own every 500 ms; failing traffic re-opens it each time.
    for (let i = 0; i < 20; i++) {
      await tick(500);
      if (breaker.state === 'half_open') await failCall();
    }
    assert.equal(server.probes.length, 4);
  });

  it('never runs two probes at once: a probe slower than the interval skips grid points', async () => {
    const { server, attempts, failCall, tick } = setup();
    server.probeMs = 2_500;
    await failCall();
    await tick(10_000);
    assert.equal(server.maxRunning, 1);
    assert.deepEqual(server.probes, [1_000, 4_000, 7_000, 10_000]);
    assert.deepEqual(
      attempts.map((a) => [a.attempt, a.durationMs]),
      [
        [1, 2_500],
        [2, 2_500],
        [3, 2_500],
      ],
    );
  });

  it('skips an attempt, uncounted, when traffic holds the half-open slot', async () => {
    const { breaker, server, attempts, failCall, tick } = setup({
      breaker: { halfOpenAfterMs: 900 },
      recovery: { maxAttempts: 2 },
    });
    await failCall();
    await tick(900);
    assert.equal(breaker.state, 'half_open');
    let release!: (e: Error) => void;
    const slow = breaker
      .execute(
        () =>
          new Promise<void>((_, reject) => {
            release = reject;
          }),
        'query',
        isFailure,
      )
      .catch(() => {});
    await tick(100); // t=1000: the loop's turn, but traffic holds the only slot
    assert.deepEqual(server.probes, []);
    assert.equal(attempts.length, 0);
    release(new Down('still down'));
    await slow;
    assert.equal(breaker.state, 'open', 'the traffic probe failed: same outage');
    await tick(10_000);
    // Both attempts of the outage were still available.
    assert.deepEqual(server.probes, [2_000, 3_000]);
    assert.deepEqual(
      attempts.map((a) => a.attempt),
      [1, 2],
    );
  });

  it('when traffic closes the breaker mid-probe, the probe is aborted and not reported', async () => {
    const { breaker, server, attempts, failCall, okCall, tick } = setup({
      breaker: { halfOpenMaxProbes: 2 },
    });
    server.probeMs = 5_000;
    await failCall();
    await tick(1_000);
    assert.equal(server.probes.length, 1);
    assert.equal(breaker.state, 'half_open');
    await okCall();
    assert.equal(breaker.state, 'closed');
    assert.equal(server.signals[0]?.aborted, true);
    await tick(10_000);
    assert.deepEqual(attempts, []);
    assert.equal(server.probes.length, 1);
  });

  it('starts at once when the breaker is already open', async () => {
    const { fake, clock } = fakeClock(START);
    const breaker = new CircuitBreaker(BREAKER, TARGET, clock);
    await breaker.execute(() => Promise.reject(new Down('x')), 'query', isFailure).catch(() => {});
    let probes = 0;
    const loop = new RecoveryLoop(
      RECOVERY,
      breaker,
      async () => {
        probes++;
      },
      TARGET,
      clock,
    );
    assert.equal(loop.nextAttemptAt, START + 1_000);
    await fake.tickAsync(1_000);
    assert.equal(probes, 1);
    assert.equal(breaker.state, 'closed');
    loop.dispose();
    breaker.dispose();
  });

  it('disabled: never probes', async () => {
    const { server, loop, failCall, tick, breaker } = setup({ recovery: { enabled: false } });
    await failCall();
    await tick(60_000);
    assert.deepEqual(server.probes, []);
    assert.equal(loop.nextAttemptAt, undefined);
    assert.equal(breaker.state, 'open');
  });

  it('a probe that throws synchronously is a failed attempt', async () => {
    const { fake, clock } = fakeClock(START);
    const breaker = new CircuitBreaker(BREAKER, TARGET, clock);
    const loop = new RecoveryLoop(
      { ...RECOVERY, maxAttempts: 1 },
      breaker,
      () => {
        throw new Error('bad probe');
      },
      TARGET,
      clock,
    );
    const attempts: RecoveryAttemptEvent[] = [];
    loop.onAttempt((e) => attempts.push(e));
    await breaker.execute(() => Promise.reject(new Down('x')), 'query', isFailure).catch(() => {});
    await fake.tickAsync(1_000);
    assert.equal(attempts.length, 1);
    const [attempt] = attempts;
    assert.ok(attempt);
    assert.equal(attempt.outcome, 'failure');
    assert.equal((attempt.error as Error).message, 'bad probe');
    assert.equal(breaker.state, 'open');
    loop.dispose();
    breaker.dispose();
    assert.equal(fake.countTimers(), 0);
  });

  it('dispose stops everything: timer cleared, running probe aborted, nothing reported after', async () => {
    const { breaker, loop, server, attempts, failCall, tick, fake } = setup();
    server.probeMs = 5_000;
    await failCall();
    await tick(1_000);
    assert.equal(server.running, 1);
    loop.dispose();
    assert.equal(server.signals[0]?.aborted, true);
    assert.equal(loop.nextAttemptAt, undefined);
    await tick(60_000);
    assert.equal(server.probes.length, 1);
    assert.deepEqual(attempts, []);
    breaker.dispose();
    assert.equal(fake.countTimers(), 0);
    loop.dispose();
  });

  it('dispose while idle between probes clears the timer', async () => {
    const { breaker, loop, server, failCall, tick, fake } = setup();
    await failCall();
    await tick(1_500);
    assert.equal(server.probes.length, 1);
    loop.dispose();
    breaker.dispose();
    assert.equal(fake.countTimers(), 0);
    await tick(10_000);
    assert.equal(server.probes.length, 1);
  });
});
