/**
 * The one error bad configuration raises. It lists every problem found, one per line, each naming the
 * field, the value, where the value came from and what is allowed:
 *
 *   pg-resilience: invalid configuration (1 issue):
 *     retry.maxAttempts = 0 (from env PG_RESILIENCE_RETRY_ATTEMPTS): must be an integer from 1 to 100
 *
 * `isConfigError` checks a brand symbol rather than `instanceof`, so it also works across two copies of
 * the package (the ESM and the CommonJS build loaded in one process).
 */
import { isNumberText } from './env.ts';
import { redactRedisUrl } from './redis-url.ts';

/**
 * Fields whose value may hold the Redis password (the URL, the objects around it, a misspelt key or
 * variable beside it): shown redacted in the message and in `issues`.
 */
const isSecretField = (field: string): boolean =>
  field === 'coordination' ||
  field.startsWith('coordination.redis') ||
  field.startsWith('PG_RESILIENCE_REDIS');

const BRAND = Symbol.for('pg-resilience.config-error');

export interface ConfigIssue {
  /** The setting (`retry.maxAttempts`, `targets["db:5432/app"].retry.maxAttempts`) or variable name. */
  readonly field: string;
  /** The offending value as it was given (for environment variables: the raw string). */
  readonly value: unknown;
  /** What is allowed, as a sentence fragment: `must be an integer from 1 to 100`. */
  readonly allowed: string;
  /** Where the value came from: `code`, `env PG_RESILIENCE_X`, `file /path/to/config.json` or `profile`. */
  readonly source: string;
}

/** How a value appears in a message: numbers and booleans as written, strings quoted, objects as short JSON. */
function formatValue(value: unknown, source = ''): string {
  // Environment variables are strings: show a number as written, anything else quoted.
  if (source.startsWith('env ') && typeof value === 'string') {
    return isNumberText(value) ? value : JSON.stringify(value);
  }
  if (typeof value === 'function') return '[function]';
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'symbol') return value.toString();
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return Object.is(value, -0) ? '-0' : String(value);
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Object.prototype.toString.call(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function formatIssue(issue: ConfigIssue): string {
  return `${issue.field} = ${formatValue(issue.value, issue.source)} (from ${issue.source}): ${issue.allowed}`;
}

/** The Redis URL (or an object holding it) never reaches a message: only its redacted form does. */
function redactIssue(issue: ConfigIssue): ConfigIssue {
  if (!isSecretField(issue.field)) return issue;
  const v = issue.value;
  if (typeof v === 'string') {
    return { ...issue, value: redactRedisUrl(v) };
  }
  return { ...issue, value: '[redacted]' };
}

export class ConfigError extends Error {
  declare readonly issues: ReadonlyArray<ConfigIssue>;
  constructor(issues: ReadonlyArray<ConfigIssue>) {
    const n = issues.length;
    const safe = issues.map(redactIssue);
    super(
      `pg-resilience: invalid configuration (${n} ${n === 1 ? 'issue' : 'issues'}):\n${safe
        .map((i) => `  ${formatIssue(i)}`)
        .join('\n')}`,
    );
    // Not enumerable: an uncaught ConfigError (e.g. thrown by `--require pg-resilience/register`) is
    // printed by Node with its own enumerable properties; the message already lists every issue, so the
    // app shows it once instead of once more as an `issues: [...]` dump.
    Object.defineProperty(this, 'issues', {
      value: Object.freeze(safe.map((i) => Object.freeze({ ...i }))),
      enumerable: false,
    });
    Object.defineProperty(this, BRAND, { value: true });
  }
  override get name(): string {
    return 'ConfigError';
  }
}

export const isConfigError = (e: unknown): e is ConfigError =>
  typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[BRAND] === true;
