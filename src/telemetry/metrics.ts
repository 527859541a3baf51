/**
 * Metrics: every policy event of every target, recorded on the instruments the catalog defines.
 *
 * - Counters and histograms are fed by the policies' events (TargetPolicy.onX); the breaker state and
 *   the rate-limit queue size are observed at collection time from the policies themselves, so they are
 *   right even when nothing happened since the last scrape.
 * - Zero series: when a target becomes known (its policies are created, or it is named in the
 *   configuration's `targets`), every counter gets a zero-valued series for each enumerated attribute
 *   value (operation, reason, state pair, outcome, source), so dashboards and `rate()` work before the
 *   first failure. Histograms appear with the target's first operation.
 * - The meter can change after construction (the SDK hands the instrumentation its MeterProvider when it
 *   starts): `setMeter()` creates the instruments again and re-adds the zero series of every known target.
 * - Recording never throws into the app: the events are emitted through SafeEventEmitter, and the
 *   observable callbacks catch their own errors.
 */
import {
  type Attributes,
  type Counter,
  createNoopMeter,
  type Histogram,
  type Meter,
  type ObservableResult,
} from '@opentelemetry/api';
import type { IDisposable } from 'cockatiel';
import type { TargetPolicy } from '../policy/pipeline.ts';
import type { ConnectionBudget } from '../policy/connection-budget.ts';
import type { PolicyRegistry } from '../policy/registry.ts';
import type { OperationEvent } from '../policy/types.ts';
import type { ClientErrorAbsorbedEvent } from '../crash-guards/error-guards.ts';
import type { ConnectionsEvictedEvent } from '../instrumentation/eviction.ts';
import type { FailoverEvent } from '../instrumentation/failover.ts';
import type { HostRoleReading } from '../instrumentation/host-choice.ts';
import type { WritesRestoredEvent } from '../instrumentation/write-availability.ts';
import type { LeakDetector, LeakEvent } from '../instrumentation/leak-detection.ts';
import { ATTR, ATTRIBUTE_VALUES, METRICS, type MetricSpec } from './catalog.ts';

const S_PER_MS = 1e-3;
/** Pending operation durations are recorded within this long (a timer armed by the first one)… */
const FLUSH_AFTER_MS = 100;
/** …or on the next turn of the event loop once this many entries (two per operation) wait. */
const FLUSH_SOON = 512;
const OPERATIONS = ATTRIBUTE_VALUES[ATTR.OPERATION];
const STATES = ATTRIBUTE_VALUES[ATTR.STATE];
/** The breaker transitions that can happen (for zero series). */
const TRANSITIONS = [
  ['closed', 'open'],
  ['open', 'half_open'],
  ['half_open', 'closed'],
  ['half_open', 'open'],
] as const;

interface Instruments {
  readonly operationDuration: Histogram;
  readonly retries: Counter;
  readonly retryExhausted: Counter;
  readonly retrySuppressed: Counter;
  readonly circuitTransitions: Counter;
  readonly circuitRejections: Counter;
  readonly rateLimitWaitDuration: Histogram;
  readonly rateLimitRejections: Counter;
  readonly bulkheadRejections: Counter;
  readonly timeouts: Counter;
  readonly statementCancellations: Counter;
  readonly recoveryAttempts: Counter;
  readonly transactionOutcomeResolutions: Counter;
  readonly poolClientErrors: Counter;
  readonly connectionsEvicted: Counter;
  readonly failovers: Counter;
  readonly writeUnavailability: Histogram;
  readonly poolClientLeaks: Counter;
  readonly coordinationCommands: Counter;
  readonly connectionBudgetWaitDuration: Histogram;
  readonly connectionBudgetExhausted: Counter;
  readonly circuitFleetProbes: Counter;
}

function histogram(meter: Meter, spec: MetricSpec): Histogram {
  return meter.createHistogram(spec.name, {
    unit: spec.unit,
    description: spec.description,
    advice: spec.buckets ? { explicitBucketBoundaries: [...spec.buckets] } : undefined,
  });
}

function counter(meter: Meter, spec: MetricSpec): Counter {
  return meter.createCounter(spec.name, { unit: spec.unit, description: spec.description });
}

