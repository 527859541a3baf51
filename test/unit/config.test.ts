import assert from 'node:assert/strict';
import { resolve as resolvePath } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { ClassifierOverride } from '../../src/classify/types.ts';
import {
  ConfigError,
  type ConfigIssue,
  isConfigError,
  PROFILES,
  type ResilienceConfig,
  type ResilienceOptions,
  type ResilienceSettings,
  resolveConfig,
  settingsForTarget,
} from '../../src/config/index.ts';
import { ENV_VARS } from '../../src/config/env.ts';
import { configSchema, metaOf, schemaAt } from '../../src/config/schema.ts';

// ---- helpers ----

type Input = NonNullable<Parameters<typeof resolveConfig>[0]>;

/** Resolves with an empty environment unless the test gives one (never the test runner's own env). */
const resolve = (input: Input = {}) => resolveConfig({ env: {}, ...input });

/** A readFile that serves one JSON file. */
const fileWith = (content: unknown) => ({
  env: { PG_RESILIENCE_CONFIG: '/etc/app/pg-resilience.json' },
  readFile: (path: string) => {
    assert.equal(path, '/etc/app/pg-resilience.json');
    return typeof content === 'string' ? content : JSON.stringify(content);
  },
});
const FILE = 'file /etc/app/pg-resilience.json';

function configError(input: Input): ConfigError {
  try {
    resolve(input);
  } catch (e) {
    assert.ok(isConfigError(e), `expected a ConfigError, got ${e}`);
    assert.ok(e instanceof ConfigError);
    assert.ok(e.message.startsWith('pg-resilience: invalid configuration'), e.message);
    // One line per issue after the heading.
    assert.equal(e.message.split('\n').length, e.issues.length + 1, e.message);
    return e;
  }
  assert.fail('expected resolveConfig to throw a ConfigError');
}

/**
 * Asserts that resolving `input` fails with exactly one issue (unless `others` is set), that the issue
 * names the field, value, allowed values and source, and that the message shows it as one line.
 */
function expectIssue(
  input: Input,
  expected: { field: string; value: unknown; source: string; allowed: RegExp; line?: string },
  others = false,
): ConfigIssue {
  const err = configError(input);
  const issue = err.issues.find((i) => i.field === expected.field);
  assert.ok(issue, `no issue for ${expected.field} in:\n${err.message}`);
  if (!others) assert.equal(err.issues.length, 1, err.message);
  assert.deepEqual(issue.value, expected.value);
  assert.equal(issue.source, expected.source);
  assert.match(issue.allowed, expected.allowed);
  if (expected.line)
    assert.ok(
      err.message.includes(`\n  ${expected.line}`),
      `missing line:\n  ${expected.line}\nin:\n${err.message}`,
    );
  return issue;
}

function assertDeepFrozen(value: unknown, path = 'config'): void {
  if (typeof value !== 'object' || value === null) return;
  assert.ok(Object.isFrozen(value), `${path} is not frozen`);
  for (const [k, v] of Object.entries(value)) assertDeepFrozen(v, `${path}.${k}`);
}

// The decided profiles, written out in full: a change to either must change this test too.
const PER_ERROR_CLASS = {
  connect_refused: { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 2000 },
  too_many_connections: { maxAttempts: 5, initialDelayMs: 200, maxDelayMs: 2000 },
  connection_lost: { maxAttempts: 7 },
  statement_timeout: { maxAttempts: 1 },
};
const BUDGET = { enabled: true, ratio: 0.2, windowMs: 10000, minRetries: 10 };
const EXPECTED_DEFAULT: ResilienceSettings = {
  retry: {
    enabled: true,
    maxAttempts: 3,
    initialDelayMs: 50,
    maxDelayMs: 1000,
    multiplier: 2,
    jitter: 'decorrelated',
    perErrorClass: PER_ERROR_CLASS,
    budget: BUDGET,
    holdClientErrorWhileSubstituting: false,
  },
  circuitBreaker: {
    enabled: true,
    mode: 'consecutive',
    consecutiveFailures: 5,
    failureRateThreshold: 0.5,
    failureRateWindowMs: 10000,
    minimumRps: 5,
    halfOpenAfterMs: 5000,
    halfOpenMaxProbes: 1,
    successesToClose: 1,
    rampMs: 2000,
  },
  rateLimit: {
    enabled: false,
    ratePerMinute: 6000,
    burst: 100,
    strategy: 'wait',
    maxQueueSize: 1000,
    maxWaitMs: 5000,
  },
  timeout: { queryMs: 0, connectMs: 10000, cancelGraceMs: 1000 },
  bulkhead: { maxConcurrent: 0, maxQueue: 100 },
  recovery: { enabled: true, intervalMs: 500, firstProbeMs: 50, maxAttempts: 0 },
  liveness: { keepAliveInitialDelayMs: 10000, evictIdleOnOutage: true },
  leakDetection: { enabled: true, idleThresholdMs: 0, deadGraceMs: 5000 },
  transaction: { outcomeResolutionMs: 10000 },
  failover: { roleTrustMs: 0, roleCheckTimeoutMs: 5000, evictOnFailover: true },
  connectionBudget: { maxConnections: 0 },
};
// The seed's database profile.
const EXPECTED_BATCH: ResilienceSettings = {
  retry: {
    enabled: true,
    maxAttempts: 3,
    initialDelayMs: 1000,
    maxDelayMs: 10000,
    multiplier: 2,
    jitter: 'decorrelated',
    perErrorClass: PER_ERROR_CLASS,
    budget: BUDGET,
    holdClientErrorWhileSubstituting: false,
  },
  circuitBreaker: {
    enabled: true,
    mode: 'consecutive',
    consecutiveFailures: 5,
    failureRateThreshold: 0.5,
    failureRateWindowMs: 10000,
    minimumRps: 5,
    halfOpenAfterMs: 30000,
    halfOpenMaxProbes: 1,
    successesToClose: 2,
    rampMs: 5000,
  },
  rateLimit: {
    enabled: true,
    ratePerMinute: 300,
    burst: 50,
    strategy: 'wait',
    maxQueueSize: 1000,
    maxWaitMs: 0,
  },
  timeout: { queryMs: 0, connectMs: 30000, cancelGraceMs: 1000 },
  bulkhead: { maxConcurrent: 0, maxQueue: 100 },
  recovery: { enabled: true, intervalMs: 30000, firstProbeMs: 30000, maxAttempts: 3 },
  liveness: { keepAliveInitialDelayMs: 10000, evictIdleOnOutage: true },
  leakDetection: { enabled: true, idleThresholdMs: 0, deadGraceMs: 5000 },
  transaction: { outcomeResolutionMs: 60000 },
  failover: { roleTrustMs: 0, roleCheckTimeoutMs: 5000, evictOnFailover: true },
  connectionBudget: { maxConnections: 0 },
};

