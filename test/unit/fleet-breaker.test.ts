// The fleet-aware breaker without Redis: the quorum, the validation of what Redis answers, the decision
// taken on a verdict, the hold on the local breaker, and FleetBreaker against a scripted host (replies
// chosen by the test: a verdict, garbage, or a failed command).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import FakeTimers from '@sinonjs/fake-timers';
import type { CircuitBreakerSettings } from '../../src/config/types.ts';
import { decide, parseVerdict, quorum } from '../../src/coordination/breaker-verdict.ts';
import { FleetBreaker, type FleetBreakerHost } from '../../src/coordination/fleet-breaker.ts';
import type { RedisLink } from '../../src/coordination/redis-client.ts';
import { CircuitBreaker } from '../../src/policy/circuit-breaker.ts';
import type { Clock } from '../../src/policy/clock.ts';

const SETTINGS: CircuitBreakerSettings = {
  enabled: true,
  mode: 'consecutive',
  consecutiveFailures: 1,
  failureRateThreshold: 0.5,
  failureRateWindowMs: 5_000,
  minimumRps: 2,
  halfOpenAfterMs: 1_000,
  halfOpenMaxProbes: 1,
  successesToClose: 1,
  rampMs: 0,
};
const down = (): boolean => true;

function fakeClock(): { fake: FakeTimers.Clock; clock: Clock } {
  const fake = FakeTimers.createClock(1_700_000_000_000);
  return {
    fake,
    clock: {
      now: () => fake.now,
      setTimeout: (cb, ms) => fake.setTimeout(cb, ms),
      clearTimeout: (h) => fake.clearTimeout(h as FakeTimers.TimerId),
    },
  };
}

describe('quorum', () => {
  it('is half the live members rounded up, at least 2, at most all; a fleet of one is itself', () => {
    const table = [1, 2, 3, 4, 5, 6, 9, 10].map((n) => [n, quorum(n)]);
    assert.deepEqual(table, [
      [1, 1],
      [2, 2],
      [3, 2],
      [4, 2],
      [5, 3],
      [6, 3],
      [9, 5],
      [10, 5],
    ]);
  });
  it('treats a count that is not a positive integer as a fleet of one', () => {
    for (const n of [0, -3, 1.5, Number.NaN, Infinity]) assert.equal(quorum(n), 1, String(n));
  });
});

describe('parseVerdict', () => {
  it('reads a BREAKER_SYNC reply (numbers or numeric strings)', () => {
    assert.deepEqual(parseVerdict([2, 4, 1, 7]), { votes: 2, live: 4, open: true, epoch: 7 });
    assert.deepEqual(parseVerdict(['0', '3', '0', '0']), { votes: 0, live: 3, open: false, epoch: 0 });
  });
  it('rejects garbage, never trusts it', () => {
    for (const reply of [
      null,
      'OK',
      [1, 2, 3],
      [1, 2, 1, 7, 9],
      [-1, 4, 1, 0],
      [1, 4, 2, 0],
      [1, 4, 1, 1.5],
      [1, 'x', 0, 0],
      [1, 4, 1, 1e16],
      { 0: 1, 1: 4, 2: 1, 3: 0, length: 4 },
    ])
      assert.equal(parseVerdict(reply), undefined, JSON.stringify(reply));
  });
});

describe('decide', () => {
  const v = (open: boolean) => ({ votes: 0, live: 4, open, epoch: 0 });
  it('holds when open fleet-wide, closes a held breaker when up, leaves a breaker open on its own alone', () => {
    assert.equal(decide(false, v(true)), 'hold');
    assert.equal(decide(true, v(true)), 'none');
    assert.equal(decide(true, v(false)), 'close');
    assert.equal(decide(false, v(false)), 'none');
  });
});

describe('CircuitBreaker held open by the fleet', () => {
  it('does not half-open on its timer nor for traffic; probe() still half-opens; releaseClosed() closes', async () => {
    const { fake, clock } = fakeClock();
    const breaker = new CircuitBreaker(SETTINGS, 't', clock);
    breaker.holdOpen(new Error('down fleet-wide'));
    assert.equal(breaker.state, 'open');
    fake.tick(5_000);
    assert.equal(breaker.state, 'open', 'still open long after halfOpenAfterMs');
    await assert.rejects(
      breaker.execute(() => Promise.resolve(1), 'query', down),
      (e: Error) => e.name === 'CircuitOpenError',
    );
    await assert.rejects(breaker.probe(() => Promise.reject(new Error('still down'))));
    assert.equal(breaker.state, 'open', 'a failed probe re-opens, still held');
    breaker.releaseClosed();
    assert.equal(breaker.state, 'closed');
    assert.equal(breaker.held, false);
  });
  it('release() lets it half-open on its own again', () => {
    const { fake, clock } = fakeClock();
    const breaker = new CircuitBreaker(SETTINGS, 't', clock);
    breaker.holdOpen(new Error('down'));
    fake.tick(2_000);
    breaker.release();
    assert.equal(breaker.state, 'half_open');
  });
});