function createInstruments(meter: Meter): Instruments {
  return {
    operationDuration: histogram(meter, METRICS.operationDuration),
    retries: counter(meter, METRICS.retries),
    retryExhausted: counter(meter, METRICS.retryExhausted),
    retrySuppressed: counter(meter, METRICS.retrySuppressed),
    circuitTransitions: counter(meter, METRICS.circuitTransitions),
    circuitRejections: counter(meter, METRICS.circuitRejections),
    rateLimitWaitDuration: histogram(meter, METRICS.rateLimitWaitDuration),
    rateLimitRejections: counter(meter, METRICS.rateLimitRejections),
    bulkheadRejections: counter(meter, METRICS.bulkheadRejections),
    timeouts: counter(meter, METRICS.timeouts),
    statementCancellations: counter(meter, METRICS.statementCancellations),
    recoveryAttempts: counter(meter, METRICS.recoveryAttempts),
    transactionOutcomeResolutions: counter(meter, METRICS.transactionOutcomeResolutions),
    poolClientErrors: counter(meter, METRICS.poolClientErrors),
    connectionsEvicted: counter(meter, METRICS.connectionsEvicted),
    failovers: counter(meter, METRICS.failovers),
    writeUnavailability: histogram(meter, METRICS.writeUnavailability),
    poolClientLeaks: counter(meter, METRICS.poolClientLeaks),
    coordinationCommands: counter(meter, METRICS.coordinationCommands),
    connectionBudgetWaitDuration: histogram(meter, METRICS.connectionBudgetWaitDuration),
    connectionBudgetExhausted: counter(meter, METRICS.connectionBudgetExhausted),
    circuitFleetProbes: counter(meter, METRICS.circuitFleetProbes),
  };
}

export class ResilienceMetrics {
  #instruments: Instruments;
  #registry: PolicyRegistry | undefined;
  #subscriptions: IDisposable[] = [];
  /** Targets whose zero series were added (re-added on a new meter). */
  readonly #known = new Set<string>();
  /** Per target, the attributes `{target}` (shared, never mutated). */
  readonly #targetAttrs = new Map<string, Attributes>();
  readonly #onError: (error: unknown) => void;
  /** The leak detector whose unreleased leaked clients the gauge reports. */
  #leaks: Pick<LeakDetector, 'leaked'> | undefined;

  constructor(meter: Meter, onError: (error: unknown) => void = () => {}) {
    this.#onError = onError;
    this.#instruments = this.#setUp(meter);
  }

