import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { seededRandom } from '../support/fault-proxy.ts';
import {
  IDEMPOTENT,
  idempotent,
  isMarkedIdempotent,
  isReadOnlyStatement,
  isSingleStatement,
  READ_ONLY_FUNCTIONS,
  stripSql,
} from '../../src/safety/index.ts';

// ---- stripSql ----

const STRIP_ROWS: Array<[string, string, string]> = [
  ['plain text is unchanged', 'SELECT a, b FROM t WHERE id = $1', 'SELECT a, b FROM t WHERE id = $1'],
  ['string contents are blanked', "SELECT 'abc'", "SELECT ''"],
  ["'' escapes stay inside the string", "SELECT 'it''s; here'", "SELECT ''"],
  ['E strings: backslash escapes', "SELECT E'a\\'b;c' FROM t", "SELECT E'' FROM t"],
  ['E strings: an escaped backslash ends nothing', "SELECT E'\\\\';'", "SELECT E'';''"],
  ['E strings continue across a newline', "SELECT E'a'\n  '\\' ;' FROM t", "SELECT E'' FROM t"],
  ['quoted identifiers are blanked', 'SELECT "we""ird;" FROM t', 'SELECT "" FROM t'],
  ['$$ bodies are blanked', 'SELECT $$;DELETE$$', "SELECT ''"],
  ['$tag$ bodies end at the same tag', "SELECT $f$ $$ ; 'x $f$, 1", "SELECT '', 1"],
  ['$ inside a name is not a dollar quote', 'SELECT a$b$ FROM t', 'SELECT a$b$ FROM t'],
  ['$1 is a parameter', 'SELECT $1, $2', 'SELECT $1, $2'],
  ['-- comments end at the line end', 'SELECT 1 -- x;y\nFROM t', 'SELECT 1  \nFROM t'],
  ['-- comments end at a carriage return too', 'SELECT 1 -- x\rFROM t', 'SELECT 1  \rFROM t'],
  ['block comments nest', 'SELECT /* a /* b; */ c; */ 1', 'SELECT   1'],
  ['a quote inside a comment is not a string', "SELECT /* ' */ 1 -- '\n", 'SELECT   1  \n'],
  ['unterminated string swallows the rest', "SELECT 'abc; DELETE", "SELECT ''"],
  ['unterminated quoted identifier swallows the rest', 'SELECT "abc; DELETE', 'SELECT ""'],
  ['unterminated dollar quote swallows the rest', 'SELECT $x$ abc; DELETE', "SELECT ''"],
  ['unterminated comment swallows the rest', 'SELECT 1 /* abc; /* */ DELETE', 'SELECT 1  '],
  ['empty', '', ''],
];

describe('stripSql', () => {
  for (const [name, input, expected] of STRIP_ROWS) {
    it(name, () => assert.equal(stripSql(input), expected));
  }
});

// ---- isSingleStatement ----

const SINGLE_ROWS: Array<[string, boolean]> = [
  ['SELECT 1', true],
  ['SELECT 1;', true],
  ['SELECT 1 ;; \n\t', true],
  ["SELECT 'a;b'", true],
  ['SELECT "a;b"', true],
  ['SELECT $$a;b$$', true],
  ['SELECT 1 -- ;\n', true],
  ['SELECT /* ; /* ; */ ; */ 1', true],
  ["SELECT E'\\';'", true],
  ["SELECT E'\\\\';'", false],
  ['SELECT 1; SELECT 2', false],
  ['SELECT 1; SELECT 2;', false],
  ['; SELECT 1', false],
  ['', false],
  ['   ', false],
  [';', false],
  [' ; ; ', false],
  ['/* only a comment */', false],
  ['-- only a comment', false],
];

describe('isSingleStatement (of stripSql)', () => {
  for (const [text, expected] of SINGLE_ROWS) {
    it(`${JSON.stringify(text)} → ${expected}`, () =>
      assert.equal(isSingleStatement(stripSql(text)), expected));
  }
});

// ---- isReadOnlyStatement ----

