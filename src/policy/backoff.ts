/**
 * Backoff between retries: cockatiel's `ExponentialBackoff`, configured from a `RetryTiming`.
 *
 * - `decorrelated` (default): cockatiel's `decorrelatedJitterGenerator` (Polly's DecorrelatedJitterV2),
 *   which honours the exponent (our `multiplier`).
 * - `full` and `none`: our own generators with the same shape as cockatiel's `fullJitterGenerator` /
 *   `noJitterGenerator`. cockatiel 4.0's versions compute `initialDelay * 2 ** attempt` and ignore
 *   `exponent`, so a configured `multiplier` other than 2 would silently be dropped.
 *
 * Every generator's output goes through `clamp`, so a delay is always a finite number in
 * [0, maxDelayMs] whatever the settings (`0 * Infinity` is NaN in the raw formulas once the
 * exponential overflows; an overflow becomes `maxDelayMs`).
 *
 * Backoffs are immutable: `factory.next()` gives the first delay, `backoff.next()` the following one.
 * The retry policy builds one factory per error class up front and only walks it when a retry happens.
 */
import {
  decorrelatedJitterGenerator,
  ExponentialBackoff,
  type GeneratorFn,
  type IBackoffFactory,
  type IExponentialBackoffOptions,
} from 'cockatiel';
import type { Jitter, RetryTiming } from '../config/types.ts';

export type { IBackoff, IBackoffFactory } from 'cockatiel';

/** A delay in [0, maxDelay], finite. An overflowed or NaN formula becomes maxDelay (0 when initialDelay is 0). */
function clamp(
  delay: number,
  options: Pick<IExponentialBackoffOptions<unknown>, 'maxDelay' | 'initialDelay'>,
): number {
  const max = Math.max(options.maxDelay, 0);
  if (delay >= 0) return Math.min(delay, max); // false for NaN
  if (Number.isNaN(delay)) return options.initialDelay > 0 ? max : 0;
  return 0;
}

/** initialDelay × exponent^attempt, capped; the state is the attempt number (0-based). */
const exponentNoJitterGenerator: GeneratorFn<number> = (attempt = 0, options) => [
  clamp(options.initialDelay * options.exponent ** attempt, options),
  attempt + 1,
];

/** A uniformly random delay in [0, initialDelay × exponent^attempt), capped. */
const exponentFullJitterGenerator: GeneratorFn<number> = (attempt = 0, options) => [
  clamp(
    Math.floor(Math.random() * clamp(options.initialDelay * options.exponent ** attempt, options)),
    options,
  ),
  attempt + 1,
];

const decorrelated: GeneratorFn<[number, number]> = (state, options) => {
  const [delay, next] = decorrelatedJitterGenerator(state, options);
  return [clamp(delay, options), next];
};

const GENERATORS: Record<Jitter, GeneratorFn<unknown>> = {
  decorrelated: decorrelated as GeneratorFn<unknown>,
  full: exponentFullJitterGenerator as GeneratorFn<unknown>,
  none: exponentNoJitterGenerator as GeneratorFn<unknown>,
};

/**
 * The backoff for these timings. `next()` on the returned factory gives the delay before the first
 * retry; each `IBackoff.next()` the delay before the following one.
 */
export function createBackoff(timing: Omit<RetryTiming, 'maxAttempts'>): IBackoffFactory<unknown> {
  const generator = GENERATORS[timing.jitter] ?? GENERATORS.decorrelated;
  return new ExponentialBackoff<unknown>({
    generator,
    initialDelay: Math.max(0, timing.initialDelayMs),
    maxDelay: Math.max(0, timing.maxDelayMs),
    exponent: timing.multiplier,
  });
}
