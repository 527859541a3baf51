// Fuzz and model-based property tests:
// - the classifier fed hostile inputs that classify.property.test.ts does not build: proxies whose every
//   trap throws, revoked proxies, symbol / boxed / object codes with throwing coercions, getters that
//   answer differently on every read, frozen graphs, self-referencing causes and AggregateErrors full of
//   non-Errors, huge messages, deep chains. Never a throw; always a valid classification whose label
//   never carries message text.
// - the circuit breaker driven by random command sequences (start/settle calls, probes, admissions,
//   recorded failures, time) on a fake clock, checked step by step against a reference model (consecutive
//   mode) or against its invariants (failure-rate mode): allowed edges only, events = observed changes,
//   open rejects without running, half-open admits at most the configured probes.
// - the rate limiter driven by random arrivals, aborts and time on a fake clock: the token level stays in
//   [0, burst], grants obey burst + rate × (T + 1 tick), waiters are served FIFO, the queue stays bounded,
//   `drop` never waits, nobody waits past maxWaitMs, and dispose() releases everyone.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import FakeTimers from '@sinonjs/fake-timers';
import fc from 'fast-check';
import { DatabaseError } from 'pg';
import { classifyError, ERROR_CLASSES } from '../../src/classify/index.ts';
import { PG_MESSAGES } from '../../src/classify/network.ts';
import type { ErrorClassification } from '../../src/classify/types.ts';
import type { CircuitBreakerSettings, RateLimitSettings } from '../../src/config/types.ts';
import { isCircuitOpenError, isRateLimitedError } from '../../src/errors.ts';
import { CircuitBreaker } from '../../src/policy/circuit-breaker.ts';
import type { Clock } from '../../src/policy/clock.ts';
import type { CircuitStateChangeEvent, CircuitStateName } from '../../src/policy/events.ts';
import { RateLimiter } from '../../src/policy/rate-limiter.ts';
import { fakeClock, flush, T0 } from '../support/clock.ts';

/** Marks message text: no label may ever contain it. */
const CANARY = 'zzcanarymsg';

function assertValid(r: ErrorClassification, where = ''): void {
  assert.equal(typeof r, 'object', where);
  assert.ok((ERROR_CLASSES as readonly string[]).includes(r.errorClass), `class ${r.errorClass} ${where}`);
  assert.equal(typeof r.transient, 'boolean');
  assert.equal(typeof r.countsForBreaker, 'boolean');
  assert.ok(['no', 'unknown', 'rejected'].includes(r.reachedServer), `reach ${r.reachedServer}`);
  assert.equal(typeof r.errorType, 'string');
  assert.ok(r.errorType.length > 0 && r.errorType.length <= 40, `errorType length: ${r.errorType}`);
  assert.match(r.errorType, /^[\x21-\x7e]+$/, `errorType printable ASCII: ${JSON.stringify(r.errorType)}`);
  assert.ok(!r.errorType.toLowerCase().includes(CANARY), `message text in errorType: ${r.errorType}`);
  assert.ok(Object.isFrozen(r));
}

// ---- hostile values ----

const boom = (what: string) => () => {
  throw new Error(`${CANARY} ${what}`);
};

/** A proxy whose every trap throws (even `typeof` works: it is an object). */
function allTrapsThrow(target: object = {}): object {
  const t = boom('trap');
  return new Proxy(target, {
    get: t,
    has: t,
    getPrototypeOf: t,
    ownKeys: t,
    getOwnPropertyDescriptor: t,
    defineProperty: t,
    set: t,
    deleteProperty: t,
    isExtensible: t,
    preventExtensions: t,
    setPrototypeOf: t,
  });
}

function revoked(): object {
  const { proxy, revoke } = Proxy.revocable(new Error(CANARY), {});
  revoke();
  return proxy;
}

/** An object that throws whenever something tries to turn it into a string or number. */
const unprintable = (): object => ({
  toString: boom('toString'),
  valueOf: boom('valueOf'),
  [Symbol.toPrimitive]: boom('toPrimitive'),
});

/** A getter that answers something different on every read (a value the classifier reads twice may differ). */
function flipFlop<T>(values: readonly T[]): () => T {
  let i = 0;
  return () => values[i++ % values.length]!;
}

// fast-check inspects the values it generates (and prints counterexamples): hostile values cannot be
// generated values. The arbitraries produce plain recipes; `hostile()` builds the value inside the property.
type Hostile =
  | 'revoked'
  | 'allTraps'
  | 'unprintable'
  | 'symbol'
  | 'registeredSymbol'
  | 'boxedString'
  | 'function'
  | 'bigint'
  | 'nan';

