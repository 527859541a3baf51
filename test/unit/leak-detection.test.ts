// The leak detector's timing with a fake clock: when each finding is due, that it is reported once, that
// busy clients, LISTEN clients and released clients never are, and that one timer serves every checkout.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { type LeakEvent, LeakDetector } from '../../src/instrumentation/leak-detection.ts';
import type { LeakDetectionSettings } from '../../src/config/types.ts';
import { fakeClock } from '../support/clock.ts';

const TARGET = 'db:5432/app';

/** A stand-in for a pg pool client: pg's own fields the detector reads, and pg-pool's per-checkout release. */
class FakeClient extends EventEmitter {
  _activeQuery: unknown = null;
  _queryQueue: unknown[] = [];
  _ended = false;
  releases = 0;
  release: (err?: unknown) => void = () => {
    this.releases++;
  };
  /** A statement starts (pg sets the active query) and, `ms` later, finishes (pg emits 'drain'). */
  run(): () => void {
    this._activeQuery = {};
    return () => {
      this._activeQuery = null;
      this.emit('drain');
    };
  }
  /** The connection ends (pg emits 'end' on the client). */
  die(): void {
    this._ended = true;
    this.emit('end');
  }
}

function setup(settings: Partial<LeakDetectionSettings> = {}) {
  const { fake, clock } = fakeClock();
  const detector = new LeakDetector(clock);
  const events: LeakEvent[] = [];
  detector.onLeak((e) => events.push(e));
  const leakDetection: LeakDetectionSettings = {
    enabled: true,
    idleThresholdMs: 1000,
    deadGraceMs: 500,
    ...settings,
  };
  const policy = { target: TARGET, settings: { leakDetection } };
  function connect(): FakeClient {
    const client = new FakeClient();
    const checkout = detector.checkout(policy, connect);
    assert.ok(checkout);
    detector.held(checkout, client);
    return client;
  }
  return { fake, detector, events, connect, policy };
}

describe('leak detection (fake clock)', () => {
  it('held_too_long: due when the client has been idle for the threshold, reported once, with the stack of the checkout', () => {
    const { fake, events, connect, detector } = setup();
    function checksOutAndForgets(): FakeClient {
      return connect();
    }
    checksOutAndForgets();
    fake.tick(999);
    assert.equal(events.length, 0);
    fake.tick(1);
    assert.equal(events.length, 1);
    assert.equal(events[0]!.reason, 'held_too_long');
    assert.equal(events[0]!.target, TARGET);
    assert.equal(events[0]!.heldMs, 1000);
    assert.match(events[0]!.stack, /checksOutAndForgets/);
    assert.doesNotMatch(events[0]!.stack, /^Error/, 'frames only');
    assert.deepEqual([...detector.leaked()], [[TARGET, 1]]);
    fake.tick(60_000);
    assert.equal(events.length, 1, 'once per checkout');
    assert.equal(fake.countTimers(), 0, 'nothing left to check');
  });

  it('a statement in flight is never idle, however long it runs; idleness starts when it finishes', () => {
    const { fake, events, connect } = setup();
    const client = connect();
    fake.tick(200);
    const finish = client.run();
    fake.tick(10_000); // a 10 s report query
    assert.equal(events.length, 0);
    finish();
    fake.tick(999);
    assert.equal(events.length, 0);
    fake.tick(1);
    assert.equal(events.length, 1);
    assert.equal(events[0]!.forMs, 1000);
    assert.equal(events[0]!.heldMs, 11_200);
  });

  it('short statements keep resetting the idle time; a queued statement counts as busy', () => {
    const { fake, events, connect } = setup();
    const client = connect();
    for (let i = 0; i < 20; i++) {
      fake.tick(900);
      client.run()();
    }
    client._queryQueue.push({});
    fake.tick(5_000);
    assert.equal(events.length, 0);
  });

  it('a client with a notification listener (LISTEN) is held on purpose: no held_too_long', () => {
    const { fake, events, connect } = setup();
    const client = connect();
    client.on('notification', () => {});
    fake.tick(60_000);
    assert.equal(events.length, 0);
  });

  it('the threshold is off by default (0): an idle client is never reported as held_too_long', () => {
    const { fake, events, connect } = setup({ idleThresholdMs: 0 });
    connect();
    fake.tick(3_600_000);
    assert.equal(events.length, 0);
    assert.equal(fake.countTimers(), 0, 'no timer at all');
  });

  it('dead_not_released: due the grace after the connection ended, even with the threshold off', () => {
    const { fake, events, connect, detector } = setup({ idleThresholdMs: 0 });
    const client = connect();
    fake.tick(7_000);
    client.die();
    fake.tick(499);
    assert.equal(events.length, 0);
    fake.tick(1);
    assert.equal(events.length, 1);
    assert.equal(events[0]!.reason, 'dead_not_released');
    assert.equal(events[0]!.forMs, 500);
    assert.equal(events[0]!.heldMs, 7_500);
    client.release();
    assert.equal(detector.leaked().size, 0, 'released: no longer counted');
  });

  it('a dead client released within the grace, and any released client, is never reported', () => {
    const { fake, events, connect } = setup();
    const a = connect();
    const b = connect();
    a.die();
    fake.tick(100);
    a.release(new Error('dead'));
    fake.tick(800);
    b.release();
    fake.tick(60_000);
    assert.equal(events.length, 0);
    assert.equal(a.releases + b.releases, 2, "pg-pool's release still runs");
  });

  it('one timer for every checkout, armed for the earliest due moment', () => {
    const { fake, events, connect } = setup();
    for (let i = 0; i < 50; i++) {
      connect();
      fake.tick(10);
    }
    assert.equal(fake.countTimers(), 1);
    fake.tick(500); // t = 1000 ms: the first checkout (t = 0) has been idle for 1 s
    assert.equal(events.length, 1);
    fake.tick(245); // t = 1245: those of t = 0…240
    assert.equal(events.length, 25);
    fake.tick(245);
    assert.equal(events.length, 50);
    assert.equal(fake.countTimers(), 0);
  });

  it("the callback form's `done` is the same release: calling it ends the watch", () => {
    const { fake, events, detector, policy } = setup();
    const client = new FakeClient();
    const original = client.release;
    const args: unknown[] = [undefined, client, original];
    const checkout = detector.checkout(policy, () => {});
    detector.held(checkout!, client, args);
    assert.notEqual(args[2], original);
    assert.equal(args[2], client.release);
    (args[2] as () => void)();
    fake.tick(60_000);
    assert.equal(events.length, 0);
    assert.equal(client.releases, 1);
  });

  it('turned off (enabled: false): nothing is captured or watched', () => {
    const { detector, policy } = setup();
    const off = {
      ...policy,
      settings: { leakDetection: { ...policy.settings.leakDetection, enabled: false } },
    };
    assert.equal(
      detector.checkout(off, () => {}),
      undefined,
    );
  });

  it('dispose stops the timer and reports nothing more', () => {
    const { fake, events, connect, detector } = setup();
    connect();
    detector.dispose();
    assert.equal(fake.countTimers(), 0);
    fake.tick(60_000);
    assert.equal(events.length, 0);
  });
});