const READ_ONLY: string[] = [
  'SELECT 1',
  'select count(*) from t where id = $1',
  "SELECT * FROM orders WHERE status IN ('a','b') ORDER BY id LIMIT 10",
  'WITH x AS (SELECT 1) SELECT * FROM x',
  'SELECT now()',
  'select 1;',
  'select 1 ;; ',
  '-- fetch one\nSELECT 1',
  '/* leading /* nested */ comment */ SELECT 1',
  "SELECT 'INSERT INTO x'",
  'SELECT "update" FROM t',
  'SELECT $$;DELETE$$',
  'SELECT $body$ nextval(1) $body$',
  "SELECT E'it\\'s; DELETE' FROM t",
  'SELECT 1.5::numeric(10,2), CAST(x AS numeric(10, 2)) FROM t',
  "SELECT 'x'::varchar(20), 'y'::char(3), now()::timestamp(3), '1'::time(3), 'a'::character varying(5)",
  'SHOW search_path',
  'show all',
  'TABLE t',
  'VALUES (1),(2)',
  '(SELECT 1) UNION (SELECT 2)',
  'SELECT * FROM t WHERE id = ANY($1) AND NOT EXISTS (SELECT 1 FROM u WHERE u.id = t.id)',
  'SELECT a FROM t WHERE (a, b) > ($1, $2) OR a BETWEEN (1) AND (2)',
  'SELECT DISTINCT ON (a) a, b FROM t ORDER BY (a), b',
  'SELECT * FROM a JOIN b USING (id) LEFT JOIN (SELECT 1 AS id) c ON (c.id = a.id)',
  'SELECT * FROM a, LATERAL (SELECT 1) l',
  'SELECT ROW(1, 2), ARRAY(SELECT 1), ARRAY[1, 2]',
  'SELECT CASE WHEN (a > 1) THEN (1) ELSE (2) END FROM t',
  'SELECT count(*) FILTER (WHERE x > 1) OVER (PARTITION BY a ORDER BY b) FROM t',
  'SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t',
  'SELECT row_number() OVER (ORDER BY id), lag(x) OVER w FROM t WINDOW w AS (ORDER BY id)',
  'SELECT a FROM t GROUP BY (a) HAVING (count(*) > 1) LIMIT (10) OFFSET (5)',
  'SELECT 1 UNION ALL (SELECT 2) EXCEPT (SELECT 3) INTERSECT (SELECT 4)',
  "SELECT x FROM t WHERE name LIKE ('a%') AND name NOT ILIKE ('b%')",
  'SELECT pg_catalog.count(*) FROM t',
  'SELECT COUNT (*) FROM T',
  "SELECT coalesce(a, 0), greatest(1, 2), lower(trim(both ' ' from s)), substring(s from 1 for 2) FROM t",
  "SELECT extract(epoch from now()), date_trunc('day', now()), to_char(now(), 'YYYY')",
  "SELECT jsonb_set(doc, '{a}', '1'), jsonb_build_object('k', v), json_agg(t) FROM t",
  'SELECT * FROM generate_series(1, 3) AS g(n)',
  'SELECT * FROM unnest($1::int[]) WITH ORDINALITY AS u(x, i)',
  'WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM t WHERE n < 100) SELECT sum(n) FROM t',
  'WITH a(x) AS MATERIALIZED (SELECT 1), b(y, z) AS NOT MATERIALIZED (SELECT 2, 3) SELECT * FROM a, b',
  'SELECT version(), current_setting($1), pg_backend_pid(), gen_random_uuid(), random()',
  'SELECT * FROM t FOR SOMETHING',
  'SELECT x FROM t WHERE a IS NULL AND b IS NOT DISTINCT FROM (1)',
];

