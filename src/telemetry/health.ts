/**
 * Health and introspection: `HealthTracker` turns the policies' snapshots (`PolicyRegistry.snapshot()`)
 * and the live pools' stats into the full resilience state (`state()`, what `getResilienceState()` and
 * `GET /resilience/state` return) and a health report with a 0–100 score (`health()`, what
 * `GET /resilience/health` returns). docs/health.md shows both answers and a worked example.
 *
 * Recent history: the tracker samples every target's counters every `sampleEveryMs` (default 5 s) on ONE
 * timer of the injectable clock (`realClock` unrefs it: it never keeps the process alive) and keeps the
 * samples of the last `windowMs` (default 60 s). "Recent" numbers are the counters now minus the oldest
 * sample still inside the window (so they cover between `windowMs - sampleEveryMs` and `windowMs`); a
 * target with no sample yet (or whose counters went backwards: its policies were re-created) is judged
 * on its counters since its start. `dispose()` stops the timer; `state()`/`health()` still answer.
 *
 * Times: every epoch-ms field of the snapshot is kept as a number, and the circuit's times also come as
 * ISO 8601 strings (`sinceIso`, `nextProbeAtIso`, `lastFailure.atIso`), as does `generatedAt`.
 *
 * Health score, per target (integer 0–100):
 *
 *   score = 100 − 50 × failureRatio − 20 × retryBudgetUsed − 30 × poolPressure     (clamped to 0..100)
 *     failureRatio    = (failures + rejections) / operations over the recent window (0 with no operations)
 *     retryBudgetUsed = share of the retry budget's allowance spent (0..1; 0 when the budget is off)
 *     poolPressure    = clamp((poolUtilisation − 0.8) / 0.2, 0, 1), poolUtilisation = (clients − idle) / max
 *   then: breaker open → 0; breaker half_open → at most 50; finally rounded to the nearest integer.
 *
 * Overall score = the lowest target score (100 with no targets). `healthy` = every breaker is closed
 * (the endpoint answers 200, else 503). `status`: `down` when a breaker is open, `degraded` when one is
 * half-open or the overall score is below 80, else `ok`.
 *
 * retryBudgetUsed: used = 1 − remaining / allowance, with the allowance from the snapshot (the policies
 * report it). A snapshot without it (a hand-made source) is estimated as recentRetries / (recentRetries + remaining), with recentRetries counted over this
 * tracker's window (the budget's own window is usually shorter, so the estimate leans pessimistic; it is
 * exactly 1 when the budget is spent and 0 when no retry happened).
 *
 * Reasons: one line per breaker that is not closed (these first), then one per penalty worth at least
 * 1 point. Nothing
 * here carries SQL text, parameter values, passwords or connection strings: targets are `host:port/db`
 * and failures are named by their classification's `errorType` only.
 */
import { diag } from '@opentelemetry/api';
import { type Clock, realClock } from '../policy/clock.ts';
import type { CircuitStateName } from '../policy/events.ts';
import type { TargetSnapshot } from '../policy/types.ts';

/** One live pg pool's stats (pg's `totalCount`, `idleCount`, `waitingCount`, `options.max`). */
export interface PoolStats {
  readonly target: string;
  readonly total: number;
  readonly idle: number;
  readonly waiting: number;
  readonly max: number;
}

export interface StateSource {
  /** Every target's snapshot (PolicyRegistry.snapshot()). */
  snapshot(): readonly TargetSnapshot[];
  /** Stats of the live pg pools, one entry per pool (several pools may share a target). */
  pools(): readonly PoolStats[];
}

export interface HealthTrackerOptions {
  /** Length of the "recent" window, in ms. Default 60 000. */
  readonly windowMs?: number;
  /** How often the counters are sampled, in ms. Default 5 000. */
  readonly sampleEveryMs?: number;
}

/** One target's pool usage, summed over every pool of the target. */
export interface PoolState {
  readonly clients: number;
  readonly idle: number;
  readonly waiting: number;
  readonly max: number;
  /** (clients − idle) / max, 0..1 (0 when max is 0). */
  readonly utilisation: number;
}

