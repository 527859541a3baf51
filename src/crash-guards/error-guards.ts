/**
 * src/crash-guards: keeps an unhandled pg 'error' event from killing the process (this file only).
 *
 * Crash guards. node-postgres emits 'error' on a Client whose connection dies and pg-pool re-emits an
 * idle client's error as the Pool's 'error'; an EventEmitter 'error' with no listener throws, which
 * kills the process (node-postgres #1324, #2635, #3202). The guard wraps `emit` on the Client and Pool
 * prototypes: an 'error' on an object that has NO 'error' listener is absorbed (emit returns false),
 * logged once per error and reported as a `ClientErrorAbsorbedEvent`. When the app has its own
 * listeners, emit runs untouched. pg-pool has already evicted an idle client whose connection died by
 * the time it emits; a checked-out client's query fails and the app releases it.
 */
import { classifyError } from '../classify/index.ts';
import type { ClassifierOverride } from '../classify/types.ts';
import type { EmitFn } from '../instrumentation/types.ts';

export type ErrorSource = 'pool' | 'client';

export interface ClientErrorAbsorbedEvent {
  /** `host:port/database` (never credentials). */
  readonly target: string;
  readonly source: ErrorSource;
  readonly errorType: string;
}

export interface ErrorGuardOptions {
  readonly source: ErrorSource;
  /** `host:port/database` of the emitter (`args` are the emit arguments after the event name). */
  readonly target: (emitter: unknown, args: readonly unknown[]) => string;
  /** Called once per absorbed error (the same error re-emitted elsewhere is reported once). */
  readonly onAbsorbed: (event: ClientErrorAbsorbedEvent, error: unknown) => void;
  /** The configured classification override, read when an error is absorbed. */
  readonly classify?: () => ClassifierOverride | undefined;
}

/** Errors already reported (an error object can be emitted more than once: client, then pool). */
const reported = new WeakSet<object>();

/** Returns the wrapper for `emit` (for the instrumentation's `_wrap`). */
export function guardErrorEmit(options: ErrorGuardOptions): (original: EmitFn) => EmitFn {
  return (original) =>
    function guardedEmit(this: unknown, event: string | symbol, ...args: unknown[]): boolean {
      if (event !== 'error' || !hasNoErrorListener(this)) return original.call(this, event, ...args);
      const error = args[0];
      try {
        report(options, this, args, error);
      } catch {
        // Reporting must never turn an absorbed error into a crash.
      }
      return false;
    };
}

function hasNoErrorListener(emitter: unknown): boolean {
  const e = emitter as { listenerCount?: (name: string) => number };
  return typeof e.listenerCount === 'function' && e.listenerCount('error') === 0;
}

function report(
  options: ErrorGuardOptions,
  emitter: unknown,
  args: readonly unknown[],
  error: unknown,
): void {
  if (typeof error === 'object' && error !== null) {
    if (reported.has(error)) return;
    reported.add(error);
  }
  const { errorType } = classifyError(error, options.classify?.());
  options.onAbsorbed({ target: options.target(emitter, args), source: options.source, errorType }, error);
}
