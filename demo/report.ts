/**
 * What the demo reports per scenario: the app's own view of its calls (the stats it sends) and the
 * package's view (its /metrics, read at the start and end of the scenario: the difference is what the
 * scenario caused). Metric names come from the telemetry catalog.
 */
import { ATTR, METRICS, prometheusLabel, prometheusName } from '../src/telemetry/catalog.ts';
import { type Sample, sum } from '../test/support/prometheus-text.ts';
import type { KindStats, Verification, WorkKind } from './protocol.ts';
import type { ScenarioFacts, ScenarioName } from './scenarios.ts';

/** Accumulates the app's stats over one scenario. */
export class ScenarioStats {
  readonly kinds = new Map<WorkKind, { ok: number; failed: number; errors: Map<string, number> }>();
  readonly latencies: number[] = [];
  /** Latencies of the shop's workload only (not spike or slow calls), for p50/p95. */
  add(kinds: Partial<Record<WorkKind, KindStats>>): void {
    for (const [kind, s] of Object.entries(kinds) as [WorkKind, KindStats][]) {
      let k = this.kinds.get(kind);
      if (k === undefined) this.kinds.set(kind, (k = { ok: 0, failed: 0, errors: new Map() }));
      k.ok += s.ok;
      k.failed += s.failed;
      for (const [code, n] of Object.entries(s.errors)) k.errors.set(code, (k.errors.get(code) ?? 0) + n);
      if (SHOP_KINDS.includes(kind)) for (const ms of s.latenciesMs) this.latencies.push(ms);
    }
  }

  total(filter: (kind: WorkKind) => boolean = () => true): { ok: number; failed: number } {
    let ok = 0;
    let failed = 0;
    for (const [kind, k] of this.kinds) {
      if (!filter(kind)) continue;
      ok += k.ok;
      failed += k.failed;
    }
    return { ok, failed };
  }

  errors(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const k of this.kinds.values()) for (const [code, n] of k.errors) out[code] = (out[code] ?? 0) + n;
    return out;
  }
}

const SHOP_KINDS: readonly WorkKind[] = ['read', 'upsert', 'insert', 'transaction', 'cursor'];
/** Safe to repeat: what retries must keep succeeding. */
const IDEMPOTENT_KINDS: readonly WorkKind[] = ['read', 'upsert'];

export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Math.round(sorted[i]! * 10) / 10;
}

export interface ScenarioResult {
  readonly name: ScenarioName;
  readonly purpose: string;
  readonly durationMs: number;
  readonly operations: number;
  readonly succeeded: number;
  /** 0..100, one decimal. */
  readonly successPct: number | null;
  /** Reads and idempotent upserts only. */
  readonly idempotentSuccessPct: number | null;
  readonly p50Ms: number | null;
  readonly p95Ms: number | null;
  readonly byKind: Record<string, { ok: number; failed: number; errors: Record<string, number> }>;
  readonly errors: Record<string, number>;
  readonly retries: number;
  readonly retriesByErrorType: Record<string, number>;
  readonly suppressed: Record<string, number>;
  readonly transitions: Record<string, number>;
  readonly fastFailed: number;
  readonly rateLimit: { readonly waits: number; readonly rejections: Record<string, number> };
  readonly recoveryAttempts: { readonly success: number; readonly failure: number };
  readonly absorbedClientErrors: number;
  /** Failovers the package detected (pg_resilience.failovers), by kind of first sign. */
  readonly failovers: Record<string, number>;
  readonly ledger: Verification | null;
  readonly facts: ScenarioFacts;
  /** Every invariant held (ledger exact, the app alive). */
  readonly ok: boolean;
}

const L = prometheusLabel;

/** Sums of a counter by one label, as the difference between two scrapes. */
function deltaBy(before: readonly Sample[], after: readonly Sample[], metric: string, label: string) {
  const out: Record<string, number> = {};
  const keys = new Set(after.filter((s) => s.name === metric).map((s) => s.labels[label] ?? ''));
  for (const key of keys) {
    if (key === '') continue;
    const d = sum(after, metric, { [label]: key }) - sum(before, metric, { [label]: key });
    if (d > 0) out[key] = d;
  }
  return out;
}

const delta = (before: readonly Sample[], after: readonly Sample[], metric: string, labels = {}) =>
  sum(after, metric, labels) - sum(before, metric, labels);

