import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DatabaseError } from 'pg';
import { classifyError, ERROR_CLASSES } from '../../src/classify/index.ts';
import { ERRNO_TABLE, PG_MESSAGES } from '../../src/classify/network.ts';
import { SQLSTATE_EXACT } from '../../src/classify/sqlstate.ts';
import type { ErrorClassification } from '../../src/classify/types.ts';
import { CircuitOpenError, OperationTimeoutError, RateLimitedError } from '../../src/errors.ts';

const RUNS = { numRuns: 400 };

const NEVER_TRANSIENT = new Set([
  'auth',
  'database_missing',
  'syntax_or_access',
  'integrity',
  'data',
  'statement_timeout',
  'resilience_rejection',
]);

/** The invariants every classification must satisfy, whatever the input. */
function assertValid(r: ErrorClassification): void {
  assert.equal(typeof r, 'object');
  assert.ok((ERROR_CLASSES as readonly string[]).includes(r.errorClass), `class ${r.errorClass}`);
  assert.equal(typeof r.transient, 'boolean');
  assert.equal(typeof r.countsForBreaker, 'boolean');
  assert.ok(['no', 'unknown', 'rejected'].includes(r.reachedServer), `reach ${r.reachedServer}`);
  assert.equal(typeof r.errorType, 'string');
  assert.ok(r.errorType.length > 0 && r.errorType.length <= 40, `errorType length: ${r.errorType}`);
  assert.match(
    r.errorType,
    /^[\x21-\x7e]+$/,
    `errorType must be printable ASCII without spaces: ${r.errorType}`,
  );
  if (r.transient) assert.ok(!NEVER_TRANSIENT.has(r.errorClass), `${r.errorClass} must not be transient`);
  if (r.errorClass === 'auth' || r.errorClass === 'database_missing') assert.equal(r.countsForBreaker, false);
  if (r.errorClass === 'resilience_rejection') {
    assert.equal(r.transient, false);
    assert.equal(r.countsForBreaker, false);
  }
  if (r.errorClass === 'unknown') {
    assert.equal(r.transient, false);
    assert.equal(r.countsForBreaker, false);
    assert.equal(r.reachedServer, 'unknown');
  }
  if (r.errorClass === 'pool_exhausted') assert.equal(r.countsForBreaker, false);
  assert.ok(Object.isFrozen(r));
}

// ---- arbitraries ----

const errnoCodes = [...ERRNO_TABLE.keys()];
const pgMessages = [...PG_MESSAGES.keys()];
const exactSqlStates = [...SQLSTATE_EXACT.keys()];
const sqlStateChar = fc.constantFrom(...'0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ');
const randomSqlState = fc
  .tuple(sqlStateChar, sqlStateChar, sqlStateChar, sqlStateChar, sqlStateChar)
  .map((cs) => cs.join(''));

const code = fc.oneof(
  fc.constantFrom(...errnoCodes),
  fc.constantFrom(...exactSqlStates),
  randomSqlState,
  fc.constantFrom('EACCES', 'ERR_SOCKET_CLOSED', 'PGR_CIRCUIT_OPEN', '', 'epipe', '40p01'),
  fc.string({ maxLength: 8 }),
  fc.integer(),
  fc.constant(undefined),
  fc.constant(null),
);

const message = fc.oneof(
  fc.constantFrom(...pgMessages),
  fc.string({ maxLength: 60 }),
  fc.constant(''),
  fc.integer(),
  fc.constant(undefined),
);

const severity = fc.oneof(fc.constantFrom('ERROR', 'FATAL', 'PANIC'), fc.constant(undefined), fc.integer());

const ctorName = fc.oneof(
  fc.constantFrom('Error', 'TypeError', 'QueryFailedError', '', 'has space', 'x'.repeat(41), 'é'),
  fc.string({ maxLength: 50 }),
);

/** Which properties of a built error throw when read. */
const throwingKeys = fc.subarray([
  'code',
  'message',
  'cause',
  'errors',
  'severity',
  'constructor',
  'routine',
]);

