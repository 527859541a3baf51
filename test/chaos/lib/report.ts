// The chaos report: Markdown (printed, and written to .tmp/chaos/report.md) and JSON
// (.tmp/chaos/report.json), for both arms.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ArmResult } from './run-arm.ts';
import type { PlannedFault } from './schedule.ts';

export interface RunReport {
  seed: number;
  mode: string;
  durationS: number | null;
  node: string;
  startedAt: string;
  rerun: string;
  schedule: PlannedFault[];
  arms: ArmResult[];
  /** the arms whose breaches fail the test */
  enforced: string[];
}

const s = (ms: number) => (ms / 1000).toFixed(1);
const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export function renderMarkdown(r: RunReport): string {
  const out: string[] = [];
  out.push(`# Chaos report`);
  out.push('');
  out.push(`- seed: **${r.seed}** (re-run: \`${r.rerun}\`)`);
  out.push(
    `- mode: ${r.mode}${r.durationS ? `, ${r.durationS} s of faults` : ''}; Node ${r.node}; started ${r.startedAt}`,
  );
  out.push(`- enforced (a breach fails the test): ${r.enforced.join(', ')}; the bare arm is reported only`);
  for (const a of r.arms) {
    const failed = a.checks.filter((c) => !c.passed).length;
    out.push('');
    out.push(`## Arm \`${a.arm}\` — ${failed === 0 ? 'all checks passed' : `${failed} check(s) breached`}`);
    out.push('');
    out.push(
      `Timeline (s since the arm started): warm-up until ${s(a.timeline.warmupEnd)}, faults ${s(a.timeline.faultsStart)}–${s(a.timeline.faultsEnd)}, ` +
        `recovery target ${s(a.timeline.recoveryTarget)}, settle until ${s(a.timeline.settleEnd)}; total ${s(a.durationMs)} s. App log: \`${a.appLog}\`.`,
    );
    out.push('');
    out.push('### Checks');
    out.push('');
    out.push('| # | check | result | evidence |');
    out.push('| - | ----- | ------ | -------- |');
    for (const c of a.checks) {
      out.push(`| ${c.id} | ${cell(c.name)} | ${c.passed ? 'pass' : '**FAIL**'} | ${cell(c.detail)} |`);
    }
    out.push('');
    out.push('### Faults applied');
    out.push('');
    out.push('| start (s) | end (s) | duration (s) | lane | kind | parameters | effect |');
    out.push('| --------- | ------- | ------------ | ---- | ---- | ---------- | ------ |');
    for (const f of a.faults) {
      const params = Object.entries(f.params)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      out.push(
        `| ${s(f.startedAt)} | ${s(f.endedAt)} | ${s(f.endedAt - f.startedAt)} | ${f.lane} | ${f.kind} | ${cell(params)} | ${cell(f.effect)}${f.error ? ` **error: ${cell(f.error)}**` : ''} |`,
      );
    }
    out.push('');
    out.push('### Operations');
    out.push('');
    out.push('| kind | ok | failed | longest (ms) | errors |');
    out.push('| ---- | -- | ------ | ------------ | ------ |');
    for (const [kind, c] of Object.entries(a.counts).sort()) {
      const errors = Object.entries(c.errors)
        .sort((x, y) => y[1] - x[1])
        .map(([code, n]) => `${code} ×${n}`)
        .join(', ');
      out.push(`| ${kind} | ${c.ok} | ${c.failed} | ${c.maxMs} | ${cell(errors || '—')} |`);
    }
    out.push('');
    const mb = (b: number | null) => (b === null ? 'n/a' : `${(b / 1024 / 1024).toFixed(1)} MB`);
    out.push(
      `Process: ${a.crashes.length} unexpected exit(s)${a.crashes.length ? ': ' + a.crashes.map((c) => `at ${s(c.at)} s code ${c.code} signal ${c.signal} ${c.fatals.join('; ') || ''}`).join(' / ') : ''}; ` +
        `graceful stop: ${a.stop ? `exit code ${a.stop.code}${a.stop.signal ? ` signal ${a.stop.signal}` : ''} in ${a.stop.ms} ms` : 'n/a'}. ` +
        `Heap after GC: before ${mb(a.memory.before)}, after ${mb(a.memory.after)}. ` +
        `Notifications: ${a.notifications.received} of ${a.notifications.acknowledged} acknowledged NOTIFYs received. ` +
        `Pool: up to ${a.pool.maxWaiting} callers waiting for a client; last sample ${a.pool.last ? `${a.pool.last.total} clients, ${a.pool.last.idle} idle, ${a.pool.last.waiting} waiting` : 'n/a'}. ` +
        `Every operation: \`${a.dumps.ops}\`; state samples: \`${a.dumps.samples}\`.`,
    );
    if (a.breakers) {
      const fin = (a.breakers.final ?? [])
        .map(
          (b) =>
            `${b.target}: ${b.state}, ${b.retries} retries, ${b.rejections} rejections, ${b.timeouts} timeouts`,
        )
        .join('; ');
      out.push('');
      out.push(
        `Policies: breaker seen open/half-open in ${a.breakers.samplesNotClosed} state samples (${a.breakers.openings} opening(s)); ` +
          `rate-limit queue up to ${a.breakers.maxRateLimitQueue}; at the end: ${fin || 'no target'}.`,
      );
    }
  }
  out.push('');
  return out.join('\n');
}

export function writeReport(dir: string, report: RunReport): { md: string; json: string; markdown: string } {
  mkdirSync(dir, { recursive: true });
  const markdown = renderMarkdown(report);
  const md = join(dir, 'report.md');
  const json = join(dir, 'report.json');
  writeFileSync(md, markdown);
  writeFileSync(json, `${JSON.stringify(report, null, 2)}\n`);
  return { md, json, markdown };
}
