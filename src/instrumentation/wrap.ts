/**
 * Wrapping prototype methods so that ours sits *outside* another instrumentation's wrapper.
 *
 * InstrumentationBase's `_wrap` first unwraps whatever wrapper it finds, so calling it on a method that
 * instrumentation-pg already wrapped (Client.prototype.query and connect, Pool.prototype.connect) would
 * remove instrumentation-pg's wrapper, and skipping the wrap would leave ours out. These two functions
 * layer instead: the same markers as shimmer (`__original`, `__unwrap`, `__wrapped`), so `isWrapped` and
 * other instrumentations' `_unwrap` keep working, and a registry of our own wrappers tells them apart.
 *
 * Order: instrumentation-pg unwraps and re-wraps what it finds when `pg` loads, so ours must be
 * registered after it (the register hook does; docs/ARCHITECTURE.md says so for hand-built SDKs).
 */

/** The wrapper functions we installed. */
const OURS = new WeakSet<object>();

type Fn = (...args: never[]) => unknown;

function define(obj: object, name: string, value: unknown): void {
  const enumerable = Object.prototype.propertyIsEnumerable.call(obj, name);
  Object.defineProperty(obj, name, { configurable: true, enumerable, writable: true, value });
}

/** True when `fn` or a function it wraps (the `__original` chain) is one of our wrappers. */
function hasOurWrapper(fn: unknown): boolean {
  for (let f = fn, depth = 0; typeof f === 'function' && depth < 32; depth++) {
    if (OURS.has(f)) return true;
    f = (f as { __original?: unknown }).__original;
  }
  return false;
}

/**
 * Wraps `obj[name]` with `wrapper(original)` unless it is not a function or already carries our wrapper.
 * Returns true when it wrapped.
 */
export function wrapOnce(
  obj: Record<string, unknown>,
  name: string,
  wrapper: (original: never) => unknown,
): boolean {
  const original = obj[name];
  if (typeof original !== 'function' || hasOurWrapper(original)) return false;
  const wrapped = wrapper(original as never);
  if (typeof wrapped !== 'function') return false;
  define(wrapped, '__original', original);
  define(wrapped, '__unwrap', () => {
    if (obj[name] === wrapped) define(obj, name, original);
  });
  define(wrapped, '__wrapped', true);
  OURS.add(wrapped);
  define(obj, name, wrapped);
  return true;
}

/** Removes our wrapper of `obj[name]` when it is the outermost one (one wrapped over by others stays). */
export function unwrapOurs(obj: Record<string, unknown>, name: string): void {
  const current = obj[name] as (Fn & { __unwrap?: () => void }) | undefined;
  if (typeof current === 'function' && OURS.has(current)) current.__unwrap?.();
}
