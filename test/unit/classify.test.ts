import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { DatabaseError } from 'pg';
import { classifyError, ERROR_CLASSES } from '../../src/classify/index.ts';
import { classification } from '../../src/classify/classification.ts';
import { ERRNO_TABLE, PG_MESSAGES } from '../../src/classify/network.ts';
import { SQLSTATE_CLASSES, SQLSTATE_EXACT } from '../../src/classify/sqlstate.ts';
import type { ErrorClass, ErrorClassification, ServerReach } from '../../src/classify/types.ts';
import {
  BulkheadRejectedError,
  CircuitOpenError,
  OperationTimeoutError,
  RateLimitedError,
  TransactionOutcomeUnknownError,
} from '../../src/errors.ts';

// ---- sample errors, shaped the way Node and pg raise them ----

/** A Node system error as `net` raises it. */
function systemError(code: string): Error {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), {
    code,
    errno: -111,
    syscall: 'connect',
    address: '127.0.0.1',
    port: 5432,
  });
}

/** pg's DatabaseError as the protocol parser builds it (name 'error', severity, code, routine…). */
function databaseError(code: string, severity = 'ERROR'): DatabaseError {
  const e = new DatabaseError(`server says ${code}`, 100, 'error');
  e.severity = severity;
  e.code = code;
  e.file = 'postgres.c';
  e.line = '3300';
  e.routine = 'ProcessInterrupts';
  return e;
}

const TARGET = 'db.example:5432/app';
const resilienceErrors: Record<string, () => Error> = {
  PGR_CIRCUIT_OPEN: () =>
    new CircuitOpenError(TARGET, 'open', Date.now() + 1000, systemError('ECONNREFUSED')),
  PGR_RATE_LIMITED: () => new RateLimitedError(TARGET, 'queue_full', 20),
  PGR_BULKHEAD_REJECTED: () => new BulkheadRejectedError(TARGET, 10, 0),
  'PGR_TIMEOUT:connect': () => new OperationTimeoutError(TARGET, 'connect', 500),
  'PGR_TIMEOUT:query': () => new OperationTimeoutError(TARGET, 'query', 500),
  'PGR_TIMEOUT:query:not_run': () => new OperationTimeoutError(TARGET, 'query', 500, { outcome: 'not_run' }),
  PGR_TRANSACTION_OUTCOME_UNKNOWN: () =>
    new TransactionOutcomeUnknownError(TARGET, systemError('ECONNRESET')),
};

/** The expected classification (the same constructor the tables use). */
const c = classification;

// ---- the table: one row per errno, pg message and SQLSTATE (code and class) ----

const ERRNO_ROWS: Array<[string, ErrorClassification]> = [
  ['ECONNREFUSED', c('connect_refused', true, 'no', true, 'ECONNREFUSED')],
  ['ENOTFOUND', c('connect_refused', true, 'no', true, 'ENOTFOUND')],
  ['EAI_AGAIN', c('connect_refused', true, 'no', true, 'EAI_AGAIN')],
  ['EHOSTUNREACH', c('connect_refused', true, 'no', true, 'EHOSTUNREACH')],
  ['ENETUNREACH', c('connect_refused', true, 'no', true, 'ENETUNREACH')],
  ['ECONNRESET', c('connection_lost', true, 'unknown', false, 'ECONNRESET')],
  ['EPIPE', c('connection_lost', true, 'unknown', false, 'EPIPE')],
  ['ETIMEDOUT', c('connect_timeout', true, 'unknown', true, 'ETIMEDOUT')],
];