const settingsOf = (c: ResilienceConfig): ResilienceSettings => ({
  retry: c.retry,
  circuitBreaker: c.circuitBreaker,
  rateLimit: c.rateLimit,
  timeout: c.timeout,
  bulkhead: c.bulkhead,
  recovery: c.recovery,
  liveness: c.liveness,
  leakDetection: c.leakDetection,
  transaction: c.transaction,
  failover: c.failover,
  connectionBudget: c.connectionBudget,
});

// ---- profiles ----

describe('profiles', () => {
  it('default is exactly the decided online profile', () => {
    assert.deepEqual(PROFILES.default, EXPECTED_DEFAULT);
  });

  it('batch equals the seed database profile exactly', () => {
    assert.deepEqual(PROFILES.batch, EXPECTED_BATCH);
  });

  it('with nothing set, the resolved config is the default profile, enabled, with no targets', () => {
    const c = resolve();
    assert.deepEqual(c, {
      disabled: false,
      profile: 'default',
      ...EXPECTED_DEFAULT,
      telemetry: { logLevel: 'warn', operationSpans: 'on_event', health: { host: '127.0.0.1' } },
      coordination: { redis: { cluster: false }, timeoutMs: 50, leaseMs: 5000 },
      targets: {},
    });
    assert.equal('classify' in c, false);
  });

  it('passes valid defaults through its own validation (both profiles resolve)', () => {
    assert.deepEqual(settingsOf(resolve({ options: { profile: 'batch' } })), EXPECTED_BATCH);
    assert.deepEqual(settingsOf(resolve({ env: { PG_RESILIENCE_PROFILE: 'batch' } })), EXPECTED_BATCH);
  });

  it('PROFILES is deep-frozen', () => {
    assertDeepFrozen(PROFILES, 'PROFILES');
    assert.throws(() => {
      (PROFILES.default.retry as { maxAttempts: number }).maxAttempts = 9;
    }, TypeError);
  });

  it('profile choice: options.profile, else PG_RESILIENCE_PROFILE, else the file, else default', () => {
    const file = fileWith({ profile: 'batch' });
    assert.equal(resolve(file).profile, 'batch');
    assert.equal(
      resolve({ ...file, env: { ...file.env, PG_RESILIENCE_PROFILE: 'default' } }).profile,
      'default',
    );
    assert.equal(
      resolve({ env: { PG_RESILIENCE_PROFILE: 'batch' }, options: { profile: 'default' } }).profile,
      'default',
    );
    assert.equal(resolve({ env: { PG_RESILIENCE_PROFILE: 'BATCH' } }).profile, 'batch');
  });

  it('the chosen profile is the base that the file, env and code override', () => {
    const c = resolve({ env: { PG_RESILIENCE_PROFILE: 'batch', PG_RESILIENCE_RETRY_ATTEMPTS: '4' } });
    assert.equal(c.retry.maxAttempts, 4);
    assert.equal(c.retry.initialDelayMs, 1000); // from batch
    assert.equal(c.rateLimit.enabled, true); // from batch
  });
});

// ---- precedence ----