export function scenarioResult(input: {
  name: ScenarioName;
  purpose: string;
  durationMs: number;
  stats: ScenarioStats;
  before: readonly Sample[];
  after: readonly Sample[];
  ledger: Verification | null;
  facts: ScenarioFacts;
  appAlive: boolean;
}): ScenarioResult {
  const { stats, before, after } = input;
  const all = stats.total();
  const idem = stats.total((k) => IDEMPOTENT_KINDS.includes(k));
  const pct = (t: { ok: number; failed: number }) =>
    t.ok + t.failed === 0 ? null : Math.round((1000 * t.ok) / (t.ok + t.failed)) / 10;
  const transitions: Record<string, number> = {};
  const tName = prometheusName(METRICS.circuitTransitions);
  for (const s of after.filter((x) => x.name === tName)) {
    const from = s.labels[L(ATTR.FROM)];
    const to = s.labels[L(ATTR.TO)];
    if (!from || !to) continue;
    const key = `${from}->${to}`;
    if (transitions[key] !== undefined) continue;
    const d = delta(before, after, tName, { [L(ATTR.FROM)]: from, [L(ATTR.TO)]: to });
    if (d > 0) transitions[key] = d;
  }
  const byKind: ScenarioResult['byKind'] = {};
  for (const [kind, k] of stats.kinds) {
    byKind[kind] = { ok: k.ok, failed: k.failed, errors: Object.fromEntries(k.errors) };
  }
  const errors = stats.errors();
  const ledgerOk = input.ledger === null || input.ledger.ok;
  return {
    name: input.name,
    purpose: input.purpose,
    durationMs: input.durationMs,
    operations: all.ok + all.failed,
    succeeded: all.ok,
    successPct: pct(all),
    idempotentSuccessPct: pct(idem),
    p50Ms: percentile(stats.latencies, 50),
    p95Ms: percentile(stats.latencies, 95),
    byKind,
    errors,
    retries: delta(before, after, prometheusName(METRICS.retries)),
    retriesByErrorType: deltaBy(before, after, prometheusName(METRICS.retries), L(ATTR.ERROR_TYPE)),
    suppressed: deltaBy(before, after, prometheusName(METRICS.retrySuppressed), L(ATTR.REASON)),
    transitions,
    fastFailed: errors.PGR_CIRCUIT_OPEN ?? 0,
    rateLimit: {
      waits: delta(before, after, `${prometheusName(METRICS.rateLimitWaitDuration)}_count`),
      rejections: deltaBy(before, after, prometheusName(METRICS.rateLimitRejections), L(ATTR.REASON)),
    },
    recoveryAttempts: {
      success: delta(before, after, prometheusName(METRICS.recoveryAttempts), {
        [L(ATTR.OUTCOME)]: 'success',
      }),
      failure: delta(before, after, prometheusName(METRICS.recoveryAttempts), {
        [L(ATTR.OUTCOME)]: 'failure',
      }),
    },
    absorbedClientErrors: delta(before, after, prometheusName(METRICS.poolClientErrors)),
    failovers: deltaBy(before, after, prometheusName(METRICS.failovers), L(ATTR.KIND)),
    ledger: input.ledger,
    facts: input.facts,
    ok: ledgerOk && input.appAlive,
  };
}

const fmt = (v: number | null, suffix = ''): string => (v === null ? '—' : `${v}${suffix}`);

/** The summary table, one row per scenario. */
export function summaryTable(results: readonly ScenarioResult[]): string {
  const head = [
    'scenario',
    'ops',
    'ok %',
    'idem ok %',
    'p50 ms',
    'p95 ms',
    'retries',
    'suppressed',
    'breaker',
    'rl waits',
    'rl drops',
    'probes',
    'writes back',
    'ledger',
  ];
  const rows = results.map((r) => [
    r.name,
    String(r.operations),
    fmt(r.successPct),
    fmt(r.idempotentSuccessPct),
    fmt(r.p50Ms),
    fmt(r.p95Ms),
    String(r.retries),
    String(Object.values(r.suppressed).reduce((a, b) => a + b, 0)),
    Object.keys(r.transitions).length === 0
      ? '—'
      : Object.entries(r.transitions)
          .map(([k, n]) => `${k.replace('->', '→')}×${n}`)
          .join(' '),
    String(r.rateLimit.waits),
    String(Object.values(r.rateLimit.rejections).reduce((a, b) => a + b, 0)),
    r.recoveryAttempts.success + r.recoveryAttempts.failure === 0
      ? '0'
      : `${r.recoveryAttempts.success + r.recoveryAttempts.failure} (${r.recoveryAttempts.failure} failed)`,
    // failover: from the promotion to the first successful write (an upper bound).
    r.facts.failoverErrors === undefined
      ? '—'
      : r.facts.writeGapMs === undefined
        ? 'never'
        : `≤ ${r.facts.writeGapMs} ms`,
    r.ledger === null
      ? '—'
      : r.ledger.ok
        ? `${r.ledger.acknowledged} exactly once`
        : `BROKEN (${r.ledger.missing} missing, ${r.ledger.duplicated} duplicated)`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
