/**
 * The panel queries of the committed dashboards (grafana/dashboards/*.json), for tests that check them:
 * test/unit/dashboards.test.ts (names, PromQL syntax) and the end-to-end test that runs them against a
 * real Prometheus.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { OVERVIEW_UID, POSTGRESQL_CLIENT_UID } from './common.ts';

/** Where the generated dashboards are committed (and provisioned from). */
export const DASHBOARDS_DIR = join(import.meta.dirname, '..');

/** The committed dashboard files, by uid (the file is `<uid>.json`). */
export const DASHBOARD_UIDS: readonly string[] = [OVERVIEW_UID, POSTGRESQL_CLIENT_UID];

export interface DashboardQuery {
  /** The dashboard's uid (`pg-resilience-overview`, `postgresql-client`). */
  readonly dashboard: string;
  /** The panel's title. */
  readonly panel: string;
  /** The panel's id and the query's refId (`A`, `B`…): unique within a dashboard. */
  readonly panelId: number;
  readonly refId: string;
  /** The PromQL as committed, Grafana variables (`$__rate_interval`, `$target`…) still in it. */
  readonly expr: string;
  readonly legendFormat: string;
}

interface JsonPanel {
  id?: number;
  type?: string;
  title?: string;
  panels?: JsonPanel[];
  targets?: Array<{ expr?: string; refId?: string; legendFormat?: string }>;
}

/**
 * Every query of every panel of the committed dashboards, read from the JSON files in `dir` (default:
 * grafana/dashboards/), in dashboard then panel order. Rows (and panels nested in collapsed rows) are
 * walked; template-variable queries (`label_values(…)`) are not included.
 *
 * The expressions still hold Grafana's variables: before running one through Prometheus, replace them,
 * e.g. with {@link withVariables}: `$__rate_interval` → a window of at least 4 scrape intervals (`1m`),
 * `$target` → `.*` (every target; it only appears inside `=~"…"` matchers), and `$datasource`/
 * `${datasource}` (datasource refs only, never in an expression, but replaced too for safety).
 *
 * @example
 *   for (const q of dashboardQueries()) await promQuery(withVariables(q.expr));
 */
export function dashboardQueries(dir: string = DASHBOARDS_DIR): DashboardQuery[] {
  const out: DashboardQuery[] = [];
  for (const uid of DASHBOARD_UIDS) {
    const json = JSON.parse(readFileSync(join(dir, `${uid}.json`), 'utf8')) as { panels?: JsonPanel[] };
    const walk = (panels: JsonPanel[] = []): void => {
      for (const p of panels) {
        if (p.type === 'row') {
          walk(p.panels);
          continue;
        }
        for (const t of p.targets ?? []) {
          out.push({
            dashboard: uid,
            panel: p.title ?? '',
            panelId: p.id ?? -1,
            refId: t.refId ?? '',
            expr: t.expr ?? '',
            legendFormat: t.legendFormat ?? '',
          });
        }
      }
    };
    walk(json.panels);
  }
  return out;
}

/**
 * `expr` with the dashboards' variables replaced by concrete values: `$__rate_interval` (default `1m`),
 * `$target` (default `.*`) and `$datasource`/`${datasource}` (default `prometheus`).
 */
export function withVariables(
  expr: string,
  values: { rateInterval?: string; target?: string; datasource?: string } = {},
): string {
  return expr
    .replaceAll('$__rate_interval', values.rateInterval ?? '1m')
    .replaceAll('${target}', values.target ?? '.*')
    .replaceAll('$target', values.target ?? '.*')
    .replaceAll('${datasource}', values.datasource ?? 'prometheus')
    .replaceAll('$datasource', values.datasource ?? 'prometheus');
}
