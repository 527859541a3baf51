import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { classifyError } from '../../src/classify/index.ts';
import type { ErrorClass, ErrorClassification, ServerReach } from '../../src/classify/types.ts';
import type { RetrySettings } from '../../src/config/types.ts';
import { CircuitOpenError } from '../../src/errors.ts';
import type { Clock } from '../../src/policy/clock.ts';
import type { RetryEvent, RetryExhaustedEvent, RetrySuppressedEvent } from '../../src/policy/events.ts';
import { RetryPolicy } from '../../src/policy/retry.ts';
import { RetryBudget } from '../../src/policy/retry-budget.ts';
import { fakeClock, flush, settle } from '../support/clock.ts';

// ---- helpers ----

/** Lets pending promise callbacks run (the retry loop registers its timer after a microtask or two). */

/** A test error that carries its own classification. */
class TestError extends Error {
  readonly c: Partial<ErrorClassification> & { errorClass: ErrorClass };
  constructor(c: Partial<ErrorClassification> & { errorClass: ErrorClass }) {
    super(c.errorClass);
    this.c = c;
  }
}
const transient = (errorClass: ErrorClass, reachedServer: ServerReach = 'no') =>
  new TestError({ errorClass, transient: true, reachedServer, errorType: errorClass });
const permanent = (errorClass: ErrorClass = 'syntax_or_access') =>
  new TestError({ errorClass, transient: false, reachedServer: 'rejected', errorType: '42601' });

const classify = (e: unknown): ErrorClassification =>
  e instanceof TestError
    ? { transient: false, reachedServer: 'no', countsForBreaker: false, errorType: 'x', ...e.c }
    : classifyError(e);

const settings = (o: Partial<RetrySettings> = {}): RetrySettings => ({
  enabled: true,
  maxAttempts: 3,
  initialDelayMs: 100,
  maxDelayMs: 10_000,
  multiplier: 2,
  jitter: 'none',
  perErrorClass: {},
  budget: { enabled: false, ratio: 0.2, windowMs: 10_000, minRetries: 10 },
  holdClientErrorWhileSubstituting: false,
  ...o,
});

function setup(o: Partial<RetrySettings> = {}, budget?: (clock: Clock) => RetryBudget) {
  const { fake, clock } = fakeClock();
  const b = budget?.(clock);
  const policy = new RetryPolicy(settings(o), 'db:5432/app', classify, b, clock);
  const events = {
    retry: [] as RetryEvent[],
    exhausted: [] as RetryExhaustedEvent[],
    suppressed: [] as RetrySuppressedEvent[],
  };
  policy.onRetry((e) => events.retry.push(e));
  policy.onExhausted((e) => events.exhausted.push(e));
  policy.onSuppressed((e) => events.suppressed.push(e));
  return { fake, clock, policy, events, budget: b };
}

/** fn failing with the given errors in turn, then resolving 'ok'. Records the attempt numbers. */
function script(...errors: unknown[]) {
  const calls: number[] = [];
  const fn = (attempt: number): Promise<string> => {
    calls.push(attempt);
    const e = errors[calls.length - 1];
    return e === undefined ? Promise.resolve('ok') : Promise.reject(e);
  };
  return { fn, calls };
}

const ctx = { operation: 'query' as const };

// ---- tests ----

