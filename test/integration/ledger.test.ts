// The ledger (test/support/ledger.ts): concurrent INSERTs with unique keys into a table without a
// unique constraint, through a proxy that resets 20 % of new connections and cuts ready ones right
// after 5 % of server messages. Invariants: every acknowledged insert is in the table, and no key is there twice (a
// retry must never run a write twice). Bare pg never retries, so it must hold the invariants while
// losing some inserts; with the package loaded (retries) the invariants must hold just the same.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FaultProxy, seededRandom } from '../support/fault-proxy.ts';
import { type LedgerResult, runLedger } from '../support/ledger.ts';
import { scratchApp, type ScratchApp } from '../support/package.ts';
import { startServer, type TestServer } from '../support/postgres.ts';

const WORKERS = 8;
const INSERTS_PER_WORKER = 60;

function assertInvariants(r: LedgerResult, label: string): void {
  const attempted = WORKERS * INSERTS_PER_WORKER;
  assert.equal(r.acknowledged.length + r.failed.length, attempted, 'every insert has an outcome');
  assert.deepEqual(r.duplicates, [], `${label}: keys written twice`);
  assert.deepEqual(r.missing, [], `${label}: acknowledged but not in the table`);
  assert.deepEqual(r.unexpected, [], `${label}: keys nobody inserted`);
  assert.ok(r.acknowledged.length > 0, `${label}: nothing succeeded`);
  // The faults must really bite, or the invariants prove nothing.
  assert.ok(r.faults.cutAfterMessage > 0 && r.faults.resetOnAccept > 0, `${label}: no faults injected`);
}

function summary(r: LedgerResult): string {
  const codes = new Map<string, number>();
  for (const f of r.failed) codes.set(f.errorCode, (codes.get(f.errorCode) ?? 0) + 1);
  return (
    `success ${(r.successShare * 100).toFixed(1)} % (${r.acknowledged.length} acknowledged, ` +
    `${r.failed.length} failed: ${JSON.stringify(Object.fromEntries(codes))}; ` +
    `${r.failedButPresent.length} failed but committed), faults ${JSON.stringify(r.faults)}, ${r.durationMs} ms`
  );
}

describe('ledger: a write is never run twice (real PostgreSQL, fault proxy)', { timeout: 180_000 }, () => {
  let server: TestServer;
  let proxy: FaultProxy;
  let app: ScratchApp | undefined;

  before(async () => {
    server = await startServer({ settings: { max_connections: '50' } });
    proxy = await FaultProxy.start({
      targetHost: server.host,
      targetPort: server.port,
      random: seededRandom(20261123),
    });
  });

  after(async () => {
    app?.remove();
    await proxy?.close();
    await server?.close();
  });

  it('bare pg: some inserts fail, none is missing or duplicated', async (t) => {
    const r = await runLedger({ server, proxy, workers: WORKERS, insertsPerWorker: INSERTS_PER_WORKER });
    t.diagnostic(`bare pg: ${summary(r)}`);
    assertInvariants(r, 'bare pg');
    assert.ok(r.failed.length > 0, 'bare pg has no retries: the faults must fail some inserts');
  });

  it('the check has teeth: a naive retry of failed inserts is caught as duplicates', async (t) => {
    const { default: pg } = await import('pg');
    // Re-runs an INSERT whose connection was lost (a reset, or a close right after a server message):
    // exactly what the package must never do to a write whose outcome is unknown. Both forms, since the
    // proxy's cuts show as either, and only the ones after CommandComplete committed.
    const lost = (err: any): boolean =>
      err?.code === 'ECONNRESET' || err?.message === 'Connection terminated unexpectedly';
    class NaiveRetryPool extends pg.Pool {
      override query(...args: any[]): any {
        return (super.query as any)(...args).catch((err: any) =>
          lost(err) ? (super.query as any)(...args) : Promise.reject(err),
        );
      }
    }
    const r = await runLedger({
      server,
      proxy,
      workers: WORKERS,
      insertsPerWorker: INSERTS_PER_WORKER,
      pgModule: { Pool: NaiveRetryPool },
      table: 'ledger_naive',
    });
    t.diagnostic(`naive retry: ${summary(r)}, ${r.duplicates.length} duplicated keys`);
    assert.ok(r.duplicates.length > 0, 'a blind retry of writes must show up as duplicates');
  });

  it('with --require pg-resilience/register (child process in a scratch app): invariants hold', async (t) => {
    app = scratchApp('ledger');
    const r = await runLedger({
      server,
      proxy,
      workers: WORKERS,
      insertsPerWorker: INSERTS_PER_WORKER,
      // Telemetry off (no collector here): what is under test is the retry behaviour.
      child: {
        dir: app.dir,
        nodeArgs: ['--require', 'pg-resilience/register'],
        env: { OTEL_SDK_DISABLED: 'true' },
      },
    });
    t.diagnostic(`with pg-resilience: ${summary(r)}`);
    assertInvariants(r, 'with pg-resilience');
  });
});