function hostile(kind: Hostile): unknown {
  switch (kind) {
    case 'revoked':
      return revoked();
    case 'allTraps':
      return allTrapsThrow();
    case 'unprintable':
      return unprintable();
    case 'symbol':
      return Symbol('ECONNRESET');
    case 'registeredSymbol':
      return Symbol.for('code');
    case 'boxedString':
      // a boxed string code, on purpose
      return new String('ECONNRESET');
    case 'function':
      return () => 'ECONNRESET';
    case 'bigint':
      return 10n;
    default:
      return Number.NaN;
  }
}

const hostileKind = fc.constantFrom<Hostile>(
  'revoked',
  'allTraps',
  'unprintable',
  'symbol',
  'registeredSymbol',
  'boxedString',
  'function',
  'bigint',
  'nan',
);

/** A plain value, or `{ hostile }` for one built later. */
type Recipe = { plain: unknown } | { hostile: Hostile };
const realise = (r: Recipe): unknown => ('hostile' in r ? hostile(r.hostile) : r.plain);

const codeValue: fc.Arbitrary<Recipe> = fc.oneof(
  fc
    .oneof(
      fc.constantFrom(
        'ECONNRESET',
        'ECONNREFUSED',
        '57P01',
        '40001',
        '28P01',
        'PGR_CIRCUIT_OPEN',
        'PGR_TIMEOUT',
      ),
      fc.string({ maxLength: 6 }),
      fc.integer(),
      fc.double(),
      fc.constant(null),
      fc.constant(undefined),
    )
    .map((plain) => ({ plain })),
  hostileKind.map((h) => ({ hostile: h })),
);

const messageValue: fc.Arbitrary<Recipe> = fc.oneof(
  fc
    .oneof(
      fc.string({ maxLength: 30 }).map((s) => `${CANARY} ${s}`),
      fc.constantFrom(...PG_MESSAGES.keys()),
      fc.integer({ min: 1_000, max: 200_000 }).map((n) => `${CANARY} ${'x'.repeat(n)}`),
      fc.constant(undefined),
    )
    .map((plain) => ({ plain })),
  fc.constantFrom<Hostile>('unprintable', 'symbol', 'allTraps').map((h) => ({ hostile: h })),
);

type Base = 'Error' | 'TypeError' | 'DatabaseError' | 'Aggregate' | 'plain' | 'nullProto' | 'function';

interface HostileShape {
  base: Base;
  code: Recipe;
  message: Recipe;
  severity: Recipe;
  flip: boolean;
  freeze: 'none' | 'freeze' | 'seal' | 'preventExtensions';
  wrap: 'none' | 'allTraps' | 'getThrows' | 'ownKeysThrows' | 'protoThrows';
  ctor: 'keep' | 'nameThrows' | 'proxy' | 'notFunction' | 'canaryName' | 'longName';
}

const hostileShape: fc.Arbitrary<HostileShape> = fc.record({
  base: fc.constantFrom<Base>(
    'Error',
    'TypeError',
    'DatabaseError',
    'Aggregate',
    'plain',
    'nullProto',
    'function',
  ),
  code: codeValue,
  message: messageValue,
  severity: fc.oneof(
    fc.constantFrom('ERROR', 'FATAL', undefined).map((plain) => ({ plain })),
    codeValue,
  ),
  flip: fc.boolean(),
  freeze: fc.constantFrom('none', 'freeze', 'seal', 'preventExtensions'),
  wrap: fc.constantFrom('none', 'none', 'allTraps', 'getThrows', 'ownKeysThrows', 'protoThrows'),
  ctor: fc.constantFrom('keep', 'keep', 'nameThrows', 'proxy', 'notFunction', 'canaryName', 'longName'),
});

const define = (o: object, key: PropertyKey, d: PropertyDescriptor): void => {
  try {
    Object.defineProperty(o, key, { configurable: true, enumerable: true, ...d });
  } catch {
    // non-configurable own property (e.g. a function's `name`): keep what is there
  }
};