describe('RetryPolicy', () => {
  it('a successful first attempt runs at once: attempt 1, no timer, no event', async () => {
    const { fake, policy, events } = setup();
    const { fn, calls } = script();
    assert.equal(await policy.execute(fn, ctx), 'ok');
    assert.deepEqual(calls, [1]);
    assert.equal(fake.countTimers(), 0);
    assert.deepEqual(events, { retry: [], exhausted: [], suppressed: [] });
  });

  it('a non-transient error is rethrown at once, same object, no event, no retry', async () => {
    const { fake, policy, events } = setup();
    const err = permanent();
    const { fn, calls } = script(err);
    assert.equal((await settle(fake, policy.execute(fn, ctx))).error, err);
    assert.deepEqual(calls, [1]);
    assert.deepEqual(events, { retry: [], exhausted: [], suppressed: [] });
  });

  it("the breaker's own CircuitOpenError (a resilience_rejection) is never retried", async () => {
    const { fake, policy, events } = setup();
    const err = new CircuitOpenError('db:5432/app', 'open', Date.now() + 5000);
    const { fn, calls } = script(err);
    assert.equal((await settle(fake, policy.execute(fn, ctx))).error, err);
    assert.deepEqual(calls, [1]);
    assert.deepEqual(events.retry, []);
  });

  it('a transient error is retried after the backoff delay, with onRetry carrying the details', async () => {
    const { fake, policy, events } = setup();
    const e1 = transient('connect_refused');
    const e2 = transient('connect_refused');
    const { fn, calls } = script(e1, e2);
    const p = policy.execute(fn, ctx);
    await flush();
    assert.deepEqual(calls, [1]);
    fake.tick(99);
    await flush();
    assert.deepEqual(calls, [1], 'not before the delay');
    fake.tick(1);
    await flush();
    assert.deepEqual(calls, [1, 2]);
    fake.tick(199);
    await flush();
    assert.deepEqual(calls, [1, 2]);
    fake.tick(1);
    assert.equal(await p, 'ok');
    assert.deepEqual(calls, [1, 2, 3]);
    assert.deepEqual(
      events.retry.map(
        ({ attempt, maxAttempts, delayMs, error, errorType, errorClass, target, operation }) => ({
          attempt,
          maxAttempts,
          delayMs,
          error,
          errorType,
          errorClass,
          target,
          operation,
        }),
      ),
      [
        {
          attempt: 1,
          maxAttempts: 3,
          delayMs: 100,
          error: e1,
          errorType: 'connect_refused',
          errorClass: 'connect_refused',
          target: 'db:5432/app',
          operation: 'query',
        },
        {
          attempt: 2,
          maxAttempts: 3,
          delayMs: 200,
          error: e2,
          errorType: 'connect_refused',
          errorClass: 'connect_refused',
          target: 'db:5432/app',
          operation: 'query',
        },
      ],
    );
  });

  it('exhausted: after maxAttempts, onExhausted fires and the LAST error (same object) is rethrown', async () => {
    const { fake, policy, events } = setup({ maxAttempts: 3 });
    const errs = [
      transient('connection_lost', 'no'),
      transient('connection_lost', 'no'),
      transient('connection_lost', 'no'),
    ];
    const { fn, calls } = script(...errs);
    const out = await settle(fake, policy.execute(fn, ctx));
    assert.equal(out.error, errs[2]);
    assert.deepEqual(calls, [1, 2, 3]);
    assert.equal(events.retry.length, 2);
    assert.equal(events.exhausted.length, 1);
    assert.equal(events.exhausted[0]!.attempts, 3);
    assert.equal(events.exhausted[0]!.error, errs[2]);
    assert.equal(events.exhausted[0]!.errorType, 'connection_lost');
  });

  it("connecting: failed checkouts are counted apart from the statement's attempts, each against maxAttempts", async () => {
    // S = the statement failed on its connection, C = the checkout failed (nothing sent).
    const run = (kinds: string) => {
      const t = setup({ maxAttempts: 3 });
      const errs = [...kinds].map(() => transient('connection_lost', 'no'));
      const { fn, calls } = script(...errs);
      let n = 0;
      const wrapped = (attempt: number) => {
        n = attempt;
        return fn(attempt);
      };
      const connecting = () => kinds[n - 1] === 'C';
      return {
        ...t,
        errs,
        calls,
        out: settle(t.fake, t.policy.execute(wrapped, { ...ctx, connecting })),
      };
    };
    // Two statement attempts and two failed checkouts between them: six attempts where three are allowed.
    const a = run('SCCSC');
    const outA = await a.out;
    assert.equal(outA.value, 'ok');
    assert.deepEqual(a.calls, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(
      a.events.retry.map((e) => [e.attempt, e.counted?.kind, e.counted?.attempt]),
      [
        [1, undefined, undefined], // statement 1 = attempt 1: told apart only once the counts differ
        [2, 'checkout', 1],
        [3, 'checkout', 2],
        [4, 'statement', 2],
        [5, 'checkout', 1], // the count restarts after an attempt that got its connection
      ],
    );
    // Three failed checkouts in a row use the class's attempts up.
    const b = run('SCCC');
    const outB = await b.out;
    assert.equal(outB.error, b.errs[3]);
    assert.equal(b.events.exhausted[0]!.attempts, 4);
    // So do three statement attempts, failed checkouts between them or not.
    const c = run('SCSCS');
    const outC = await c.out;
    assert.equal(outC.error, c.errs[4]);
    assert.equal(c.events.exhausted[0]!.attempts, 5);
    // Without `connecting`, every attempt counts (three in all).
    const d = setup({ maxAttempts: 3 });
    const dErrs = [1, 2, 3].map(() => transient('connection_lost', 'no'));
    const outD = await settle(d.fake, d.policy.execute(script(...dErrs).fn, ctx));
    assert.equal(outD.error, dErrs[2]);
  });

  it('per-class maxAttempts: a class override allows more (or fewer) attempts than the base', async () => {
    const more = setup({ maxAttempts: 3, perErrorClass: { connect_refused: { maxAttempts: 5 } } });
    const errs = Array.from({ length: 6 }, () => transient('connect_refused'));
    const a = script(...errs);
    const out = await settle(more.fake, more.policy.execute(a.fn, ctx));
    assert.equal(out.error, errs[4]);
    assert.deepEqual(a.calls, [1, 2, 3, 4, 5]);
    assert.deepEqual(
      more.events.retry.map((e) => e.maxAttempts),
      [5, 5, 5, 5],
    );
    assert.equal(more.events.exhausted[0]!.attempts, 5);

    const fewer = setup({ maxAttempts: 3, perErrorClass: { deadlock: { maxAttempts: 1 } } });
    const d = transient('deadlock', 'rejected');
    const b = script(d);
    assert.equal((await settle(fewer.fake, fewer.policy.execute(b.fn, ctx))).error, d);
    assert.deepEqual(b.calls, [1]);
    assert.equal(fewer.events.exhausted.length, 1);
    assert.equal(fewer.events.retry.length, 0);

    // A class without an override uses the base.
    const base = setup({ maxAttempts: 2, perErrorClass: { connect_refused: { maxAttempts: 5 } } });
    const c = script(transient('pool_exhausted'), transient('pool_exhausted'));
    const outBase = await settle(base.fake, base.policy.execute(c.fn, ctx));
    assert.ok(outBase.error);
    assert.deepEqual(c.calls, [1, 2]);
  });

  it('per-class backoff: each class walks its own sequence, with its timing merged over the base', async () => {
    const { fake, policy, events } = setup({
      maxAttempts: 10,
      initialDelayMs: 100,
      multiplier: 2,
      perErrorClass: { connect_refused: { initialDelayMs: 1000, multiplier: 3 } },
    });
    const { fn, calls } = script(
      transient('connection_lost', 'no'),
      transient('connect_refused'),
      transient('connection_lost', 'no'),
      transient('connect_refused'),
      transient('connection_lost', 'no'),
    );
    const out = await settle(fake, policy.execute(fn, ctx));
    assert.equal(out.value, 'ok');
    assert.equal(calls.length, 6);
    assert.deepEqual(
      events.retry.map((e) => [e.errorClass, e.delayMs]),
      [
        ['connection_lost', 100],
        ['connect_refused', 1000],
        ['connection_lost', 200],
        ['connect_refused', 3000],
        ['connection_lost', 400],
      ],
    );
    // The clock really waited those delays.
    assert.equal(fake.now - 1_700_000_000_000, 100 + 1000 + 200 + 3000 + 400);
  });

  it('veto: canRetry refusing emits onSuppressed(reason) and rethrows the ORIGINAL error; it sees error, classification, attempt', async () => {
    const { fake, policy, events } = setup();
    const err = transient('connection_lost', 'no');
    const { fn, calls } = script(err);
    const seen: unknown[][] = [];
    assert.equal(
      (
        await settle(
          fake,
          policy.execute(fn, {
            operation: 'query',
            canRetry: (e, c, attempt) => {
              seen.push([e, c.errorClass, attempt]);
              return 'in_transaction';
            },
          }),
        )
      ).error,
      err,
    );
    assert.deepEqual(calls, [1]);
    assert.deepEqual(seen, [[err, 'connection_lost', 1]]);
    assert.equal(events.suppressed.length, 1);
    assert.equal(events.suppressed[0]!.reason, 'in_transaction');
    assert.equal(events.suppressed[0]!.error, err);
    assert.equal(events.suppressed[0]!.attempt, 1);
    assert.equal(events.retry.length, 0);
    assert.equal(events.exhausted.length, 0);
  });

  it("default veto: an error whose outcome is unknown (reachedServer 'unknown') is suppressed as 'unknown_outcome'", async () => {
    const { fake, policy, events } = setup();
    const err = transient('connection_lost', 'unknown');
    const { fn, calls } = script(err);
    assert.equal((await settle(fake, policy.execute(fn, ctx))).error, err);
    assert.deepEqual(calls, [1]);
    assert.equal(events.suppressed[0]!.reason, 'unknown_outcome');
  });

  it('canRetry returning true allows a retry even when the outcome is unknown (the caller knows better)', async () => {
    const { fake, policy } = setup();
    const { fn, calls } = script(transient('connection_lost', 'unknown'));
    const out = await settle(fake, policy.execute(fn, { operation: 'query', canRetry: () => true }));
    assert.equal(out.value, 'ok');
    assert.deepEqual(calls, [1, 2]);
  });

  it("a canRetry that throws refuses ('not_retryable') and the original error surfaces", async () => {
    const { fake, policy, events } = setup();
    const err = transient('connect_refused');
    const { fn } = script(err);
    assert.equal(
      (
        await settle(
          fake,
          policy.execute(fn, {
            operation: 'query',
            canRetry: () => {
              throw new Error('bug');
            },
          }),
        )
      ).error,
      err,
    );
    assert.equal(events.suppressed[0]!.reason, 'not_retryable');
  });

  it("budget refusal: onSuppressed('budget') and the original error; recordCall once per execute", async () => {
    const { fake, policy, events, budget } = setup(
      { maxAttempts: 5 },
      (clock) => new RetryBudget({ enabled: true, ratio: 0, windowMs: 10_000, minRetries: 2 }, clock),
    );
    const errs = [transient('connect_refused'), transient('connect_refused'), transient('connect_refused')];
    const { fn, calls } = script(...errs);
    const out = await settle(fake, policy.execute(fn, ctx));
    assert.equal(out.error, errs[2]);
    assert.deepEqual(calls, [1, 2, 3], 'two retries granted (minRetries), the third refused');
    assert.equal(events.retry.length, 2);
    assert.equal(events.suppressed.length, 1);
    assert.equal(events.suppressed[0]!.reason, 'budget');
    assert.equal(events.suppressed[0]!.error, errs[2]);
    assert.equal(events.suppressed[0]!.attempt, 3);
    assert.equal(events.exhausted.length, 0);
    assert.equal(budget!.remaining, 0);
  });

  it('a connect the network refused or reset draws nothing from the budget; a server refusal, a connect timeout and a lost statement do', async () => {
    const spent = (clock: Clock) =>
      new RetryBudget({ enabled: true, ratio: 0, windowMs: 10_000, minRetries: 0 }, clock);
    const sysError = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code });
    // As the connect patch's veto allows it: nothing was sent on a connection that never opened.
    const connect = { operation: 'connect' as const, canRetry: () => true as const };
    // A connect: refused, reset, refused again, then it connects. No budget at all, three retries.
    {
      const { fake, policy, events, budget } = setup({ maxAttempts: 5 }, spent);
      const errs = [sysError('ECONNREFUSED'), sysError('ECONNRESET'), sysError('ECONNREFUSED')];
      const { fn, calls } = script(...errs);
      assert.equal((await settle(fake, policy.execute(fn, connect))).value, 'ok');
      assert.deepEqual(calls, [1, 2, 3, 4]);
      assert.equal(events.retry.length, 3);
      assert.equal(events.suppressed.length, 0);
      assert.equal(budget!.remaining, 0, 'nothing drawn, nothing granted to others');
      // Still bounded by the class's attempts (connection_lost: maxAttempts 5 here).
      const resets = Array.from({ length: 6 }, () => sysError('ECONNRESET'));
      const bounded = script(...resets);
      assert.equal((await settle(fake, policy.execute(bounded.fn, connect))).error, resets[4]);
      assert.deepEqual(bounded.calls, [1, 2, 3, 4, 5]);
      assert.equal(events.exhausted.length, 1);
    }
    // A Pool.query checkout that failed (nothing sent) is a connect too; the statement's own lost
    // connection after it is not.
    {
      const { fake, policy, events } = setup({ maxAttempts: 5 }, spent);
      let phase: 'checkout' | 'statement' = 'checkout';
      const errs = [sysError('ECONNRESET'), sysError('ECONNRESET')];
      const { fn, calls } = script(...errs);
      const run = policy.execute(
        (n) => {
          if (n === 2) phase = 'statement';
          return fn(n);
        },
        { operation: 'query', connecting: () => phase === 'checkout', canRetry: () => true },
      );
      assert.equal((await settle(fake, run)).error, errs[1]);
      assert.deepEqual(calls, [1, 2], 'the checkout retried free; the statement refused');
      assert.deepEqual(
        events.suppressed.map((e) => e.reason),
        ['budget'],
      );
    }
    // The server's own refusal (57P03: it forked a backend to say so) and a connect timeout draw.
    for (const err of [
      Object.assign(new Error('the database system is starting up'), { code: '57P03', severity: 'FATAL' }),
      sysError('ETIMEDOUT'),
    ]) {
      const { fake, policy, events } = setup({ maxAttempts: 5 }, spent);
      const { fn, calls } = script(err);
      assert.equal((await settle(fake, policy.execute(fn, connect))).error, err);
      assert.deepEqual(calls, [1]);
      assert.equal(events.suppressed[0]?.reason, 'budget');
    }
  });

  it('recordCall once per execute, tryAcquire once per retry', async () => {
    const { fake, clock } = fakeClock();
    const budget = new RetryBudget({ enabled: true, ratio: 1, windowMs: 10_000, minRetries: 0 }, clock);
    const policy = new RetryPolicy(settings({ maxAttempts: 5 }), 't', classify, budget, clock);
    for (let i = 0; i < 3; i++) await policy.execute(script().fn, ctx); // 3 calls → 3 retries allowed
    assert.equal(budget.remaining, 3);
    const { fn } = script(transient('connect_refused'), transient('connect_refused'));
    await settle(fake, policy.execute(fn, ctx)); // 4 calls, 2 retries
    assert.equal(budget.remaining, 2);
  });

  it('abort during a backoff wait rejects at once with the signal reason, clears the timer, no further attempt', async () => {
    const { fake, policy } = setup({ initialDelayMs: 5000 });
    const ac = new AbortController();
    const { fn, calls } = script(transient('connect_refused'));
    const p = policy.execute(fn, { operation: 'query', signal: ac.signal });
    await flush();
    assert.equal(fake.countTimers(), 1);
    const reason = new Error('caller gave up');
    ac.abort(reason);
    await assert.rejects(p, (e) => e === reason);
    assert.equal(fake.countTimers(), 0, 'timer cleared');
    fake.tick(10_000);
    await flush();
    assert.deepEqual(calls, [1]);
  });

  it('a signal already aborted when the attempt fails: rejects with its reason, no retry event, no budget taken', async () => {
    const { fake, policy, events, budget } = setup(
      {},
      (clock) => new RetryBudget({ enabled: true, ratio: 0, windowMs: 10_000, minRetries: 1 }, clock),
    );
    const ac = new AbortController();
    const reason = new Error('aborted');
    const fn = (): Promise<never> => {
      ac.abort(reason);
      return Promise.reject(transient('connect_refused'));
    };
    assert.equal(
      (await settle(fake, policy.execute(fn, { operation: 'query', signal: ac.signal }))).error,
      reason,
    );
    assert.equal(events.retry.length, 0);
    assert.equal(budget!.remaining, 1);
  });

  it('enabled: false runs fn(1) only, even for a transient error (the call still counts for a budget)', async () => {
    const { fake, clock } = fakeClock();
    const budget = new RetryBudget({ enabled: true, ratio: 1, windowMs: 10_000, minRetries: 0 }, clock);
    const policy = new RetryPolicy(settings({ enabled: false }), 't', classify, budget, clock);
    const err = transient('connect_refused');
    const { fn, calls } = script(err);
    assert.equal((await settle(fake, policy.execute(fn, ctx))).error, err);
    assert.deepEqual(calls, [1]);
    assert.equal(fake.countTimers(), 0);
    assert.equal(budget.remaining, 1, 'one call recorded, no retry taken');
  });

  it('ctx.retry false runs fn(1) only, without asking the veto (the call still counts for the budget)', async () => {
    const { fake, clock } = fakeClock();
    const budget = new RetryBudget({ enabled: true, ratio: 1, windowMs: 10_000, minRetries: 0 }, clock);
    const policy = new RetryPolicy(settings(), 't', classify, budget, clock);
    const err = transient('connect_refused');
    const { fn, calls } = script(err);
    let asked = 0;
    const noRetry = { operation: 'query' as const, retry: false, canRetry: () => (asked++, true as const) };
    assert.equal((await settle(fake, policy.execute(fn, noRetry))).error, err);
    assert.deepEqual(calls, [1]);
    assert.equal(asked, 0);
    assert.equal(budget.remaining, 1, 'one call recorded, no retry taken');
  });

  it('maxAttempts 1 with no class allowing more: same as disabled', async () => {
    const { fake, policy, events } = setup({ maxAttempts: 1 });
    const err = transient('connect_refused');
    const { fn, calls } = script(err);
    assert.equal((await settle(fake, policy.execute(fn, ctx))).error, err);
    assert.deepEqual(calls, [1]);
    assert.equal(events.retry.length, 0);
  });

  it('a synchronous throw from fn is handled like a rejection (and retried when transient)', async () => {
    const { fake, policy } = setup();
    let n = 0;
    const fn = (): Promise<string> => {
      if (++n === 1) throw transient('connect_refused');
      return Promise.resolve('ok');
    };
    const out = await settle(fake, policy.execute(fn, ctx));
    assert.equal(out.value, 'ok');
    assert.equal(n, 2);
  });

  it('a listener that throws breaks neither the call nor the retry', async () => {
    const { fake, policy } = setup();
    policy.onRetry(() => {
      throw new Error('listener bug');
    });
    const { fn, calls } = script(transient('connect_refused'));
    const out = await settle(fake, policy.execute(fn, ctx));
    assert.equal(out.value, 'ok');
    assert.deepEqual(calls, [1, 2]);
  });

  it('with the real classifier: ECONNREFUSED is retried, a syntax error is not', async () => {
    const { fake, clock } = fakeClock();
    const policy = new RetryPolicy(settings(), 't', (e) => classifyError(e), undefined, clock);
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), {
      code: 'ECONNREFUSED',
      errno: -111,
      syscall: 'connect',
    });
    const a = script(refused);
    assert.equal((await settle(fake, policy.execute(a.fn, ctx))).value, 'ok');
    assert.deepEqual(a.calls, [1, 2]);
    const syntax = Object.assign(new Error('syntax error at or near "SELEC"'), {
      code: '42601',
      severity: 'ERROR',
    });
    const b = script(syntax);
    assert.equal((await settle(fake, policy.execute(b.fn, ctx))).error, syntax);
    assert.deepEqual(b.calls, [1]);
  });

  it('with the real clock: a backoff wait keeps the process alive (the server is down: no socket holds the loop)', () => {
    const url = new URL('../../src/policy/retry.ts', import.meta.url).href;
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { RetryPolicy } from ${JSON.stringify(url)};
         const settings = { enabled: true, maxAttempts: 2, initialDelayMs: 50, maxDelayMs: 50, multiplier: 2,
           jitter: 'none', perErrorClass: {}, budget: { enabled: false, ratio: 0, windowMs: 1000, minRetries: 0 } };
         const classify = () => ({ errorClass: 'connect_refused', transient: true, reachedServer: 'no',
           countsForBreaker: true, errorType: 'ECONNREFUSED' });
         let n = 0;
         new RetryPolicy(settings, 't', classify)
           .execute(() => (++n === 1 ? Promise.reject(new Error('refused')) : Promise.resolve('ok')), { operation: 'query' })
           .then((v) => console.log(v, n));`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(out.trim(), 'ok 2');
  });
});
