import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { afterEach, describe, it } from 'node:test';
import { diag } from '@opentelemetry/api';
import type { TargetSnapshot } from '../../src/policy/types.ts';
import {
  type HealthReport,
  HealthTracker,
  type PoolStats,
  type ResilienceState,
  type StateSource,
} from '../../src/telemetry/health.ts';
import { startHealthServer } from '../../src/telemetry/health-server.ts';
import { fakeClock, T0 } from '../support/clock.ts';
import { captureDiag } from '../support/diag.ts';

// ---- helpers ----

function snap(target: string, circuit: Partial<TargetSnapshot['circuit']> = {}): TargetSnapshot {
  return {
    target,
    circuit: { enabled: true, state: 'closed', since: T0, nextProbeAt: null, lastFailure: null, ...circuit },
    rateLimit: null,
    bulkhead: null,
    retryBudget: { remaining: 10 },
    recovery: null,
    counters: { operations: 0, successes: 0, failures: 0, rejections: 0, retries: 0, timeouts: 0 },
  };
}

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
  diag.disable();
});

async function start(snaps: TargetSnapshot[], pools: PoolStats[] = [], host?: string) {
  const { clock } = fakeClock();
  const source: StateSource = { snapshot: () => snaps, pools: () => pools };
  const tracker = new HealthTracker(source, clock);
  cleanup.push(() => tracker.dispose());
  const server = await startHealthServer(
    host === undefined ? { port: 0, tracker } : { host, port: 0, tracker },
  );
  cleanup.push(() => server.close());
  return { server, tracker };
}

function assertJsonHeaders(res: Response) {
  assert.equal(res.headers.get('content-type'), 'application/json; charset=utf-8');
  assert.equal(res.headers.get('cache-control'), 'no-store');
}

// ---- tests ----

