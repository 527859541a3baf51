// Captures what pg-resilience reports through OpenTelemetry's diag logger (errors only), for tests that
// check a failure is reported (and reported once). Call diag.disable() after the test.
import { type DiagLogger, DiagLogLevel, diag } from '@opentelemetry/api';

/** Installs a diag logger that records every `diag.error(...)` call's arguments; returns the list. */
export function captureDiag(): unknown[][] {
  const errors: unknown[][] = [];
  const noop = () => {};
  const logger: DiagLogger = {
    error: (...args: unknown[]) => errors.push(args),
    warn: noop,
    info: noop,
    debug: noop,
    verbose: noop,
  };
  diag.setLogger(logger, { logLevel: DiagLogLevel.ERROR, suppressOverrideMessage: true });
  return errors;
}
