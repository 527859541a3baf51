/**
 * The Redis URL of `coordination.redis.url` holds a password: it is checked here, and every place that
 * shows it (configuration errors, logs, state) shows `redactRedisUrl(url)` instead.
 */

/** A fleet name: it becomes part of every key, so no braces (they would break the Redis Cluster hash tag). */
export const FLEET_NAME = /^[A-Za-z0-9._:/-]{1,100}$/;

/** True for a parseable `redis://` or `rediss://` URL with a host. */
export function isRedisUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== '';
  } catch {
    return false;
  }
}

/**
 * The URL with its password (and any query) replaced by `***`; a string that does not parse shows only
 * its scheme, since it may still hold a password.
 */
export function redactRedisUrl(value: unknown): string {
  if (typeof value !== 'string') return '[redacted]';
  try {
    const url = new URL(value);
    if (url.password) url.password = '***';
    if (url.search) url.search = '?***';
    return url.toString();
  } catch {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(value);
    return scheme ? `${scheme[1]}:[redacted]` : '[redacted]';
  }
}

/** Removes `secret` (a password) from a message, wherever it appears, encoded or not. */
export function withoutSecret(message: string, secret: string | undefined): string {
  if (!secret) return message;
  let out = message;
  for (const s of new Set([secret, encodeURIComponent(secret)])) out = out.split(s).join('***');
  return out;
}