describe('precedence: profile < file < env < code', () => {
  const file = fileWith({ retry: { maxAttempts: 4, initialDelayMs: 10 }, timeout: { queryMs: 100 } });

  it('the file overrides the profile', () => {
    const c = resolve(file);
    assert.equal(c.retry.maxAttempts, 4);
    assert.equal(c.retry.initialDelayMs, 10);
    assert.equal(c.retry.maxDelayMs, 1000); // untouched: profile
  });

  it('env overrides the file', () => {
    const c = resolve({ ...file, env: { ...file.env, PG_RESILIENCE_RETRY_ATTEMPTS: '6' } });
    assert.equal(c.retry.maxAttempts, 6);
    assert.equal(c.retry.initialDelayMs, 10); // file
  });

  it('code overrides env (the OpenTelemetry JS convention)', () => {
    const c = resolve({
      ...file,
      env: { ...file.env, PG_RESILIENCE_RETRY_ATTEMPTS: '6', PG_RESILIENCE_TIMEOUT_MS: '200' },
      options: { retry: { maxAttempts: 2 } },
    });
    assert.equal(c.retry.maxAttempts, 2);
    assert.equal(c.timeout.queryMs, 200); // env over file
    assert.equal(c.retry.initialDelayMs, 10); // file
  });

  it('undefined in code options means unset, not "erase"', () => {
    const c = resolve({
      env: { PG_RESILIENCE_RETRY_ATTEMPTS: '6' },
      options: { retry: { maxAttempts: undefined } },
    });
    assert.equal(c.retry.maxAttempts, 6);
  });

  it('an empty variable is unset', () => {
    const c = resolve({
      env: { PG_RESILIENCE_RETRY_ATTEMPTS: '', PG_RESILIENCE_PROFILE: '', PG_RESILIENCE_CONFIG: '' },
    });
    assert.deepEqual(settingsOf(c), EXPECTED_DEFAULT);
  });

  it('every simple variable sets its field', () => {
    const c = resolve({
      env: {
        PG_RESILIENCE_RETRY_ATTEMPTS: '5',
        PG_RESILIENCE_RETRY_INITIAL_DELAY_MS: '20',
        PG_RESILIENCE_RETRY_MAX_DELAY_MS: '3000',
        PG_RESILIENCE_TIMEOUT_MS: '1500',
        PG_RESILIENCE_CONNECT_TIMEOUT_MS: ' 2500 ',
        PG_RESILIENCE_RATE_LIMIT: '1200',
        PG_RESILIENCE_RATE_LIMIT_BURST: '30',
        PG_RESILIENCE_RATE_LIMIT_STRATEGY: 'queue',
        PG_RESILIENCE_BREAKER_FAILURES: '8',
        PG_RESILIENCE_BREAKER_HALF_OPEN_AFTER_MS: '7000',
        PG_RESILIENCE_RECOVERY_INTERVAL_MS: '250',
        PG_RESILIENCE_BULKHEAD: '16',
      },
    });
    assert.deepEqual(
      [
        c.retry.maxAttempts,
        c.retry.initialDelayMs,
        c.retry.maxDelayMs,
        c.timeout.queryMs,
        c.timeout.connectMs,
      ],
      [5, 20, 3000, 1500, 2500],
    );
    assert.deepEqual(c.rateLimit, {
      ...EXPECTED_DEFAULT.rateLimit,
      enabled: true,
      ratePerMinute: 1200,
      burst: 30,
      strategy: 'queue',
    });
    assert.deepEqual(
      [
        c.circuitBreaker.consecutiveFailures,
        c.circuitBreaker.halfOpenAfterMs,
        c.recovery.intervalMs,
        c.bulkhead.maxConcurrent,
      ],
      [8, 7000, 250, 16],
    );
  });

  it('PG_RESILIENCE_RATE_LIMIT: a positive value turns the limiter on, 0 turns it off', () => {
    assert.equal(resolve({ env: { PG_RESILIENCE_RATE_LIMIT: '600' } }).rateLimit.enabled, true);
    const off = resolve({ env: { PG_RESILIENCE_PROFILE: 'batch', PG_RESILIENCE_RATE_LIMIT: '0' } }).rateLimit;
    assert.equal(off.enabled, false);
    assert.equal(off.ratePerMinute, 300); // untouched
    // Code still wins.
    assert.equal(
      resolve({ env: { PG_RESILIENCE_RATE_LIMIT: '600' }, options: { rateLimit: { enabled: false } } })
        .rateLimit.enabled,
      false,
    );
  });

  it('PG_RESILIENCE_DISABLED accepts true/false/1/0/yes/no in any case', () => {
    for (const [raw, want] of [
      ['true', true],
      ['1', true],
      ['YES', true],
      ['false', false],
      ['0', false],
      ['no', false],
    ] as const) {
      assert.equal(resolve({ env: { PG_RESILIENCE_DISABLED: raw } }).disabled, want, raw);
    }
    // The kill switch wins over code (see config-operator-switches.test.ts).
    assert.equal(
      resolve({ env: { PG_RESILIENCE_DISABLED: 'true' }, options: { disabled: false } }).disabled,
      true,
    );
  });

  it('reserved variables of other modules are accepted and ignored', () => {
    const c = resolve({
      env: {
        PG_RESILIENCE_LOG_LEVEL: 'debug',
        PG_RESILIENCE_HEALTH_PORT: '9000',
        PG_RESILIENCE_HEALTH_HOST: '0.0.0.0',
        PG_RESILIENCE_NODE_CACHE: '/tmp/x',
        PG_RESILIENCE_TEST_DATABASE_URL: 'postgres://x',
        PG_RESILIENCE_TEST_ANYTHING: '1',
        PGHOST: 'unrelated',
      },
    });
    assert.deepEqual(settingsOf(c), EXPECTED_DEFAULT);
  });

  it('defaults to process.env and fs when no env or readFile is given', () => {
    // The test runner's environment holds no PG_RESILIENCE_* setting but the reserved ones.
    const c = resolveConfig({ options: { retry: { maxAttempts: 2 } } });
    assert.equal(c.retry.maxAttempts, 2);
  });

  it('a relative PG_RESILIENCE_CONFIG path is read from the working directory', () => {
    let read = '';
    resolve({
      env: { PG_RESILIENCE_CONFIG: 'config/pgr.json' },
      readFile: (p) => {
        read = p;
        return '{}';
      },
    });
    assert.equal(read, resolvePath('config/pgr.json'));
  });

  it('code may pass a classify function (and it is kept as is)', () => {
    const classify: ClassifierOverride = () => ({ transient: false });
    const c = resolve({ options: { classify } });
    assert.equal(c.classify, classify);
    assert.equal(Object.isFrozen(classify), false);
  });

  it('does not modify the options object it is given', () => {
    const options: ResilienceOptions = {
      retry: { maxAttempts: 2, perErrorClass: { deadlock: { maxAttempts: 3 } } },
    };
    const copy = structuredClone(options);
    resolve({ options });
    assert.deepEqual(options, copy);
    assert.equal(Object.isFrozen(options), false);
  });
});

