/**
 * Background recovery for one target: while its breaker is not closed, probe it every `intervalMs`
 * through `breaker.probe()` (which half-opens an open breaker early), so a server that is back closes the
 * breaker without risking user traffic on it, and without waiting for any traffic at all.
 *
 * - An outage starts when the breaker opens and ends when it closes. Probes run on a schedule from the
 *   opening: the first after `firstProbeMs`, the gaps doubling up to `intervalMs`, then every
 *   `intervalMs` (a restart is often over before a whole interval). Never two at once: a probe slower
 *   than a gap makes the loop skip schedule points, not overlap. Re-openings within the outage (a
 *   failed probe, failed traffic) keep the schedule and the attempt count.
 * - After `maxAttempts` probes in one outage (0 = no limit) the loop stops, leaving recovery to traffic
 *   (the breaker half-opens on its own timer); the next outage starts with a fresh count.
 * - When every half-open slot is taken (traffic is probing already), the attempt is skipped: not counted,
 *   no event.
 * - When the breaker closes while a probe is running (traffic closed it), or on dispose(), the probe's
 *   signal is aborted and its outcome is not reported.
 *
 * Hand-written: the pg-specific probe (connect + SELECT 1) is supplied by the instrumentation.
 */
import type { Event, IDisposable } from 'cockatiel';
import type { RecoverySettings } from '../config/types.ts';
import type { CircuitBreaker } from './circuit-breaker.ts';
import { type Clock, realClock } from './clock.ts';
import { type CircuitStateChangeEvent, type RecoveryAttemptEvent, SafeEventEmitter } from './events.ts';

/** One running probe. */
interface Running {
  readonly controller: AbortController;
  /** The probe function has settled (its outcome is what the breaker records). */
  settled: boolean;
}

export class RecoveryLoop {
  readonly target: string;
  readonly #enabled: boolean;
  readonly #intervalMs: number;
  readonly #firstProbeMs: number;
  readonly #maxAttempts: number;
  readonly #breaker: CircuitBreaker;
  readonly #probe: (signal: AbortSignal) => Promise<void>;
  readonly #clock: Clock;
  readonly #attempt = new SafeEventEmitter<RecoveryAttemptEvent>();
  #subscription: IDisposable | undefined;

  #inOutage = false;
  /** Schedule origin: when the current outage started. */
  #origin = 0;
  #attempts = 0;
  #timer: unknown;
  #nextAttemptAt: number | undefined;
  #running: Running | undefined;
  #disposed = false;
  /** Wraps each probe run (telemetry: the probe's span). */
  readonly #around: ((attempt: number, run: () => Promise<void>) => Promise<void>) | undefined;
  /** false: nobody uses the target any more (every pool and client ended): skip this probe. */
  readonly #active: (() => boolean) | undefined;
  /** Asked before each probe (the fleet's probe lock): false skips it (another process probes). */
  readonly #gate: (() => Promise<boolean>) | undefined;

  /** Fires when a probe finishes (not for skipped or aborted ones). */
  readonly onAttempt: Event<RecoveryAttemptEvent> = this.#attempt.addListener;