interface Shape {
  kind: 'Error' | 'DatabaseError' | 'plain' | 'nullProto' | 'named' | 'aggregate';
  code: unknown;
  message: unknown;
  severity: unknown;
  name: string;
  throwing: string[];
  proxy: boolean;
}

const shape: fc.Arbitrary<Shape> = fc.record({
  kind: fc.constantFrom('Error', 'DatabaseError', 'plain', 'nullProto', 'named', 'aggregate'),
  code,
  message,
  severity,
  name: ctorName,
  throwing: throwingKeys,
  proxy: fc.boolean(),
});

function build(s: Shape, cause: unknown, members: unknown[]): unknown {
  let e: Record<string, unknown>;
  switch (s.kind) {
    case 'Error':
      e = new Error(String(s.message)) as never;
      break;
    case 'DatabaseError':
      e = new DatabaseError(String(s.message), 0, 'error') as never;
      break;
    case 'nullProto':
      e = Object.create(null);
      break;
    case 'named': {
      const Ctor = { [s.name]: class extends Error {} }[s.name]!;
      e = new Ctor(String(s.message)) as never;
      break;
    }
    case 'aggregate':
      e = new AggregateError(members, String(s.message)) as never;
      break;
    default:
      e = {};
  }
  const fields: Record<string, unknown> = { code: s.code, severity: s.severity, cause };
  if (s.kind === 'plain' || s.kind === 'nullProto') fields.message = s.message;
  if (s.kind !== 'aggregate' && members.length > 0) fields.errors = members;
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    Object.defineProperty(e, k, { value: v, configurable: true, enumerable: true, writable: true });
  }
  for (const k of s.throwing) {
    Object.defineProperty(e, k, {
      configurable: true,
      get() {
        throw new Error(`getter ${k}`);
      },
    });
  }
  if (!s.proxy) return e;
  return new Proxy(e, {
    get(target, key, receiver) {
      if (typeof key === 'string' && s.throwing.includes(key)) throw new Error(`proxy ${key}`);
      return Reflect.get(target, key, receiver);
    },
  });
}

/** Errors with nested causes and aggregate members, a few levels deep. */
const errorTree: fc.Arbitrary<unknown> = fc.letrec<{ node: unknown }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    shape.map((s) => build(s, undefined, [])),
    fc
      .tuple(shape, tie('node'), fc.array(tie('node'), { maxLength: 3 }))
      .map(([s, cause, members]) => build(s, cause, members)),
  ),
})).node;

const ourErrors = fc.oneof(
  fc.constant(new CircuitOpenError('h:5432/db', 'open')),
  fc.constant(new RateLimitedError('h:5432/db', 'drop', 5)),
  fc.constant(new OperationTimeoutError('h:5432/db', 'query', 5)),
);

const anyInput = fc.oneof(
  fc.anything({ withBoxedValues: true, withNullPrototype: true }),
  errorTree,
  ourErrors,
);

// ---- properties ----