// ---- errors, one kind per test ----

describe('errors: one ConfigError naming field, value, allowed values and source', () => {
  it('out of range, from env (the raw string is reported)', () => {
    expectIssue(
      { env: { PG_RESILIENCE_RETRY_ATTEMPTS: '0' } },
      {
        field: 'retry.maxAttempts',
        value: '0',
        source: 'env PG_RESILIENCE_RETRY_ATTEMPTS',
        allowed: /^must be an integer from 1 to 100$/,
        line: 'retry.maxAttempts = 0 (from env PG_RESILIENCE_RETRY_ATTEMPTS): must be an integer from 1 to 100',
      },
    );
  });

  it('not a number, from env', () => {
    expectIssue(
      { env: { PG_RESILIENCE_TIMEOUT_MS: '5s' } },
      {
        field: 'timeout.queryMs',
        value: '5s',
        source: 'env PG_RESILIENCE_TIMEOUT_MS',
        allowed: /must be an integer from 0 to 86400000 \(0 = off\)/,
        line: 'timeout.queryMs = "5s" (from env PG_RESILIENCE_TIMEOUT_MS): must be an integer from 0 to 86400000 (0 = off)',
      },
    );
  });

  it('not an integer, from env', () => {
    expectIssue(
      { env: { PG_RESILIENCE_BULKHEAD: '2.5' } },
      {
        field: 'bulkhead.maxConcurrent',
        value: '2.5',
        source: 'env PG_RESILIENCE_BULKHEAD',
        allowed: /integer from 0 to 100000/,
      },
    );
  });

  it('bad boolean, from env', () => {
    expectIssue(
      { env: { PG_RESILIENCE_DISABLED: 'maybe' } },
      {
        field: 'disabled',
        value: 'maybe',
        source: 'env PG_RESILIENCE_DISABLED',
        allowed: /^must be one of: true, false, 1, 0, yes, no$/,
        line: 'disabled = "maybe" (from env PG_RESILIENCE_DISABLED): must be one of: true, false, 1, 0, yes, no',
      },
    );
  });

  it('unknown profile, from env', () => {
    expectIssue(
      { env: { PG_RESILIENCE_PROFILE: 'prod' } },
      {
        field: 'profile',
        value: 'prod',
        source: 'env PG_RESILIENCE_PROFILE',
        allowed: /must be one of: default, batch/,
      },
    );
  });

  it('unknown strategy, from env', () => {
    expectIssue(
      { env: { PG_RESILIENCE_RATE_LIMIT_STRATEGY: 'block' } },
      {
        field: 'rateLimit.strategy',
        value: 'block',
        source: 'env PG_RESILIENCE_RATE_LIMIT_STRATEGY',
        allowed: /must be one of: wait, drop, queue/,
      },
    );
  });

  it('negative rate limit, from env (says what 0 does)', () => {
    expectIssue(
      { env: { PG_RESILIENCE_RATE_LIMIT: '-10' } },
      {
        field: 'rateLimit.ratePerMinute',
        value: '-10',
        source: 'env PG_RESILIENCE_RATE_LIMIT',
        allowed: /0 turns the limiter off, a number greater than 0 and at most 60000000 turns it on/,
      },
    );
  });

  it('unknown PG_RESILIENCE_* variable, with a close match', () => {
    const issue = expectIssue(
      { env: { PG_RESILIENCE_RETRY_ATTEMPT: '3' } },
      {
        field: 'PG_RESILIENCE_RETRY_ATTEMPT',
        value: '3',
        source: 'env PG_RESILIENCE_RETRY_ATTEMPT',
        allowed:
          /^is not a pg-resilience variable \(did you mean PG_RESILIENCE_RETRY_ATTEMPTS\?\); known variables: /,
      },
    );
    assert.match(issue.allowed, /PG_RESILIENCE_BREAKER_HALF_OPEN_AFTER_MS/);
  });

  it('unknown PG_RESILIENCE_* variable, nothing close: lists the known ones', () => {
    const issue = expectIssue(
      { env: { PG_RESILIENCE_WHATEVER: 'x' } },
      {
        field: 'PG_RESILIENCE_WHATEVER',
        value: 'x',
        source: 'env PG_RESILIENCE_WHATEVER',
        allowed: /known variables: PG_RESILIENCE_DISABLED, /,
      },
    );
    assert.doesNotMatch(issue.allowed, /did you mean/);
  });

  it('wrong type, from code', () => {
    expectIssue(
      { options: { retry: { maxAttempts: '3' } } as never },
      {
        field: 'retry.maxAttempts',
        value: '3',
        source: 'code',
        allowed: /^must be an integer from 1 to 100$/,
        line: 'retry.maxAttempts = "3" (from code): must be an integer from 1 to 100',
      },
    );
  });

  it('an object expected, from code', () => {
    expectIssue(
      { options: { retry: true } as never },
      {
        field: 'retry',
        value: true,
        source: 'code',
        allowed: /^must be an object with the keys: enabled, maxAttempts/,
      },
    );
    expectIssue(
      { options: 'fast' as never },
      { field: 'options', value: 'fast', source: 'code', allowed: /^must be an object$/ },
    );
  });

  it('out of range numbers and ratios, from code', () => {
    const err = configError({
      options: {
        retry: { multiplier: 0.5, budget: { ratio: 1.5 } },
        rateLimit: { ratePerMinute: 0, burst: 0 },
        circuitBreaker: { successesToClose: 0, halfOpenMaxProbes: 0 },
        timeout: { connectMs: Number.POSITIVE_INFINITY },
      },
    });
    const byField = Object.fromEntries(err.issues.map((i) => [i.field, i]));
    assert.match(byField['retry.multiplier']!.allowed, /a number from 1 to 10/);
    assert.match(byField['retry.budget.ratio']!.allowed, /a number from 0 to 1/);
    assert.match(byField['rateLimit.ratePerMinute']!.allowed, /greater than 0/);
    assert.match(byField['rateLimit.burst']!.allowed, /integer from 1 to/);
    assert.match(byField['circuitBreaker.successesToClose']!.allowed, /integer from 1 to 1000/);
    assert.match(byField['circuitBreaker.halfOpenMaxProbes']!.allowed, /integer from 1 to 1000/);
    assert.equal(byField['timeout.connectMs']!.value, Number.POSITIVE_INFINITY);
    assert.equal(err.issues.length, 7, err.message);
    assert.ok(err.issues.every((i) => i.source === 'code'));
  });

  it('unknown key, with a close match among its siblings', () => {
    expectIssue(
      { options: { retry: { maxAttempt: 3 } } as never },
      {
        field: 'retry.maxAttempt',
        value: 3,
        source: 'code',
        allowed:
          /^is not a known setting \(did you mean retry\.maxAttempts\?\); retry accepts: enabled, maxAttempts, /,
      },
    );
  });

  it('known setting at the wrong depth', () => {
    expectIssue(
      { options: { maxAttempts: 3 } as never },
      {
        field: 'maxAttempts',
        value: 3,
        source: 'code',
        allowed:
          /did you mean retry\.maxAttempts or recovery\.maxAttempts\?\); the top level accepts: retry, /,
      },
    );
  });

  it('unknown key deep inside (budget), from the file', () => {
    expectIssue(fileWith({ retry: { budget: { ration: 0.1 } } }), {
      field: 'retry.budget.ration',
      value: 0.1,
      source: FILE,
      allowed: /did you mean retry\.budget\.ratio\?/,
    });
  });

  it('unknown error class in perErrorClass', () => {
    expectIssue(
      { options: { retry: { perErrorClass: { connection_refused: { maxAttempts: 9 } } } } as never },
      {
        field: 'retry.perErrorClass.connection_refused',
        value: { maxAttempts: 9 },
        source: 'code',
        allowed:
          /^is not an error class \(did you mean connect_refused\?\); error classes: connect_refused, connect_timeout/,
      },
    );
  });

  it('perErrorClass entries only take timing keys', () => {
    expectIssue(
      { options: { retry: { perErrorClass: { deadlock: { enabled: false } } } } as never },
      {
        field: 'retry.perErrorClass.deadlock.enabled',
        value: false,
        source: 'code',
        allowed: /is not a known setting/,
      },
    );
  });

  it('classify in code must be a function', () => {
    expectIssue(
      { options: { classify: 'retry everything' } as never },
      { field: 'classify', value: 'retry everything', source: 'code', allowed: /^must be a function/ },
    );
  });

  it('classify is code only: not accepted from the file', () => {
    expectIssue(fileWith({ classify: 'x' }), {
      field: 'classify',
      value: 'x',
      source: FILE,
      allowed: /^can only be set in code/,
    });
  });

  it('malformed JSON file: names the file and JSON’s message', () => {
    const issue = expectIssue(fileWith('{"retry": {"maxAttempts": 3,}}'), {
      field: 'PG_RESILIENCE_CONFIG',
      value: '/etc/app/pg-resilience.json',
      source: 'env PG_RESILIENCE_CONFIG',
      allowed: /^must name a file of valid JSON; \/etc\/app\/pg-resilience\.json is not: /,
    });
    let jsonMessage = '';
    try {
      JSON.parse('{"retry": {"maxAttempts": 3,}}');
    } catch (e) {
      jsonMessage = (e as Error).message;
    }
    assert.ok(issue.allowed.endsWith(jsonMessage), issue.allowed);
  });

  it('unreadable file: names the path and the reason', () => {
    expectIssue(
      {
        env: { PG_RESILIENCE_CONFIG: '/nope/pgr.json' },
        readFile: (p) => {
          throw Object.assign(new Error(`EACCES: permission denied, open '${p}'`), { code: 'EACCES' });
        },
      },
      {
        field: 'PG_RESILIENCE_CONFIG',
        value: '/nope/pgr.json',
        source: 'env PG_RESILIENCE_CONFIG',
        allowed:
          /^must name a readable JSON file; reading \/nope\/pgr\.json failed: EACCES: permission denied/,
      },
    );
  });

  it('a missing file, with the real fs', () => {
    const path = '/nonexistent/pg-resilience-test.json';
    expectIssue(
      { env: { PG_RESILIENCE_CONFIG: path } },
      { field: 'PG_RESILIENCE_CONFIG', value: path, source: 'env PG_RESILIENCE_CONFIG', allowed: /ENOENT/ },
    );
  });

  it('the file must hold a JSON object', () => {
    expectIssue(fileWith([1, 2]), {
      field: '(file)',
      value: [1, 2],
      source: FILE,
      allowed: /^must be a JSON object$/,
    });
  });

  it('wrong value in the file', () => {
    expectIssue(fileWith({ circuitBreaker: { mode: 'sliding' } }), {
      field: 'circuitBreaker.mode',
      value: 'sliding',
      source: FILE,
      allowed: /^must be one of: consecutive, failure_rate$/,
      line: `circuitBreaker.mode = "sliding" (from ${FILE}): must be one of: consecutive, failure_rate`,
    });
  });

  it('target key not shaped host:port/database', () => {
    for (const key of [
      'db.internal/app',
      'db.internal:pg/app',
      'db.internal:5432',
      'db.internal:70000/app',
      'db:5432/a/b',
    ]) {
      expectIssue(
        { options: { targets: { [key]: { retry: { maxAttempts: 2 } } } } },
        {
          field: 'targets',
          value: key,
          source: 'code',
          allowed: /host:port\/database with a port from 1 to 65535/,
        },
      );
    }
  });

  it('unknown key inside a target override', () => {
    expectIssue(fileWith({ targets: { 'db:5432/app': { retry: { maxAttemps: 2 } } } }), {
      field: 'targets["db:5432/app"].retry.maxAttemps',
      value: 2,
      source: FILE,
      allowed: /did you mean targets\["db:5432\/app"\]\.retry\.maxAttempts\?/,
    });
  });

  it('a target override cannot set profile, disabled or targets', () => {
    const err = configError({
      options: { targets: { 'db:5432/app': { profile: 'batch', disabled: true } } } as never,
    });
    assert.deepEqual(err.issues.map((i) => i.field).sort(), [
      'targets["db:5432/app"].disabled',
      'targets["db:5432/app"].profile',
    ]);
  });

  it('out of range inside a target override', () => {
    expectIssue(
      { options: { targets: { 'db:5432/app': { rateLimit: { burst: 0 } } } } },
      {
        field: 'targets["db:5432/app"].rateLimit.burst',
        value: 0,
        source: 'code',
        allowed: /integer from 1 to 1000000/,
      },
    );
  });

  it('every problem of every layer in one error, one per line', () => {
    const err = configError({
      ...fileWith({ retry: { jitter: 'random' } }),
      env: {
        PG_RESILIENCE_CONFIG: '/etc/app/pg-resilience.json',
        PG_RESILIENCE_BREAKER_FAILURES: '0',
        PG_RESILIENCE_BULKHED: '4',
      },
      options: { timeout: { queryMs: -1 } },
    });
    assert.deepEqual(err.issues.map((i) => `${i.field} ${i.source}`).sort(), [
      'PG_RESILIENCE_BULKHED env PG_RESILIENCE_BULKHED',
      'circuitBreaker.consecutiveFailures env PG_RESILIENCE_BREAKER_FAILURES',
      `retry.jitter ${FILE}`,
      'timeout.queryMs code',
    ]);
    assert.match(err.message, /^pg-resilience: invalid configuration \(4 issues\):\n {2}\S/);
    assert.match(err.message, /PG_RESILIENCE_BULKHED = 4 .*did you mean PG_RESILIENCE_BULKHEAD\?/);
  });

  it('ConfigError: name, frozen issues, guard', () => {
    const err = configError({ env: { PG_RESILIENCE_RETRY_ATTEMPTS: '0' } });
    assert.equal(err.name, 'ConfigError');
    assert.ok(err instanceof Error);
    assert.ok(Object.isFrozen(err.issues) && Object.isFrozen(err.issues[0]));
    assert.equal(isConfigError(new Error('x')), false);
    assert.equal(isConfigError(null), false);
    assert.equal(isConfigError(new ConfigError([])), true);
  });
});