function buildHostile(s: HostileShape, cause: unknown, members: unknown[]): unknown {
  let e: object;
  const message = realise(s.message);
  const code = realise(s.code);
  const severity = realise(s.severity);
  const text = typeof message === 'string' ? message : CANARY;
  switch (s.base) {
    case 'Error':
      e = new Error(text);
      break;
    case 'TypeError':
      e = new TypeError(text);
      break;
    case 'DatabaseError':
      e = new DatabaseError(text, 0, 'error');
      break;
    case 'Aggregate':
      e = new AggregateError(members, text);
      break;
    case 'nullProto':
      e = Object.create(null) as object;
      break;
    case 'function':
      e = Object.assign(() => {}, { message: text });
      break;
    default:
      e = {};
  }
  if (s.flip) {
    define(e, 'code', { get: flipFlop([code, 'ECONNRESET', undefined, allTrapsThrow()]) });
    define(e, 'message', { get: flipFlop([message, 'Connection terminated unexpectedly', null]) });
  } else {
    define(e, 'code', { value: code, writable: true });
    if (s.base === 'plain' || s.base === 'nullProto') define(e, 'message', { value: message });
  }
  if (severity !== undefined) define(e, 'severity', { value: severity });
  if (cause !== undefined) define(e, 'cause', { value: cause });
  if (members.length > 0 && s.base !== 'Aggregate') define(e, 'errors', { value: members });
  switch (s.ctor) {
    case 'nameThrows':
      define(e, 'constructor', {
        value: Object.defineProperty(function () {}, 'name', { get: boom('name') }),
      });
      break;
    case 'proxy':
      define(e, 'constructor', { value: allTrapsThrow(function () {}) });
      break;
    case 'notFunction':
      define(e, 'constructor', { value: { name: 'NotAFunction' } });
      break;
    case 'canaryName':
      // A constructor named like message text: it is a plain identifier, so it may be used as a label,
      // but the check below only forbids CANARY in labels: use a different spelling.
      define(e, 'constructor', {
        value: Object.defineProperty(function () {}, 'name', { value: `${CANARY} with spaces` }),
      });
      break;
    case 'longName':
      define(e, 'constructor', {
        value: Object.defineProperty(function () {}, 'name', { value: 'N'.repeat(10_000) }),
      });
      break;
    default:
  }
  if (s.freeze === 'freeze') Object.freeze(e);
  else if (s.freeze === 'seal') Object.seal(e);
  else if (s.freeze === 'preventExtensions') Object.preventExtensions(e);
  switch (s.wrap) {
    case 'allTraps':
      return allTrapsThrow(e);
    case 'getThrows':
      return new Proxy(e, { get: boom('get') });
    case 'ownKeysThrows':
      return new Proxy(e, { ownKeys: boom('ownKeys'), getOwnPropertyDescriptor: boom('gopd') });
    case 'protoThrows':
      return new Proxy(e, { getPrototypeOf: boom('getPrototypeOf') });
    default:
      return e;
  }
}

/** Leaves: primitives, symbols, revoked proxies, throwing proxies. */
const leafRecipe: fc.Arbitrary<Recipe> = fc.oneof(
  fc.constantFrom(null, undefined, 0, -0, '', true, CANARY).map((plain) => ({ plain })),
  hostileKind.map((h) => ({ hostile: h })),
);

type Tree = { leaf: Recipe } | { shape: HostileShape; cause: Tree | undefined; members: Tree[] };

const treeRecipe: fc.Arbitrary<Tree> = fc.letrec<{ node: Tree }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leafRecipe.map((leaf): Tree => ({ leaf })),
    hostileShape.map((shape): Tree => ({ shape, cause: undefined, members: [] })),
    fc
      .tuple(hostileShape, tie('node'), fc.array(tie('node'), { maxLength: 4 }))
      .map(([shape, cause, members]): Tree => ({ shape, cause, members })),
  ),
})).node;

function build(t: Tree): unknown {
  if ('leaf' in t) return realise(t.leaf);
  return buildHostile(t.shape, t.cause === undefined ? undefined : build(t.cause), t.members.map(build));
}

