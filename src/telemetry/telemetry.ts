/**
 * src/telemetry: names (catalog.ts), metrics, spans, logs, health and introspection. This file wires
 * them to a PolicyRegistry.
 *
 * Telemetry: turns every policy event into OpenTelemetry signals (metrics.ts, spans.ts, logs.ts). It
 * listens to the policies' events and observes their operations; it never calls back into a policy.
 *
 * The instrumentation owns one ResilienceTelemetry: `attach(registry)` when its policies are created,
 * `detach()` when it is disabled, `setMeter()` when the SDK hands it a MeterProvider. The tracer and
 * logger are read through getters at each use, so providers set later are picked up.
 *
 * Never hurt the app: a telemetry failure (an SDK that throws, a bad exporter) is swallowed and reported
 * once through OpenTelemetry's diag; it never delays or fails a query.
 */
import { type DiagLogger, diag, type Logger, type Meter, type Tracer } from '@opentelemetry/api';
import type { IDisposable } from 'cockatiel';
import { setListenerErrorHandler } from '../policy/events.ts';
import type { TelemetrySettings } from '../config/types.ts';
import type { TargetPolicy } from '../policy/pipeline.ts';
import type { PolicyRegistry } from '../policy/registry.ts';
import type { ClientErrorAbsorbedEvent } from '../crash-guards/error-guards.ts';
import type { ConnectionsEvictedEvent } from '../instrumentation/eviction.ts';
import type { FailoverEvent } from '../instrumentation/failover.ts';
import type { LeakDetector } from '../instrumentation/leak-detection.ts';
import type { WritesRestoredEvent } from '../instrumentation/write-availability.ts';
import { ResilienceLogs } from './logs.ts';
import { ResilienceMetrics } from './metrics.ts';
import { OperationSpans } from './spans.ts';

export interface TelemetryProviders {
  readonly tracer: () => Tracer;
  readonly meter: Meter;
  readonly logger: () => Logger;
}

export class ResilienceTelemetry {
  readonly metrics: ResilienceMetrics;
  readonly spans: OperationSpans;
  readonly logs: ResilienceLogs;
  readonly #diag: DiagLogger;
  #reported = false;
  #registry: PolicyRegistry | undefined;
  #subscriptions: IDisposable[] = [];
  /** When each target's breaker last opened (for "closed after 12.3 s"). */
  readonly #openedAt = new Map<string, number>();

  /** `settings`: the resolved `telemetry` section (the health endpoint is the instrumentation's). */
  constructor(
    settings: Pick<TelemetrySettings, 'logLevel' | 'operationSpans'>,
    providers: TelemetryProviders,
    logger: DiagLogger = diag,
  ) {
    this.#diag = logger;
    const onError = this.reportError;
    this.metrics = new ResilienceMetrics(providers.meter, onError);
    this.spans = new OperationSpans(providers.tracer, settings.operationSpans, this.#errorType, onError);
    this.logs = new ResilienceLogs(providers.logger, settings.logLevel);
    setListenerErrorHandler(onError);
  }

  /** Reports the first telemetry failure through diag; later ones are dropped. */
  readonly reportError = (error: unknown): void => {
    if (this.#reported) return;
    this.#reported = true;
    this.#diag.error('pg-resilience: a telemetry call failed; queries are unaffected (reported once)', error);
  };

  setMeter(meter: Meter): void {
    try {
      this.metrics.setMeter(meter);
    } catch (error) {
      this.reportError(error);
    }
  }

  /** Follows a registry's targets: the ones it has and every one it creates (and a leak detector's findings). */
  attach(registry: PolicyRegistry, leaks?: LeakDetector): void {
    this.detach();
    this.#registry = registry;
    if (leaks) {
      this.metrics.watchLeaks(leaks);
      this.#subscriptions.push(
        leaks.onLeak((e) => {
          this.metrics.clientLeaked(e);
          this.logs.clientLeaked(e);
        }),
      );
    }
    for (const target of Object.keys(registry.config.targets)) this.metrics.declareTarget(target);
    this.metrics.attach(registry);
    this.#subscriptions.push(registry.onTargetCreated(({ policy }) => this.#follow(policy)));
    for (const target of registry.targets()) {
      const policy = registry.get(target);
      if (policy) this.#follow(policy);
    }
  }

  detach(): void {
    this.metrics.detach();
    this.metrics.watchLeaks(undefined);
    for (const s of this.#subscriptions) s.dispose();
    this.#subscriptions = [];
    if (this.#registry) {
      for (const target of this.#registry.targets()) this.#registry.get(target)?.observe(undefined);
    }
    this.#registry = undefined;
  }

  clientErrorAbsorbed(event: ClientErrorAbsorbedEvent): void {
    try {
      this.metrics.clientErrorAbsorbed(event);
      this.logs.clientErrorAbsorbed(event);
    } catch (error) {
      this.reportError(error);
    }
  }

  connectionsEvicted(event: ConnectionsEvictedEvent): void {
    try {
      this.metrics.connectionsEvicted(event);
      this.logs.connectionsEvicted(event);
    } catch (error) {
      this.reportError(error);
    }
  }

  /** A server of a multi-host target changed role, or an address flipped (instrumentation/failover.ts). */
  failoverDetected(event: FailoverEvent): void {
    try {
      this.metrics.failoverDetected(event);
      this.logs.failoverDetected(event);
      if (event.evicted > 0) {
        this.connectionsEvicted({ target: event.target, reason: 'failover', count: event.evicted });
      }
    } catch (error) {
      this.reportError(error);
    }
  }

  /** Writes succeed again after a failover (instrumentation/write-availability.ts). */
  writesRestored(event: WritesRestoredEvent): void {
    try {
      this.metrics.writesRestored(event);
      this.logs.writesRestored(event);
    } catch (error) {
      this.reportError(error);
    }
  }

  readonly #errorType = (error: unknown): string => {
    const registry = this.#registry;
    if (registry) return registry.classify(error).errorType;
    return error instanceof Error ? error.name : 'unknown';
  };

  #follow(policy: TargetPolicy): void {
    if (this.spans.enabled) policy.observe(this.spans);
    const logs = this.logs;
    this.#subscriptions.push(
      policy.onRetry((e) => logs.retry(e)),
      policy.onRetryExhausted((e) => logs.retryExhausted(e)),
      policy.onRetrySuppressed((e) => logs.retrySuppressed(e)),
      policy.onCircuitStateChange((e) => {
        const errorType = e.error === undefined ? undefined : this.#errorType(e.error);
        let openFor: number | undefined;
        if (e.to === 'open' && e.from === 'closed') this.#openedAt.set(e.target, e.at);
        if (e.to === 'closed') {
          const opened = this.#openedAt.get(e.target);
          if (opened !== undefined) openFor = e.at - opened;
          this.#openedAt.delete(e.target);
        }
        this.spans.circuitStateChange(e, errorType);
        logs.circuitStateChange(e, errorType, openFor);
      }),
      policy.onRateLimitRejected((e) => logs.rateLimitRejected(e)),
      policy.onBulkheadRejected((e) => logs.bulkheadRejected(e)),
      policy.onTimeout((e) => logs.timeout(e)),
      policy.onRecoveryAttempt((e) =>
        logs.recoveryAttempt(e, e.error === undefined ? undefined : this.#errorType(e.error)),
      ),
      policy.onCommitOutcome((e) => logs.transactionOutcomeResolution(e)),
    );
  }
}
