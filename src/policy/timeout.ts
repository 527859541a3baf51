/**
 * Per-attempt timeout (aggressive: the caller gets OperationTimeoutError at the deadline even if the
 * attempt never settles).
 *
 * Not built on cockatiel's `timeout(ms, TimeoutStrategy.Aggressive)`, which does more per call: it
 * allocates an AbortController, an abort-event subscription, a never-resolving `Event.toPromise`,
 * `Promise.race`, two async wrappers and the executor's result object; by default it also aborts the signal on every *successful* return, which
 * would tell our callers "the deadline passed, clean up" when it did not. Its timer is not injectable
 * (no fake clock). This version costs one AbortController, one promise and one timer
 * (set + cleared) per attempt, on the clock.
 *
 * At the deadline: the signal given to `fn` aborts with the OperationTimeoutError as its reason (so the
 * caller can clean up whatever arrives late, e.g. release a pool client), `onTimeout` fires, and the
 * call rejects. Whatever `fn` settles with afterwards is ignored (and its rejection handled).
 * A caller's signal that aborts first aborts `fn`'s signal too and rejects with its reason.
 *
 * A statement (`cancel` given, `graceMs` > 0): at the deadline the signal aborts and `onTimeout` fires as
 * above, then `cancel` asks the server to stop the statement; the call settles with what it answers,
 * within the grace the hook itself bounds (the result if the statement finished, a timeout error that
 * says whether it ran), reported as `onCancel`. `fn`'s own late settlement is then ignored.
 */
import type { Event } from 'cockatiel';
import { OperationTimeoutError } from '../errors.ts';
import { type Clock, keepAlive, realClock } from './clock.ts';
import {
  type OperationKind,
  SafeEventEmitter,
  type StatementCancelEvent,
  type TimeoutEvent,
} from './events.ts';
import type { CancelHook, CancelOutcome } from './types.ts';

export class TimeoutPolicy {
  private readonly timeoutEmitter = new SafeEventEmitter<TimeoutEvent>();
  /** An attempt hit its deadline. */
  readonly onTimeout: Event<TimeoutEvent> = this.timeoutEmitter.addListener;

  private readonly cancelEmitter = new SafeEventEmitter<StatementCancelEvent>();
  /** A timed-out statement's cancel ended (cancelled, completed, no_answer). */
  readonly onCancel: Event<StatementCancelEvent> = this.cancelEmitter.addListener;

  readonly ms: number;
  /** How long a cancel may wait for the statement's answer; 0 = no cancel. */
  readonly graceMs: number;
  private readonly target: string;
  private readonly clock: Clock;

  constructor(ms: number, target: string, clock: Clock = realClock, graceMs = 0) {
    this.ms = ms;
    this.target = target;
    this.clock = clock;
    this.graceMs = graceMs;
  }

  /**
   * Runs `fn` with a signal that aborts at the deadline. Resolves or rejects as `fn` does if it settles
   * in time; otherwise rejects with OperationTimeoutError(target, operation, ms).
   */
  execute<T>(
    fn: (signal: AbortSignal) => Promise<T>,
    operation: OperationKind,
    signal?: AbortSignal,
    cancel?: CancelHook,
  ): Promise<T> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const ctrl = new AbortController();
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      /** The cancel hook took over at the deadline: it decides the outcome, not `fn`. */
      let stopping = false;
      const onOuterAbort = (): void => {
        if (settled) return;
        settled = true;
        this.clock.clearTimeout(timer);
        ctrl.abort(signal!.reason);
        reject(signal!.reason);
      };
      const timer = this.clock.setTimeout(() => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onOuterAbort);
        const error = new OperationTimeoutError(this.target, operation, this.ms);
        const late = cancel && this.graceMs > 0 ? this.startCancel(cancel, error) : undefined;
        ctrl.abort(error);
        this.timeoutEmitter.emit({ target: this.target, operation, timeoutMs: this.ms });
        if (late === undefined) {
          reject(error);
          return;
        }
        stopping = true;
        late.then(
          (outcome) => {
            this.cancelEmitter.emit({ target: this.target, operation, result: outcome.result });
            if (outcome.ok) resolve(outcome.value as T);
            else reject(outcome.error);
          },
          () => reject(error),
        );
      }, this.ms);
      // Someone awaits this attempt: one stuck on something holding no handle must still time out.
      keepAlive(timer);
      signal?.addEventListener('abort', onOuterAbort, { once: true });

      let result: Promise<T>;
      try {
        result = fn(ctrl.signal);
      } catch (error) {
        result = Promise.reject(error);
      }
      const finished = (): void => {
        if (settled) return;
        settled = true;
        this.clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onOuterAbort);
      };
      // `fn`'s promise settles this one through a chain ending in `resolve`/`reject` themselves (a no-op
      // once the deadline rejected it): V8's async stack traces follow such a chain, so an error that pg
      // re-captures on rejection still names the app's async callers.
      // Once a cancel took over, the chain waits forever (a fresh pending promise, collected with it).
      result
        .then(
          (value) => {
            if (stopping) return new Promise<T>(() => {});
            finished();
            return value;
          },
          (error: unknown) => {
            if (stopping) return new Promise<T>(() => {});
            finished();
            throw error;
          },
        )
        .then(resolve, reject);
    });
  }

  /** Calls the cancel hook; a hook that throws cancels nothing. */
  private startCancel(cancel: CancelHook, error: OperationTimeoutError): Promise<CancelOutcome> | undefined {
    try {
      return cancel(error, this.graceMs);
    } catch {
      return undefined;
    }
  }
}

/** A TimeoutPolicy, or undefined for 0 (off: no wrapper, no cost). `graceMs`: see `timeout.cancelGraceMs`. */
export function createTimeout(
  ms: number,
  target: string,
  clock?: Clock,
  graceMs = 0,
): TimeoutPolicy | undefined {
  return ms > 0 && Number.isFinite(ms) ? new TimeoutPolicy(ms, target, clock, graceMs) : undefined;
}
