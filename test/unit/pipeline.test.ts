import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import FakeTimers from '@sinonjs/fake-timers';
import { classifyError } from '../../src/classify/index.ts';
import { PROFILES, resolveConfig } from '../../src/config/index.ts';
import type { DeepPartial, ResilienceSettings } from '../../src/config/types.ts';
import {
  BulkheadRejectedError,
  CircuitOpenError,
  isCircuitOpenError,
  OperationTimeoutError,
  RateLimitedError,
} from '../../src/errors.ts';
import type { OperationKind } from '../../src/policy/events.ts';
import { TargetPolicy } from '../../src/policy/pipeline.ts';
import { PolicyRegistry } from '../../src/policy/registry.ts';
import type { OperationEvent } from '../../src/policy/types.ts';
import { fakeClock, flush, settle, T0 } from '../support/clock.ts';

// ---- helpers ----

function merge<T>(base: T, o: DeepPartial<T> | undefined): T {
  if (o === undefined) return base;
  const out = { ...base } as Record<string, unknown>;
  for (const [k, v] of Object.entries(o as object)) {
    const b = (base as Record<string, unknown>)[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' ? merge(b, v) : v;
  }
  return out as T;
}

/** Default profile with deterministic retries (no jitter, 100 ms, ×2) and a budget that never gets in the way. */
function settings(o?: DeepPartial<ResilienceSettings>): ResilienceSettings {
  const base = merge(PROFILES.default, {
    retry: {
      jitter: 'none',
      initialDelayMs: 100,
      multiplier: 2,
      maxAttempts: 3,
      perErrorClass: {},
      budget: { enabled: true, ratio: 0.2, windowMs: 10_000, minRetries: 100 },
    },
    circuitBreaker: { mode: 'consecutive', consecutiveFailures: 5, halfOpenAfterMs: 5000 },
  });
  base.retry.perErrorClass = {};
  return merge(base, o);
}

function setup(o?: DeepPartial<ResilienceSettings>) {
  const { fake, clock } = fakeClock();
  const policy = new TargetPolicy(settings(o), 'db:5432/app', (e) => classifyError(e), clock);
  const ops: OperationEvent[] = [];
  policy.onOperation((e) => ops.push(e));
  return { fake, clock, policy, ops };
}

const refused = () =>
  Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), {
    code: 'ECONNREFUSED',
    errno: -111,
    syscall: 'connect',
  });
const syntaxError = () => Object.assign(new Error('syntax error'), { code: '42601', severity: 'ERROR' });
/** The server is full: the messages PostgreSQL 15–18 refuse a new connection with, all SQLSTATE 53300. */
const FULL_MESSAGES = [
  'too many connections for role "app"',
  'too many connections for database "app"',
  'sorry, too many clients already',
  'remaining connection slots are reserved for non-replication superuser connections',
  'remaining connection slots are reserved for roles with the SUPERUSER attribute',
  'remaining connection slots are reserved for roles with privileges of the "pg_use_reserved_connections" role',
];
const serverFull = (message = FULL_MESSAGES[0]!) =>
  Object.assign(new Error(message), { code: '53300', severity: 'FATAL', routine: 'InitializeSessionUserId' });

/** fn failing with the given errors in turn, then resolving 'ok'; records (attempt, signal). */
function script(...errors: unknown[]) {
  const calls: { attempt: number; signal: AbortSignal | undefined }[] = [];
  const fn = (attempt: number, signal?: AbortSignal): Promise<string> => {
    calls.push({ attempt, signal });
    const e = errors[calls.length - 1];
    return e === undefined ? Promise.resolve('ok') : Promise.reject(e);
  };
  return { fn, calls };
}

const query = { operation: 'query' as const };

// ---- tests ----

