/**
 * Where each value came from (profile < file < env < code), and how a field is named in messages.
 */
import type { EnvOrigin } from './env.ts';
import type { Path } from './objects.ts';

export interface Origin {
  /** `profile`, `file /path`, `env PG_RESILIENCE_X`, `code`. */
  source: string;
  /** Precedence: profile 0, file 1, env 2, code 3. */
  rank: number;
  /** Environment variables: the raw string, reported instead of the parsed value. */
  raw?: string;
  /** Environment variables that accept something else than the setting's own values. */
  allowed?: string;
}

export const PROFILE_ORIGIN: Origin = { source: 'profile', rank: 0 };
export const CODE_ORIGIN: Origin = { source: 'code', rank: 3 };

export function envOrigin(o: EnvOrigin | undefined): Origin {
  if (!o) return { source: 'env', rank: 2 };
  const origin: Origin = { source: `env ${o.name}`, rank: 2, raw: o.raw };
  if (o.allowed) origin.allowed = o.allowed;
  return origin;
}

/** `retry.maxAttempts`, `targets["db:5432/app"].retry.maxAttempts`. */
export function label(path: Path): string {
  let out = '';
  path.forEach((key, i) => {
    const k = String(key);
    if (i === 1 && path[0] === 'targets') out += `[${JSON.stringify(k)}]`;
    else out += out ? `.${k}` : k;
  });
  return out;
}
