// Bad configuration, systematically: every wrong type, out-of-range
// value, unknown key, contradiction, malformed or unreadable file and bad PG_RESILIENCE_* variable gives
// ONE start-up ConfigError whose message names the field, the value as given and what is allowed.
// Each table row is one mistake; each asserts the exact line a user reads. config.test.ts covers the
// mechanics (precedence, merging, provenance); this file is the catalogue of mistakes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigError, isConfigError, resolveConfig } from '../../src/config/index.ts';
import { ENV_VARS } from '../../src/config/env.ts';
import { settingsLeaves } from '../../src/config/schema.ts';
import { PgResilienceInstrumentation } from '../../src/instrumentation/instrumentation.ts';

type Input = NonNullable<Parameters<typeof resolveConfig>[0]>;

const FILE_PATH = '/etc/app/pg-resilience.json';
const FILE = `file ${FILE_PATH}`;
const TARGET = 'db:5432/app';

/** The input with `content` as the PG_RESILIENCE_CONFIG file (a string is the file's text as is). */
const withFile = (content: unknown, env: Record<string, string> = {}): Input => ({
  env: { PG_RESILIENCE_CONFIG: FILE_PATH, ...env },
  readFile: () => (typeof content === 'string' ? content : JSON.stringify(content)),
});

/** Runs `fn`, which must throw a ConfigError; checks its shape and returns it. */
function configError(fn: () => unknown): ConfigError {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  assert.ok(thrown !== undefined, 'expected a ConfigError, nothing was thrown (the bad input was accepted)');
  assert.ok(isConfigError(thrown), `expected a ConfigError, got ${String(thrown)}`);
  assert.ok(thrown instanceof ConfigError);
  assert.equal(thrown.name, 'ConfigError');
  return thrown;
}

/** Exactly one issue, shown as exactly this line under the heading. */
function expectOneLine(fn: () => unknown, line: string): ConfigError {
  const err = configError(fn);
  assert.equal(
    err.message,
    `pg-resilience: invalid configuration (1 issue):\n  ${line}`,
    `expected exactly one issue:\n  ${line}\ngot:\n${err.message}`,
  );
  assert.equal(err.issues.length, 1);
  return err;
}

const resolveWith = (input: Input) => () => resolveConfig({ env: {}, ...input });

/** A value as the message shows it (numbers, booleans and null as written, strings quoted). */
const shown = (v: unknown): string => (typeof v === 'number' ? String(v) : JSON.stringify(v));

function setAt(path: string[], value: unknown): Record<string, unknown> {
  return path.reduceRight<unknown>((inner, key) => ({ [key]: inner }), value) as Record<string, unknown>;
}

// ---- 1. every setting: wrong type, out of range, not an integer, null ----

interface LeafRow {
  allowed: string;
  bad: unknown[];
}
const int = (min: number, max: number, zero?: string): LeafRow => ({
  allowed: `an integer from ${min} to ${max}${zero ? ` (0 = ${zero})` : ''}`,
  bad: [min - 1, max + 1, min + 0.5, String(min + 1), null, true],
});
const num = (min: number, max: number): LeafRow => ({
  allowed: `a number from ${min} to ${max}`,
  bad: [min - 0.5, max + 0.5, String(min), null, Number.NaN],
});
const bool: LeafRow = { allowed: 'true or false', bad: ['true', 1, 0, null, 'yes'] };
const oneOf = (...values: string[]): LeafRow => ({
  allowed: `one of: ${values.join(', ')}`,
  bad: ['bogus', values[0]!.toUpperCase(), 0, null, ''],
});

/** Every leaf setting with what it allows. A setting added to the schema must get a row here. */
const LEAVES: Record<string, LeafRow> = {
  'retry.enabled': bool,
  'retry.maxAttempts': int(1, 100),
  'retry.initialDelayMs': int(0, 600000),
  'retry.maxDelayMs': int(0, 600000),
  'retry.multiplier': num(1, 10),
  'retry.jitter': oneOf('decorrelated', 'full', 'none'),
  'retry.budget.enabled': bool,
  'retry.budget.ratio': num(0, 1),
  'retry.budget.windowMs': int(1, 600000),
  'retry.budget.minRetries': int(0, 1000000),
  'retry.holdClientErrorWhileSubstituting': bool,
  'circuitBreaker.enabled': bool,
  'circuitBreaker.mode': oneOf('consecutive', 'failure_rate'),
  'circuitBreaker.consecutiveFailures': int(1, 1000),
  'circuitBreaker.failureRateThreshold': num(0, 1),
  'circuitBreaker.failureRateWindowMs': int(1, 600000),
  'circuitBreaker.minimumRps': num(0, 1000000),
  'circuitBreaker.halfOpenAfterMs': int(0, 600000),
  'circuitBreaker.halfOpenMaxProbes': int(1, 1000),
  'circuitBreaker.successesToClose': int(1, 1000),
  'circuitBreaker.rampMs': int(0, 600000, 'no ramp'),
  'rateLimit.enabled': bool,
  'rateLimit.ratePerMinute': {
    allowed: 'a number greater than 0 and at most 60000000',
    bad: [0, -1, 60000001, '6000', null, Number.POSITIVE_INFINITY],
  },
  'rateLimit.burst': int(1, 1000000),
  'rateLimit.strategy': oneOf('wait', 'drop', 'queue'),
  'rateLimit.maxQueueSize': int(0, 1000000),
  'rateLimit.maxWaitMs': int(0, 600000, 'no limit'),
  'timeout.queryMs': int(0, 86400000, 'off'),
  'timeout.connectMs': int(0, 86400000, 'off'),
  'timeout.cancelGraceMs': int(0, 86400000, 'no cancel'),
  'bulkhead.maxConcurrent': int(0, 100000, 'off'),
  'bulkhead.maxQueue': int(0, 1000000),
  'recovery.enabled': bool,
  'recovery.intervalMs': int(0, 600000),
  'recovery.firstProbeMs': int(1, 600000),
  'recovery.maxAttempts': int(0, 1000000, 'no limit'),
  'liveness.keepAliveInitialDelayMs': int(0, 86400000, 'off'),
  'liveness.evictIdleOnOutage': bool,
  'leakDetection.enabled': bool,
  'leakDetection.idleThresholdMs': int(0, 86400000, 'off'),
  'leakDetection.deadGraceMs': int(1, 600000),
  'transaction.outcomeResolutionMs': int(0, 600000, 'off'),
  'failover.roleTrustMs': int(0, 86400000, 'until an error'),
  'failover.roleCheckTimeoutMs': int(1, 600000),
  'failover.evictOnFailover': bool,
  'connectionBudget.maxConnections': int(0, 1000000, 'off'),
};

