/**
 * The arms the benchmarks compare, each a way to run the same worker process:
 * - A bare `pg`;
 * - B `pg` + instrumentation-pg in a NodeSDK (spans over OTLP to a local sink that discards them,
 *   metrics on an unscraped Prometheus endpoint): what users already pay for standard telemetry;
 * - C pg-resilience through its register hook, everything on (the same SDK setup as B, plus our
 *   instrumentation);
 * - D pg-resilience's policies and metrics only (no instrumentation-pg, no tracing);
 * - E like C, with a rate limit high enough never to wait.
 * C and E load the built package (`--import pg-resilience/register`), as users of an ES-module app do.
 * B and C must load the OpenTelemetry SDK in the same module format: the worker is an ES module, so both
 * use `--import`. (With `--require`, the SDK's CommonJS build is used, and it is measurably slower —
 * its bundler's re-export getters sit on every call; `startSpan` alone cost about 3.9 µs against 1.1 µs
 * in the ES build in our profile — which is a cost of the SDK's format, not of pg-resilience.)
 */
import http from 'node:http';
import path from 'node:path';

export type ArmId = 'A' | 'B' | 'C' | 'D' | 'E';

export interface Arm {
  readonly id: ArmId;
  readonly label: string;
  /** Node flags before the worker script. */
  readonly execArgv: readonly string[];
  /** Environment on top of the parent's (OTEL_* for the SDK arms). */
  readonly env: Readonly<Record<string, string>>;
}

/** The OTEL_* variables B, C and E share: spans to `sinkUrl`, metrics on `metricsPort`, not scraped. */
function sdkEnv(sinkUrl: string, metricsPort: number): Record<string, string> {
  return {
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: sinkUrl,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
    OTEL_METRICS_EXPORTER: 'prometheus',
    OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1',
    OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
    OTEL_LOGS_EXPORTER: 'none',
    OTEL_SERVICE_NAME: 'pg-resilience-bench',
  };
}

export function arms(root: string, sinkUrl: string, metricsPort: number): Record<ArmId, Arm> {
  const sdk = sdkEnv(sinkUrl, metricsPort);
  return {
    A: { id: 'A', label: 'bare pg', execArgv: [], env: {} },
    B: {
      id: 'B',
      label: 'pg + instrumentation-pg (NodeSDK)',
      execArgv: ['--import', path.join(root, 'bench', 'arms', 'otel-pg.ts')],
      env: sdk,
    },
    C: {
      id: 'C',
      label: 'pg-resilience/register, everything on',
      execArgv: ['--import', 'pg-resilience/register'],
      env: sdk,
    },
    D: {
      id: 'D',
      label: 'pg-resilience policies + metrics only',
      execArgv: ['--import', path.join(root, 'bench', 'arms', 'policies-metrics.ts')],
      env: { OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort) },
    },
    E: {
      id: 'E',
      label: 'C + a rate limit that never waits',
      execArgv: ['--import', 'pg-resilience/register'],
      env: { ...sdk, PG_RESILIENCE_RATE_LIMIT: '6000000', PG_RESILIENCE_RATE_LIMIT_BURST: '100000' },
    },
  };
}

/** A local OTLP/HTTP endpoint that accepts every export and discards it (the "no-op exporter"). */
export async function startSink(): Promise<{ url: string; received: () => number; close(): Promise<void> }> {
  let received = 0;
  const server = http.createServer((req, res) => {
    req.on('data', () => {});
    req.on('end', () => {
      received++;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' });
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as import('node:net').AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received: () => received,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