describe('classifyError fuzz: hostile inputs', () => {
  it('never throws and returns a valid classification without message text, whatever the shape', () => {
    fc.assert(
      fc.property(treeRecipe, (tree) => {
        assertValid(classifyError(build(tree)));
      }),
      { numRuns: 600 },
    );
  });

  it('self-referencing causes, AggregateErrors of non-Errors and of themselves terminate', () => {
    fc.assert(
      fc.property(fc.array(treeRecipe, { maxLength: 8 }), fc.boolean(), (members, selfCause) => {
        const agg = new AggregateError(members.map(build), CANARY) as AggregateError & { cause?: unknown };
        (agg.errors as unknown[]).push(agg, [agg], { errors: agg.errors });
        if (selfCause) agg.cause = agg;
        const wrapper = new Error(CANARY, { cause: agg });
        (agg as { cause?: unknown }).cause ??= wrapper; // a two-node cycle
        assertValid(classifyError(agg));
        assertValid(classifyError(wrapper));
        assertValid(classifyError(Object.freeze(new Error(CANARY, { cause: Object.freeze(agg) }))));
      }),
      { numRuns: 200 },
    );
  });

  it('deep chains, huge and sparse `errors`, and array-likes are bounded', () => {
    // 100 000 nested causes with a recognised error at the bottom: bounded depth, so not found, no stack overflow.
    let deep: unknown = Object.assign(new Error('x'), { code: 'ECONNRESET', syscall: 'read' });
    for (let i = 0; i < 100_000; i++) deep = new Error(`${CANARY} ${i}`, { cause: deep });
    assertValid(classifyError(deep));
    // A sparse `errors` of length 2^32 - 1 and one whose length getter throws.
    const sparse = Object.assign(new Error(CANARY), { errors: new Array(2 ** 32 - 1) });
    assertValid(classifyError(sparse));
    const badLength = Object.assign(new Error(CANARY), {
      errors: new Proxy([], { get: (t, k) => (k === 'length' ? boom('length')() : Reflect.get(t, k)) }),
    });
    assertValid(classifyError(badLength));
    const arrayLike = Object.assign(new Error(CANARY), { errors: { length: 3, 0: null, 1: 'x' } });
    assertValid(classifyError(arrayLike));
    // 1 MB message on an error the classifier does not recognise, on a DatabaseError and an errno error.
    const big = `${CANARY} ${'m'.repeat(1 << 20)}`;
    for (const e of [
      new Error(big),
      Object.assign(new DatabaseError(big, 0, 'error'), { code: '40001', severity: 'ERROR' }),
      Object.assign(new Error(big), { code: 'ECONNRESET' }),
    ])
      assertValid(classifyError(e));
  });

  it('a recognised error is still recognised when frozen or behind a transparent proxy', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT'),
        fc.constantFrom('freeze', 'proxy', 'both'),
        (code, how) => {
          const plain = Object.assign(new Error(CANARY), { code, syscall: 'connect' });
          const expected = classifyError(plain);
          let e: object = Object.assign(new Error(CANARY), { code, syscall: 'connect' });
          if (how !== 'proxy') e = Object.freeze(e);
          if (how !== 'freeze') e = new Proxy(e, {});
          assert.deepEqual(classifyError(e), expected);
          assert.equal(expected.errorType, code);
        },
      ),
      { numRuns: 50 },
    );
  });

  it('an override that returns hostile patches never breaks the result', () => {
    const patches: Array<() => unknown> = [
      () => allTrapsThrow(),
      () => revoked(),
      () => ({
        get errorClass(): string {
          throw new Error(CANARY);
        },
      }),
      () => ({ then: boom('then') }),
      () => ({ then: (_ok: unknown, ko: (e: unknown) => void) => ko(new Error(CANARY)) }),
      () => ({ errorType: `${CANARY} with a space` }),
      () => ({ errorType: 'y'.repeat(41) }),
      () => ({ errorType: unprintable() }),
      () => ({ errorClass: 'not_a_class' }),
      () => ({ transient: 'yes' }),
    ];
    const patch = fc.integer({ min: 0, max: patches.length - 1 });
    fc.assert(
      fc.property(treeRecipe, patch, (tree, which) => {
        const input = build(tree);
        let defaults: ErrorClassification | undefined;
        const r = classifyError(input, (_e, d) => {
          defaults = d;
          return patches[which]!() as never;
        });
        assertValid(r);
        // (compared with what the hook saw: flip-flopping getters may classify differently on each call)
        assert.equal(r, defaults, 'an invalid patch leaves the defaults');
      }),
      { numRuns: 300 },
    );
  });
});

// ---- circuit breaker: model-based ----

type Outcome = 'ok' | 'down' | 'answered' | 'neutral' | 'classifierThrows';

class Down extends Error {}
class Answered extends Error {}
class Neutral extends Error {}
class Weird extends Error {}

const isFailure = (e: unknown): boolean => {
  if (e instanceof Weird) throw new Error('classifier bug');
  return e instanceof Down;
};
const isNeutral = (e: unknown): boolean => e instanceof Neutral;

interface Round {
  inFlight: number;
  successes: number;
}

interface PendingCall {
  readonly id: number;
  readonly probe: boolean;
  readonly epoch: number;
  readonly round: Round | undefined;
  readonly resolve: (v: string) => void;
  readonly reject: (e: unknown) => void;
  settled: 'pending' | 'resolved' | 'rejected';
}

/** The breaker under test, a reference model of it, and what was observed. */
interface BreakerSys {
  readonly settings: CircuitBreakerSettings;
  readonly b: CircuitBreaker;
  readonly fake: FakeTimers.Clock;
  readonly changes: CircuitStateChangeEvent[];
  rejectedEvents: number;
  rejectionsSeen: number;
  pending: PendingCall[];
  nextId: number;
  // the model
  state: CircuitStateName;
  epoch: number;
  consecutive: number;
  round: Round;
  nextProbeAt: number | undefined;
}

const ALLOWED_EDGES = new Set(['closed->open', 'open->half_open', 'half_open->open', 'half_open->closed']);

