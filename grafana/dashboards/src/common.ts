/**
 * What the dashboards share: the `datasource` and `target` variables, PromQL helpers (every rate window
 * is `$__rate_interval`, every label comes from the catalog or from instrumentation-pg.ts), panel
 * builders that insist on a unit, a description, a legend and a runbook link, and `finalize()`, which
 * numbers the panels and orders the keys so the generated JSON is stable.
 */
import type * as cog from '@grafana/grafana-foundation-sdk/cog';
import {
  BigValueColorMode,
  BigValueGraphMode,
  BigValueTextMode,
  type DataSourceRef,
  GraphThresholdsStyleConfigBuilder,
  GraphThresholdsStyleMode,
  LegendDisplayMode,
  LegendPlacement,
  ReduceDataOptionsBuilder,
  SortOrder,
  StackingConfigBuilder,
  StackingMode,
  TooltipDisplayMode,
  VisibilityMode,
  VizLegendOptionsBuilder,
  VizTooltipOptionsBuilder,
} from '@grafana/grafana-foundation-sdk/common';
import {
  type Dashboard,
  DashboardBuilder,
  DashboardCursorSync,
  type DashboardLink,
  DashboardLinkBuilder,
  DatasourceVariableBuilder,
  type Panel,
  QueryVariableBuilder,
  RowBuilder,
  type RowPanel,
  type ThresholdsConfig,
  ThresholdsConfigBuilder,
  ThresholdsMode,
  type ValueMapping,
  type VariableModel,
  VariableRefresh,
  VariableSort,
} from '@grafana/grafana-foundation-sdk/dashboard';
import { DataqueryBuilder } from '@grafana/grafana-foundation-sdk/prometheus';
import { PanelBuilder as StatPanelBuilder } from '@grafana/grafana-foundation-sdk/stat';
import { PanelBuilder as StateTimelinePanelBuilder } from '@grafana/grafana-foundation-sdk/statetimeline';
import { PanelBuilder as TimeseriesPanelBuilder } from '@grafana/grafana-foundation-sdk/timeseries';
import { type AlertName, RUNBOOK_ANCHORS, RUNBOOK_URL, runbookUrl } from '../../../src/telemetry/runbook.ts';

/** A section of docs/runbook.md. */
export type RunbookAnchor = (typeof RUNBOOK_ANCHORS)[AlertName];

/** Dashboard uids (also their file names, `<uid>.json`, and their URLs, `/d/<uid>`). */
export const OVERVIEW_UID = 'pg-resilience-overview';
export const POSTGRESQL_CLIENT_UID = 'postgresql-client';

/** The provisioned Prometheus datasource (grafana/provisioning/datasources/datasources.yaml). */
export const PROMETHEUS_UID = 'prometheus';

/** Every panel and query reads from the dashboard's `datasource` variable. */
export const DATASOURCE: DataSourceRef = { type: 'prometheus', uid: '${datasource}' };

/** The `datasource` variable: a Prometheus datasource picker, the provisioned one selected. */
export function datasourceVariable(): cog.Builder<VariableModel> {
  return new DatasourceVariableBuilder('datasource')
    .label('Data source')
    .type('prometheus')
    .current({ text: 'Prometheus', value: PROMETHEUS_UID });
}

/**
 * The `target` variable: the values of `label` on `series` (a `host:port/database` string), several at
 * once or All (`.*`, so `=~"$target"` matches every target, including ones that appear later).
 */
export function targetVariable(series: string, label: string, title: string): cog.Builder<VariableModel> {
  const query = `label_values(${series}, ${label})`;
  return new QueryVariableBuilder('target')
    .label(title)
    .query(query)
    .definition(query)
    .datasource(DATASOURCE)
    .refresh(VariableRefresh.OnTimeRangeChanged)
    .sort(VariableSort.AlphabeticalAsc)
    .multi(true)
    .includeAll(true)
    .allValue('.*')
    .current({ text: 'All', value: '$__all' });
}

// ---- PromQL -------------------------------------------------------------------------------------------

/** `label="value"` */
export const eq = (label: string, value: string): string => `${label}="${value}"`;
/** `label!="value"` */
export const ne = (label: string, value: string): string => `${label}!="${value}"`;
/** `label=~"$target"`: the dashboard's target filter on that label. */
export const targetMatcher = (label: string): string => `${label}=~"$target"`;

