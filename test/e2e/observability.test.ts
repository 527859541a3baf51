/**
 * The observability bundle, proven with data: a real Prometheus server (Debian's, on a free loopback
 * port, temp storage) scrapes the demo's app during a `--quick` run, with the alert rules loaded (their
 * `for:` shortened by rendering them from scripts/alert-rules.ts, not by a second copy). Then:
 * - the breaker-open alert becomes pending or firing during the outage scenario, and no alert fires
 *   after the baseline scenario;
 * - every panel query of every dashboard (grafana/dashboards/*.json), with the Grafana variables
 *   replaced, returns a non-empty result from Prometheus's HTTP API, evaluated while the demo ran.
 * A missing `prometheus` binary fails the test (CI installs Debian's package).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { dashboardQueries, withVariables } from '../../grafana/dashboards/src/queries.ts';
import { alertRules } from '../../scripts/alert-rules.ts';
import { freePort } from '../support/postgres.ts';

const root = path.join(import.meta.dirname, '..', '..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('observability bundle against a real Prometheus', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pg-resilience-prometheus-'));
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    'alerts fire in the outage, not after the baseline; every dashboard panel has data',
    { timeout: 240_000 },
    async () => {
      const version = spawnSync('prometheus', ['--version'], { encoding: 'utf8' });
      if (version.error)
        assert.fail(`prometheus is required (apt-get install -y prometheus): ${version.error.message}`);

      const metricsPort = await freePort();
      const promPort = await freePort();
      writeFileSync(path.join(dir, 'rules.yml'), alertRules({ forOverride: '2s' }));
      writeFileSync(
        path.join(dir, 'prometheus.yml'),
        [
          'global: { scrape_interval: 1s, evaluation_interval: 1s }',
          'rule_files: [rules.yml]',
          'scrape_configs:',
          '  - job_name: pg-resilience-demo',
          `    static_configs: [{ targets: ['127.0.0.1:${metricsPort}'] }]`,
          '',
        ].join('\n'),
      );
      const prom = spawn(
        'prometheus',
        [
          `--config.file=${path.join(dir, 'prometheus.yml')}`,
          `--storage.tsdb.path=${path.join(dir, 'data')}`,
          `--web.listen-address=127.0.0.1:${promPort}`,
        ],
        { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
      );
      children.push(prom);
      let promLog = '';
      prom.stderr?.on('data', (d) => (promLog = (promLog + String(d)).slice(-4000)));
      const api = `http://127.0.0.1:${promPort}/api/v1`;
      for (let i = 0; ; i++) {
        const ready = await fetch(`http://127.0.0.1:${promPort}/-/ready`).then(
          (r) => r.ok,
          () => false,
        );
        if (ready) break;
        if (i > 100) assert.fail(`Prometheus did not start: ${promLog}`);
        await sleep(100);
      }

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

      const alerts = async () =>
        (
          (await (await fetch(`${api}/alerts`)).json()) as {
            data: { alerts: { labels: Record<string, string>; state: string }[] };
          }
        ).data.alerts;
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

      // The last scenario: note a moment when every scenario's data is within the panels' windows.
      await waitFor('▶ stress');
      await sleep(2_500);
      const at = Date.now() / 1000;
      assert.equal(await exited, 0, output);

      const queries = dashboardQueries();
      assert.ok(queries.length >= 15, `${queries.length} panel queries`);
      const empty: string[] = [];
      for (const q of queries) {
        const url = `${api}/query?query=${encodeURIComponent(withVariables(q.expr, { rateInterval: '2m' }))}&time=${at}`;
        const res = (await (await fetch(url)).json()) as {
          status: string;
          error?: string;
          data?: { result: unknown[] };
        };
        assert.equal(
          res.status,
          'success',
          `${q.dashboard} / ${q.panel}: ${res.error} in ${withVariables(q.expr, { rateInterval: '2m' })}`,
        );
        if ((res.data?.result.length ?? 0) === 0)
          empty.push(`${q.dashboard} / ${q.panel}: ${withVariables(q.expr, { rateInterval: '2m' })}`);
      }
      assert.deepEqual(empty, [], 'every panel query returns data');
    },
  );
});
