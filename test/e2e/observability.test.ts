/**
 * The observability bundle, proven with data: a real Prometheus server (Debian's, on a free loopback
 * port, temp storage) scrapes the demo's app during a `--quick` run, with the alert rules loaded (their
 * `for:` shortened by rendering them from scripts/alert-rules.ts, not by a second copy). Then:
 * - the breaker-open alert becomes pending or firing during the outage scenario, and no alert fires
 *   after the baseline scenario;
 * - every panel query of every dashboard (grafana/dashboards/*.json), with the Grafana variables
 *   replaced, returns a non-empty result from Prometheus's HTTP API, evaluated while the demo ran (but
 *   the panels of setups the demo does not run: NOT_IN_THE_DEMO).
 * A missing `prometheus` binary fails the test (CI installs Debian's package).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { dashboardQueries, withVariables } from '../../grafana/dashboards/src/queries.ts';
import { alertRules } from '../../scripts/alert-rules.ts';
import { freePort } from '../support/postgres.ts';
import { startPrometheus } from '../support/prometheus.ts';

const root = path.join(import.meta.dirname, '..', '..');
/**
 * Panels with data only in setups the demo does not run: with a connection budget configured (its slots
 * and waits; the demo leaves PG_RESILIENCE_MAX_CONNECTIONS off), and with fleet coordination through
 * Redis (the fleet-aware breaker; the demo runs one process without Redis). The failover panels (host
 * roles, the write-unavailability window) get theirs from the demo's failover scenario.
 */
const NOT_IN_THE_DEMO = new Set([
  'Connection budget slots',
  'Connection budget waits',
  'Fleet-aware breaker',
]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('observability bundle against a real Prometheus', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pg-resilience-observability-'));
  const children: ChildProcess[] = [];
  const closers: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const close of closers) await close();
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    'alerts fire in the outage, not after the baseline; every dashboard panel has data',
    { timeout: 240_000 },
    async () => {
      const metricsPort = await freePort();
      const prometheus = await startPrometheus({
        targets: [`127.0.0.1:${metricsPort}`],
        rules: alertRules({ forOverride: '2s' }),
      });
      closers.push(() => prometheus.close());

      const json = path.join(dir, 'demo.json');
      const demo = spawn(
        process.execPath,
        [
          '--disable-warning=ExperimentalWarning',
          'demo/main.ts',
          '--quick',
          '--metrics-port',
          String(metricsPort),
          '--json',
          json,
        ],
        { cwd: root, env: { ...process.env, FORCE_COLOR: '0' } },
      );
      children.push(demo);
      let output = '';
      demo.stdout.on('data', (d) => (output += d));
      demo.stderr.on('data', (d) => (output += d));
      const exited = new Promise<number | null>((resolve) => demo.on('exit', (c) => resolve(c)));

      const alerts = () => prometheus.alerts();
      const waitFor = async (text: string) => {
        while (!output.includes(text)) {
          if (demo.exitCode !== null) assert.fail(`the demo ended before "${text}": ${output}`);
          await sleep(100);
        }
      };

      // After the baseline (its summary line printed, the next scenario not started): nothing fires.
      await waitFor('▶ flaky');
      const afterBaseline = (await alerts()).filter((a) => a.state === 'firing');
      assert.deepEqual(
        afterBaseline.map((a) => a.labels.alertname),
        [],
        'no alert firing after the baseline',
      );

      // During the outage: the breaker-open alert goes pending or firing for the shop's target.
      await waitFor('▶ outage');
      let breakerAlert: string | undefined;
      while (!output.includes('▶ spike') && demo.exitCode === null) {
        const a = (await alerts()).find((x) => x.labels.alertname === 'PgResilienceBreakerOpen');
        if (a) breakerAlert ??= a.state;
        if (breakerAlert === 'firing') break;
        await sleep(250);
      }
      assert.ok(
        breakerAlert === 'pending' || breakerAlert === 'firing',
        `PgResilienceBreakerOpen: ${breakerAlert}`,
      );

      // The last scenario, failover: once Prometheus has the write-unavailability window (writes are
      // back on the new primary), note a moment when every scenario's data is within the panels' windows.
      await waitFor('▶ failover');
      const windowSeries = '{__name__=~"pg_resilience_failover_write_unavailability.*_count"}';
      for (let i = 0; i < 240 && demo.exitCode === null; i++) {
        if (((await prometheus.query(windowSeries)).data?.result.length ?? 0) > 0) break;
        await sleep(250);
      }
      await sleep(1_000);
      const at = Date.now() / 1000;
      assert.equal(await exited, 0, output);

      const queries = dashboardQueries();
      assert.ok(queries.length >= 15, `${queries.length} panel queries`);
      const empty: string[] = [];
      for (const q of queries) {
        const res = await prometheus.query(withVariables(q.expr, { rateInterval: '2m' }), at);
        assert.equal(
          res.status,
          'success',
          `${q.dashboard} / ${q.panel}: ${res.error} in ${withVariables(q.expr, { rateInterval: '2m' })}`,
        );
        if ((res.data?.result.length ?? 0) === 0 && !NOT_IN_THE_DEMO.has(q.panel))
          empty.push(`${q.dashboard} / ${q.panel}: ${withVariables(q.expr, { rateInterval: '2m' })}`);
      }
      assert.deepEqual(empty, [], 'every panel query returns data');
    },
  );
});