/** `series{m1, m2}` (or `series` without matchers). */
export function selector(series: string, matchers: readonly string[] = []): string {
  return matchers.length ? `${series}{${matchers.join(', ')}}` : series;
}

/** `rate(series{…}[$__rate_interval])` */
export function rate(series: string, matchers: readonly string[] = []): string {
  return `rate(${selector(series, matchers)}[$__rate_interval])`;
}

/** `sum by (l1, l2) (inner)`: also drops `otel_scope_name`/`otel_scope_version` and instance labels. */
export function sumBy(labels: readonly string[], inner: string): string {
  return `sum by (${labels.join(', ')}) (${inner})`;
}

/** `histogram_quantile(q, sum by (labels…, le) (rate(bucket{…}[$__rate_interval])))` */
export function quantile(
  q: number,
  bucketSeries: string,
  labels: readonly string[],
  matchers: readonly string[] = [],
): string {
  return `histogram_quantile(${q}, ${sumBy([...labels, 'le'], rate(bucketSeries, matchers))})`;
}

/** A legend: optional literal prefix, then `{{label}}` per label. */
export function legend(prefix: string, ...labels: string[]): string {
  return [prefix, ...labels.map((l) => `{{${l}}}`)].filter(Boolean).join(' ');
}

// ---- Panels -------------------------------------------------------------------------------------------

export interface Query {
  readonly expr: string;
  /** Non-empty: every series gets a readable name. */
  readonly legend: string;
}

export interface PanelSpec {
  readonly title: string;
  /** What the panel shows and what a bad value means. */
  readonly description: string;
  /** A Grafana unit id: `s`, `ops`, `percentunit`, `short`… */
  readonly unit: string;
  /** The runbook section to open when the panel looks bad. */
  readonly runbook: RunbookAnchor;
  readonly queries: readonly Query[];
  /** Grid width (of 24) and height. */
  readonly width?: number;
  readonly height?: number;
  readonly min?: number;
  readonly max?: number;
  /** Absolute thresholds, drawn as dashed lines on time series: `[value, color]`. */
  readonly thresholds?: ReadonlyArray<[value: number, color: string]>;
}

function runbookLink(anchor: RunbookAnchor): cog.Builder<DashboardLink> {
  return new DashboardLinkBuilder(`Runbook: ${anchor.replace(/-/g, ' ')}`)
    .url(runbookUrl(anchor))
    .tooltip('What to check and what to do (docs/runbook.md)')
    .targetBlank(true);
}

const REF_IDS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** The panel's queries, `A`, `B`… in order, each with its legend, all on the `datasource` variable. */
function targets(queries: readonly Query[]): cog.Builder<cog.Dataquery>[] {
  if (!queries.length) throw new Error('a panel needs at least one query');
  return queries.map((q, i) => {
    const refId = REF_IDS[i];
    if (!refId) throw new Error(`query ${q.expr}: too many queries in one panel`);
    if (!q.legend) throw new Error(`query ${q.expr} has no legend`);
    return new DataqueryBuilder()
      .refId(refId)
      .datasource(DATASOURCE)
      .expr(q.expr)
      .legendFormat(q.legend)
      .range();
  });
}

function thresholdSteps(spec: PanelSpec): cog.Builder<ThresholdsConfig> {
  return new ThresholdsConfigBuilder()
    .mode(ThresholdsMode.Absolute)
    .steps([
      { value: null, color: 'green' },
      ...(spec.thresholds ?? []).map(([value, color]) => ({ value, color })),
    ]);
}

function checked(spec: PanelSpec): PanelSpec {
  if (!spec.description.trim()) throw new Error(`panel ${spec.title} has no description`);
  if (!spec.unit) throw new Error(`panel ${spec.title} has no unit`);
  return spec;
}

/**
 * What both dashboards share: read-only, crosshair tooltips, the last hour refreshed every 30 s, the
 * datasource variable, a target variable, and a link to the runbook.
 */
export function baseDashboard(
  title: string,
  uid: string,
  description: string,
  target: cog.Builder<VariableModel>,
): DashboardBuilder {
  return new DashboardBuilder(title)
    .uid(uid)
    .description(description)
    .tags(['pg-resilience', 'postgresql'])
    .readonly()
    .tooltip(DashboardCursorSync.Crosshair)
    .time({ from: 'now-1h', to: 'now' })
    .refresh('30s')
    .timezone('browser')
    .withVariable(datasourceVariable())
    .withVariable(target)
    .link(new DashboardLinkBuilder('Runbook').url(RUNBOOK_URL).targetBlank(true).icon('doc'));
}

