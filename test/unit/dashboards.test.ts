// The Grafana dashboards (grafana/dashboards/*.json) are generated from grafana/dashboards/src/ by
// scripts/gen-dashboards.ts. This keeps the committed JSON up to date, its metric names those of the
// catalog (or instrumentation-pg's), every catalog metric on a panel, every panel documented and linked to
// the runbook, and every query valid PromQL (checked by promtool).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { stringify } from 'yaml';
import { PG_CLIENT_SERIES } from '../../grafana/dashboards/src/instrumentation-pg.ts';
import {
  DASHBOARD_UIDS,
  DASHBOARDS_DIR,
  type DashboardQuery,
  dashboardQueries,
  withVariables,
} from '../../grafana/dashboards/src/queries.ts';
import { METRICS, type MetricSpec, prometheusName, prometheusSeries } from '../../src/telemetry/catalog.ts';
import { RUNBOOK_ANCHORS, RUNBOOK_URL } from '../../src/telemetry/runbook.ts';

const root = join(import.meta.dirname, '..', '..');
const metrics = Object.values(METRICS) as MetricSpec[];
const CATALOG_SERIES = new Set(metrics.flatMap(prometheusSeries));
const KNOWN_SERIES = new Set([...CATALOG_SERIES, ...PG_CLIENT_SERIES]);
const ANCHORS = new Set<string>(Object.values(RUNBOOK_ANCHORS));

interface JsonPanel {
  id?: number;
  type?: string;
  title?: string;
  description?: string;
  datasource?: { type?: string; uid?: string };
  fieldConfig?: { defaults?: { unit?: string } };
  options?: { legend?: { showLegend?: boolean } };
  links?: Array<{ url?: string; title?: string }>;
  targets?: Array<{ expr?: string; refId?: string; legendFormat?: string; datasource?: { uid?: string } }>;
  panels?: JsonPanel[];
}
interface JsonDashboard {
  uid?: string;
  panels?: JsonPanel[];
  templating?: {
    list?: Array<{
      name?: string;
      type?: string;
      query?: unknown;
      multi?: boolean;
      includeAll?: boolean;
      allValue?: string;
    }>;
  };
}

function committed(uid: string): JsonDashboard {
  return JSON.parse(readFileSync(join(DASHBOARDS_DIR, `${uid}.json`), 'utf8')) as JsonDashboard;
}

/** Every panel of a dashboard but the rows (panels inside collapsed rows included). */
function panelsOf(dashboard: JsonDashboard): JsonPanel[] {
  const out: JsonPanel[] = [];
  const walk = (panels: JsonPanel[] = []) => {
    for (const p of panels) {
      if (p.type === 'row') walk(p.panels);
      else out.push(p);
    }
  };
  walk(dashboard.panels);
  return out;
}

const GROUPING = /\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g;
const OPERATORS = new Set([
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
]);

/**
 * The metric names a PromQL expression selects: identifiers left once strings, label matchers, range
 * windows, grouping label lists and numbers are removed, that are neither a function call nor an operator.
 */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(GROUPING, ' ')
    .replace(/(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:e[+-]?\d+)?/gi, ' ');
  const names: string[] = [];
  for (const m of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const rest = stripped.slice(m.index + m[0].length).trimStart();
    if (rest.startsWith('(') || OPERATORS.has(m[0])) continue;
    names.push(m[0]);
  }
  return names;
}

function runCheck() {
  const [major, minor] = process.versions.node.split('.').map(Number);
  const flags =
    major === 22 && minor! < 18
      ? ['--experimental-strip-types', '--disable-warning=ExperimentalWarning']
      : [];
  return spawnSync(process.execPath, [...flags, join(root, 'scripts', 'gen-dashboards.ts'), '--check'], {
    cwd: root,
    encoding: 'utf8',
  });
}

