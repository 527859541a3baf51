/**
 * Workers taking turns: the measurement scheme of the sections that compare arms by throughput. Every
 * worker stays up (slice mode, bench/lib/worker.ts); each round, each runs one measured slice alone, the
 * first round in `order` and every other round reversed, so the workers a ratio compares (put next to
 * each other in `order`) run seconds apart and the machine's drift between rounds cancels out of their
 * ratio.
 */
import type { SliceWorker } from './worker.ts';

export interface TurnsOptions<K extends string, T> {
  /** The slices' order in a round (reversed every other round): compared workers next to each other. */
  readonly order: readonly K[];
  readonly rounds: number;
  /** Unmeasured, once per worker before round 1 (JIT, connections). */
  readonly warmupMs: number;
  /** Unmeasured before every slice (the callers get going again). */
  readonly sliceWarmupMs: number;
  readonly durationMs: number;
  /** A progress line per slice. */
  readonly log?: (key: K, round: number, result: T) => void;
}

/**
 * Runs `rounds` rounds of slices over `workers` and returns each one's slices, in round order. Every
 * worker is stopped at the end, also when a slice fails.
 */
export async function takeTurns<K extends string, T>(
  workers: Readonly<Record<K, SliceWorker<T>>>,
  options: TurnsOptions<K, T>,
): Promise<Record<K, T[]>> {
  const results = Object.fromEntries(options.order.map((k) => [k, [] as T[]])) as Record<K, T[]>;
  try {
    for (const k of options.order)
      await workers[k].slice(options.warmupMs, Math.min(options.durationMs, 500));
    for (let round = 0; round < options.rounds; round++) {
      const order = round % 2 === 0 ? options.order : [...options.order].reverse();
      for (const k of order) {
        const r = await workers[k].slice(options.sliceWarmupMs, options.durationMs);
        results[k].push(r);
        options.log?.(k, round, r);
      }
    }
  } finally {
    await Promise.all(Object.values<SliceWorker<T>>(workers).map((w) => w.stop()));
  }
  return results;
}

/** Each round's own ratio of two workers' slices (`x ÷ y` of `key`). */
export function roundRatios<T>(xs: readonly T[], ys: readonly T[], key: (r: T) => number | null): number[] {
  return xs.map((r, i) => (key(r) ?? Number.NaN) / (key(ys[i]!) ?? Number.NaN));
}