// ---- contradictions between fields ----

describe('errors: contradictory values', () => {
  it('initialDelayMs above maxDelayMs: reported on the field set last, naming the other', () => {
    expectIssue(
      { env: { PG_RESILIENCE_RETRY_INITIAL_DELAY_MS: '3000' } },
      {
        field: 'retry.initialDelayMs',
        value: '3000',
        source: 'env PG_RESILIENCE_RETRY_INITIAL_DELAY_MS',
        allowed: /^must not exceed retry\.maxDelayMs \(1000, from profile\)$/,
        line: 'retry.initialDelayMs = 3000 (from env PG_RESILIENCE_RETRY_INITIAL_DELAY_MS): must not exceed retry.maxDelayMs (1000, from profile)',
      },
    );
    expectIssue(
      { env: { PG_RESILIENCE_RETRY_INITIAL_DELAY_MS: '300' }, options: { retry: { maxDelayMs: 100 } } },
      {
        field: 'retry.maxDelayMs',
        value: 100,
        source: 'code',
        allowed:
          /^must be at least retry\.initialDelayMs \(300, from env PG_RESILIENCE_RETRY_INITIAL_DELAY_MS\)$/,
      },
    );
  });

  it('initialDelayMs above maxDelayMs for one error class, after merging with retry.*', () => {
    // statement_timeout inherits its delays from retry.*: a class override of only maxDelayMs conflicts.
    expectIssue(
      { options: { retry: { perErrorClass: { statement_timeout: { maxDelayMs: 10 } } } } },
      {
        field: 'retry.perErrorClass.statement_timeout.maxDelayMs',
        value: 10,
        source: 'code',
        allowed: /^must be at least retry\.initialDelayMs \(50, from profile\)$/,
      },
    );
    expectIssue(
      { options: { retry: { perErrorClass: { connect_refused: { initialDelayMs: 5000 } } } } },
      {
        field: 'retry.perErrorClass.connect_refused.initialDelayMs',
        value: 5000,
        source: 'code',
        allowed: /^must not exceed retry\.perErrorClass\.connect_refused\.maxDelayMs \(2000, from profile\)$/,
      },
    );
  });

  it('a retry.* conflict is reported once, not again for every class that inherits it', () => {
    const err = configError({ options: { retry: { initialDelayMs: 5000, maxDelayMs: 4000 } } });
    assert.equal(err.issues.length, 1, err.message);
  });

  it('queue strategy with no queue', () => {
    expectIssue(
      { env: { PG_RESILIENCE_RATE_LIMIT_STRATEGY: 'queue' }, options: { rateLimit: { maxQueueSize: 0 } } },
      {
        field: 'rateLimit.maxQueueSize',
        value: 0,
        source: 'code',
        allowed:
          /^must be at least 1 when rateLimit\.strategy is queue \(from env PG_RESILIENCE_RATE_LIMIT_STRATEGY\)$/,
      },
    );
    expectIssue(
      { ...fileWith({ rateLimit: { maxQueueSize: 0 } }), options: { rateLimit: { strategy: 'queue' } } },
      {
        field: 'rateLimit.strategy',
        value: 'queue',
        source: 'code',
        allowed: new RegExp(`^must not be queue while rateLimit\\.maxQueueSize is 0 \\(from ${FILE}\\)`),
      },
    );
  });

  it('failure_rate mode with a threshold of 0 or 1', () => {
    for (const threshold of [0, 1]) {
      expectIssue(
        { options: { circuitBreaker: { mode: 'failure_rate', failureRateThreshold: threshold } } },
        {
          field: 'circuitBreaker.failureRateThreshold',
          value: threshold,
          source: 'code',
          allowed: /^must be above 0 and below 1 when circuitBreaker\.mode is failure_rate \(from code\)$/,
        },
      );
    }
    // Harmless in consecutive mode.
    assert.equal(
      resolve({ options: { circuitBreaker: { failureRateThreshold: 1 } } }).circuitBreaker
        .failureRateThreshold,
      1,
    );
  });

  it('recovery enabled with intervalMs 0', () => {
    expectIssue(
      { env: { PG_RESILIENCE_RECOVERY_INTERVAL_MS: '0' } },
      {
        field: 'recovery.intervalMs',
        value: '0',
        source: 'env PG_RESILIENCE_RECOVERY_INTERVAL_MS',
        allowed: /^must be at least 1 while recovery\.enabled is true \(from profile\)/,
      },
    );
    assert.equal(
      resolve({ options: { recovery: { enabled: false, intervalMs: 0 } } }).recovery.intervalMs,
      0,
    );
  });

  it('a retry budget that allows no retry at all', () => {
    expectIssue(
      { options: { retry: { budget: { ratio: 0, minRetries: 0 } } } },
      { field: 'retry.budget.ratio', value: 0, source: 'code', allowed: /together they block every retry/ },
    );
  });

  it('contradictions inside a target, after merging with the base settings', () => {
    expectIssue(fileWith({ targets: { 'db:5432/app': { retry: { maxDelayMs: 20 } } } }), {
      field: 'targets["db:5432/app"].retry.maxDelayMs',
      value: 20,
      source: FILE,
      allowed: /^must be at least retry\.initialDelayMs \(50, from profile\)$/,
    });
    // The target's own value wins the tie against a base value of the same layer.
    expectIssue(
      {
        options: {
          retry: { maxDelayMs: 100 },
          targets: { 'db:5432/app': { retry: { initialDelayMs: 200 } } },
        },
      },
      {
        field: 'targets["db:5432/app"].retry.initialDelayMs',
        value: 200,
        source: 'code',
        allowed: /^must not exceed retry\.maxDelayMs \(100, from code\)$/,
      },
    );
  });

  it('a base conflict is not repeated for every target', () => {
    const err = configError({
      options: {
        retry: { initialDelayMs: 500, maxDelayMs: 100 },
        targets: { 'a:1/x': { retry: { maxAttempts: 2 } } },
      },
    });
    assert.equal(err.issues.length, 1, err.message);
  });
});

