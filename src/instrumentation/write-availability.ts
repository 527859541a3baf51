/**
 * The write-unavailability window of a failover: from the first signal that a target's server changed
 * role (failover.ts) until the first write that succeeds on that target again, on a connection opened
 * after that signal (the new primary: a connection from before it may still finish a write on the old
 * one while it shuts down). A write is a statement whose command tag says it changed rows: INSERT,
 * UPDATE, DELETE or MERGE (a read-only server answers those with 25006 instead). One window per target:
 * the signals that follow the first (every connection of a stopping server gets its own 57P01) belong
 * to it.
 */
import type { PgClientLike } from './types.ts';

/** What a failover was detected by: the server's error, or the endpoint flip (failover.ts). */
export const FAILOVER_KINDS = [
  'read_only',
  'admin_shutdown',
  'crash_shutdown',
  'cannot_connect_now',
  'endpoint_flip',
] as const;
export type FailoverKind = (typeof FAILOVER_KINDS)[number];

export interface WritesRestoredEvent {
  readonly target: string;
  /** What opened the window. */
  readonly kind: FailoverKind;
  /** From the first signal to the first successful write, in ms. */
  readonly durationMs: number;
}

interface Window {
  readonly at: number;
  readonly kind: FailoverKind;
}

/** Target → its open window (none when writes are not known to be unavailable). */
const open = new Map<string, Window>();
const listeners = new Set<(event: WritesRestoredEvent) => void>();

/** Hears about each window that closed (telemetry, tests); returns the function that stops it. */
export function onWritesRestored(listener: (event: WritesRestoredEvent) => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Target → when its last window closed (writes restored). */
const restored = new Map<string, number>();

/** When `target`'s writes were last restored after a failover (undefined: never). */
export function writesRestoredAt(target: string): number | undefined {
  return restored.get(target);
}

/** A failover signal on `target`; true when it opened a window (the first signal of a failover). */
export function failoverSignalled(target: string, kind: FailoverKind): boolean {
  if (open.has(target)) return false;
  open.set(target, { at: Date.now(), kind });
  return true;
}

const WRITE_TAG = /^(INSERT|UPDATE|DELETE|MERGE) /;

interface Completing {
  connection?: { on?: (event: string, listener: (msg: { text?: unknown }) => void) => unknown };
}

/**
 * Watches a new connection of `target` for the first successful write after a failover signal. Only a
 * connection opened while a window is open can close it, and never a later window (opened before that
 * signal): so one opened with no window open is not watched at all, and its statements pay nothing.
 */
export function watchWrites(client: PgClientLike, target: () => string): void {
  if (open.size === 0) return;
  let key: string;
  try {
    key = target();
  } catch {
    return; // no target, no window
  }
  if (!open.has(key)) return;
  const con = (client as unknown as Completing).connection;
  const openedAt = Date.now();
  con?.on?.('commandComplete', (msg) => {
    if (open.size === 0 || typeof msg?.text !== 'string' || !WRITE_TAG.test(msg.text)) return;
    writeSucceeded(key, openedAt);
  });
}

function writeSucceeded(target: string, openedAt: number): void {
  const window = open.get(target);
  if (window === undefined || openedAt <= window.at) return;
  open.delete(target);
  restored.set(target, Date.now());
  const event: WritesRestoredEvent = { target, kind: window.kind, durationMs: Date.now() - window.at };
  for (const listener of listeners) {
    try {
      listener(event);
    } catch {
      // a listener never breaks the app's connection
    }
  }
}
