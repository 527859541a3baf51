/**
 * 7. New paths: what this round's paths cost and buy, each beside its baseline from the same run. Worker
 * processes (bench/workers/new-paths.ts), bare pg or pg-resilience's instrumentation from the sources
 * with a given configuration; for the throughput ratios one long-lived process per arm taking turns in
 * slices (bench/lib/turns.ts), medians over the rounds reported with their spread (min–max).
 */
import { startReplicaPair } from '../../test/support/replication.ts';
import { arms } from '../lib/arms.ts';
import type { BenchContext, Section, SectionResult, TargetCheck } from '../lib/types.ts';
import { runWorker, startSlices, startWorker } from '../lib/worker.ts';
import { roundRatios, takeTurns } from '../lib/turns.ts';
import { fixed as f, median, percentile as pct, ratioSummary } from '../lib/stats.ts';

interface Arm {
  readonly label: string;
  /** null: bare pg */
  readonly config: object | null;
}
type Workload = 'tx' | 'select' | 'substitute' | 'timeout';
interface Sample {
  cut: boolean;
  ms: number;
  ok: boolean;
  code?: string;
}
interface TimeoutSample {
  pastDeadlineMs: number;
  code: string;
  stillActive: boolean;
}

// One attempt and no breaker for the timeout samples: a timed-out read without the cancel has an
// unknown outcome, which the retry rules may re-run and the breaker counts.
const NO_RETRY = { retry: { enabled: false }, circuitBreaker: { enabled: false } };
const QUERY_MS = 100;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const section: Section = {
  id: 'new-paths',
  title: '7. New paths',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const quick = ctx.quick;
    const bare = arms(ctx.root, '', 0).A;
    const url = ctx.server.connectionString;
    const work = <T>(workload: Workload, config: object | null, calls: number, maxMs: number) =>
      runWorker<T>(ctx.root, bare, 'new-paths.ts', {
        BENCH_JOB: JSON.stringify({ url, workload, calls, maxMs, queryMs: QUERY_MS }),
        ...(config ? { BENCH_CONFIG: JSON.stringify(config) } : {}),
      });
    /** A failover writer (the worker's `failover` job): it writes until `stop()` closes its stdin. */
    const failoverWriter = (writerUrl: string, config: object | null) =>
      startWorker<{ acks: number[]; errors: Record<string, number> }>(ctx.root, bare, 'new-paths.ts', {
        BENCH_JOB: JSON.stringify({ url: writerUrl, workload: 'failover', calls: 0, maxMs: 60_000 }),
        ...(config ? { BENCH_CONFIG: JSON.stringify(config) } : {}),
      });
    const targets: TargetCheck[] = [];
    const lines: string[] = [];
    const data: Record<string, unknown> = {};

    // 1. Substitute connections.
    const subCalls = quick ? 3 : 20;
    const sub: Record<string, Sample[]> = {};
    for (const a of [
      { id: 'A', label: 'bare pg', config: null },
      { id: 'R', label: 'pg-resilience (defaults)', config: {} },
    ]) {
      sub[a.id] = (await work<{ samples: Sample[] }>('substitute', a.config, subCalls, 20_000)).samples;
      ctx.log(`new-paths substitute ${a.id}: ${sub[a.id]!.length} samples`);
    }
    data.substitute = sub;
    const row = (label: string, xs: Sample[]) => {
      const ok = xs.filter((s) => s.ok);
      const codes = [...new Set(xs.filter((s) => !s.ok).map((s) => s.code))].join(', ') || '—';
      return `| ${label} | ${xs.length} | ${ok.length}/${xs.length} | ${f(
        pct(
          ok.map((s) => s.ms),
          50,
        ),
        1,
      )} | ${f(
        pct(
          ok.map((s) => s.ms),
          99,
        ),
        1,
      )} | ${codes} |`;
    };
    const cutR = sub.R!.filter((s) => s.cut);
    lines.push(
      '**Substitute connection: a read whose pooled connection is terminated under it**',
      '',
      `A client checked out of a \`pg.Pool\` runs a plain read that keeps the server busy for tens of ms (a count over a 1500 × 1500 cross join of \`bench_items\`, classified read-only by its text, not marked); for a "cut" read an admin connection runs \`pg_terminate_backend\` on its backend 15 ms after the read started. ${subCalls} reads of each kind per arm, alternating; latency from the read's start to its answer (the substitute runs the whole read again on a new connection).`,
      '',
      '| read | count | answered | p50 ms | p99 ms | errors |',
      '| --- | ---: | ---: | ---: | ---: | --- |',
      row(
        'normal read, pg-resilience',
        sub.R!.filter((s) => !s.cut),
      ),
      row('cut read, pg-resilience (substitute)', cutR),
      row(
        'normal read, bare pg',
        sub.A!.filter((s) => !s.cut),
      ),
      row(
        'cut read, bare pg',
        sub.A!.filter((s) => s.cut),
      ),
      '',
    );
    targets.push({
      name: 'substitute connection',
      target: 'every read whose pooled connection died under it is answered',
      measured: `${cutR.filter((s) => s.ok).length}/${cutR.length} answered (bare pg: ${sub.A!.filter((s) => s.cut && s.ok).length}/${sub.A!.filter((s) => s.cut).length})`,
      met: cutR.length > 0 && cutR.every((s) => s.ok),
    });

    // 2 and 3. Happy-path ratios, arms rotated each round.
    const ratioCases: Array<{
      key: string;
      workload: 'tx' | 'select';
      title: string;
      arms: Arm[];
      target: string;
    }> = [
      {
        key: 'outcome',
        workload: 'tx',
        title: 'Outcome resolution: withTransaction (INSERT + UPDATE), one after another, pool of one',
        arms: [
          {
            label: 'without resolution (transaction.outcomeResolutionMs 0)',
            config: { transaction: { outcomeResolutionMs: 0 } },
          },
          { label: 'with resolution (default: the id learned before COMMIT)', config: {} },
          { label: 'bare pg (BEGIN … COMMIT by hand)', config: null },
        ],
        target:
          'one statement per transaction: the time resolution adds per transaction ≤ one `SELECT 1` through the same stack (medians over rounds)',
      },
      {
        key: 'cancel',
        workload: 'select',
        title: 'Statement cancel armed: `SELECT 1`, one after another, pool of one',
        arms: [
          { label: 'timeout.queryMs 0 (default: not armed)', config: {} },
          {
            label: 'timeout.queryMs 5000, cancel armed (default grace)',
            config: { timeout: { queryMs: 5000 } },
          },
          { label: 'bare pg', config: null },
        ],
        target: 'armed ≥ 0.97× not armed (median over rounds)',
      },
    ];
    const sliceRounds = quick ? 1 : 8;
    const turns = {
      rounds: sliceRounds,
      warmupMs: quick ? 300 : 1_500,
      sliceWarmupMs: quick ? 100 : 500,
      durationMs: quick ? 500 : 2_000,
    };
    // Per slice at most 100,000 calls. maxMs bounds only the one-shot workloads: a slice worker ends when
    // takeTurns closes its stdin.
    const slices = (workload: 'tx' | 'select', config: object | null) =>
      startSlices<{ calls: number; throughput: number; cpuUsPerCall: number | null }>(
        ctx.root,
        bare,
        'new-paths.ts',
        {
          BENCH_JOB: JSON.stringify({ url, workload, calls: 100_000, maxMs: 600_000 }),
          ...(config ? { BENCH_CONFIG: JSON.stringify(config) } : {}),
        },
      );
    /** Per case: each arm's throughput per round, and the per-round ratio of arm 1 to arm 0. */
    const measured: Record<string, { tp: number[][]; ratios: number[] }> = {};
    for (const c of ratioCases) {
      const keys = c.arms.map((_, i) => String(i));
      const workers = Object.fromEntries(keys.map((k, i) => [k, slices(c.workload, c.arms[i]!.config)]));
      const runs = await takeTurns(workers, {
        ...turns,
        order: keys,
        log: (k, round, r) =>
          ctx.log(`new-paths ${c.key} round ${round + 1} arm ${k}: ${r.throughput.toFixed(0)}/s`),
      });
      const tp = keys.map((k) => runs[k]!.map((r) => r.throughput));
      measured[c.key] = { tp, ratios: roundRatios(tp[1]!, tp[0]!, (x) => x) };
    }
    for (const c of ratioCases) {
      const { tp, ratios } = measured[c.key]!;
      const meds = tp.map(median);
      const ratio = median(ratios);
      data[c.key] = { arms: c.arms.map((a, i) => ({ label: a.label, throughput: tp[i] })), ratios };
      ctx.log(`new-paths ${c.key}: ratio ${f(ratio, 3)}`);
      lines.push(
        `**${c.title}**`,
        '',
        `| arm | per s (median) | min–max | ÷ first row |`,
        '| --- | ---: | ---: | ---: |',
        ...c.arms.map(
          (a, i) =>
            `| ${a.label} | ${f(meds[i]!, 0)} | ${f(Math.min(...tp[i]!), 0)}–${f(Math.max(...tp[i]!), 0)} | ${f(meds[i]! / meds[0]!, 3)} |`,
        ),
        '',
        `Per-round ratio, second row ÷ first: median ${f(ratio, 3)}, min–max ${f(Math.min(...ratios), 3)}–${f(Math.max(...ratios), 3)} over ${sliceRounds} round(s).`,
        '',
      );
      if (c.key === 'cancel') {
        targets.push({
          name: 'statement cancel armed, happy path',
          target: c.target,
          measured: ratioSummary(ratios),
          met: quick ? null : ratio >= 0.97,
        });
        continue;
      }
      // Resolution's cost is one more statement per transaction: the time it adds, per round, against
      // one SELECT 1 through the same stack (the cancel case's first arm, median over its rounds).
      const added = tp[1]!.map((x, i) => 1e6 / x - 1e6 / tp[0]![i]!);
      const oneStatement = 1e6 / median(measured.cancel!.tp[0]!);
      data.outcomeAddedUs = { added, oneStatementUs: oneStatement };
      lines.push(
        `Time added per transaction, per round: median ${f(median(added), 0)} µs (min–max ${f(Math.min(...added), 0)}–${f(Math.max(...added), 0)}); one \`SELECT 1\` through the same stack takes ${f(oneStatement, 0)} µs (the next table's first row).`,
        '',
      );
      targets.push({
        name: 'outcome resolution, happy path',
        target: c.target,
        measured: `${f(median(added), 0)} µs added per transaction (rounds ${f(Math.min(...added), 0)}–${f(Math.max(...added), 0)}) against ${f(oneStatement, 0)} µs per statement; ×${f(ratio, 3)} the transactions per s`,
        met: quick ? null : median(added) <= oneStatement,
      });
    }

    // 3b. The timeout fires.
    const toCalls = quick ? 3 : 6;
    const to: Record<string, TimeoutSample[]> = {};
    for (const a of [
      { id: 'cancel', config: { ...NO_RETRY, timeout: { queryMs: QUERY_MS } } },
      { id: 'noCancel', config: { ...NO_RETRY, timeout: { queryMs: QUERY_MS, cancelGraceMs: 0 } } },
    ]) {
      to[a.id] = (await work<{ samples: TimeoutSample[] }>('timeout', a.config, toCalls, 15_000)).samples;
    }
    data.timeout = to;
    const toRow = (label: string, xs: TimeoutSample[]) =>
      `| ${label} | ${xs.length} | ${xs.map((s) => f(s.pastDeadlineMs, 1)).join(', ')} | ${xs.filter((s) => s.stillActive).length}/${xs.length} | ${[...new Set(xs.map((s) => s.code))].join(', ')} |`;
    lines.push(
      `**A statement times out: \`SELECT pg_sleep(5)\` on a checked-out client, timeout.queryMs ${QUERY_MS}**`,
      '',
      "| arm | samples | ms from the deadline to the caller's error | backend still active when the caller has the error | errors |",
      '| --- | ---: | --- | ---: | --- |',
      toRow('cancel (default grace)', to.cancel!),
      toRow('timeout.cancelGraceMs 0 (no cancel)', to.noCancel!),
      '',
    );
    const cancelled = to.cancel!;
    targets.push({
      name: 'statement timeout cancels the server side',
      target: "every timed-out statement's backend is no longer active when the caller has its error",
      measured: `${cancelled.filter((s) => !s.stillActive).length}/${cancelled.length} cancelled; error ${f(median(cancelled.map((s) => s.pastDeadlineMs)), 1)} ms after the deadline (median)`,
      met: cancelled.length > 0 && cancelled.every((s) => !s.stillActive),
    });

    // 4. Failover: a real primary and a synchronous standby; the primary stops, the standby is promoted.
    const pair = await startReplicaPair();
    let fo: {
      promoteMs: number;
      gapMs: Record<string, number | null>;
      errors: Record<string, Record<string, number>>;
      acks: Record<string, number>;
    };
    try {
      await pair.primary.query('CREATE TABLE bench_writes (key text NOT NULL)');
      const { primary: p, standby: s } = pair;
      const multi = `postgresql://postgres:${p.password}@127.0.0.1:${p.port},127.0.0.1:${s.port}/${p.database}?target_session_attrs=read-write`;
      const single = `postgresql://postgres:${p.password}@127.0.0.1:${p.port}/${p.database}`;
      const writers = {
        R: failoverWriter(multi, {}),
        A: failoverWriter(single, null),
      };
      // bounded: until both writers have written, at most 15 s
      for (let i = 0; i < 300; i++) {
        const r = await p.query<{ n: number }>(
          'SELECT count(DISTINCT split_part(key, $$-$$, 2))::int AS n FROM bench_writes',
        );
        if ((r.rows[0]?.n ?? 0) >= 2) break;
        await sleep(50);
      }
      await sleep(500);
      await p.stop();
      const t0 = Date.now();
      await pair.promote();
      const promotedAt = Date.now();
      await sleep(quick ? 2_000 : 3_000);
      const res = { R: await writers.R.stop(), A: await writers.A.stop() };
      const gap = (acks: number[]) => {
        const first = acks.find((t) => t >= promotedAt);
        return first === undefined ? null : first - promotedAt;
      };
      fo = {
        promoteMs: promotedAt - t0,
        gapMs: { R: gap(res.R.acks), A: gap(res.A.acks) },
        errors: { R: res.R.errors, A: res.A.errors },
        acks: { R: res.R.acks.length, A: res.A.acks.length },
      };
    } finally {
      await pair.close();
    }
    data.failover = fo;
    ctx.log(`new-paths failover: gap R ${fo.gapMs.R} ms, A ${fo.gapMs.A} ms`);
    const gapText = (x: number | null | undefined) =>
      x === null || x === undefined ? 'never (in the run)' : `${x} ms`;
    const errText = (e: Record<string, number> | undefined) =>
      Object.entries(e ?? {})
        .map(([k, n]) => `${k} ×${n}`)
        .join(', ') || '—';
    lines.push(
      '**Failover write gap: the primary stops, the synchronous standby is promoted**',
      '',
      `A real primary and a synchronous standby (test/support/replication.ts) on loopback; two writer processes, each an INSERT every 20 ms (pool of 4): pg-resilience (defaults) on a multi-host target \`host1,host2 … target_session_attrs=read-write\`, and bare pg on the old primary's address alone. The primary is stopped (fast shutdown), then the standby promoted (${fo.promoteMs} ms); the gap is from the promoted standby accepting writes to each writer's first acknowledged write after it; the writers run on for ${quick ? 2 : 3} s.`,
      '',
      '| writer | first write after promotion | writes acknowledged | errors |',
      '| --- | ---: | ---: | --- |',
      `| pg-resilience, multi-host read-write | ${gapText(fo.gapMs.R)} | ${fo.acks.R} | ${errText(fo.errors.R)} |`,
      `| bare pg, the old primary's address | ${gapText(fo.gapMs.A)} | ${fo.acks.A} | ${errText(fo.errors.A)} |`,
      '',
    );
    targets.push({
      name: 'failover write gap',
      target: '≤ 1 s from "new primary accepts writes" to the first successful write',
      measured: `${gapText(fo.gapMs.R)} (bare pg on the old primary: ${gapText(fo.gapMs.A)})`,
      met: fo.gapMs.R !== null && fo.gapMs.R !== undefined && fo.gapMs.R <= 1_000,
    });

    const markdown = [
      `Each measurement is a child process running bare pg or pg-resilience's \`PgResilienceInstrumentation\` (from the sources, created before pg is loaded, telemetry logging off) with the configuration named in the row; the embedded PostgreSQL on loopback. Every loop is bounded in calls and time. For the throughput ratios, one long-lived process per arm, taking turns as in section 1: ${turns.rounds} round(s) of one ${turns.durationMs / 1000} s slice each (after ${turns.sliceWarmupMs / 1000} s unmeasured), the compared arms back to back and the order reversed every round; each round's own ratio, median and spread. Outcome resolution adds one statement (\`SELECT txid_current_if_assigned()\`, one round trip) to each transaction's four, so on loopback, where the round trips are most of a transaction's time, its ratio is expected near 4/5; its target is that it adds no more than that one statement's time.`,
      '',
      ...lines,
    ].join('\n');
    return { id: 'new-paths', title: this.title, markdown, targets, data };
  },
};
