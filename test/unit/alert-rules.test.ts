// The alert rules (prometheus/rules/pg-resilience.yml): generated from scripts/alert-rules.ts and up to
// date; accepted by `promtool check rules`; every alert fires in its condition and stays silent on a
// healthy series (`promtool test rules`, the generated pg-resilience.test.yml); every metric they use is
// in the telemetry catalog (or is instrumentation-pg's); every alert has a severity, a summary, a
// description and a runbook_url whose anchor is a section of docs/runbook.md. Debian's `prometheus`
// package provides promtool: missing, these tests fail (CI installs it).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { ALERT_CASES, ALERTS, PG_POOL, THRESHOLDS } from '../../scripts/alert-rules.ts';
import {
  ATTR,
  FAILOVER_BUCKETS_S,
  METRICS,
  prometheusLabel,
  prometheusSeries,
} from '../../src/telemetry/catalog.ts';
import { RUNBOOK_ANCHORS, RUNBOOK_URL } from '../../src/telemetry/runbook.ts';

const root = join(import.meta.dirname, '..', '..');
const rulesDir = join(root, 'prometheus', 'rules');

function promtool(...args: string[]) {
  const res = spawnSync('promtool', args, { cwd: rulesDir, encoding: 'utf8' });
  if (res.error) assert.fail(`promtool is required (apt-get install -y prometheus): ${res.error.message}`);
  return res;
}

interface Rule {
  alert: string;
  expr: string;
  for: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}
const rules = (
  parse(readFileSync(join(rulesDir, 'pg-resilience.yml'), 'utf8')) as { groups: { rules: Rule[] }[] }
).groups.flatMap((g) => g.rules);

/** GitHub-style anchors of the `## ` headings of a Markdown file. */
function anchors(markdown: string): Set<string> {
  return new Set(
    markdown
      .split('\n')
      .filter((l) => l.startsWith('## '))
      .map((l) =>
        l
          .slice(3)
          .trim()
          .toLowerCase()
          .replace(/[^a-z0-9 -]/g, '')
          .replace(/ /g, '-'),
      ),
  );
}

describe('alert rules', () => {
  it('are up to date with scripts/alert-rules.ts (node scripts/gen-alert-rules.ts --check)', () => {
    const res = spawnSync(process.execPath, [join(root, 'scripts', 'gen-alert-rules.ts'), '--check'], {
      cwd: root,
      encoding: 'utf8',
    });
    assert.equal(res.status, 0, `${res.stderr}${res.stdout}`);
  });

  it('promtool check rules accepts them', () => {
    const res = promtool('check', 'rules', 'pg-resilience.yml');
    assert.equal(res.status, 0, res.stdout + res.stderr);
    assert.match(res.stdout, new RegExp(`SUCCESS: ${ALERTS.length} rules found`));
  });

  it('promtool test rules: each alert fires in its condition and is silent on a healthy series', () => {
    const res = promtool('test', 'rules', 'pg-resilience.test.yml');
    assert.equal(res.status, 0, res.stdout + res.stderr);
    assert.deepEqual(
      [...new Set(ALERT_CASES.map((c) => c.alert))].sort(),
      ALERTS.map((a) => a.alert).sort(),
      'a test case for every alert',
    );
    // The named extra cases check a silence (the lean mode's absent series); the others fire.
    for (const c of ALERT_CASES.filter((x) => x.name === undefined)) {
      assert.ok(c.firing.length > 0, `${c.alert}: fires`);
      assert.ok(
        c.series.some((s) => s.series.includes('good')),
        `${c.alert}: has a healthy series that must stay silent`,
      );
    }
  });

  it('the alerts the issue asks for are there, with severity, summary, description and a runbook section', () => {
    const names = rules.map((r) => r.alert);
    for (const name of [
      'PgResilienceBreakerOpen',
      'PgResilienceBreakerFlapping',
      'PgResilienceRetryStorm',
      'PgResilienceRetriesExhausted',
      'PgResilienceRateLimitSaturated',
      'PgResilienceRecoveryFailing',
      'PgResilienceErrorRatioHigh',
      'PgResilienceSlowOperations',
      'PgResiliencePoolUtilisationHigh',
      'PgResilienceClientErrorsSpiking',
      'PgResilienceClientsLeaked',
      'PgResilienceFailoverDetected',
      'PgResilienceWritesUnavailable',
    ]) {
      assert.ok(names.includes(name), `missing alert ${name}`);
    }
    assert.equal(rules.find((r) => r.alert === 'PgResilienceBreakerOpen')?.labels.severity, 'critical');
    const runbook = anchors(readFileSync(join(root, 'docs', 'runbook.md'), 'utf8'));
    for (const r of rules) {
      assert.match(r.labels.severity ?? '', /^(critical|warning)$/, r.alert);
      assert.ok(r.annotations.summary && r.annotations.description, `${r.alert}: summary and description`);
      const url = r.annotations.runbook_url ?? '';
      assert.ok(url.startsWith(`${RUNBOOK_URL}#`), `${r.alert}: runbook_url ${url}`);
      const anchor = url.slice(RUNBOOK_URL.length + 1);
      assert.equal(anchor, RUNBOOK_ANCHORS[r.alert as keyof typeof RUNBOOK_ANCHORS]);
      assert.ok(runbook.has(anchor), `${r.alert}: docs/runbook.md has no section #${anchor}`);
    }
  });

  it('the write-unavailability threshold is a bucket boundary of its histogram (else `le` matches nothing)', () => {
    assert.ok(FAILOVER_BUCKETS_S.includes(THRESHOLDS.writesUnavailableSeconds));
  });

  it('use only metric names from the telemetry catalog (or instrumentation-pg’s pool series)', () => {
    const known = new Set([
      ...Object.values(METRICS).flatMap((m) => prometheusSeries(m)),
      PG_POOL.count,
      PG_POOL.max,
    ]);
    // Label names look like metric names (pg_resilience_target…): set them apart.
    const labels = new Set([...Object.values(ATTR).map(prometheusLabel), PG_POOL.pool, PG_POOL.state]);
    for (const r of rules) {
      const used = (r.expr.match(/\b(?:pg_resilience|db_client)_\w+/g) ?? []).filter((t) => !labels.has(t));
      assert.ok(used.length > 0, `${r.alert}: no metric found in ${r.expr}`);
      for (const name of used) assert.ok(known.has(name), `${r.alert}: unknown metric ${name}`);
    }
  });
});
