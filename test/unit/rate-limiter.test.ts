import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { RateLimitSettings } from '../../src/config/types.ts';
import { isRateLimitedError, RateLimitedError } from '../../src/errors.ts';
import type {
  RateLimitQueueEvent,
  RateLimitRejectedEvent,
  RateLimitWaitEvent,
} from '../../src/policy/events.ts';
import { RateLimiter } from '../../src/policy/rate-limiter.ts';
import { fakeClock } from '../support/clock.ts';

const START = 1_700_000_000_000;
const TARGET = 'db.example:5432/app';

const SETTINGS: RateLimitSettings = {
  enabled: true,
  ratePerMinute: 60, // one permit a second
  burst: 1,
  strategy: 'wait',
  maxQueueSize: 10,
  maxWaitMs: 0,
};

function limiter(overrides: Partial<RateLimitSettings> = {}) {
  const { fake, clock } = fakeClock(START, 1_000);
  const rl = new RateLimiter({ ...SETTINGS, ...overrides }, TARGET, clock);
  const waits: RateLimitWaitEvent[] = [];
  const rejected: RateLimitRejectedEvent[] = [];
  const sizes: number[] = [];
  rl.onWait((e) => waits.push(e));
  rl.onRejected((e) => rejected.push(e));
  rl.onQueueSize((e: RateLimitQueueEvent) => {
    assert.equal(e.target, TARGET);
    sizes.push(e.size);
  });
  return { rl, fake, waits, rejected, sizes };
}

/** Lets promise reactions run. */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Tracks a promise's outcome without awaiting it. */
function track(p: Promise<void> | undefined) {
  const s: { state: 'now' | 'pending' | 'resolved' | 'rejected'; error?: unknown } = {
    state: p ? 'pending' : 'now',
  };
  p?.then(
    () => {
      s.state = 'resolved';
    },
    (e: unknown) => {
      s.state = 'rejected';
      s.error = e;
    },
  );
  return s;
}

describe('RateLimiter: fast path and disabled', () => {
  it('returns undefined synchronously while permits are free (no promise)', () => {
    const { rl, fake } = limiter({ burst: 3 });
    assert.equal(rl.acquire('query'), undefined);
    assert.equal(rl.acquire('connect'), undefined);
    assert.equal(rl.acquire('query'), undefined);
    assert.equal(rl.tokens, 0);
    assert.equal(rl.queueSize, 0);
    assert.equal(fake.countTimers(), 0);
  });

  it('disabled: always undefined, no cost, no timers', () => {
    const { rl, fake, rejected, sizes } = limiter({ enabled: false, strategy: 'drop' });
    for (let i = 0; i < 1_000; i++) assert.equal(rl.acquire('query'), undefined);
    assert.equal(fake.countTimers(), 0);
    assert.deepEqual(rejected, []);
    assert.deepEqual(sizes, []);
  });
});