describe('TargetPolicy', () => {
  it('happy path: one attempt, no timer, the caller signal passed through, counted, onOperation success', async () => {
    const { fake, policy, ops } = setup();
    const { fn, calls } = script();
    const ac = new AbortController();
    assert.equal(await policy.execute(fn, { operation: 'query', signal: ac.signal }), 'ok');
    assert.deepEqual(calls, [{ attempt: 1, signal: ac.signal }]);
    assert.equal(fake.countTimers(), 0);
    assert.equal(ops.length, 1);
    assert.equal(ops[0]!.outcome, 'success');
    assert.equal(ops[0]!.attempts, 1);
    assert.equal(ops[0]!.operation, 'query');
    assert.equal(ops[0]!.target, 'db:5432/app');
    assert.equal(ops[0]!.errorType, undefined);
    assert.deepEqual(policy.snapshot().counters, {
      operations: 1,
      successes: 1,
      failures: 0,
      rejections: 0,
      retries: 0,
      timeouts: 0,
    });
  });

  it('errors surface as thrown (same object); a non-transient error is not retried', async () => {
    const { policy, ops } = setup();
    const err = syntaxError();
    const { fn, calls } = script(err);
    await assert.rejects(policy.execute(fn, query), (e) => e === err);
    assert.equal(calls.length, 1);
    assert.equal(ops[0]!.outcome, 'failure');
    assert.equal(ops[0]!.errorType, '42601');
    assert.equal(ops[0]!.attempts, 1);
  });

  it('a transient failure is retried with backoff; onRetry is re-exposed; counters and durations follow', async () => {
    const { fake, policy, ops } = setup();
    const retries: number[] = [];
    policy.onRetry((e) => retries.push(e.delayMs));
    const { fn, calls } = script(refused(), refused());
    const out = await settle(fake, policy.execute(fn, query));
    assert.equal(out.value, 'ok');
    assert.deepEqual(
      calls.map((c) => c.attempt),
      [1, 2, 3],
    );
    assert.deepEqual(retries, [100, 200]);
    assert.equal(ops[0]!.attempts, 3);
    assert.equal(ops[0]!.durationMs, 300);
    assert.equal(policy.snapshot().counters.retries, 2);
  });

  it('the breaker sees every attempt: once it opens mid-call, retries stop and its CircuitOpenError is not retried', async () => {
    const { fake, policy, ops } = setup({
      retry: { maxAttempts: 10 },
      circuitBreaker: { consecutiveFailures: 2 },
    });
    const states: string[] = [];
    const rejected: string[] = [];
    policy.onCircuitStateChange((e) => states.push(`${e.from}->${e.to}`));
    policy.onCircuitRejected((e) => rejected.push(`${e.operation}:${e.state}`));
    const { fn, calls } = script(refused(), refused(), refused(), refused());
    const out = await settle(fake, policy.execute(fn, query));
    assert.ok(isCircuitOpenError(out.error), 'the caller gets the breaker rejection');
    assert.equal(calls.length, 2, 'attempt 3 was refused by the open breaker, and not retried');
    assert.deepEqual(states, ['closed->open']);
    assert.deepEqual(rejected, ['query:open']);
    assert.equal(
      policy.snapshot().counters.retries,
      2,
      'the retry after attempt 2 was scheduled, then refused',
    );
    assert.equal(ops[0]!.outcome, 'failure');
    assert.equal(ops[0]!.attempts, 2);

    // While open: refused at once, fn never runs, no retry.
    const next = script();
    const before = policy.snapshot().counters.retries;
    await assert.rejects(policy.execute(next.fn, query), CircuitOpenError);
    assert.equal(next.calls.length, 0);
    assert.equal(policy.snapshot().counters.retries, before);
    assert.equal(ops[1]!.outcome, 'rejected');
    assert.equal(ops[1]!.attempts, 0);
    assert.equal(ops[1]!.errorType, 'PGR_CIRCUIT_OPEN');
  });

  it('a non-counting failure (the server answered) does not open the breaker', async () => {
    const { policy } = setup({ circuitBreaker: { consecutiveFailures: 1 } });
    for (let i = 0; i < 3; i++) await assert.rejects(policy.execute(script(syntaxError()).fn, query));
    assert.equal(policy.circuitState, 'closed');
  });

  it('a server that is full (53300, every message variant) never opens the breaker; connects are still retried with backoff', async () => {
    const { fake, policy } = setup({ circuitBreaker: { consecutiveFailures: 2 } });
    const retries: number[] = [];
    policy.onRetry((e) => retries.push(e.delayMs));
    for (const message of FULL_MESSAGES) {
      const { fn, calls } = script(serverFull(message), serverFull(message), serverFull(message));
      const { error } = (await settle(fake, policy.execute(fn, { operation: 'connect' }))) as {
        error?: { message?: string };
      };
      assert.equal(error?.message, message, 'the caller gets the server refusal, not CircuitOpenError');
      assert.equal(calls.length, 3, 'retried up to maxAttempts');
      assert.equal(policy.circuitState, 'closed', message);
    }
    assert.deepEqual(retries.slice(0, 2), [100, 200], 'with backoff between attempts');
    // A real outage still opens it.
    for (let i = 0; i < 2; i++)
      await assert.rejects(policy.execute(script(refused()).fn, { operation: 'connect', retry: false }));
    assert.equal(policy.circuitState, 'open');
  });

  it('lost connections are neutral for the breaker; an operation that could not connect at all counts once', async () => {
    const reset = () =>
      Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', errno: -104, syscall: 'read' });
    const noRetry = { retry: { enabled: false }, circuitBreaker: { consecutiveFailures: 2 } } as const;
    // An established connection lost: never counts, and does not reset the failures in a row either.
    const neutral = setup(noRetry).policy;
    await assert.rejects(neutral.execute(() => Promise.reject(refused()), query));
    for (let i = 0; i < 3; i++) {
      await assert.rejects(
        neutral.execute(() => Promise.reject(reset()), { operation: 'query', connecting: () => false }),
      );
    }
    assert.equal(neutral.circuitState, 'closed');
    await assert.rejects(neutral.execute(() => Promise.reject(refused()), query));
    assert.equal(neutral.circuitState, 'open', 'refused, (neutral resets), refused: two in a row');
    // The same error while the attempt was still getting a connection (a proxy in front of a down
    // server accepts, then resets), ending the operation: counts once per operation.
    // Only once connecting has failed for everyone for a second: then each such operation counts.
    const { fake: clockA, policy: checkout } = setup(noRetry);
    const failConnecting = () =>
      assert.rejects(
        checkout.execute(() => Promise.reject(reset()), { operation: 'query', connecting: () => true }),
      );
    for (let i = 0; i < 5; i++) await failConnecting();
    assert.equal(checkout.circuitState, 'closed', 'not yet: the outage is younger than a second');
    clockA.tick(1_000);
    await failConnecting();
    assert.equal(checkout.circuitState, 'closed', 'one counted');
    await failConnecting();
    assert.equal(checkout.circuitState, 'open');
    // A connect operation is connecting by definition.
    const { fake: clockB, policy: connect } = setup(noRetry);
    for (let i = 0; i < 3; i++) {
      await assert.rejects(connect.execute(() => Promise.reject(reset()), { operation: 'connect' }));
    }
    clockB.tick(1_000);
    for (let i = 0; i < 2; i++) {
      await assert.rejects(connect.execute(() => Promise.reject(reset()), { operation: 'connect' }));
    }
    assert.equal(connect.circuitState, 'open');
    // Connects that mostly succeed (a storm of resets, not an outage): failures never count.
    const storm = setup(noRetry).policy;
    for (let i = 0; i < 20; i++) {
      const fails = i % 3 === 0;
      const op = storm.execute(() => (fails ? Promise.reject(reset()) : Promise.resolve(1)), {
        operation: 'query',
        connecting: () => fails,
      });
      if (fails) await assert.rejects(op);
      else await op;
    }
    assert.equal(storm.circuitState, 'closed');
    // A server going down: the statements in flight are lost first (many at once), then every connect
    // fails. The lost statements say nothing about connecting now: the breaker still opens.
    const { fake: clockC, policy: outage } = setup(noRetry);
    await assert.rejects(
      outage.execute(() => Promise.reject(reset()), { operation: 'query', connecting: () => true }),
    );
    for (let i = 0; i < 30; i++) {
      await assert.rejects(
        outage.execute(() => Promise.reject(reset()), { operation: 'query', connecting: () => false }),
      );
    }
    clockC.tick(1_000);
    for (let i = 0; i < 4; i++) {
      await assert.rejects(
        outage.execute(() => Promise.reject(reset()), { operation: 'query', connecting: () => true }),
      );
    }
    assert.equal(outage.circuitState, 'open');
  });

  it('connect resets that a retry gets past never open the breaker (a flaky network, not an outage)', async () => {
    const reset = () =>
      Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', errno: -104, syscall: 'read' });
    const { fake, policy } = setup({ circuitBreaker: { consecutiveFailures: 2 } });
    for (let i = 0; i < 10; i++) {
      let n = 0;
      const running = policy.execute(() => (++n === 1 ? Promise.reject(reset()) : Promise.resolve(1)), {
        operation: 'query',
        connecting: () => true,
        canRetry: () => true, // the checkout failed: nothing was sent (what pool-query's veto says)
      });
      await fake.tickAsync(1_000);
      assert.equal(await running, 1);
    }
    assert.equal(policy.circuitState, 'closed');
  });

  it('rate limit (drop): a refused call never runs fn and is never retried; events re-exposed', async () => {
    const { policy, ops } = setup({
      rateLimit: { enabled: true, strategy: 'drop', burst: 1, ratePerMinute: 60 },
    });
    const events: string[] = [];
    policy.onRateLimitRejected((e) => events.push(`${e.operation}:${e.reason}`));
    policy.onRetry(() => events.push('retry'));
    assert.equal(await policy.execute(script().fn, query), 'ok');
    const { fn, calls } = script();
    await assert.rejects(policy.execute(fn, { operation: 'connect' }), (e) => {
      assert.ok(e instanceof RateLimitedError);
      assert.equal(e.reason, 'drop');
      return true;
    });
    assert.equal(calls.length, 0);
    assert.deepEqual(events, ['connect:drop']);
    assert.equal(ops[1]!.outcome, 'rejected');
    assert.equal(policy.snapshot().counters.rejections, 1);
  });

  it('rate limit (wait): a permit is taken once per logical operation, retries take none; onRateLimitWait re-exposed', async () => {
    const { fake, policy } = setup({
      rateLimit: { enabled: true, strategy: 'wait', burst: 1, ratePerMinute: 60, maxWaitMs: 0 },
    });
    const waits: number[] = [];
    policy.onRateLimitWait((e) => waits.push(e.waitedMs));
    // First call takes the only token, and retries twice without waiting for more permits.
    const first = script(refused(), refused());
    const out = await settle(fake, policy.execute(first.fn, query));
    assert.equal(out.value, 'ok');
    assert.equal(first.calls.length, 3);
    assert.equal(fake.now - T0, 300, 'only the backoff delays, no permit waits');
    // The next call waits for the next token (1 per second; 300 ms already refilled).
    const second = script();
    const p = policy.execute(second.fn, query);
    await flush();
    assert.equal(second.calls.length, 0);
    assert.equal(policy.snapshot().rateLimit!.queueSize, 1);
    const done = await settle(fake, p);
    assert.equal(done.value, 'ok');
    assert.deepEqual(waits, [700]);
    assert.equal(policy.snapshot().rateLimit!.queueSize, 0);
  });

  it('bulkhead: a call beyond maxConcurrent + maxQueue is rejected without running fn; event re-exposed', async () => {
    const { policy, ops } = setup({ bulkhead: { maxConcurrent: 1, maxQueue: 0 } });
    const rejected: OperationKind[] = [];
    policy.onBulkheadRejected((e) => rejected.push(e.operation));
    let release!: () => void;
    const running = policy.execute(() => new Promise<void>((r) => (release = r)), query);
    await flush();
    const { fn, calls } = script();
    await assert.rejects(policy.execute(fn, { operation: 'transaction' }), BulkheadRejectedError);
    assert.equal(calls.length, 0);
    assert.deepEqual(rejected, ['transaction']);
    assert.equal(policy.snapshot().bulkhead!.active, 1);
    release();
    await running;
    assert.equal(ops.at(-1)!.outcome, 'success');
    assert.equal(ops[0]!.outcome, 'rejected');
  });

  it('the bulkhead slot is held once for the whole operation, retries included', async () => {
    const { fake, policy } = setup({ bulkhead: { maxConcurrent: 1, maxQueue: 0 } });
    const { fn, calls } = script(refused(), refused());
    const p = policy.execute(fn, query);
    await flush();
    // During the backoff, the slot is still taken.
    await assert.rejects(policy.execute(script().fn, query), BulkheadRejectedError);
    const out = await settle(fake, p);
    assert.equal(out.value, 'ok');
    assert.equal(calls.length, 3);
    assert.equal(await policy.execute(script().fn, query), 'ok');
  });

  it('timeouts are per attempt: queryMs for query/transaction, connectMs for connect/probe', async () => {
    const { fake, policy } = setup({ timeout: { queryMs: 100, connectMs: 500 } });
    const timeouts: string[] = [];
    policy.onTimeout((e) => timeouts.push(`${e.operation}:${e.timeoutMs}`));
    const hung = (_attempt: number, signal?: AbortSignal) =>
      new Promise<never>((_r, reject) => signal?.addEventListener('abort', () => reject(new Error('late'))));
    for (const [operation, ms] of [
      ['query', 100],
      ['transaction', 100],
      ['connect', 500],
      ['probe', 500],
    ] as const) {
      const start = fake.now;
      // retry: false isolates one attempt (connect timeouts are retried: see the next test).
      const out = await settle(fake, policy.execute(hung, { operation, retry: false }));
      assert.ok(out.error instanceof OperationTimeoutError, operation);
      assert.equal(out.error.timeoutMs, ms);
      assert.equal(fake.now - start, ms, `${operation} timed out after ${ms} ms`);
    }
    assert.deepEqual(timeouts, ['query:100', 'transaction:100', 'connect:500', 'probe:500']);
    assert.equal(policy.snapshot().counters.timeouts, 4);
  });

  it('a blackholed server: connect timeouts are retried and open the breaker; a statement timeout is not retried unless safe', async () => {
    const { fake, policy } = setup({
      timeout: { connectMs: 100, queryMs: 100 },
      retry: { maxAttempts: 2, perErrorClass: {} },
      circuitBreaker: { consecutiveFailures: 4 },
    });
    const hung = (_attempt: number, signal?: AbortSignal) =>
      new Promise<never>((_r, reject) => signal?.addEventListener('abort', () => reject(new Error('late'))));
    let attempts = 0;
    const counting = (a: number, s?: AbortSignal) => {
      attempts++;
      return hung(a, s);
    };
    const first = await settle(fake, policy.execute(counting, { operation: 'connect' }));
    assert.ok(first.error instanceof OperationTimeoutError);
    assert.equal(attempts, 2, 'a connect that timed out sent nothing: retried');
    // The default safety rule refuses to repeat a statement whose outcome is unknown.
    attempts = 0;
    const stmt = await settle(fake, policy.execute(counting, { operation: 'query' }));
    assert.ok(stmt.error instanceof OperationTimeoutError);
    assert.equal(attempts, 1, 'a statement that timed out may still run: not retried by default');
    attempts = 0;
    await settle(fake, policy.execute(counting, { operation: 'connect' }));
    assert.equal(policy.circuitState, 'open', 'four timed-out attempts opened the breaker');
    assert.equal(policy.snapshot().circuit.lastFailure?.errorType, 'PGR_TIMEOUT');
  });

  it('each attempt gets a fresh deadline: two 80 ms attempts under a 100 ms timeout succeed', async () => {
    const { fake, policy } = setup({ timeout: { queryMs: 100 } });
    const signals: AbortSignal[] = [];
    const fn = (attempt: number, signal?: AbortSignal) => {
      signals.push(signal!);
      return new Promise<string>((resolve, reject) =>
        setTimeoutOn(fake, 80, () => (attempt === 1 ? reject(refused()) : resolve('ok'))),
      );
    };
    const out = await settle(fake, policy.execute(fn, query));
    assert.equal(out.value, 'ok');
    assert.equal(fake.now - T0, 80 + 100 + 80);
    assert.equal(signals.length, 2);
    assert.notEqual(signals[0], signals[1], 'a signal per attempt');
    assert.ok(signals.every((s) => !s.aborted));
  });

  it('retry: false → one attempt only, still through the breaker', async () => {
    const { fake, policy } = setup({ circuitBreaker: { consecutiveFailures: 5 } });
    const err = refused();
    const { fn, calls } = script(err, err);
    assert.equal((await settle(fake, policy.execute(fn, { operation: 'query', retry: false }))).error, err);
    assert.equal(calls.length, 1);
    assert.equal(policy.snapshot().counters.retries, 0);
    assert.equal(policy.snapshot().circuit.lastFailure?.errorType, 'ECONNREFUSED', 'the breaker counted it');
  });

  it('admission: false (a statement inside a checkout) skips rate limit, bulkhead and an open breaker, and is not counted by it', async () => {
    const { fake, policy } = setup({
      circuitBreaker: { consecutiveFailures: 1 },
      rateLimit: { enabled: true, strategy: 'drop', burst: 1, ratePerMinute: 1 },
    });
    await settle(fake, policy.execute(script(refused()).fn, { operation: 'connect', retry: false }));
    assert.equal(policy.circuitState, 'open');
    // An admitted operation is refused now (the only permit is spent, and the breaker is open).
    await assert.rejects(policy.execute(script().fn, query), RateLimitedError);
    const { fn, calls } = script(refused());
    const r = await settle(fake, policy.execute(fn, { operation: 'query', admission: false, retry: false }));
    assert.equal(calls.length, 1, 'ran although the breaker is open and no permit is left');
    assert.equal((r.error as Error).message, refused().message);
    assert.equal(await policy.execute(script().fn, { operation: 'query', admission: false }), 'ok');
    assert.equal(policy.circuitState, 'open', 'its success did not close the breaker either');
  });

  it('admit(): undefined while closed; while open, a CircuitOpenError (counted as a rejection, onCircuitRejected fires)', async () => {
    const { fake, policy, ops } = setup({ circuitBreaker: { consecutiveFailures: 1 } });
    const rejected: string[] = [];
    policy.onCircuitRejected((e) => rejected.push(`${e.operation}:${e.state}`));
    assert.equal(policy.admit('query'), undefined);
    await settle(fake, policy.execute(script(refused()).fn, { operation: 'connect', retry: false }));
    await assert.rejects(policy.admit('query')!, (e) => isCircuitOpenError(e));
    assert.deepEqual(rejected, ['query:open']);
    assert.equal(ops.at(-1)?.outcome, 'rejected');
    assert.equal(policy.snapshot().counters.rejections, 1);
  });

  it('canRetry is passed to the retry loop: a veto surfaces as onRetrySuppressed with the original error', async () => {
    const { policy } = setup();
    const suppressed: string[] = [];
    policy.onRetrySuppressed((e) => suppressed.push(e.reason));
    const err = refused();
    const { fn, calls } = script(err);
    await assert.rejects(
      policy.execute(fn, { operation: 'query', canRetry: () => 'in_transaction' }),
      (e) => e === err,
    );
    assert.equal(calls.length, 1);
    assert.deepEqual(suppressed, ['in_transaction']);
  });

  it('onRetryExhausted is re-exposed', async () => {
    const { fake, policy } = setup({ retry: { maxAttempts: 2 } });
    const exhausted: number[] = [];
    policy.onRetryExhausted((e) => exhausted.push(e.attempts));
    const errs = [refused(), refused()];
    const out = await settle(fake, policy.execute(script(...errs).fn, query));
    assert.equal(out.error, errs[1]);
    assert.deepEqual(exhausted, [2]);
  });

  it("the caller's signal aborts a backoff wait through the pipeline", async () => {
    const { fake, policy } = setup();
    const ac = new AbortController();
    const { fn, calls } = script(refused());
    const p = policy.execute(fn, { operation: 'query', signal: ac.signal });
    await flush();
    const reason = new Error('gave up');
    ac.abort(reason);
    await assert.rejects(p, (e) => e === reason);
    assert.equal(fake.countTimers(), 0);
    assert.equal(calls.length, 1);
  });

  it('snapshot: breaker state/since/nextProbeAt/lastFailure, rate limit, budget, counters', async () => {
    const { fake, policy } = setup({
      retry: { maxAttempts: 1 },
      circuitBreaker: { consecutiveFailures: 2, halfOpenAfterMs: 5000 },
      rateLimit: { enabled: true, strategy: 'drop', burst: 10, ratePerMinute: 600 },
    });
    const s0 = policy.snapshot();
    assert.deepEqual(s0.circuit, {
      enabled: true,
      state: 'closed',
      since: T0,
      nextProbeAt: null,
      lastFailure: null,
    });
    assert.deepEqual(s0.rateLimit, { tokens: 10, queueSize: 0 });
    assert.equal(s0.bulkhead, null);
    assert.equal(s0.recovery, null);
    assert.ok(s0.retryBudget && s0.retryBudget.remaining > 0);

    fake.tick(1000);
    await assert.rejects(policy.execute(script(refused()).fn, query));
    fake.tick(10);
    await assert.rejects(policy.execute(script(refused()).fn, query));
    const s1 = policy.snapshot();
    assert.equal(s1.circuit.state, 'open');
    assert.equal(s1.circuit.since, T0 + 1010);
    assert.equal(s1.circuit.nextProbeAt, T0 + 1010 + 5000);
    assert.deepEqual(s1.circuit.lastFailure, { errorType: 'ECONNREFUSED', at: T0 + 1010 });
    assert.equal(s1.rateLimit!.queueSize, 0);
    assert.ok(s1.rateLimit!.tokens < 10);
    await assert.rejects(policy.execute(script().fn, query), CircuitOpenError);
    assert.deepEqual(policy.snapshot().counters, {
      operations: 3,
      successes: 0,
      failures: 2,
      rejections: 1,
      retries: 0,
      timeouts: 0,
    });
    assert.doesNotThrow(() => JSON.stringify(policy.snapshot()));

    fake.tick(5000);
    assert.equal(policy.snapshot().circuit.state, 'half_open');
  });

  it('snapshot: bulkhead and budget are null when off', () => {
    const { policy } = setup({ retry: { enabled: false } });
    const s = policy.snapshot();
    assert.equal(s.retryBudget, null);
    assert.equal(s.rateLimit, null);
    assert.equal(s.bulkhead, null);
  });

  it('startRecovery: probes while open, onRecoveryAttempt re-exposed, closes the breaker, once per target', async () => {
    const { fake, policy } = setup({
      retry: { maxAttempts: 1 },
      circuitBreaker: { consecutiveFailures: 1, halfOpenAfterMs: 60_000 },
      recovery: { enabled: true, intervalMs: 1000, maxAttempts: 0 },
    });
    const attempts: string[] = [];
    policy.onRecoveryAttempt((e) => attempts.push(`${e.attempt}:${e.outcome}`));
    let healthy = false;
    const probe = () => (healthy ? Promise.resolve() : Promise.reject(refused()));
    const loop = policy.startRecovery(probe);
    assert.ok(loop);
    assert.equal(policy.startRecovery(probe), loop, 'once per target');
    await assert.rejects(policy.execute(script(refused()).fn, query));
    assert.equal(policy.circuitState, 'open');
    fake.tick(1000);
    await flush();
    healthy = true;
    fake.tick(1000);
    await flush();
    assert.deepEqual(attempts, ['1:failure', '2:success']);
    assert.equal(policy.circuitState, 'closed');
    policy.dispose();
  });

  it('startRecovery: a probe refused because the server is full (53300) finds it up and closes the breaker; a wrong password too', async () => {
    for (const answer of [
      serverFull(),
      Object.assign(new Error('password authentication failed'), { code: '28P01', severity: 'FATAL' }),
    ]) {
      const { fake, policy } = setup({
        retry: { maxAttempts: 1 },
        circuitBreaker: { consecutiveFailures: 1, halfOpenAfterMs: 60_000 },
        recovery: { enabled: true, intervalMs: 1000, maxAttempts: 0 },
      });
      const attempts: string[] = [];
      policy.onRecoveryAttempt((e) => attempts.push(`${e.attempt}:${e.outcome}`));
      let up = false;
      policy.startRecovery(() => Promise.reject(up ? answer : refused()));
      await assert.rejects(policy.execute(script(refused()).fn, query));
      assert.equal(policy.circuitState, 'open');
      fake.tick(1000);
      await flush();
      assert.equal(policy.circuitState, 'open', 'ECONNREFUSED: still down');
      up = true;
      fake.tick(1000);
      await flush();
      assert.deepEqual(attempts, ['1:failure', '2:success']);
      assert.equal(policy.circuitState, 'closed');
      policy.dispose();
    }
  });

  it('startRecovery: undefined when recovery or the breaker is off', () => {
    const probe = () => Promise.resolve();
    assert.equal(setup({ recovery: { enabled: false } }).policy.startRecovery(probe), undefined);
    assert.equal(
      setup({ recovery: { enabled: true }, circuitBreaker: { enabled: false } }).policy.startRecovery(probe),
      undefined,
    );
  });

  it('breaker off: failures never open anything; circuit reported closed and disabled', async () => {
    const { policy } = setup({ circuitBreaker: { enabled: false, consecutiveFailures: 1 } });
    for (let i = 0; i < 3; i++)
      await assert.rejects(policy.execute(script(refused()).fn, { operation: 'query', retry: false }));
    assert.equal(policy.circuitState, 'closed');
    assert.equal(policy.snapshot().circuit.enabled, false);
  });

  it('dispose stops background timers (breaker half-open timer, recovery)', async () => {
    const { fake, policy } = setup({
      retry: { maxAttempts: 1 },
      circuitBreaker: { consecutiveFailures: 1 },
      recovery: { enabled: true, intervalMs: 1000 },
    });
    policy.startRecovery(() => Promise.resolve());
    await assert.rejects(policy.execute(script(refused()).fn, query));
    assert.ok(fake.countTimers() > 0);
    policy.dispose();
    assert.equal(fake.countTimers(), 0);
  });
});