/** One target's counters over the recent window. */
export interface RecentState {
  /** The configured window, in ms. */
  readonly windowMs: number;
  /** Epoch ms of the sample the deltas start from; null = since the target's start. */
  readonly from: number | null;
  readonly operations: number;
  readonly failures: number;
  readonly rejections: number;
  readonly retries: number;
  /** (failures + rejections) / operations, 0..1 (0 with no operations). */
  readonly failureRatio: number;
}

export interface TargetState extends Omit<TargetSnapshot, 'circuit'> {
  readonly circuit: Omit<TargetSnapshot['circuit'], 'lastFailure'> & {
    readonly sinceIso: string;
    readonly nextProbeAtIso: string | null;
    readonly lastFailure: { readonly errorType: string; readonly at: number; readonly atIso: string } | null;
  };
  /** null when no live pool uses this target. */
  readonly pool: PoolState | null;
  readonly recent: RecentState;
}

/** The full state (JSON-serialisable). */
export interface ResilienceState {
  /** ISO 8601 time the state was built. */
  readonly generatedAt: string;
  /** Sorted by target. */
  readonly targets: TargetState[];
}

export interface TargetHealth {
  readonly target: string;
  readonly score: number;
  readonly circuit: CircuitStateName;
  readonly failureRatio: number;
  /** 0..1; null when the retry budget is off. */
  readonly retryBudgetUsed: number | null;
  /** 0..1; null when no live pool uses the target. */
  readonly poolUtilisation: number | null;
}

export interface HealthReport {
  readonly generatedAt: string;
  readonly status: 'ok' | 'degraded' | 'down';
  /** Every breaker is closed. */
  readonly healthy: boolean;
  /** 0–100 integer: the lowest target score (100 with no targets). */
  readonly score: number;
  readonly reasons: string[];
  readonly targets: TargetHealth[];
}

/** What `scoreTarget` needs about one target. */
export interface ScoreInput {
  readonly circuit: CircuitStateName;
  /** 0..1 */
  readonly failureRatio: number;
  /** 0..1, or null when the retry budget is off. */
  readonly retryBudgetUsed: number | null;
  /** 0..1, or null when there is no pool. */
  readonly poolUtilisation: number | null;
}

export const SCORE_WEIGHTS = Object.freeze({
  failureRatio: 50,
  retryBudget: 20,
  pool: 30,
  /** Pool utilisation from which the pool penalty starts. */
  poolThreshold: 0.8,
  /** Score cap while a breaker is half-open. */
  halfOpenCap: 50,
  /** Below this overall score a report with every breaker closed is `degraded`. */
  degradedBelow: 80,
});

const clamp01 = (n: number): number => (Number.isFinite(n) ? Math.min(1, Math.max(0, n)) : 0);

/** The three penalties, in points (unrounded). */
function scorePenalties(input: ScoreInput): { failure: number; retryBudget: number; pool: number } {
  const w = SCORE_WEIGHTS;
  const pressure =
    input.poolUtilisation === null
      ? 0
      : clamp01((input.poolUtilisation - w.poolThreshold) / (1 - w.poolThreshold));
  return {
    failure: w.failureRatio * clamp01(input.failureRatio),
    retryBudget: input.retryBudgetUsed === null ? 0 : w.retryBudget * clamp01(input.retryBudgetUsed),
    pool: w.pool * pressure,
  };
}

/** One target's health score, 0–100 integer (formula in the file header). */
export function scoreTarget(input: ScoreInput): number {
  if (input.circuit === 'open') return 0;
  const p = scorePenalties(input);
  let score = Math.min(100, Math.max(0, 100 - p.failure - p.retryBudget - p.pool));
  if (input.circuit === 'half_open') score = Math.min(score, SCORE_WEIGHTS.halfOpenCap);
  return Math.round(score);
}

type Counters = TargetSnapshot['counters'];
interface Sample {
  readonly at: number;
  readonly counters: Counters;
}

const iso = (ms: number): string => {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString();
};
const pct = (n: number): string => `${Math.round(n * 100)}%`;