/** A host whose every command answers with the next scripted reply (undefined: Redis failed). */
function scriptedHost(replies: { sync: unknown[]; lock?: unknown[] }) {
  const calls: string[] = [];
  const link = {
    breakerSync: (...args: unknown[]) => {
      calls.push(`sync vote=${String(args[5])}`);
      return Promise.resolve(replies.sync.length > 1 ? replies.sync.shift() : replies.sync[0]);
    },
    lock: () => {
      calls.push('lock');
      return Promise.resolve(replies.lock?.shift());
    },
    breakerUp: () => {
      calls.push('up');
      return Promise.resolve(1);
    },
  } as unknown as RedisLink;
  const host: FleetBreakerHost = {
    member: 'm1',
    members: 4,
    call: async (command) => {
      const reply = await command(link);
      return reply === 'FAIL' ? undefined : reply;
    },
    probeGated: (target, taken) => calls.push(`gated ${target} ${String(taken)}`),
  };
  return { host, calls };
}

const OPTIONS = {
  stateKey: 's',
  votesKey: 'v',
  membersKey: 'm',
  lockKey: 'l',
  leaseMs: 3_000,
  pollMs: 200,
  probeIntervalMs: 500,
};

describe('FleetBreaker (scripted replies)', () => {
  it('holds the local breaker on an open verdict, probes only with the lock, closes on the up verdict', async () => {
    const { fake, clock } = fakeClock();
    const breaker = new CircuitBreaker(SETTINGS, 't', clock);
    const sync: unknown[] = [[3, 4, 1, 0]];
    const { host, calls } = scriptedHost({ sync, lock: ['OK', null, 'FAIL'] });
    const fleet = new FleetBreaker(host, breaker, OPTIONS, clock);
    await fake.tickAsync(200);
    assert.equal(breaker.held, true);
    assert.equal(breaker.state, 'open');
    assert.equal(fleet.state, 'open');
    assert.equal(await fleet.mayProbe(), true, 'lock taken');
    assert.equal(await fleet.mayProbe(), false, 'another process holds the lock');
    assert.equal(await fleet.mayProbe(), true, 'Redis failed: probes alone');
    assert.deepEqual([fleet.probesTaken, fleet.probesSkipped], [1, 1]);
    assert.deepEqual(
      calls.filter((c) => c.startsWith('gated')),
      ['gated t true', 'gated t false'],
      'reported for telemetry',
    );
    fleet.probed();
    sync[0] = [0, 4, 0, 1];
    await fake.tickAsync(250);
    assert.ok(calls.includes('up'), 'the prober published up');
    assert.equal(breaker.held, false);
    assert.equal(breaker.state, 'closed');
    assert.equal(fleet.state, 'closed');
    fleet.dispose();
  });

  it('fails soft: a failed command or garbage releases the hold; the breaker then works alone', async () => {
    for (const bad of ['FAIL', ['garbage'], [1, 4, 7, 0]]) {
      const { fake, clock } = fakeClock();
      const breaker = new CircuitBreaker(SETTINGS, 't', clock);
      const sync: unknown[] = [[3, 4, 1, 0]];
      const { host } = scriptedHost({ sync });
      const fleet = new FleetBreaker(host, breaker, OPTIONS, clock);
      await fake.tickAsync(200);
      assert.equal(breaker.held, true);
      sync[0] = bad;
      await fake.tickAsync(200);
      assert.equal(breaker.held, false, JSON.stringify(bad));
      assert.equal(fleet.state, 'alone');
      await fake.tickAsync(SETTINGS.halfOpenAfterMs);
      assert.equal(breaker.state, 'half_open', 'half-opens on its own timer again');
      fleet.dispose();
    }
  });

  it('votes with the local state, and an own fault with the fleet up is left to the breaker', async () => {
    const { fake, clock } = fakeClock();
    const breaker = new CircuitBreaker(SETTINGS, 't', clock);
    const { host, calls } = scriptedHost({ sync: [[1, 4, 0, 0]] });
    const fleet = new FleetBreaker(host, breaker, OPTIONS, clock);
    await fake.tickAsync(200);
    assert.deepEqual(calls, ['sync vote=false']);
    await assert.rejects(breaker.execute(() => Promise.reject(new Error('own fault')), 'query', down));
    await fake.tickAsync(0);
    assert.equal(calls.at(-1), 'sync vote=true', 'the opening is published at once');
    assert.equal(breaker.held, false);
    assert.equal(await fleet.mayProbe(), true, 'not held: probes without asking for the lock');
    assert.ok(!calls.includes('lock'));
    fleet.dispose();
  });
});
