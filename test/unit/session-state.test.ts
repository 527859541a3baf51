import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  mayChangeSession,
  noteStatement,
  sessionEffect,
  sessionState,
  statementNeedsSession,
} from '../../src/safety/session-state.ts';

type Expect = 'none' | `replay ${string}` | 'taint' | 'reset';

/** What a statement does to the session: the rule of docs/retry-safety.md ("Substitute connections"). */
const ROWS: Array<[string, Expect, unknown?]> = [
  ['SELECT 1', 'none'],
  ['UPDATE t SET a = 1 WHERE id = $1', 'none'],
  ['SELECT \'SET ROLE x\', "temp"', 'none'],
  ['SELECT temp FROM weather', 'none'],
  ['SELECT "attempts", "user_lock_id" FROM jobs', 'none'],
  ['SELECT 1;  \n', 'none'],
  ['SELECT pg_advisory_xact_lock(1)', 'none'],
  ['ALTER TABLE t ADD c int', 'none'],
  ['DECLARE c CURSOR FOR SELECT 1', 'none'],
  ['SET LOCAL statement_timeout = 5', 'none'],
  ['SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', 'none'],
  ["SELECT set_config('a.b', 'x', true)", 'none'],
  ['set search_path to "tenant_a"', 'replay search_path'],
  ['SET search_path = public, x', 'replay search_path'],
  ['SET SESSION statement_timeout TO 1000', 'replay statement_timeout'],
  ["SET TIME ZONE 'UTC'", 'replay timezone'],
  ["SET SCHEMA 'x'", 'replay search_path'],
  ['SET app.tenant_id = 5', 'replay app.tenant_id'],
  ['/* knex */ SET search_path TO x', 'replay search_path'],
  ['RESET search_path', 'replay search_path'],
  ["SELECT set_config('search_path', 'x', false)", 'replay search_path'],
  ["select pg_catalog.set_config('App.Tenant', $1, false) as t", 'replay app.tenant', ['a']],
  ['SELECT set_config($1, $2, false)', 'replay work_mem', ['work_mem', '8MB']],
  ['SET ROLE app', 'taint'],
  ['SET role TO app', 'taint'],
  ['SET SESSION ROLE app', 'taint'],
  ['SET SESSION AUTHORIZATION bob', 'taint'],
  ["SELECT set_config('role', 'bob', false)", 'taint'],
  ['SELECT set_config($1, $2, false)', 'taint', ['role', 'bob']],
  ['SELECT set_config(name, v, false) FROM settings', 'taint'],
  ['RESET ALL', 'taint'],
  ['RESET ROLE', 'taint'],
  ['DISCARD ALL', 'reset'],
  ['discard  all;', 'reset'],
  ['DISCARD PLANS', 'taint'],
  ['DISCARD ALL; SELECT 1', 'taint'],
  ['LISTEN jobs', 'taint'],
  ['PREPARE q AS SELECT 1', 'taint'],
  ['DECLARE c CURSOR WITH HOLD FOR SELECT 1', 'taint'],
  ['CREATE TEMP TABLE x (a int)', 'taint'],
  ['create global temporary table x (a int)', 'taint'],
  ['SELECT * INTO TEMP t FROM x', 'taint'],
  ['select a into /* c */ temporary table t from x', 'taint'],
  ["SELECT SET_CONFIG('search_path', 'x', FALSE)", 'replay search_path'],
  ['SELECT Pg_Advisory_Lock(7)', 'taint'],
  ['SELECT * FROM pg_temp.x', 'taint'],
  ['SELECT pg_advisory_lock(1)', 'taint'],
  ['SELECT pg_try_advisory_lock_shared(1)', 'taint'],
  ["LOAD 'auto_explain'", 'taint'],
  ['DO $$ BEGIN PERFORM 1; END $$', 'taint'],
  ['CALL refresh()', 'taint'],
  ['ALTER ROLE bob SET search_path = x', 'taint'],
  ['SELECT 1; SET search_path TO x', 'taint'],
  [
    "SET standard_conforming_strings=on;SET client_min_messages TO warning;SET TIME ZONE 'UTC';",
    'replay standard_conforming_strings; client_min_messages; timezone',
  ],
  ['SET search_path TO x; RESET statement_timeout', 'replay search_path; statement_timeout'],
  ['SET search_path TO x; SET ROLE app', 'taint'],
  ['SET search_path TO x; SET LOCAL work_mem = 1', 'taint'],
  ["SET a.b = 1; SELECT set_config('c.d', 'x', false)", 'taint'],
  ['SELECT 1; SELECT 2', 'none'],
  ['SET "search_path" TO x', 'taint'],
];

