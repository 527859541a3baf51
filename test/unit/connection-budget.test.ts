import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyError } from '../../src/classify/index.ts';
import { isConnectionBudgetExhaustedError } from '../../src/errors.ts';
import {
  type BudgetWaitEvent,
  ConnectionBudget,
  type ReleaseSlot,
  type SlotSource,
} from '../../src/policy/connection-budget.ts';
import type { FleetCoordinator } from '../../src/coordination/coordinator.ts';
import { FleetSlots } from '../../src/coordination/fleet-slots.ts';
import { fakeClock, flush } from '../support/clock.ts';

const TARGET = 'db:5432/app';

/** A source whose capacity the test sets, recording the demand it is told. */
class ManualSlots implements SlotSource {
  readonly scope = 'fleet';
  cap: number;
  readonly demands: Array<[number, number]> = [];
  #listeners: Array<() => void> = [];
  constructor(cap: number) {
    this.cap = cap;
  }
  capacity(): number {
    return this.cap;
  }
  demand(held: number, waiting: number): void {
    this.demands.push([held, waiting]);
  }
  onChange(l: () => void): void {
    this.#listeners.push(l);
  }
  set(cap: number): void {
    this.cap = cap;
    for (const l of this.#listeners) l();
  }
  dispose(): void {}
}

describe('ConnectionBudget', () => {
  it('hands out maxConnections slots at once; a slot given back (once, however often release runs) goes to the next', () => {
    const { clock } = fakeClock();
    const b = new ConnectionBudget(TARGET, 2, undefined, clock);
    const r1 = b.tryAcquire();
    const r2 = b.tryAcquire();
    assert.ok(r1 && r2);
    assert.equal(b.tryAcquire(), undefined);
    assert.equal(b.held, 2);
    r1();
    r1();
    assert.equal(b.held, 1);
    assert.ok(b.tryAcquire());
    assert.equal(b.tryAcquire(), undefined);
    assert.equal(b.scope, 'process');
  });

  it('waiters get slots first come first served; a newcomer does not overtake them', async () => {
    const { clock } = fakeClock();
    const b = new ConnectionBudget(TARGET, 1, undefined, clock);
    const first = b.tryAcquire()!;
    const order: number[] = [];
    const releases: ReleaseSlot[] = [];
    for (const i of [1, 2, 3]) {
      void b.acquire(1000).then((r) => {
        order.push(i);
        releases.push(r);
      });
    }
    assert.equal(b.waiting, 3);
    first();
    // A slot is free only for the head of the queue.
    assert.equal(b.tryAcquire(), undefined);
    await flush();
    assert.deepEqual(order, [1]);
    releases[0]!();
    await flush();
    releases[1]!();
    await flush();
    assert.deepEqual(order, [1, 2, 3]);
    assert.equal(b.held, 1);
  });

  it('a wait past its bound fails with ConnectionBudgetExhaustedError naming the budget and the target; not retried, not counted by the breaker', async () => {
    const { fake, clock } = fakeClock();
    const b = new ConnectionBudget(TARGET, 3, undefined, clock);
    for (let i = 0; i < 3; i++) b.tryAcquire();
    const events: BudgetWaitEvent[] = [];
    b.onWait((e) => events.push(e));
    const p = b.acquire(500);
    const box: { error?: unknown } = {};
    p.catch((e: unknown) => (box.error = e));
    fake.tick(499);
    await flush();
    assert.ok(!('error' in box));
    fake.tick(1);
    await flush();
    const error = box.error;
    assert.ok(isConnectionBudgetExhaustedError(error));
    assert.equal(error.target, TARGET);
    assert.equal(error.maxConnections, 3);
    assert.match(error.message, /Connection budget for db:5432\/app exhausted: all 3 connections/);
    assert.equal(b.waiting, 0);
    assert.deepEqual(events, [{ target: TARGET, waitedMs: 500, outcome: 'exhausted' }]);
    const c = classifyError(error);
    assert.equal(c.transient, false);
    assert.equal(c.errorType, 'PGR_CONNECTION_BUDGET_EXHAUSTED');
    assert.equal(c.countsForBreaker, false);
  });

  it('follows its source: waiters are served when the capacity grows, a surplus is reported when it shrinks, demand is told', async () => {
    const { clock } = fakeClock();
    const src = new ManualSlots(0);
    const b = new ConnectionBudget(TARGET, 10, src, clock);
    const got: ReleaseSlot[] = [];
    void b.acquire(0).then((r) => got.push(r));
    void b.acquire(0).then((r) => got.push(r));
    assert.deepEqual(src.demands.at(-1), [0, 2]);
    src.set(1);
    await flush();
    assert.equal(got.length, 1);
    src.set(3);
    await flush();
    assert.equal(got.length, 2);
    const surplus: number[] = [];
    b.onSurplus((n) => surplus.push(n));
    src.set(1);
    assert.deepEqual(surplus, [1]);
    got[0]!();
    assert.deepEqual(src.demands.at(-1), [1, 0]);
    assert.equal(b.scope, 'fleet');
  });
});

/** A coordinator whose lease answers the test gives, one at a time. */
function fakeCoordinator(members = 4) {
  const asked: Array<{ hold: number; want: number; answer: (g: number | undefined) => void }> = [];
  const coordinator = {
    members,
    contacted: true,
    settings: { leaseMs: 3000, timeoutMs: 50 },
    release() {},
    leaseSlots(_key: string, _budget: number, hold: number, want: number) {
      return new Promise<number | undefined>((answer) => asked.push({ hold, want, answer }));
    },
  };
  return { coordinator: coordinator as unknown as FleetCoordinator, asked };
}

describe('FleetSlots (the fleet-wide budget as one process sees it)', () => {
  it('the first connect waits for the lease; while a lease is in flight no slot beyond those held when it was sent is taken', async () => {
    const { fake, clock } = fakeClock();
    const { coordinator, asked } = fakeCoordinator();
    const slots = new FleetSlots(coordinator, 'k', 24, clock);
    const b = new ConnectionBudget(TARGET, 24, slots, clock);
    assert.equal(b.tryAcquire(), undefined, 'nothing before Redis answered');
    const first = b.acquire(1000);
    assert.equal(asked.length, 1);
    assert.deepEqual([asked[0]!.hold, asked[0]!.want], [0, 2]); // one waiting + a quarter of the share (24 / 4 / 4)
    asked[0]!.answer(4);
    await first;
    assert.equal(b.held, 1);
    // 3 granted slots unused: some are given back. Redis may record as few as the 1 held when that
    // lease was sent, so until it answers no second slot is taken.
    assert.equal(asked.length, 2);
    assert.deepEqual([asked[1]!.hold, asked[1]!.want], [1, 2]);
    assert.equal(b.tryAcquire(), undefined);
    asked[1]!.answer(2);
    await flush();
    assert.ok(b.tryAcquire());
    assert.equal(b.held, 2);
    slots.dispose();
    fake.reset();
  });

  it('a failed lease keeps the slots held while the last grant is valid in Redis, then the share (24 / 4); the first lease back asks for no more than that share', async () => {
    const { fake, clock } = fakeClock();
    const { coordinator, asked } = fakeCoordinator(1);
    const slots = new FleetSlots(coordinator, 'k', 24, clock);
    const b = new ConnectionBudget(TARGET, 24, slots, clock);
    const p = b.acquire(1000);
    assert.equal(asked[0]!.want, 7); // one waiting + a quarter of the share (24 / 1 / 4)
    asked[0]!.answer(7);
    await p;
    for (let i = 0; i < 3; i++) assert.ok(b.tryAcquire());
    assert.equal(b.held, 4);
    assert.equal(asked.length, 1, 'within the grant: no round trip');
    (coordinator as { members: number }).members = 4;
    // The renewal (every lease / 3) fails: the 4 held stay usable, no more.
    fake.tick(1000);
    await flush();
    assert.equal(asked.length, 2);
    assert.equal(asked[1]!.hold, 4);
    asked[1]!.answer(undefined);
    await flush();
    assert.equal(b.capacity, 4);
    // Retries ask for the slots still usable, whatever was released meanwhile.
    b.tryAcquire(); // none: at capacity
    fake.tick(300);
    await flush();
    assert.equal(asked.length, 3);
    assert.equal(asked[2]!.hold, 4);
    asked[2]!.answer(undefined);
    await flush();
    assert.equal(b.capacity, 4);
    // Past the lease (3 s from when the grant was asked for): the fallback share.
    fake.tick(2000);
    await flush();
    for (const a of asked.slice(3)) a.answer(undefined);
    await flush();
    assert.equal(b.capacity, 6);
    assert.ok(b.tryAcquire() && b.tryAcquire());
    assert.equal(b.tryAcquire(), undefined);
    // Redis is back: the first lease asks for no more than the share it held in fallback.
    void b.acquire(1000).catch(() => {});
    await flush();
    const resumed = asked.at(-1)!;
    assert.equal(resumed.hold, 6);
    assert.equal(resumed.want, 6);
    slots.dispose();
    fake.reset();
  });
});
