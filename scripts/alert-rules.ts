// The Prometheus alert rules, defined once in TypeScript with the telemetry catalog's names and the
// runbook's anchors. scripts/gen-alert-rules.ts writes them to prometheus/rules/pg-resilience.yml (what
// Prometheus loads); tests render them with shorter `for:` durations (`alertRules({ forOverride })`)
// rather than keeping a second copy.
import { stringify } from 'yaml';
import { ATTR, METRICS, prometheusLabel, prometheusName } from '../src/telemetry/catalog.ts';
import { type AlertName, RUNBOOK_ANCHORS, runbookUrl } from '../src/telemetry/runbook.ts';

const T = prometheusLabel(ATTR.TARGET);
const STATE = prometheusLabel(ATTR.STATE);
const FROM = prometheusLabel(ATTR.FROM);
const TO = prometheusLabel(ATTR.TO);
const OUTCOME = prometheusLabel(ATTR.OUTCOME);
const RESULT = prometheusLabel(ATTR.RESULT);

const m = {
  state: prometheusName(METRICS.circuitState),
  transitions: prometheusName(METRICS.circuitTransitions),
  retries: prometheusName(METRICS.retries),
  exhausted: prometheusName(METRICS.retryExhausted),
  opsCount: `${prometheusName(METRICS.operationDuration)}_count`,
  opsBucket: `${prometheusName(METRICS.operationDuration)}_bucket`,
  waitBucket: `${prometheusName(METRICS.rateLimitWaitDuration)}_bucket`,
  rlRejections: prometheusName(METRICS.rateLimitRejections),
  recovery: prometheusName(METRICS.recoveryAttempts),
  clientErrors: prometheusName(METRICS.poolClientErrors),
  leaked: prometheusName(METRICS.poolClientsLeaked),
  resolutions: prometheusName(METRICS.transactionOutcomeResolutions),
  coordinationMode: prometheusName(METRICS.coordinationMode),
  failovers: prometheusName(METRICS.failovers),
  windowBucket: `${prometheusName(METRICS.writeUnavailability)}_bucket`,
  budgetExhausted: prometheusName(METRICS.connectionBudgetExhausted),
};
const KIND = prometheusLabel(ATTR.KIND);
const MODE = prometheusLabel(ATTR.MODE);

/** instrumentation-pg's pool series (not ours: named here once). */
export const PG_POOL = {
  count: 'db_client_connection_count',
  max: 'db_client_connection_max',
  state: 'db_client_connection_state',
  pool: 'db_client_connection_pool_name',
};

export interface AlertRule {
  readonly alert: AlertName;
  readonly expr: string;
  /** How long the condition must hold (Prometheus duration). */
  readonly for: string;
  readonly severity: 'critical' | 'warning';
  readonly summary: string;
  readonly description: string;
}

/** Thresholds, named so the runbook and the rules agree. */
export const THRESHOLDS = {
  retryShare: 0.1,
  exhaustedPerSecond: 0.05,
  rateLimitWaitP95Seconds: 1,
  errorRatio: 0.05,
  slowP95Seconds: 1,
  poolUtilisation: 0.8,
  clientErrorsPer5m: 10,
  flapsPer15m: 3,
  /** A bucket boundary of the write-unavailability histogram (FAILOVER_BUCKETS_S). */
  writesUnavailableSeconds: 10,
};

