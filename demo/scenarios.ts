/**
 * The demo's scenarios, in order: each has a one-line purpose, a workload for the sample app, and the
 * faults the orchestrator applies while it runs (through the fault proxy and, when the demo owns the
 * server, the server itself). Durations are for the full run; `--quick` shortens them so the whole run
 * stays under a minute.
 */
import type { FaultProxy } from '../test/support/fault-proxy.ts';
import type { ReplicaPair } from '../test/support/replication.ts';
import { APPLICATION_NAME, type Workload } from './protocol.ts';
import type { DemoServer } from './server.ts';

export const SCENARIO_NAMES = [
  'baseline',
  'flaky',
  'outage',
  'spike',
  'kills',
  'stress',
  'failover',
] as const;
export type ScenarioName = (typeof SCENARIO_NAMES)[number];

export interface Proxies {
  readonly main: FaultProxy;
  readonly wait: FaultProxy;
  readonly queue: FaultProxy;
  readonly drop: FaultProxy;
}

/** What a scenario's fault script can use. */
export interface ScenarioContext {
  readonly server: DemoServer;
  readonly proxies: Proxies;
  /** Resolves after `ms`, or at once when the run is being stopped. */
  sleep(ms: number): Promise<void>;
  /** The main target's breaker state as the app's /metrics reports it (undefined if unreadable). */
  breakerState(): Promise<string | undefined>;
  /**
   * The failover scenario's primary and synchronous standby (the shop's pool is on both, multi-host),
   * undefined for the other scenarios.
   */
  readonly pair: ReplicaPair | undefined;
  /** Epoch ms of the latest stats report in which a shop call (read, upsert, insert…) succeeded. */
  lastOkAt(): number;
  /** Epoch ms of the latest stats report in which a write (insert, upsert, transaction) succeeded. */
  lastWriteOkAt(): number;
  /** The errors the app's calls got in this scenario so far, by code. */
  errors(): Record<string, number>;
  /** A line in the live view's event list. */
  event(line: string): void;
  readonly stopping: () => boolean;
}

/** Facts a scenario's script measured, for the summary. */
export interface ScenarioFacts {
  /** outage: from "server accepts connections again" to the main breaker closed, in ms. */
  recoveryMs?: number;
  /**
   * outage: from "server accepts connections again" to the first stats report with a successful call, in
   * ms (the app reports every 250 ms: an upper bound, at most that much late).
   */
  firstSuccessMs?: number;
  /** kills: backends terminated. */
  backendsTerminated?: number;
  /**
   * failover: from the promoted standby accepting writes to the first stats report with a successful
   * write (insert, upsert, transaction), in ms (an upper bound, like `firstSuccessMs`).
   */
  writeGapMs?: number;
  /** failover: the errors that say a server went away or is read-only (25006, 57P01, 57P03) the app got. */
  failoverErrors?: Record<string, number>;
  /** How the fault was applied (e.g. "proxy refuses connections: the server is not ours to stop"). */
  notes: string[];
}

export interface Scenario {
  readonly name: ScenarioName;
  readonly purpose: string;
  /** Run length in ms (full run). */
  readonly durationMs: number;
  /** Run length with --quick. */
  readonly quickMs: number;
  /** Runs on a primary and streaming standby of its own, which only the embedded mode can start. */
  readonly needsReplicaPair?: boolean;
  readonly workload: (base: Workload) => Workload;
  /** Applies the faults during the run; `durationMs` is this run's length. Must undo them before resolving. */
  readonly script: (ctx: ScenarioContext, durationMs: number) => Promise<ScenarioFacts>;
}

/** The normal load: a small shop's traffic. */
export const BASE_WORKLOAD: Workload = {
  rate: 120,
  slowRate: 0,
  slowTimeoutMs: 100,
  spikeRate: 0,
  maxInFlight: 64,
};

/** The errors the app may see while a primary goes away: read-only, admin shutdown, cannot connect now. */
export const FAILOVER_ERROR_CODES = ['25006', '57P01', '57P03'] as const;

/** The rate limits of the spike targets (per minute), configured for the app in cli.ts. */
export const SPIKE_LIMIT_PER_MINUTE = 1200;

