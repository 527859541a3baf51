// The decision logic of a COMMIT lost in flight (src/transaction/commit-outcome.ts), with a fake clock:
// what each txid_status() answer means, and that the asking stays within outcomeResolutionMs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decideStatus,
  MAX_WAIT_MS,
  noWriteOutcome,
  resolveCommitOutcome,
} from '../../src/transaction/commit-outcome.ts';

/** A fake clock: sleep() moves time forward; every lookup takes `lookupMs`. */
function fakeTime(lookupMs = 1) {
  let t = 1_000;
  const sleeps: number[] = [];
  return {
    now: () => t,
    sleep: async (ms: number) => {
      sleeps.push(ms);
      t += ms;
    },
    spend: (ms = lookupMs) => {
      t += ms;
    },
    sleeps,
  };
}

/** A lookup answering from a script: a value, or an Error to reject with; the last entry repeats. */
function scripted(answers: unknown[], time: ReturnType<typeof fakeTime>, lookupMs = 1) {
  const asked: Array<[string, number]> = [];
  const lookup = async (id: string, timeoutMs: number) => {
    asked.push([id, timeoutMs]);
    const answer = answers[Math.min(asked.length - 1, answers.length - 1)];
    time.spend(Math.min(lookupMs, timeoutMs));
    if (answer instanceof Error) throw answer;
    return answer;
  };
  return { lookup, asked };
}

describe('decideStatus: what txid_status() says', () => {
  it('committed, aborted, too old (NULL); anything else is asked again', () => {
    assert.equal(decideStatus('committed'), 'committed');
    assert.equal(decideStatus('aborted'), 'aborted');
    assert.equal(decideStatus(null), 'too_old');
    assert.equal(decideStatus('in progress'), 'ask_again');
    assert.equal(decideStatus(undefined), 'ask_again');
  });
});

describe('noWriteOutcome: a transaction without an id wrote nothing', () => {
  it('its result stands, except under SERIALIZABLE, where it runs again', () => {
    assert.equal(noWriteOutcome(undefined), 'committed');
    assert.equal(noWriteOutcome('read committed'), 'committed');
    assert.equal(noWriteOutcome('repeatable read'), 'committed');
    assert.equal(noWriteOutcome('serializable'), 'aborted');
  });
});

describe('resolveCommitOutcome', () => {
  it('committed or aborted at the first answer: one lookup of that id', async () => {
    for (const status of ['committed', 'aborted'] as const) {
      const time = fakeTime();
      const { lookup, asked } = scripted([status], time);
      const r = await resolveCommitOutcome({ transactionId: '742', withinMs: 5000, lookup, ...time });
      assert.deepEqual(r, { resolution: status, lookups: 1 });
      assert.deepEqual(asked, [['742', 5000]]);
    }
  });

  it('in progress: asks again with growing waits until it settles', async () => {
    const time = fakeTime();
    const { lookup, asked } = scripted(['in progress', 'in progress', 'in progress', 'committed'], time);
    const r = await resolveCommitOutcome({ transactionId: '9', withinMs: 5000, lookup, ...time });
    assert.deepEqual(r, { resolution: 'committed', lookups: 4 });
    assert.equal(asked.length, 4);
    assert.deepEqual(time.sleeps, [20, 40, 80]);
  });

  it('unreachable, then answering: the errors are ridden out', async () => {
    const time = fakeTime();
    const down = new Error('ECONNREFUSED');
    const { lookup } = scripted([down, down, 'aborted'], time);
    const r = await resolveCommitOutcome({ transactionId: '9', withinMs: 5000, lookup, ...time });
    assert.deepEqual(r, { resolution: 'aborted', lookups: 3 });
  });

  it('never reachable: unknown (unreachable) within the bound, with the last error', async () => {
    const time = fakeTime();
    const start = time.now();
    const down = new Error('ECONNREFUSED');
    const { lookup, asked } = scripted([down], time, 30);
    const r = await resolveCommitOutcome({ transactionId: '9', withinMs: 2000, lookup, ...time });
    assert.equal(r.resolution, 'unknown');
    assert.equal(r.why, 'unreachable');
    assert.equal(r.lastError, down);
    assert.ok(time.now() - start <= 2000, `stayed within the bound: ${time.now() - start}`);
    assert.ok(asked.length >= 5, `kept asking: ${asked.length}`);
    assert.ok(Math.max(...time.sleeps) <= MAX_WAIT_MS);
    // Each lookup is bounded by the time left.
    for (const [, timeoutMs] of asked) assert.ok(timeoutMs > 0 && timeoutMs <= 2000);
  });

  it('a lookup that hangs until its bound: the whole resolution still ends at the bound', async () => {
    const time = fakeTime();
    const start = time.now();
    const { lookup, asked } = scripted([new Error('no answer')], time, 10_000);
    const r = await resolveCommitOutcome({ transactionId: '9', withinMs: 1500, lookup, ...time });
    assert.equal(r.resolution, 'unknown');
    assert.equal(asked.length, 1);
    assert.equal(time.now() - start, 1500);
  });

  it('still in progress at the bound: unknown (in_progress)', async () => {
    const time = fakeTime();
    const { lookup } = scripted(['in progress'], time);
    const r = await resolveCommitOutcome({ transactionId: '9', withinMs: 1000, lookup, ...time });
    assert.equal(r.resolution, 'unknown');
    assert.equal(r.why, 'in_progress');
  });

  it('too old (NULL): unknown at once, no second lookup', async () => {
    const time = fakeTime();
    const { lookup, asked } = scripted([null], time);
    const r = await resolveCommitOutcome({ transactionId: '9', withinMs: 1000, lookup, ...time });
    assert.deepEqual(r, { resolution: 'unknown', lookups: 1, why: 'too_old' });
    assert.equal(asked.length, 1);
  });
});