export class HealthTracker {
  readonly windowMs: number;
  readonly sampleEveryMs: number;
  readonly #source: StateSource;
  readonly #clock: Clock;
  /** Per target, oldest first, all within the window (plus the newest one). */
  readonly #history = new Map<string, Sample[]>();
  #timer: unknown;
  #disposed = false;
  #reported = false;

  constructor(source: StateSource, clock: Clock = realClock, options: HealthTrackerOptions = {}) {
    this.#source = source;
    this.#clock = clock;
    this.windowMs = Math.max(1, options.windowMs ?? 60_000);
    this.sampleEveryMs = Math.max(1, options.sampleEveryMs ?? 5_000);
    this.#tick();
  }

  /** Stops the sampling timer. */
  dispose(): void {
    this.#disposed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Takes a sample now and schedules the next one. Never throws. */
  readonly #tick = (): void => {
    this.#timer = undefined;
    if (this.#disposed) return;
    try {
      this.#sample(this.#source.snapshot(), this.#clock.now());
    } catch (error) {
      if (!this.#reported) {
        this.#reported = true;
        diag.error('pg-resilience: health sampling failed; the app is unaffected (reported once)', error);
      }
    }
    if (!this.#disposed) this.#timer = this.#clock.setTimeout(this.#tick, this.sampleEveryMs);
  };

  #sample(snapshots: readonly TargetSnapshot[], now: number): void {
    const seen = new Set<string>();
    for (const s of snapshots) {
      seen.add(s.target);
      let samples = this.#history.get(s.target);
      if (!samples) this.#history.set(s.target, (samples = []));
      samples.push({ at: now, counters: { ...s.counters } });
      const oldest = now - this.windowMs;
      let drop = 0;
      while (drop < samples.length - 1 && samples[drop]!.at < oldest) drop++;
      if (drop > 0) samples.splice(0, drop);
    }
    for (const target of [...this.#history.keys()]) if (!seen.has(target)) this.#history.delete(target);
  }

  #recent(s: TargetSnapshot, now: number): RecentState {
    const c = s.counters;
    const samples = this.#history.get(s.target);
    const base = samples?.find((x) => x.at >= now - this.windowMs && x.at <= now);
    const reset =
      base !== undefined &&
      (c.operations < base.counters.operations ||
        c.failures < base.counters.failures ||
        c.rejections < base.counters.rejections ||
        c.retries < base.counters.retries);
    const b = base && !reset ? base.counters : undefined;
    const operations = c.operations - (b?.operations ?? 0);
    const failures = c.failures - (b?.failures ?? 0);
    const rejections = c.rejections - (b?.rejections ?? 0);
    const retries = c.retries - (b?.retries ?? 0);
    return {
      windowMs: this.windowMs,
      from: b ? base!.at : null,
      operations,
      failures,
      rejections,
      retries,
      failureRatio: operations > 0 ? clamp01((failures + rejections) / operations) : 0,
    };
  }

  /** The full state of every target (what `getResilienceState()` returns). */
  state(): ResilienceState {
    const now = this.#clock.now();
    const pools = new Map<string, { clients: number; idle: number; waiting: number; max: number }>();
    for (const p of this.#source.pools()) {
      const sum = pools.get(p.target) ?? { clients: 0, idle: 0, waiting: 0, max: 0 };
      sum.clients += p.total;
      sum.idle += p.idle;
      sum.waiting += p.waiting;
      sum.max += p.max;
      pools.set(p.target, sum);
    }
    const targets = [...this.#source.snapshot()]
      .sort((a, b) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0))
      .map((s): TargetState => {
        const pool = pools.get(s.target);
        const lastFailure = s.circuit.lastFailure;
        return {
          ...s,
          circuit: {
            enabled: s.circuit.enabled,
            state: s.circuit.state,
            since: s.circuit.since,
            sinceIso: iso(s.circuit.since),
            nextProbeAt: s.circuit.nextProbeAt,
            nextProbeAtIso: s.circuit.nextProbeAt === null ? null : iso(s.circuit.nextProbeAt),
            lastFailure: lastFailure
              ? { errorType: lastFailure.errorType, at: lastFailure.at, atIso: iso(lastFailure.at) }
              : null,
          },
          pool: pool
            ? { ...pool, utilisation: pool.max > 0 ? clamp01((pool.clients - pool.idle) / pool.max) : 0 }
            : null,
          recent: this.#recent(s, now),
        };
      });
    return { generatedAt: iso(now), targets };
  }

  /** The health report (what `GET /resilience/health` returns). */
  health(): HealthReport {
    const state = this.state();
    const breakerReasons: string[] = [];
    const otherReasons: string[] = [];
    const targets = state.targets.map((t): TargetHealth => {
      const retryBudgetUsed = this.#budgetUsed(t);
      const input: ScoreInput = {
        circuit: t.circuit.state,
        failureRatio: t.recent.failureRatio,
        retryBudgetUsed,
        poolUtilisation: t.pool ? t.pool.utilisation : null,
      };
      const why = this.#reasons(t, input);
      breakerReasons.push(...why.breaker);
      otherReasons.push(...why.other);
      return { target: t.target, score: scoreTarget(input), ...input };
    });
    const healthy = targets.every((t) => t.circuit === 'closed');
    const score = targets.reduce((min, t) => Math.min(min, t.score), 100);
    const status = targets.some((t) => t.circuit === 'open')
      ? 'down'
      : !healthy || score < SCORE_WEIGHTS.degradedBelow
        ? 'degraded'
        : 'ok';
    const reasons = [...breakerReasons, ...otherReasons];
    return { generatedAt: state.generatedAt, status, healthy, score, reasons, targets };
  }

  #budgetUsed(t: TargetState): number | null {
    if (t.retryBudget === null) return null;
    const remaining = t.retryBudget.remaining;
    if (!Number.isFinite(remaining)) return 0;
    const allowance = t.retryBudget.allowance;
    if (typeof allowance === 'number' && Number.isFinite(allowance)) {
      return allowance > 0 ? clamp01(1 - remaining / allowance) : 1;
    }
    const used = t.recent.retries;
    return used + remaining > 0 ? clamp01(used / (used + remaining)) : 1;
  }

  /** Why a target loses points: its breaker (listed first in the report), then its penalties. */
  #reasons(t: TargetState, input: ScoreInput): { breaker: string[]; other: string[] } {
    const breaker: string[] = [];
    const out: string[] = [];
    const c = t.circuit;
    const last = c.lastFailure ? `; last failure ${c.lastFailure.errorType} at ${c.lastFailure.atIso}` : '';
    if (c.state === 'open') {
      const probe = c.nextProbeAtIso ? `; next probe at ${c.nextProbeAtIso}` : '';
      breaker.push(`breaker open on ${t.target} since ${c.sinceIso}${probe}${last}`);
    } else if (c.state === 'half_open') {
      breaker.push(`breaker half-open on ${t.target} since ${c.sinceIso} (probing)${last}`);
    }
    const p = scorePenalties(input);
    const r = t.recent;
    if (p.failure >= 1) {
      out.push(
        `recent failure ratio ${pct(r.failureRatio)} on ${t.target} ` +
          `(${r.failures + r.rejections} of ${r.operations} operations failed or were rejected ${r.from === null ? 'since the target started' : `in the last ${Math.round(r.windowMs / 1000)} s`})`,
      );
    }
    if (p.retryBudget >= 1 && input.retryBudgetUsed !== null && t.retryBudget) {
      out.push(
        `retry budget ${pct(input.retryBudgetUsed)} used on ${t.target} (${t.retryBudget.remaining} retries left)`,
      );
    }
    if (p.pool >= 1 && t.pool) {
      out.push(
        `pool utilisation ${pct(t.pool.utilisation)} on ${t.target} ` +
          `(${t.pool.clients - t.pool.idle} of ${t.pool.max} clients busy, ${t.pool.waiting} waiting)`,
      );
    }
    return { breaker, other: out };
  }
}
