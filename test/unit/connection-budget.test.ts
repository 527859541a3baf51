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