describe('classifyError properties', () => {
  it('never throws and always returns a valid classification', () => {
    fc.assert(
      fc.property(anyInput, (input) => {
        assertValid(classifyError(input));
      }),
      RUNS,
    );
  });

  it('is deterministic', () => {
    fc.assert(
      fc.property(anyInput, (input) => {
        assert.deepEqual(classifyError(input), classifyError(input));
      }),
      RUNS,
    );
  });

  it('cyclic cause and errors graphs terminate', () => {
    fc.assert(
      fc.property(
        fc.array(shape, { minLength: 1, maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        (shapes, links) => {
          const nodes = shapes.map((s) =>
            build({ ...s, throwing: [], proxy: false }, undefined, []),
          ) as Array<Record<string, unknown>>;
          links.forEach((to, i) => {
            const from = nodes[i % nodes.length]!;
            const target = nodes[to % nodes.length];
            if (typeof from !== 'object' || from === null) return;
            if (i % 2 === 0) Object.defineProperty(from, 'cause', { value: target, configurable: true });
            else Object.defineProperty(from, 'errors', { value: [target, from], configurable: true });
          });
          for (const n of nodes) assertValid(classifyError(n));
        },
      ),
      RUNS,
    );
  });

  it('errorType is never taken from the message', () => {
    // Two errors that differ only in a (non-pg) message get the same label.
    const notPg = fc.string({ maxLength: 60 }).filter((m) => !PG_MESSAGES.has(m));
    fc.assert(
      fc.property(shape, notPg, notPg, (s, m1, m2) => {
        const a = classifyError(build({ ...s, message: m1 }, undefined, []));
        const b = classifyError(build({ ...s, message: m2 }, undefined, []));
        assert.equal(a.errorType, b.errorType);
        if (/\s/.test(m1) || m1.length > 40) assert.notEqual(a.errorType, m1);
      }),
      RUNS,
    );
  });

  it('a DatabaseError is labelled with its SQLSTATE; a system error with its errno', () => {
    fc.assert(
      fc.property(
        fc.oneof(randomSqlState, fc.constantFrom(...exactSqlStates)),
        fc.string(),
        (sqlstate, msg) => {
          const e = Object.assign(new DatabaseError(msg, 0, 'error'), { code: sqlstate, severity: 'ERROR' });
          const r = classifyError(e);
          assertValid(r);
          assert.equal(r.errorType, sqlstate);
          assert.notEqual(r.errorClass, 'unknown');
          assert.notEqual(r.errorClass, 'resilience_rejection');
        },
      ),
      RUNS,
    );
    fc.assert(
      fc.property(fc.constantFrom(...errnoCodes), fc.string(), (errno, msg) => {
        const r = classifyError(
          Object.assign(new Error(msg), { code: errno, syscall: 'connect', errno: -1 }),
        );
        assert.equal(r.errorType, errno);
        assert.equal(r.transient, true);
        // Unreachable targets count; a lost established connection does not (the reconnect decides).
        assert.equal(r.countsForBreaker, r.errorClass !== 'connection_lost');
      }),
      RUNS,
    );
  });

  it('a recognised error keeps its class when wrapped in unrecognised errors (a few levels)', () => {
    const inner = fc.oneof(
      fc.constantFrom(...errnoCodes).map((c) => Object.assign(new Error('x'), { code: c, syscall: 'read' })),
      fc.constantFrom(...pgMessages).map((m) => new Error(m)),
      randomSqlState.map((c) =>
        Object.assign(new DatabaseError('x', 0, 'error'), { code: c, severity: 'ERROR' }),
      ),
    );
    fc.assert(
      fc.property(inner, fc.integer({ min: 1, max: 6 }), fc.boolean(), (err, depth, viaAggregate) => {
        let wrapped: unknown = err;
        for (let i = 0; i < depth; i++)
          wrapped =
            viaAggregate && i === 0
              ? new AggregateError([wrapped])
              : new Error('wrapper', { cause: wrapped });
        assert.deepEqual(classifyError(wrapped), classifyError(err));
      }),
      RUNS,
    );
  });

  it('an override can never make the result invalid or throw', () => {
    fc.assert(
      fc.property(
        anyInput,
        fc.anything({ withNullPrototype: true }),
        fc.boolean(),
        (input, patch, explode) => {
          const defaults = classifyError(input);
          const r = classifyError(input, () => {
            if (explode) throw patch;
            return patch as never;
          });
          assertValid(r);
          if (explode) assert.deepEqual(r, defaults);
        },
      ),
      RUNS,
    );
  });

  it('a valid partial override is merged field by field', () => {
    const partial = fc.record(
      {
        errorClass: fc.constantFrom(...ERROR_CLASSES),
        transient: fc.boolean(),
        reachedServer: fc.constantFrom('no' as const, 'unknown' as const, 'rejected' as const),
        countsForBreaker: fc.boolean(),
        errorType: fc.stringMatching(/^[A-Za-z0-9_]{1,40}$/),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(anyInput, partial, (input, p) => {
        const defaults = classifyError(input);
        const r = classifyError(input, () => p);
        assert.deepEqual({ ...r }, { ...defaults, ...p });
      }),
      RUNS,
    );
  });
});
