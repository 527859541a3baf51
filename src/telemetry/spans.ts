/**
 * Spans: one `pg_resilience <operation>` span (kind CLIENT) per logical operation the policies acted on,
 * parent of its attempts' pg spans; a `pg_resilience recovery.probe` span per background probe; breaker
 * state changes as a `circuit.state_change` event on the span that caused them, or as a short span of
 * their own when none of ours did.
 *
 * When an operation gets its span (the `telemetry.operationSpans` setting):
 * - `on_event` (default): at the first thing a policy does to it (a retry, a suppressed or exhausted
 *   retry, a rate-limit wait, a rejection). The span's start time is the operation's start, and every
 *   attempt from then on runs inside it, so a retried operation's later attempts are its children. The
 *   first attempt ran before anyone knew it would fail: its pg span stays a child of the caller's span
 *   (the `retry` event on ours carries its error type). An operation that simply succeeds costs no span.
 * - `always`: at the operation's start; every attempt is a child.
 * - `off`: never.
 *
 * Span status follows the final outcome: ERROR with the error type when the operation failed or was
 * rejected, unset when it succeeded (even after retries). Attributes: `db.system.name`, `db.namespace`,
 * `server.address`, `server.port`, the target and operation, then `pg_resilience.attempts`,
 * `pg_resilience.outcome` and `error.type` at the end. Never query text or values.
 *
 * Nothing here may throw into the app: every entry point catches and reports through `onError`.
 */