const NOT_READ_ONLY: Array<[string, string]> = [
  ['INSERT INTO t VALUES (1)', 'a write'],
  ['UPDATE t SET a = 1', 'a write'],
  ['DELETE FROM t', 'a write'],
  ['MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE', 'a write'],
  ['TRUNCATE t', 'a write'],
  ['select 1; delete from t', 'two statements'],
  ['SELECT 1; SELECT 2', 'two statements'],
  ['SELECT my_func(1)', 'an unknown function'],
  ['SELECT public.do_things()', 'a qualified unknown function'],
  ['SELECT myschema.count(*) FROM t', 'an allowlisted name in another schema'],
  ['SELECT a.pg_catalog.count(*) FROM t', 'a three-part name'],
  ['SELECT pg_catalog.my_func()', 'pg_catalog but not allowlisted'],
  ['SELECT "count"(1)', 'a quoted function name'],
  ['SELECT "my func" (1)', 'a quoted function name'],
  ["SELECT nextval('s')", 'a sequence'],
  ["SELECT setval('s', 1)", 'a sequence'],
  ['SELECT * INTO t2 FROM t', 'SELECT INTO creates a table'],
  ['SELECT * FROM t FOR UPDATE', 'a row lock'],
  ['SELECT * FROM t FOR NO KEY UPDATE', 'a row lock'],
  ['SELECT * FROM t FOR SHARE', 'a row lock'],
  ['select * from t for key share skip locked', 'a row lock'],
  ['WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d', 'a data-modifying WITH'],
  ['WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT 1', 'a data-modifying WITH'],
  ['select pg_terminate_backend(1)', 'a function with side effects'],
  ['SELECT pg_advisory_lock(1)', 'a function with side effects'],
  ["SELECT set_config('a', 'b', false)", 'a function with side effects'],
  ['SELECT txid_current()', 'a function with side effects'],
  ['', 'empty'],
  ['   \n\t', 'whitespace only'],
  [';', 'no statement'],
  ['-- just a comment', 'no statement'],
  ['BEGIN', 'not a query'],
  ['COMMIT', 'not a query'],
  ['/* unterminated', 'no statement'],
  ['SET x = 1', 'SET'],
  ['COPY t TO STDOUT', 'COPY'],
  ['CALL p()', 'CALL'],
  ['DO $$ BEGIN END $$', 'DO'],
  ['LOCK TABLE t', 'LOCK'],
  ['EXPLAIN SELECT 1', 'not in the first-word list'],
  ['LISTEN ch', 'not in the first-word list'],
  ['CREATE TABLE t AS SELECT 1', 'not in the first-word list'],
  ['SELECT copy FROM t', 'a forbidden word, even as a column name'],
  ['SELECT 1 -- hidden\rDELETE FROM t', 'a carriage return ends a -- comment'],
  ["SELECT 'a\\' , '; DELETE FROM t; --'", 'a backslash in a plain string is ambiguous'],
  ["SELECT E'a'\n'\\' , ' ; DELETE FROM t; --'", 'an E string continuation'],
  ['SELECT filter(1)', 'FILTER not after )'],
  ['SELECT over(1)', 'OVER not after )'],
  ['SELECT join(1)', 'JOIN not after an operand'],
  ['SELECT 1, like(2)', 'LIKE not after an operand'],
  ['SELECT by(1)', 'BY not after ORDER/GROUP/PARTITION'],
  ['SELECT * FROM generate_series(1, 3) g(n)', 'an alias column list without AS (not recognised)'],
  ['SELECT x::mytype(3) FROM t', 'an unknown type modifier'],
  ['SELECT a FROM t, my_srf(1) AS s', 'an unknown function after a comma'],
  ['SELECT 1 FROM t WHERE x = 1 + evil()', 'an unknown function in an expression'],
  ['SELECT $$ x $$, evil()', 'an unknown function after a dollar quote'],
  ['SELECT a$b$, evil() FROM t -- $b$', '$ inside a name is not a dollar quote'],
  ['SELECT 1into t', 'a word right after a number'],
  ["VALUES (nextval('s'))", 'a sequence'],
  ['TABLE t; DELETE FROM t', 'two statements'],
];

describe('isReadOnlyStatement: true', () => {
  for (const text of READ_ONLY) {
    it(JSON.stringify(text), () => assert.equal(isReadOnlyStatement(text), true));
  }
});

describe('isReadOnlyStatement: false', () => {
  for (const [text, why] of NOT_READ_ONLY) {
    it(`${JSON.stringify(text)} (${why})`, () => assert.equal(isReadOnlyStatement(text), false));
  }
  it('a non-string from a JavaScript caller', () => {
    for (const v of [undefined, null, 1, {}, ['SELECT 1']])
      assert.equal(isReadOnlyStatement(v as never), false);
  });
});

describe('READ_ONLY_FUNCTIONS', () => {
  it('is lower case and holds no function with side effects', () => {
    for (const name of READ_ONLY_FUNCTIONS) assert.equal(name, name.toLowerCase());
    for (const name of ['nextval', 'setval', 'pg_terminate_backend', 'set_config', 'pg_advisory_lock']) {
      assert.equal(READ_ONLY_FUNCTIONS.has(name), false, name);
    }
  });
  it('every allowlisted function is accepted unqualified and as pg_catalog.<name>', () => {
    for (const name of READ_ONLY_FUNCTIONS) {
      assert.equal(isReadOnlyStatement(`SELECT ${name}(x) FROM t`), true, name);
      assert.equal(isReadOnlyStatement(`SELECT pg_catalog.${name}(x) FROM t`), true, name);
    }
  });
});

// ---- idempotent / isMarkedIdempotent ----