// ---- per-target settings ----

describe('one schema for every setting', () => {
  it('every PG_RESILIENCE_* variable sets a setting of the schema (telemetry included)', () => {
    for (const v of ENV_VARS) {
      if (v.setting === undefined) continue;
      const node = schemaAt(configSchema, v.setting.split('.'));
      assert.ok(node && metaOf(node), `${v.name} sets ${v.setting}, which is not a setting`);
    }
  });

  it('a telemetry value from the file is overridden by env, env by code; errors name the file', () => {
    const input = (file: object, options: ResilienceOptions = {}): Input => ({
      env: { PG_RESILIENCE_CONFIG: '/app/c.json', PG_RESILIENCE_LOG_LEVEL: 'info' },
      readFile: () => JSON.stringify({ telemetry: file }),
      options,
    });
    assert.throws(
      () => resolveConfig(input({ operationSpans: 'never' })),
      (e: unknown) =>
        isConfigError(e) &&
        e.issues.length === 1 &&
        e.issues[0]!.field === 'telemetry.operationSpans' &&
        e.issues[0]!.source === `file ${resolvePath('/app/c.json')}`,
    );
    const file = { logLevel: 'debug', operationSpans: 'always', health: { port: 9465 } };
    assert.deepEqual(resolveConfig(input(file)).telemetry, {
      logLevel: 'info',
      operationSpans: 'always',
      health: { port: 9465, host: '127.0.0.1' },
    });
    assert.deepEqual(
      resolveConfig(input(file, { telemetry: { logLevel: 'error' } })).telemetry.logLevel,
      'error',
    );
  });
});

