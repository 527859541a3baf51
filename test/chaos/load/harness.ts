/**
 * The load run's plumbing (test/chaos/load.test.ts): the app child process and its IPC protocol
 * (app.mjs), a local OTLP/HTTP sink so tracing and logs run exactly as `pg-resilience/register` starts
 * them (OTLP exporters, the SDK's default) without an unreachable collector, and small statistics.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ScratchApp } from '../../support/package.ts';

// ---------------------------------------------------------------------------------------------
// The app's messages (app.mjs)

export interface LagSummary {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
  readonly samples: number;
}

export interface WindowMessage {
  readonly type: 'window';
  readonly index: number;
  readonly startedAt: number;
  readonly endedAt: number;
  /** Cumulative, at the end of the window. */
  readonly finishedCalls: number;
  readonly succeededCalls: number;
  readonly lag: LagSummary;
}

export interface SampleMessage {
  readonly type: 'sample';
  readonly at: number;
  readonly phase: string;
  readonly window: number;
  readonly finishedCalls: number;
  readonly succeededCalls: number;
  /** After gc(). */
  readonly heapUsed: number;
  readonly rss: number;
  readonly circuit: string | null;
  readonly tokens: number | null;
}

export interface TargetStateLike {
  readonly target: string;
  readonly circuit: { readonly state: string };
  readonly rateLimit: { readonly tokens: number; readonly queueSize: number } | null;
  readonly counters: {
    readonly operations: number;
    readonly successes: number;
    readonly failures: number;
    readonly rejections: number;
    readonly retries: number;
    readonly timeouts: number;
  };
}

export interface FinalMessage {
  readonly type: 'final';
  readonly lastWindow: WindowMessage | null;
  /** [`${phase}\t${op}\t${kind}\t${errorType}\t${detail}`, count] */
  readonly counts: [string, number][];
  readonly errorSamples: [string, string][];
  /** Per worker, one character per insert: a acknowledged, f failed (outcome unknown), r refused. */
  readonly ledgers: string[];
  readonly state: { readonly targets: TargetStateLike[] };
  readonly statesSeen: Record<string, number>;
  readonly minTokens: number | null;
  readonly afterStop: { readonly heapUsed: number; readonly rss: number };
}

type FromApp =
  | { readonly type: 'ready'; readonly pid: number; readonly workers: number; readonly poolMax: number }
  | WindowMessage
  | SampleMessage
  | FinalMessage;

export type ToApp =
  | { type: 'phase'; name: string; mode: 'idle' | 'paced' | 'full'; rate?: number }
  | { type: 'window'; index: number }
  | { type: 'stop' }
  | { type: 'exit' };

/** One parsed count key of the app. */
export interface CountRow {
  readonly phase: string;
  readonly op: string;
  readonly kind: 'success' | 'error';
  readonly errorType: string;
  /** `transient`, `final` or `rate_limited:<reason>` for errors. */
  readonly detail: string;
  readonly n: number;
}

export function countRows(counts: readonly [string, number][]): CountRow[] {
  return counts.map(([key, n]) => {
    const [phase = '', op = '', kind = '', errorType = '', detail = ''] = key.split('\t');
    return { phase, op, kind: kind as CountRow['kind'], errorType, detail, n };
  });
}

// ---------------------------------------------------------------------------------------------
// The app process

const OUTPUT_KEEP = 256 * 1024;

export class LoadApp {
  readonly child: ChildProcess;
  readonly samples: SampleMessage[] = [];
  readonly windows: WindowMessage[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #output = '';
  #waiters: { type: FromApp['type']; resolve: (m: FromApp) => void }[] = [];
  #inbox: FromApp[] = [];

  constructor(app: ScratchApp, env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, ['--expose-gc', '--import', 'pg-resilience/register', 'app.mjs'], {
      cwd: app.dir,
      env,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const keep = (c: string): void => {
      this.#output += c;
      if (this.#output.length > OUTPUT_KEEP) this.#output = this.#output.slice(-OUTPUT_KEEP / 2);
    };
    this.child.stdout!.setEncoding('utf8').on('data', keep);
    this.child.stderr!.setEncoding('utf8').on('data', keep);
    this.child.on('error', (e) => keep(`\n[spawn error] ${e.message}\n`));
    this.child.on('message', (m: FromApp) => {
      if (m.type === 'sample') this.samples.push(m);
      else if (m.type === 'window') this.windows.push(m);
      const i = this.#waiters.findIndex((w) => w.type === m.type);
      if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(m);
      else if (m.type !== 'sample' && m.type !== 'window') this.#inbox.push(m);
    });
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, signal) => resolve({ code, signal })),
    );
  }

  get output(): string {
    return this.#output;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  send(m: ToApp): void {
    assert.ok(this.alive, `the app exited: ${this.#output.slice(-4000)}`);
    this.child.send(m);
  }

  /** The next message of `type`; rejects when the app exits first or after `ms`. */
  next<T extends FromApp['type']>(type: T, ms: number): Promise<Extract<FromApp, { type: T }>> {
    const queued = this.#inbox.findIndex((m) => m.type === type);
    if (queued >= 0) {
      return Promise.resolve(this.#inbox.splice(queued, 1)[0] as Extract<FromApp, { type: T }>);
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        type,
        resolve: (m: FromApp) => {
          clearTimeout(timer);
          resolve(m as Extract<FromApp, { type: T }>);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`no '${type}' from the app within ${ms} ms:\n${this.#output.slice(-4000)}`));
      }, ms);
      this.#waiters.push(waiter);
      void this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(
          new Error(`the app exited (${code ?? signal}) before '${type}':\n${this.#output.slice(-4000)}`),
        );
      });
    });
  }

  kill(): void {
    if (this.alive) this.child.kill('SIGKILL');
  }
}

/**
 * The child's environment: this process's, minus every OTEL_* and PG_RESILIENCE_* variable (the
 * package rejects unknown PG_RESILIENCE_* names; the suite's own use the reserved PG_RESILIENCE_TEST_ prefix), plus `env`.
 */
export function appEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('OTEL_') || (k.startsWith('PG_RESILIENCE_') && !k.startsWith('PG_RESILIENCE_TEST_')))
      continue;
    out[k] = v;
  }
  return { ...out, ...env };
}

// ---------------------------------------------------------------------------------------------
// OTLP/HTTP sink (JSON protocol): answers 200 to every export, counts what arrived.

export interface OtlpSink {
  readonly url: string;
  readonly stats: { requests: number; bytes: number; spans: number; logRecords: number; failed: number };
  close(): Promise<void>;
}

export async function startOtlpSink(): Promise<OtlpSink> {
  const stats = { requests: 0, bytes: 0, spans: 0, logRecords: 0, failed: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      stats.requests++;
      stats.bytes += body.length;
      try {
        const doc = JSON.parse(body.toString('utf8')) as {
          resourceSpans?: { scopeSpans?: { spans?: unknown[] }[] }[];
          resourceLogs?: { scopeLogs?: { logRecords?: unknown[] }[] }[];
        };
        for (const r of doc.resourceSpans ?? [])
          for (const s of r.scopeSpans ?? []) stats.spans += s.spans?.length ?? 0;
        for (const r of doc.resourceLogs ?? [])
          for (const s of r.scopeLogs ?? []) stats.logRecords += s.logRecords?.length ?? 0;
      } catch {
        stats.failed++;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// Statistics

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Least-squares slope of y over x. */
export function slope(points: readonly (readonly [number, number])[]): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

export const MB = 1024 * 1024;
export const mb = (bytes: number): number => Math.round((bytes / MB) * 10) / 10;

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
