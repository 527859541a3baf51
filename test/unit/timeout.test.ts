import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { isOperationTimeoutError, OperationTimeoutError } from '../../src/errors.ts';
import type { StatementCancelEvent, TimeoutEvent } from '../../src/policy/events.ts';
import { createTimeout, TimeoutPolicy } from '../../src/policy/timeout.ts';
import type { CancelHook, CancelOutcome } from '../../src/policy/types.ts';
import { deferred, fakeClock, flush } from '../support/clock.ts';

describe('TimeoutPolicy', () => {
  it('passes the value through when fn settles in time, clears its timer, and never aborts the signal', async () => {
    const { fake, clock } = fakeClock();
    const t = new TimeoutPolicy(1000, 'db:5432/app', clock);
    let signal: AbortSignal | undefined;
    const value = await t.execute((s) => {
      signal = s;
      return Promise.resolve(42);
    }, 'query');
    assert.equal(value, 42);
    assert.equal(fake.countTimers(), 0);
    fake.tick(5000);
    assert.equal(signal!.aborted, false, 'a success is not reported as a deadline');
  });

  it('passes an error through unchanged (same object) when fn fails in time', async () => {
    const { fake, clock } = fakeClock();
    const t = new TimeoutPolicy(1000, 't', clock);
    const err = new Error('boom');
    await assert.rejects(
      t.execute(() => Promise.reject(err), 'query'),
      (e) => e === err,
    );
    assert.equal(fake.countTimers(), 0);
  });

  it('a synchronous throw of fn becomes a rejection and clears the timer', async () => {
    const { fake, clock } = fakeClock();
    const t = new TimeoutPolicy(1000, 't', clock);
    const err = new Error('sync');
    await assert.rejects(
      t.execute(() => {
        throw err;
      }, 'query'),
      (e) => e === err,
    );
    assert.equal(fake.countTimers(), 0);
  });

  it('at the deadline: rejects with OperationTimeoutError(target, operation, ms), aborts the signal with it, emits onTimeout', async () => {
    const { fake, clock } = fakeClock();
    const t = new TimeoutPolicy(250, 'db:5432/app', clock);
    const events: TimeoutEvent[] = [];
    t.onTimeout((e) => events.push(e));
    const late = deferred<string>();
    let signal: AbortSignal | undefined;
    const p = t.execute((s) => {
      signal = s;
      return late.promise;
    }, 'connect');
    const box: { outcome?: unknown } = {};
    p.catch((e) => {
      box.outcome = e;
    });
    fake.tick(249);
    await flush();
    assert.equal(box.outcome, undefined);
    assert.equal(signal!.aborted, false);
    fake.tick(1);
    await flush();
    const outcome = box.outcome as unknown;
    assert.ok(outcome instanceof OperationTimeoutError);
    assert.ok(isOperationTimeoutError(outcome));
    assert.equal(outcome.target, 'db:5432/app');
    assert.equal(outcome.timeoutMs, 250);
    assert.match(outcome.message, /connect on db:5432\/app timed out after 250 ms/);
    assert.equal(signal!.aborted, true);
    assert.equal(signal!.reason, outcome, 'the caller can tell why from the signal');
    assert.deepEqual(events, [{ target: 'db:5432/app', operation: 'connect', timeoutMs: 250 }]);
    // What arrives late is ignored, and a late rejection is handled (no unhandled rejection).
    late.reject(new Error('late'));
    await flush();
  });

  it('lets the caller clean up a result that arrives after the deadline (e.g. release a pool client)', async () => {
    const { fake, clock } = fakeClock();
    const t = new TimeoutPolicy(100, 't', clock);
    const released: string[] = [];
    const pending = deferred<string>();
    const p = t.execute(async (signal) => {
      const client = await pending.promise;
      if (signal.aborted) {
        released.push(client);
        throw signal.reason;
      }
      return client;
    }, 'connect');
    p.catch(() => {});
    fake.tick(100);
    await assert.rejects(p, OperationTimeoutError);
    pending.resolve('client#1');
    await flush();
    assert.deepEqual(released, ['client#1']);
  });

  it("the caller's signal aborting first aborts fn's signal and rejects with its reason; the timer is cleared", async () => {
    const { fake, clock } = fakeClock();
    const t = new TimeoutPolicy(1000, 't', clock);
    const ac = new AbortController();
    let inner: AbortSignal | undefined;
    const p = t.execute(
      (s) => {
        inner = s;
        return new Promise(() => {});
      },
      'query',
      ac.signal,
    );
    const reason = new Error('caller gave up');
    ac.abort(reason);
    await assert.rejects(p, (e) => e === reason);
    assert.equal(inner!.aborted, true);
    assert.equal(inner!.reason, reason);
    assert.equal(fake.countTimers(), 0);
  });

  it("an already aborted caller's signal rejects at once without calling fn", async () => {
    const { clock } = fakeClock();
    const t = new TimeoutPolicy(1000, 't', clock);
    const reason = new Error('already');
    let called = false;
    await assert.rejects(
      t.execute(
        () => {
          called = true;
          return Promise.resolve(1);
        },
        'query',
        AbortSignal.abort(reason),
      ),
      (e) => e === reason,
    );
    assert.equal(called, false);
  });

  it("the caller's signal listener is removed once the attempt settles", async () => {
    const { clock } = fakeClock();
    const t = new TimeoutPolicy(1000, 't', clock);
    const ac = new AbortController();
    let added = 0;
    let removed = 0;
    const add = ac.signal.addEventListener.bind(ac.signal);
    const remove = ac.signal.removeEventListener.bind(ac.signal);
    ac.signal.addEventListener = ((...args: Parameters<typeof add>) => {
      added++;
      return add(...args);
    }) as typeof add;
    ac.signal.removeEventListener = ((...args: Parameters<typeof remove>) => {
      removed++;
      return remove(...args);
    }) as typeof remove;
    await t.execute(() => Promise.resolve(1), 'query', ac.signal);
    assert.equal(added, 1);
    assert.equal(removed, 1);
  });

  it('createTimeout(0) is no wrapper at all; a positive ms gives a TimeoutPolicy', () => {
    assert.equal(createTimeout(0, 't'), undefined);
    assert.ok(createTimeout(10, 't') instanceof TimeoutPolicy);
  });

  it('with the real clock: a hung attempt that holds no handle still times out (its timer keeps the process alive)', () => {
    // In a child process with nothing else pending: an unref'd deadline would let the process exit
    // silently with the call never settled.
    const url = new URL('../../src/policy/timeout.ts', import.meta.url).href;
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { TimeoutPolicy } from ${JSON.stringify(url)};
         new TimeoutPolicy(30, 't').execute(() => new Promise(() => {}), 'query').catch((e) => console.log(e.code));`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(out.trim(), 'PGR_TIMEOUT');
  });
});

describe('TimeoutPolicy: a statement cancelled at its deadline', () => {
  const start = (graceMs: number, hook: CancelHook | undefined) => {
    const { fake, clock } = fakeClock();
    const t = new TimeoutPolicy(100, 'db:5432/app', clock, graceMs);
    const cancels: StatementCancelEvent[] = [];
    t.onCancel((e) => cancels.push(e));
    const late = deferred<string>();
    let signal: AbortSignal | undefined;
    const box: { value?: unknown; error?: unknown } = {};
    t.execute(
      (s) => {
        signal = s;
        return late.promise;
      },
      'query',
      undefined,
      hook,
    ).then(
      (v) => (box.value = v),
      (e) => (box.error = e),
    );
    return { fake, late, box, cancels, signal: () => signal };
  };

  it("waits for the hook's outcome, not fn's late answer, and reports it", async () => {
    const answer = deferred<CancelOutcome>();
    const calls: [OperationTimeoutError, number][] = [];
    const { fake, late, box, cancels, signal } = start(500, (timeout, graceMs) => {
      calls.push([timeout, graceMs]);
      return answer.promise;
    });
    fake.tick(100);
    await flush();
    assert.equal(calls.length, 1);
    assert.equal(calls[0]![1], 500);
    assert.equal(signal()!.aborted, true, 'the attempt knows its deadline passed');
    late.resolve('late value'); // fn's own answer: the hook decides instead
    await flush();
    assert.deepEqual(box, {});
    const notRun = new OperationTimeoutError('db:5432/app', 'query', 100, { outcome: 'not_run' });
    answer.resolve({ result: 'cancelled', ok: false, error: notRun });
    await flush();
    assert.equal(box.error, notRun);
    assert.deepEqual(cancels, [{ target: 'db:5432/app', operation: 'query', result: 'cancelled' }]);
  });

  it('a completed statement resolves with its value', async () => {
    const { fake, box, cancels } = start(500, () =>
      Promise.resolve({ result: 'completed', ok: true, value: 7 }),
    );
    fake.tick(100);
    await flush();
    assert.equal(box.value, 7);
    assert.deepEqual(
      cancels.map((e) => e.result),
      ['completed'],
    );
  });

  it('no cancel: a hook that returns undefined or throws, or a grace of 0, rejects at once', async () => {
    for (const [grace, hook] of [
      [500, () => undefined],
      [
        500,
        () => {
          throw new Error('hook bug');
        },
      ],
      [0, () => Promise.resolve({ result: 'completed', ok: true, value: 1 })],
    ] as [number, CancelHook][]) {
      const { fake, box, cancels } = start(grace, hook);
      fake.tick(100);
      await flush();
      assert.ok(isOperationTimeoutError(box.error));
      assert.equal((box.error as OperationTimeoutError).outcome, 'unknown');
      assert.deepEqual(cancels, []);
    }
  });
});
