// Arm B's preload: what users already pay for standard telemetry. OpenTelemetry's NodeSDK with
// instrumentation-pg, configured by the same OTEL_* variables as pg-resilience/register (spans over OTLP
// to the bench's discarding sink, metrics on a Prometheus endpoint nobody scrapes).
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { NodeSDK } from '@opentelemetry/sdk-node';

new NodeSDK({ instrumentations: [new PgInstrumentation()] }).start();
