/**
 * What `pg-resilience/register` does, shared by its ESM entry (src/register.ts, which first registers
 * the import-in-the-middle hook) and its CommonJS entry (src/register-cjs.ts):
 * start OpenTelemetry's NodeSDK with instrumentation-pg and then PgResilienceInstrumentation (ours
 * last, so its wrappers are outermost). The SDK reads the standard OTEL_* environment itself
 * (OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER, OTEL_EXPORTER_PROMETHEUS_HOST/PORT,
 * OTEL_SERVICE_NAME…). PG_RESILIENCE_DISABLED=true: nothing at all is started and pg is untouched.
 * OTEL_NODE_ENABLED_INSTRUMENTATIONS / OTEL_NODE_DISABLED_INSTRUMENTATIONS choose whether
 * instrumentation-pg loads (src/register/instrumentation-selection.ts); ours always does.
 * OTEL_SDK_DISABLED=true: no SDK (no exporters, no instrumentation-pg), but PgResilienceInstrumentation
 * still runs: switching telemetry off must not bring the crashes back.
 *
 * Shutdown: on beforeExit, and on SIGTERM/SIGINT. On a signal, when the app has no handler of its own,
 * the SDK is shut down (at most SHUTDOWN_TIMEOUT_MS) and the process exits with 128 + the signal
 * number (143 for SIGTERM, 130 for SIGINT), as it would have without us; when the app has its own
 * handler, the signal is left to it. Telemetry failures are logged through diag, never thrown.
 */
import { constants } from 'node:os';
import { diag } from '@opentelemetry/api';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { isConfigError, killSwitchOn } from '../config/index.ts';
import { PgResilienceInstrumentation } from '../instrumentation/instrumentation.ts';
import { selectInstrumentations } from './instrumentation-selection.ts';

export const SHUTDOWN_TIMEOUT_MS = 5_000;
/**
 * At a natural exit (the app is done), the SDK gets this long to flush before the process exits with
 * the app's exit code anyway: an unreachable or hanging collector must not hold a finished app (the
 * OTLP exporters retry for up to OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default).
 */
const EXIT_FLUSH_TIMEOUT_MS = 1_000;
const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

export interface Started {
  /** undefined when OTEL_SDK_DISABLED=true (telemetry off; the crash guards still run). */
  readonly sdk: NodeSDK | undefined;
  readonly instrumentation: PgResilienceInstrumentation;
  shutdown(): Promise<void>;
}

/** OTEL_SDK_DISABLED, read as the SDK reads it (case-insensitive `true`). */
function otelSdkDisabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true';
}

/**
 * What the register entries run. Bad configuration stops the app before it starts, with the
 * ConfigError's message alone on stderr and exit code 1: the message names every field, value and what
 * is allowed, and Node's uncaught-exception code frame and stack around it would only bury it.
 */
export function startFromRegisterHook(): void {
  try {
    startPgResilience();
  } catch (error) {
    if (!isConfigError(error)) throw error;
    process.stderr.write(
      `${error.message}\npg-resilience/register: the app was not started. Fix the setting above, or set ` +
        'PG_RESILIENCE_DISABLED=true to run the app without pg-resilience.\n',
    );
    process.exit(1);
  }
}

/** Starts the SDK and the instrumentations; undefined when PG_RESILIENCE_DISABLED is set. */
export function startPgResilience(): Started | undefined {
  if (killSwitchOn()) return undefined;
  if (otelSdkDisabled()) {
    // A ConfigError from our instrumentation surfaces here, at start-up.
    const instrumentation = new PgResilienceInstrumentation();
    // Telemetry off, resilience on. NodeSDK is not even constructed: its constructor builds the
    // metric readers from OTEL_METRICS_EXPORTER even when disabled, and the Prometheus exporter
    // starts serving /metrics in its own constructor.
    registerInstrumentations({ instrumentations: [instrumentation] });
    return { sdk: undefined, instrumentation, shutdown: () => Promise.resolve() };
  }
  // Construction order is hook order: an instrumentation enables itself (registers its require hook) in
  // its constructor, and instrumentation-pg's hook unwraps whatever wrapper it finds on pg's prototypes
  // when pg loads. So instrumentation-pg first, ours second, or ours is removed from Client.query,
  // Client.connect and Pool.connect (src/instrumentation/wrap.ts; test/e2e/register.test.ts checks it).
  // OTEL_NODE_DISABLED_INSTRUMENTATIONS=pg (the lean mode): no instrumentation-pg, so no pg spans and
  // no db.client.* metrics; our policies and metrics still run.
  const selection = selectInstrumentations();
  const pgInstrumentation = selection.pg ? [new PgInstrumentation()] : [];
  // A ConfigError from our instrumentation surfaces here, at start-up.
  const instrumentation = new PgResilienceInstrumentation();
  const sdk = new NodeSDK({ instrumentations: [...pgInstrumentation, instrumentation] });
  // After the SDK's constructor: it installs the diag logger OTEL_LOG_LEVEL asks for.
  for (const name of selection.unknown) {
    diag.warn(
      `pg-resilience/register: "${name}" from OTEL_NODE_ENABLED/DISABLED_INSTRUMENTATIONS is not an ` +
        'instrumentation this hook loads (it loads only @opentelemetry/instrumentation-pg); ignored. ' +
        'PG_RESILIENCE_DISABLED=true turns pg-resilience off.',
    );
  }
  try {
    sdk.start();
  } catch (error) {
    diag.error('pg-resilience/register: the OpenTelemetry SDK failed to start', error);
  }

  let shutdownPromise: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    shutdownPromise ??= new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, SHUTDOWN_TIMEOUT_MS);
      timer.unref();
      let pending: Promise<void>;
      try {
        pending = sdk.shutdown();
      } catch (error) {
        pending = Promise.reject(error);
      }
      pending
        .catch((error: unknown) => diag.error('pg-resilience/register: SDK shutdown failed', error))
        .finally(() => {
          clearTimeout(timer);
          resolve();
        });
    });
    return shutdownPromise;
  };

  process.once('beforeExit', (code) => {
    // Unref'd: it only fires if the flush still holds the event loop open when it is due.
    const cap = setTimeout(() => process.exit(process.exitCode ?? code), EXIT_FLUSH_TIMEOUT_MS);
    cap.unref();
    void shutdown().finally(() => clearTimeout(cap));
  });
  for (const signal of SIGNALS) {
    const onSignal = (): void => {
      // The app's own handlers (added after ours) decide what the signal means: leave it to them.
      if (process.listenerCount(signal) > 0) return;
      void shutdown().finally(() => process.exit(128 + constants.signals[signal]));
    };
    process.once(signal, onSignal);
  }
  return { sdk, instrumentation, shutdown };
}
