/**
 * The ORM matrix: nine ORMs on pg, each a small app (test/orms/apps) run as a child process bare and
 * under `pg-resilience/register` from the packed package (`--require` for CommonJS apps, `--import` for
 * ES module apps), side by side, each arm on its own database of one real PostgreSQL:
 *
 * - transparency: a fixed script gives the same results in both arms (and the right ones);
 * - flaky network through the fault proxy: 40 % of new connections reset, 5 % of server messages
 *   followed by a reset;
 * - backend kills (pg_terminate_backend, three times) and one server restart.
 *
 * After each fault scenario the ledger is checked in the database (every acknowledged write present
 * exactly once, balance conserved, no half-applied transfer). Asserted for the hooked arm: the invariants
 * and no crash; the bare arm's crashes (kysely, drizzle die on pg's unhandled 'error') are recorded.
 * Success shares are measured and reported (.tmp/orms/results.md and a diagnostic), never asserted.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FaultProxy, seededRandom } from '../support/fault-proxy.ts';
import { startServer, type TestServer } from '../support/postgres.ts';
import { checkLedger, ledgerHolds, resetLedger } from './lib/ledger-db.ts';
import { ORMS, type Orm } from './lib/orms.ts';
import { renderReport, type ArmResult, type OrmResult, type Scenario } from './lib/report.ts';
import { type Arm, type AppRun, runApp } from './lib/run-app.ts';
import { generatePrismaClient, installPackedHook, ORMS_TMP } from './lib/setup.ts';

const DURATION_MS = Number(process.env.PG_RESILIENCE_TEST_ORM_DURATION_MS ?? 5000);
const DEADLINE_MS = DURATION_MS + 25_000;
const T = { timeout: DEADLINE_MS + 30_000 };
const ARMS: readonly Arm[] = ['bare', 'hooked'];
// PG_RESILIENCE_TEST_ORMS=knex,slonik runs only those.
const ONLY = process.env.PG_RESILIENCE_TEST_ORMS?.split(',');
const SELECTED = ORMS.filter((o) => !ONLY || ONLY.includes(o.name));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let server: TestServer;
let hookDir: string;
let prismaClient: string;
const results: OrmResult[] = [];
const t0 = Date.now();

const database = (orm: Orm, arm: Arm) => `${orm.name.replace(/-/g, '_')}_${arm}`;
const dbConfig = (orm: Orm, arm: Arm) => server.clientConfig({ database: database(orm, arm) });
const dbUrl = (orm: Orm, arm: Arm, base = server.connectionString) => {
  const url = new URL(base);
  url.pathname = `/${database(orm, arm)}`;
  return url.toString();
};

before(async () => {
  server = await startServer({ settings: { max_connections: '200' } });
  for (const orm of SELECTED)
    for (const arm of ARMS) await server.query(`CREATE DATABASE ${database(orm, arm)}`);
  hookDir = installPackedHook();
  prismaClient = generatePrismaClient();
});

after(async () => {
  await server?.close();
});

/** Runs both arms of one ORM at once: each waits after READY until both are ready, then starts. */
async function bothArms(
  orm: Orm,
  settings: { mode: 'script' | 'load'; durationMs?: number },
  urlOf: (arm: Arm) => string,
  whileRunning?: () => Promise<void>,
): Promise<Record<Arm, AppRun>> {
  const running = ARMS.map((arm) =>
    runApp({
      orm,
      arm,
      databaseUrl: urlOf(arm),
      settings: { ...settings, concurrency: 4, runId: arm },
      waitGo: true,
      hookDir,
      env: { PRISMA_CLIENT: prismaClient },
      deadlineMs: DEADLINE_MS,
    }),
  );
  await Promise.all(running.map((r) => r.ready));
  for (const r of running) r.go();
  const faults = whileRunning?.();
  const [bare, hooked] = await Promise.all(running.map((r) => r.done));
  await faults;
  return { bare: bare!, hooked: hooked! };
}

function describeRun(run: AppRun): string {
  return JSON.stringify({
    code: run.code,
    signal: run.signal,
    hung: run.hung,
    counts: run.counts,
    errors: run.errors,
    stderr: run.stderrTail,
  });
}

/** The script's expected results, whatever the ORM names its errors. */
function assertScript(steps: unknown[], orm: Orm): void {
  const byName = new Map(
    (steps as Array<{ step: string; value?: unknown; error?: string }>).map((s) => [s.step, s]),
  );
  const value = (name: string) => byName.get(name)?.value;
  for (let i = 1; i <= 3; i++) {
    assert.equal(value(`insert s${i}`), 'ok', `${orm.name}: insert s${i}`);
    assert.equal(value(`read s${i}`), i, `${orm.name}: read s${i}`);
  }
  assert.equal(value('read missing'), null);
  assert.equal(value('transfer 1→2 10'), 'ok');
  assert.equal(value('transfer 2→3 5'), 'ok');
  assert.ok(byName.get('transfer rolled back')?.error, 'the aborted transfer fails');
  assert.ok(byName.get('duplicate account')?.error, 'the duplicate primary key fails');
  assert.deepEqual([value('balance 1'), value('balance 2'), value('balance 3')], [990, 1005, 1005]);
}