describe('RateLimiter: drop', () => {
  it('rejects (a rejected promise, never a throw) with retryAfterMs ≈ the time to the next token', async () => {
    const { rl, fake, rejected, sizes } = limiter({ strategy: 'drop', burst: 2 });
    assert.equal(rl.acquire('query'), undefined);
    assert.equal(rl.acquire('query'), undefined);
    fake.tick(250);
    const p = rl.acquire('transaction');
    assert.ok(p instanceof Promise);
    const err = await p.then(
      () => assert.fail('should reject'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof RateLimitedError);
    assert.ok(isRateLimitedError(err));
    assert.equal(err.reason, 'drop');
    assert.equal(err.target, TARGET);
    assert.ok(Math.abs(err.retryAfterMs - 750) < 1e-6, `${err.retryAfterMs}`);
    assert.match(err.message, /db\.example:5432\/app/);
    assert.deepEqual(rejected, [{ target: TARGET, operation: 'transaction', reason: 'drop' }]);
    assert.deepEqual(sizes, []);
    assert.equal(rl.queueSize, 0);
    assert.equal(fake.countTimers(), 0);
    fake.tick(750);
    assert.equal(rl.acquire('query'), undefined);
  });
});

describe('RateLimiter: wait', () => {
  it('serves waiters in FIFO order at the configured rate', async () => {
    const { rl, fake, waits, sizes } = limiter();
    assert.equal(rl.acquire('query'), undefined);
    const served: string[] = [];
    const ops = ['query', 'connect', 'transaction', 'probe'] as const;
    for (const op of ops) void rl.acquire(op)?.then(() => served.push(`${op}@${fake.now - START}`));
    assert.equal(rl.queueSize, 4);
    assert.deepEqual(sizes, [1, 2, 3, 4]);
    fake.tick(999);
    await flush();
    assert.deepEqual(served, []);
    for (let i = 0; i < 4; i++) {
      fake.tick(i === 0 ? 1 : 1_000);
      await flush();
    }
    assert.deepEqual(served, ['query@1000', 'connect@2000', 'transaction@3000', 'probe@4000']);
    assert.deepEqual(
      waits.map((w) => [w.operation, w.waitedMs]),
      [
        ['query', 1000],
        ['connect', 2000],
        ['transaction', 3000],
        ['probe', 4000],
      ],
    );
    assert.deepEqual(sizes, [1, 2, 3, 4, 3, 2, 1, 0]);
    assert.equal(fake.countTimers(), 0);
  });

  for (const ratePerMinute of [594, 69_234, 600_000]) {
    it(`serves the configured rate with burst 1 when a token takes a fraction of a ms (${ratePerMinute}/min)`, () => {
      const { rl, fake, waits } = limiter({ ratePerMinute, burst: 1 });
      const T = Math.round((3_000 * 60_000) / ratePerMinute) + 7; // ~3000 permits
      const expected = Math.floor(1 + (ratePerMinute * T) / 60_000);
      assert.equal(rl.acquire('query'), undefined);
      for (let i = 0; i < expected + 10; i++) void rl.acquire('query');
      fake.tick(T);
      assert.equal(1 + waits.length, expected);
      // Never more than one tick late.
      let k = 0;
      for (const w of waits) {
        k++;
        const due = (k * 60_000) / ratePerMinute;
        assert.ok(w.waitedMs >= due - 1e-9 && w.waitedMs < due + 1, `waiter ${k}: ${w.waitedMs} vs ${due}`);
      }
      rl.dispose();
    });
  }

  it('uses one timer for the whole queue', () => {
    const { rl, fake } = limiter();
    rl.acquire('query');
    for (let i = 0; i < 100; i++) void rl.acquire('query');
    assert.equal(fake.countTimers(), 1);
    fake.tick(10_000);
    assert.equal(rl.queueSize, 90);
    assert.equal(fake.countTimers(), 1);
    rl.dispose();
  });

  it('rejects a waiter with max_wait when it has waited maxWaitMs', async () => {
    const { rl, fake, rejected, waits, sizes } = limiter({ maxWaitMs: 1_500 });
    rl.acquire('query');
    const a = track(rl.acquire('query'));
    fake.tick(200);
    const b = track(rl.acquire('connect'));
    const c = track(rl.acquire('query'));
    fake.tick(800); // t=1000: a gets the token
    await flush();
    assert.equal(a.state, 'resolved');
    assert.equal(b.state, 'pending');
    fake.tick(699); // t=1699: b's deadline is 1700, its permit would come at 2000
    await flush();
    assert.equal(b.state, 'pending');
    fake.tick(1);
    await flush();
    assert.equal(b.state, 'rejected');
    assert.equal(c.state, 'rejected');
    assert.ok(b.error instanceof RateLimitedError);
    assert.equal(b.error.reason, 'max_wait');
    // The hint is for a call arriving now: when b left, c still held the next token; when c left, none.
    assert.ok(Math.abs(b.error.retryAfterMs - 1_300) < 1e-6, `${b.error.retryAfterMs}`);
    assert.ok(Math.abs((c.error as RateLimitedError).retryAfterMs - 300) < 1e-6);
    assert.deepEqual(rejected, [
      { target: TARGET, operation: 'connect', reason: 'max_wait' },
      { target: TARGET, operation: 'query', reason: 'max_wait' },
    ]);
    assert.deepEqual(
      waits.map((w) => w.waitedMs),
      [1000],
    );
    assert.deepEqual(sizes, [1, 2, 3, 2, 1, 0]);
    assert.equal(fake.countTimers(), 0);
    // The token was not lost: the next call waits only for what is left.
    fake.tick(300);
    assert.equal(rl.acquire('query'), undefined);
  });

  it('maxWaitMs 0 means no limit', async () => {
    const { rl, fake } = limiter({ ratePerMinute: 1 });
    rl.acquire('query');
    const a = track(rl.acquire('query'));
    fake.tick(59_999);
    await flush();
    assert.equal(a.state, 'pending');
    fake.tick(1);
    await flush();
    assert.equal(a.state, 'resolved');
  });

  it('an aborted waiter leaves the queue and is rejected (aborted); the others keep their order', async () => {
    const { rl, fake, rejected, sizes } = limiter();
    rl.acquire('query');
    const ac = new AbortController();
    const served: number[] = [];
    const ps = [0, 1, 2].map((i) =>
      rl.acquire('query', i === 1 ? ac.signal : undefined)?.then(
        () => served.push(i),
        (e: unknown) => e,
      ),
    );
    fake.tick(500);
    ac.abort();
    assert.equal(rl.queueSize, 2);
    const err = await ps[1];
    assert.ok(err instanceof RateLimitedError);
    assert.equal(err.reason, 'aborted');
    assert.deepEqual(rejected, [{ target: TARGET, operation: 'query', reason: 'aborted' }]);
    fake.tick(1_500);
    await flush();
    assert.deepEqual(served, [0, 2]);
    assert.deepEqual(sizes, [1, 2, 3, 2, 1, 0]);
  });

  it('aborting the only waiter clears the timer; aborting after the permit does nothing', async () => {
    const { rl, fake, rejected } = limiter();
    rl.acquire('query');
    const ac = new AbortController();
    const p = rl.acquire('query', ac.signal)?.catch((e: unknown) => e);
    assert.equal(fake.countTimers(), 1);
    ac.abort();
    assert.ok(isRateLimitedError(await p));
    assert.equal(fake.countTimers(), 0);

    const ac2 = new AbortController();
    fake.tick(2_000);
    rl.acquire('query');
    const s = track(rl.acquire('query', ac2.signal));
    fake.tick(1_000);
    await flush();
    assert.equal(s.state, 'resolved');
    ac2.abort();
    await flush();
    assert.equal(rejected.length, 1);
  });

  it('a signal aborted before the call: rejected at once if it would wait, unaffected if a permit is free', async () => {
    const { rl, rejected, sizes } = limiter();
    const signal = AbortSignal.abort();
    assert.equal(rl.acquire('query', signal), undefined);
    const err = await rl.acquire('connect', signal)?.catch((e: unknown) => e);
    assert.ok(err instanceof RateLimitedError);
    assert.equal(err.reason, 'aborted');
    assert.deepEqual(rejected, [{ target: TARGET, operation: 'connect', reason: 'aborted' }]);
    assert.deepEqual(sizes, []);
    assert.equal(rl.queueSize, 0);
  });

  it('is fair: while anyone waits, a newcomer queues behind even if a token is free (late timer)', async () => {
    const { rl, fake } = limiter({ burst: 3 });
    for (let i = 0; i < 3; i++) rl.acquire('query');
    const order: string[] = [];
    void rl.acquire('query')?.then(() => order.push('first'));
    // The clock jumps 5 s but the timer has not fired yet (a busy event loop): 3 tokens are free.
    fake.setSystemTime(fake.now + 5_000);
    assert.equal(rl.tokens, 3);
    const newcomer = rl.acquire('query');
    assert.ok(newcomer instanceof Promise, 'the newcomer must not jump the queue');
    void newcomer.then(() => order.push('newcomer'));
    fake.tick(1_000);
    await flush();
    assert.deepEqual(order, ['first', 'newcomer']);
    // Queue empty again: the fast path is back.
    assert.equal(rl.acquire('query'), undefined);
  });
});

describe('RateLimiter: queue', () => {
  it('rejects at once with queue_full when maxQueueSize calls wait', async () => {
    const { rl, fake, rejected, sizes } = limiter({ strategy: 'queue', maxQueueSize: 2 });
    rl.acquire('query');
    const a = track(rl.acquire('query'));
    const b = track(rl.acquire('query'));
    const err = await rl.acquire('connect')?.catch((e: unknown) => e);
    assert.ok(err instanceof RateLimitedError);
    assert.equal(err.reason, 'queue_full');
    assert.ok(Math.abs(err.retryAfterMs - 3_000) < 1e-6, `${err.retryAfterMs}`);
    assert.deepEqual(rejected, [{ target: TARGET, operation: 'connect', reason: 'queue_full' }]);
    assert.deepEqual(sizes, [1, 2]);
    fake.tick(1_000);
    await flush();
    assert.equal(a.state, 'resolved');
    // A place freed up.
    const c = track(rl.acquire('query'));
    assert.equal(rl.queueSize, 2);
    fake.tick(2_000);
    await flush();
    assert.equal(b.state, 'resolved');
    assert.equal(c.state, 'resolved');
  });

  it('maxQueueSize 0 rejects every call that would wait', async () => {
    const { rl } = limiter({ strategy: 'queue', maxQueueSize: 0 });
    rl.acquire('query');
    const err = await rl.acquire('query')?.catch((e: unknown) => e);
    assert.ok(isRateLimitedError(err));
    assert.equal(err.reason, 'queue_full');
  });

  it('honours maxWaitMs too', async () => {
    const { rl, fake } = limiter({ strategy: 'queue', maxWaitMs: 500 });
    rl.acquire('query');
    const a = track(rl.acquire('query'));
    fake.tick(500);
    await flush();
    assert.equal(a.state, 'rejected');
    assert.equal((a.error as RateLimitedError).reason, 'max_wait');
  });
});

describe('RateLimiter: dispose and listeners', () => {
  it('dispose lets every waiter through, clears the timer, and later calls pass', async () => {
    const { rl, fake, sizes } = limiter({ maxWaitMs: 10_000 });
    rl.acquire('query');
    const ws = [track(rl.acquire('query')), track(rl.acquire('query', new AbortController().signal))];
    rl.dispose();
    await flush();
    assert.deepEqual(
      ws.map((w) => w.state),
      ['resolved', 'resolved'],
    );
    assert.equal(fake.countTimers(), 0);
    assert.equal(rl.queueSize, 0);
    assert.deepEqual(sizes, [1, 2, 0]);
    assert.equal(rl.acquire('query'), undefined);
    rl.dispose();
    assert.deepEqual(sizes, [1, 2, 0]);
  });

  it('a throwing listener breaks nothing', async () => {
    const { rl, fake } = limiter();
    rl.onQueueSize(() => {
      throw new Error('bad listener');
    });
    rl.onWait(() => {
      throw new Error('bad listener');
    });
    rl.acquire('query');
    const a = track(rl.acquire('query'));
    fake.tick(1_000);
    await flush();
    assert.equal(a.state, 'resolved');
  });
});

describe('RateLimiter properties', () => {
  const arrivals = fc.array(
    fc.record({ gap: fc.integer({ min: 0, max: 3_000 }), count: fc.integer({ min: 0, max: 6 }) }),
    { minLength: 1, maxLength: 60 },
  );

  // The queue's head goes when the timer fires, up to one 1 ms tick after its token was there (see
  // rate-limiter.ts): grant times obey burst + rate × (T + 1 ms). Calls served at once obey the exact bound.
  it('grants in any window [t, t+T] never exceed burst + rate × (T + 1 tick), and are granted in arrival order', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 120_000 }),
        fc.integer({ min: 1, max: 20 }),
        fc.constantFrom('wait' as const, 'drop' as const, 'queue' as const),
        arrivals,
        async (ratePerMinute, burst, strategy, schedule) => {
          const { fake, clock } = fakeClock(START, 100_000);
          const rl = new RateLimiter(
            { enabled: true, ratePerMinute, burst, strategy, maxQueueSize: 5, maxWaitMs: 0 },
            TARGET,
            clock,
          );
          const grants: number[] = [];
          const waited: boolean[] = [];
          const order: number[] = [];
          rl.onWait(() => {
            grants.push(fake.now);
            waited.push(true);
          });
          let id = 0;
          for (const { gap, count } of schedule) {
            fake.tick(gap);
            // Let the waiters served during the tick record themselves before newcomers arrive.
            await flush();
            for (let i = 0; i < count; i++) {
              const n = id++;
              const p = rl.acquire('query');
              if (p === undefined) {
                grants.push(fake.now);
                waited.push(false);
                order.push(n);
              } else {
                p.then(
                  () => order.push(n),
                  () => undefined,
                );
              }
            }
            await flush();
          }
          // Serve everyone still waiting.
          fake.tick(Math.ceil((60_000 * (rl.queueSize + 1)) / ratePerMinute) + 1);
          await flush();
          assert.equal(rl.queueSize, 0);
          const perMs = ratePerMinute / 60_000;
          for (let i = 0; i < grants.length; i++) {
            for (let j = i; j < grants.length; j++) {
              const span = grants[j]! - grants[i]!;
              // A waiter's token was consumed up to 1 ms before its grant: widen the window by then.
              const bound = burst + perMs * (span + (waited[i] ? 1 : 0));
              assert.ok(j - i + 1 <= bound + 1e-9, `${j - i + 1} grants in ${span} ms, bound ${bound}`);
            }
          }
          assert.deepEqual(
            order,
            [...order].sort((x, y) => x - y),
            'FIFO',
          );
          if (strategy === 'wait') assert.equal(order.length, id, 'every waiter served');
          rl.dispose();
        },
      ),
      { numRuns: 150 },
    );
  });

  it('a long saturated run grants within 1% of burst + rate × T', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 60, max: 600_000 }),
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 300, max: 1_500 }),
        async (ratePerMinute, burst, sustained) => {
          const T = Math.round((sustained * 60_000) / ratePerMinute);
          const expected = burst + (ratePerMinute * T) / 60_000;
          const { fake, clock } = fakeClock(START, 100_000);
          const rl = new RateLimiter(
            { enabled: true, ratePerMinute, burst, strategy: 'wait', maxQueueSize: 0, maxWaitMs: 0 },
            TARGET,
            clock,
          );
          let granted = 0;
          rl.onWait(() => granted++);
          // Keep it saturated: more callers than can ever be served in T, all arriving at t=0.
          for (let i = 0; i < expected + 100; i++) {
            if (rl.acquire('query') === undefined) granted++;
            else assert.ok(rl.queueSize > 0);
          }
          fake.tick(T);
          assert.ok(
            Math.abs(granted - expected) <= expected * 0.01,
            `granted ${granted}, expected ${expected} (rate ${ratePerMinute}/min, burst ${burst}, T ${T} ms)`,
          );
          rl.dispose();
        },
      ),
      { numRuns: 40 },
    );
  });
});
