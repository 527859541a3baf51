// Arm D's preload: pg-resilience's policies and metrics only (no instrumentation-pg, no tracing): the
// built package's PgResilienceInstrumentation with a MeterProvider whose Prometheus endpoint nobody
// scrapes. The documented programmatic use ("your own SDK").
import { metrics } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';

const port = Number(process.env.OTEL_EXPORTER_PROMETHEUS_PORT ?? 9464);
metrics.setGlobalMeterProvider(
  new MeterProvider({ readers: [new PrometheusExporter({ host: '127.0.0.1', port })] }),
);
// The built package, as users load it (a variable specifier: tsc type-checks before any build).
const PACKAGE = 'pg-resilience';
const { PgResilienceInstrumentation } = (await import(PACKAGE)) as typeof import('../../src/index.ts');
new PgResilienceInstrumentation();
