/**
 * The optional health endpoint (started when `PG_RESILIENCE_HEALTH_PORT` is set; see docs/health.md):
 *
 *   GET /resilience/health  200 when every breaker is closed, else 503; the HealthReport as JSON
 *   GET /resilience/state   200; the full ResilienceState as JSON
 *
 * HEAD answers like GET without a body; any other method on those paths is 405 (`Allow: GET, HEAD`);
 * any other path is 404. Answers are JSON (`application/json; charset=utf-8`, `cache-control: no-store`).
 *
 * Never hurt the app: the server is unref'd (it never keeps the process alive), every request is
 * answered inside a try/catch (an exception becomes a 500 naming only the error's class, and a
 * diag.error), and server errors after start are reported through diag, never thrown. A listen error
 * (port in use) rejects the returned promise; the caller reports it and the app goes on.
 *
 * Security: binds 127.0.0.1 unless told otherwise; the answers carry targets (`host:port/db`), states,
 * counters and error types only: no SQL text, parameter values, passwords or connection strings.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { diag } from '@opentelemetry/api';
import { DEFAULT_HEALTH_HOST } from '../config/defaults.ts';
import type { HealthTracker } from './health.ts';

export interface HealthServerOptions {
  /** Interface to bind. Default 127.0.0.1 (loopback only). */
  readonly host?: string;
  /** TCP port; 0 picks a free one. */
  readonly port: number;
  readonly tracker: HealthTracker;
}

export interface HealthServer {
  /** Base URL, e.g. `http://127.0.0.1:9464` (the routes are under `/resilience/`). */
  readonly url: string;
  /** Stops listening and closes open connections. Never rejects. */
  close(): Promise<void>;
}

const ALLOW = 'GET, HEAD';

interface Answer {
  readonly status: number;
  readonly body: unknown;
  readonly headers?: Record<string, string>;
}

function route(req: IncomingMessage, tracker: HealthTracker): Answer {
  const path = (req.url ?? '/').split('?', 1)[0];
  if (path !== '/resilience/health' && path !== '/resilience/state') {
    return { status: 404, body: { error: 'not_found' } };
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return { status: 405, body: { error: 'method_not_allowed' }, headers: { allow: ALLOW } };
  }
  if (path === '/resilience/state') return { status: 200, body: tracker.state() };
  const report = tracker.health();
  return { status: report.healthy ? 200 : 503, body: report };
}

function send(req: IncomingMessage, res: ServerResponse, answer: Answer): void {
  const body = JSON.stringify(answer.body, null, 2) + '\n';
  res.writeHead(answer.status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    'content-length': String(Buffer.byteLength(body)),
    ...answer.headers,
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function handle(req: IncomingMessage, res: ServerResponse, tracker: HealthTracker): void {
  try {
    send(req, res, route(req, tracker));
  } catch (error) {
    const name = error instanceof Error ? error.name : typeof error;
    diag.error('pg-resilience: the health endpoint failed to answer; the app is unaffected', error);
    try {
      if (!res.headersSent) send(req, res, { status: 500, body: { error: 'internal_error', type: name } });
      else res.destroy();
    } catch {
      res.destroy();
    }
  }
}

/** Starts the health endpoint; rejects on a listen error (e.g. EADDRINUSE). */
export function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const host = options.host ?? DEFAULT_HEALTH_HOST;
  const { tracker } = options;
  const server = createServer((req, res) => handle(req, res, tracker));
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 1_000;

  return new Promise<HealthServer>((resolve, reject) => {
    const onListenError = (error: Error): void => {
      server.close(() => {});
      reject(error);
    };
    server.once('error', onListenError);
    server.listen({ host, port: options.port }, () => {
      server.off('error', onListenError);
      server.on('error', (error) => {
        diag.error('pg-resilience: the health endpoint failed; the app is unaffected', error);
      });
      server.unref();
      const address = server.address() as AddressInfo;
      const hostPart = address.address.includes(':') ? `[${address.address}]` : address.address;
      let closing: Promise<void> | undefined;
      resolve({
        url: `http://${hostPart}:${address.port}`,
        close() {
          closing ??= new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          });
          return closing;
        },
      });
    });
  });
}
