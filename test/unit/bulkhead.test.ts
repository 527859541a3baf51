import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyError } from '../../src/classify/index.ts';
import { BulkheadRejectedError, isBulkheadRejectedError } from '../../src/errors.ts';
import { BulkheadPolicy, createBulkhead } from '../../src/policy/bulkhead.ts';
import type { BulkheadRejectedEvent } from '../../src/policy/events.ts';
import { deferred, flush } from '../support/clock.ts';

describe('BulkheadPolicy', () => {
  it('runs up to maxConcurrent at once, queues maxQueue, rejects the rest with our BulkheadRejectedError + onRejected', async () => {
    const b = new BulkheadPolicy({ maxConcurrent: 2, maxQueue: 1 }, 'db:5432/app');
    const events: BulkheadRejectedEvent[] = [];
    b.onRejected((e) => events.push(e));
    const gates = [deferred<number>(), deferred<number>(), deferred<number>()];
    const started: number[] = [];
    const run = (i: number) =>
      b.execute(() => {
        started.push(i);
        return gates[i]!.promise;
      }, 'query');
    const p0 = run(0);
    const p1 = run(1);
    const p2 = run(2);
    await flush();
    assert.deepEqual(started, [0, 1]);
    assert.equal(b.active, 2);
    assert.equal(b.queued, 1);

    let ran = false;
    const rejected = b.execute(() => {
      ran = true;
      return Promise.resolve(0);
    }, 'connect');
    await assert.rejects(rejected, (e) => {
      assert.ok(e instanceof BulkheadRejectedError);
      assert.ok(isBulkheadRejectedError(e));
      assert.equal(e.target, 'db:5432/app');
      assert.match(e.message, /db:5432\/app is full \(2 running, 1 queued\)/);
      return true;
    });
    assert.equal(ran, false, 'a rejected call never runs');
    assert.deepEqual(events, [{ target: 'db:5432/app', operation: 'connect' }]);
    assert.equal(classifyError(await rejected.catch((e) => e)).errorClass, 'resilience_rejection');

    gates[0]!.resolve(10);
    assert.equal(await p0, 10);
    await flush();
    assert.deepEqual(started, [0, 1, 2], 'the queued call runs when a slot frees');
    gates[1]!.resolve(11);
    gates[2]!.resolve(12);
    assert.deepEqual(await Promise.all([p1, p2]), [11, 12]);
    assert.equal(b.active, 0);
  });

  it("fn's own error passes through unchanged and frees the slot", async () => {
    const b = new BulkheadPolicy({ maxConcurrent: 1, maxQueue: 0 }, 't');
    const err = new Error('boom');
    await assert.rejects(
      b.execute(() => Promise.reject(err), 'query'),
      (e) => e === err,
    );
    assert.equal(await b.execute(() => Promise.resolve('ok'), 'query'), 'ok');
  });

  it("a caller's signal aborted while queued rejects with the caller's reason (not cockatiel's TaskCancelledError)", async () => {
    const b = new BulkheadPolicy({ maxConcurrent: 1, maxQueue: 1 }, 't');
    const gate = deferred<void>();
    const first = b.execute(() => gate.promise, 'query');
    const ac = new AbortController();
    let ran = false;
    const queued = b.execute(
      () => {
        ran = true;
        return Promise.resolve();
      },
      'query',
      ac.signal,
    );
    const reason = new Error('caller gave up');
    ac.abort(reason);
    gate.resolve();
    await first;
    await assert.rejects(queued, (e) => e === reason);
    assert.equal(ran, false);
  });

  it('an already aborted signal rejects with its reason without running fn', async () => {
    const b = new BulkheadPolicy({ maxConcurrent: 1, maxQueue: 0 }, 't');
    const reason = new Error('already');
    await assert.rejects(
      b.execute(() => Promise.resolve(1), 'query', AbortSignal.abort(reason)),
      (e) => e === reason,
    );
  });

  it('createBulkhead: maxConcurrent 0 is no wrapper at all', () => {
    assert.equal(createBulkhead({ maxConcurrent: 0, maxQueue: 10 }, 't'), undefined);
    assert.ok(createBulkhead({ maxConcurrent: 3, maxQueue: 0 }, 't') instanceof BulkheadPolicy);
  });
});
