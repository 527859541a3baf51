/**
 * A standalone client's 'error' and 'end' wait while the statement in flight on it may still be
 * answered on a substitute connection (substitute.ts). pg emits 'error' on the client synchronously
 * when its connection dies, one tick before it fails the statement; an owner that races its routine
 * against that event (slonik fails every connection routine on the client's first 'error') would fail
 * the caller even though the statement is then answered on a substitute. So, only when the dying
 * client's one statement in flight could run on a substitute at that moment (safe to repeat, outside a
 * transaction, alone, same session state), its 'error' and any 'end' after it are held until that
 * statement's call settled, then emitted in order on the next turn of the event loop (after the
 * caller's continuations ran). The client stays dead: the owner still gets both events and evicts it.
 * Rule: docs/retry-safety.md ("Substitute connections").
 */
import { endedByApp } from './ended-by-app.ts';
import type { EmitFn } from './types.ts';

interface Watch {
  /** Could the statement run on a substitute now (asked when 'error' comes)? */
  readonly eligible: () => boolean;
  /** Events held since the 'error' (empty while nothing is held). */
  held: Array<{ event: string | symbol; args: unknown[] }> | undefined;
  /** The wrapped emit to send held events through (crash guards, connect holds). */
  emit: EmitFn | undefined;
}

const watching = new WeakMap<object, Watch>();
/** How many clients are watched now: the emit wrapper's fast path when none is. */
let watched = 0;

/** Wraps `Client.prototype.emit` (outermost): holds 'error'/'end' of a client whose statement may be substituted. */
export function holdWhileSubstituting(original: EmitFn): EmitFn {
  return function emit(this: unknown, event: string | symbol, ...args: unknown[]): boolean {
    if (watched > 0 && (event === 'error' || event === 'end')) {
      const watch = watching.get(this as object);
      if (watch !== undefined && !endedByApp(this)) {
        if (watch.held === undefined && event === 'error' && watch.eligible()) watch.held = [];
        if (watch.held !== undefined) {
          watch.held.push({ event, args });
          watch.emit = original;
          return (this as { listenerCount(e: string | symbol): number }).listenerCount(event) > 0;
        }
      }
    }
    return original.call(this, event, ...args);
  };
}

/**
 * Watches `client` while one statement call runs on it; returns the function to call once that call
 * settled (it emits what was held, on the next turn of the event loop). Undefined when the client is
 * already watched (another statement of the owner's is in flight: never substituted).
 */
export function watchStatement(client: object, eligible: () => boolean): (() => void) | undefined {
  if (watching.has(client)) return undefined;
  const watch: Watch = { eligible, held: undefined, emit: undefined };
  watching.set(client, watch);
  watched++;
  let settled = false;
  return () => {
    if (settled) return;
    settled = true;
    watching.delete(client);
    watched--;
    const { held, emit } = watch;
    if (held === undefined || emit === undefined) return;
    setImmediate(() => {
      for (const { event, args } of held) emit.call(client, event, ...args);
    });
  };
}
