import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { afterEach, describe, it } from 'node:test';
import { diag } from '@opentelemetry/api';
import type { TargetSnapshot } from '../../src/policy/types.ts';
import {
  HealthTracker,
  type PoolStats,
  scoreTarget,
  SCORE_WEIGHTS,
  type StateSource,
} from '../../src/telemetry/health.ts';
import { fakeClock, T0 } from '../support/clock.ts';
import { captureDiag } from '../support/diag.ts';

// ---- helpers ----

type Mutable<T> = { -readonly [K in keyof T]: T[K] extends object | null ? Mutable<T[K]> : T[K] };
type Snap = Mutable<TargetSnapshot>;

function snap(target = 'db:5432/app'): Snap {
  return {
    target,
    circuit: { enabled: true, state: 'closed', since: T0, nextProbeAt: null, lastFailure: null },
    rateLimit: null,
    bulkhead: null,
    retryBudget: null,
    recovery: null,
    counters: { operations: 0, successes: 0, failures: 0, rejections: 0, retries: 0, timeouts: 0 },
  };
}

/** A source over mutable snapshots and pools; counts snapshot() calls. */
function source(snaps: Snap[] = [snap()], pools: PoolStats[] = []) {
  const src = {
    snaps,
    pools,
    calls: 0,
    snapshot() {
      src.calls++;
      return src.snaps;
    },
    poolsFn() {
      return src.pools;
    },
  };
  const stateSource: StateSource = {
    snapshot: () => src.snapshot(),
    pools: () => src.poolsFn(),
  };
  return { src, stateSource };
}

function setup(snaps?: Snap[], pools?: PoolStats[]) {
  const { fake, clock } = fakeClock();
  const { src, stateSource } = source(snaps, pools);
  const tracker = new HealthTracker(stateSource, clock, { windowMs: 60_000, sampleEveryMs: 5_000 });
  return { fake, clock, src, tracker };
}

const iso = (ms: number) => new Date(ms).toISOString();

afterEach(() => diag.disable());

// ---- scoreTarget ----

describe('scoreTarget', () => {
  const closed = {
    circuit: 'closed',
    failureRatio: 0,
    retryBudgetUsed: null,
    poolUtilisation: null,
  } as const;

  it('uses the documented weights', () => {
    assert.deepEqual(
      { ...SCORE_WEIGHTS },
      { failureRatio: 50, retryBudget: 20, pool: 30, poolThreshold: 0.8, halfOpenCap: 50, degradedBelow: 80 },
    );
  });

  it('is 100 for a closed, quiet target', () => {
    assert.equal(scoreTarget(closed), 100);
    assert.equal(scoreTarget({ ...closed, retryBudgetUsed: 0, poolUtilisation: 0.8 }), 100);
  });

  it('subtracts 50 × failure ratio, 20 × budget used, 30 × pool pressure above 80%', () => {
    assert.equal(scoreTarget({ ...closed, failureRatio: 0.2 }), 90);
    assert.equal(scoreTarget({ ...closed, failureRatio: 1 }), 50);
    assert.equal(scoreTarget({ ...closed, retryBudgetUsed: 0.5 }), 90);
    assert.equal(scoreTarget({ ...closed, retryBudgetUsed: 1 }), 80);
    assert.equal(scoreTarget({ ...closed, poolUtilisation: 0.9 }), 85);
    assert.equal(scoreTarget({ ...closed, poolUtilisation: 1 }), 70);
    assert.equal(scoreTarget({ ...closed, poolUtilisation: 0.5 }), 100);
    // 100 − 12.5 − 10 − 15 = 62.5 → 63
    assert.equal(
      scoreTarget({ ...closed, failureRatio: 0.25, retryBudgetUsed: 0.5, poolUtilisation: 0.9 }),
      63,
    );
    // 100 − 50 − 20 − 30 = 0
    assert.equal(scoreTarget({ ...closed, failureRatio: 1, retryBudgetUsed: 1, poolUtilisation: 1 }), 0);
  });

  it('clamps out-of-range inputs', () => {
    assert.equal(scoreTarget({ ...closed, failureRatio: 3, retryBudgetUsed: -1, poolUtilisation: 2 }), 20);
    assert.equal(scoreTarget({ ...closed, failureRatio: Number.NaN }), 100);
  });

  it('is 0 while the breaker is open, whatever else', () => {
    assert.equal(scoreTarget({ ...closed, circuit: 'open' }), 0);
  });

  it('is capped at 50 while half-open', () => {
    assert.equal(scoreTarget({ ...closed, circuit: 'half_open' }), 50);
    assert.equal(scoreTarget({ ...closed, circuit: 'half_open', failureRatio: 0.6 }), 50);
    assert.equal(scoreTarget({ ...closed, circuit: 'half_open', failureRatio: 1, retryBudgetUsed: 0.5 }), 40);
  });
});

