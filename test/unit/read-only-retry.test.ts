// The statement veto's rule for 25006 (src/safety/retry-safety.ts): a read-only server applied nothing,
// so the statement may go again on a fresh connection, whatever it is; never on the same client, never
// inside a transaction. And 25006 is classified transient.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyError } from '../../src/classify/index.ts';
import { type StatementFacts, statementVeto } from '../../src/safety/retry-safety.ts';

const readOnly = classifyError(
  Object.assign(new Error('cannot execute INSERT in a read-only transaction'), {
    code: '25006',
    severity: 'ERROR',
  }),
);

const facts = (over: Partial<StatementFacts> = {}): StatementFacts => ({
  query: 'INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)',
  values: undefined,
  freshConnection: true,
  txStatus: 'I',
  provedUnsent: false,
  othersQueued: false,
  endedByApp: false,
  ...over,
});

describe('25006 read_only_sql_transaction', () => {
  it('is transient and rejected (nothing applied)', () => {
    assert.equal(readOnly.transient, true);
    assert.equal(readOnly.reachedServer, 'rejected');
    assert.equal(readOnly.countsForBreaker, false);
  });

  it('a non-idempotent multi-statement write is retried on a fresh connection', () => {
    assert.equal(statementVeto(facts(), readOnly), true);
  });

  it('never on the same client, never in a transaction, never after the app ended the client', () => {
    assert.equal(statementVeto(facts({ freshConnection: false }), readOnly), 'not_retryable');
    assert.equal(statementVeto(facts({ txStatus: 'T' }), readOnly), 'in_transaction');
    assert.equal(statementVeto(facts({ txStatus: 'E' }), readOnly), 'in_transaction');
    assert.equal(statementVeto(facts({ endedByApp: true }), readOnly), 'not_retryable');
  });

  it('another rejection of a multi-statement text stays unknown_outcome (the rule is 25006 only)', () => {
    const integrity = classifyError(Object.assign(new Error('dup'), { code: '40001', severity: 'ERROR' }));
    assert.equal(statementVeto(facts(), integrity), 'unknown_outcome');
  });
});
