/**
 * The clock the policies read time from and start their timers on. Injectable so tests drive time with
 * a fake clock (`@sinonjs/fake-timers`); production uses `realClock`.
 *
 * Contract: `setTimeout` runs `callback` once after `ms` and returns a handle that `clearTimeout`
 * accepts; timers must never keep the process alive (`realClock` unrefs them).
 */
export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Longest delay Node's setTimeout honours (longer ones fire after 1 ms). */
const MAX_TIMER_DELAY_MS = 2_147_483_647;

/**
 * Refs a timer handle again (no-op for other clocks' handles): for a timer someone is awaiting, where an
 * unref'd one could let the process exit silently with the call pending (no socket may be left to hold it).
 */
export function keepAlive(handle: unknown): void {
  (handle as { ref?: () => void } | null)?.ref?.();
}

/** Wall-clock time and Node timers, unref'd. */
export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout(callback, ms) {
    const timer = setTimeout(callback, Math.min(Math.max(0, ms), MAX_TIMER_DELAY_MS));
    timer.unref();
    return timer;
  },
  clearTimeout(handle) {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};
