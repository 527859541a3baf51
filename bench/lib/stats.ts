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