function modelOpen(sys: BreakerSys): void {
  sys.state = 'open';
  sys.epoch++;
  sys.nextProbeAt = sys.fake.now + sys.settings.halfOpenAfterMs;
}
function modelHalfOpen(sys: BreakerSys): void {
  sys.state = 'half_open';
  sys.epoch++;
  sys.nextProbeAt = undefined;
  sys.round = { inFlight: 0, successes: 0 };
}
function modelClose(sys: BreakerSys): void {
  sys.state = 'closed';
  sys.epoch++;
  sys.nextProbeAt = undefined;
  sys.consecutive = 0;
}
/** Open turns half-open on time. */
function modelTime(sys: BreakerSys): void {
  if (sys.state === 'open' && sys.nextProbeAt !== undefined && sys.fake.now >= sys.nextProbeAt) {
    modelHalfOpen(sys);
  }
}
const consecutiveMode = (sys: BreakerSys): boolean => sys.settings.mode === 'consecutive';

/** The model's closed-state trip decision; in failure-rate mode it follows what the breaker did. */
function modelClosedFailure(sys: BreakerSys, realOpened: boolean): void {
  sys.consecutive++;
  const trips = consecutiveMode(sys) ? sys.consecutive >= sys.settings.consecutiveFailures : realOpened;
  if (trips) modelOpen(sys);
}

/** Checks the breaker against the model and the event stream after every command. */
function check(sys: BreakerSys, changesBefore: number): void {
  const fresh = sys.changes.slice(changesBefore);
  let prev: CircuitStateName = changesBefore === 0 ? 'closed' : sys.changes[changesBefore - 1]!.to;
  for (const c of fresh) {
    assert.equal(c.from, prev, `event from ${c.from} but the breaker was ${prev}`);
    assert.ok(ALLOWED_EDGES.has(`${c.from}->${c.to}`), `edge ${c.from}->${c.to}`);
    assert.ok(c.at <= sys.fake.now && c.at >= (sys.changes[sys.changes.indexOf(c) - 1]?.at ?? T0));
    if (c.to === 'open') assert.equal(c.nextProbeAt, c.at + sys.settings.halfOpenAfterMs);
    prev = c.to;
  }
  const state = sys.b.state;
  assert.ok(['closed', 'open', 'half_open'].includes(state));
  // Reading the state may half-open it (on time): that emits an event too.
  const last = sys.changes.length === 0 ? 'closed' : sys.changes[sys.changes.length - 1]!.to;
  assert.equal(state, last, 'state matches the last state event');
  assert.equal(state, sys.state, 'state matches the model');
  assert.equal(sys.b.nextProbeAt, sys.state === 'open' ? sys.nextProbeAt : undefined);
  if (sys.state === 'half_open') {
    assert.ok(sys.round.inFlight <= sys.settings.halfOpenMaxProbes, 'half-open probes in flight');
  }
  assert.equal(sys.rejectedEvents, sys.rejectionsSeen, 'one onRejected per rejection');
}

type BreakerCmd = fc.AsyncCommand<object, BreakerSys>;

class StartCall implements BreakerCmd {
  readonly probe: boolean;
  constructor(probe: boolean) {
    this.probe = probe;
  }
  check = () => true;
  async run(_: object, sys: BreakerSys): Promise<void> {
    const before = sys.changes.length;
    if (this.probe && sys.state === 'open') modelHalfOpen(sys);
    const state = sys.state;
    const round = state === 'half_open' ? sys.round : undefined;
    const admitted =
      state === 'closed' || (round !== undefined && round.inFlight < sys.settings.halfOpenMaxProbes);
    let ran = false;
    let resolve!: (v: string) => void;
    let reject!: (e: unknown) => void;
    const fn = () =>
      new Promise<string>((res, rej) => {
        ran = true;
        resolve = res;
        reject = rej;
      });
    const p = this.probe ? sys.b.probe(fn) : sys.b.execute(fn, 'query', isFailure, isNeutral);
    const id = sys.nextId++;
    if (!admitted) {
      assert.equal(ran, false, `${state}: the call must not run`);
      const err = await p.then(
        () => assert.fail('should reject'),
        (e: unknown) => e,
      );
      assert.ok(isCircuitOpenError(err), `rejected with CircuitOpenError (state ${state})`);
      assert.equal(err.state, state);
      sys.rejectionsSeen++;
    } else {
      assert.equal(ran, true, `${state}: the call must run`);
      if (round) round.inFlight++;
      const call: PendingCall = {
        id,
        probe: this.probe,
        epoch: sys.epoch,
        round,
        resolve,
        reject,
        settled: 'pending',
      };
      p.then(
        () => (call.settled = 'resolved'),
        () => (call.settled = 'rejected'),
      );
      sys.pending.push(call);
    }
    check(sys, before);
  }
  toString = () => (this.probe ? 'probe()' : 'execute()');
}