export const ALERTS: readonly AlertRule[] = [
  {
    alert: 'PgResilienceBreakerOpen',
    expr: `max by (${T}) (${m.state}{${STATE}!="closed"}) == 1`,
    for: '1m',
    severity: 'critical',
    summary: 'Circuit breaker open for {{ $labels.pg_resilience_target }}',
    description:
      'The breaker for {{ $labels.pg_resilience_target }} has not been closed for 1 minute: calls to it fail fast with CircuitOpenError while recovery probes try to reach it.',
  },
  {
    alert: 'PgResilienceBreakerFlapping',
    expr: `sum by (${T}) (increase(${m.transitions}{${FROM}="closed",${TO}="open"}[15m])) >= ${THRESHOLDS.flapsPer15m}`,
    for: '0m',
    severity: 'warning',
    summary: 'Circuit breaker flapping for {{ $labels.pg_resilience_target }}',
    description:
      'The breaker for {{ $labels.pg_resilience_target }} opened at least 3 times in 15 minutes: the target keeps failing and recovering.',
  },
  {
    alert: 'PgResilienceRetryStorm',
    expr: `sum by (${T}) (rate(${m.retries}[5m])) / clamp_min(sum by (${T}) (rate(${m.opsCount}[5m])), 1e-9) > ${THRESHOLDS.retryShare}`,
    for: '5m',
    severity: 'warning',
    summary: 'Retry storm against {{ $labels.pg_resilience_target }}',
    description:
      'Retries are over 10 % of the operations on {{ $labels.pg_resilience_target }}: the database or the network is failing often enough to add noticeable load.',
  },
  {
    alert: 'PgResilienceRetriesExhausted',
    expr: `sum by (${T}) (rate(${m.exhausted}[5m])) > ${THRESHOLDS.exhaustedPerSecond}`,
    for: '5m',
    severity: 'warning',
    summary: 'Operations failing after every retry on {{ $labels.pg_resilience_target }}',
    description:
      'More than 3 operations a minute on {{ $labels.pg_resilience_target }} fail after their last allowed attempt: retries no longer absorb the failures, users see errors.',
  },
  {
    alert: 'PgResilienceRateLimitSaturated',
    expr:
      `histogram_quantile(0.95, sum by (${T}, le) (rate(${m.waitBucket}[5m]))) > ${THRESHOLDS.rateLimitWaitP95Seconds}` +
      ` or sum by (${T}) (rate(${m.rlRejections}[5m])) > 0`,
    for: '5m',
    severity: 'warning',
    summary: 'Rate limit saturated for {{ $labels.pg_resilience_target }}',
    description:
      'Calls to {{ $labels.pg_resilience_target }} wait long for a rate-limit permit (p95 over 1 s) or are rejected: demand is above the configured rate.',
  },
  {
    alert: 'PgResilienceRecoveryFailing',
    expr:
      `sum by (${T}) (increase(${m.recovery}{${OUTCOME}="failure"}[5m])) > 0` +
      ` and on (${T}) sum by (${T}) (increase(${m.recovery}{${OUTCOME}="success"}[5m])) == 0`,
    for: '5m',
    severity: 'critical',
    summary: 'Recovery probes keep failing for {{ $labels.pg_resilience_target }}',
    description:
      'Every background recovery probe (connect + SELECT 1) to {{ $labels.pg_resilience_target }} has failed for 5 minutes: the target is unreachable or refusing connections.',
  },
  {
    alert: 'PgResilienceErrorRatioHigh',
    expr:
      `sum by (${T}) (rate(${m.opsCount}{${OUTCOME}!="success"}[5m]))` +
      ` / clamp_min(sum by (${T}) (rate(${m.opsCount}[5m])), 1e-9) > ${THRESHOLDS.errorRatio}`,
    for: '5m',
    severity: 'critical',
    summary: 'High operation error ratio on {{ $labels.pg_resilience_target }}',
    description:
      'Over 5 % of the operations on {{ $labels.pg_resilience_target }} fail or are rejected, after retries.',
  },
  {
    alert: 'PgResilienceSlowOperations',
    expr: `histogram_quantile(0.95, sum by (${T}, le) (rate(${m.opsBucket}{${OUTCOME}="success"}[5m]))) > ${THRESHOLDS.slowP95Seconds}`,
    for: '10m',
    severity: 'warning',
    summary: 'Slow operations on {{ $labels.pg_resilience_target }}',
    description:
      'The 95th percentile of successful operations on {{ $labels.pg_resilience_target }} is over 1 s, retries and waits included.',
  },
  {
    alert: 'PgResiliencePoolUtilisationHigh',
    expr:
      `sum by (${PG_POOL.pool}) (clamp_min(${PG_POOL.count}{${PG_POOL.state}="used"}, 0))` +
      ` / sum by (${PG_POOL.pool}) (${PG_POOL.max}) > ${THRESHOLDS.poolUtilisation}`,
    for: '10m',
    severity: 'warning',
    summary: 'Connection pool {{ $labels.db_client_connection_pool_name }} almost full',
    description:
      "Over 80 % of the pool {{ $labels.db_client_connection_pool_name }} is in use: calls will soon wait for a connection. Built on instrumentation-pg's pool series: in the lean mode (OTEL_NODE_DISABLED_INSTRUMENTATIONS=pg) they are absent, the expression is empty and this alert never fires.",
  },
  {
    alert: 'PgResilienceClientErrorsSpiking',
    expr: `sum by (${T}) (increase(${m.clientErrors}[5m])) > ${THRESHOLDS.clientErrorsPer5m}`,
    for: '0m',
    severity: 'warning',
    summary: 'Connections dropping on {{ $labels.pg_resilience_target }}',
    description:
      'More than 10 pg client errors were absorbed on {{ $labels.pg_resilience_target }} in 5 minutes: connections are being killed (restarts, failovers, pg_terminate_backend, network).',
  },
  {
    alert: 'PgResilienceClientsLeaked',
    expr: `sum by (${T}) (${m.leaked}) > 0`,
    for: '1m',
    severity: 'warning',
    summary: 'Pool clients leaked on {{ $labels.pg_resilience_target }}',
    description:
      'Clients checked out with pool.connect() from a pool for {{ $labels.pg_resilience_target }} were reported as leaked and have not been released for 1 minute: each holds a pool slot, and when all are gone every caller waits. The app log has one warning per leak with the stack of its checkout.',
  },
  {
    alert: 'PgResilienceCommitOutcomeUnknown',
    expr: `sum by (${T}) (increase(${m.resolutions}{${RESULT}="unknown"}[15m])) > 0`,
    for: '0m',
    severity: 'critical',
    summary: 'Transactions of unknown outcome on {{ $labels.pg_resilience_target }}',
    description:
      'A withTransaction COMMIT on {{ $labels.pg_resilience_target }} was lost in flight and its outcome stayed unknown: the caller got TransactionOutcomeUnknownError, and the transaction, which may or may not have committed, must be checked by its transaction id.',
  },
  {
    alert: 'PgResilienceCoordinationDegraded',
    expr: `max by (job, instance) (${m.coordinationMode}{${MODE}="fallback"}) == 1`,
    for: '5m',
    severity: 'warning',
    summary: 'Fleet coordination degraded to fallback on {{ $labels.instance }}',
    description:
      'The process {{ $labels.instance }} has not reached Redis within coordination.timeoutMs for 5 minutes: its limits hold per process at its share (the limit divided by the live members it last saw), no longer fleet-wide.',
  },
  {
    alert: 'PgResilienceFailoverDetected',
    expr: `sum by (${T}) (increase(${m.failovers}[10m])) > 0`,
    for: '0m',
    severity: 'warning',
    summary: 'Failover on {{ $labels.pg_resilience_target }}',
    description:
      'A server of {{ $labels.pg_resilience_target }} changed role in the last 10 minutes (a read-only answer to a write, an admin or crash shutdown, or an endpoint flip): pg-resilience evicted its connections and sent new ones to the server that accepts them now. Check that the new primary is the one you expect and that writes succeed.',
  },
  {
    alert: 'PgResilienceWritesUnavailable',
    expr:
      `sum by (${T}) (increase(${m.windowBucket}{le="+Inf"}[15m]))` +
      ` - sum by (${T}) (increase(${m.windowBucket}{le="${THRESHOLDS.writesUnavailableSeconds}"}[15m])) > 0`,
    for: '0m',
    severity: 'warning',
    summary: 'Writes unavailable for over 10 s during a failover of {{ $labels.pg_resilience_target }}',
    description:
      'During a failover of {{ $labels.pg_resilience_target }} in the last 15 minutes, writes failed for more than 10 s between the first sign of the failover and the first write that succeeded on the new primary (recorded when writes came back).',
  },
  {
    alert: 'PgResilienceConnectionBudgetExhausted',
    expr: `sum by (${T}) (increase(${m.budgetExhausted}[5m])) > 0`,
    for: '0m',
    severity: 'warning',
    summary: 'Connection budget exhausted on {{ $labels.pg_resilience_target }}',
    description:
      'New connections to {{ $labels.pg_resilience_target }} failed with ConnectionBudgetExhaustedError in the last 5 minutes: every slot of connectionBudget.maxConnections stayed in use for a whole connect timeout, so callers got errors instead of connections.',
  },
];