for (const orm of SELECTED) {
  describe(`${orm.name} (${orm.app})`, { concurrency: 1 }, () => {
    const result: OrmResult = { orm: orm.name, scenarios: {}, ms: 0 };
    before(() => {
      results.push(result);
    });

    const scenario = async (
      name: Scenario,
      urlOf: (arm: Arm) => string,
      whileRunning: () => Promise<void>,
    ): Promise<Record<Arm, ArmResult>> => {
      const started = Date.now();
      for (const arm of ARMS) await resetLedger(dbConfig(orm, arm));
      const runs = await bothArms(orm, { mode: 'load', durationMs: DURATION_MS }, urlOf, whileRunning);
      const out = {} as Record<Arm, ArmResult>;
      for (const arm of ARMS)
        out[arm] = { run: runs[arm], ledger: await checkLedger(dbConfig(orm, arm), runs[arm]) };
      result.scenarios[name] = out;
      result.ms += Date.now() - started;
      const { hooked } = out;
      assert.ok(hooked.run.finished, `${orm.name} hooked crashed or hung: ${describeRun(hooked.run)}`);
      assert.ok(ledgerHolds(hooked.ledger), `${orm.name} hooked ledger: ${JSON.stringify(hooked.ledger)}`);
      // Not vacuous: the app ran its workload. Under the kills the first writes run before any fault, so
      // some were acknowledged; under the flaky profile a drained pool may, by bad luck, acknowledge none.
      const c = hooked.run.counts;
      assert.ok(c.insert.ok + c.insert.fail + c.insert.timeout > 0, `${orm.name}: no insert attempted`);
      if (name === 'kills')
        assert.ok(
          hooked.ledger.checked > 0,
          `${orm.name} hooked acknowledged nothing: ${describeRun(hooked.run)}`,
        );
      return out;
    };

    it(
      'transparency: the fixed script gives the same (right) results bare and hooked; pg is patched',
      T,
      async () => {
        const started = Date.now();
        for (const arm of ARMS) await resetLedger(dbConfig(orm, arm));
        const runs = await bothArms(orm, { mode: 'script' }, (arm) => dbUrl(orm, arm));
        result.ms += Date.now() - started;
        result.startupMs = { bare: runs.bare.readyMs, hooked: runs.hooked.readyMs };
        for (const arm of ARMS)
          assert.ok(runs[arm].finished, `${orm.name} ${arm}: ${describeRun(runs[arm])}`);
        assertScript(runs.bare.steps, orm);
        assert.deepEqual(runs.hooked.steps, runs.bare.steps);
        result.transparent = true;
        // Every copy of pg the app loaded carries the package's wrappers under the hook, none bare.
        assert.ok(runs.hooked.pg.length > 0);
        for (const copy of runs.hooked.pg)
          assert.ok(copy.wrappers >= 2, `not patched: ${JSON.stringify(copy)}`);
        for (const copy of runs.bare.pg) assert.equal(copy.wrappers, 0);
        if (orm.name === 'pg-promise')
          assert.ok(
            runs.hooked.pg.some((c) => c.path.includes('/pg-promise/node_modules/pg/')),
            JSON.stringify(runs.hooked.pg),
          );
      },
    );

    it('flaky network: hooked never crashes, the ledger holds in the hooked arm', T, async () => {
      const proxy = await FaultProxy.forServer(server, { random: seededRandom(11) });
      try {
        await scenario(
          'flaky',
          (arm) => dbUrl(orm, arm, proxy.connectionString(server)),
          async () => {
            proxy.resetNewConnections(0.4);
            proxy.cutAfterServerMessage(0.05, 12);
          },
        );
      } finally {
        await proxy.close();
      }
    });

    it('backend kills and a server restart: hooked never crashes, the ledger holds', T, async () => {
      await scenario(
        'kills',
        (arm) => dbUrl(orm, arm),
        async () => {
          for (let i = 0; i < 3; i++) {
            await sleep(DURATION_MS / 6);
            for (const arm of ARMS) await server.terminateBackends({ database: database(orm, arm) });
          }
          await sleep(DURATION_MS / 6);
          await server.restart();
        },
      );
    });
  });
}

it('report: success per ORM per arm (written to a file, never asserted)', (t) => {
  const report = renderReport(results, { durationMs: DURATION_MS, totalMs: Date.now() - t0 });
  const file = process.env.PG_RESILIENCE_TEST_ORM_RESULTS ?? join(ORMS_TMP, 'results.md');
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, report);
  t.diagnostic(`ORM matrix report (${file}):\n${report}`);
});
