/**
 * The two environment variables an operator reaches for during an incident must do what their names
 * say, whatever else the configuration holds.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isConfigError, PROFILES, resolveConfig, settingsForTarget } from '../../src/config/index.ts';

describe('PG_RESILIENCE_DISABLED=true is a kill switch', () => {
  it('turns the package off even when the rest of the configuration is invalid', () => {
    const config = resolveConfig({
      env: {
        PG_RESILIENCE_DISABLED: 'true',
        PG_RESILIENCE_RETRY_ATTEMPTS: 'lots',
        PG_RESILIENCE_TYPO: '1',
        PG_RESILIENCE_CONFIG: '/nonexistent/pg-resilience.json',
      },
      readFile: () => {
        throw new Error('the kill switch must not read the file');
      },
    });
    assert.equal(config.disabled, true);
    assert.ok(Object.isFrozen(config));
  });

  it('wins over disabled: false in code, and accepts 1 and yes', () => {
    for (const value of ['1', 'yes', 'TRUE']) {
      const config = resolveConfig({ env: { PG_RESILIENCE_DISABLED: value }, options: { disabled: false } });
      assert.equal(config.disabled, true, value);
    }
  });

  it('false leaves the configuration validated as usual', () => {
    assert.throws(
      () => resolveConfig({ env: { PG_RESILIENCE_DISABLED: 'false', PG_RESILIENCE_RETRY_ATTEMPTS: 'lots' } }),
      (e) => isConfigError(e) && /PG_RESILIENCE_RETRY_ATTEMPTS/.test(e.message),
    );
  });

  it('an invalid value is still reported', () => {
    assert.throws(
      () => resolveConfig({ env: { PG_RESILIENCE_DISABLED: 'maybe' } }),
      (e) => isConfigError(e) && /disabled = "?maybe"? \(from env PG_RESILIENCE_DISABLED\)/.test(e.message),
    );
  });
});

describe('PG_RESILIENCE_RETRY_ATTEMPTS caps every error class', () => {
  it('=1 means no retries for any class, including those the profile makes more patient', () => {
    assert.ok((PROFILES.default.retry.perErrorClass.connect_refused?.maxAttempts ?? 0) > 1);
    const config = resolveConfig({ env: { PG_RESILIENCE_RETRY_ATTEMPTS: '1' } });
    assert.equal(config.retry.maxAttempts, 1);
    for (const [cls, timing] of Object.entries(config.retry.perErrorClass)) {
      if (timing?.maxAttempts !== undefined) assert.equal(timing.maxAttempts, 1, cls);
    }
  });

  it('raising it does not lower nor raise the per-class values above it', () => {
    const config = resolveConfig({ env: { PG_RESILIENCE_RETRY_ATTEMPTS: '4' } });
    assert.equal(config.retry.maxAttempts, 4);
    assert.equal(config.retry.perErrorClass.connect_refused?.maxAttempts, 4);
    assert.equal(config.retry.perErrorClass.statement_timeout?.maxAttempts, 1);
  });

  it('the same holds for retry.maxAttempts from the file, from code and in a target override', () => {
    const fromCode = resolveConfig({ env: {}, options: { retry: { maxAttempts: 1 } } });
    assert.equal(fromCode.retry.perErrorClass.connect_refused?.maxAttempts, 1);
    const fromFile = resolveConfig({
      env: { PG_RESILIENCE_CONFIG: '/cfg.json' },
      readFile: () => JSON.stringify({ retry: { maxAttempts: 2 } }),
    });
    assert.equal(fromFile.retry.perErrorClass.too_many_connections?.maxAttempts, 2);
    const config = resolveConfig({
      env: {},
      options: {
        targets: {
          'db:5432/app': { retry: { maxAttempts: 1 } },
          'db:5432/other': {
            retry: { maxAttempts: 1, perErrorClass: { connect_refused: { maxAttempts: 3 } } },
          },
        },
      },
    });
    assert.equal(
      settingsForTarget(config, 'db:5432/app').retry.perErrorClass.connect_refused?.maxAttempts,
      1,
    );
    assert.equal(
      settingsForTarget(config, 'db:5432/other').retry.perErrorClass.connect_refused?.maxAttempts,
      3,
    );
    assert.equal(
      settingsForTarget(config, 'db:5432/other').retry.perErrorClass.connection_lost?.maxAttempts,
      1,
    );
    assert.equal(
      settingsForTarget(config, 'db:5432/third').retry.perErrorClass.connect_refused?.maxAttempts,
      5,
    );
  });

  it('per-class values set in code are left alone', () => {
    const config = resolveConfig({
      env: { PG_RESILIENCE_RETRY_ATTEMPTS: '1' },
      options: { retry: { perErrorClass: { connect_refused: { maxAttempts: 6 } } } },
    });
    assert.equal(config.retry.perErrorClass.connect_refused?.maxAttempts, 6);
    assert.equal(config.retry.perErrorClass.connection_lost?.maxAttempts, 1);
  });
});
