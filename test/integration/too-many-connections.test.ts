// A server that answers 53300 (too many connections) is up and busy: load, not an outage. Four app
// processes, each a pg.Pool of 20 with 20 workers, share a role whose CONNECTION LIMIT (32) is below
// what the pools together can open. Each process runs as a child process with the instrumentation
// loaded before pg (fixtures/register-src.ts via --import, as `--require pg-resilience/register` does).
// Every process must get a fair share of the calls, never see CircuitOpenError while the server is up,
// and serve again within a bound after a server restart under load. Connections live one second
// (pg-pool's maxLifetimeSeconds), so slots change hands and only a process's own policies can keep it
// out (without turnover, whoever holds a slot keeps it, bare pg included). LOAD_BARE=1 runs the same
// apps without the instrumentation, as a baseline (bare pg passes too).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  type LoadApp,
  loadAppReady,
  type LoadStats,
  startLoadApp,
  stopLoadApps,
} from '../support/load-apps.ts';
import { startServer, type TestServer } from '../support/postgres.ts';

const T = { timeout: 90_000 };
const REGISTER = new URL('./fixtures/register-src.ts', import.meta.url).pathname;

const PROCESSES = 4;
const POOL_MAX = 20;
const ROLE_LIMIT = 32;
const LOAD_MS = 10_000;
/** Every process serves again within this long after the restarted server accepts connections. */
const RECOVERY_MS = 6_000;
/** Fair: every process serves at least this share of all calls. */
const FAIR_SHARE = 0.1;
const ROLE = 'load_app';
/** Connections are recycled (pg-pool's maxLifetimeSeconds), so slots change hands under load. */
const LIFETIME_S = Number(process.env.LOAD_LIFETIME ?? 1);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function startApp(server: TestServer, hooked: boolean, name: string): LoadApp {
  const config = {
    ...server.clientConfig({ user: ROLE, password: 'x' }),
    application_name: name,
    maxLifetimeSeconds: LIFETIME_S,
  };
  return startLoadApp({
    execArgv: hooked ? ['--import', REGISTER] : [],
    env: { LOAD_PG: JSON.stringify(config), LOAD_POOL_MAX: String(POOL_MAX) },
  });
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const circuitOpen = (s: LoadStats) => s.errors['PGR_CIRCUIT_OPEN'] ?? 0;

describe('53300 too_many_connections is load, not an outage (4 processes, pools of 20, role limit 32)', () => {
  let server: TestServer;

  before(async () => {
    server = await startServer();
    await server.query(`CREATE ROLE ${ROLE} LOGIN PASSWORD 'x' CONNECTION LIMIT ${ROLE_LIMIT}`);
  });
  after(async () => {
    await server?.close();
  });

  const roleBackends = async (): Promise<number> =>
    (
      await server.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = '${ROLE}'`,
      )
    ).rows[0]!.n;

  // Fails if: a process is locked out (its breaker opens on 53300 and its probe, answered with 53300
  // while the others hold every slot, never closes it): its share stays near 0, CircuitOpenErrors
  // appear while the server is up, or after the restart it does not serve again within RECOVERY_MS.
  it(
    'every process serves a fair share, no CircuitOpenError while up, and all serve again after a restart',
    T,
    async (t) => {
      const apps = Array.from({ length: PROCESSES }, (_, i) =>
        startApp(server, process.env.LOAD_BARE !== '1', `load-${i}`),
      );
      try {
        await Promise.all(apps.map(loadAppReady));
        for (const app of apps) app.child.send({ type: 'go' });

        // Phase 1: LOAD_MS of load against the role's limit.
        let maxBackends = 0;
        const samples: number[] = [];
        const loadEnd = Date.now() + LOAD_MS;
        while (Date.now() < loadEnd) {
          samples.push(await roleBackends());
          maxBackends = Math.max(maxBackends, samples.at(-1)!);
          await sleep(250);
        }
        const served = apps.map((a) => a.stats.ok);
        const total = sum(served);
        const mean = total / PROCESSES;
        const opened = apps.map((a) => circuitOpen(a.stats));
        t.diagnostic(
          `phase 1 (${LOAD_MS} ms): calls served per process ${served.join(' / ')} ` +
            `(shares ${served.map((n) => ((100 * n) / Math.max(1, total)).toFixed(1) + ' %').join(' / ')}, ` +
            `min/mean ${(Math.min(...served) / Math.max(1, mean)).toFixed(2)}); ` +
            `role backends max ${maxBackends} (samples ${samples.join(' ')}); errors ${apps.map((a) => JSON.stringify(a.stats.errors)).join(' ')}`,
        );
        // The fault happened: the pools together (4 × 20) wanted more than the role may hold, so the
        // role's backends stood at its limit. Sampled, with connections turning over every second: a
        // sample can fall in the moment between one connection's end and its successor's start.
        assert.ok(
          maxBackends >= ROLE_LIMIT * 0.9 && maxBackends <= ROLE_LIMIT,
          `the role's backends reached its connection limit (${ROLE_LIMIT}): max sampled ${maxBackends}`,
        );
        assert.ok(total > 0, 'calls were served');
        for (const [i, n] of served.entries()) {
          assert.ok(
            n >= FAIR_SHARE * total,
            `process ${i} served ${n} of ${total} calls (< ${FAIR_SHARE * 100} %): ${served.join(' / ')}`,
          );
        }
        assert.deepEqual(opened, [0, 0, 0, 0], 'no CircuitOpenError while the server is up');

        // Phase 2: restart the server under load.
        await server.restart();
        const restartedAt = Date.now();
        const atRestart = apps.map((a) => a.stats.ok);
        const servedAgainAfter: (number | undefined)[] = apps.map(() => undefined);
        while (Date.now() - restartedAt < RECOVERY_MS && servedAgainAfter.includes(undefined)) {
          await sleep(100);
          for (const [i, a] of apps.entries()) {
            if (servedAgainAfter[i] === undefined && a.stats.ok > atRestart[i]! + 10) {
              servedAgainAfter[i] = Date.now() - restartedAt;
            }
          }
        }
        await sleep(1_000);
        const afterRestart = apps.map((a, i) => a.stats.ok - atRestart[i]!);
        t.diagnostic(
          `phase 2 (restart): served again after ${servedAgainAfter.map((ms) => (ms === undefined ? 'never' : `${ms} ms`)).join(' / ')}; ` +
            `calls since ${afterRestart.join(' / ')}; errors ${apps.map((a) => JSON.stringify(a.stats.errors)).join(' ')}`,
        );
        for (const [i, ms] of servedAgainAfter.entries()) {
          assert.ok(
            ms !== undefined,
            `process ${i} did not serve again within ${RECOVERY_MS} ms of the restart`,
          );
        }
      } finally {
        await stopLoadApps(apps);
      }
    },
  );
});