class SettleCall implements BreakerCmd {
  readonly pick: number;
  readonly outcome: Outcome;
  constructor(pick: number, outcome: Outcome) {
    this.pick = pick;
    this.outcome = outcome;
  }
  check = (_: object) => true;
  async run(_: object, sys: BreakerSys): Promise<void> {
    if (sys.pending.length === 0) return;
    const before = sys.changes.length;
    const call = sys.pending.splice(this.pick % sys.pending.length, 1)[0]!;
    const error =
      this.outcome === 'down'
        ? new Down('down')
        : this.outcome === 'answered'
          ? new Answered('answered')
          : this.outcome === 'neutral'
            ? new Neutral('neutral')
            : new Weird('weird');
    if (this.outcome === 'ok') call.resolve('ok');
    else call.reject(error);
    await flush();
    assert.equal(call.settled, this.outcome === 'ok' ? 'resolved' : 'rejected', 'outcome passed through');
    // The model: probes count every error as a failure and know no neutral outcome.
    const failed = this.outcome === 'down' || (call.probe && this.outcome !== 'ok');
    const neutral = !failed && !call.probe && this.outcome === 'neutral';
    if (call.round) call.round.inFlight--;
    if (call.epoch === sys.epoch && !neutral) {
      if (sys.state === 'closed') {
        const realOpened = sys.changes.slice(before).some((c) => c.to === 'open');
        if (failed) modelClosedFailure(sys, realOpened);
        else {
          sys.consecutive = 0;
          assert.equal(realOpened, false, 'a success never opens');
        }
      } else if (sys.state === 'half_open' && call.round) {
        if (failed) modelOpen(sys);
        else if (++call.round.successes >= sys.settings.successesToClose) modelClose(sys);
      }
    } else {
      assert.equal(sys.changes.length, before, 'a stale or neutral outcome changes nothing');
    }
    check(sys, before);
  }
  toString = () => `settle(${this.pick}, ${this.outcome})`;
}

class Admit implements BreakerCmd {
  check = () => true;
  async run(_: object, sys: BreakerSys): Promise<void> {
    const before = sys.changes.length;
    const err = sys.b.admit('query');
    if (sys.state === 'closed') assert.equal(err, undefined);
    else {
      assert.ok(isCircuitOpenError(err));
      assert.equal(err.state, sys.state);
      sys.rejectionsSeen++;
    }
    check(sys, before);
  }
  toString = () => 'admit()';
}

class RecordFailure implements BreakerCmd {
  check = () => true;
  async run(_: object, sys: BreakerSys): Promise<void> {
    const before = sys.changes.length;
    sys.b.recordFailure(new Down('recorded'));
    if (sys.state === 'closed') modelClosedFailure(sys, sys.changes.length > before);
    else assert.equal(sys.changes.length, before, 'recordFailure only acts while closed');
    check(sys, before);
  }
  toString = () => 'recordFailure()';
}

class Advance implements BreakerCmd {
  readonly ms: number;
  constructor(ms: number) {
    this.ms = ms;
  }
  check = () => true;
  async run(_: object, sys: BreakerSys): Promise<void> {
    const before = sys.changes.length;
    sys.fake.tick(this.ms);
    modelTime(sys);
    await flush();
    check(sys, before);
  }
  toString = () => `tick(${this.ms})`;
}

const start = fc.boolean().map((probe) => new StartCall(probe) as BreakerCmd);
const settle = fc
  .tuple(
    fc.nat(),
    fc.constantFrom<Outcome>('ok', 'ok', 'down', 'down', 'answered', 'neutral', 'classifierThrows'),
  )
  .map(([pick, outcome]) => new SettleCall(pick, outcome) as BreakerCmd);
const breakerCommands = fc.commands(
  [
    start,
    start,
    settle,
    settle,
    settle,
    fc.constant(0).map(() => new Admit() as BreakerCmd),
    fc.constant(0).map(() => new RecordFailure() as BreakerCmd),
    fc.integer({ min: 0, max: 4_000 }).map((ms) => new Advance(ms) as BreakerCmd),
    fc.integer({ min: 0, max: 4_000 }).map((ms) => new Advance(ms) as BreakerCmd),
  ],
  { maxCommands: 100, size: 'medium' },
);

const breakerSettings = fc.record({
  enabled: fc.constant(true),
  mode: fc.constantFrom('consecutive' as const, 'consecutive' as const, 'failure_rate' as const),
  consecutiveFailures: fc.integer({ min: 1, max: 5 }),
  failureRateThreshold: fc.constantFrom(0.2, 0.5, 0.9),
  failureRateWindowMs: fc.integer({ min: 100, max: 5_000 }),
  minimumRps: fc.constantFrom(0, 1, 5),
  halfOpenAfterMs: fc.integer({ min: 1, max: 3_000 }),
  halfOpenMaxProbes: fc.integer({ min: 1, max: 3 }),
  successesToClose: fc.integer({ min: 1, max: 3 }),
  rampMs: fc.constant(0),
});

