/**
 * Fake time for unit tests: a `@sinonjs/fake-timers` clock and the `Clock` the policies take, driven by
 * it, plus the small promise helpers those tests share.
 */
import assert from 'node:assert/strict';
import FakeTimers from '@sinonjs/fake-timers';
import type { Clock } from '../../src/policy/clock.ts';

/** Epoch ms every fake clock starts at (a fixed, realistic date). */
export const T0 = 1_700_000_000_000;

/** A fake clock at `start`, and the policies' `Clock` adapter over it (fake-timers' `now` is a property). */
export function fakeClock(start = T0, loopLimit?: number) {
  const fake = FakeTimers.createClock(start, loopLimit);
  const clock: Clock = {
    now: () => fake.now,
    setTimeout: (cb, ms) => fake.setTimeout(cb, ms),
    clearTimeout: (h) => fake.clearTimeout(h as FakeTimers.TimerId),
  };
  return { fake, clock };
}

/** Lets every pending promise reaction and I/O callback run. */
export const flush = () => new Promise<void>((r) => setImmediate(r));

/** A promise with its resolve and reject exposed. */
export function deferred<T = unknown>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Runs the fake clock (timer by timer) until `p` settles; returns its value or error. */
export async function settle<T>(
  fake: FakeTimers.Clock,
  p: Promise<T>,
): Promise<{ value?: T; error?: unknown }> {
  let done = false;
  const out: { value?: T; error?: unknown } = {};
  p.then(
    (v) => {
      done = true;
      out.value = v;
    },
    (e) => {
      done = true;
      out.error = e;
    },
  );
  for (let i = 0; i < 1000 && !done; i++) {
    await flush();
    if (!done) fake.next();
  }
  assert.ok(done, 'settled');
  return out;
}