// ---- promtool unit tests: each alert fires in its condition and stays silent on a healthy series ----

interface Series {
  readonly series: string;
  readonly values: string;
}

interface AlertCase {
  readonly alert: AlertName;
  /** The test's name when it is not the usual failing/healthy pair. */
  readonly name?: string;
  readonly series: readonly Series[];
  readonly evalTime: string;
  /** Label sets of the alerts expected at evalTime (the healthy series must not appear). */
  readonly firing: readonly Record<string, string>[];
}

const sel = (metric: string, labels: Record<string, string>): string =>
  `${metric}{${Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',')}}`;
const bad = { [T]: 'bad:5432/app' };
const good = { [T]: 'good:5432/app' };
const slow = { [T]: 'slow:5432/app' };

export const ALERT_CASES: readonly AlertCase[] = [
  {
    alert: 'PgResilienceBreakerOpen',
    series: [
      { series: sel(m.state, { ...bad, [STATE]: 'open' }), values: '1x20' },
      { series: sel(m.state, { ...bad, [STATE]: 'closed' }), values: '0x20' },
      { series: sel(m.state, { ...good, [STATE]: 'open' }), values: '0x20' },
      { series: sel(m.state, { ...good, [STATE]: 'closed' }), values: '1x20' },
    ],
    evalTime: '2m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceBreakerFlapping',
    series: [
      {
        series: sel(m.transitions, { ...bad, [FROM]: 'closed', [TO]: 'open' }),
        values: '0 1 2 3 3 3 3 3 3 3 3 3',
      },
      {
        series: sel(m.transitions, { ...good, [FROM]: 'closed', [TO]: 'open' }),
        values: '0 1 1 1 1 1 1 1 1 1 1 1',
      },
    ],
    evalTime: '2m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceRetryStorm',
    series: [
      { series: sel(m.retries, bad), values: '0+30x60' },
      { series: sel(m.opsCount, { ...bad, [OUTCOME]: 'success' }), values: '0+60x60' },
      { series: sel(m.retries, good), values: '0+1x60' },
      { series: sel(m.opsCount, { ...good, [OUTCOME]: 'success' }), values: '0+100x60' },
    ],
    evalTime: '10m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceRetriesExhausted',
    series: [
      { series: sel(m.exhausted, bad), values: '0+3x60' },
      { series: sel(m.exhausted, good), values: '0x60' },
    ],
    evalTime: '10m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceRateLimitSaturated',
    series: [
      { series: sel(m.rlRejections, { ...bad, [prometheusLabel(ATTR.REASON)]: 'drop' }), values: '0+5x60' },
      { series: sel(m.waitBucket, { ...slow, le: '0.5' }), values: '0+1x60' },
      { series: sel(m.waitBucket, { ...slow, le: '1' }), values: '0+1x60' },
      { series: sel(m.waitBucket, { ...slow, le: '2.5' }), values: '0+10x60' },
      { series: sel(m.waitBucket, { ...slow, le: '+Inf' }), values: '0+10x60' },
      { series: sel(m.rlRejections, { ...good, [prometheusLabel(ATTR.REASON)]: 'drop' }), values: '0x60' },
      { series: sel(m.waitBucket, { ...good, le: '0.5' }), values: '0+10x60' },
      { series: sel(m.waitBucket, { ...good, le: '+Inf' }), values: '0+10x60' },
    ],
    evalTime: '10m',
    firing: [bad, slow],
  },
  {
    alert: 'PgResilienceRecoveryFailing',
    series: [
      { series: sel(m.recovery, { ...bad, [OUTCOME]: 'failure' }), values: '0+2x60' },
      { series: sel(m.recovery, { ...bad, [OUTCOME]: 'success' }), values: '0x60' },
      { series: sel(m.recovery, { ...good, [OUTCOME]: 'failure' }), values: '0+2x60' },
      { series: sel(m.recovery, { ...good, [OUTCOME]: 'success' }), values: '0+1x60' },
    ],
    evalTime: '10m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceErrorRatioHigh',
    series: [
      { series: sel(m.opsCount, { ...bad, [OUTCOME]: 'failure' }), values: '0+10x60' },
      { series: sel(m.opsCount, { ...bad, [OUTCOME]: 'success' }), values: '0+10x60' },
      { series: sel(m.opsCount, { ...good, [OUTCOME]: 'failure' }), values: '0x60' },
      { series: sel(m.opsCount, { ...good, [OUTCOME]: 'success' }), values: '0+10x60' },
    ],
    evalTime: '10m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceSlowOperations',
    series: [
      { series: sel(m.opsBucket, { ...bad, [OUTCOME]: 'success', le: '1' }), values: '0x80' },
      { series: sel(m.opsBucket, { ...bad, [OUTCOME]: 'success', le: '2.5' }), values: '0+10x80' },
      { series: sel(m.opsBucket, { ...bad, [OUTCOME]: 'success', le: '+Inf' }), values: '0+10x80' },
      { series: sel(m.opsBucket, { ...good, [OUTCOME]: 'success', le: '1' }), values: '0+10x80' },
      { series: sel(m.opsBucket, { ...good, [OUTCOME]: 'success', le: '2.5' }), values: '0+10x80' },
      { series: sel(m.opsBucket, { ...good, [OUTCOME]: 'success', le: '+Inf' }), values: '0+10x80' },
    ],
    evalTime: '16m',
    firing: [bad],
  },
  {
    alert: 'PgResiliencePoolUtilisationHigh',
    series: [
      {
        series: sel(PG_POOL.count, { [PG_POOL.pool]: 'bad:5432/app', [PG_POOL.state]: 'used' }),
        values: '9x80',
      },
      { series: sel(PG_POOL.max, { [PG_POOL.pool]: 'bad:5432/app' }), values: '10x80' },
      {
        series: sel(PG_POOL.count, { [PG_POOL.pool]: 'good:5432/app', [PG_POOL.state]: 'used' }),
        values: '2x80',
      },
      { series: sel(PG_POOL.max, { [PG_POOL.pool]: 'good:5432/app' }), values: '10x80' },
    ],
    evalTime: '15m',
    firing: [{ [PG_POOL.pool]: 'bad:5432/app' }],
  },
  {
    alert: 'PgResiliencePoolUtilisationHigh',
    name: 'PgResiliencePoolUtilisationHigh: silent in the lean mode, where instrumentation-pg series are absent',
    series: [
      { series: sel(m.clientErrors, { ...bad, [prometheusLabel(ATTR.SOURCE)]: 'pool' }), values: '0x80' },
    ],
    evalTime: '15m',
    firing: [],
  },
  {
    alert: 'PgResilienceClientErrorsSpiking',
    series: [
      { series: sel(m.clientErrors, { ...bad, [prometheusLabel(ATTR.SOURCE)]: 'pool' }), values: '0+5x20' },
      { series: sel(m.clientErrors, { ...good, [prometheusLabel(ATTR.SOURCE)]: 'pool' }), values: '0x20' },
    ],
    evalTime: '3m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceClientsLeaked',
    series: [
      { series: sel(m.leaked, bad), values: '0 0 2x20' },
      { series: sel(m.leaked, good), values: '0 1 0x20' },
    ],
    evalTime: '3m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceCommitOutcomeUnknown',
    series: [
      { series: sel(m.resolutions, { ...bad, [RESULT]: 'unknown' }), values: '0 0 0 1 1 1 1 1 1 1 1 1' },
      { series: sel(m.resolutions, { ...bad, [RESULT]: 'committed' }), values: '0+1x11' },
      { series: sel(m.resolutions, { ...good, [RESULT]: 'unknown' }), values: '0x11' },
      { series: sel(m.resolutions, { ...good, [RESULT]: 'committed' }), values: '0+3x11' },
      { series: sel(m.resolutions, { ...good, [RESULT]: 'aborted' }), values: '0+3x11' },
    ],
    evalTime: '2m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceCoordinationDegraded',
    series: [
      {
        series: sel(m.coordinationMode, { job: 'app', instance: 'bad:9464', [MODE]: 'fallback' }),
        values: '1x60',
      },
      {
        series: sel(m.coordinationMode, { job: 'app', instance: 'bad:9464', [MODE]: 'fleet' }),
        values: '0x60',
      },
      {
        series: sel(m.coordinationMode, { job: 'app', instance: 'good:9464', [MODE]: 'fallback' }),
        values: '0x60',
      },
      {
        series: sel(m.coordinationMode, { job: 'app', instance: 'good:9464', [MODE]: 'fleet' }),
        values: '1x60',
      },
    ],
    evalTime: '10m',
    firing: [{ job: 'app', instance: 'bad:9464' }],
  },
  {
    alert: 'PgResilienceFailoverDetected',
    series: [
      { series: sel(m.failovers, { ...bad, [KIND]: 'read_only' }), values: '0 0 0 1 1 1 1 1 1 1 1 1' },
      { series: sel(m.failovers, { ...bad, [KIND]: 'admin_shutdown' }), values: '0x11' },
      { series: sel(m.failovers, { ...good, [KIND]: 'read_only' }), values: '0x11' },
    ],
    evalTime: '2m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceWritesUnavailable',
    name: 'PgResilienceWritesUnavailable: fires for a window over 10 s, silent for a failover whose writes came back within it',
    series: [
      { series: sel(m.windowBucket, { ...bad, [KIND]: 'endpoint_flip', le: '5' }), values: '0x11' },
      { series: sel(m.windowBucket, { ...bad, [KIND]: 'endpoint_flip', le: '10' }), values: '0x11' },
      {
        series: sel(m.windowBucket, { ...bad, [KIND]: 'endpoint_flip', le: '30' }),
        values: '0 0 0 1 1 1 1 1 1 1 1 1',
      },
      {
        series: sel(m.windowBucket, { ...bad, [KIND]: 'endpoint_flip', le: '+Inf' }),
        values: '0 0 0 1 1 1 1 1 1 1 1 1',
      },
      {
        series: sel(m.windowBucket, { ...good, [KIND]: 'read_only', le: '5' }),
        values: '0 0 0 1 1 1 1 1 1 1 1 1',
      },
      {
        series: sel(m.windowBucket, { ...good, [KIND]: 'read_only', le: '10' }),
        values: '0 0 0 1 1 1 1 1 1 1 1 1',
      },
      {
        series: sel(m.windowBucket, { ...good, [KIND]: 'read_only', le: '30' }),
        values: '0 0 0 1 1 1 1 1 1 1 1 1',
      },
      {
        series: sel(m.windowBucket, { ...good, [KIND]: 'read_only', le: '+Inf' }),
        values: '0 0 0 1 1 1 1 1 1 1 1 1',
      },
    ],
    evalTime: '2m',
    firing: [bad],
  },
  {
    alert: 'PgResilienceConnectionBudgetExhausted',
    series: [
      { series: sel(m.budgetExhausted, bad), values: '0 0 0 2 2 2 2 2 2 2 2 2' },
      { series: sel(m.budgetExhausted, good), values: '0x11' },
    ],
    evalTime: '4m',
    firing: [bad],
  },
];