  constructor(
    settings: RecoverySettings,
    breaker: CircuitBreaker,
    probe: (signal: AbortSignal) => Promise<void>,
    target: string,
    clock: Clock = realClock,
    around?: (attempt: number, run: () => Promise<void>) => Promise<void>,
    active?: () => boolean,
    gate?: () => Promise<boolean>,
  ) {
    this.target = target;
    this.#enabled = settings.enabled;
    this.#intervalMs = Math.max(1, settings.intervalMs);
    this.#firstProbeMs = Math.max(1, Math.min(settings.firstProbeMs, this.#intervalMs));
    this.#maxAttempts = Math.max(0, settings.maxAttempts);
    this.#breaker = breaker;
    this.#probe = probe;
    this.#clock = clock;
    this.#around = around;
    this.#active = active;
    this.#gate = gate;
    if (!this.#enabled) return;
    this.#subscription = breaker.onStateChange((e) => this.#onStateChange(e));
    breaker.useRecoveryProbes((openedAt) => this.#probeAtFor(openedAt));
    if (breaker.state !== 'closed') this.#startOutage(clock.now());
  }

  /** Epoch ms of the next probe; undefined while none is scheduled (closed, probing now, stopped, disabled). */
  get nextAttemptAt(): number | undefined {
    return this.#nextAttemptAt;
  }

  /**
   * The next probe of an outage that opened at `openedAt` (asked by the breaker for the "next probe" it
   * announces, possibly before this loop has heard of the opening): the scheduled one, the one that
   * follows a running probe, or the outage's first. Undefined when none will come.
   */
  #probeAtFor(openedAt: number): number | undefined {
    if (this.#disposed) return undefined;
    if (!this.#inOutage) return this.#pointAfter(openedAt, openedAt);
    if (this.#nextAttemptAt !== undefined) return this.#nextAttemptAt;
    if (this.#maxAttempts > 0 && this.#attempts >= this.#maxAttempts) return undefined;
    return this.#pointAfter(Math.max(openedAt, this.#clock.now()));
  }

  /** Stops probing for good: clears the timer, aborts a running probe, stops listening to the breaker. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#subscription?.dispose();
    this.#subscription = undefined;
    this.#stop();
  }

  #onStateChange(e: CircuitStateChangeEvent): void {
    if (this.#disposed) return;
    if (e.to === 'closed') {
      this.#inOutage = false;
      this.#attempts = 0;
      this.#stop();
    } else if (e.to === 'open' && !this.#inOutage) {
      this.#startOutage(e.at);
    }
  }

  #startOutage(at: number): void {
    this.#inOutage = true;
    this.#attempts = 0;
    this.#origin = at;
    this.#schedule(this.#pointAfter(at));
  }

  /** The first schedule point strictly after `now` of the outage that opened at `origin`. */
  #pointAfter(now: number, origin = this.#origin): number {
    let at = origin;
    // The dense start: gaps of firstProbeMs, doubling while below the interval (a few steps at most).
    for (let gap = this.#firstProbeMs; gap < this.#intervalMs; gap *= 2) {
      at += gap;
      if (at > now) return at;
    }
    return at + (Math.floor((now - at) / this.#intervalMs) + 1) * this.#intervalMs;
  }

  #schedule(at: number): void {
    this.#clearTimer();
    this.#nextAttemptAt = at;
    this.#timer = this.#clock.setTimeout(
      () => {
        this.#timer = undefined;
        this.#nextAttemptAt = undefined;
        this.#run();
      },
      Math.max(0, at - this.#clock.now()),
    );
  }

  /** The next schedule point strictly after now. */
  #scheduleNext(): void {
    this.#schedule(this.#pointAfter(this.#clock.now()));
  }

  #run(): void {
    if (this.#disposed || !this.#inOutage || this.#running) return;
    if (this.#breaker.state === 'closed') {
      // Closed without us hearing it (cannot happen while subscribed; kept as a guard).
      this.#inOutage = false;
      return;
    }
    if (!this.#isActive()) {
      // Nobody uses the target now: no probe (its connection and telemetry would keep an app that has
      // finished alive), but keep the schedule on the unref'd timer in case the app comes back to it.
      this.#scheduleNext();
      return;
    }
    if (this.#gate) {
      // Holds the slot while asking, so no second probe starts meanwhile.
      const asking: Running = { controller: new AbortController(), settled: false };
      this.#running = asking;
      const gate = this.#gate;
      let answer: Promise<boolean>;
      try {
        answer = gate();
      } catch {
        answer = Promise.resolve(true);
      }
      answer
        .catch(() => true)
        .then((go) => {
          if (this.#running !== asking) return;
          this.#running = undefined;
          if (this.#disposed || !this.#inOutage) return;
          if (go) this.#probeNow();
          else this.#scheduleNext();
        });
      return;
    }
    this.#probeNow();
  }

  #probeNow(): void {
    if (this.#breaker.state === 'closed') {
      this.#inOutage = false;
      return;
    }
    const running: Running = { controller: new AbortController(), settled: false };
    this.#running = running;
    const attempt = ++this.#attempts;
    const startedAt = this.#clock.now();
    let ran = false;
    const probe = (): Promise<void> => {
      ran = true;
      let p: Promise<void>;
      try {
        p = this.#probe(running.controller.signal);
      } catch (error) {
        p = Promise.reject(error);
      }
      return p.finally(() => {
        running.settled = true;
      });
    };
    const go = (): Promise<void> => this.#breaker.probe(probe);
    let run: Promise<void>;
    try {
      run = this.#around ? this.#around(attempt, go) : go();
    } catch (error) {
      run = Promise.reject(error);
    }
    run.then(
      () => this.#finish(running, ran, attempt, startedAt, 'success', undefined),
      (error: unknown) => this.#finish(running, ran, attempt, startedAt, 'failure', error),
    );
  }

  #finish(
    running: Running,
    ran: boolean,
    attempt: number,
    startedAt: number,
    outcome: 'success' | 'failure',
    error: unknown,
  ): void {
    if (this.#running === running) this.#running = undefined;
    // Aborted by us (the breaker closed meanwhile, or dispose): the outcome says nothing.
    if (running.controller.signal.aborted) return;
    if (!ran) {
      // Every half-open slot was busy: traffic is probing. Not an attempt.
      if (this.#inOutage && this.#attempts === attempt) this.#attempts--;
    } else {
      const durationMs = this.#clock.now() - startedAt;
      this.#attempt.emit(
        outcome === 'success'
          ? { target: this.target, attempt, outcome, durationMs }
          : { target: this.target, attempt, outcome, durationMs, error },
      );
    }
    if (this.#disposed || !this.#inOutage) return;
    if (this.#maxAttempts > 0 && this.#attempts >= this.#maxAttempts) return;
    this.#scheduleNext();
  }

  #isActive(): boolean {
    if (this.#active === undefined) return true;
    try {
      return this.#active();
    } catch {
      return true;
    }
  }

  /** Clears the timer and aborts a probe still running. */
  #stop(): void {
    this.#clearTimer();
    this.#nextAttemptAt = undefined;
    const running = this.#running;
    this.#running = undefined;
    if (running && !running.settled) running.controller.abort();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      this.#clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }
}