describe('session state: what a statement does to the session', () => {
  for (const [text, expected, values] of ROWS) {
    it(`${text} → ${expected}`, () => {
      const effect = mayChangeSession(text) ? sessionEffect(text, values) : undefined;
      const got: Expect =
        effect === undefined ? 'none' : effect.kind === 'replay' ? `replay ${effect.key}` : effect.kind;
      assert.equal(got, expected);
    });
  }

  it('the cheap pre-check lets every changing statement through to the exact reading', () => {
    for (const [text, expected, values] of ROWS) {
      if (expected !== 'none') assert.ok(mayChangeSession(text), text);
      if (!mayChangeSession(text)) assert.equal(sessionEffect(text, values), undefined, text);
    }
  });
});

describe('session state: recording', () => {
  it('a setting is replayed once it succeeded, the last one per setting, in order', () => {
    const client = {};
    noteStatement(client, 'SET search_path TO a', undefined, true)?.(true);
    noteStatement(client, 'SET timezone TO UTC', undefined, true)?.(true);
    noteStatement(client, 'SET search_path TO b', undefined, true)?.(true);
    const state = sessionState(client);
    assert.equal(state?.taint, undefined);
    assert.deepEqual(
      [...state!.replay.values()].map((r) => r.text),
      ['SET timezone TO UTC', 'SET search_path TO b'],
    );
  });

  it('a multi-statement setup is one replay, and a later single setting is replayed after it', () => {
    const client = {};
    const setup = "SET client_min_messages TO warning;SET TIME ZONE 'UTC'";
    noteStatement(client, setup, undefined, true)?.(true);
    noteStatement(client, "SET TIME ZONE 'Europe/Paris'", undefined, true)?.(true);
    assert.deepEqual(
      [...sessionState(client)!.replay.values()].map((r) => r.text),
      [setup, "SET TIME ZONE 'Europe/Paris'"],
    );
    noteStatement(client, setup, undefined, true)?.(true);
    assert.deepEqual(
      [...sessionState(client)!.replay.values()].map((r) => r.text),
      ["SET TIME ZONE 'Europe/Paris'", setup],
    );
  });

  it('DISCARD ALL makes the session a new one, unless a LOAD, DO or CALL may have left something', () => {
    const client = {};
    noteStatement(client, 'SET search_path TO a', undefined, true)?.(true);
    noteStatement(client, 'LISTEN jobs', undefined, true);
    noteStatement(client, 'SET ROLE app', undefined, true);
    assert.ok(sessionState(client)?.taint);
    noteStatement(client, 'DISCARD ALL', undefined, true)?.(true);
    assert.equal(sessionState(client)?.taint, undefined);
    assert.equal(sessionState(client)?.replay.size, 0);
    const failed = {};
    noteStatement(failed, 'LISTEN jobs', undefined, true);
    noteStatement(failed, 'DISCARD ALL', undefined, true)?.(false);
    assert.ok(sessionState(failed)?.taint, 'a DISCARD ALL that failed changed nothing');
    const later = {};
    noteStatement(later, 'LISTEN jobs', undefined, true);
    noteStatement(later, "LOAD 'auto_explain'", undefined, true);
    noteStatement(later, 'DISCARD ALL', undefined, true)?.(true);
    assert.ok(sessionState(later)?.taint, 'a LOAD after another change still outlives DISCARD ALL');
    for (const sticky of ["LOAD 'auto_explain'", 'DO $$ BEGIN PERFORM 1; END $$', 'CALL p()']) {
      const c = {};
      noteStatement(c, sticky, undefined, true);
      noteStatement(c, 'DISCARD ALL', undefined, true)?.(true);
      assert.ok(sessionState(c)?.taint, sticky);
    }
  });

  it('a setting that failed, or was sent inside a transaction or beside another statement, taints', () => {
    const failed = {};
    noteStatement(failed, 'SET search_path TO a', undefined, true)?.(false);
    assert.ok(sessionState(failed)?.taint);
    const busy = {};
    assert.equal(noteStatement(busy, 'SET search_path TO a', undefined, false), undefined);
    assert.ok(sessionState(busy)?.taint);
  });

  it('a statement without an effect leaves nothing on the client', () => {
    const client = {};
    assert.equal(noteStatement(client, 'SET LOCAL a.b = 1', undefined, true), undefined);
    assert.equal(sessionState(client), undefined);
    assert.deepEqual(Object.getOwnPropertySymbols(client), []);
  });
});

describe('session state: the failed statement itself', () => {
  it('needs its own session when it is text-less, reads currval/lastval, or changes the session', () => {
    assert.ok(statementNeedsSession({ name: 'q', values: [1] }, [1]));
    assert.ok(statementNeedsSession("SELECT currval('s')", undefined));
    assert.ok(statementNeedsSession('SELECT pg_backend_pid()', undefined));
    assert.ok(statementNeedsSession('SET search_path TO x', undefined));
    assert.equal(statementNeedsSession("SELECT 'currval'", undefined), undefined);
    assert.equal(statementNeedsSession({ name: 'q', text: 'SELECT $1::int', values: [1] }, [1]), undefined);
  });
});