const MESSAGE_ROWS: Array<[string, ErrorClassification]> = [
  ['Connection terminated unexpectedly', c('connection_lost', true, 'unknown', false, 'connection_lost')],
  ['Connection terminated', c('connection_lost', true, 'unknown', false, 'connection_lost')],
  ['timeout expired', c('connect_timeout', true, 'no', true, 'connect_timeout')],
  [
    'Connection terminated due to connection timeout',
    c('connect_timeout', true, 'no', true, 'connect_timeout'),
  ],
  ['timeout exceeded when trying to connect', c('pool_exhausted', false, 'no', false, 'pool_exhausted')],
  ['Query read timeout', c('query_timeout', true, 'unknown', true, 'query_timeout')],
  [
    'Client has encountered a connection error and is not queryable',
    c('client_unusable', true, 'no', false, 'client_unusable'),
  ],
];

const lost = (code: string) => c('connection_lost', true, 'unknown', false, code);
const permanent = (cls: ErrorClass, code: string) => c(cls, false, 'rejected', false, code);
const SQLSTATE_ROWS: Array<[string, ErrorClassification]> = [
  // class 08
  ['08000', lost('08000')],
  ['08003', lost('08003')],
  ['08006', lost('08006')],
  ['08007', lost('08007')],
  ['08001', c('connect_refused', true, 'no', true, '08001')],
  ['08004', c('connect_refused', true, 'no', true, '08004')],
  ['08P01', permanent('protocol', '08P01')],
  // class 57
  ['57P01', lost('57P01')],
  ['57P02', lost('57P02')],
  ['57P03', c('connect_refused', true, 'no', true, '57P03')],
  ['57P05', c('connection_lost', true, 'unknown', false, '57P05')],
  ['57014', permanent('statement_timeout', '57014')],
  ['57000', permanent('other_server_error', '57000')],
  ['57P04', permanent('other_server_error', '57P04')],
  // class 53
  ['53300', c('too_many_connections', true, 'no', false, '53300')],
  ['53000', c('insufficient_resources', true, 'rejected', true, '53000')],
  ['53100', c('insufficient_resources', true, 'rejected', true, '53100')],
  ['53200', c('insufficient_resources', true, 'rejected', true, '53200')],
  ['53400', c('insufficient_resources', true, 'rejected', true, '53400')],
  // concurrency
  ['40001', c('serialization_failure', true, 'rejected', false, '40001')],
  ['40P01', c('deadlock', true, 'rejected', false, '40P01')],
  ['55P03', c('lock_not_available', true, 'rejected', false, '55P03')],
  ['40000', permanent('other_server_error', '40000')],
  ['55000', permanent('other_server_error', '55000')],
  // class 25
  ['25P02', permanent('transaction_state', '25P02')],
  ['25006', c('transaction_state', true, 'rejected', false, '25006')],
  ['25001', permanent('transaction_state', '25001')],
  ['25000', permanent('transaction_state', '25000')],
  ['25P03', c('connection_lost', true, 'unknown', false, '25P03')],
  // auth, database
  ['28P01', permanent('auth', '28P01')],
  ['28000', permanent('auth', '28000')],
  ['3D000', permanent('database_missing', '3D000')],
  ['3F000', permanent('other_server_error', '3F000')],
  // query, data
  ['42601', permanent('syntax_or_access', '42601')],
  ['42P01', permanent('syntax_or_access', '42P01')],
  ['42501', permanent('syntax_or_access', '42501')],
  ['23505', permanent('integrity', '23505')],
  ['23503', permanent('integrity', '23503')],
  ['22012', permanent('data', '22012')],
  ['22P02', permanent('data', '22P02')],
  // anything else
  ['XX000', permanent('other_server_error', 'XX000')],
  ['P0001', permanent('other_server_error', 'P0001')],
  ['0A000', permanent('other_server_error', '0A000')],
];