describe('PolicyRegistry', () => {
  const config = () =>
    resolveConfig({
      env: {},
      options: {
        retry: { maxAttempts: 4 },
        targets: {
          'reports:5432/dw': { retry: { enabled: false, maxAttempts: 1 }, timeout: { queryMs: 30_000 } },
        },
      },
    });

  it('creates one TargetPolicy per target lazily, with per-target overrides applied', () => {
    const registry = new PolicyRegistry(config(), fakeClock().clock);
    const created: string[] = [];
    registry.onTargetCreated((e) => created.push(e.target));
    assert.deepEqual(registry.targets(), []);
    const app = registry.forTarget('app:5432/shop');
    const dw = registry.forTarget('reports:5432/dw');
    assert.equal(registry.forTarget('app:5432/shop'), app, 'cached');
    assert.notEqual(app, dw);
    assert.equal(app.settings.retry.maxAttempts, 4);
    assert.equal(app.settings.timeout.queryMs, 0);
    assert.equal(dw.settings.retry.maxAttempts, 1);
    assert.equal(dw.settings.timeout.queryMs, 30_000);
    assert.deepEqual(created, ['app:5432/shop', 'reports:5432/dw']);
    assert.deepEqual(registry.targets(), ['app:5432/shop', 'reports:5432/dw']);
    assert.equal(registry.get('nope:1/x'), undefined);
    assert.deepEqual(
      registry.snapshot().map((s) => s.target),
      ['app:5432/shop', 'reports:5432/dw'],
    );
  });

  it('the overrides change behaviour: the same failure is retried on one target and not on the other', async () => {
    const { fake, clock } = fakeClock();
    const registry = new PolicyRegistry(config(), clock);
    const a = script(refused());
    const appOut = await settle(fake, registry.forTarget('app:5432/shop').execute(a.fn, query));
    assert.equal(appOut.value, 'ok');
    assert.equal(a.calls.length, 2);
    const b = script(refused());
    const dwOut = await settle(fake, registry.forTarget('reports:5432/dw').execute(b.fn, query));
    assert.ok(dwOut.error);
    assert.equal(b.calls.length, 1);
  });

  it("uses the config's classify override", async () => {
    const cfg = resolveConfig({
      env: {},
      options: {
        classify: (e) =>
          (e as Error).message === 'flaky' ? { transient: true, reachedServer: 'no' } : undefined,
      },
    });
    const { fake, clock } = fakeClock();
    const registry = new PolicyRegistry(cfg, clock);
    const { fn, calls } = script(new Error('flaky'));
    const out = await settle(fake, registry.forTarget('a:1/b').execute(fn, query));
    assert.equal(out.value, 'ok');
    assert.equal(calls.length, 2);
  });

  it('dispose disposes and forgets every target', async () => {
    const { fake, clock } = fakeClock();
    const registry = new PolicyRegistry(
      resolveConfig({
        env: {},
        options: { circuitBreaker: { consecutiveFailures: 1 }, retry: { enabled: false } },
      }),
      clock,
    );
    const p = registry.forTarget('a:1/b');
    await assert.rejects(p.execute(script(refused()).fn, query));
    assert.ok(fake.countTimers() > 0, 'the open breaker has its half-open timer');
    registry.dispose();
    assert.equal(fake.countTimers(), 0);
    assert.deepEqual(registry.targets(), []);
    assert.notEqual(registry.forTarget('a:1/b'), p, 'fresh policies after dispose');
  });
});

/** setTimeout on the fake clock (for attempts that take time). */
function setTimeoutOn(fake: FakeTimers.Clock, ms: number, cb: () => void): void {
  fake.setTimeout(cb, ms);
}
