/**
 * `npm run demo -- --quick --json PATH`, end to end, the way the README tells a new user to run it: an
 * embedded PostgreSQL, the fault proxies, the sample app under `node --require pg-resilience/register`,
 * every scenario. Asserts on the JSON summary (what each scenario must show) and that nothing is left
 * running afterwards.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { processesMentioning } from '../support/processes.ts';
import type { ScenarioResult } from '../../demo/report.ts';

const root = path.join(import.meta.dirname, '..', '..');

/** The target is 1 s (the run reports its figure); asserted with headroom for a loaded machine. */
const FAILOVER_RESUME_BOUND_MS = 5_000;

interface Summary {
  ok: boolean;
  crashed: string | null;
  scenarios: ScenarioResult[];
}

describe('npm run demo -- --quick', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pg-resilience-demo-test-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  // The quick run takes about a minute alone, longer beside other suites; a run that hangs is killed at
  // 270 s so that the assertion below shows its output (where it stopped) instead of a bare test timeout.
  it('runs every scenario, and each shows what it is meant to show', { timeout: 300_000 }, async (ctx) => {
    const json = path.join(dir, 'summary.json');
    const started = performance.now();
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn('npm', ['run', 'demo', '--', '--quick', '--json', json, '--metrics-port', '0'], {
        cwd: root,
        env: { ...process.env, FORCE_COLOR: '0' },
      });
      let output = '';
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      const killer = setTimeout(() => {
        output += '\n[test] killed after 270 s\n';
        child.kill('SIGKILL');
      }, 270_000);
      child.on('exit', (c) => {
        clearTimeout(killer);
        resolve({ code: c, output });
      });
    });
    const seconds = (performance.now() - started) / 1000;
    assert.equal(code, 0, output);
    const summary = JSON.parse(readFileSync(json, 'utf8')) as Summary;
    assert.equal(summary.ok, true, output);
    assert.equal(summary.crashed, null);
    const by = Object.fromEntries(summary.scenarios.map((s) => [s.name, s])) as Record<
      string,
      ScenarioResult
    >;
    assert.deepEqual(Object.keys(by), [
      'baseline',
      'flaky',
      'outage',
      'spike',
      'kills',
      'stress',
      'failover',
    ]);

    for (const s of summary.scenarios) {
      assert.ok(s.operations > 50, `${s.name}: ${s.operations} operations`);
      assert.ok(s.ledger, `${s.name}: ledger checked`);
      assert.equal(s.ledger.missing, 0, `${s.name}: acknowledged writes missing`);
      assert.equal(s.ledger.duplicated, 0, `${s.name}: duplicated writes`);
      assert.equal(s.ledger.balanceDrift, 0, `${s.name}: transfers unbalanced`);
      assert.ok(s.ledger.acknowledged > 0, `${s.name}: no acknowledged writes to check`);
    }

    assert.equal(by.baseline!.retries, 0, 'baseline: no retries');
    assert.equal(by.baseline!.successPct, 100);

    assert.ok(by.flaky!.retries > 0, 'flaky: retries absorb the resets');
    assert.ok(
      by.flaky!.idempotentSuccessPct! >= 99,
      `flaky: idempotent success ${by.flaky!.idempotentSuccessPct} %`,
    );

    const t = by.outage!.transitions;
    for (const step of ['closed->open', 'open->half_open', 'half_open->closed']) {
      assert.ok((t[step] ?? 0) >= 1, `outage: ${step} in ${JSON.stringify(t)}`);
    }
    assert.ok(by.outage!.fastFailed > 0, 'outage: calls failed fast with CircuitOpenError');
    assert.ok(by.outage!.recoveryAttempts.success >= 1, 'outage: a recovery probe closed the breaker');
    assert.ok(by.outage!.facts.recoveryMs !== undefined, 'outage: recovery time measured');

    assert.ok(by.spike!.rateLimit.waits > 0, 'spike: waits');
    assert.ok((by.spike!.rateLimit.rejections.drop ?? 0) > 0, 'spike: drops for the drop strategy');
    assert.ok(
      (by.spike!.rateLimit.rejections.queue_full ?? 0) > 0,
      'spike: a full queue for the queue strategy',
    );

    assert.ok((by.kills!.facts.backendsTerminated ?? 0) > 0, 'kills: backends terminated');
    assert.ok(by.kills!.absorbedClientErrors > 0, 'kills: the idle clients’ errors were absorbed');
    assert.ok(by.kills!.successPct! > 90, `kills: ${by.kills!.successPct} % ok`);

    assert.ok((by.stress!.errors['57014'] ?? 0) > 0, 'stress: statement timeouts');
    assert.equal(by.stress!.retriesByErrorType['57014'], undefined, 'stress: 57014 never retried');

    // The ledger (above) was checked on the promoted standby: the shop's pool is multi-host.
    const failover = by.failover!;
    assert.ok(
      failover.facts.writeGapMs !== undefined && failover.facts.writeGapMs <= FAILOVER_RESUME_BOUND_MS,
      `failover: writes again ${failover.facts.writeGapMs} ms after the promotion`,
    );
    assert.ok(failover.facts.failoverErrors, 'failover: the errors that reached the app are counted');
    assert.ok(
      Object.values(failover.failovers).reduce((a, b) => a + b, 0) >= 1,
      `failover: the package detected it: ${JSON.stringify(failover.failovers)}`,
    );
    ctx.diagnostic(
      `failover: writes again ≤ ${failover.facts.writeGapMs} ms after the promotion; the app got ${JSON.stringify(failover.facts.failoverErrors)}`,
    );

    assert.match(output, /Summary/);
    assert.match(output, /every acknowledged write is in the database exactly once/);
    // How long it took is reported, not asserted (timings belong in the benchmarks; a hang is killed above).
    ctx.diagnostic(`the quick run took ${seconds.toFixed(0)} s`);
    // This run's servers only: other suites may run a demo at the same time.
    const dataDirs = [...output.matchAll(/data in (\S+)\)/g)].map((m) => m[1]!);
    assert.equal(dataDirs.length, 3, 'the data dirs of the embedded server, the primary and the standby');
    for (const dataDir of dataDirs) {
      assert.deepEqual(processesMentioning(dataDir), [], 'nothing left running');
      assert.equal(existsSync(dataDir), false, 'its data removed');
    }
  });

  it(
    'Ctrl-C stops the app, the proxies and the embedded server, and removes its data',
    { timeout: 120_000 },
    async () => {
      // Its own process group, signalled as a terminal does: the orchestrator and the app both get SIGINT.
      const child = spawn(
        process.execPath,
        [
          '--disable-warning=ExperimentalWarning',
          'demo/main.ts',
          '--metrics-port',
          '0',
          '--scenario',
          'baseline',
          '--duration',
          '120',
        ],
        { cwd: root, detached: true, env: { ...process.env, FORCE_COLOR: '0' } },
      );
      let output = '';
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
      const deadline = Date.now() + 60_000;
      while (!output.includes('▶ baseline') && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      assert.match(output, /▶ baseline/, output);
      const dataDir = /data in (\S+)\)/.exec(output)?.[1];
      assert.ok(dataDir && existsSync(dataDir), `the embedded server's data dir: ${output}`);
      await new Promise((r) => setTimeout(r, 1_500));
      const t0 = performance.now();
      process.kill(-child.pid!, 'SIGINT');
      const code = await exited;
      assert.equal(code, 130, output);
      assert.ok(performance.now() - t0 < 15_000, 'stopped promptly');
      assert.match(output, /stopping/);
      assert.equal(existsSync(dataDir), false, 'data removed');
      assert.deepEqual(processesMentioning(dataDir), [], 'no postgres left');
      const appPid = /sample app \(pid (\d+)\)/.exec(output)?.[1];
      assert.ok(appPid, 'the app’s pid is printed');
      assert.equal(existsSync(`/proc/${appPid}`), false, 'the app is gone');
    },
  );
});