describe('classifyError: Node system errors', () => {
  for (const [code, expected] of ERRNO_ROWS) {
    it(`errno ${code}`, () => assert.deepEqual({ ...classifyError(systemError(code)) }, expected));
  }

  it('recognises the errno on a bare { code } too (e.g. copied by a wrapper)', () => {
    assert.deepEqual({ ...classifyError({ code: 'ECONNRESET' }) }, ERRNO_ROWS[5]![1]);
  });

  it('EPIPE is five upper-case letters but not a SQLSTATE: a system error stays a system error', () => {
    assert.equal(classifyError(systemError('EPIPE')).errorType, 'EPIPE');
    assert.equal(classifyError(systemError('EPIPE')).errorClass, 'connection_lost');
  });

  it('an unknown errno is unknown, labelled by constructor', () => {
    assert.deepEqual(
      { ...classifyError(systemError('EACCES')) },
      c('unknown', false, 'unknown', false, 'Error'),
    );
  });
});

describe('classifyError: pg message-only errors', () => {
  for (const [message, expected] of MESSAGE_ROWS) {
    it(`"${message}"`, () => assert.deepEqual({ ...classifyError(new Error(message)) }, expected));
  }

  it('matches messages exactly (a longer or different message is not pg’s)', () => {
    assert.equal(classifyError(new Error('Connection terminated unexpectedly!')).errorClass, 'unknown');
    assert.equal(classifyError(new Error('connection terminated unexpectedly')).errorClass, 'unknown');
    assert.equal(classifyError(new Error('Client was closed and is not queryable')).errorClass, 'unknown');
  });

  it('pg-pool’s connection timeout wraps the client’s error as cause: the outer message decides', () => {
    const err = new Error('Connection terminated due to connection timeout', {
      cause: new Error('Connection terminated unexpectedly'),
    });
    assert.deepEqual({ ...classifyError(err) }, MESSAGE_ROWS[3]![1]);
  });
});

describe('classifyError: SQLSTATEs', () => {
  for (const [code, expected] of SQLSTATE_ROWS) {
    it(`SQLSTATE ${code}`, () => assert.deepEqual({ ...classifyError(databaseError(code)) }, expected));
  }

  it('FATAL errors classify like ERROR ones (severity does not matter, only its presence)', () => {
    assert.deepEqual({ ...classifyError(databaseError('57P01', 'FATAL')) }, lost('57P01'));
  });

  it('a pg-native-shaped error (plain Error with severity and code) is a server error', () => {
    const e = Object.assign(new Error('deadlock detected'), { severity: 'ERROR', code: '40P01' });
    assert.equal(classifyError(e).errorClass, 'deadlock');
  });

  it('a SQLSTATE-looking code without DatabaseError fields is not trusted', () => {
    assert.deepEqual(
      { ...classifyError({ code: '40001' }) },
      c('unknown', false, 'unknown', false, 'Object'),
    );
    assert.equal(classifyError(Object.assign(new Error('x'), { code: '40001' })).errorClass, 'unknown');
  });

  it('codes that are not five [0-9A-Z] characters are not SQLSTATEs', () => {
    for (const code of ['4000', '400011', '40p01', '40-01', ''])
      assert.equal(
        classifyError(Object.assign(new Error('x'), { code, severity: 'ERROR' })).errorClass,
        'unknown',
      );
  });
});