describe('settingsForTarget', () => {
  const config = resolve({
    ...fileWith({
      targets: {
        'db.internal:5432/app': {
          retry: { maxAttempts: 5, perErrorClass: { connect_refused: { maxAttempts: 8 } } },
        },
        'reports:5432/warehouse': { rateLimit: { enabled: true, ratePerMinute: 120 } },
      },
    }),
    options: {
      retry: { initialDelayMs: 20 },
      targets: { 'db.internal:5432/app': { circuitBreaker: { consecutiveFailures: 10 } } },
    },
  });

  it('deep-merges the target override over the base settings', () => {
    const s = settingsForTarget(config, 'db.internal:5432/app');
    assert.equal(s.retry.maxAttempts, 5); // target (file)
    assert.equal(s.retry.initialDelayMs, 20); // base (code)
    assert.deepEqual(s.retry.perErrorClass.connect_refused, {
      maxAttempts: 8,
      initialDelayMs: 100,
      maxDelayMs: 2000,
    });
    assert.deepEqual(s.retry.perErrorClass.statement_timeout, { maxAttempts: 1 });
    assert.equal(s.circuitBreaker.consecutiveFailures, 10); // target (code), merged with the file's target
    assert.equal(s.circuitBreaker.halfOpenAfterMs, 5000);
    assert.deepEqual(Object.keys(s).sort(), [
      'bulkhead',
      'circuitBreaker',
      'connectionBudget',
      'failover',
      'leakDetection',
      'liveness',
      'rateLimit',
      'recovery',
      'retry',
      'timeout',
      'transaction',
    ]);
  });

  it('file and code overrides of one target are merged', () => {
    assert.deepEqual(config.targets['db.internal:5432/app'], {
      retry: { maxAttempts: 5, perErrorClass: { connect_refused: { maxAttempts: 8 } } },
      circuitBreaker: { consecutiveFailures: 10 },
    });
  });

  it('another target gets only its own override', () => {
    const s = settingsForTarget(config, 'reports:5432/warehouse');
    assert.deepEqual(s.rateLimit, { ...EXPECTED_DEFAULT.rateLimit, enabled: true, ratePerMinute: 120 });
    assert.equal(s.retry.maxAttempts, 3);
  });

  it('a target without an override gets the base settings', () => {
    assert.deepEqual(settingsForTarget(config, 'other:5432/db'), settingsOf(config));
  });

  it('is memoised per config and target, and frozen', () => {
    const a = settingsForTarget(config, 'db.internal:5432/app');
    assert.equal(settingsForTarget(config, 'db.internal:5432/app'), a);
    assert.notEqual(settingsForTarget(config, 'reports:5432/warehouse'), a);
    const other = resolve({
      options: { targets: { 'db.internal:5432/app': { retry: { maxAttempts: 2 } } } },
    });
    assert.equal(settingsForTarget(other, 'db.internal:5432/app').retry.maxAttempts, 2);
    assertDeepFrozen(a, 'settings');
    assertDeepFrozen(settingsForTarget(config, 'other:5432/db'), 'settings');
  });

  it('inherited keys of Object.prototype are not targets', () => {
    assert.deepEqual(settingsForTarget(config, 'constructor'), settingsOf(config));
  });
});

