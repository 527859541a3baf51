/**
 * 8. A fleet acts as one: what coordination through a real redis-server costs and delivers.
 * 1. The happy-path cost per call: arm E (a rate limit that never waits) with fleet coordination on
 *    (`PG_RESILIENCE_REDIS_URL` set) and off, two long-lived processes taking turns (bench/lib/turns.ts).
 * 2. Fleet-wide rate accuracy: 4 app processes share one rate limit; the calls served over a window
 *    against the configured rate, and, sampled all along, never above `burst + rate × t`.
 * 3. What one Redis sustains: Redis commands per second (`INFO commandstats` deltas) and Redis CPU with
 *    8, 16 and 32 app processes under load, each holding its leases with the default settings.
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { arms, startSink } from '../lib/arms.ts';
import type { BenchContext, Section, SectionResult, TargetCheck } from '../lib/types.ts';
import { startSliceWorker } from '../lib/worker.ts';
import { roundRatios, takeTurns } from '../lib/turns.ts';
import { fixed as f, median, medianRange as range, ratioSummary } from '../lib/stats.ts';
import { freePort } from '../../test/support/postgres.ts';
import { type RedisServer, startRedis } from '../../test/support/redis.ts';
import { type LoadApp, loadAppReady, startLoadApp, stopLoadApps } from '../../test/support/load-apps.ts';

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
const served = (apps: readonly LoadApp[]) => sum(apps.map((a) => a.stats.ok));
const failed = (apps: readonly LoadApp[]) => sum(apps.flatMap((a) => Object.values(a.stats.errors)));

/** Part 2's fleet-wide limit: 200 calls per second, burst 20, over 4 processes with pools of 20. */
const RATE_PER_MINUTE = 12_000;
const BURST = 20;
const ACCURACY_PROCESSES = 4;
/** A batch per process (its share of 100 ms of the rate): what the stashes may hold when a window opens. */
const STASH_ALLOWANCE = ACCURACY_PROCESSES * Math.ceil(RATE_PER_MINUTE / 600 / ACCURACY_PROCESSES);
/** Part 3's fleet: a limit that binds, a connection budget, small pools so 32 processes fit the server. */
const SUSTAIN_RATE_PER_MINUTE = 30_000;
const SUSTAIN_BURST = 50;
const SUSTAIN_MAX_CONNECTIONS = 150;
/** Processes start in groups this large, each group ready before the next (bounded start-up load). */
const START_GROUP = 2;

interface RedisSample {
  /** Calls of every command, scripts' inner commands included, INFO excluded. */
  readonly commands: number;
  /** EVALSHA + EVAL calls: the scripts the processes ran (one round trip each). */
  readonly scripts: number;
  /** Redis CPU seconds (user + system). */
  readonly cpuS: number;
  readonly at: number;
}

async function sampleRedis(admin: Redis): Promise<RedisSample> {
  const stats = await admin.info('commandstats');
  const cpu = await admin.info('cpu');
  let commands = 0;
  let scripts = 0;
  for (const m of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (m[1] === 'info') continue;
    commands += Number(m[2]);
    if (m[1] === 'evalsha' || m[1] === 'eval') scripts += Number(m[2]);
  }
  const num = (key: string) => Number(new RegExp(`^${key}:([\\d.]+)`, 'm').exec(cpu)?.[1] ?? Number.NaN);
  return { commands, scripts, cpuS: num('used_cpu_user') + num('used_cpu_sys'), at: performance.now() };
}

/** Starts `n` load apps in groups of START_GROUP, each group ready before the next, and sets them going. */
async function startApps(n: number, execArgv: string[], env: Record<string, string>, name: string) {
  const apps: LoadApp[] = [];
  try {
    for (let i = 0; i < n; i += START_GROUP) {
      const group = Array.from({ length: Math.min(START_GROUP, n - i) }, (_, j) =>
        startLoadApp({ execArgv, env: { ...env, LOAD_NAME: `${name}-${i + j}` } }),
      );
      apps.push(...group);
      await Promise.all(group.map(loadAppReady));
    }
  } catch (error) {
    await stopLoadApps(apps);
    throw error;
  }
  for (const app of apps) app.child.send({ type: 'go' });
  return apps;
}

