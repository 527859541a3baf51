// The chaos suite: a seeded fault schedule against a real PostgreSQL and the fault proxy,
// while an app in a child process (installed from the packed tarball like a user's) runs many
// concurrent workers: pooled reads, idempotent upserts, non-idempotent inserts, withTransaction
// transfers on a ledger, pg-cursor and pg-query-stream reads, LISTEN/NOTIFY; the schedule includes
// connections cut at COMMIT and statements cancelled past timeout.queryMs. Then the checks:
// writes exactly once and the ledger balanced; no crash; no hung operation; recovery within the
// target; memory bounded. Two arms: `--import pg-resilience/register` (enforced) and bare pg
// (reported only: it is expected to crash or lose operations). docs/chaos.md explains how to run,
// re-run a seed and read the report (.tmp/chaos/report.md and .json).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { FaultProxy, seededRandom } from '../support/fault-proxy.ts';
import { repoRoot, scratchApp, type ScratchApp } from '../support/package.ts';
import { startServer, type TestServer } from '../support/postgres.ts';
import { type RunReport, writeReport } from './lib/report.ts';
import { type ArmResult, runArm } from './lib/run-arm.ts';
import { ALL_FAULTS, buildSchedule, modeFromEnv, seedFromEnv } from './lib/schedule.ts';

const mode = modeFromEnv();
const seed = seedFromEnv();
const outDir = join(repoRoot, '.tmp', 'chaos');
const APP_ROLE = 'chaos_app';
const appPassword = randomBytes(12).toString('hex');

const rerun =
  mode.mode === 'long'
    ? `PG_RESILIENCE_TEST_CHAOS_SEED=${seed} PG_RESILIENCE_TEST_CHAOS_MODE=long PG_RESILIENCE_TEST_CHAOS_DURATION_S=${mode.durationMs / 1000} npm run test:chaos -- test/chaos/chaos.test.ts`
    : `PG_RESILIENCE_TEST_CHAOS_SEED=${seed} npm run test:chaos -- test/chaos/chaos.test.ts`;
process.stdout.write(`chaos: seed ${seed}, mode ${mode.mode} (re-run: ${rerun})\n`);

// The pg-resilience arm runs the whole schedule; the bare arm (a comparison, reported only) runs its
// first cycle, which is the whole schedule in CI mode.
const schedule = buildSchedule(seededRandom(seed), mode);
const bareSchedule = mode.mode === 'long' ? buildSchedule(seededRandom(seed), mode, 1) : schedule;
const planned = Math.max(...schedule.map((f) => f.at + f.durationMs));
const armTimeout = planned + 180_000;

const log = (line: string) => process.stdout.write(`chaos: ${line}\n`);

describe(`chaos suite (seed ${seed}, ${mode.mode} mode)`, () => {
  let server: TestServer;
  let proxy: FaultProxy;
  let app: ScratchApp | undefined;
  const results: ArmResult[] = [];

  before(
    async () => {
      server = await startServer({ settings: { max_connections: '80' } });
      proxy = await FaultProxy.start({
        targetHost: server.host,
        targetPort: server.port,
        random: seededRandom(seed ^ 0x5eed),
      });
      // A non-superuser role for the app: superusers ignore CONNECTION LIMIT.
      await server.query(`CREATE ROLE ${APP_ROLE} LOGIN PASSWORD '${appPassword}'`);
      app = scratchApp('chaos', ['pg-cursor@^2.22.0', 'pg-query-stream@^4.17.0']);
      copyFileSync(fileURLToPath(new URL('./lib/app.ts', import.meta.url)), join(app.dir, 'app.mts'));
    },
    { timeout: 240_000 },
  );

  after(async () => {
    if (results.length > 0) {
      const report: RunReport = {
        seed,
        mode: mode.mode,
        durationS: mode.mode === 'long' ? mode.durationMs / 1000 : null,
        node: process.version,
        startedAt: results[0]!.startedAt,
        rerun,
        schedule,
        arms: results,
        enforced: ['pg-resilience'],
      };
      const { md, json, markdown } = writeReport(outDir, report);
      process.stdout.write(`\n${markdown}\nchaos: report written to ${md} and ${json}\n`);
    }
    app?.remove();
    await proxy?.close();
    await server?.close();
  });

  it('the schedule applies every fault kind at least once', () => {
    for (const kind of ALL_FAULTS) {
      assert.ok(
        schedule.some((f) => f.kind === kind),
        `${kind} missing from the schedule`,
      );
      assert.ok(
        bareSchedule.some((f) => f.kind === kind),
        `${kind} missing from the bare arm's schedule`,
      );
    }
  });

  it(
    'with --import pg-resilience/register: nothing lost, nothing duplicated, nothing crashed, nothing hung; recovery; bounded memory',
    { timeout: armTimeout },
    async (t) => {
      const r = await runArm({
        arm: 'pg-resilience',
        seed,
        schedule,
        mode,
        server,
        proxy,
        appDir: app!.dir,
        outDir,
        appRole: APP_ROLE,
        appPassword,
        log,
      });
      results.push(r);
      for (const c of r.checks) t.diagnostic(`${c.passed ? 'pass' : 'FAIL'} ${c.id} ${c.name}: ${c.detail}`);
      // Every fault was applied (an error applying one would make the run prove less than it claims).
      const notApplied = r.faults.filter((f) => f.error).map((f) => `${f.kind}: ${f.error}`);
      assert.deepEqual(notApplied, [], 'faults that could not be applied');
      for (const kind of ALL_FAULTS) {
        assert.ok(
          r.faults.some((f) => f.kind === kind),
          `${kind} was never applied`,
        );
      }
      const failed = r.checks.filter((c) => !c.passed).map((c) => `${c.id} ${c.name}: ${c.detail}`);
      assert.deepEqual(failed, [], `chaos checks breached (seed ${seed}; re-run: ${rerun})`);
    },
  );

  it('bare pg (no register): the same run, reported only', { timeout: armTimeout }, async (t) => {
    const r = await runArm({
      arm: 'bare',
      seed,
      schedule: bareSchedule,
      mode,
      server,
      proxy,
      appDir: app!.dir,
      outDir,
      appRole: APP_ROLE,
      appPassword,
      log,
    });
    results.push(r);
    for (const c of r.checks) t.diagnostic(`${c.passed ? 'pass' : 'breach'} ${c.id} ${c.name}: ${c.detail}`);
    // Reported, not enforced: only the run itself must have happened.
    assert.ok(Object.keys(r.counts).length > 0, 'the bare app ran no operation at all');
  });
});