// ---- HealthTracker ----

describe('HealthTracker.health', () => {
  it('is ok / 100 / no reasons when every breaker is closed and nothing failed', () => {
    const { tracker } = setup([snap('a:5432/x'), snap('b:5432/y')]);
    const h = tracker.health();
    assert.equal(h.status, 'ok');
    assert.equal(h.healthy, true);
    assert.equal(h.score, 100);
    assert.deepEqual(h.reasons, []);
    assert.deepEqual(h.targets, [
      {
        target: 'a:5432/x',
        score: 100,
        circuit: 'closed',
        failureRatio: 0,
        retryBudgetUsed: null,
        poolUtilisation: null,
      },
      {
        target: 'b:5432/y',
        score: 100,
        circuit: 'closed',
        failureRatio: 0,
        retryBudgetUsed: null,
        poolUtilisation: null,
      },
    ]);
    assert.equal(h.generatedAt, iso(T0));
    tracker.dispose();
  });

  it('is ok / 100 with no targets', () => {
    const { tracker } = setup([]);
    const h = tracker.health();
    assert.deepEqual(
      { status: h.status, healthy: h.healthy, score: h.score, reasons: h.reasons, targets: h.targets },
      { status: 'ok', healthy: true, score: 100, reasons: [], targets: [] },
    );
    tracker.dispose();
  });

  it('is down / 0 with the reason when a breaker is open', () => {
    const open = snap('db:5432/app');
    const { tracker, fake } = setup([open, snap('other:5432/x')]);
    fake.tick(1_000);
    open.circuit = {
      enabled: true,
      state: 'open',
      since: T0 + 1_000,
      nextProbeAt: T0 + 31_000,
      lastFailure: { errorType: 'ECONNREFUSED', at: T0 + 900 },
    };
    const h = tracker.health();
    assert.equal(h.status, 'down');
    assert.equal(h.healthy, false);
    assert.equal(h.score, 0);
    assert.deepEqual(h.reasons, [
      `breaker open on db:5432/app since ${iso(T0 + 1_000)}; next probe at ${iso(T0 + 31_000)}; ` +
        `last failure ECONNREFUSED at ${iso(T0 + 900)}`,
    ]);
    assert.deepEqual(
      h.targets.map((t) => [t.target, t.score, t.circuit]),
      [
        ['db:5432/app', 0, 'open'],
        ['other:5432/x', 100, 'closed'],
      ],
    );
    tracker.dispose();
  });

  it('lists breaker reasons before penalty reasons', () => {
    const open = snap('z:5432/app');
    open.circuit.state = 'open';
    const { tracker } = setup(
      [open, snap('a:5432/app')],
      [{ target: 'a:5432/app', total: 10, idle: 0, waiting: 1, max: 10 }],
    );
    assert.deepEqual(tracker.health().reasons, [
      `breaker open on z:5432/app since ${iso(T0)}`,
      'pool utilisation 100% on a:5432/app (10 of 10 clients busy, 1 waiting)',
    ]);
    tracker.dispose();
  });

  it('is degraded / 50 with the reason when a breaker is half-open', () => {
    const s = snap();
    s.circuit = {
      enabled: true,
      state: 'half_open',
      since: T0 - 5_000,
      nextProbeAt: null,
      lastFailure: { errorType: 'ETIMEDOUT', at: T0 - 40_000 },
    };
    const { tracker } = setup([s]);
    const h = tracker.health();
    assert.equal(h.status, 'degraded');
    assert.equal(h.healthy, false);
    assert.equal(h.score, 50);
    assert.deepEqual(h.reasons, [
      `breaker half-open on db:5432/app since ${iso(T0 - 5_000)} (probing); last failure ETIMEDOUT at ${iso(T0 - 40_000)}`,
    ]);
    tracker.dispose();
  });

  it('judges the failure ratio over the recent window only, as time advances', () => {
    const s = snap();
    const { tracker, fake } = setup([s]);
    // 0–4 s: 100 operations, 20 failed, 5 rejected.
    fake.tick(4_000);
    Object.assign(s.counters, { operations: 100, successes: 75, failures: 20, rejections: 5 });
    let h = tracker.health();
    assert.equal(h.targets[0]!.failureRatio, 0.25);
    assert.equal(h.score, 88); // 100 − 12.5 = 87.5 → 88
    assert.equal(h.status, 'ok');
    assert.equal(h.healthy, true);
    assert.deepEqual(h.reasons, [
      'recent failure ratio 25% on db:5432/app (25 of 100 operations failed or were rejected in the last 60 s)',
    ]);
    assert.deepEqual(tracker.state().targets[0]!.recent, {
      windowMs: 60_000,
      from: T0,
      operations: 100,
      failures: 20,
      rejections: 5,
      retries: 0,
      failureRatio: 0.25,
    });

    // 4–64 s: 100 more operations, all successful. The window [4 s, 64 s] starts at the 5 s sample,
    // which already saw the first batch: only the second batch counts.
    fake.tick(60_000);
    Object.assign(s.counters, { operations: 200, successes: 175 });
    h = tracker.health();
    assert.equal(h.targets[0]!.failureRatio, 0);
    assert.equal(h.score, 100);
    assert.deepEqual(h.reasons, []);
    assert.deepEqual(tracker.state().targets[0]!.recent, {
      windowMs: 60_000,
      from: T0 + 5_000,
      operations: 100,
      failures: 0,
      rejections: 0,
      retries: 0,
      failureRatio: 0,
    });

    // 64–70 s: 100 operations, all failed. The window [10 s, 70 s] starts at the 10 s sample
    // (100 operations, 25 failed or rejected): 100 of 200 recent operations failed.
    fake.tick(6_000);
    Object.assign(s.counters, { operations: 300, failures: 120 });
    h = tracker.health();
    assert.equal(h.targets[0]!.failureRatio, 0.5);
    assert.equal(h.score, 75);
    assert.equal(h.status, 'degraded');
    assert.equal(h.healthy, true);
    assert.equal(tracker.state().targets[0]!.recent.from, T0 + 10_000);
    tracker.dispose();
  });

  it('falls back to the counters since start for a target that has no sample yet, or was reset', () => {
    const s = snap();
    const { tracker, src, fake } = setup([]);
    fake.tick(2_000);
    Object.assign(s.counters, { operations: 10, failures: 5 });
    src.snaps = [s];
    let recent = tracker.state().targets[0]!.recent;
    assert.equal(recent.from, null);
    assert.equal(recent.failureRatio, 0.5);

    fake.tick(3_000); // sampled at 5 s: {10, 5}
    Object.assign(s.counters, { operations: 2, failures: 1 }); // policies re-created
    recent = tracker.state().targets[0]!.recent;
    assert.deepEqual([recent.from, recent.operations, recent.failures], [null, 2, 1]);
    tracker.dispose();
  });

  it('sums the pool stats of every pool of a target', () => {
    const { tracker } = setup(
      [snap()],
      [
        { target: 'db:5432/app', total: 10, idle: 1, waiting: 2, max: 10 },
        { target: 'db:5432/app', total: 9, idle: 0, waiting: 1, max: 10 },
        { target: 'elsewhere:5432/x', total: 5, idle: 0, waiting: 9, max: 5 },
      ],
    );
    const t = tracker.state().targets;
    assert.equal(t.length, 1);
    assert.deepEqual(t[0]!.pool, { clients: 19, idle: 1, waiting: 3, max: 20, utilisation: 0.9 });
    const h = tracker.health();
    assert.equal(h.targets[0]!.poolUtilisation, 0.9);
    assert.equal(h.score, 85);
    assert.equal(h.status, 'ok');
    assert.deepEqual(h.reasons, ['pool utilisation 90% on db:5432/app (18 of 20 clients busy, 3 waiting)']);
    tracker.dispose();
  });

  it('reports a full pool as 100% and a pool of max 0 as 0%', () => {
    const { tracker, src } = setup(
      [snap()],
      [{ target: 'db:5432/app', total: 4, idle: 0, waiting: 7, max: 4 }],
    );
    assert.equal(tracker.health().score, 70);
    src.pools = [{ target: 'db:5432/app', total: 0, idle: 0, waiting: 0, max: 0 }];
    assert.equal(tracker.state().targets[0]!.pool!.utilisation, 0);
    tracker.dispose();
  });

  it('estimates the retry budget used from recent retries and the remaining retries', () => {
    const s = snap();
    s.retryBudget = { remaining: 10 };
    const { tracker, fake } = setup([s]);
    assert.equal(tracker.health().targets[0]!.retryBudgetUsed, 0);
    fake.tick(1_000);
    Object.assign(s.counters, { operations: 20, successes: 20, retries: 3 });
    s.retryBudget = { remaining: 1 };
    const h = tracker.health();
    assert.equal(h.targets[0]!.retryBudgetUsed, 0.75);
    assert.equal(h.score, 85);
    assert.deepEqual(h.reasons, ['retry budget 75% used on db:5432/app (1 retries left)']);
    s.retryBudget = { remaining: 0 };
    assert.equal(tracker.health().targets[0]!.retryBudgetUsed, 1);
    assert.equal(tracker.health().score, 80);
    tracker.dispose();
  });

  it('uses the allowance the policies report in the snapshot', () => {
    const s = snap();
    s.retryBudget = { remaining: 5, allowance: 10 };
    const { tracker } = setup([s]);
    const h = tracker.health();
    assert.equal(h.targets[0]!.retryBudgetUsed, 0.5);
    assert.equal(h.score, 90);
    tracker.dispose();
  });

  it('combines the penalties', () => {
    const s = snap();
    s.retryBudget = { remaining: 0 };
    Object.assign(s.counters, { operations: 10, failures: 4, retries: 2 });
    const fresh = setup([], [{ target: 'db:5432/app', total: 10, idle: 0, waiting: 0, max: 10 }]);
    fresh.src.snaps = [s];
    const h2 = fresh.tracker.health();
    // No sample yet: counters since start. Budget spent (0 left) → used 1.
    // 100 − 50 × 0.4 − 20 × 1 − 30 × 1 = 30
    assert.equal(h2.score, 30);
    assert.equal(h2.status, 'degraded');
    assert.deepEqual(h2.reasons, [
      'recent failure ratio 40% on db:5432/app (4 of 10 operations failed or were rejected since the target started)',
      'retry budget 100% used on db:5432/app (0 retries left)',
      'pool utilisation 100% on db:5432/app (10 of 10 clients busy, 0 waiting)',
    ]);
    fresh.tracker.dispose();
  });
});