describe('every setting: a wrong type or an out-of-range value is one issue naming field, value and range', () => {
  it('the table covers every leaf setting of the schema', () => {
    const schemaLeaves = settingsLeaves()
      .map((l) => l.path.join('.'))
      .filter((p) => p !== 'retry.perErrorClass'); // an object: see the structure table
    assert.deepEqual(Object.keys(LEAVES).sort(), schemaLeaves.sort());
  });

  for (const [field, row] of Object.entries(LEAVES)) {
    const path = field.split('.');
    for (const value of row.bad) {
      it(`${field} = ${shown(value)}: from code, from the file and in a target override`, () => {
        const allowed = `must be ${row.allowed}`;
        expectOneLine(
          resolveWith({ options: setAt(path, value) as never }),
          `${field} = ${shown(value)} (from code): ${allowed}`,
        );
        // JSON has no NaN or Infinity (JSON.stringify writes null): those rows are code-only.
        if (typeof value !== 'number' || Number.isFinite(value)) {
          expectOneLine(
            resolveWith(withFile(setAt(path, value))),
            `${field} = ${shown(value)} (from ${FILE}): ${allowed}`,
          );
        }
        expectOneLine(
          resolveWith({ options: { targets: { [TARGET]: setAt(path, value) } } as never }),
          `targets["${TARGET}"].${field} = ${shown(value)} (from code): ${allowed}`,
        );
      });
    }
  }

  it('the same per error class (retry.perErrorClass.<class>.<field>)', () => {
    const rows: Array<[string, unknown, string]> = [
      ['maxAttempts', 0, 'an integer from 1 to 100'],
      ['initialDelayMs', -1, 'an integer from 0 to 600000'],
      ['maxDelayMs', 'soon', 'an integer from 0 to 600000'],
      ['multiplier', 11, 'a number from 1 to 10'],
      ['jitter', 'random', 'one of: decorrelated, full, none'],
    ];
    for (const [key, value, allowed] of rows) {
      expectOneLine(
        resolveWith({ options: { retry: { perErrorClass: { deadlock: { [key]: value } } } } as never }),
        `retry.perErrorClass.deadlock.${key} = ${shown(value)} (from code): must be ${allowed}`,
      );
    }
  });
});

// ---- 2. structure: objects expected, unknown keys at every level ----

const RETRY_KEYS =
  'enabled, maxAttempts, initialDelayMs, maxDelayMs, multiplier, jitter, perErrorClass, budget, holdClientErrorWhileSubstituting';
const SETTINGS_KEYS =
  'retry, circuitBreaker, rateLimit, timeout, bulkhead, recovery, liveness, leakDetection, transaction, failover, connectionBudget';
const TOP_KEYS = `${SETTINGS_KEYS}, disabled, profile, targets, telemetry, coordination, classify`;