// ---- frozen ----

describe('the resolved config is frozen', () => {
  it('deep: no one can change it at run time', () => {
    const config = resolve({
      options: {
        retry: { perErrorClass: { deadlock: { maxAttempts: 4 } } },
        targets: { 'db:5432/app': { retry: { budget: { ratio: 0.5 } } } },
      },
    });
    assertDeepFrozen(config);
    assert.throws(() => {
      (config.retry as { maxAttempts: number }).maxAttempts = 10;
    }, TypeError);
    assert.throws(() => {
      (config.targets as Record<string, unknown>)['x:1/y'] = {};
    }, TypeError);
    // The profiles stay intact.
    assert.deepEqual(PROFILES.default, EXPECTED_DEFAULT);
  });
});

// ---- properties ----

describe('properties', () => {
  it('any integer attempts from 1 to 100 resolves; anything else is rejected naming the raw value', () => {
    fc.assert(
      fc.property(fc.integer({ min: -1000, max: 1000 }), (n) => {
        const input = { env: { PG_RESILIENCE_RETRY_ATTEMPTS: String(n) } };
        if (n >= 1 && n <= 100) return resolve(input).retry.maxAttempts === n;
        const err = configError(input);
        return err.issues.length === 1 && err.issues[0]!.value === String(n);
      }),
    );
  });

  it('any valid delays resolve, and initialDelayMs > maxDelayMs never does', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 600000 }),
        fc.integer({ min: 0, max: 600000 }),
        (initial, max) => {
          const input = { options: { retry: { initialDelayMs: initial, maxDelayMs: max } } };
          if (initial <= max) return resolve(input).retry.maxDelayMs === max;
          return configError(input).issues.length === 1;
        },
      ),
    );
  });
});

describe('failover settings from the environment', () => {
  it('PG_RESILIENCE_FAILOVER_* set failover.roleTrustMs, .roleCheckTimeoutMs and .evictOnFailover; code wins', () => {
    const env = {
      PG_RESILIENCE_FAILOVER_ROLE_TRUST_MS: '30000',
      PG_RESILIENCE_FAILOVER_ROLE_CHECK_TIMEOUT_MS: '1500',
      PG_RESILIENCE_FAILOVER_EVICT: 'no',
    };
    assert.deepEqual(resolve({ env }).failover, {
      roleTrustMs: 30000,
      roleCheckTimeoutMs: 1500,
      evictOnFailover: false,
    });
    const config = resolve({
      env,
      options: {
        failover: { evictOnFailover: true },
        targets: { 'db:5432/app': { failover: { roleTrustMs: 0 } } },
      },
    });
    assert.equal(config.failover.evictOnFailover, true);
    assert.equal(settingsForTarget(config, 'db:5432/app').failover.roleTrustMs, 0);
    assert.equal(settingsForTarget(config, 'db:5432/app').failover.roleCheckTimeoutMs, 1500);
  });
});