describe('idempotent', () => {
  it('turns a text into a marked query config', () => {
    const q = idempotent('DELETE FROM sessions WHERE expires_at < now()');
    assert.equal(q.text, 'DELETE FROM sessions WHERE expires_at < now()');
    assert.equal((q as Record<symbol, unknown>)[IDEMPOTENT], true);
    assert.equal(isMarkedIdempotent(q), true);
  });

  it('copies a config object: keeps its fields and prototype, does not change the input', () => {
    class QueryConfigLike {
      text = 'UPDATE accounts SET plan = $1 WHERE id = $2';
      describe(): string {
        return `query: ${this.text}`;
      }
    }
    const input = Object.assign(new QueryConfigLike(), {
      values: ['pro', 7],
      name: 'set-plan',
      rowMode: 'array',
    });
    Object.defineProperty(input, 'hidden', { value: 42, enumerable: false });
    const marked = idempotent(input);
    assert.notEqual(marked, input);
    assert.equal(Object.getPrototypeOf(marked), QueryConfigLike.prototype);
    assert.equal(marked.text, input.text);
    assert.deepEqual(marked.values, ['pro', 7]);
    assert.equal(marked.values, input.values, 'shallow');
    assert.equal(marked.name, 'set-plan');
    assert.equal(marked.rowMode, 'array');
    assert.equal(marked.describe(), `query: ${input.text}`);
    assert.deepEqual(Object.getOwnPropertyDescriptor(marked, 'hidden'), {
      value: 42,
      enumerable: false,
      writable: false,
      configurable: false,
    });
    assert.equal(isMarkedIdempotent(marked), true);
    assert.equal(isMarkedIdempotent(input), false);
    assert.equal(Object.getOwnPropertySymbols(input).length, 0);
  });

  it('the mark survives an object spread', () => {
    const marked = idempotent({ text: 'SELECT 1' });
    assert.equal(isMarkedIdempotent({ ...marked }), true);
  });

  it('marks a config that carries a non-writable false mark', () => {
    const input = { text: 'SELECT 1' };
    Object.defineProperty(input, IDEMPOTENT, { value: false, enumerable: true });
    assert.equal(isMarkedIdempotent(idempotent(input)), true);
    assert.equal(isMarkedIdempotent(input), false);
  });

  it('returns a Submittable unchanged and never counts it as marked', () => {
    const cursor = { text: 'SELECT * FROM big', submit: () => undefined };
    const result = idempotent(cursor);
    assert.equal(result, cursor);
    assert.equal(Object.getOwnPropertySymbols(cursor).length, 0);
    assert.equal(isMarkedIdempotent(cursor), false);
    assert.equal(isMarkedIdempotent(Object.assign(cursor, { [IDEMPOTENT]: true, idempotent: true })), false);
  });

  it('uses the registered symbol (two copies of the package agree)', () => {
    assert.equal(IDEMPOTENT, Symbol.for('pg-resilience.idempotent'));
    assert.equal(
      isMarkedIdempotent({ text: 'SELECT 1', [Symbol.for('pg-resilience.idempotent')]: true }),
      true,
    );
  });
});

describe('isMarkedIdempotent', () => {
  it('accepts a plain own `idempotent: true` property', () => {
    assert.equal(isMarkedIdempotent({ text: 'UPDATE t SET a = 1', idempotent: true }), true);
  });

  it('only an explicit true counts', () => {
    const rows: unknown[] = [
      { text: 'x', idempotent: 'yes' },
      { text: 'x', idempotent: 1 },
      { text: 'x', [IDEMPOTENT]: 'true' },
      { text: 'x', idempotent: false },
      Object.create({ idempotent: true }),
      'UPDATE t SET a = 1',
      undefined,
      null,
      42,
      () => undefined,
    ];
    for (const q of rows) assert.equal(isMarkedIdempotent(q), false, String(q));
  });

  it('a throwing getter or proxy is not marked (and does not throw)', () => {
    const getter = Object.defineProperty({}, IDEMPOTENT, {
      get() {
        throw new Error('boom');
      },
    });
    const proxy = new Proxy(
      {},
      {
        get() {
          throw new Error('boom');
        },
      },
    );
    assert.equal(isMarkedIdempotent(getter), false);
    assert.equal(isMarkedIdempotent(proxy), false);
  });
});

// ---- property: never throws ----

const ALPHABET = [
  ...'\'"$;-/*()\\., \n\rEeabxSELECTselectINTOFORUPDATEcount0123456789_:',
  'SELECT ',
  'WITH ',
  ' FOR UPDATE',
  "E'",
  '$$',
  '$t$',
  '/*',
  '*/',
  '--',
  'é',
];

describe('statement safety: random input never throws', () => {
  it('2000 random SQL-ish strings', () => {
    const random = seededRandom(0x5eed);
    for (let run = 0; run < 2000; run++) {
      const length = Math.floor(random() * 60);
      let text = '';
      for (let i = 0; i < length; i++) text += ALPHABET[Math.floor(random() * ALPHABET.length)];
      let stripped = '';
      assert.doesNotThrow(() => {
        stripped = stripSql(text);
        isSingleStatement(stripped);
        isSingleStatement(text);
        isReadOnlyStatement(text);
        isMarkedIdempotent({ text });
        idempotent(text);
        idempotent({ text });
      }, JSON.stringify(text));
      assert.equal(typeof stripped, 'string');
      // Read-only implies one statement.
      if (isReadOnlyStatement(text)) assert.equal(isSingleStatement(stripped), true, JSON.stringify(text));
    }
  });
});