describe('structure: an object where one is expected, unknown keys at every level', () => {
  const rows: Array<{ name: string; input: Input; line: string | RegExp }> = [
    {
      name: 'a section that is not an object',
      input: { options: { circuitBreaker: 'off' } as never },
      line: 'circuitBreaker = "off" (from code): must be an object with the keys: enabled, mode, consecutiveFailures, failureRateThreshold, failureRateWindowMs, minimumRps, halfOpenAfterMs, halfOpenMaxProbes, successesToClose, rampMs',
    },
    {
      name: 'a section given as an array',
      input: { options: { timeout: [1000] } as never },
      line: 'timeout = [1000] (from code): must be an object with the keys: queryMs, connectMs, cancelGraceMs',
    },
    {
      name: 'retry.budget as a number',
      input: { options: { retry: { budget: 0.2 } } as never },
      line: 'retry.budget = 0.2 (from code): must be an object with the keys: enabled, ratio, windowMs, minRetries',
    },
    {
      name: 'retry.perErrorClass as an array',
      input: { options: { retry: { perErrorClass: ['deadlock'] } } as never },
      line: /^retry\.perErrorClass = \["deadlock"\] \(from code\): must be an object keyed by error class \(connect_refused, /,
    },
    {
      name: 'one error class as a number',
      input: { options: { retry: { perErrorClass: { deadlock: 3 } } } as never },
      line: 'retry.perErrorClass.deadlock = 3 (from code): must be an object with any of the keys: maxAttempts, initialDelayMs, maxDelayMs, multiplier, jitter',
    },
    {
      name: 'targets as an array',
      input: { options: { targets: [TARGET] } as never },
      line: 'targets = ["db:5432/app"] (from code): must be an object keyed host:port/database with a port from 1 to 65535, e.g. "db.internal:5432/app"',
    },
    {
      name: 'a target override that is not an object',
      input: withFile({ targets: { [TARGET]: true } }),
      line: `targets["${TARGET}"] = true (from ${FILE}): must be an object with the keys: ${SETTINGS_KEYS}`,
    },
    {
      name: 'unknown key at the top level',
      input: { options: { retries: 3 } as never },
      line: `retries = 3 (from code): is not a known setting; the top level accepts: ${TOP_KEYS}`,
    },
    {
      name: 'unknown key in retry',
      input: withFile({ retry: { attempts: 3 } }),
      line: `retry.attempts = 3 (from ${FILE}): is not a known setting; retry accepts: ${RETRY_KEYS}`,
    },
    {
      name: 'unknown key in circuitBreaker',
      input: { options: { circuitBreaker: { threshold: 5 } } as never },
      line: /^circuitBreaker\.threshold = 5 \(from code\): is not a known setting.*; circuitBreaker accepts: enabled, mode, consecutiveFailures, /,
    },
    {
      name: 'unknown key in rateLimit',
      input: { options: { rateLimit: { perSecond: 100 } } as never },
      line: 'rateLimit.perSecond = 100 (from code): is not a known setting; rateLimit accepts: enabled, ratePerMinute, burst, strategy, maxQueueSize, maxWaitMs',
    },
    {
      name: 'unknown key in timeout',
      input: { options: { timeout: { statementMs: 100 } } as never },
      line: 'timeout.statementMs = 100 (from code): is not a known setting; timeout accepts: queryMs, connectMs, cancelGraceMs',
    },
    {
      name: 'unknown key in bulkhead',
      input: { options: { bulkhead: { maxConcurent: 4 } } as never },
      line: 'bulkhead.maxConcurent = 4 (from code): is not a known setting (did you mean bulkhead.maxConcurrent?); bulkhead accepts: maxConcurrent, maxQueue',
    },
    {
      name: 'unknown key in recovery',
      input: withFile({ recovery: { interval: 100 } }),
      line: `recovery.interval = 100 (from ${FILE}): is not a known setting (did you mean recovery.intervalMs?); recovery accepts: enabled, intervalMs, firstProbeMs, maxAttempts`,
    },
    {
      name: 'unknown key in a target override',
      input: { options: { targets: { [TARGET]: { retyr: {} } } } as never },
      line: `targets["${TARGET}"].retyr = {} (from code): is not a known setting (did you mean targets["${TARGET}"].retry?); targets["${TARGET}"] accepts: ${SETTINGS_KEYS}`,
    },
    {
      name: 'unknown key deep inside a target override',
      input: withFile({ targets: { [TARGET]: { retry: { budget: { max: 1 } } } } }),
      line: `targets["${TARGET}"].retry.budget.max = 1 (from ${FILE}): is not a known setting; targets["${TARGET}"].retry.budget accepts: enabled, ratio, windowMs, minRetries`,
    },
    {
      name: 'unknown error class in a target override',
      input: { options: { targets: { [TARGET]: { retry: { perErrorClass: { timeout: {} } } } } } as never },
      line: /^targets\["db:5432\/app"\]\.retry\.perErrorClass\.timeout = \{\} \(from code\): is not an error class; error classes: connect_refused, /,
    },
    {
      name: 'a key that would pollute prototypes (__proto__ in the JSON file)',
      input: withFile('{"retry": {"__proto__": {"maxAttempts": 100}}}'),
      line: `retry.__proto__ = {"maxAttempts":100} (from ${FILE}): is not a known setting; retry accepts: ${RETRY_KEYS}`,
    },
    {
      name: 'the options are not an object',
      input: { options: 42 as never },
      line: 'options = 42 (from code): must be an object',
    },
    {
      name: 'the file holds JSON null',
      input: withFile('null'),
      line: `(file) = null (from ${FILE}): must be a JSON object`,
    },
    {
      name: 'the file holds a JSON string',
      input: withFile('"retry"'),
      line: `(file) = "retry" (from ${FILE}): must be a JSON object`,
    },
  ];
  for (const row of rows) {
    it(row.name, () => {
      if (typeof row.line === 'string') {
        expectOneLine(resolveWith(row.input), row.line);
      } else {
        const err = configError(resolveWith(row.input));
        assert.equal(err.issues.length, 1, err.message);
        assert.match(err.message.split('\n')[1]!.trim(), row.line);
      }
    });
  }
  it('an object with no problem inside leaves nothing reported (the table rows are not noise)', () => {
    assert.doesNotThrow(resolveWith({ options: { retry: {}, targets: { [TARGET]: {} } } }));
  });
});

// ---- 3. contradictions: one issue, on the field set last, naming the other ----

describe('contradictory settings: one issue naming both fields', () => {
  const rows: Array<{ name: string; input: Input; line: string }> = [
    {
      name: 'initial delay above the max delay, from env over the profile',
      input: { env: { PG_RESILIENCE_RETRY_MAX_DELAY_MS: '10' } },
      line: 'retry.maxDelayMs = 10 (from env PG_RESILIENCE_RETRY_MAX_DELAY_MS): must be at least retry.initialDelayMs (50, from profile)',
    },
    {
      name: 'initial delay above the max delay, both in the file (reported on the initial delay)',
      input: withFile({ retry: { initialDelayMs: 500, maxDelayMs: 100 } }),
      line: `retry.initialDelayMs = 500 (from ${FILE}): must not exceed retry.maxDelayMs (100, from ${FILE})`,
    },
    {
      name: 'queue strategy from env, queue size 0 from the file',
      input: withFile({ rateLimit: { maxQueueSize: 0 } }, { PG_RESILIENCE_RATE_LIMIT_STRATEGY: 'queue' }),
      line: `rateLimit.strategy = "queue" (from env PG_RESILIENCE_RATE_LIMIT_STRATEGY): must not be queue while rateLimit.maxQueueSize is 0 (from ${FILE}): raise maxQueueSize, or use wait or drop`,
    },
    {
      name: 'queue strategy with queue size 0 inside a target override',
      input: { options: { targets: { [TARGET]: { rateLimit: { strategy: 'queue', maxQueueSize: 0 } } } } },
      line: `targets["${TARGET}"].rateLimit.maxQueueSize = 0 (from code): must be at least 1 when targets["${TARGET}"].rateLimit.strategy is queue (from code)`,
    },
    {
      name: 'failure_rate mode in a target, threshold 1 inherited from the base',
      input: {
        options: {
          circuitBreaker: { failureRateThreshold: 1 },
          targets: { [TARGET]: { circuitBreaker: { mode: 'failure_rate' } } },
        },
      },
      line: `targets["${TARGET}"].circuitBreaker.mode = "failure_rate" (from code): must not be failure_rate while circuitBreaker.failureRateThreshold is 1 (from code): the threshold must be above 0 and below 1`,
    },
    {
      name: 'recovery on with interval 0, in a target',
      input: withFile({ targets: { [TARGET]: { recovery: { intervalMs: 0 } } } }),
      line: `targets["${TARGET}"].recovery.intervalMs = 0 (from ${FILE}): must be at least 1 while recovery.enabled is true (from profile); set recovery.enabled to false to turn probing off`,
    },
    {
      name: 'a retry budget that blocks every retry, in a target',
      input: { options: { targets: { [TARGET]: { retry: { budget: { ratio: 0, minRetries: 0 } } } } } },
      line: `targets["${TARGET}"].retry.budget.ratio = 0 (from code): must be above 0 while targets["${TARGET}"].retry.budget.minRetries is 0 (from code): together they block every retry; set retry.enabled to false to turn retries off`,
    },
    {
      name: 'one error class whose own initial delay exceeds its own max delay',
      input: {
        options: { retry: { perErrorClass: { deadlock: { initialDelayMs: 300, maxDelayMs: 200 } } } },
      },
      line: 'retry.perErrorClass.deadlock.initialDelayMs = 300 (from code): must not exceed retry.perErrorClass.deadlock.maxDelayMs (200, from code)',
    },
  ];
  for (const row of rows) {
    it(row.name, () => {
      expectOneLine(resolveWith(row.input), row.line);
    });
  }

  it('a value that is both out of range and contradictory is reported once, as out of range', () => {
    expectOneLine(
      resolveWith({ options: { rateLimit: { strategy: 'queue', maxQueueSize: -1 } } }),
      'rateLimit.maxQueueSize = -1 (from code): must be an integer from 0 to 1000000',
    );
    expectOneLine(
      resolveWith({ options: { circuitBreaker: { mode: 'failure_rate', failureRateThreshold: 1.5 } } }),
      'circuitBreaker.failureRateThreshold = 1.5 (from code): must be a number from 0 to 1',
    );
  });
});

// ---- 4. the JSON file: malformed, unreadable ----

describe('the JSON file (PG_RESILIENCE_CONFIG): malformed or unreadable', () => {
  /** JSON.parse's own message for `text`, which the issue quotes. */
  const jsonMessage = (text: string): string => {
    try {
      JSON.parse(text);
    } catch (e) {
      return (e as Error).message;
    }
    throw new Error('valid JSON');
  };
  const malformed: Array<[string, string]> = [
    ['an empty file', ''],
    ['only whitespace', ' \n\t'],
    ['a trailing comma', '{"retry": {"maxAttempts": 3,}}'],
    ['a comment (JSON has none)', '// pg-resilience\n{}'],
    ['single quotes', "{'retry': {}}"],
    ['a truncated file', '{"retry": {"maxAttempts": 3'],
    ['two documents', '{} {}'],
    ['NaN', '{"retry": {"multiplier": NaN}}'],
    ['YAML instead of JSON', 'retry:\n  maxAttempts: 3\n'],
  ];
  for (const [name, text] of malformed) {
    it(`malformed: ${name}`, () => {
      expectOneLine(
        resolveWith(withFile(text)),
        `PG_RESILIENCE_CONFIG = "${FILE_PATH}" (from env PG_RESILIENCE_CONFIG): must name a file of valid JSON; ${FILE_PATH} is not: ${jsonMessage(text)}`,
      );
    });
  }

  it('a byte-order mark is tolerated (editors write one), and the content is still validated', () => {
    expectOneLine(
      resolveWith(withFile('\uFEFF{"retry": {"maxAttempts": 0}}')),
      `retry.maxAttempts = 0 (from ${FILE}): must be an integer from 1 to 100`,
    );
  });

  const dir = mkdtempSync(join(tmpdir(), 'pgr-config-errors-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const unreadable = (path: string, reason: string) =>
    `PG_RESILIENCE_CONFIG = "${path}" (from env PG_RESILIENCE_CONFIG): must name a readable JSON file; reading ${path} failed: ${reason}`;

  it('unreadable: a missing file (real fs)', () => {
    const path = join(dir, 'missing.json');
    expectOneLine(
      resolveWith({ env: { PG_RESILIENCE_CONFIG: path } }),
      unreadable(path, `ENOENT: no such file or directory, open '${path}'`),
    );
  });

  it('unreadable: a directory (real fs)', () => {
    expectOneLine(
      resolveWith({ env: { PG_RESILIENCE_CONFIG: dir } }),
      unreadable(dir, 'EISDIR: illegal operation on a directory, read'),
    );
  });

  it('unreadable: a dangling symlink and a symlink loop (real fs)', () => {
    const dangling = join(dir, 'dangling.json');
    symlinkSync(join(dir, 'nowhere.json'), dangling);
    expectOneLine(
      resolveWith({ env: { PG_RESILIENCE_CONFIG: dangling } }),
      unreadable(dangling, `ENOENT: no such file or directory, open '${dangling}'`),
    );
    const loop = join(dir, 'loop.json');
    symlinkSync(loop, loop);
    expectOneLine(
      resolveWith({ env: { PG_RESILIENCE_CONFIG: loop } }),
      unreadable(loop, `ELOOP: too many symbolic links encountered, open '${loop}'`),
    );
  });

  it('unreadable: no read permission (chmod 000, real fs)', (t) => {
    const path = join(dir, 'secret.json');
    writeFileSync(path, '{"retry": {"maxAttempts": 2}}');
    chmodSync(path, 0o000);
    let readable = false;
    try {
      readFileSync(path);
      readable = true;
    } catch {
      // the normal case for a non-root user
    }
    if (readable) {
      // root (CAP_DAC_OVERRIDE) reads a mode-000 file: the mistake cannot be produced here. The file is
      // then simply used, which is what every other program run as root does too.
      assert.equal(resolveConfig({ env: { PG_RESILIENCE_CONFIG: path } }).retry.maxAttempts, 2);
      t.skip('running as root: a mode-000 file is readable, so EACCES cannot be produced');
      return;
    }
    expectOneLine(
      resolveWith({ env: { PG_RESILIENCE_CONFIG: path } }),
      unreadable(path, `EACCES: permission denied, open '${path}'`),
    );
  });

  it('unreadable: EACCES as the file system reports it (injected, so it is tested as root too)', () => {
    expectOneLine(
      resolveWith({
        env: { PG_RESILIENCE_CONFIG: FILE_PATH },
        readFile: (p) => {
          throw Object.assign(new Error(`EACCES: permission denied, open '${p}'`), { code: 'EACCES' });
        },
      }),
      unreadable(FILE_PATH, `EACCES: permission denied, open '${FILE_PATH}'`),
    );
  });

  it('a blank PG_RESILIENCE_CONFIG (spaces) is named as blank, not as the working directory', () => {
    // Regression: it used to be trimmed to "" and read as the working directory ("reading /app failed: EISDIR").
    expectOneLine(
      resolveWith({ env: { PG_RESILIENCE_CONFIG: '   ' } }),
      'PG_RESILIENCE_CONFIG = "   " (from env PG_RESILIENCE_CONFIG): must name a readable JSON file, but it is blank; unset it to use no file',
    );
  });

  it('a valid file with one bad value is one issue naming the file', () => {
    const path = join(dir, 'bad-value.json');
    writeFileSync(path, JSON.stringify({ rateLimit: { burst: 0 } }));
    expectOneLine(
      resolveWith({ env: { PG_RESILIENCE_CONFIG: path } }),
      `rateLimit.burst = 0 (from file ${path}): must be an integer from 1 to 1000000`,
    );
  });
});

// ---- 5. environment variables: every PG_RESILIENCE_* variable with a bad value ----

/**
 * Resolves as the instrumentation does at start-up (configuration and telemetry settings, together),
 * with exactly `env` as the PG_RESILIENCE_* variables. Returns what the constructor threw.
 */
function startUp(env: Record<string, string>, options: object = {}): () => unknown {
  return () => {
    const saved: Record<string, string | undefined> = {};
    for (const name of Object.keys(process.env)) {
      if (name.startsWith('PG_RESILIENCE_') && !name.startsWith('PG_RESILIENCE_TEST_')) {
        saved[name] = process.env[name];
        delete process.env[name];
      }
    }
    for (const [k, v] of Object.entries(env)) {
      saved[k] ??= process.env[k];
      process.env[k] = v;
    }
    try {
      return new PgResilienceInstrumentation({ enabled: false, ...options });
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  };
}

describe('environment variables: a bad value is one issue naming the variable, the raw value and what is allowed', () => {
  const rows: Array<{ name: string; value: string; line: string }> = [
    {
      name: 'PG_RESILIENCE_DISABLED',
      value: 'off',
      line: 'disabled = "off" (from env PG_RESILIENCE_DISABLED): must be one of: true, false, 1, 0, yes, no',
    },
    {
      name: 'PG_RESILIENCE_PROFILE',
      value: 'production',
      line: 'profile = "production" (from env PG_RESILIENCE_PROFILE): must be one of: default, batch',
    },
    {
      name: 'PG_RESILIENCE_RETRY_ATTEMPTS',
      value: 'three',
      line: 'retry.maxAttempts = "three" (from env PG_RESILIENCE_RETRY_ATTEMPTS): must be an integer from 1 to 100',
    },
    {
      name: 'PG_RESILIENCE_RETRY_INITIAL_DELAY_MS',
      value: '100ms',
      line: 'retry.initialDelayMs = "100ms" (from env PG_RESILIENCE_RETRY_INITIAL_DELAY_MS): must be an integer from 0 to 600000',
    },
    {
      name: 'PG_RESILIENCE_RETRY_MAX_DELAY_MS',
      value: '600001',
      line: 'retry.maxDelayMs = 600001 (from env PG_RESILIENCE_RETRY_MAX_DELAY_MS): must be an integer from 0 to 600000',
    },
    {
      name: 'PG_RESILIENCE_TIMEOUT_MS',
      value: '-5',
      line: 'timeout.queryMs = -5 (from env PG_RESILIENCE_TIMEOUT_MS): must be an integer from 0 to 86400000 (0 = off)',
    },
    {
      name: 'PG_RESILIENCE_CONNECT_TIMEOUT_MS',
      value: '0x10',
      line: 'timeout.connectMs = "0x10" (from env PG_RESILIENCE_CONNECT_TIMEOUT_MS): must be an integer from 0 to 86400000 (0 = off)',
    },
    {
      name: 'PG_RESILIENCE_KEEPALIVE_MS',
      value: '10s',
      line: 'liveness.keepAliveInitialDelayMs = "10s" (from env PG_RESILIENCE_KEEPALIVE_MS): must be an integer from 0 to 86400000 (0 = off)',
    },
    {
      name: 'PG_RESILIENCE_RATE_LIMIT',
      value: '100/s',
      line: 'rateLimit.ratePerMinute = "100/s" (from env PG_RESILIENCE_RATE_LIMIT): must be a number of permits per minute: 0 turns the limiter off, a number greater than 0 and at most 60000000 turns it on',
    },
    {
      name: 'PG_RESILIENCE_RATE_LIMIT_BURST',
      value: '0',
      line: 'rateLimit.burst = 0 (from env PG_RESILIENCE_RATE_LIMIT_BURST): must be an integer from 1 to 1000000',
    },
    {
      name: 'PG_RESILIENCE_RATE_LIMIT_STRATEGY',
      value: 'block',
      line: 'rateLimit.strategy = "block" (from env PG_RESILIENCE_RATE_LIMIT_STRATEGY): must be one of: wait, drop, queue',
    },
    {
      name: 'PG_RESILIENCE_BREAKER_FAILURES',
      value: '1.5',
      line: 'circuitBreaker.consecutiveFailures = 1.5 (from env PG_RESILIENCE_BREAKER_FAILURES): must be an integer from 1 to 1000',
    },
    {
      name: 'PG_RESILIENCE_BREAKER_HALF_OPEN_AFTER_MS',
      value: 'Infinity',
      line: 'circuitBreaker.halfOpenAfterMs = "Infinity" (from env PG_RESILIENCE_BREAKER_HALF_OPEN_AFTER_MS): must be an integer from 0 to 600000',
    },
    {
      name: 'PG_RESILIENCE_BREAKER_RAMP_MS',
      value: '2s',
      line: 'circuitBreaker.rampMs = "2s" (from env PG_RESILIENCE_BREAKER_RAMP_MS): must be an integer from 0 to 600000 (0 = no ramp)',
    },
    {
      name: 'PG_RESILIENCE_RECOVERY_INTERVAL_MS',
      value: ' ',
      line: 'recovery.intervalMs = " " (from env PG_RESILIENCE_RECOVERY_INTERVAL_MS): must be an integer from 0 to 600000',
    },
    {
      name: 'PG_RESILIENCE_RECOVERY_FIRST_PROBE_MS',
      value: '0',
      line: 'recovery.firstProbeMs = 0 (from env PG_RESILIENCE_RECOVERY_FIRST_PROBE_MS): must be an integer from 1 to 600000',
    },
    {
      name: 'PG_RESILIENCE_TRANSACTION_OUTCOME_RESOLUTION_MS',
      value: '-1',
      line: 'transaction.outcomeResolutionMs = -1 (from env PG_RESILIENCE_TRANSACTION_OUTCOME_RESOLUTION_MS): must be an integer from 0 to 600000 (0 = off)',
    },
    {
      name: 'PG_RESILIENCE_FAILOVER_ROLE_TRUST_MS',
      value: '30s',
      line: 'failover.roleTrustMs = "30s" (from env PG_RESILIENCE_FAILOVER_ROLE_TRUST_MS): must be an integer from 0 to 86400000 (0 = until an error)',
    },
    {
      name: 'PG_RESILIENCE_FAILOVER_ROLE_CHECK_TIMEOUT_MS',
      value: '0',
      line: 'failover.roleCheckTimeoutMs = 0 (from env PG_RESILIENCE_FAILOVER_ROLE_CHECK_TIMEOUT_MS): must be an integer from 1 to 600000',
    },
    {
      name: 'PG_RESILIENCE_FAILOVER_EVICT',
      value: 'off',
      line: 'failover.evictOnFailover = "off" (from env PG_RESILIENCE_FAILOVER_EVICT): must be one of: true, false, 1, 0, yes, no',
    },
    {
      name: 'PG_RESILIENCE_HOLD_CLIENT_ERROR_WHILE_SUBSTITUTING',
      value: 'off',
      line: 'retry.holdClientErrorWhileSubstituting = "off" (from env PG_RESILIENCE_HOLD_CLIENT_ERROR_WHILE_SUBSTITUTING): must be true or false',
    },
    {
      name: 'PG_RESILIENCE_MAX_CONNECTIONS',
      value: '-1',
      line: 'connectionBudget.maxConnections = -1 (from env PG_RESILIENCE_MAX_CONNECTIONS): must be an integer from 0 to 1000000 (0 = off)',
    },
    {
      name: 'PG_RESILIENCE_BULKHEAD',
      value: 'true',
      line: 'bulkhead.maxConcurrent = "true" (from env PG_RESILIENCE_BULKHEAD): must be an integer from 0 to 100000 (0 = off)',
    },
    {
      name: 'PG_RESILIENCE_LEAK_THRESHOLD_MS',
      value: '30s',
      line: 'leakDetection.idleThresholdMs = "30s" (from env PG_RESILIENCE_LEAK_THRESHOLD_MS): must be an integer from 0 to 86400000 (0 = off)',
    },
    {
      name: 'PG_RESILIENCE_LEAK_DEAD_GRACE_MS',
      value: '0',
      line: 'leakDetection.deadGraceMs = 0 (from env PG_RESILIENCE_LEAK_DEAD_GRACE_MS): must be an integer from 1 to 600000',
    },
    {
      name: 'PG_RESILIENCE_CONFIG',
      value: '/nonexistent/pg-resilience.json',
      line: `PG_RESILIENCE_CONFIG = "/nonexistent/pg-resilience.json" (from env PG_RESILIENCE_CONFIG): must name a readable JSON file; reading /nonexistent/pg-resilience.json failed: ENOENT: no such file or directory, open '/nonexistent/pg-resilience.json'`,
    },
    {
      name: 'PG_RESILIENCE_LOG_LEVEL',
      value: 'verbose',
      line: 'telemetry.logLevel = "verbose" (from env PG_RESILIENCE_LOG_LEVEL): must be one of: off, error, warn, info, debug',
    },
    {
      name: 'PG_RESILIENCE_OPERATION_SPANS',
      value: 'sometimes',
      line: 'telemetry.operationSpans = "sometimes" (from env PG_RESILIENCE_OPERATION_SPANS): must be one of: on_event, always, off',
    },
    {
      name: 'PG_RESILIENCE_HEALTH_PORT',
      value: '65536',
      line: 'telemetry.health.port = 65536 (from env PG_RESILIENCE_HEALTH_PORT): must be an integer from 1 to 65535 (0 picks a free port)',
    },
    {
      name: 'PG_RESILIENCE_HEALTH_HOST',
      value: 'http://0.0.0.0',
      line: 'telemetry.health.host = "http://0.0.0.0" (from env PG_RESILIENCE_HEALTH_HOST): must be a host name or IP address, e.g. 127.0.0.1 or 0.0.0.0',
    },
    {
      // The password is redacted even when the URL is wrong.
      name: 'PG_RESILIENCE_REDIS_URL',
      value: 'http://app:s3cret-pw@redis:6379/0',
      line: 'coordination.redis.url = "http://app:***@redis:6379/0" (from env PG_RESILIENCE_REDIS_URL): must be a redis:// or rediss:// URL, e.g. redis://redis.internal:6379/0',
    },
    {
      name: 'PG_RESILIENCE_REDIS_CLUSTER',
      value: 'on',
      line: 'coordination.redis.cluster = "[redacted]" (from env PG_RESILIENCE_REDIS_CLUSTER): must be one of: true, false, 1, 0, yes, no',
    },
    {
      name: 'PG_RESILIENCE_FLEET',
      value: 'shop{api}',
      line: 'coordination.fleet = "shop{api}" (from env PG_RESILIENCE_FLEET): must be 1 to 100 characters among letters, digits and . _ - : /',
    },
    {
      name: 'PG_RESILIENCE_COORDINATION_TIMEOUT_MS',
      value: '0',
      line: 'coordination.timeoutMs = 0 (from env PG_RESILIENCE_COORDINATION_TIMEOUT_MS): must be an integer from 1 to 10000',
    },
    {
      name: 'PG_RESILIENCE_RETRY_ATTEMPT',
      value: '3',
      line: 'PG_RESILIENCE_RETRY_ATTEMPT = 3 (from env PG_RESILIENCE_RETRY_ATTEMPT): is not a pg-resilience variable (did you mean PG_RESILIENCE_RETRY_ATTEMPTS?); known variables: PG_RESILIENCE_DISABLED, PG_RESILIENCE_PROFILE, PG_RESILIENCE_CONFIG, PG_RESILIENCE_RETRY_ATTEMPTS, PG_RESILIENCE_RETRY_INITIAL_DELAY_MS, PG_RESILIENCE_RETRY_MAX_DELAY_MS, PG_RESILIENCE_HOLD_CLIENT_ERROR_WHILE_SUBSTITUTING, PG_RESILIENCE_TIMEOUT_MS, PG_RESILIENCE_CONNECT_TIMEOUT_MS, PG_RESILIENCE_KEEPALIVE_MS, PG_RESILIENCE_RATE_LIMIT, PG_RESILIENCE_RATE_LIMIT_BURST, PG_RESILIENCE_RATE_LIMIT_STRATEGY, PG_RESILIENCE_BREAKER_FAILURES, PG_RESILIENCE_BREAKER_HALF_OPEN_AFTER_MS, PG_RESILIENCE_BREAKER_RAMP_MS, PG_RESILIENCE_RECOVERY_INTERVAL_MS, PG_RESILIENCE_RECOVERY_FIRST_PROBE_MS, PG_RESILIENCE_TRANSACTION_OUTCOME_RESOLUTION_MS, PG_RESILIENCE_FAILOVER_ROLE_TRUST_MS, PG_RESILIENCE_FAILOVER_ROLE_CHECK_TIMEOUT_MS, PG_RESILIENCE_FAILOVER_EVICT, PG_RESILIENCE_BULKHEAD, PG_RESILIENCE_MAX_CONNECTIONS, PG_RESILIENCE_LEAK_THRESHOLD_MS, PG_RESILIENCE_LEAK_DEAD_GRACE_MS, PG_RESILIENCE_LOG_LEVEL, PG_RESILIENCE_OPERATION_SPANS, PG_RESILIENCE_HEALTH_PORT, PG_RESILIENCE_HEALTH_HOST, PG_RESILIENCE_REDIS_URL, PG_RESILIENCE_REDIS_CLUSTER, PG_RESILIENCE_FLEET, PG_RESILIENCE_COORDINATION_TIMEOUT_MS, PG_RESILIENCE_NODE_CACHE',
    },
  ];

  it('the table has a row for every documented variable', () => {
    for (const name of ENV_VARS.map((v) => v.name)) {
      assert.ok(
        rows.some((r) => r.name === name),
        `no row for ${name}`,
      );
    }
  });

  for (const row of rows) {
    it(`${row.name}=${JSON.stringify(row.value)}`, () => {
      expectOneLine(startUp({ [row.name]: row.value }), row.line);
    });
  }

  it('values that look odd but are valid are accepted (no false alarms)', () => {
    const ok = startUp({
      PG_RESILIENCE_RETRY_ATTEMPTS: ' 4 ',
      PG_RESILIENCE_RETRY_MAX_DELAY_MS: '1e3',
      PG_RESILIENCE_RATE_LIMIT_STRATEGY: 'QUEUE',
      PG_RESILIENCE_LOG_LEVEL: 'Info',
      PG_RESILIENCE_DISABLED: 'No',
    })() as PgResilienceInstrumentation;
    assert.equal(ok.resilienceConfig.retry.maxAttempts, 4);
    assert.equal(ok.resilienceConfig.retry.maxDelayMs, 1000);
    assert.equal(ok.resilienceConfig.rateLimit.strategy, 'queue');
  });
});

// ---- 6. the instrumentation's own options, and all of it at once ----

describe('new PgResilienceInstrumentation(options): one ConfigError for everything wrong', () => {
  it('the options are not an object', () => {
    for (const [options, shownValue] of [
      ['fast', '"fast"'],
      [5, '5'],
      [[{ retry: {} }], '[{"retry":{}}]'],
    ] as const) {
      // Regression: a string was spread into `{ 0: 'f', 1: 'a', … }` and reported as unknown keys "0".."3".
      expectOneLine(
        () => new PgResilienceInstrumentation(options as never),
        `options = ${shownValue} (from code): must be an object`,
      );
    }
  });

  it('enabled that is not a boolean', () => {
    // Regression: `enabled: 'no'` was truthy, so the instrumentation was silently enabled.
    expectOneLine(startUp({}, { enabled: 'no' }), 'enabled = "no" (from code): must be true or false');
  });

  it('telemetry options: not an object, an unknown key, bad values', () => {
    const rows: Array<[object, string]> = [
      [
        { telemetry: 'debug' },
        'telemetry = "debug" (from code): must be an object with the keys: logLevel, operationSpans, health',
      ],
      [
        { telemetry: { loglevel: 'debug' } },
        'telemetry.loglevel = "debug" (from code): is not a known setting (did you mean telemetry.logLevel?); telemetry accepts: logLevel, operationSpans, health',
      ],
      [
        { telemetry: { logLevel: 'trace' } },
        'telemetry.logLevel = "trace" (from code): must be one of: off, error, warn, info, debug',
      ],
      [
        { telemetry: { operationSpans: true } },
        'telemetry.operationSpans = true (from code): must be one of: on_event, always, off',
      ],
      [
        { telemetry: { health: 9464 } },
        'telemetry.health = 9464 (from code): must be an object with the keys: port, host',
      ],
      [
        { telemetry: { health: { port: 1.5 } } },
        'telemetry.health.port = 1.5 (from code): must be an integer from 1 to 65535 (0 picks a free port)',
      ],
      [
        { telemetry: { health: { port: 9464, host: '' } } },
        'telemetry.health.host = "" (from code): must be a host name or IP address, e.g. 127.0.0.1 or 0.0.0.0',
      ],
    ];
    for (const [options, line] of rows) expectOneLine(startUp({}, options), line);
  });

  it(
    // Regression: the telemetry settings' own resolver checked the keys of `telemetry` but not of `telemetry.health`,
    // so { health: { prot: 9464 } } silently served no endpoint.
    'telemetry.health: an unknown key (a typo such as `prot`)',
    () => {
      expectOneLine(
        startUp({}, { telemetry: { health: { prot: 9464 } } }),
        'telemetry.health.prot = 9464 (from code): is not a known setting (did you mean telemetry.health.port?); telemetry.health accepts: port, host',
      );
    },
  );

  it('a configuration mistake and a telemetry mistake together: one error listing both', () => {
    // Regression: the configuration was resolved first and threw alone; the telemetry mistake only
    // surfaced on the next start, after the first was fixed.
    const err = configError(
      startUp({ PG_RESILIENCE_RETRY_ATTEMPTS: '0', PG_RESILIENCE_HEALTH_PORT: 'auto' }, { enabled: 1 }),
    );
    assert.equal(
      err.message,
      [
        'pg-resilience: invalid configuration (3 issues):',
        '  enabled = 1 (from code): must be true or false',
        '  retry.maxAttempts = 0 (from env PG_RESILIENCE_RETRY_ATTEMPTS): must be an integer from 1 to 100',
        '  telemetry.health.port = "auto" (from env PG_RESILIENCE_HEALTH_PORT): must be an integer from 1 to 65535 (0 picks a free port)',
      ].join('\n'),
    );
  });

  it('the kill switch (PG_RESILIENCE_DISABLED=true) skips validating the telemetry settings too', () => {
    // Regression: a bad PG_RESILIENCE_HEALTH_PORT still threw with the kill switch on, so an operator
    // could not switch the package off to get a broken deployment running.
    const inst = startUp({
      PG_RESILIENCE_DISABLED: 'true',
      PG_RESILIENCE_HEALTH_PORT: 'auto',
      PG_RESILIENCE_RETRY_ATTEMPTS: '0',
    })() as PgResilienceInstrumentation;
    assert.equal(inst.resilienceConfig.disabled, true);
    assert.equal(inst.isEnabled(), false);
    assert.equal(
      inst.resilienceConfig.telemetry.health.port,
      undefined,
      'the defaults serve no health endpoint',
    );
  });
});

// ---- 7. what an app started with the register hook sees ----

describe('a bad variable with `node --require pg-resilience/register`: one clear message, exit code 1', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const run = (entry: string[], env: Record<string, string>) => {
    const clean = Object.fromEntries(
      Object.entries(process.env).filter(
        ([k]) => !k.startsWith('PG_RESILIENCE_') || k.startsWith('PG_RESILIENCE_TEST_'),
      ),
    );
    return spawnSync(
      process.execPath,
      [
        '--disable-warning=ExperimentalWarning',
        ...entry,
        '-e',
        'console.log("app started"); require("node:fs").writeSync(1, "")',
      ],
      {
        cwd: root,
        encoding: 'utf8',
        timeout: 60_000,
        env: { ...clean, OTEL_SDK_DISABLED: 'true', ...env },
      },
    );
  };
  const check = (res: ReturnType<typeof run>, lines: string[]) => {
    assert.equal(res.status, 1, `exit code; stderr:\n${res.stderr}`);
    assert.doesNotMatch(res.stdout, /app started/, 'the app must not start with a bad configuration');
    const heading = `pg-resilience: invalid configuration (${lines.length} issue${lines.length === 1 ? '' : 's'}):`;
    // The message alone, then what to do: no `ConfigError:` prefix, no code frame, no stack, and not
    // the error's `issues` array (Node printed it once, repeating every line).
    assert.equal(
      res.stderr,
      `${heading}\n${lines.map((l) => `  ${l}`).join('\n')}\n` +
        'pg-resilience/register: the app was not started. Fix the setting above, or set ' +
        'PG_RESILIENCE_DISABLED=true to run the app without pg-resilience.\n',
    );
  };

  it('CommonJS entry (--require), one bad variable', () => {
    check(run(['--require', join(root, 'src/register-cjs.ts')], { PG_RESILIENCE_BREAKER_FAILURES: '0' }), [
      'circuitBreaker.consecutiveFailures = 0 (from env PG_RESILIENCE_BREAKER_FAILURES): must be an integer from 1 to 1000',
    ]);
  });

  it('ESM entry (--import), a configuration and a telemetry variable wrong at once', () => {
    check(
      run(['--import', join(root, 'src/register.ts')], {
        PG_RESILIENCE_PROFILE: 'prod',
        PG_RESILIENCE_LOG_LEVEL: 'loud',
      }),
      [
        'profile = "prod" (from env PG_RESILIENCE_PROFILE): must be one of: default, batch',
        'telemetry.logLevel = "loud" (from env PG_RESILIENCE_LOG_LEVEL): must be one of: off, error, warn, info, debug',
      ],
    );
  });
});
