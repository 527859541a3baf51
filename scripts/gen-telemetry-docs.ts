// Generates docs/telemetry.md from the catalog
// (src/telemetry/catalog.ts): every metric with its Prometheus series, every attribute, span, span event
// and log event. The dashboards, alert rules and tests take their names from the same catalog.
//
//   node scripts/gen-telemetry-docs.ts          write it
//   node scripts/gen-telemetry-docs.ts --check  exit 1 if it differs from what would be generated
import { join } from 'node:path';
import {
  ATTR,
  ATTRIBUTE_VALUES,
  DURATION_BUCKETS_S,
  LOG_EVENTS,
  METRICS,
  type MetricSpec,
  prometheusLabel,
  prometheusSeries,
  SPAN_EVENTS,
  SPANS,
} from '../src/telemetry/catalog.ts';
import { ENV_VARS } from '../src/config/env.ts';
import { OPERATION_SPAN_MODES } from '../src/config/types.ts';
import { formatted, root, table, writeOrCheck } from './generated-docs.ts';

const DOCS = join(root, 'docs', 'telemetry.md');

const code = (s: string | number): string => `\`${s}\``;
const KIND: Record<MetricSpec['kind'], string> = {
  counter: 'counter',
  histogram: 'histogram',
  gauge: 'gauge',
  updowncounter: 'up-down counter (a gauge in Prometheus)',
};

const metrics = Object.values(METRICS) as MetricSpec[];

function metricsTable(): string {
  return table(
    ['metric (OpenTelemetry)', 'Prometheus series', 'type', 'unit', 'attributes', 'what it counts'],
    metrics.map((m) => [
      code(m.name),
      prometheusSeries(m).map(code).join('<br>'),
      KIND[m.kind],
      code(m.unit),
      m.attributes.map(code).join(', '),
      m.description,
    ]),
  );
}

const ATTRIBUTE_DOCS: Record<string, string> = {
  [ATTR.TARGET]: '`host:port/database`: the target the policies belong to (never credentials).',
  [ATTR.OPERATION]: ATTRIBUTE_VALUES[ATTR.OPERATION].map(code).join(', '),
  [ATTR.OUTCOME]:
    'operations: `success`, `failure`, `rejected` (refused by a policy before any attempt); probes and coordination commands: `success`, `failure`.',
  [ATTR.REASON]: `retry.suppressed: ${ATTRIBUTE_VALUES.retrySuppressedReason.map(code).join(', ')}; rate_limit.rejections: ${ATTRIBUTE_VALUES.rateLimitRejectedReason.map(code).join(', ')}; pool.client.leaks: ${ATTRIBUTE_VALUES.leakReason.map(code).join(', ')}.`,
  [ATTR.STATE]: ATTRIBUTE_VALUES[ATTR.STATE].map(code).join(', '),
  [ATTR.RESULT]: `statement.cancellations: ${ATTRIBUTE_VALUES.statementCancellationResult.map(code).join(', ')}; transaction.outcome_resolutions: ${ATTRIBUTE_VALUES.transactionOutcomeResult.map(code).join(', ')}.`,
  [ATTR.FROM]: 'The breaker state left.',
  [ATTR.TO]: 'The breaker state entered.',
  [ATTR.SOURCE]: '`pool` (an idle pooled client) or `client` (a standalone or checked-out client).',
  [ATTR.ERROR_TYPE]:
    'SQLSTATE (`40001`, `57P01`…), errno code (`ECONNRESET`…), or a short class name (`PGR_CIRCUIT_OPEN`, `connection_lost`, `pool_exhausted`…). Never a message.',
  [ATTR.ATTEMPTS]: 'Span attribute: attempts the operation ran.',
  [ATTR.ATTEMPT]: 'Span event / log attribute: the attempt that failed (retry), or the probe number.',
  [ATTR.MAX_ATTEMPTS]: 'Span event / log attribute: attempts allowed for the error class.',
  [ATTR.DELAY]: 'Span event / log attribute: backoff before the next attempt, in ms.',
  [ATTR.WAITED]: 'Span event attribute: time waited for a rate-limit permit, in ms.',
  [ATTR.NEXT_PROBE_AT]: 'Span event attribute: when an open breaker lets a probe through (ISO 8601).',
  [ATTR.HELD]: 'Log attribute (leaked client): how long the client has been checked out, in ms.',
  [ATTR.MODE]: `coordination.mode: ${ATTRIBUTE_VALUES[ATTR.MODE].map(code).join(', ')} (see fleet.md).`,
  [ATTR.KIND]: `failovers, failover.write_unavailability: ${ATTRIBUTE_VALUES[ATTR.KIND].map(code).join(', ')} (see failover.md).`,
  [ATTR.ROLE]: `host.role: ${ATTRIBUTE_VALUES[ATTR.ROLE].map(code).join(', ')}.`,
  [ATTR.CODE_STACKTRACE]:
    'Semantic conventions, log attribute (leaked client): the stack of the `pool.connect()` call that checked it out (frames only: file paths and function names).',
  [ATTR.DB_SYSTEM_NAME]: 'Semantic conventions: always `postgresql` (spans).',
  [ATTR.DB_NAMESPACE]: 'Semantic conventions: the database name (spans).',
  [ATTR.SERVER_ADDRESS]: 'Semantic conventions: the host (spans; host.role).',
  [ATTR.SERVER_PORT]: 'Semantic conventions: the port (spans; host.role).',
};

