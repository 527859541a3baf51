/**
 * Fake time for unit tests: a `@sinonjs/fake-timers` clock and the `Clock` the policies take, driven by
 * it, plus the small promise helpers those tests share.
 */
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