export const section: Section = {
  id: 'fleet',
  title: '8. A fleet acts as one',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const rounds = ctx.quick ? 1 : 10;
    const durationMs = ctx.quick ? 500 : 2_000;
    const warmupMs = ctx.quick ? 300 : 1_500;
    const sliceWarmupMs = ctx.quick ? 100 : 500;
    const windowMs = ctx.quick ? 8_000 : 60_000;
    const rateWarmupMs = ctx.quick ? 1_000 : 3_000;
    const fleetSizes = ctx.quick ? [4, 8] : [8, 16, 32];
    const measureMs = ctx.quick ? 2_000 : 8_000;
    const settleMs = ctx.quick ? 1_500 : 3_000;
    const register = path.join(ctx.root, 'dist', 'esm', 'register.js');
    const pgConfig = JSON.stringify(ctx.server.clientConfig());
    const targets: TargetCheck[] = [];
    const lines: string[] = [];
    const data: Record<string, unknown> = {};

    const redis: RedisServer = await startRedis();
    const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    const sink = await startSink();
    try {
      await admin.connect();

      // 1. The cost of coordination per call, when the limit never waits: both up, taking turns.
      const variant = async (redisUrl?: string) => {
        const e = arms(ctx.root, sink.url, await freePort()).E;
        const env = { ...e.env, PG_RESILIENCE_FLEET: 'bench-cost' };
        return { ...e, env: redisUrl ? { ...env, PG_RESILIENCE_REDIS_URL: redisUrl } : env };
      };
      const load = { urls: [ctx.server.connectionString], concurrency: 16, workload: 'select1' } as const;
      const runs = await takeTurns(
        {
          off: startSliceWorker(ctx.root, await variant(), load),
          on: startSliceWorker(ctx.root, await variant(redis.url), load),
        },
        {
          order: ['off', 'on'],
          rounds,
          warmupMs,
          sliceWarmupMs,
          durationMs,
          log: (v, round, r) =>
            ctx.log(
              `fleet cost round ${round + 1} coordination ${v}: ${r.throughput.toFixed(0)} ops/s, ${f(r.cpuUsPerOp ?? Number.NaN, 1)} CPU µs/op`,
            ),
        },
      );
      for (const v of ['off', 'on'] as const) {
        const failed = runs[v].reduce((n, r) => n + r.errors, 0);
        if (failed > 0) throw new Error(`fleet cost (${v}): ${failed} calls failed`);
      }
      const cost = { off: runs.off.map((r) => r.throughput), on: runs.on.map((r) => r.throughput) };
      const cpu = {
        off: runs.off.map((r) => r.cpuUsPerOp ?? Number.NaN),
        on: runs.on.map((r) => r.cpuUsPerOp ?? Number.NaN),
      };
      const ratios = roundRatios(runs.on, runs.off, (r) => r.throughput);
      const costRatio = median(ratios);
      const cpuRatio = median(roundRatios(runs.on, runs.off, (r) => r.cpuUsPerOp));
      data.cost = { throughput: cost, cpuUsPerOp: cpu, ratios };
      targets.push({
        name: 'coordination on vs off, SELECT 1, c16, a rate limit that never waits',
        target: "on ≥ 0.95× off (throughput, median of the rounds' own ratios)",
        measured: `${ratioSummary(ratios)}; CPU µs/op ×${f(cpuRatio, 3)}`,
        met: ctx.quick ? null : costRatio >= 0.95,
      });
      lines.push(
        `**Cost per call.** Arm E (C with a rate limit of 6 000 000/min, burst 100 000: it never waits), \`SELECT 1\` at 16 callers, coordination off and on (\`PG_RESILIENCE_REDIS_URL\`): one long-lived process each, taking turns as in section 1 (${rounds} round(s) of one ${durationMs / 1000} s slice each, after ${sliceWarmupMs / 1000} s unmeasured, the order reversed every round); median (min–max) ops/s, and the median of the rounds' own ratios.`,
        '',
        '| coordination | ops/s | ÷ off, per round | CPU µs/op | ÷ off, per round |',
        '| --- | ---: | ---: | ---: | ---: |',
        `| off | ${range(cost.off)} | 1.00 | ${f(median(cpu.off), 1)} | 1.00 |`,
        `| on | ${range(cost.on)} | ${f(costRatio)} | ${f(median(cpu.on), 1)} | ${f(cpuRatio)} |`,
        '',
      );

      // 2. Fleet-wide rate accuracy.
      const rateApps = await startApps(
        ACCURACY_PROCESSES,
        ['--import', register],
        {
          LOAD_PG: pgConfig,
          LOAD_POOL_MAX: '20',
          PG_RESILIENCE_RATE_LIMIT: String(RATE_PER_MINUTE),
          PG_RESILIENCE_RATE_LIMIT_BURST: String(BURST),
          PG_RESILIENCE_FLEET: 'bench-rate',
          PG_RESILIENCE_REDIS_URL: redis.url,
        },
        'bench-rate',
      );
      const perMs = RATE_PER_MINUTE / 60_000;
      // Served against burst + rate × t, sampled every 100 ms: within the window (the target), and from
      // the start (a process waits for its first batch from Redis, up to the coordination timeout).
      let worstExcess = Number.NEGATIVE_INFINITY;
      let startupExcess = Number.NEGATIVE_INFINITY;
      let windowServed = 0;
      let windowErrors = 0;
      try {
        const goAt = performance.now();
        const deadline = goAt + rateWarmupMs + windowMs;
        let start: { ok: number; at: number } | undefined;
        while (performance.now() < deadline) {
          await sleep(100);
          const now = performance.now();
          const ok = served(rateApps);
          startupExcess = Math.max(startupExcess, ok - (BURST + perMs * (now - goAt)));
          if (start) worstExcess = Math.max(worstExcess, ok - start.ok - (BURST + perMs * (now - start.at)));
          else if (now - goAt >= rateWarmupMs) start = { ok, at: now };
        }
        windowServed = served(rateApps) - (start?.ok ?? 0);
        const actualWindowMs = performance.now() - (start?.at ?? goAt);
        windowErrors = failed(rateApps);
        const expected = perMs * actualWindowMs;
        const deviation = (windowServed - expected) / expected;
        data.rate = {
          windowServed,
          expected,
          actualWindowMs,
          worstExcess,
          startupExcess,
          errors: windowErrors,
        };
        ctx.log(
          `fleet rate: ${windowServed} calls in ${actualWindowMs.toFixed(0)} ms, expected ${expected.toFixed(0)}; worst excess over burst + rate×t ${worstExcess.toFixed(1)} in the window, ${startupExcess.toFixed(1)} from the start`,
        );
        targets.push(
          {
            name: `fleet-wide rate, ${ACCURACY_PROCESSES} processes, ${windowMs / 1000} s window${ctx.quick ? ' (quick: shorter than the 60 s of a full run)' : ''}`,
            target: 'within ±3 % of the configured rate',
            measured: `${windowServed} calls for ${f(expected, 0)} expected (${deviation >= 0 ? '+' : ''}${f(100 * deviation)} %)`,
            met: ctx.quick ? null : Math.abs(deviation) <= 0.03 && windowErrors === 0,
          },
          {
            name: `fleet-wide bound, ${ACCURACY_PROCESSES} processes, sampled every 100 ms from their start`,
            target: 'served since the start never above burst + rate × t',
            measured: `worst: ${f(Math.abs(startupExcess), 1)} calls ${startupExcess > 0 ? 'above' : 'below'} the bound`,
            met: startupExcess <= 0,
          },
          {
            name: `fleet-wide bound within the window, sampled every 100 ms`,
            target: `served in any prefix of the window never above burst + rate × t + what the stashes held at its start (a batch per process: ${STASH_ALLOWANCE})`,
            measured: `worst: ${f(Math.abs(worstExcess), 1)} calls ${worstExcess > 0 ? 'above' : 'below'} burst + rate × t`,
            met: worstExcess <= STASH_ALLOWANCE,
          },
        );
        lines.push(
          `**Rate accuracy.** ${ACCURACY_PROCESSES} processes (the built package's register hook, a pg.Pool of 20 and 20 workers each running \`SELECT 1\` in a loop), one fleet-wide limit of ${RATE_PER_MINUTE}/min (${perMs * 1000}/s), burst ${BURST}; after ${rateWarmupMs / 1000} s, a ${windowMs / 1000} s window${ctx.quick ? ' (quick mode; a full run uses 60 s)' : ''}: ${windowServed} calls served for ${f(expected, 0)} expected (${f(100 * deviation)} %), ${windowErrors} failed; served since the window's start, sampled every 100 ms, at worst ${f(Math.abs(worstExcess), 1)} calls ${worstExcess > 0 ? 'above' : 'below'} \`burst + rate × t\`; counted from the moment the processes start, ${f(Math.abs(startupExcess), 1)} ${startupExcess > 0 ? 'above' : 'below'} (until Redis first answers, for at most the coordination timeout, a process grants nothing locally: it waits for its first batch).`,
          '',
        );
      } finally {
        await stopLoadApps(rateApps);
      }

      // 3. What one Redis sustains: a fleet grown in steps, Redis's counters over a window at each size.
      const sustainEnv = {
        LOAD_PG: pgConfig,
        LOAD_POOL_MAX: '1',
        PG_RESILIENCE_RATE_LIMIT: String(SUSTAIN_RATE_PER_MINUTE),
        PG_RESILIENCE_RATE_LIMIT_BURST: String(SUSTAIN_BURST),
        PG_RESILIENCE_MAX_CONNECTIONS: String(SUSTAIN_MAX_CONNECTIONS),
        PG_RESILIENCE_FLEET: 'bench-sustain',
        PG_RESILIENCE_REDIS_URL: redis.url,
      };
      const fleet: LoadApp[] = [];
      let notReached: string | undefined;
      const sustain: {
        processes: number;
        commandsPerS: number;
        scriptsPerS: number;
        callsPerS: number;
        redisCpu: number;
      }[] = [];
      try {
        for (const size of fleetSizes) {
          try {
            fleet.push(
              ...(await startApps(size - fleet.length, ['--import', register], sustainEnv, 'bench-sustain')),
            );
          } catch (error) {
            // A machine too loaded to start more processes (each must be ready within 20 s): stop here.
            notReached = `${size} processes not reached: ${(error as Error).message.split('\n')[0]}`;
            ctx.log(`fleet sustain: ${notReached}`);
            break;
          }
          await sleep(settleMs);
          const a = await sampleRedis(admin);
          const okA = served(fleet);
          await sleep(measureMs);
          const b = await sampleRedis(admin);
          const s = (b.at - a.at) / 1000;
          const row = {
            processes: size,
            commandsPerS: (b.commands - a.commands) / s,
            scriptsPerS: (b.scripts - a.scripts) / s,
            callsPerS: (served(fleet) - okA) / s,
            redisCpu: (b.cpuS - a.cpuS) / s,
          };
          sustain.push(row);
          ctx.log(
            `fleet sustain ${size} processes: ${row.commandsPerS.toFixed(0)} Redis commands/s (${row.scriptsPerS.toFixed(0)} scripts/s), ${row.callsPerS.toFixed(0)} calls/s, Redis CPU ${(100 * row.redisCpu).toFixed(1)} %`,
          );
        }
        const errors = failed(fleet);
        if (errors > 0) ctx.log(`fleet sustain: ${errors} calls failed`);
        data.sustain = { rows: sustain, errors, notReached };
      } finally {
        await stopLoadApps(fleet);
      }
      lines.push(
        `**What one Redis sustains.** One target; each process a pg.Pool of 1 with 1 worker running \`SELECT 1\` in a loop; a fleet-wide rate limit of ${SUSTAIN_RATE_PER_MINUTE}/min (burst ${SUSTAIN_BURST}, it binds) and a connection budget of ${SUSTAIN_MAX_CONNECTIONS}; coordination settings at their defaults (lease 5 s). The fleet grows in steps; at each size, after ${settleMs / 1000} s, Redis's \`INFO commandstats\` and \`INFO cpu\` deltas over ${measureMs / 1000} s. Commands include those scripts run inside Redis; scripts are EVALSHA/EVAL calls (one round trip each).`,
        '',
        '| processes | Redis commands/s | per process (per target) | scripts/s | per process | calls served/s | Redis CPU |',
        '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
        ...sustain.map(
          (r) =>
            `| ${r.processes} | ${f(r.commandsPerS, 0)} | ${f(r.commandsPerS / r.processes, 1)} | ${f(r.scriptsPerS, 0)} | ${f(r.scriptsPerS / r.processes, 1)} | ${f(r.callsPerS, 0)} | ${f(100 * r.redisCpu, 1)} % |`,
        ),
        ...(notReached ? ['', `Not measured: ${notReached}.`] : []),
      );
    } finally {
      admin.disconnect();
      await sink.close();
      await redis.stop();
    }
    return { id: 'fleet', title: this.title, markdown: lines.join('\n'), targets, data };
  },
};