describe('HealthTracker.state', () => {
  it('returns the snapshot, ISO times, pool and recent counters, sorted by target, as JSON', () => {
    const a = snap('b:5432/y');
    a.circuit = {
      enabled: true,
      state: 'open',
      since: T0,
      nextProbeAt: T0 + 30_000,
      lastFailure: { errorType: 'ECONNREFUSED', at: T0 - 10 },
    };
    a.rateLimit = { tokens: 3, queueSize: 1 };
    a.retryBudget = { remaining: 4 };
    a.recovery = { nextAttemptAt: T0 + 1_000 };
    const { tracker } = setup([a, snap('a:5432/x')]);
    const state = JSON.parse(JSON.stringify(tracker.state()));
    assert.equal(state.generatedAt, iso(T0));
    assert.deepEqual(
      state.targets.map((t: { target: string }) => t.target),
      ['a:5432/x', 'b:5432/y'],
    );
    assert.deepEqual(state.targets[1], {
      target: 'b:5432/y',
      circuit: {
        enabled: true,
        state: 'open',
        since: T0,
        sinceIso: iso(T0),
        nextProbeAt: T0 + 30_000,
        nextProbeAtIso: iso(T0 + 30_000),
        lastFailure: { errorType: 'ECONNREFUSED', at: T0 - 10, atIso: iso(T0 - 10) },
      },
      rateLimit: { tokens: 3, queueSize: 1 },
      bulkhead: null,
      retryBudget: { remaining: 4 },
      recovery: { nextAttemptAt: T0 + 1_000 },
      counters: { operations: 0, successes: 0, failures: 0, rejections: 0, retries: 0, timeouts: 0 },
      pool: null,
      recent: {
        windowMs: 60_000,
        from: T0,
        operations: 0,
        failures: 0,
        rejections: 0,
        retries: 0,
        failureRatio: 0,
      },
    });
    tracker.dispose();
  });
});