/** `{{ $labels.x }}` expanded as Prometheus would (the annotations use no other template). */
function expand(template: string, labels: Record<string, string>): string {
  return template.replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, k: string) => labels[k] ?? '');
}

/** The promtool test file (`promtool test rules`) for the rule file named `rulesFile`. */
export function alertRuleTests(rulesFile = 'pg-resilience.yml'): string {
  const byName = new Map(ALERTS.map((a) => [a.alert, a]));
  const doc = {
    rule_files: [rulesFile],
    evaluation_interval: '15s',
    tests: ALERT_CASES.map((c) => {
      const rule = byName.get(c.alert)!;
      return {
        name: c.name ?? `${c.alert}: fires for the failing series, silent for the healthy one`,
        interval: '15s',
        input_series: c.series.map((x) => ({ series: x.series, values: x.values })),
        alert_rule_test: [
          {
            eval_time: c.evalTime,
            alertname: c.alert,
            exp_alerts: c.firing.map((labels) => ({
              exp_labels: { severity: rule.severity, ...labels },
              exp_annotations: {
                summary: expand(rule.summary, labels),
                description: expand(rule.description, labels),
                runbook_url: runbookUrl(RUNBOOK_ANCHORS[c.alert]),
              },
            })),
          },
        ],
      };
    }),
  };
  return (
    '# Generated from scripts/alert-rules.ts by scripts/gen-alert-rules.ts: do not edit by hand.\n' +
    '# promtool test rules: every alert fires for a failing series and stays silent for a healthy one.\n' +
    stringify(doc, { lineWidth: 0 })
  );
}

export interface RenderOptions {
  /** Replaces every rule's `for:` (tests: alerts fire within a short run). */
  readonly forOverride?: string;
}

/** The rule file's content (Prometheus rule groups), as YAML. */
export function alertRules(options: RenderOptions = {}): string {
  const doc = {
    groups: [
      {
        name: 'pg-resilience',
        rules: ALERTS.map((a) => ({
          alert: a.alert,
          expr: a.expr,
          for: options.forOverride ?? a.for,
          labels: { severity: a.severity },
          annotations: {
            summary: a.summary,
            description: a.description,
            runbook_url: runbookUrl(RUNBOOK_ANCHORS[a.alert]),
          },
        })),
      },
    ],
  };
  return (
    '# Generated from scripts/alert-rules.ts by scripts/gen-alert-rules.ts: do not edit by hand.\n' +
    '# Metric names come from the telemetry catalog (src/telemetry/catalog.ts); each alert links its\n' +
    '# section of docs/runbook.md.\n' +
    stringify(doc, { lineWidth: 0 })
  );
}
