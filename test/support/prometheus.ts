// Reading a Prometheus exposition as a scraper does: fetch /metrics over HTTP, parse the text format
// into samples (prometheus-text.ts), and run `promtool check metrics` (Debian's `prometheus`
// package) on it. A missing promtool fails the test: CI installs it.
import { spawn } from 'node:child_process';

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