describe('CircuitBreaker: random command sequences against a model', () => {
  // cockatiel's SamplingBreaker reads Date.now(): fake Date; the breaker's own timers run on the same clock.
  let fake: FakeTimers.Clock;
  let clock: Clock;
  beforeEach(() => {
    fake = FakeTimers.install({ now: T0, toFake: ['Date'] });
    clock = {
      now: () => fake.now,
      setTimeout: (cb, ms) => fake.setTimeout(cb, ms),
      clearTimeout: (h) => fake.clearTimeout(h as FakeTimers.TimerId),
    };
  });
  afterEach(() => fake.uninstall());

  it('never throws; states, edges, events, rejections and half-open slots follow the model', async () => {
    const seen = new Map<string, number>();
    const count = (k: string, n = 1) => seen.set(k, (seen.get(k) ?? 0) + n);
    await fc.assert(
      fc.asyncProperty(breakerSettings, breakerCommands, async (settings, cmds) => {
        fake.setSystemTime(T0);
        const b = new CircuitBreaker(settings, 'fuzz:5432/db', clock);
        const sys: BreakerSys = {
          settings,
          b,
          fake,
          changes: [],
          rejectedEvents: 0,
          rejectionsSeen: 0,
          pending: [],
          nextId: 0,
          state: 'closed',
          epoch: 0,
          consecutive: 0,
          round: { inFlight: 0, successes: 0 },
          nextProbeAt: undefined,
        };
        b.onStateChange((e) => sys.changes.push(e));
        b.onRejected(() => sys.rejectedEvents++);
        // A listener that throws breaks nothing.
        b.onStateChange(() => {
          throw new Error('listener bug');
        });
        try {
          await fc.asyncModelRun(() => ({ model: {}, real: sys }), cmds);
          for (const c of sys.changes) count(`${settings.mode} ${c.from}->${c.to}`);
          count('rejections', sys.rejectionsSeen);
          // Settle whatever is still running: no promise is left hanging.
          for (const call of sys.pending) call.resolve('late');
          await flush();
          assert.ok(sys.pending.every((c) => c.settled === 'resolved'));
        } finally {
          b.dispose();
        }
      }),
      { numRuns: 250 },
    );
    // Not vacuous: the runs went through every edge in both modes, and calls were rejected.
    for (const mode of ['consecutive', 'failure_rate'])
      for (const edge of ALLOWED_EDGES)
        assert.ok((seen.get(`${mode} ${edge}`) ?? 0) > 0, `${mode} ${edge}: ${[...seen]}`);
    assert.ok((seen.get('rejections') ?? 0) > 0);
  });
});

// ---- rate limiter: random arrivals, aborts and time ----

interface LimiterRun {
  readonly settings: RateLimitSettings;
  readonly steps: readonly { kind: 'arrive' | 'abort' | 'tick'; n: number; signal: boolean }[];
}

const limiterRun: fc.Arbitrary<LimiterRun> = fc.record({
  settings: fc.record({
    enabled: fc.constant(true),
    // Mostly slow enough for queues to form (and waits to expire); sometimes fast.
    ratePerMinute: fc.oneof(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 120_000 })),
    burst: fc.integer({ min: 1, max: 10 }),
    strategy: fc.constantFrom('wait' as const, 'drop' as const, 'queue' as const),
    maxQueueSize: fc.integer({ min: 0, max: 6 }),
    maxWaitMs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 3_000 })),
  }),
  steps: fc.array(
    fc.record({
      kind: fc.constantFrom(
        'arrive' as const,
        'arrive' as const,
        'arrive' as const,
        'arrive' as const,
        'abort' as const,
        'tick' as const,
        'tick' as const,
      ),
      n: fc.integer({ min: 0, max: 3_000 }),
      signal: fc.boolean(),
    }),
    { minLength: 5, maxLength: 80, size: 'medium' },
  ),
});

interface Caller {
  readonly id: number;
  readonly at: number;
  readonly controller: AbortController | undefined;
  state: 'pending' | 'granted' | 'rejected';
  reason?: string;
}