describe('HealthTracker sampling', () => {
  it('samples once at start and then every sampleEveryMs on one timer; dispose stops it', () => {
    const { tracker, fake, src } = setup();
    assert.equal(src.calls, 1);
    assert.equal(fake.countTimers(), 1);
    fake.tick(5_000);
    assert.equal(src.calls, 2);
    fake.tick(10_000);
    assert.equal(src.calls, 4);
    assert.equal(fake.countTimers(), 1);
    tracker.dispose();
    assert.equal(fake.countTimers(), 0);
    fake.tick(60_000);
    assert.equal(src.calls, 4);
    // Still answers after dispose.
    assert.equal(tracker.health().score, 100);
  });

  it('keeps at most one window of samples', () => {
    const s = snap();
    const { tracker, fake } = setup([s]);
    fake.tick(600_000);
    Object.assign(s.counters, { operations: 1, failures: 1 });
    // The baseline is a sample from the last minute (counters 0): 1 of 1 failed.
    const recent = tracker.state().targets[0]!.recent;
    assert.equal(recent.from, T0 + 540_000);
    assert.equal(recent.failureRatio, 1);
    tracker.dispose();
  });

  it('never throws when the source fails while sampling; reports once through diag', () => {
    const errors = captureDiag();
    const { clock, fake } = fakeClock();
    const tracker = new HealthTracker(
      {
        snapshot: () => {
          throw new Error('boom');
        },
        pools: () => [],
      },
      clock,
    );
    fake.tick(20_000);
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]![0]), /health sampling failed/);
    assert.equal(fake.countTimers(), 1);
    tracker.dispose();
  });

  it('with the real clock, a tracker never disposed does not hold the process open', () => {
    // A child that creates a tracker and never disposes it must exit by itself (the sampling timer is unref'd).
    const source = new URL('../../src/telemetry/health.ts', import.meta.url).href;
    const started = Date.now();
    const child = spawnSync(
      process.execPath,
      [
        '--disable-warning=ExperimentalWarning',
        '--input-type=module',
        '-e',
        `const { HealthTracker } = await import(${JSON.stringify(source)});
         new HealthTracker({ snapshot: () => [], pools: () => [], sampleEveryMs: 50 });
         console.log('created');`,
      ],
      { encoding: 'utf8', timeout: 10_000 },
    );
    assert.equal(child.signal, null, `killed after ${Date.now() - started} ms: the timer held the process`);
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), 'created');
  });
});