describe('health server', () => {
  it('binds 127.0.0.1 by default', async () => {
    const { server } = await start([]);
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(server.url, 'http://127.0.0.1:0');
  });

  it('GET /resilience/health: 200 with the report when every breaker is closed', async () => {
    const { server } = await start(
      [snap('db:5432/app')],
      [{ target: 'db:5432/app', total: 2, idle: 1, waiting: 0, max: 10 }],
    );
    const res = await fetch(`${server.url}/resilience/health`);
    assert.equal(res.status, 200);
    assertJsonHeaders(res);
    assert.deepEqual(await res.json(), {
      generatedAt: new Date(T0).toISOString(),
      status: 'ok',
      healthy: true,
      score: 100,
      reasons: [],
      targets: [
        {
          target: 'db:5432/app',
          score: 100,
          circuit: 'closed',
          failureRatio: 0,
          retryBudgetUsed: 0,
          poolUtilisation: 0.1,
        },
      ],
    });
  });

  it('GET /resilience/health: 503 with the reasons when a breaker is open', async () => {
    const open = snap('db:5432/app', {
      state: 'open',
      since: T0,
      nextProbeAt: T0 + 30_000,
      lastFailure: { errorType: 'ECONNREFUSED', at: T0 - 1 },
    });
    const { server } = await start([open, snap('replica:5432/app')]);
    const res = await fetch(`${server.url}/resilience/health`);
    assert.equal(res.status, 503);
    assertJsonHeaders(res);
    const body = (await res.json()) as HealthReport;
    assert.equal(body.status, 'down');
    assert.equal(body.healthy, false);
    assert.equal(body.score, 0);
    assert.deepEqual(body.reasons, [
      'breaker open on db:5432/app since 2023-11-14T22:13:20.000Z; next probe at 2023-11-14T22:13:50.000Z; ' +
        'last failure ECONNREFUSED at 2023-11-14T22:13:19.999Z',
    ]);
    assert.deepEqual(
      body.targets.map((t) => [t.target, t.score]),
      [
        ['db:5432/app', 0],
        ['replica:5432/app', 100],
      ],
    );
  });

  it('GET /resilience/state: the full state as JSON (query strings ignored)', async () => {
    const { server, tracker } = await start(
      [snap('db:5432/app')],
      [{ target: 'db:5432/app', total: 3, idle: 3, waiting: 0, max: 5 }],
    );
    const res = await fetch(`${server.url}/resilience/state?pretty=1`);
    assert.equal(res.status, 200);
    assertJsonHeaders(res);
    const body = (await res.json()) as ResilienceState;
    assert.deepEqual(body, JSON.parse(JSON.stringify(tracker.state())));
    assert.deepEqual(body.targets[0]!.pool, { clients: 3, idle: 3, waiting: 0, max: 5, utilisation: 0 });
    assert.equal(body.targets[0]!.circuit.sinceIso, '2023-11-14T22:13:20.000Z');
    assert.deepEqual(body.targets[0]!.retryBudget, { remaining: 10 });
  });

  it('404 for unknown paths', async () => {
    const { server } = await start([]);
    for (const path of ['/', '/resilience', '/resilience/health/', '/resilience/other', '/metrics']) {
      const res = await fetch(`${server.url}${path}`);
      assert.equal(res.status, 404, path);
      assertJsonHeaders(res);
      assert.deepEqual(await res.json(), { error: 'not_found' });
    }
  });

  it('405 with Allow: GET, HEAD for other methods', async () => {
    const { server } = await start([]);
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      for (const path of ['/resilience/health', '/resilience/state']) {
        const res = await fetch(`${server.url}${path}`, { method });
        assert.equal(res.status, 405, `${method} ${path}`);
        assert.equal(res.headers.get('allow'), 'GET, HEAD');
        assert.deepEqual(await res.json(), { error: 'method_not_allowed' });
      }
    }
  });

  it('HEAD answers like GET, without a body', async () => {
    const { server } = await start([snap('db:5432/app', { state: 'half_open' })]);
    const get = await fetch(`${server.url}/resilience/health`);
    const getBody = await get.text();
    const head = await fetch(`${server.url}/resilience/health`, { method: 'HEAD' });
    assert.equal(head.status, 503);
    assert.equal(get.status, 503);
    assertJsonHeaders(head);
    assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(getBody)));
    assert.equal(await head.text(), '');
    const state = await fetch(`${server.url}/resilience/state`, { method: 'HEAD' });
    assert.equal(state.status, 200);
    assert.equal(await state.text(), '');
  });

  it('a throwing source gives a 500 that names only the error class, and a diag.error', async () => {
    const errors = captureDiag();
    let fail = false;
    const { clock } = fakeClock();
    const tracker = new HealthTracker(
      {
        snapshot: () => {
          if (fail) throw new TypeError('password=hunter2 SELECT * FROM secrets');
          return [];
        },
        pools: () => [],
      },
      clock,
    );
    cleanup.push(() => tracker.dispose());
    const server = await startHealthServer({ port: 0, tracker });
    cleanup.push(() => server.close());
    fail = true;
    for (const path of ['/resilience/health', '/resilience/state']) {
      const res = await fetch(`${server.url}${path}`);
      assert.equal(res.status, 500);
      assertJsonHeaders(res);
      const text = await res.text();
      assert.deepEqual(JSON.parse(text), { error: 'internal_error', type: 'TypeError' });
      assert.doesNotMatch(text, /hunter2|SELECT|secrets/);
    }
    assert.equal(errors.length, 2);
    assert.match(String(errors[0]![0]), /health endpoint failed to answer/);
  });

  it('rejects when the port is in use', async () => {
    const { server } = await start([]);
    const port = Number(new URL(server.url).port);
    const { clock } = fakeClock();
    const tracker = new HealthTracker({ snapshot: () => [], pools: () => [] }, clock);
    cleanup.push(() => tracker.dispose());
    await assert.rejects(startHealthServer({ port, tracker }), { code: 'EADDRINUSE' });
  });

  it('binds the host it is given', async () => {
    const { server } = await start([], [], '0.0.0.0');
    assert.match(server.url, /^http:\/\/0\.0\.0\.0:\d+$/);
    const res = await fetch(`${server.url.replace('0.0.0.0', '127.0.0.1')}/resilience/health`);
    assert.equal(res.status, 200);
  });

  it('close() stops it and is idempotent', async () => {
    const { server } = await start([]);
    await Promise.all([server.close(), server.close()]);
    await assert.rejects(fetch(`${server.url}/resilience/health`));
  });

  it('never keeps the process alive (server and tracker unref’d)', async () => {
    const health = new URL('../../src/telemetry/health.ts', import.meta.url).href;
    const serverModule = new URL('../../src/telemetry/health-server.ts', import.meta.url).href;
    const script = `
      const { HealthTracker } = await import(${JSON.stringify(health)});
      const { startHealthServer } = await import(${JSON.stringify(serverModule)});
      const tracker = new HealthTracker({ snapshot: () => [], pools: () => [] });
      const server = await startHealthServer({ port: 0, tracker });
      const res = await fetch(server.url + '/resilience/health');
      console.log(res.status);
    `;
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        ['--input-type=module', '-e', script],
        { timeout: 15_000 },
        (error, stdout, stderr) =>
          error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout),
      );
    });
    assert.equal(out.trim(), '200');
  });
});
