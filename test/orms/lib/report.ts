// The matrix's report: per ORM, per scenario, per arm, the share of reads, inserts and transfers that
// succeeded, whether the app crashed or hung, and whether the ledger invariants held. Numbers are
// measurements (they vary run to run with the machine's load), never assertions.
import type { LedgerCheck } from './ledger-db.ts';
import type { AppRun, OpKind } from './run-app.ts';

export type Scenario = 'flaky' | 'kills';

export interface ArmResult {
  run: AppRun;
  ledger: LedgerCheck;
}

export interface OrmResult {
  orm: string;
  transparent?: boolean;
  /** the script run's start-up (spawn → READY) per arm, ms */
  startupMs?: Record<'bare' | 'hooked', number>;
  scenarios: Partial<Record<Scenario, { bare: ArmResult; hooked: ArmResult }>>;
  ms: number;
}

export function share(run: AppRun, kind: OpKind): string {
  const c = run.counts[kind];
  const total = c.ok + c.fail + c.timeout;
  return total === 0 ? '–' : `${Math.round((100 * c.ok) / total)} % (${c.ok}/${total})`;
}

function state(a: ArmResult): string {
  const run = a.run;
  const end = run.crashed
    ? `**crashed** (${run.signal ?? `exit ${run.code}`})`
    : run.hung
      ? '**hung**'
      : 'ok';
  const l = a.ledger;
  const ledger =
    l.missing.length + l.duplicated.length + l.unbalanced.length === 0 && l.totalDrift === 0
      ? 'holds'
      : `**broken** (missing ${l.missing.length}, duplicated ${l.duplicated.length}, drift ${l.totalDrift}, unbalanced ${l.unbalanced.length})`;
  return `${end} | ${ledger}`;
}

function topErrors(run: AppRun): string {
  const top = Object.entries(run.errors)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([code, n]) => `${code} ×${n}`);
  return top.join(', ') || '–';
}

const TITLES: Record<Scenario, string> = {
  flaky: 'Flaky network (40 % of new connections reset, 5 % of server messages followed by a reset)',
  kills: 'Backend kills (pg_terminate_backend ×3) and one server restart',
};

export function renderReport(results: OrmResult[], meta: { durationMs: number; totalMs: number }): string {
  const lines = [
    '# ORM matrix: results',
    '',
    '<!-- Written by test/orms/matrix.test.ts (PG_RESILIENCE_TEST_ORM_RESULTS=test/orms/results.md to refresh this snapshot). -->',
    '',
    `Measured by \`test/orms/matrix.test.ts\` (${new Date().toISOString().slice(0, 10)}, Node ${process.versions.node}):`,
    `each scenario runs the app bare and under \`pg-resilience/register\` side by side for ${meta.durationMs / 1000} s,`,
    '4 workers cycling insert → read → transfer; "run" is from the start signal to exit (workload, then at',
    'most 3 s for ops still pending and 3 s to close). Success shares vary with the machine; the invariants do not.',
    `Whole matrix: ${Math.round(meta.totalMs / 1000)} s.`,
    '',
  ];
  for (const scenario of ['flaky', 'kills'] as const) {
    lines.push(`## ${TITLES[scenario]}`, '');
    lines.push('| ORM | arm | reads | inserts | transfers | end | ledger | most frequent failures | run |');
    lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const r of results) {
      const s = r.scenarios[scenario];
      if (!s) continue;
      for (const arm of ['bare', 'hooked'] as const) {
        const a = s[arm];
        lines.push(
          `| ${r.orm} | ${arm} | ${share(a.run, 'read')} | ${share(a.run, 'insert')} | ${share(a.run, 'transfer')} | ${state(a)} | ${topErrors(a.run)} | ${(a.run.runMs / 1000).toFixed(1)} s |`,
        );
      }
    }
    lines.push('');
  }
  lines.push('## Transparency (fixed script, no faults)', '');
  lines.push(
    '| ORM | same results bare and hooked | start-up bare → hooked | time (all scenarios) |',
    '| --- | --- | --- | --- |',
  );
  for (const r of results) {
    const same = r.transparent === undefined ? '–' : r.transparent ? 'yes' : '**no**';
    const startup = r.startupMs
      ? `${(r.startupMs.bare / 1000).toFixed(1)} s → ${(r.startupMs.hooked / 1000).toFixed(1)} s`
      : '–';
    lines.push(`| ${r.orm} | ${same} | ${startup} | ${Math.round(r.ms / 1000)} s |`);
  }
  lines.push('');
  return lines.join('\n');
}