const idle = (ctx: ScenarioContext, ms: number) => ctx.sleep(ms).then(() => ({ notes: [] }));

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'baseline',
    purpose: 'Healthy database and network: the policies stay out of the way (expect no retries).',
    durationMs: 15_000,
    quickMs: 4_000,
    workload: (base) => base,
    script: idle,
  },
  {
    name: 'flaky',
    purpose:
      'Flaky network: 20 % of new connections reset, open ones cut now and then, 5 ms ± 5 ms latency; retries absorb it.',
    durationMs: 20_000,
    quickMs: 6_000,
    workload: (base) => base,
    async script(ctx, durationMs) {
      const { main } = ctx.proxies;
      main.setLatency(5, 5);
      main.resetNewConnections(0.2);
      const cuts = Math.max(2, Math.round(durationMs / 2_500));
      const every = durationMs / (cuts + 1);
      for (let i = 0; i < cuts && !ctx.stopping(); i++) {
        await ctx.sleep(every);
        const n = main.resetOpenConnections();
        ctx.event(`flaky: cut ${n} open connections`);
      }
      await ctx.sleep(every);
      main.clear();
      return { notes: [] };
    },
  },
  {
    name: 'outage',
    purpose: 'Outage: the server goes away, the breaker opens and calls fail fast, probes bring it back.',
    durationMs: 25_000,
    quickMs: 10_000,
    workload: (base) => base,
    async script(ctx, durationMs) {
      const notes: string[] = [];
      const downMs = Math.min(10_000, Math.round(durationMs * 0.45));
      await ctx.sleep(Math.round(durationMs * 0.1));
      if (ctx.server.controllable) {
        ctx.event('outage: stopping the server');
        await ctx.server.stop();
      } else {
        notes.push(
          'the server is not the demo’s to stop (--database-url): the proxy refuses connections instead',
        );
        ctx.event('outage: the proxy refuses connections');
        await ctx.proxies.main.refuse(true);
      }
      await ctx.sleep(downMs);
      if (ctx.server.controllable) await ctx.server.start();
      else await ctx.proxies.main.refuse(false);
      const upAt = performance.now();
      const upAtEpoch = Date.now();
      ctx.event('outage: the server accepts connections again');
      let recoveryMs: number | undefined;
      let firstSuccessMs: number | undefined;
      while (!ctx.stopping() && performance.now() - upAt < 30_000) {
        if (recoveryMs === undefined && (await ctx.breakerState()) === 'closed') {
          recoveryMs = Math.round(performance.now() - upAt);
          ctx.event(`outage: breaker closed ${recoveryMs} ms after the server was back`);
        }
        if (firstSuccessMs === undefined && ctx.lastOkAt() > upAtEpoch) {
          firstSuccessMs = Math.round(performance.now() - upAt);
        }
        if (recoveryMs !== undefined && firstSuccessMs !== undefined) break;
        await ctx.sleep(50);
      }
      const rest = durationMs - Math.round(durationMs * 0.1) - downMs - (performance.now() - upAt);
      if (rest > 0) await ctx.sleep(rest);
      const facts: ScenarioFacts = { notes };
      if (recoveryMs !== undefined) facts.recoveryMs = recoveryMs;
      if (firstSuccessMs !== undefined) facts.firstSuccessMs = firstSuccessMs;
      return facts;
    },
  },
  {
    name: 'spike',
    purpose: `Load spike: 5× the configured rate limit (${SPIKE_LIMIT_PER_MINUTE}/min) on three targets, one per strategy: wait, queue, drop.`,
    durationMs: 15_000,
    quickMs: 5_000,
    workload: (base) => ({ ...base, spikeRate: (5 * SPIKE_LIMIT_PER_MINUTE) / 60 }),
    script: idle,
  },
  {
    name: 'kills',
    purpose:
      'Backend kills: pg_terminate_backend on every connection, idle and busy; the app keeps running, the pool refills.',
    durationMs: 15_000,
    quickMs: 5_000,
    workload: (base) => base,
    async script(ctx, durationMs) {
      const rounds = Math.max(2, Math.round(durationMs / 3_000));
      const every = durationMs / (rounds + 1);
      let total = 0;
      for (let i = 0; i < rounds && !ctx.stopping(); i++) {
        await ctx.sleep(every);
        const n = await ctx.server.terminateBackends({ applicationName: APPLICATION_NAME }).catch(() => 0);
        total += n;
        ctx.event(`kills: terminated ${n} backends`);
      }
      await ctx.sleep(every);
      return { backendsTerminated: total, notes: [] };
    },
  },
  {
    name: 'stress',
    purpose: 'Slow queries over a short statement_timeout: 57014 is permanent, never retried.',
    durationMs: 10_000,
    quickMs: 4_000,
    workload: (base) => ({ ...base, slowRate: 20, slowTimeoutMs: 50 }),
    script: idle,
  },
  {
    name: 'failover',
    purpose:
      'Failover: the primary stops, its synchronous standby is promoted; the multi-host pool finds the new primary by itself.',
    durationMs: 20_000,
    quickMs: 7_000,
    needsReplicaPair: true,
    workload: (base) => base,
    async script(ctx, durationMs) {
      const pair = ctx.pair;
      if (pair === undefined) throw new Error('failover: no replica pair');
      const started = performance.now();
      await ctx.sleep(Math.round(durationMs * 0.3));
      if (ctx.stopping()) return { notes: [] };
      ctx.event('failover: stopping the primary');
      await pair.primary.stop();
      ctx.event('failover: promoting the standby');
      await pair.promote();
      const promotedAt = Date.now();
      const promotedPerf = performance.now();
      ctx.event('failover: the new primary accepts writes');
      let writeGapMs: number | undefined;
      while (!ctx.stopping() && performance.now() - promotedPerf < 30_000) {
        // The first report after the promotion with a write in it (polled faster than reports come).
        if (ctx.lastWriteOkAt() > promotedAt) {
          writeGapMs = ctx.lastWriteOkAt() - promotedAt;
          ctx.event(`failover: writes again ≤ ${writeGapMs} ms after the promotion`);
          break;
        }
        await ctx.sleep(50);
      }
      const rest = durationMs - (performance.now() - started);
      if (rest > 0) await ctx.sleep(rest);
      const errors = ctx.errors();
      const facts: ScenarioFacts = {
        notes: [],
        failoverErrors: Object.fromEntries(FAILOVER_ERROR_CODES.map((c) => [c, errors[c] ?? 0])),
      };
      if (writeGapMs !== undefined) facts.writeGapMs = writeGapMs;
      return facts;
    },
  },
];