/** `promtool check rules` on a rule file recording each expression; throws if promtool is missing. */
function promtoolCheck(exprs: ReadonlyArray<[record: string, expr: string]>) {
  const dir = mkdtempSync(join(tmpdir(), 'pg-resilience-dashboards-'));
  try {
    const file = join(dir, 'rules.yml');
    writeFileSync(
      file,
      stringify({
        groups: [{ name: 'dashboards', rules: exprs.map(([record, expr]) => ({ record, expr })) }],
      }),
    );
    const res = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
    if (res.error) {
      throw new Error(
        `promtool is needed to check the dashboards' PromQL (Debian: apt-get install prometheus): ${res.error.message}`,
      );
    }
    return res;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const queries = dashboardQueries();

describe('grafana dashboards', () => {
  it('are up to date with their sources (node scripts/gen-dashboards.ts --check)', () => {
    const res = runCheck();
    assert.equal(res.status, 0, `${res.stderr}${res.stdout}`);
    assert.match(res.stdout, /up to date/);
  });

  it('dashboardQueries() returns every query of every panel of both dashboards', () => {
    assert.deepEqual([...DASHBOARD_UIDS].sort(), ['pg-resilience-overview', 'postgresql-client']);
    for (const uid of DASHBOARD_UIDS) {
      const panels = panelsOf(committed(uid));
      assert.ok(panels.length > 0, uid);
      const expected = panels.flatMap((p) => (p.targets ?? []).map((t) => `${p.id}/${t.refId}: ${t.expr}`));
      const got = queries.filter((q) => q.dashboard === uid).map((q) => `${q.panelId}/${q.refId}: ${q.expr}`);
      assert.deepEqual(got, expected, uid);
    }
  });

  it('the metric-name extractor finds the selected series and nothing else', () => {
    assert.deepEqual(
      metricNames(
        'histogram_quantile(0.95, sum by (a, le) (rate(foo_bucket{x=~"$target", y="bar"}[$__rate_interval]))) / on (a) group_left bar_total or 1e3 * baz unless max without (le) (qux) > bool 0.5',
      ),
      ['foo_bucket', 'bar_total', 'baz', 'qux'],
    );
  });

  it('query only catalog series or instrumentation-pg’s known series', () => {
    for (const q of queries) {
      const names = metricNames(q.expr);
      assert.ok(names.length > 0, `${q.dashboard} / ${q.panel}: no metric in ${q.expr}`);
      for (const name of names) {
        assert.ok(KNOWN_SERIES.has(name), `${q.dashboard} / ${q.panel}: unknown series ${name} in ${q.expr}`);
      }
    }
    // The overview shows only ours.
    for (const q of queries.filter((q) => q.dashboard === 'pg-resilience-overview')) {
      for (const name of metricNames(q.expr)) assert.ok(CATALOG_SERIES.has(name), `${q.panel}: ${name}`);
    }
  });

  it('show every catalog metric on at least one panel', () => {
    const used = new Set(queries.flatMap((q) => metricNames(q.expr)));
    const missing = metrics.filter((m) => !prometheusSeries(m).some((s) => used.has(s))).map(prometheusName);
    assert.deepEqual(missing, [], `catalog metrics on no panel: ${missing.join(', ')}`);
  });

  for (const uid of DASHBOARD_UIDS) {
    it(`${uid}: every panel has a unit, a description, legends, the datasource variable and a runbook link`, () => {
      const dashboard = committed(uid);
      assert.equal(dashboard.uid, uid);
      const ids = (dashboard.panels ?? []).map((p) => p.id);
      assert.ok(
        ids.every((id) => typeof id === 'number'),
        'every panel (rows included) has an id',
      );
      assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');

      for (const p of panelsOf(dashboard)) {
        const where = `${uid} / ${p.title}`;
        assert.ok(p.fieldConfig?.defaults?.unit, `${where}: no unit`);
        assert.ok(p.description?.trim(), `${where}: no description`);
        assert.equal(p.datasource?.uid, '${datasource}', `${where}: panel datasource`);
        if (p.options?.legend) assert.equal(p.options.legend.showLegend, true, `${where}: legend hidden`);
        const targets = p.targets ?? [];
        assert.ok(targets.length > 0, `${where}: no query`);
        const refIds = targets.map((t) => t.refId);
        assert.ok(
          refIds.every((r) => typeof r === 'string' && r.length > 0),
          `${where}: a query has no refId`,
        );
        assert.equal(new Set(refIds).size, refIds.length, `${where}: duplicate refId`);
        for (const t of targets) {
          assert.ok(t.legendFormat?.trim(), `${where} ${t.refId}: no legendFormat`);
          assert.equal(t.datasource?.uid, '${datasource}', `${where} ${t.refId}: query datasource`);
          for (const window of t.expr?.match(/\[[^\]]*\]/g) ?? []) {
            assert.equal(window, '[$__rate_interval]', `${where} ${t.refId}: rate window ${window}`);
          }
        }
        const runbook = (p.links ?? []).filter((l) => l.url?.startsWith(`${RUNBOOK_URL}#`));
        assert.ok(runbook.length > 0, `${where}: no runbook link`);
        for (const link of runbook) {
          const anchor = link.url!.slice(RUNBOOK_URL.length + 1);
          assert.ok(ANCHORS.has(anchor), `${where}: runbook anchor #${anchor} is not in RUNBOOK_ANCHORS`);
        }
      }

      const variables = dashboard.templating?.list ?? [];
      const datasource = variables.find((v) => v.name === 'datasource');
      assert.equal(datasource?.type, 'datasource');
      assert.equal(datasource?.query, 'prometheus');
      const target = variables.find((v) => v.name === 'target');
      assert.equal(target?.type, 'query');
      assert.equal(target?.multi, true);
      assert.equal(target?.includeAll, true);
      assert.equal(target?.allValue, '.*');
    });
  }

  it('the overview’s target variable lists the targets of pg_resilience_circuit_state', () => {
    const target = committed('pg-resilience-overview').templating?.list?.find((v) => v.name === 'target');
    assert.equal(
      target?.query,
      `label_values(${prometheusName(METRICS.circuitState)}, pg_resilience_target)`,
    );
  });

  it('queries are valid PromQL (promtool check rules), once the Grafana variables are replaced', () => {
    const exprs = queries.map((q: DashboardQuery): [string, string] => {
      const expr = withVariables(q.expr, { rateInterval: '1m', target: '.*', datasource: 'prometheus' });
      assert.doesNotMatch(expr, /\$/, `${q.dashboard} / ${q.panel}: a variable is left in ${expr}`);
      return [`dashboard:${q.dashboard.replace(/-/g, '_')}:panel_${q.panelId}_${q.refId}`, expr];
    });
    const res = promtoolCheck(exprs);
    assert.equal(res.status, 0, `${res.stdout}${res.stderr}`);
    assert.match(res.stdout, new RegExp(`SUCCESS: ${exprs.length} rules found`));
  });

  it('promtool does reject an invalid query (the check above can fail)', () => {
    const res = promtoolCheck([['dashboard:broken', 'sum by (a (rate(x[1m]))']]);
    assert.notEqual(res.status, 0, res.stdout);
  });
});