function attributesTable(): string {
  return table(
    ['attribute', 'Prometheus label', 'values'],
    Object.values(ATTR).map((key) => [code(key), code(prometheusLabel(key)), ATTRIBUTE_DOCS[key] ?? '']),
  );
}

const SPAN_EVENT_DOCS: Record<string, string> = {
  [SPAN_EVENTS.retry]:
    'A failed attempt will be retried: `pg_resilience.attempt`, `pg_resilience.max_attempts`, `pg_resilience.delay_ms`, `error.type`.',
  [SPAN_EVENTS.retrySuppressed]:
    'A transient failure not retried: `pg_resilience.reason`, `pg_resilience.attempt`, `error.type`.',
  [SPAN_EVENTS.retryExhausted]: 'The last allowed attempt failed: `pg_resilience.attempts`, `error.type`.',
  [SPAN_EVENTS.rateLimitWait]: 'The operation waited for a rate-limit permit: `pg_resilience.waited_ms`.',
  [SPAN_EVENTS.circuitRejected]: 'Refused at once: the breaker is open (`error.type` `PGR_CIRCUIT_OPEN`).',
  [SPAN_EVENTS.rateLimitRejected]: 'Refused by the rate limiter (`error.type` `PGR_RATE_LIMITED`).',
  [SPAN_EVENTS.bulkheadRejected]: 'Refused by the bulkhead (`error.type` `PGR_BULKHEAD_REJECTED`).',
  [SPAN_EVENTS.circuitStateChange]:
    'The breaker changed state: `pg_resilience.from`, `pg_resilience.to`, `error.type` (what opened it), `pg_resilience.next_probe_at`. On the operation or probe span that caused it, else on a short span of its own.',
};

const LOG_DOCS: Record<string, [string, string]> = {
  [LOG_EVENTS.retry]: [
    'warn',
    'Retrying query on db.example:5432/app (attempt 2/7) after ECONNRESET; next try in 1.0 s',
  ],
  [LOG_EVENTS.retryExhausted]: [
    'warn',
    'Gave up on query on db.example:5432/app after 3 attempts: ECONNRESET',
  ],
  [LOG_EVENTS.retrySuppressed]: [
    'info (warn for `budget`)',
    'Not retrying query on db.example:5432/app after ECONNRESET: it ran inside a transaction (only the whole transaction can be retried)',
  ],
  [LOG_EVENTS.circuitStateChange]: [
    'error (open), info (half-open, closed)',
    'Circuit breaker for db.example:5432/app opened after ECONNREFUSED: calls fail fast with CircuitOpenError; next probe at 2026-11-23T03:00:05.000Z',
  ],
  [LOG_EVENTS.rateLimitRejected]: ['warn', 'Rate limit refused query on db.example:5432/app (queue_full)'],
  [LOG_EVENTS.bulkheadRejected]: ['warn', 'Bulkhead full: refused query on db.example:5432/app'],
  [LOG_EVENTS.timeout]: ['warn', 'query on db.example:5432/app timed out after 5000 ms'],
  [LOG_EVENTS.recoveryAttempt]: [
    'info (success), warn (failure)',
    'Recovery probe 3 for db.example:5432/app failed: ECONNREFUSED',
  ],
  [LOG_EVENTS.clientErrorAbsorbed]: [
    'warn',
    "Absorbed an 'error' on a pg pool with no 'error' listener (target db.example:5432/app, 57P01); the process keeps running. Add an 'error' listener to handle it yourself.",
  ],
  [LOG_EVENTS.connectionsEvicted]: [
    'info',
    'Closed 4 idle pooled connection(s) to db.example:5432/app (breaker_open): none from before the outage is handed out after it',
  ],
  [LOG_EVENTS.failover]: [
    'warn (once per failover)',
    'Failover on db1:5432,db2:5432/app: db1:5432 answered 25006 (read_only); its connections are evicted and new ones go to the server that accepts them now',
  ],
  [LOG_EVENTS.writesRestored]: [
    'info',
    "Writes to db1:5432,db2:5432/app succeed again, 0.4 s after the failover's first sign (read_only)",
  ],
  [LOG_EVENTS.clientLeaked]: [
    'warn (once per leaked client)',
    'A pg client checked out of a pool for db.example:5432/app (held 5.2 s) lost its connection 5.0 s ago and is still not released: it is leaked. Release every client (in a finally block). Checked out at: (the stack follows, one frame per line)',
  ],
};