import {
  type Attributes,
  type Context,
  context,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { isBulkheadRejectedError, isCircuitOpenError, isRateLimitedError } from '../errors.ts';
import type { CircuitStateChangeEvent, OperationKind, OperationStep } from '../policy/events.ts';
import type { OperationEvent, OperationObserver } from '../policy/types.ts';
import { ATTR, SPAN_EVENTS, SPANS } from './catalog.ts';
import type { OperationSpanMode } from '../config/types.ts';

/** One operation, as the span observer follows it. */
interface Followed {
  readonly target: string;
  readonly operation: OperationKind;
  readonly startedAt: number;
  readonly parent: Context;
  span: Span | undefined;
}

/** `host:port/database` → the semantic-convention attributes (cached per target). */
function targetAttributes(target: string): Attributes {
  const attrs: Attributes = { [ATTR.DB_SYSTEM_NAME]: 'postgresql', [ATTR.TARGET]: target };
  const m = /^(.*):(\d+)\/(.*)$/.exec(target);
  if (m) {
    const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
    attrs[ATTR.SERVER_ADDRESS] = host;
    attrs[ATTR.SERVER_PORT] = Number(m[2]);
    if (m[3]) attrs[ATTR.DB_NAMESPACE] = m[3];
  }
  return attrs;
}

export class OperationSpans implements OperationObserver<Followed | undefined> {
  readonly #tracer: () => Tracer;
  readonly #mode: OperationSpanMode;
  readonly #onError: (error: unknown) => void;
  readonly #errorType: (error: unknown) => string;
  readonly #targets = new Map<string, Attributes>();
  /** Our spans (operation and probe), so a state change knows whether the active span is ours. */
  readonly #ours = new WeakSet<Span>();

  constructor(
    tracer: () => Tracer,
    mode: OperationSpanMode,
    errorType: (error: unknown) => string,
    onError: (error: unknown) => void,
  ) {
    this.#tracer = tracer;
    this.#errorType = errorType;
    this.#mode = mode;
    this.#onError = onError;
  }

  get enabled(): boolean {
    return this.#mode !== 'off';
  }

  /** `on_event` and `off`: an operation gets nothing of ours before its first event (OperationObserver). */
  get beginsLate(): boolean {
    return this.#mode !== 'always';
  }

  begin(target: string, operation: OperationKind, startedAt: number): Followed | undefined {
    if (this.#mode === 'off') return undefined;
    try {
      const op: Followed = { target, operation, startedAt, parent: context.active(), span: undefined };
      if (this.#mode === 'always') this.#ensure(op);
      return op;
    } catch (error) {
      this.#onError(error);
      return undefined;
    }
  }

  attempt<T>(op: Followed | undefined, _attempt: number, run: () => T): T {
    const span = op?.span;
    if (span === undefined) return run();
    let ctx: Context;
    try {
      ctx = trace.setSpan(op!.parent, span);
    } catch (error) {
      this.#onError(error);
      return run();
    }
    return context.with(ctx, run);
  }

  step(op: Followed | undefined, step: OperationStep): void {
    if (op === undefined) return;
    try {
      const span = this.#ensure(op);
      switch (step.type) {
        case 'retry':
          span.addEvent(SPAN_EVENTS.retry, {
            [ATTR.ATTEMPT]: step.event.attempt,
            [ATTR.MAX_ATTEMPTS]: step.event.maxAttempts,
            [ATTR.DELAY]: Math.round(step.event.delayMs),
            [ATTR.ERROR_TYPE]: step.event.errorType,
          });
          break;
        case 'retry.suppressed':
          span.addEvent(SPAN_EVENTS.retrySuppressed, {
            [ATTR.ATTEMPT]: step.event.attempt,
            [ATTR.REASON]: step.event.reason,
            [ATTR.ERROR_TYPE]: step.event.errorType,
          });
          break;
        case 'retry.exhausted':
          span.addEvent(SPAN_EVENTS.retryExhausted, {
            [ATTR.ATTEMPTS]: step.event.attempts,
            [ATTR.ERROR_TYPE]: step.event.errorType,
          });
          break;
        case 'rate_limit.wait':
          span.addEvent(SPAN_EVENTS.rateLimitWait, { [ATTR.WAITED]: Math.round(step.waitedMs) });
          break;
        case 'commit.outcome': {
          const attributes: Attributes = {
            [ATTR.RESULT]: step.event.result,
            [ATTR.LOOKUPS]: step.event.lookups,
            [ATTR.ERROR_TYPE]: step.event.errorType,
          };
          if (step.event.transactionId !== undefined)
            attributes[ATTR.TRANSACTION_ID] = step.event.transactionId;
          span.addEvent(SPAN_EVENTS.transactionOutcomeResolution, attributes);
          break;
        }
        case 'rejected':
          span.addEvent(rejectionEvent(step.error), { [ATTR.ERROR_TYPE]: step.errorType });
          break;
      }
    } catch (error) {
      this.#onError(error);
    }
  }

  end(op: Followed | undefined, e: OperationEvent): void {
    const span = op?.span;
    if (span === undefined) return;
    try {
      span.setAttribute(ATTR.ATTEMPTS, e.attempts);
      span.setAttribute(ATTR.OUTCOME, e.outcome);
      if (e.errorType !== undefined) span.setAttribute(ATTR.ERROR_TYPE, e.errorType);
      if (e.outcome !== 'success') span.setStatus({ code: SpanStatusCode.ERROR, message: e.errorType });
      span.end();
    } catch (error) {
      this.#onError(error);
    }
  }

  probe<T>(target: string, attempt: number, run: () => Promise<T>): Promise<T> {
    if (this.#mode === 'off') return run();
    let span: Span;
    try {
      span = this.#tracer().startSpan(SPANS.recoveryProbe, {
        kind: SpanKind.CLIENT,
        attributes: { ...this.#attributes(target), [ATTR.ATTEMPT]: attempt },
      });
      this.#ours.add(span);
    } catch (error) {
      this.#onError(error);
      return run();
    }
    const finish = (outcome: 'success' | 'failure', errorType?: string): void => {
      try {
        span.setAttribute(ATTR.OUTCOME, outcome);
        if (errorType !== undefined) {
          span.setAttribute(ATTR.ERROR_TYPE, errorType);
          span.setStatus({ code: SpanStatusCode.ERROR, message: errorType });
        }
        span.end();
      } catch (error) {
        this.#onError(error);
      }
    };
    const promise = context.with(trace.setSpan(context.active(), span), run);
    promise.then(
      () => finish('success'),
      (error: unknown) => finish('failure', this.#errorType(error)),
    );
    return promise;
  }

  /** A breaker state change: an event on our active span, else a short span of its own. */
  circuitStateChange(e: CircuitStateChangeEvent, errorType: string | undefined): void {
    if (this.#mode === 'off') return;
    try {
      const attrs: Attributes = { [ATTR.FROM]: e.from, [ATTR.TO]: e.to };
      if (errorType !== undefined) attrs[ATTR.ERROR_TYPE] = errorType;
      if (e.nextProbeAt !== undefined) attrs[ATTR.NEXT_PROBE_AT] = new Date(e.nextProbeAt).toISOString();
      const active = trace.getSpan(context.active());
      if (active !== undefined && this.#ours.has(active)) {
        active.addEvent(SPAN_EVENTS.circuitStateChange, attrs, e.at);
        return;
      }
      const span = this.#tracer().startSpan(SPANS.circuitStateChange, {
        kind: SpanKind.INTERNAL,
        startTime: e.at,
        attributes: { ...this.#attributes(e.target), ...attrs },
      });
      span.addEvent(SPAN_EVENTS.circuitStateChange, attrs, e.at);
      span.end(e.at);
    } catch (error) {
      this.#onError(error);
    }
  }

  #ensure(op: Followed): Span {
    if (op.span !== undefined) return op.span;
    const span = this.#tracer().startSpan(
      SPANS.operation(op.operation),
      {
        kind: SpanKind.CLIENT,
        startTime: op.startedAt,
        attributes: { ...this.#attributes(op.target), [ATTR.OPERATION]: op.operation },
      },
      op.parent,
    );
    this.#ours.add(span);
    op.span = span;
    return span;
  }

  #attributes(target: string): Attributes {
    let attrs = this.#targets.get(target);
    if (attrs === undefined) {
      attrs = targetAttributes(target);
      this.#targets.set(target, attrs);
    }
    return attrs;
  }
}

function rejectionEvent(error: unknown): string {
  if (isCircuitOpenError(error)) return SPAN_EVENTS.circuitRejected;
  if (isRateLimitedError(error)) return SPAN_EVENTS.rateLimitRejected;
  if (isBulkheadRejectedError(error)) return SPAN_EVENTS.bulkheadRejected;
  return SPAN_EVENTS.circuitRejected;
}
