// Tests of the replication harness (test/support/replication.ts): a real primary and streaming standby.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type ReplicaPair, startReplicaPair } from '../support/replication.ts';

const T = { timeout: 30_000 };

describe('harness: primary + streaming standby', { timeout: 60_000 }, () => {
  let pair: ReplicaPair;
  before(async () => {
    pair = await startReplicaPair();
  });
  after(async () => {
    await pair?.close();
  });

  it('replicates synchronously: a committed row is on the standby', T, async () => {
    await pair.primary.query('CREATE TABLE t (k text PRIMARY KEY)');
    await pair.primary.query(`INSERT INTO t VALUES ('a')`);
    const sync = await pair.primary.query<{ sync_state: string }>(
      'SELECT sync_state FROM pg_stat_replication',
    );
    assert.deepEqual(
      sync.rows.map((r) => r.sync_state),
      ['sync'],
    );
    await pair.caughtUp();
    const r = await pair.standby.query<{ k: string }>('SELECT k FROM t');
    assert.deepEqual(
      r.rows.map((row) => row.k),
      ['a'],
    );
  });

  it('the standby is read-only (25006 on a write) and in recovery', T, async () => {
    await assert.rejects(pair.standby.query(`INSERT INTO t VALUES ('b')`), { code: '25006' });
    const r = await pair.standby.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
    assert.equal(r.rows[0]?.rec, true);
  });

  it('after promote() the standby accepts writes and is out of recovery', T, async () => {
    await pair.primary.stop();
    await pair.promote();
    await pair.standby.query(`INSERT INTO t VALUES ('c')`);
    const r = await pair.standby.query<{ k: string }>('SELECT k FROM t ORDER BY k');
    assert.deepEqual(
      r.rows.map((row) => row.k),
      ['a', 'c'],
    );
    const rec = await pair.standby.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
    assert.equal(rec.rows[0]?.rec, false);
  });
});
