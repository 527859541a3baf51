/**
 * Plain-object helpers for the configuration: copying, merging, reading by path and freezing JSON-like
 * values. Keys such as `__proto__` (JSON.parse makes those own properties) are handled as plain keys.
 */
export type Obj = Record<string, unknown>;
export type Path = ReadonlyArray<PropertyKey>;

export const isObject = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Sets an own property, even for keys such as `__proto__`. */
export function setOwn(obj: Obj, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

export function clone(v: unknown): unknown {
  if (!isObject(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) setOwn(out, k, clone(x));
  return out;
}

export function getAt(v: unknown, path: Path): unknown {
  let node = v;
  for (const key of path) {
    if (!isObject(node) || !Object.hasOwn(node, key)) return undefined;
    node = node[key as string];
  }
  return node;
}

export function deleteAt(v: Obj, path: Path): void {
  const parent = getAt(v, path.slice(0, -1));
  if (isObject(parent)) delete parent[path[path.length - 1] as string];
}

/** Sets `value` at a dotted path, creating the objects on the way. */
export function setAt(target: Obj, dotted: string, value: unknown): void {
  const keys = dotted.split('.');
  let node = target;
  for (const key of keys.slice(0, -1)) {
    if (!isObject(node[key])) setOwn(node, key, {});
    node = node[key] as Obj;
  }
  setOwn(node, keys[keys.length - 1]!, value);
}

export function deepFreeze<T>(value: T): T {
  if (isObject(value) && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** `override` over `base`, recursively; `undefined` in the override means unset. Neither is modified. */
export function deepMerge<T>(base: T, override: unknown): T {
  if (!isObject(base) || !isObject(override)) return (override === undefined ? base : override) as T;
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(override)) {
    if (v === undefined) continue;
    setOwn(out, k, isObject(v) && isObject(out[k]) ? deepMerge(out[k], v) : v);
  }
  return out as T;
}
