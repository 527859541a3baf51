/**
 * Bulkhead: at most `maxConcurrent` calls run at once for a target, `maxQueue` more wait (FIFO), the
 * rest are rejected at once. Built on cockatiel's `bulkhead(limit, queue)`; this wrapper converts its
 * rejection into our BulkheadRejectedError (which names the target and is classified as a
 * `resilience_rejection`: never retried, never counted by the breaker) and emits `onRejected` with the
 * operation (cockatiel's `onReject` carries no data).
 *
 * A caller's signal that is already aborted, or aborts while the call waits in the queue, rejects with
 * the signal's reason (cockatiel raises a TaskCancelledError; we surface the caller's own reason). A
 * queued call whose signal aborts keeps its queue slot until it reaches the head of the queue
 * (cockatiel checks the signal when it dequeues).
 */
import {
  bulkhead,
  type BulkheadPolicy as CockatielBulkhead,
  type Event,
  isBulkheadRejectedError,
} from 'cockatiel';
import type { BulkheadSettings } from '../config/types.ts';
import { BulkheadRejectedError } from '../errors.ts';
import { type BulkheadRejectedEvent, type OperationKind, SafeEventEmitter } from './events.ts';

export class BulkheadPolicy {
  private readonly inner: CockatielBulkhead;
  private readonly rejectedEmitter = new SafeEventEmitter<BulkheadRejectedEvent>();
  /** A call was rejected: every slot and every queue place was taken. */
  readonly onRejected: Event<BulkheadRejectedEvent> = this.rejectedEmitter.addListener;
  readonly maxConcurrent: number;
  readonly maxQueue: number;
  private readonly target: string;

  constructor(settings: BulkheadSettings, target: string) {
    this.target = target;
    this.maxConcurrent = settings.maxConcurrent;
    this.maxQueue = Math.max(0, settings.maxQueue);
    this.inner = bulkhead(this.maxConcurrent, this.maxQueue);
  }

  /** Calls running now. */
  get active(): number {
    return this.maxConcurrent - this.inner.executionSlots;
  }

  /** Calls waiting for a slot now. */
  get queued(): number {
    return this.maxQueue - this.inner.queueSlots;
  }

  /** Runs `fn` when a slot is free; rejects with BulkheadRejectedError when slots and queue are full. */
  async execute<T>(fn: () => Promise<T>, operation: OperationKind, signal?: AbortSignal): Promise<T> {
    try {
      return await this.inner.execute(fn, signal);
    } catch (error) {
      if (isBulkheadRejectedError(error)) {
        this.rejectedEmitter.emit({ target: this.target, operation });
        throw new BulkheadRejectedError(this.target, this.maxConcurrent, this.maxQueue);
      }
      // cockatiel's TaskCancelledError for an aborted caller: surface the caller's reason. Anything
      // else is fn's own error, rethrown as is.
      if (signal?.aborted && isCockatielCancellation(error)) throw signal.reason;
      throw error;
    }
  }
}

/** A BulkheadPolicy, or undefined when maxConcurrent is 0 (off: no wrapper, no cost). */
export function createBulkhead(settings: BulkheadSettings, target: string): BulkheadPolicy | undefined {
  return settings.maxConcurrent > 0 ? new BulkheadPolicy(settings, target) : undefined;
}

const isCockatielCancellation = (e: unknown): boolean =>
  typeof e === 'object' &&
  e !== null &&
  (e as { isTaskCancelledError?: unknown }).isTaskCancelledError === true;
