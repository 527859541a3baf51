/**
 * Logs: one human-readable line per resilience event, with structured attributes and trace correlation.
 *
 * - Every event is emitted through the OpenTelemetry logs API (`event.name` from the catalog's
 *   LOG_EVENTS, severity, attributes, the active context), exported when the app configured a logs
 *   exporter (OTEL_LOGS_EXPORTER) and dropped by the no-op logger otherwise.
 * - The same line goes to the console (stderr) at `PG_RESILIENCE_LOG_LEVEL` and above (default `warn`),
 *   prefixed `[pg-resilience]`. The console is throttled per event and target (at most
 *   CONSOLE_BURST lines per CONSOLE_WINDOW_MS; the next line printed says how many were skipped), so a
 *   retry storm cannot flood the app's output.
 *
 * Levels: retry, retries exhausted, suppressed for budget, rate-limit and bulkhead rejections,
 * timeouts, failed probes, absorbed client errors: warn. Breaker open, a lost COMMIT whose outcome
 * stayed unknown: error. A lost COMMIT settled (committed or aborted): info. Breaker half-open and
 * closed, successful probes: info. A retry suppressed for safety (in a transaction, unknown outcome, a
 * repeat that could reorder statements): info (it is the package doing its job). Messages carry no SQL text, values or
 * credentials: only the target, the operation and error types.
 */
import { type AnyValue, type Attributes, SeverityNumber } from '@opentelemetry/api';
import type { Logger } from '@opentelemetry/api';
import type { ClientErrorAbsorbedEvent } from '../crash-guards/error-guards.ts';
import type { FailoverEvent } from '../instrumentation/failover.ts';
import type { WritesRestoredEvent } from '../instrumentation/write-availability.ts';
import type { ConnectionsEvictedEvent } from '../instrumentation/eviction.ts';
import type { LeakEvent } from '../instrumentation/leak-detection.ts';
import type {
  CircuitStateChangeEvent,
  RateLimitRejectedEvent,
  RecoveryAttemptEvent,
  RetryEvent,
  RetryExhaustedEvent,
  RetrySuppressedEvent,
  SuppressReason,
  TimeoutEvent,
} from '../policy/events.ts';
import type { BulkheadRejectedEvent, CommitOutcomeEvent } from '../policy/events.ts';
import { ATTR, LOG_EVENTS } from './catalog.ts';
import type { LogLevel } from '../config/types.ts';

export const CONSOLE_BURST = 10;
export const CONSOLE_WINDOW_MS = 10_000;

type Severity = 'error' | 'warn' | 'info' | 'debug';
const RANK: Record<LogLevel, number> = { off: 0, error: 1, warn: 2, info: 3, debug: 4 };
const SEVERITY: Record<Severity, SeverityNumber> = {
  error: SeverityNumber.ERROR,
  warn: SeverityNumber.WARN,
  info: SeverityNumber.INFO,
  debug: SeverityNumber.DEBUG,
};

const SUPPRESS_WHY: Record<SuppressReason, string> = {
  in_transaction: 'it ran inside a transaction (only the whole transaction can be retried)',
  unknown_outcome: 'the statement may have reached the server and is not known to be safe to repeat',
  budget: 'the retry budget is spent (too many retries against this target)',
  not_retryable: 'repeating it on this client could reorder statements',
  session_state: 'its session had state a new connection would not have (temporary table, role, lock…)',
};

export interface ConsoleSink {
  write(severity: Severity, line: string): void;
}

const stderrSink: ConsoleSink = {
  write(severity, line) {
    if (severity === 'error') console.error(line);
    else if (severity === 'warn') console.warn(line);
    else console.info(line);
  },
};

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

export class ResilienceLogs {
  readonly #logger: () => Logger;
  readonly #level: number;
  readonly #sink: ConsoleSink;
  readonly #now: () => number;
  readonly #windows = new Map<string, { start: number; printed: number; skipped: number }>();

  constructor(
    logger: () => Logger,
    level: LogLevel,
    sink: ConsoleSink = stderrSink,
    now: () => number = Date.now,
  ) {
    this.#logger = logger;
    this.#level = RANK[level];
    this.#sink = sink;
    this.#now = now;
  }

