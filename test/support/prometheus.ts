// Reading a Prometheus exposition as a scraper does: fetch /metrics over HTTP, parse the text format
// into samples (prometheus-text.ts), and run `promtool check metrics` (Debian's `prometheus`
// package) on it. A missing promtool fails the test: CI installs it.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './free-port.ts';

export * from './prometheus-text.ts';

export async function scrape(url: string): Promise<string> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return res.text();
}

/** `promtool check metrics` on `text`: resolves with its output, rejects when it reports a problem. */
export function promtoolCheckMetrics(text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', (e) =>
      reject(new Error(`promtool is required (apt-get install -y prometheus): ${e.message}`)),
    );
    child.on('close', (code) =>
      code === 0 ? resolve(output) : reject(new Error(`promtool check metrics failed (${code}):\n${output}`)),
    );
    child.stdin.end(text);
  });
}

export interface PrometheusServer {
  /** Prometheus's HTTP API base (`http://127.0.0.1:PORT/api/v1`). */
  readonly api: string;
  /** The alerts Prometheus holds now (pending or firing). */
  alerts(): Promise<Array<{ labels: Record<string, string>; state: string }>>;
  /** An instant query at `time` (epoch seconds; now when omitted). */
  query(
    expr: string,
    time?: number,
  ): Promise<{ status: string; error?: string; data?: { result: unknown[] } }>;
  close(): Promise<void>;
}

/**
 * A real Prometheus server (Debian's `prometheus` package) on a free loopback port with temp storage,
 * scraping `targets` (`host:port`) every second and evaluating `rules` (YAML) every second. A missing
 * `prometheus` binary fails the caller: CI installs it.
 */
export async function startPrometheus(options: {
  targets: readonly string[];
  rules?: string;
}): Promise<PrometheusServer> {
  const version = spawnSync('prometheus', ['--version'], { encoding: 'utf8' });
  if (version.error)
    throw new Error(`prometheus is required (apt-get install -y prometheus): ${version.error.message}`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pg-resilience-prometheus-'));
  const port = await freePort();
  if (options.rules !== undefined) writeFileSync(path.join(dir, 'rules.yml'), options.rules);
  writeFileSync(
    path.join(dir, 'prometheus.yml'),
    [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      options.rules !== undefined ? 'rule_files: [rules.yml]' : '',
      'scrape_configs:',
      '  - job_name: pg-resilience',
      `    static_configs: [{ targets: [${options.targets.map((t) => `'${t}'`).join(', ')}] }]`,
      '',
    ].join('\n'),
  );
  const prom = spawn(
    'prometheus',
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  prom.stderr?.on('data', (d) => (log = (log + String(d)).slice(-4000)));
  const close = async (): Promise<void> => {
    if (prom.exitCode === null) {
      const exited = new Promise((r) => prom.once('exit', r));
      prom.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; ; i++) {
    const ready = await fetch(`http://127.0.0.1:${port}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (i > 100 || prom.exitCode !== null) {
      await close();
      throw new Error(`Prometheus did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const api = `http://127.0.0.1:${port}/api/v1`;
  return {
    api,
    alerts: async () =>
      (
        (await (await fetch(`${api}/alerts`)).json()) as {
          data: { alerts: Array<{ labels: Record<string, string>; state: string }> };
        }
      ).data.alerts,
    query: async (expr, time) =>
      (await (
        await fetch(
          `${api}/query?query=${encodeURIComponent(expr)}${time === undefined ? '' : `&time=${time}`}`,
        )
      ).json()) as { status: string; error?: string; data?: { result: unknown[] } },
    close,
  };
}