/** The builder methods every panel kind shares. */
interface CommonPanelBuilder<B> {
  title(v: string): B;
  description(v: string): B;
  datasource(v: typeof DATASOURCE): B;
  targets(v: cog.Builder<cog.Dataquery>[]): B;
  unit(v: string): B;
  links(v: cog.Builder<DashboardLink>[]): B;
  span(v: number): B;
  height(v: number): B;
}

/** What every panel has: title, description, the datasource variable, queries, unit, runbook link, size. */
function common<B extends CommonPanelBuilder<B>>(builder: B, spec: PanelSpec, width: number): B {
  checked(spec);
  return builder
    .title(spec.title)
    .description(spec.description)
    .datasource(DATASOURCE)
    .targets(targets(spec.queries))
    .unit(spec.unit)
    .links([runbookLink(spec.runbook)])
    .span(spec.width ?? width)
    .height(spec.height ?? 8);
}

/** A time series panel: legend at the bottom, shared tooltip sorted by value. */
export function timeseries(spec: PanelSpec, options: { stacked?: boolean } = {}): cog.Builder<Panel> {
  const panel = common(new TimeseriesPanelBuilder(), spec, 12)
    .legend(
      new VizLegendOptionsBuilder()
        .showLegend(true)
        .displayMode(LegendDisplayMode.List)
        .placement(LegendPlacement.Bottom)
        .calcs([]),
    )
    .tooltip(new VizTooltipOptionsBuilder().mode(TooltipDisplayMode.Multi).sort(SortOrder.Descending))
    .fillOpacity(10)
    .lineWidth(1)
    .showPoints(VisibilityMode.Never)
    .thresholds(thresholdSteps(spec));
  if (spec.min !== undefined) panel.min(spec.min);
  if (spec.max !== undefined) panel.max(spec.max);
  if (spec.thresholds?.length) {
    panel.thresholdsStyle(new GraphThresholdsStyleConfigBuilder().mode(GraphThresholdsStyleMode.Dashed));
  }
  if (options.stacked) panel.stacking(new StackingConfigBuilder().mode(StackingMode.Normal));
  return panel;
}

/** A stat panel showing the last value of each series, named by its legend, coloured by `mappings`. */
export function stat(spec: PanelSpec, mappings: ValueMapping[]): cog.Builder<Panel> {
  return common(new StatPanelBuilder(), spec, 8)
    .mappings(mappings)
    .noValue('no data')
    .reduceOptions(new ReduceDataOptionsBuilder().calcs(['lastNotNull']).values(false))
    .colorMode(BigValueColorMode.Background)
    .graphMode(BigValueGraphMode.None)
    .textMode(BigValueTextMode.ValueAndName);
}

/** A state timeline: one band per series, its values named and coloured by `mappings`. */
export function stateTimeline(spec: PanelSpec, mappings: ValueMapping[]): cog.Builder<Panel> {
  return common(new StateTimelinePanelBuilder(), spec, 16)
    .mappings(mappings)
    .legend(
      new VizLegendOptionsBuilder()
        .showLegend(true)
        .displayMode(LegendDisplayMode.List)
        .placement(LegendPlacement.Bottom)
        .calcs([]),
    )
    .tooltip(new VizTooltipOptionsBuilder().mode(TooltipDisplayMode.Single).sort(SortOrder.None))
    .mergeValues(true)
    .fillOpacity(80);
}

/** A section header. */
export function row(title: string): cog.Builder<RowPanel> {
  return new RowBuilder(title).collapsed(false);
}

// ---- Output -------------------------------------------------------------------------------------------

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/**
 * The dashboard as committed: panels (rows included) numbered 1, 2… in order (queries are `A`, `B`… from
 * `targets()`), link placement dropped (a dashboard-link field the SDK fills in that panel links do not
 * use), keys sorted.
 */
export function finalize(dashboard: Dashboard): Record<string, unknown> {
  let id = 0;
  for (const panel of dashboard.panels ?? []) {
    panel.id = ++id;
    if (panel.type === 'row') continue;
    for (const link of (panel as Panel).links ?? []) delete link.placement;
  }
  for (const link of dashboard.links ?? []) delete link.placement;
  return sortKeys(dashboard) as Record<string, unknown>;
}