describe('classifyError: wrappers (AggregateError, cause)', () => {
  it('AggregateError with the code on the aggregate', () => {
    const agg = Object.assign(new AggregateError([systemError('ECONNREFUSED')], ''), {
      code: 'ECONNREFUSED',
    });
    assert.deepEqual({ ...classifyError(agg) }, ERRNO_ROWS[0]![1]);
  });

  it('AggregateError with the code only on its members', () => {
    const agg = new AggregateError([
      new Error('noise'),
      systemError('ETIMEDOUT'),
      systemError('ECONNREFUSED'),
    ]);
    assert.deepEqual({ ...classifyError(agg) }, ERRNO_ROWS[7]![1]);
  });

  it('the real AggregateError from Node’s happy-eyeballs connect', async () => {
    const err = await new Promise<unknown>((resolve) => {
      const socket = connect({
        host: 'dual-stack.invalid',
        port: 1,
        autoSelectFamily: true,
        lookup: (_h, _o, cb) =>
          (cb as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [
            { address: '127.0.0.1', family: 4 },
            { address: '::1', family: 6 },
          ]),
      });
      socket.on('error', resolve);
    });
    assert.ok(err instanceof AggregateError, String(err));
    assert.deepEqual({ ...classifyError(err) }, ERRNO_ROWS[0]![1]);
  });

  it('looks through cause when the outer error is unrecognised', () => {
    const wrapped = new Error('query failed', {
      cause: new Error('other', { cause: databaseError('40001') }),
    });
    assert.deepEqual(
      { ...classifyError(wrapped) },
      c('serialization_failure', true, 'rejected', false, '40001'),
    );
  });

  it('a recognised outer error wins over its cause', () => {
    const e = Object.assign(new Error('Query read timeout'), { cause: systemError('ECONNREFUSED') });
    assert.equal(classifyError(e).errorClass, 'query_timeout');
  });

  it('stops at a bounded depth', () => {
    let e: unknown = systemError('ECONNRESET');
    for (let i = 0; i < 50; i++) e = new Error(`layer ${i}`, { cause: e });
    assert.deepEqual({ ...classifyError(e) }, c('unknown', false, 'unknown', false, 'Error'));
    let shallow: unknown = systemError('ECONNRESET');
    for (let i = 0; i < 3; i++) shallow = new Error(`layer ${i}`, { cause: shallow });
    assert.equal(classifyError(shallow).errorClass, 'connection_lost');
  });

  it('cyclic cause chains and self-referencing aggregates terminate', () => {
    const a = new Error('a') as Error & { cause?: unknown };
    const b = new Error('b', { cause: a });
    a.cause = b;
    assert.equal(classifyError(a).errorClass, 'unknown');
    const self = new AggregateError([]) as AggregateError & { errors: unknown[] };
    self.errors = [self, self, self, self, self, self, self, self];
    const started = performance.now();
    assert.equal(classifyError(self).errorClass, 'unknown');
    assert.ok(performance.now() - started < 50);
  });
});

describe('classifyError: this package’s errors', () => {
  for (const [code, make] of Object.entries(resilienceErrors)) {
    if (code.startsWith('PGR_TIMEOUT')) continue; // timeouts are health signals: next test
    it(code, () => {
      const r = classifyError(make());
      assert.equal(r.errorClass, 'resilience_rejection');
      assert.equal(r.transient, false);
      assert.equal(r.countsForBreaker, false);
      assert.equal(r.errorType, code);
    });
  }

  it("its timeouts classify like pg's: a connect timeout sent nothing, a statement timeout has an unknown outcome", () => {
    assert.deepEqual(
      { ...classifyError(resilienceErrors['PGR_TIMEOUT:connect']!()) },
      c('connect_timeout', true, 'no', true, 'PGR_TIMEOUT'),
    );
    assert.deepEqual(
      { ...classifyError(new OperationTimeoutError(TARGET, 'probe', 100)) },
      c('connect_timeout', true, 'no', true, 'PGR_TIMEOUT'),
    );
    for (const op of ['query', 'transaction'] as const) {
      assert.deepEqual(
        { ...classifyError(new OperationTimeoutError(TARGET, op, 100)) },
        c('query_timeout', true, 'unknown', true, 'PGR_TIMEOUT'),
      );
    }
  });

  it('a statement timeout the server cancelled (outcome not_run) classifies like 57014: rejected, not retried, not counted', () => {
    const cancelled = new OperationTimeoutError(TARGET, 'query', 100, { outcome: 'not_run' });
    assert.equal(cancelled.cancelled, true);
    assert.match(cancelled.message, /cancelled on the server: the statement did not run/);
    assert.deepEqual(
      { ...classifyError(cancelled) },
      c('statement_timeout', false, 'rejected', false, 'PGR_TIMEOUT'),
    );
    const unknown = new OperationTimeoutError(TARGET, 'query', 100, {
      outcome: 'unknown',
      detail: 'no answer',
    });
    assert.equal(unknown.cancelled, false);
    assert.deepEqual({ ...classifyError(unknown) }, c('query_timeout', true, 'unknown', true, 'PGR_TIMEOUT'));
  });

  it('is resilience_rejection even when its cause is a transient network error', () => {
    assert.equal(classifyError(resilienceErrors.PGR_CIRCUIT_OPEN!()).errorClass, 'resilience_rejection');
  });

  it('recognised by brand, across copies (no instanceof)', () => {
    const foreign = Object.assign(new Error('from the other build'), { code: 'PGR_RATE_LIMITED' });
    Object.defineProperty(foreign, Symbol.for('pg-resilience.error'), { value: true });
    assert.equal(classifyError(foreign).errorType, 'PGR_RATE_LIMITED');
    const odd = Object.assign(new Error('x'), { code: 'PGR_SOMETHING_NEW' });
    Object.defineProperty(odd, Symbol.for('pg-resilience.error'), { value: true });
    assert.deepEqual(
      { ...classifyError(odd) },
      c('resilience_rejection', false, 'unknown', false, 'resilience_rejection'),
    );
  });
});