  retry(e: RetryEvent): void {
    this.#log('warn', LOG_EVENTS.retry, e.target, {
      message:
        e.counted === undefined
          ? `Retrying ${e.operation} on ${e.target} (attempt ${e.attempt + 1}/${e.maxAttempts}) after ${e.errorType}; next try in ${seconds(e.delayMs)}`
          : `Retrying ${e.operation} on ${e.target} (attempt ${e.attempt + 1}) after ${e.errorType} on ${e.counted.kind} ${e.counted.attempt}/${e.maxAttempts}; next try in ${seconds(e.delayMs)}`,
      attributes: {
        [ATTR.OPERATION]: e.operation,
        [ATTR.ATTEMPT]: e.attempt + 1,
        [ATTR.MAX_ATTEMPTS]: e.maxAttempts,
        [ATTR.DELAY]: Math.round(e.delayMs),
        [ATTR.ERROR_TYPE]: e.errorType,
      },
    });
  }

  retryExhausted(e: RetryExhaustedEvent): void {
    this.#log('warn', LOG_EVENTS.retryExhausted, e.target, {
      message: `Gave up on ${e.operation} on ${e.target} after ${e.attempts} attempts: ${e.errorType}`,
      attributes: {
        [ATTR.OPERATION]: e.operation,
        [ATTR.ATTEMPTS]: e.attempts,
        [ATTR.ERROR_TYPE]: e.errorType,
      },
    });
  }

  /** A COMMIT lost in flight, settled: info when the server answered, error when it stays unknown. */
  transactionOutcomeResolution(e: CommitOutcomeEvent): void {
    const id =
      e.transactionId === undefined ? 'a transaction that wrote nothing' : `transaction ${e.transactionId}`;
    const what = {
      committed: 'it committed: the result was returned',
      aborted: 'it did not commit: it runs again from BEGIN',
      unknown: `no answer: TransactionOutcomeUnknownError (check it by hand: SELECT txid_status(${e.transactionId ?? '…'}))`,
    }[e.result];
    const attributes: Attributes = {
      [ATTR.OPERATION]: e.operation,
      [ATTR.RESULT]: e.result,
      [ATTR.LOOKUPS]: e.lookups,
      [ATTR.ERROR_TYPE]: e.errorType,
    };
    if (e.transactionId !== undefined) attributes[ATTR.TRANSACTION_ID] = e.transactionId;
    this.#log(e.result === 'unknown' ? 'error' : 'info', LOG_EVENTS.transactionOutcomeResolution, e.target, {
      message: `COMMIT on ${e.target} was lost in flight (${e.errorType}); asked about ${id}: ${what}`,
      attributes,
    });
  }

  retrySuppressed(e: RetrySuppressedEvent): void {
    this.#log(e.reason === 'budget' ? 'warn' : 'info', LOG_EVENTS.retrySuppressed, e.target, {
      message: `Not retrying ${e.operation} on ${e.target} after ${e.errorType}: ${SUPPRESS_WHY[e.reason]}`,
      attributes: { [ATTR.OPERATION]: e.operation, [ATTR.REASON]: e.reason, [ATTR.ERROR_TYPE]: e.errorType },
    });
  }

  circuitStateChange(e: CircuitStateChangeEvent, errorType: string | undefined, openForMs?: number): void {
    const attributes: Attributes = { [ATTR.FROM]: e.from, [ATTR.TO]: e.to };
    if (errorType !== undefined) attributes[ATTR.ERROR_TYPE] = errorType;
    if (e.to === 'open') {
      const next =
        e.nextProbeAt === undefined ? '' : `; next probe at ${new Date(e.nextProbeAt).toISOString()}`;
      const cause = errorType === undefined ? '' : ` after ${errorType}`;
      this.#log('error', LOG_EVENTS.circuitStateChange, e.target, {
        message: `Circuit breaker for ${e.target} opened${cause}: calls fail fast with CircuitOpenError${next}`,
        attributes,
      });
    } else if (e.to === 'half_open') {
      this.#log('info', LOG_EVENTS.circuitStateChange, e.target, {
        message: `Circuit breaker for ${e.target} half-open: letting a probe through`,
        attributes,
      });
    } else {
      const after = openForMs === undefined ? '' : ` after ${seconds(openForMs)}`;
      this.#log('info', LOG_EVENTS.circuitStateChange, e.target, {
        message: `Circuit breaker for ${e.target} closed${after}: the target is healthy again`,
        attributes,
      });
    }
  }

  rateLimitRejected(e: RateLimitRejectedEvent): void {
    if (e.reason === 'aborted') return;
    this.#log('warn', LOG_EVENTS.rateLimitRejected, e.target, {
      message: `Rate limit refused ${e.operation} on ${e.target} (${e.reason})`,
      attributes: { [ATTR.OPERATION]: e.operation, [ATTR.REASON]: e.reason },
    });
  }

  bulkheadRejected(e: BulkheadRejectedEvent): void {
    this.#log('warn', LOG_EVENTS.bulkheadRejected, e.target, {
      message: `Bulkhead full: refused ${e.operation} on ${e.target}`,
      attributes: { [ATTR.OPERATION]: e.operation },
    });
  }

  timeout(e: TimeoutEvent): void {
    this.#log('warn', LOG_EVENTS.timeout, e.target, {
      message: `${e.operation} on ${e.target} timed out after ${e.timeoutMs} ms`,
      attributes: { [ATTR.OPERATION]: e.operation },
    });
  }

  recoveryAttempt(e: RecoveryAttemptEvent, errorType: string | undefined): void {
    const attributes: Attributes = { [ATTR.ATTEMPT]: e.attempt, [ATTR.OUTCOME]: e.outcome };
    if (errorType !== undefined) attributes[ATTR.ERROR_TYPE] = errorType;
    this.#log(e.outcome === 'success' ? 'info' : 'warn', LOG_EVENTS.recoveryAttempt, e.target, {
      message:
        e.outcome === 'success'
          ? `Recovery probe ${e.attempt} for ${e.target} succeeded in ${Math.round(e.durationMs)} ms`
          : `Recovery probe ${e.attempt} for ${e.target} failed: ${errorType ?? 'error'}`,
      attributes,
    });
  }

  clientErrorAbsorbed(e: ClientErrorAbsorbedEvent): void {
    this.#log('warn', LOG_EVENTS.clientErrorAbsorbed, e.target, {
      message: `Absorbed an 'error' on a pg ${e.source} with no 'error' listener (target ${e.target}, ${e.errorType}); the process keeps running. Add an 'error' listener to handle it yourself.`,
      attributes: { [ATTR.SOURCE]: e.source, [ATTR.ERROR_TYPE]: e.errorType },
    });
  }

  connectionsEvicted(e: ConnectionsEvictedEvent): void {
    this.#log('info', LOG_EVENTS.connectionsEvicted, e.target, {
      message: `Closed ${e.count} idle pooled connection(s) to ${e.target} (${e.reason}): none from before the outage is handed out after it`,
      attributes: { [ATTR.REASON]: e.reason },
    });
  }

  failoverDetected(e: FailoverEvent): void {
    // One line per failover: the signals that follow its first are the same event.
    if (!e.first) return;
    this.#log('warn', LOG_EVENTS.failover, e.target, {
      message: `Failover on ${e.target}: ${e.host} answered ${e.code} (${e.kind}); its connections are ${e.evicted + e.discarded > 0 ? 'evicted' : 'dropped as they fail'} and new ones go to the server that accepts them now`,
      attributes: { [ATTR.KIND]: e.kind, [ATTR.ERROR_TYPE]: e.code },
    });
  }

  writesRestored(e: WritesRestoredEvent): void {
    this.#log('info', LOG_EVENTS.writesRestored, e.target, {
      message: `Writes to ${e.target} succeed again, ${seconds(e.durationMs)} after the failover's first sign (${e.kind})`,
      attributes: { [ATTR.KIND]: e.kind },
    });
  }

  clientLeaked(e: LeakEvent): void {
    const what =
      e.reason === 'dead_not_released'
        ? `lost its connection ${seconds(e.forMs)} ago and is still not released: it is leaked`
        : `has been idle for ${seconds(e.forMs)} without being released: it may be leaked`;
    this.#log('warn', LOG_EVENTS.clientLeaked, e.target, {
      message: `A pg client checked out of a pool for ${e.target} (held ${seconds(e.heldMs)}) ${what}. Release every client (in a finally block). Checked out at:\n${e.stack}`,
      attributes: {
        [ATTR.REASON]: e.reason,
        [ATTR.HELD]: Math.round(e.heldMs),
        [ATTR.CODE_STACKTRACE]: e.stack,
      },
    });
  }

  #log(
    severity: Severity,
    eventName: string,
    target: string,
    record: { message: string; attributes: Attributes },
  ): void {
    const attributes = { ...record.attributes, [ATTR.TARGET]: target } as Record<string, AnyValue>;
    this.#logger().emit({
      eventName,
      severityNumber: SEVERITY[severity],
      severityText: severity.toUpperCase(),
      body: record.message,
      attributes,
    });
    if (RANK[severity] > this.#level) return;
    const line = this.#throttle(`${eventName} ${target}`, record.message);
    if (line !== undefined) this.#sink.write(severity, `[pg-resilience] ${line}`);
  }

  /** The line to print, or undefined when this key printed CONSOLE_BURST lines in the current window. */
  #throttle(key: string, message: string): string | undefined {
    const now = this.#now();
    let w = this.#windows.get(key);
    if (w === undefined || now - w.start >= CONSOLE_WINDOW_MS) {
      const skipped = w?.skipped ?? 0;
      w = { start: now, printed: 0, skipped: 0 };
      if (this.#windows.size > 1_000) this.#windows.clear();
      this.#windows.set(key, w);
      if (skipped > 0) message = `${message} (${skipped} similar lines skipped)`;
    }
    if (w.printed >= CONSOLE_BURST) {
      w.skipped++;
      return undefined;
    }
    w.printed++;
    return message;
  }
}
