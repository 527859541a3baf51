/**
 * `npm run demo -- --fleet --quick --json PATH`: four sample apps under the register hook, coordinated
 * through the demo's own redis-server, against an embedded PostgreSQL. Asserts on the JSON summary (the
 * budget held on the server, no 53300; every breaker opened and closed together, about one probe per
 * interval fleet-wide; every ledger exact) and that nothing is left running afterwards.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { processesMentioning } from '../support/processes.ts';
import type { FleetResult } from '../../demo/fleet.ts';

const root = path.join(import.meta.dirname, '..', '..');

describe('npm run demo -- --fleet --quick', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pg-resilience-demo-fleet-test-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it(
    'the budget holds on the server, the breakers open and close together, every ledger is exact',
    { timeout: 240_000 },
    async (ctx) => {
      const json = path.join(dir, 'fleet.json');
      const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
        const child = spawn(
          'npm',
          ['run', 'demo', '--', '--fleet', '--quick', '--json', json, '--metrics-port', '0'],
          {
            cwd: root,
            env: { ...process.env, FORCE_COLOR: '0' },
          },
        );
        let output = '';
        child.stdout.on('data', (d) => (output += d));
        child.stderr.on('data', (d) => (output += d));
        const killer = setTimeout(() => {
          output += '\n[test] killed after 200 s\n';
          child.kill('SIGKILL');
        }, 200_000);
        child.on('exit', (c) => {
          clearTimeout(killer);
          resolve({ code: c, output });
        });
      });
      assert.equal(code, 0, output);
      const summary = JSON.parse(readFileSync(json, 'utf8')) as {
        ok: boolean;
        crashed: string | null;
        fleet: FleetResult;
      };
      assert.equal(summary.ok, true, output);
      assert.equal(summary.crashed, null);
      const { budget, outage, ledgers } = summary.fleet;

      assert.ok(budget, output);
      assert.ok(budget.operations > 100, `budget: ${budget.operations} operations`);
      assert.ok(
        budget.peakServerConnections <= budget.budget,
        `budget: peak ${budget.peakServerConnections} server connections for a budget of ${budget.budget}`,
      );
      assert.ok(budget.peakServerConnections >= budget.budget - 2, 'budget: the load used the budget');
      assert.equal(budget.tooManyConnections, 0, 'budget: no 53300');

      assert.ok(outage, output);
      assert.equal(outage.appsOpened, 4, 'outage: every breaker opened');
      assert.equal(outage.appsFleetOpen, 4, 'outage: open fleet-wide in every process');
      const intervals = outage.downMs / outage.probeIntervalMs;
      assert.ok(
        outage.probesTaken >= 1 && outage.probesTaken <= intervals + 2,
        `outage: ${outage.probesTaken} probes for the fleet in ${intervals} intervals`,
      );
      assert.ok(outage.probesSkipped > 0, 'outage: the other processes skipped their probes');
      assert.ok(outage.allClosedMs !== null, 'outage: every breaker closed');
      assert.ok(
        outage.closeSpreadMs !== null && outage.closeSpreadMs <= 1_000,
        `outage: closed within ${outage.closeSpreadMs} ms of each other`,
      );

      assert.equal(ledgers.length, 8, 'two ledger checks per app');
      for (const l of ledgers) {
        assert.equal(l.missing, 0, `${l.scenario}: acknowledged writes missing`);
        assert.equal(l.duplicated, 0, `${l.scenario}: duplicated writes`);
        assert.equal(l.balanceDrift, 0, `${l.scenario}: transfers unbalanced`);
      }
      ctx.diagnostic(
        `budget: peak ${budget.peakServerConnections}/${budget.budget}, ${budget.budgetExhausted} waited past the connect timeout; outage: ${outage.probesTaken} probes in ${intervals} intervals, all closed ${outage.allClosedMs} ms after the server was back`,
      );

      const dataDir = /data in (\S+)\)/.exec(output)?.[1];
      assert.ok(dataDir, output);
      assert.equal(existsSync(dataDir), false, 'its data removed');
      assert.deepEqual(processesMentioning(dataDir), [], 'no postgres left');
      const redisPort = /redis-server on 127\.0\.0\.1:(\d+)/.exec(output)?.[1];
      assert.ok(redisPort, output);
      assert.deepEqual(processesMentioning(`127.0.0.1:${redisPort}`), [], 'no redis-server left');
      const pids = /sample apps \(pids ([\d, ]+)\)/.exec(output)?.[1]?.split(', ') ?? [];
      assert.equal(pids.length, 4, output);
      for (const pid of pids) assert.equal(existsSync(`/proc/${pid}`), false, `app ${pid} is gone`);
    },
  );

  it(
    'without redis-server: one line says how to get it, and the usual demo runs',
    { timeout: 120_000 },
    async () => {
      const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
        const child = spawn(
          process.execPath,
          [
            '--disable-warning=ExperimentalWarning',
            'demo/main.ts',
            '--fleet',
            '--scenario',
            'baseline',
            '--duration',
            '2',
            '--metrics-port',
            '0',
          ],
          { cwd: root, env: { ...process.env, FORCE_COLOR: '0', REDIS_SERVER: '/nonexistent/redis-server' } },
        );
        let output = '';
        child.stdout.on('data', (d) => (output += d));
        child.stderr.on('data', (d) => (output += d));
        child.on('exit', (c) => resolve({ code: c, output }));
      });
      assert.equal(code, 0, output);
      const lines = output.split('\n').filter((l) => l.includes('redis-server'));
      assert.equal(lines.length, 1, output);
      assert.match(
        lines[0]!,
        /--fleet needs redis-server on the PATH \(Debian\/Ubuntu: apt-get install redis-server/,
      );
      assert.match(output, /▶ baseline/);
      assert.match(output, /every acknowledged write is in the database exactly once/);
    },
  );
});