describe('RateLimiter: random arrivals, aborts and time', () => {
  it('tokens in [0, burst], grants within burst + rate × (T + 1 tick), FIFO, bounded queue, drop never waits, no wait past maxWaitMs', async () => {
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(limiterRun, async ({ settings, steps }) => {
        const { fake, clock } = fakeClock(T0, 100_000);
        const rl = new RateLimiter(settings, 'fuzz:5432/db', clock);
        const burst = Math.max(1, settings.burst);
        const grants: { at: number; waited: boolean }[] = [];
        const grantOrder: number[] = [];
        const callers: Caller[] = [];
        let lastSize = 0;
        rl.onWait(() => grants.push({ at: fake.now, waited: true }));
        rl.onQueueSize((e) => (lastSize = e.size));
        rl.onRejected(() => {
          throw new Error('listener bug'); // breaks nothing
        });

        const checkNow = (): void => {
          const tokens = rl.tokens;
          assert.ok(tokens >= 0 && tokens <= burst + 1e-9, `tokens ${tokens} of ${burst}`);
          assert.equal(
            rl.queueSize,
            callers.filter((c) => c.state === 'pending').length,
            'queue = pending callers',
          );
          assert.equal(lastSize, rl.queueSize, 'onQueueSize reports the queue');
          if (settings.strategy === 'drop') assert.equal(rl.queueSize, 0, 'drop never queues');
          if (settings.strategy === 'queue')
            assert.ok(rl.queueSize <= settings.maxQueueSize, 'bounded queue');
          if (settings.maxWaitMs > 0) {
            for (const c of callers) {
              if (c.state === 'pending')
                assert.ok(fake.now - c.at <= settings.maxWaitMs + 1, `caller ${c.id} waits past maxWaitMs`);
            }
          }
        };

        for (const step of steps) {
          if (step.kind === 'tick') {
            fake.tick(step.n);
            await flush();
          } else if (step.kind === 'abort') {
            const waiting = callers.filter((c) => c.state === 'pending' && c.controller);
            if (waiting.length > 0) {
              const c = waiting[step.n % waiting.length]!;
              c.controller!.abort();
              await flush();
              assert.equal(c.state, 'rejected');
              assert.equal(c.reason, 'aborted');
            }
          } else {
            const queuedBefore = rl.queueSize;
            const controller = step.signal ? new AbortController() : undefined;
            const caller: Caller = { id: callers.length, at: fake.now, controller, state: 'pending' };
            callers.push(caller);
            const p = rl.acquire('query', controller?.signal);
            if (p === undefined) {
              assert.equal(queuedBefore, 0, 'nobody jumps the queue');
              caller.state = 'granted';
              grants.push({ at: fake.now, waited: false });
              grantOrder.push(caller.id);
            } else {
              p.then(
                () => {
                  caller.state = 'granted';
                  grantOrder.push(caller.id);
                },
                (e: unknown) => {
                  assert.ok(isRateLimitedError(e), 'typed rejection');
                  caller.state = 'rejected';
                  caller.reason = e.reason;
                },
              );
              await flush();
              if (settings.strategy === 'drop') {
                assert.equal(caller.state, 'rejected', 'drop rejects at once, without time passing');
                assert.equal(caller.reason, 'drop');
              }
              if (caller.state === 'rejected' && settings.strategy === 'queue')
                assert.equal(caller.reason, 'queue_full');
            }
          }
          checkNow();
        }

        // Every grant window obeys the bound (a waiter's token was consumed up to one tick before its grant).
        const perMs = settings.ratePerMinute / 60_000;
        for (let i = 0; i < grants.length; i++) {
          for (let j = i; j < grants.length; j++) {
            const span = grants[j]!.at - grants[i]!.at;
            const bound = burst + perMs * (span + (grants[i]!.waited ? 1 : 0));
            assert.ok(j - i + 1 <= bound + 1e-9, `${j - i + 1} grants in ${span} ms, bound ${bound}`);
          }
        }
        assert.deepEqual(
          grantOrder,
          [...grantOrder].sort((a, b) => a - b),
          'FIFO',
        );
        assert.ok(
          callers.every((c) => c.state !== 'rejected' || c.reason !== 'max_wait' || settings.maxWaitMs > 0),
          'max_wait only with a maxWaitMs',
        );

        for (const c of callers) {
          const k = c.state === 'rejected' ? `rejected ${c.reason}` : c.state;
          seen.set(k, (seen.get(k) ?? 0) + 1);
        }
        if (grants.some((g) => g.waited)) seen.set('waited', (seen.get('waited') ?? 0) + 1);
        // dispose() lets everyone still waiting through: nothing hangs.
        rl.dispose();
        await flush();
        assert.ok(
          callers.every((c) => c.state !== 'pending'),
          'no caller left hanging',
        );
        assert.equal(rl.acquire('query'), undefined, 'disposed: unlimited');
      }),
      { numRuns: 250 },
    );
    // Not vacuous: every way a caller can end happened.
    for (const k of [
      'granted',
      'waited',
      'rejected drop',
      'rejected queue_full',
      'rejected max_wait',
      'rejected aborted',
    ])
      assert.ok((seen.get(k) ?? 0) > 0, `${k}: ${[...seen]}`);
  });
});
