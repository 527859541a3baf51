/** Small numeric helpers the benchmark sections share: medians, percentiles, rotated orders, table cells. */

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The p-th percentile (nearest rank below) of `xs`; NaN when empty. */
export const percentile = (xs: readonly number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : Number.NaN;
};

/** The order of `items` in round `round`: rotated by one each round, so machine drift cancels out. */
export const rotated = <T>(items: readonly T[], round: number): T[] =>
  items.map((_, i) => items[(i + round) % items.length]!);

/** A number for a table cell, `d` decimals; '—' when it is not finite. */
export const fixed = (n: number, d = 2): string => (Number.isFinite(n) ? n.toFixed(d) : '—');

/** "median (min–max)" of `xs` for a table cell; the single value when there is one. */
export const medianRange = (xs: readonly number[], d = 0): string =>
  xs.length > 1
    ? `${fixed(median(xs), d)} (${fixed(Math.min(...xs), d)}–${fixed(Math.max(...xs), d)})`
    : fixed(xs[0] ?? Number.NaN, d);

/**
 * A distribution-free interval for the median of `xs` (order statistics: the k-th smallest and largest
 * values, k the largest with P(Binomial(n, ½) < k) ≤ (1 − level)/2), or undefined for too few values
 * (under 6 at 95 %). How far a median of a few noisy rounds can be trusted.
 */
export const medianInterval = (xs: readonly number[], level = 0.95): [number, number] | undefined => {
  const n = xs.length;
  const tail = (1 - level) / 2;
  let k = 0;
  let below = 0; // P(X < k + 1) for X ~ Binomial(n, ½), summed term by term
  let term = 0.5 ** n; // P(X = 0)
  for (let i = 0; i < n; i++) {
    below += term;
    if (below > tail) break;
    k = i + 1;
    term = (term * (n - i)) / (i + 1);
  }
  if (k === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return [s[k - 1]!, s[n - k]!];
};

/** "×median (rounds min–max; 95 % interval of the median lo–hi)" for per-round ratios. */
export const ratioSummary = (xs: readonly number[]): string => {
  if (xs.length < 2) return `×${fixed(xs[0] ?? Number.NaN, 3)}`;
  const ci = medianInterval(xs);
  const interval = ci ? `; 95 % interval of the median ${fixed(ci[0])}–${fixed(ci[1])}` : '';
  return `×${fixed(median(xs), 3)} (rounds ${fixed(Math.min(...xs))}–${fixed(Math.max(...xs))}${interval})`;
};
