/**
 * Returning results the way pg does: the same callback arguments (pg calls `cb(err)` on some paths and
 * `cb(err, undefined, done)` on others; the arguments of the attempt that ended the operation are
 * replayed as they were), and in promise form a promise of the client's or pool's own Promise class.
 */

type Callback = (...args: unknown[]) => unknown;
export type PromiseCtor = PromiseConstructorLike;

/**
 * Calls a user callback. Like pg, which calls callbacks from socket events, an exception thrown by the
 * callback is not caught: it is rethrown on its own tick, as an uncaught exception, instead of turning
 * into a rejected promise inside the package.
 */
export function invokeCallback(cb: Callback, args: readonly unknown[]): void {
  try {
    cb(...args);
  } catch (error) {
    process.nextTick(() => {
      throw error;
    });
  }
}

/**
 * Settles a user callback from an operation's promise: with the recorded arguments of the attempt that
 * ended it when its outcome is that attempt's (`last[0]` is the error, or it succeeded), else `cb(error)`
 * (a policy refused the call: no attempt spoke last).
 */
export function settleCallback(
  operation: Promise<unknown>,
  cb: Callback,
  lastArgs: () => readonly unknown[] | undefined,
): void {
  operation.then(
    () => invokeCallback(cb, lastArgs() ?? []),
    (error: unknown) => {
      const last = lastArgs();
      invokeCallback(cb, last !== undefined && last[0] === error ? last : [error]);
    },
  );
}

/** The operation as a promise of `Ctor` (pg's `_Promise`, pg-pool's `Promise` option), like pg returns. */
export function asPromise<T>(operation: Promise<T>, Ctor: PromiseCtor | undefined): PromiseLike<T> {
  if (Ctor === undefined || Ctor === Promise) return operation;
  return new Ctor<T>((resolve, reject) => {
    operation.then(resolve, reject);
  });
}
