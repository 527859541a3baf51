// Multi-host targets under the hook (docs/failover.md), on a real primary and streaming standby: which
// server each target_session_attrs value reaches, in each form libpq accepts (connection string, host/
// port lists, PGHOST/PGPORT), hosts tried in order past a dead one, and the target being the logical
// database (one policy for the host list). Bare pg, for comparison, cannot use these forms at all.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PgResilienceInstrumentation } from '../../src/index.ts';
import type { ReplicaPair } from '../support/replication.ts';

// Before pg is loaded (the support modules load it): the instrumentation patches it on require.
const instrumentation = new PgResilienceInstrumentation({
  retry: { maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 20, budget: { enabled: false } },
  circuitBreaker: { enabled: false },
  recovery: { enabled: false },
});
const { startReplicaPair } = await import('../support/replication.ts');
const { freePort } = await import('../support/postgres.ts');
const pg = (await import('pg')).default;
type PoolConfig = import('pg').PoolConfig;

const T = { timeout: 20_000 };

describe('multi-host targets (real primary + standby)', { timeout: 60_000 }, () => {
  let pair: ReplicaPair;
  let P: number; // primary's port
  let S: number; // standby's port
  let dead: number; // a port nothing listens on
  const pools: InstanceType<typeof pg.Pool>[] = [];

  const url = (ports: number[], params = ''): string =>
    `postgresql://postgres:${pair.primary.password}@${ports.map((p) => `127.0.0.1:${p}`).join(',')}/app${params}`;

  /** The port of the server a pool's query reached, and whether it is a standby. */
  async function reached(config: PoolConfig): Promise<{ port: number; standby: boolean }> {
    const pool = new pg.Pool({ max: 2, connectionTimeoutMillis: 3000, ...config });
    pool.on('error', () => {});
    pools.push(pool);
    const r = await pool.query<{ port: number; rec: boolean }>(
      'SELECT inet_server_port() AS port, pg_is_in_recovery() AS rec',
    );
    return { port: r.rows[0]!.port, standby: r.rows[0]!.rec };
  }

  before(async () => {
    pair = await startReplicaPair();
    P = pair.primary.port;
    S = pair.standby.port;
    dead = await freePort();
  });
  after(async () => {
    await Promise.all(pools.map((p) => p.end().catch(() => {})));
    await pair?.close();
    instrumentation.disable();
  });

  it('bare pg rejects a connection string with a host list', T, () => {
    // What the hook makes usable: pg-connection-string cannot parse it (the Client constructor throws).
    assert.throws(() => new pg.Client({ connectionString: url([S, P]) }), /Invalid URL/);
  });

  for (const [attrs, want] of [
    ['read-write', 'primary'],
    ['primary', 'primary'],
    ['read-only', 'standby'],
    ['standby', 'standby'],
    ['prefer-standby', 'standby'],
  ] as const) {
    it(`target_session_attrs=${attrs} reaches the ${want}, whatever the order of the hosts`, T, async () => {
      for (const order of [
        [S, P],
        [P, S],
      ]) {
        const r = await reached({ connectionString: url(order, `?target_session_attrs=${attrs}`) });
        assert.equal(r.port, want === 'primary' ? P : S, `hosts ${order.join(',')}`);
        assert.equal(r.standby, want === 'standby');
      }
    });
  }

  it('target_session_attrs=any (the default) takes the first host that accepts connections', T, async () => {
    assert.equal((await reached({ connectionString: url([S, P]) })).port, S);
    assert.equal((await reached({ connectionString: url([P, S]) })).port, P);
    // A dead first host: the first connect fails (refused) and the retry goes to the next host.
    assert.equal((await reached({ connectionString: url([dead, P]) })).port, P);
  });

  it('read-write past a dead host and a standby', T, async () => {
    const r = await reached({ connectionString: url([dead, S, P], '?target_session_attrs=read-write') });
    assert.equal(r.port, P);
  });

  it('prefer-standby falls back to the primary; standby alone fails with no suitable host', T, async () => {
    assert.equal(
      (await reached({ connectionString: url([P], '?target_session_attrs=prefer-standby') })).port,
      P,
    );
    await assert.rejects(
      reached({ connectionString: url([P], '?target_session_attrs=standby') }),
      (e: Error) => e.name === 'NoSuitableHostError' && /standby/.test(e.message),
    );
  });

  it("config { host: 'h1,h2', port: 'p1,p2', target_session_attrs } in a pool", T, async () => {
    const r = await reached({
      ...pair.primary.clientConfig(),
      host: '127.0.0.1,127.0.0.1',
      port: `${S},${P}` as unknown as number,
      target_session_attrs: 'read-write',
    } as PoolConfig);
    assert.equal(r.port, P);
  });

  it('PGHOST / PGPORT / PGTARGETSESSIONATTRS, for a standalone client', T, async () => {
    const saved = { h: process.env.PGHOST, p: process.env.PGPORT, a: process.env.PGTARGETSESSIONATTRS };
    process.env.PGHOST = '127.0.0.1,127.0.0.1';
    process.env.PGPORT = `${S},${P}`;
    // pg's Client keeps no target_session_attrs of its config: a standalone client reads the variable.
    process.env.PGTARGETSESSIONATTRS = 'read-write';
    try {
      const client = new pg.Client({
        user: 'postgres',
        password: pair.primary.password,
        database: 'app',
      });
      client.on('error', () => {});
      await client.connect();
      const r = await client.query<{ port: number }>('SELECT inet_server_port() AS port');
      await client.end();
      assert.equal(r.rows[0]!.port, P);
    } finally {
      for (const [k, v] of [
        ['PGHOST', saved.h],
        ['PGPORT', saved.p],
        ['PGTARGETSESSIONATTRS', saved.a],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it('the target is the logical database: one policy for the host list', T, async () => {
    await reached({ connectionString: url([S, P], '?target_session_attrs=read-write') });
    const targets = instrumentation.policies.snapshot().map((s) => s.target);
    assert.ok(targets.includes(`127.0.0.1:${S},127.0.0.1:${P}/app`), targets.join(' '));
  });
});