  /** Uses a new meter (the SDK's): instruments created again, zero series re-added. */
  setMeter(meter: Meter): void {
    this.#recordPending();
    this.#instruments = this.#setUp(meter);
    this.#zeroCoordination();
    for (const target of this.#known) this.#zero(target);
  }

  /** The slowest coordination command since the last collection, in ms. */
  #slowestCommandMs = 0;

  /** Follows a registry's targets (the current one; a previous registry is forgotten). */
  attach(registry: PolicyRegistry): void {
    this.detach();
    this.#registry = registry;
    this.#zeroCoordination();
    const coordinator = registry.coordinator;
    if (coordinator) {
      this.#subscriptions.push(
        coordinator.onCommand((e) => {
          this.#instruments.coordinationCommands.add(1, { [ATTR.OUTCOME]: e.ok ? 'success' : 'failure' });
          this.#slowestCommandMs = Math.max(this.#slowestCommandMs, e.durationMs);
        }),
        coordinator.onFleetProbe((e) => {
          this.#instruments.circuitFleetProbes.add(1, {
            [ATTR.TARGET]: e.target,
            [ATTR.RESULT]: e.taken ? 'taken' : 'skipped',
          });
        }),
      );
    }
    this.#subscriptions.push(registry.onTargetCreated(({ policy }) => this.#follow(policy)));
    for (const target of registry.targets()) {
      const policy = registry.get(target);
      if (policy) this.#follow(policy);
    }
  }

  detach(): void {
    this.#recordPending();
    for (const s of this.#subscriptions) s.dispose();
    this.#subscriptions = [];
    this.#registry = undefined;
  }

  /** A target known before its first use (named in the configuration): zero series now. */
  declareTarget(target: string): void {
    if (this.#known.has(target)) return;
    this.#known.add(target);
    this.#zero(target);
  }

  /** An 'error' on a pg pool or client was absorbed (crash-guards/error-guards.ts). */
  clientErrorAbsorbed(event: ClientErrorAbsorbedEvent): void {
    this.#instruments.poolClientErrors.add(1, {
      [ATTR.TARGET]: event.target,
      [ATTR.SOURCE]: event.source,
      [ATTR.ERROR_TYPE]: event.errorType,
    });
  }

  /** Idle pooled connections were closed (instrumentation/eviction.ts). */
  connectionsEvicted(event: ConnectionsEvictedEvent): void {
    this.#instruments.connectionsEvicted.add(event.count, {
      [ATTR.TARGET]: event.target,
      [ATTR.REASON]: event.reason,
    });
  }

  /** A failover signal (instrumentation/failover.ts): the first of each failover is counted. */
  failoverDetected(event: FailoverEvent): void {
    if (!event.first) return;
    this.#instruments.failovers.add(1, { [ATTR.TARGET]: event.target, [ATTR.KIND]: event.kind });
  }

  /** Writes succeed again after a failover (instrumentation/write-availability.ts). */
  writesRestored(event: WritesRestoredEvent): void {
    this.#instruments.writeUnavailability.record(event.durationMs * S_PER_MS, {
      [ATTR.TARGET]: event.target,
      [ATTR.KIND]: event.kind,
    });
  }

  /** Where the role gauge reads every multi-host target's hosts (undefined: none). */
  #hostRoles: (() => readonly HostRoleReading[]) | undefined;

  /** Reports the hosts' roles from `source` in the role gauge (undefined: none). */
  watchHostRoles(source: (() => readonly HostRoleReading[]) | undefined): void {
    this.#hostRoles = source;
  }

  /** Reports the leaked clients of `detector` in the gauge (undefined: none). */
  watchLeaks(detector: Pick<LeakDetector, 'leaked'> | undefined): void {
    this.#leaks = detector;
  }

  /** A client checked out with pool.connect() was reported as leaked (instrumentation/leak-detection.ts). */
  clientLeaked(event: LeakEvent): void {
    this.#instruments.poolClientLeaks.add(1, { [ATTR.TARGET]: event.target, [ATTR.REASON]: event.reason });
  }

  /** Attributes of successful operations, per target and operation (the hot path: no allocation). */
  readonly #successAttrs = new Map<string, Map<string, Attributes>>();

  /**
   * Operation durations not yet recorded, as pairs (attributes, seconds). The histogram's `record()`
   * hashes its attributes on every call (about 1.5 µs per operation in our profile), so the durations
   * are recorded in batches, off the path between a statement's answer and the caller's next statement:
   * every FLUSH_AFTER_MS (an unref'd timer; a turn of the event loop per operation, as setImmediate
   * would take, cost more than the recording at concurrency 1), or on the next turn once FLUSH_SOON
   * entries wait, and at the latest before any collection (the circuit-state gauge's callback:
   * observable callbacks run before synchronous instruments are collected), so a scrape, a forceFlush()
   * or a shutdown misses nothing.
   */
  #pendingDurations: (Attributes | number)[] = [];
  #flushTimer: NodeJS.Timeout | undefined;

  /** Records the pending operation durations (never throws: the histogram is the SDK's or a no-op). */
  readonly #recordPending = (): void => {
    if (this.#flushTimer !== undefined) {
      clearTimeout(this.#flushTimer);
      this.#flushTimer = undefined;
    }
    const pending = this.#pendingDurations;
    if (pending.length === 0) return;
    this.#pendingDurations = [];
    const histogram = this.#instruments.operationDuration;
    try {
      for (let i = 0; i < pending.length; i += 2) {
        histogram.record(pending[i + 1] as number, pending[i] as Attributes);
      }
    } catch (error) {
      this.#onError(error);
    }
  };

  /** The operation-duration listener (exposed for the pipeline's onOperation). */
  readonly recordOperation = (e: OperationEvent): void => {
    let attrs: Attributes | undefined;
    if (e.outcome === 'success' && e.errorType === undefined) {
      let byOperation = this.#successAttrs.get(e.target);
      if (byOperation === undefined) this.#successAttrs.set(e.target, (byOperation = new Map()));
      attrs = byOperation.get(e.operation);
      if (attrs === undefined) {
        attrs = { [ATTR.TARGET]: e.target, [ATTR.OPERATION]: e.operation, [ATTR.OUTCOME]: 'success' };
        byOperation.set(e.operation, attrs);
      }
    } else {
      attrs = { [ATTR.TARGET]: e.target, [ATTR.OPERATION]: e.operation, [ATTR.OUTCOME]: e.outcome };
      if (e.errorType !== undefined) attrs[ATTR.ERROR_TYPE] = e.errorType;
    }
    const pending = this.#pendingDurations;
    pending.push(attrs, e.durationMs * S_PER_MS);
    if (this.#flushTimer === undefined) {
      this.#flushTimer = setTimeout(this.#recordPending, FLUSH_AFTER_MS);
      this.#flushTimer.unref();
    } else if (pending.length === FLUSH_SOON) setImmediate(this.#recordPending);
  };

  #follow(policy: TargetPolicy): void {
    const target = policy.target;
    this.declareTarget(target);
    const i = (): Instruments => this.#instruments;
    this.#subscriptions.push(
      policy.onOperation(this.recordOperation),
      policy.onRetry((e) =>
        i().retries.add(1, {
          [ATTR.TARGET]: target,
          [ATTR.OPERATION]: e.operation,
          [ATTR.ERROR_TYPE]: e.errorType,
        }),
      ),
      policy.onRetryExhausted((e) =>
        i().retryExhausted.add(1, {
          [ATTR.TARGET]: target,
          [ATTR.OPERATION]: e.operation,
          [ATTR.ERROR_TYPE]: e.errorType,
        }),
      ),
      policy.onRetrySuppressed((e) =>
        i().retrySuppressed.add(1, {
          [ATTR.TARGET]: target,
          [ATTR.OPERATION]: e.operation,
          [ATTR.REASON]: e.reason,
          [ATTR.ERROR_TYPE]: e.errorType,
        }),
      ),
      policy.onCircuitStateChange((e) =>
        i().circuitTransitions.add(1, { [ATTR.TARGET]: target, [ATTR.FROM]: e.from, [ATTR.TO]: e.to }),
      ),
      policy.onCircuitRejected((e) =>
        i().circuitRejections.add(1, { [ATTR.TARGET]: target, [ATTR.OPERATION]: e.operation }),
      ),
      policy.onRateLimitWait((e) =>
        i().rateLimitWaitDuration.record(e.waitedMs * S_PER_MS, {
          [ATTR.TARGET]: target,
          [ATTR.OPERATION]: e.operation,
        }),
      ),
      policy.onRateLimitRejected((e) => {
        // `aborted`: the caller gave up (its own AbortSignal), not a refusal by the limiter.
        if (e.reason === 'aborted') return;
        i().rateLimitRejections.add(1, {
          [ATTR.TARGET]: target,
          [ATTR.OPERATION]: e.operation,
          [ATTR.REASON]: e.reason,
        });
      }),
      policy.onBulkheadRejected((e) =>
        i().bulkheadRejections.add(1, { [ATTR.TARGET]: target, [ATTR.OPERATION]: e.operation }),
      ),
      policy.onTimeout((e) => i().timeouts.add(1, { [ATTR.TARGET]: target, [ATTR.OPERATION]: e.operation })),
      policy.connectionBudget?.onWait((e) => {
        const exhausted = e.outcome === 'exhausted';
        i().connectionBudgetWaitDuration.record(e.waitedMs * S_PER_MS, {
          [ATTR.TARGET]: target,
          [ATTR.OUTCOME]: exhausted ? 'rejected' : 'success',
        });
        if (exhausted) i().connectionBudgetExhausted.add(1, { [ATTR.TARGET]: target });
      }) ?? { dispose() {} },
      policy.onStatementCancel((e) =>
        i().statementCancellations.add(1, { [ATTR.TARGET]: target, [ATTR.RESULT]: e.result }),
      ),
      policy.onRecoveryAttempt((e) =>
        i().recoveryAttempts.add(1, { [ATTR.TARGET]: target, [ATTR.OUTCOME]: e.outcome }),
      ),
      policy.onCommitOutcome((e) =>
        i().transactionOutcomeResolutions.add(1, { [ATTR.TARGET]: target, [ATTR.RESULT]: e.result }),
      ),
    );
  }

  /** Zero-valued series of every counter for `target`. */
  #zero(target: string): void {
    try {
      this.#zeroOn(this.#instruments, target);
    } catch (error) {
      this.#onError(error);
    }
  }

  #zeroOn(i: Instruments, target: string): void {
    const t = { [ATTR.TARGET]: target };
    this.#targetAttrs.set(target, t);
    for (const operation of OPERATIONS) {
      const o = { ...t, [ATTR.OPERATION]: operation };
      i.retries.add(0, o);
      i.retryExhausted.add(0, o);
      i.circuitRejections.add(0, o);
      i.bulkheadRejections.add(0, o);
      i.timeouts.add(0, o);
      for (const reason of ATTRIBUTE_VALUES.retrySuppressedReason) {
        i.retrySuppressed.add(0, { ...o, [ATTR.REASON]: reason });
      }
      for (const reason of ATTRIBUTE_VALUES.rateLimitRejectedReason) {
        i.rateLimitRejections.add(0, { ...o, [ATTR.REASON]: reason });
      }
    }
    for (const [from, to] of TRANSITIONS) {
      i.circuitTransitions.add(0, { ...t, [ATTR.FROM]: from, [ATTR.TO]: to });
    }
    for (const outcome of ATTRIBUTE_VALUES.recoveryOutcome) {
      i.recoveryAttempts.add(0, { ...t, [ATTR.OUTCOME]: outcome });
    }
    i.connectionBudgetExhausted.add(0, t);
    for (const result of ATTRIBUTE_VALUES.transactionOutcomeResult) {
      i.transactionOutcomeResolutions.add(0, { ...t, [ATTR.RESULT]: result });
    }
    for (const source of ATTRIBUTE_VALUES[ATTR.SOURCE]) {
      i.poolClientErrors.add(0, { ...t, [ATTR.SOURCE]: source });
    }
    for (const reason of ATTRIBUTE_VALUES.evictionReason) {
      i.connectionsEvicted.add(0, { ...t, [ATTR.REASON]: reason });
    }
    for (const result of ATTRIBUTE_VALUES.statementCancellationResult) {
      i.statementCancellations.add(0, { ...t, [ATTR.RESULT]: result });
    }
    for (const reason of ATTRIBUTE_VALUES.leakReason) {
      i.poolClientLeaks.add(0, { ...t, [ATTR.REASON]: reason });
    }
    for (const kind of ATTRIBUTE_VALUES[ATTR.KIND]) {
      i.failovers.add(0, { ...t, [ATTR.KIND]: kind });
    }
  }

  /** Zero series of the coordination counter: present (and rate() works) before the first command. */
  #zeroCoordination(): void {
    try {
      for (const outcome of ATTRIBUTE_VALUES.coordinationOutcome) {
        this.#instruments.coordinationCommands.add(0, { [ATTR.OUTCOME]: outcome });
      }
    } catch (error) {
      this.#onError(error);
    }
  }

  /** The instruments on `meter`; on a meter that throws, reported once and no-op instruments instead. */
  #setUp(meter: Meter): Instruments {
    try {
      return this.#createOn(meter);
    } catch (error) {
      this.#onError(error);
      return createInstruments(createNoopMeter());
    }
  }

  #createOn(meter: Meter): Instruments {
    const instruments = createInstruments(meter);
    const state = meter.createObservableGauge(METRICS.circuitState.name, {
      unit: METRICS.circuitState.unit,
      description: METRICS.circuitState.description,
    });
    state.addCallback((result) => {
      this.#recordPending();
      this.#observe(result, (policy, target) => {
        const current = policy.circuitState;
        for (const s of STATES) result.observe(s === current ? 1 : 0, { ...target, [ATTR.STATE]: s });
      });
    });
    const queue = meter.createObservableUpDownCounter(METRICS.rateLimitQueueSize.name, {
      unit: METRICS.rateLimitQueueSize.unit,
      description: METRICS.rateLimitQueueSize.description,
    });
    queue.addCallback((result) =>
      this.#observe(result, (policy, target) => {
        result.observe(policy.snapshot().rateLimit?.queueSize ?? 0, target);
      }),
    );
    const leaked = meter.createObservableGauge(METRICS.poolClientsLeaked.name, {
      unit: METRICS.poolClientsLeaked.unit,
      description: METRICS.poolClientsLeaked.description,
    });
    leaked.addCallback((result) => {
      const counts = this.#leaks?.leaked();
      this.#observe(result, (_policy, target) => {
        result.observe(counts?.get(String(target[ATTR.TARGET])) ?? 0, target);
      });
    });
    const roles = meter.createObservableGauge(METRICS.hostRole.name, {
      unit: METRICS.hostRole.unit,
      description: METRICS.hostRole.description,
    });
    roles.addCallback((result) => {
      try {
        for (const h of this.#hostRoles?.() ?? []) {
          for (const role of ATTRIBUTE_VALUES[ATTR.ROLE]) {
            result.observe(role === h.role ? 1 : 0, {
              [ATTR.TARGET]: h.target,
              [ATTR.SERVER_ADDRESS]: h.host,
              [ATTR.SERVER_PORT]: h.port,
              [ATTR.ROLE]: role,
            });
          }
        }
      } catch (error) {
        this.#onError(error);
      }
    });
    const budgetGauge = (spec: MetricSpec, read: (b: ConnectionBudget) => number) =>
      meter
        .createObservableGauge(spec.name, { unit: spec.unit, description: spec.description })
        .addCallback((result) =>
          this.#observe(result, (policy, target) => {
            const budget = policy.connectionBudget;
            result.observe(budget ? read(budget) : 0, target);
          }),
        );
    budgetGauge(METRICS.connectionBudgetHeld, (b) => b.held);
    budgetGauge(METRICS.connectionBudgetCapacity, (b) => b.capacity);
    this.#observeCoordination(meter);
    return instruments;
  }

  /** Coordination mode, members and latency, read at collection (process-wide: no target). */
  #observeCoordination(meter: Meter): void {
    const gauge = (spec: MetricSpec) =>
      meter.createObservableGauge(spec.name, { unit: spec.unit, description: spec.description });
    gauge(METRICS.coordinationMode).addCallback((result) => {
      const coordinator = this.#registry?.coordinator;
      const current = coordinator ? coordinator.mode : 'off';
      for (const mode of ATTRIBUTE_VALUES[ATTR.MODE]) {
        result.observe(mode === current ? 1 : 0, { [ATTR.MODE]: mode });
      }
    });
    gauge(METRICS.coordinationMembers).addCallback((result) => {
      result.observe(this.#registry?.coordinator?.members ?? 1);
    });
    gauge(METRICS.circuitFleetOpen).addCallback((result) => {
      const states = this.#registry?.coordinator?.fleetBreakerStates();
      for (const [target, state] of states ?? []) {
        result.observe(state === 'open' ? 1 : 0, { [ATTR.TARGET]: target });
      }
    });
    gauge(METRICS.coordinationLatency).addCallback((result) => {
      result.observe(this.#slowestCommandMs * S_PER_MS);
      this.#slowestCommandMs = 0;
    });
  }

  /** Calls `each` for every known target (a target named in the configuration but unused: closed, empty). */
  #observe(
    result: ObservableResult,
    each: (
      policy: Pick<TargetPolicy, 'circuitState' | 'snapshot' | 'connectionBudget'>,
      target: Attributes,
    ) => void,
  ): void {
    try {
      for (const target of this.#known) {
        const policy = this.#registry?.get(target) ?? IDLE_TARGET;
        each(policy, this.#targetAttrs.get(target) ?? { [ATTR.TARGET]: target });
      }
    } catch (error) {
      this.#onError(error);
    }
    void result;
  }
}

/** How a known target without policies yet looks to the observers. */
const IDLE_TARGET: Pick<TargetPolicy, 'circuitState' | 'snapshot' | 'connectionBudget'> = {
  circuitState: 'closed',
  connectionBudget: undefined,
  snapshot: () => ({ rateLimit: null }) as unknown as ReturnType<TargetPolicy['snapshot']>,
};