describe('classifyError: unknown shapes never throw', () => {
  const UNKNOWN = c('unknown', false, 'unknown', false, 'unknown');
  const cases: Array<[string, unknown, string]> = [
    ['undefined', undefined, 'unknown'],
    ['null', null, 'unknown'],
    ['a string', 'Connection terminated unexpectedly', 'unknown'],
    ['a number', 42, 'unknown'],
    ['a symbol', Symbol('x'), 'unknown'],
    ['a bigint', 10n, 'unknown'],
    ['a function', () => {}, 'unknown'],
    ['a TypeError', new TypeError('Client was passed a null or undefined query'), 'TypeError'],
    ['a RangeError', new RangeError('x'), 'RangeError'],
    ['a plain object', { message: 'hello' }, 'Object'],
    ['a null-prototype object', Object.create(null), 'unknown'],
    ['an array', [1, 2], 'Array'],
    ['an anonymous class', new (class extends Error {})(), 'unknown'],
    [
      'a class with a 41-character name',
      new { ['A'.repeat(41)]: class extends Error {} }['A'.repeat(41)]!(),
      'unknown',
    ],
    [
      'a class with a 40-character name',
      new { ['B'.repeat(40)]: class extends Error {} }['B'.repeat(40)]!(),
      'B'.repeat(40),
    ],
    [
      'a constructor name with spaces',
      Object.create({ constructor: Object.defineProperty(() => {}, 'name', { value: 'has space' }) }),
      'unknown',
    ],
    ['a constructor that is not a function', Object.create({ constructor: { name: 'Fake' } }), 'unknown'],
  ];
  for (const [name, value, errorType] of cases) {
    it(name, () => assert.deepEqual({ ...classifyError(value) }, { ...UNKNOWN, errorType }));
  }

  it('getters that throw', () => {
    const e = new Error('x');
    for (const key of ['code', 'message', 'cause', 'errors', 'severity', 'constructor'])
      Object.defineProperty(e, key, {
        get() {
          throw new Error(`boom ${key}`);
        },
      });
    assert.deepEqual({ ...classifyError(e) }, UNKNOWN);
  });

  it('a severity getter that throws after a SQLSTATE code', () => {
    const e = Object.defineProperty({ code: '40001' }, 'severity', {
      get() {
        throw new Error('boom');
      },
    });
    assert.equal(classifyError(e).errorClass, 'unknown');
  });

  it('proxies that throw on every trap, and revoked proxies', () => {
    const hostile = new Proxy(
      {},
      {
        get() {
          throw new Error('get');
        },
        has() {
          throw new Error('has');
        },
        getPrototypeOf() {
          throw new Error('proto');
        },
        ownKeys() {
          throw new Error('keys');
        },
      },
    );
    assert.deepEqual({ ...classifyError(hostile) }, UNKNOWN);
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    assert.deepEqual({ ...classifyError(proxy) }, UNKNOWN);
    const withRevokedErrors = { errors: proxy };
    assert.equal(classifyError(withRevokedErrors).errorClass, 'unknown');
  });

  it('returns frozen objects', () => {
    for (const v of [systemError('EPIPE'), databaseError('40001'), new Error('timeout expired'), null, {}]) {
      assert.ok(Object.isFrozen(classifyError(v)));
    }
  });
});