function docs(): string {
  return [
    '# Telemetry reference',
    '',
    '<!-- Generated from src/telemetry/catalog.ts by scripts/gen-telemetry-docs.ts: do not edit by hand. -->',
    '',
    'Every name pg-resilience emits comes from one module, [`src/telemetry/catalog.ts`](../src/telemetry/catalog.ts)',
    '(also exported: `import { METRICS, ATTR, SPANS } from "pg-resilience"`). This page, the',
    'Grafana dashboards, the alert rules and the tests are all generated from or checked against it.',
    '',
    'Names follow OpenTelemetry: dotted, UCUM units, no unit or `_total` in the name. Through',
    '`@opentelemetry/exporter-prometheus` (or an OpenTelemetry Collector `prometheus` exporter with',
    '`add_metric_suffixes: false`) dots become underscores, counters get `_total` and histograms',
    '`_bucket`/`_sum`/`_count`; no unit suffix is added. Labels stay bounded: a target, an enumerated value or',
    'an error type; never query text, parameter values, client ids or messages.',
    '',
    '## Metrics',
    '',
    metricsTable(),
    '',
    `Histogram buckets (seconds), chosen for database latency from a loopback \`SELECT 1\` to an outage ridden out by retries: ${DURATION_BUCKETS_S.map(code).join(', ')}.`,
    '',
    'Every counter has a zero-valued series for each known target (a target named in the configuration’s',
    '`targets`, or one the app has used) and each enumerated label value (operation, reason, state pair,',
    'outcome, source) from the start, so dashboards and `rate()` work before the first failure. The',
    'histograms appear with the target’s first operation. `pg_resilience_circuit_state` and',
    '`pg_resilience_rate_limit_queue_size` are read from the policies at each scrape.',
    '',
    '## Attributes',
    '',
    attributesTable(),
    '',
    '## Spans',
    '',
    table(
      ['span', 'kind', 'when'],
      [
        [
          SPANS.operationNames.map(code).join(', '),
          'CLIENT',
          'One logical operation the policies acted on (see `operationSpans` below). Parent of the pg spans (instrumentation-pg’s) of its attempts from the first policy action on. Attributes: `db.system.name`, `db.namespace`, `server.address`, `server.port`, `pg_resilience.target`, `pg_resilience.operation`, and at the end `pg_resilience.attempts`, `pg_resilience.outcome`, `error.type`. Status ERROR when the operation failed or was rejected; unset when it succeeded, retries included.',
        ],
        [
          code(SPANS.recoveryProbe),
          'CLIENT',
          'One background recovery probe (connect + `SELECT 1`) while a breaker is open: `pg_resilience.attempt`, `pg_resilience.outcome`, `error.type`.',
        ],
        [
          code(SPANS.circuitStateChange),
          'INTERNAL',
          'A breaker state change that no span of ours caused (for example a change while the app had no call in flight).',
        ],
      ],
    ),
    '',
    '`operationSpans` (`PG_RESILIENCE_OPERATION_SPANS`), one of ' +
      OPERATION_SPAN_MODES.map(code).join(', ') +
      ':',
    '',
    '- `on_event` (default): a span for each operation the policies acted on: a retry, a suppressed or',
    '  exhausted retry, a rate-limit wait, a rejection. It starts when the operation started and the attempts',
    '  after the first policy action run inside it. The first attempt ran before anyone knew it would fail, so',
    '  its pg span stays a child of the caller’s span (the `retry` event carries its error type). A healthy',
    '  operation costs no span of ours: standard telemetry (instrumentation-pg’s spans) is already expensive,',
    '  and ours adds nothing to it on the happy path.',
    '- `always`: a span for every operation, parent of all its attempts.',
    '- `off`: no spans (metrics and logs stay).',
    '',
    '### Span events',
    '',
    table(
      ['event', 'meaning and attributes'],
      Object.values(SPAN_EVENTS).map((e) => [code(e), SPAN_EVENT_DOCS[e] ?? '']),
    ),
    '',
    '## Logs',
    '',
    'One human-readable line per resilience event, through the OpenTelemetry logs API (exported when',
    '`OTEL_LOGS_EXPORTER` names an exporter; trace-correlated through the active context) with the event name',
    'below, a severity and the attributes above, and to the console (stderr, prefixed `[pg-resilience]`) at',
    '`PG_RESILIENCE_LOG_LEVEL` and above (default `warn`). The console is throttled per event and target (10',
    'lines per 10 s; the next line says how many were skipped). Lines name targets and error types only',
    '(and, for a leaked client, the stack of its checkout: file paths and function names).',
    '',
    table(
      ['event name', 'level', 'example'],
      Object.values(LOG_EVENTS).map((e) => [code(e), LOG_DOCS[e]?.[0] ?? '', LOG_DOCS[e]?.[1] ?? '']),
    ),
    '',
    '## Settings',
    '',
    'These are the `telemetry` section of the configuration ([configuration.md](configuration.md)): set them',
    'in the JSON file (`PG_RESILIENCE_CONFIG`), with these variables, or in code, with the same precedence',
    '(file < env < code) and the same start-up errors as every other setting.',
    '',
    table(
      ['variable', 'setting (`telemetry.…`)', 'description'],
      ENV_VARS.filter((v) => v.setting?.startsWith('telemetry.')).map((v) => [
        code(v.name),
        code(v.setting!.slice('telemetry.'.length)),
        v.description,
      ]),
    ),
    '',
    'The standard `OTEL_*` variables configure the SDK that `pg-resilience/register` starts: for example',
    '`OTEL_METRICS_EXPORTER=prometheus` serves `/metrics` on `OTEL_EXPORTER_PROMETHEUS_PORT` (9464), and',
    '`OTEL_TRACES_EXPORTER`/`OTEL_LOGS_EXPORTER` pick the span and log exporters. The health endpoint and',
    '`getResilienceState()` are described in [health.md](health.md).',
    '',
    '## Never hurts the app',
    '',
    'A telemetry failure (an SDK or exporter that throws, a metric reader that fails) is swallowed and',
    'reported once through OpenTelemetry’s diag logger; it never delays or fails a query. Exporters run in',
    'the SDK’s own batches, off the query path. Tested against an OTLP endpoint that refuses, hangs or',
    'answers 500, and exporters and readers that throw (test/integration/telemetry-faults.test.ts).',
    '',
    '## What the signals never contain',
    '',
    'pg-resilience’s spans, metrics, logs, console lines and health endpoint carry targets',
    '(`host:port/database`), operation kinds, enumerated values and error types only: never SQL text,',
    'parameter values, user names, passwords, error messages or connection strings.',
    'test/integration/security.test.ts runs every event with a password and distinctive parameter values and',
    'greps every signal for them.',
    '',
    '`pg-resilience/register` also loads `@opentelemetry/instrumentation-pg`, whose spans are not ours and',
    'carry more: `db.query.text` holds the SQL as written (parameterised statements keep their values out,',
    "but literals in the text stay, so `ALTER ROLE … PASSWORD '…'` puts a password there), and its span",
    'status message is the server’s error message, which can echo a value (e.g. `invalid input syntax for',
    'type integer: "…"`). instrumentation-pg has no option to drop them; filter them in the OpenTelemetry',
    'Collector (the `transform` or `redaction` processor on `db.query.text` and the status message), or build',
    'your own SDK without instrumentation-pg (“Your own SDK” in the README).',
    '',
  ].join('\n');
}

const wanted: Array<[path: string, text: string]> = [[DOCS, await formatted(DOCS, docs())]];
process.exitCode = writeOrCheck('gen-telemetry-docs', wanted);