describe('classifyError: override', () => {
  const err = databaseError('57014');
  const defaults = classifyError(err);

  it('receives the error and the default classification; a partial is merged', () => {
    let seen: unknown[] = [];
    const r = classifyError(err, (e, d) => {
      seen = [e, d];
      return { transient: true, errorClass: 'query_timeout' };
    });
    assert.equal(seen[0], err);
    assert.deepEqual(seen[1], defaults);
    assert.deepEqual({ ...r }, { ...defaults, transient: true, errorClass: 'query_timeout' });
    assert.ok(Object.isFrozen(r));
  });

  it('undefined keeps the defaults', () => {
    assert.deepEqual(
      classifyError(err, () => undefined),
      defaults,
    );
  });

  it('can relabel error.type and reachedServer', () => {
    const r = classifyError(new Error('custom'), () => ({ errorType: 'MY_ERROR', reachedServer: 'no' }));
    assert.equal(r.errorType, 'MY_ERROR');
    assert.equal(r.reachedServer, 'no');
  });

  it('a hook that throws is ignored', () => {
    assert.deepEqual(
      classifyError(err, () => {
        throw new Error('hook bug');
      }),
      defaults,
    );
  });

  const garbage: Array<[string, unknown]> = [
    ['null', null],
    ['a number', 1],
    ['a string', 'transient'],
    ['an array', [true]],
    ['an unknown class', { errorClass: 'nope' }],
    ['a non-boolean transient', { transient: 'yes' }],
    ['a non-boolean countsForBreaker', { countsForBreaker: 1 }],
    ['an unknown reachedServer', { reachedServer: 'maybe' }],
    ['an errorType with spaces', { errorType: 'has spaces' }],
    ['an empty errorType', { errorType: '' }],
    ['a 41-character errorType', { errorType: 'x'.repeat(41) }],
    ['a non-ASCII errorType', { errorType: 'été' }],
    ['a non-string errorType', { errorType: 42 }],
    ['one valid and one invalid field', { transient: true, errorClass: 'nope' }],
    [
      'a getter that throws',
      Object.defineProperty({}, 'transient', {
        get() {
          throw new Error('boom');
        },
        enumerable: true,
      }),
    ],
  ];
  for (const [name, value] of garbage) {
    it(`ignores ${name}`, () =>
      assert.deepEqual(
        classifyError(err, () => value as never),
        defaults,
      ));
  }

  it('ignores an async hook, and its rejection does not go unhandled', async () => {
    let unhandled = false;
    const onUnhandled = () => {
      unhandled = true;
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      const r = classifyError(err, (async () => {
        throw new Error('async hook');
      }) as never);
      assert.deepEqual(r, defaults);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(unhandled, false);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('ignores an override that is not a function', () => {
    assert.deepEqual(classifyError(err, 'nope' as never), defaults);
  });
});

// ---- docs/error-classification.md stays in sync with the code ----

interface DocRow {
  kind: string;
  token: string;
  errorClass: string;
  transient: string;
  reachedServer: string;
  counts: string;
  errorType: string;
}

function docRows(): DocRow[] {
  const text = readFileSync(new URL('../../docs/error-classification.md', import.meta.url), 'utf8');
  const rows: DocRow[] = [];
  for (const line of text.split('\n')) {
    // Cells are trimmed: the formatter pads the table's columns.
    if (!line.startsWith('|')) continue;
    const cells = line
      .split('|')
      .slice(1, -1)
      .map((cell) => cell.trim());
    const m = /^(errno|message|SQLSTATE|pg-resilience|other) `([^`]+)`$/.exec(cells[0] ?? '');
    if (!m) continue;
    const [errorClass, transient, reached, counts, errorType] = cells
      .slice(1)
      .map((cell) => cell.replace(/^`|`$/g, ''));
    rows.push({
      kind: m[1]!,
      token: m[2]!,
      errorClass: errorClass!,
      transient: transient!,
      reachedServer: reached!,
      counts: counts!,
      errorType: errorType!,
    });
  }
  return rows;
}

/** `08xxx` → `08000`: a code of that class that has no exact row of its own. */
const sampleCode = (token: string) => token.replace(/x/g, '0');

function sampleError(row: DocRow): unknown {
  switch (row.kind) {
    case 'errno':
      return systemError(row.token);
    case 'message':
      return new Error(row.token);
    case 'SQLSTATE':
      return databaseError(sampleCode(row.token));
    case 'pg-resilience': {
      const make = resilienceErrors[row.token];
      assert.ok(make, `no sample for ${row.token}`);
      return make();
    }
    default: {
      const Ctor = (globalThis as Record<string, unknown>)[row.token] as new (m: string) => unknown;
      assert.equal(typeof Ctor, 'function', `no global constructor ${row.token}`);
      return new Ctor('some message');
    }
  }
}

describe('docs/error-classification.md', () => {
  const rows = docRows();

  it('has a row per table entry', () => assert.ok(rows.length >= 40, `parsed ${rows.length} rows`));

  for (const row of rows) {
    it(`row ${row.kind} ${row.token} matches classifyError`, () => {
      const yesNo = (s: string) => {
        assert.ok(s === 'yes' || s === 'no', `yes/no expected, got ${s}`);
        return s === 'yes';
      };
      const expected = c(
        row.errorClass as ErrorClass,
        yesNo(row.transient),
        row.reachedServer as ServerReach,
        yesNo(row.counts),
        row.kind === 'SQLSTATE' ? sampleCode(row.errorType) : row.errorType,
      );
      assert.ok((ERROR_CLASSES as readonly string[]).includes(row.errorClass));
      if (row.kind === 'SQLSTATE' && row.token.includes('x'))
        assert.ok(!SQLSTATE_EXACT.has(sampleCode(row.token)), `${sampleCode(row.token)} has an exact row`);
      assert.deepEqual({ ...classifyError(sampleError(row)) }, expected);
    });
  }

  it('documents every errno, message, SQLSTATE and SQLSTATE class the code knows', () => {
    const documented = new Set(rows.map((r) => `${r.kind}:${r.token}`));
    const missing: string[] = [];
    for (const k of ERRNO_TABLE.keys()) if (!documented.has(`errno:${k}`)) missing.push(k);
    for (const k of PG_MESSAGES.keys()) if (!documented.has(`message:${k}`)) missing.push(k);
    for (const k of SQLSTATE_EXACT.keys()) if (!documented.has(`SQLSTATE:${k}`)) missing.push(k);
    for (const k of SQLSTATE_CLASSES.keys()) if (!documented.has(`SQLSTATE:${k}xxx`)) missing.push(`${k}xxx`);
    for (const k of Object.keys(resilienceErrors)) if (!documented.has(`pg-resilience:${k}`)) missing.push(k);
    assert.deepEqual(missing, []);
  });

  it('and this test covers every row of the code’s tables', () => {
    const tested = new Set([...ERRNO_ROWS, ...MESSAGE_ROWS, ...SQLSTATE_ROWS].map(([k]) => k));
    for (const k of [...ERRNO_TABLE.keys(), ...PG_MESSAGES.keys(), ...SQLSTATE_EXACT.keys()])
      assert.ok(tested.has(k), `no test row for ${k}`);
  });
});
