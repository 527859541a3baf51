// Multi-host targets as libpq reads them (src/instrumentation/multi-host.ts): connection strings,
// host/port lists, PGHOST/PGPORT, target_session_attrs, load_balance_hosts, and what pg gets instead.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { EventEmitter } from 'node:events';
import {
  type FailoverEvent,
  hostRoleChanged,
  onFailoverDetected,
  watchForFailover,
} from '../../src/instrumentation/failover.ts';
import { chooseHost, knownRole, markHostStale } from '../../src/instrumentation/host-choice.ts';
import type { Targets } from '../../src/instrumentation/targets.ts';
import type { PgClientLike } from '../../src/instrumentation/types.ts';
import {
  failoverSignalled,
  onWritesRestored,
  watchWrites,
  type WritesRestoredEvent,
} from '../../src/instrumentation/write-availability.ts';
import {
  clientHostSpec,
  parseConfig,
  parseConnectionString,
  setClientHostSpec,
  singleHostOptions,
} from '../../src/instrumentation/multi-host.ts';
import { clientProbeFactory } from '../../src/instrumentation/probe.ts';

const ENV = ['PGHOST', 'PGPORT', 'PGDATABASE', 'PGTARGETSESSIONATTRS', 'PGLOADBALANCEHOSTS'] as const;
const saved = Object.fromEntries(ENV.map((k) => [k, process.env[k]]));
afterEach(() => {
  for (const k of ENV) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

describe('multi-host targets', () => {
  it('a connection string with two hosts and target_session_attrs', () => {
    const p = parseConnectionString(
      'postgresql://u:p%40ss@h1:5432,h2:5433/db?target_session_attrs=read-write',
    );
    assert.ok(p?.spec);
    assert.deepEqual(p.spec.hosts, [
      { host: 'h1', port: 5432 },
      { host: 'h2', port: 5433 },
    ]);
    assert.equal(p.spec.attrs, 'read-write');
    assert.equal(p.spec.random, false);
    assert.equal(p.spec.target, 'h1:5432,h2:5433/db');
    // What pg is given: the same string naming one host (pg-connection-string parses it).
    assert.equal(
      p.forHost({ host: 'h2', port: 5433 }),
      'postgresql://u:p%40ss@h2:5433/db?target_session_attrs=read-write',
    );
  });

  it('hosts without ports get 5432; IPv6 in brackets; load_balance_hosts=random', () => {
    const p = parseConnectionString('postgres://[::1]:6000,h2/app?load_balance_hosts=random');
    assert.deepEqual(p?.spec?.hosts, [
      { host: '::1', port: 6000 },
      { host: 'h2', port: 5432 },
    ]);
    assert.equal(p?.spec?.random, true);
    assert.equal(p?.spec?.attrs, 'any');
    assert.equal(p?.spec?.target, '[::1]:6000,h2:5432/app');
  });

  it('one host and no session attrs: left to pg', () => {
    assert.equal(parseConnectionString('postgres://u@h1:5432/db')?.spec, undefined);
    assert.equal(parseConfig({ host: 'h1', port: 5432, database: 'db' }), undefined);
  });

  it('config host and port lists, one port for all, or one per host', () => {
    assert.deepEqual(parseConfig({ host: 'h1,h2', port: '5432,5433', database: 'db' })?.hosts, [
      { host: 'h1', port: 5432 },
      { host: 'h2', port: 5433 },
    ]);
    assert.deepEqual(parseConfig({ host: 'h1,h2', port: 6000, database: 'db' })?.hosts, [
      { host: 'h1', port: 6000 },
      { host: 'h2', port: 6000 },
    ]);
    assert.throws(
      () => parseConfig({ host: 'h1,h2,h3', port: '1,2' }),
      /could not match 2 port numbers to 3 hosts/,
    );
  });

  it('PGHOST / PGPORT / PGTARGETSESSIONATTRS lists when the config names no host', () => {
    process.env.PGHOST = 'a,b';
    process.env.PGPORT = '1111,2222';
    process.env.PGTARGETSESSIONATTRS = 'primary';
    const spec = parseConfig({ database: 'db' });
    assert.deepEqual(spec?.hosts, [
      { host: 'a', port: 1111 },
      { host: 'b', port: 2222 },
    ]);
    assert.equal(spec?.attrs, 'primary');
  });

  it('every target_session_attrs value libpq accepts, and an error for others', () => {
    for (const v of ['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby']) {
      assert.equal(parseConfig({ host: 'h1,h2', target_session_attrs: v })?.attrs, v);
    }
    assert.throws(
      () => parseConfig({ host: 'h1,h2', target_session_attrs: 'master' }),
      /invalid target_session_attrs/,
    );
    assert.throws(
      () => parseConfig({ host: 'h1,h2', load_balance_hosts: 'yes' }),
      /invalid load_balance_hosts/,
    );
  });

  it('a single host with a role to check is handled too (libpq checks it)', () => {
    assert.equal(
      parseConfig({ host: 'h1', database: 'd', target_session_attrs: 'read-write' })?.target,
      'h1:5432/d',
    );
  });

  it("a pool's client is constructed for the first host", () => {
    const spec = parseConfig({ host: 'h1,h2', port: '1,2', database: 'd' });
    assert.ok(spec);
    assert.deepEqual(singleHostOptions({ host: 'h1,h2', port: '1,2', database: 'd', max: 3 }, spec), {
      host: 'h1',
      port: 1,
      database: 'd',
      max: 3,
    });
    const url = 'postgresql://u:p@h1:1,h2:2/d';
    const fromUrl = parseConfig({ connectionString: url });
    assert.ok(fromUrl);
    assert.equal(
      singleHostOptions({ connectionString: url }, fromUrl).connectionString,
      'postgresql://u:p@h1:1/d',
    );
  });

  it("a recovery probe built from a pool's client chooses its host from the list, not the client's host", () => {
    // A pool's client is constructed for the first host: its probe must not stick to that host (the old
    // primary, refusing after a failover), or the breaker never closes.
    const spec = parseConfig({
      host: 'h1,h2',
      port: '1,2',
      database: 'd',
      target_session_attrs: 'read-write',
    });
    assert.ok(spec);
    class FakeClient {
      host = 'h1';
      port = 1;
      connectionParameters = { host: 'h1', port: 1, database: 'd', user: 'u', password: 'p' };
      config: Record<string, unknown>;
      constructor(config: Record<string, unknown> = {}) {
        this.config = config;
      }
    }
    const poolClient = new FakeClient();
    setClientHostSpec(poolClient, spec);
    const probe = clientProbeFactory(poolClient)?.(1_000);
    assert.ok(probe);
    assert.equal(clientHostSpec(probe as never), spec);
    // A single-host client's probe is a plain client.
    const plain = clientProbeFactory(new FakeClient())?.(1_000);
    assert.equal(clientHostSpec(plain as never), undefined);
  });
});

// ---- the `failover` settings change what host-choice.ts and failover.ts do ----

/** A stand-in for pg's Client as the role checks use it: every check answers "primary", and is counted. */
function fakeClient(): { client: object; checks: Array<Record<string, unknown>> } {
  const checks: Array<Record<string, unknown>> = [];
  class Checked {
    constructor(config: Record<string, unknown>) {
      checks.push(config);
    }
    connect = async (): Promise<void> => {};
    query = async () => ({ rows: [{ rec: false, ro: 'off' }] });
    end = async (): Promise<void> => {};
    on = (): void => {};
  }
  const client = new Checked({});
  checks.length = 0; // the app's own client is no check
  return { client, checks };
}

describe('failover settings', () => {
  it('roleTrustMs 0: a checked role is trusted until an error; roleTrustMs > 0: checked again after it', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
    const spec = parseConfig({
      host: 'h1,h2',
      port: '7001,7002',
      database: 'd',
      target_session_attrs: 'read-write',
    });
    assert.ok(spec);
    const { client, checks } = fakeClient();
    const h1 = { host: 'h1', port: 7001 };
    try {
      assert.deepEqual(await chooseHost(spec, client, { timeoutMs: 5000, trustMs: 0 }), h1);
      assert.equal(checks.length, 1);
      t.mock.timers.tick(3_600_000);
      await chooseHost(spec, client, { timeoutMs: 5000, trustMs: 0 });
      assert.equal(checks.length, 1, 'trusted until an error: no new check an hour later');
      await chooseHost(spec, client, { timeoutMs: 5000, trustMs: 30_000 });
      assert.equal(checks.length, 2, 'older than roleTrustMs: checked again');
      t.mock.timers.tick(29_999);
      await chooseHost(spec, client, { timeoutMs: 5000, trustMs: 30_000 });
      assert.equal(checks.length, 2, 'within roleTrustMs: trusted');
      t.mock.timers.tick(1);
      await chooseHost(spec, client, { timeoutMs: 5000, trustMs: 30_000 });
      assert.equal(checks.length, 3);
    } finally {
      markHostStale(h1);
    }
  });

  it('roleCheckTimeoutMs bounds both the connect and the query of a check', async () => {
    const spec = parseConfig({
      host: 'h3,h4',
      port: '7003,7004',
      database: 'd',
      target_session_attrs: 'primary',
    });
    assert.ok(spec);
    const { client, checks } = fakeClient();
    try {
      await chooseHost(spec, client, { timeoutMs: 1234, trustMs: 0 });
      assert.equal(checks[0]?.connectionTimeoutMillis, 1234);
      assert.equal(checks[0]?.query_timeout, 1234);
    } finally {
      markHostStale({ host: 'h3', port: 7003 });
    }
  });

  for (const evictOnFailover of [true, false]) {
    it(`evictOnFailover ${evictOnFailover}: a role change ${evictOnFailover ? 'closes' : 'leaves'} the pooled connections to that host`, () => {
      const spec = parseConfig({ host: 'h5,h6', port: '7005,7006', database: 'd' });
      assert.ok(spec);
      const h5 = { host: 'h5', port: 7005 };
      const idle = { name: 'idle' };
      const busy = { name: 'busy', _poolUseCount: 3 };
      const removed: unknown[] = [];
      const pool = {
        _idle: [{ client: idle }],
        _clients: [idle, busy],
        // pg-pool's _remove forgets the client and ends it
        _remove(c: object) {
          removed.push(c);
          this._clients = this._clients.filter((x) => x !== c);
        },
      };
      const targets = {
        registry: { forTarget: () => ({ settings: { failover: { evictOnFailover } } }) },
        pools: () => [pool],
      } as unknown as Targets;
      const event = hostRoleChanged(h5, spec, '25006', targets, () => h5);
      assert.equal(knownRole(h5), 'unknown', 'the role is forgotten either way');
      if (evictOnFailover) {
        assert.deepEqual(removed, [idle]);
        assert.equal(busy._poolUseCount, Infinity, 'the checked-out client is discarded when released');
        assert.deepEqual([event.evicted, event.discarded], [1, 1]);
      } else {
        assert.deepEqual(removed, []);
        assert.equal(busy._poolUseCount, 3);
        assert.deepEqual([event.evicted, event.discarded], [0, 0]);
      }
    });
  }
});

describe('the write-unavailability window', () => {
  it('opens on the first signal of a target, closes on the next INSERT/UPDATE/DELETE/MERGE that succeeds on a connection opened after it', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: 5_000 });
    const seen: WritesRestoredEvent[] = [];
    const stop = onWritesRestored((e) => seen.push(e));
    const watched = (): EventEmitter => {
      const connection = new EventEmitter();
      watchWrites({ connection } as unknown as PgClientLike, () => 'w1:1,w2:2/d');
      return connection;
    };
    try {
      const old = watched();
      old.emit('commandComplete', { text: 'INSERT 0 1' });
      t.mock.timers.tick(1);
      assert.equal(seen.length, 0, 'no window open: nothing to close');
      assert.equal(old.listenerCount('commandComplete'), 0, 'opened with no window open: not watched');
      assert.equal(failoverSignalled('w1:1,w2:2/d', 'admin_shutdown'), true);
      t.mock.timers.tick(300);
      assert.equal(failoverSignalled('w1:1,w2:2/d', 'read_only'), false, 'the same failover');
      old.emit('commandComplete', { text: 'INSERT 0 1' });
      assert.equal(seen.length, 0, 'a write on a connection from before the signal may be the old primary’s');
      const fresh = watched();
      assert.equal(fresh.listenerCount('commandComplete'), 1, 'opened during the window: watched');
      t.mock.timers.tick(400);
      fresh.emit('commandComplete', { text: 'SELECT 1' });
      fresh.emit('commandComplete', { text: 'COMMIT' });
      assert.equal(seen.length, 0, 'a read or a COMMIT is no proof that writes are accepted');
      fresh.emit('commandComplete', { text: 'UPDATE 3' });
      assert.deepEqual(seen, [{ target: 'w1:1,w2:2/d', kind: 'admin_shutdown', durationMs: 700 }]);
      fresh.emit('commandComplete', { text: 'DELETE 1' });
      assert.equal(seen.length, 1, 'closed once');
      t.mock.timers.tick(1);
      assert.equal(failoverSignalled('w1:1,w2:2/d', 'read_only'), true, 'the next failover opens a new one');
      t.mock.timers.tick(1);
      watched().emit('commandComplete', { text: 'MERGE 1' });
      assert.equal(seen.length, 2);
    } finally {
      stop();
    }
  });
});

describe('one failover, however many connections report it', () => {
  it('a late error on a connection opened before the previous signal of that server, or before writes were restored, is no new failover', (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: 9_000 });
    const spec = parseConfig({ host: 'e1,e2', port: '7011,7012', database: 'd' });
    assert.ok(spec);
    const e1 = { host: 'e1', port: 7011 };
    const targets = {
      registry: { forTarget: () => ({ settings: { failover: { evictOnFailover: true } } }) },
      pools: () => [],
    } as unknown as Targets;
    const events: FailoverEvent[] = [];
    const stop = onFailoverDetected((e) => events.push(e));
    const connect = (): EventEmitter => {
      t.mock.timers.tick(1);
      const connection = new EventEmitter();
      watchForFailover(
        { connection } as unknown as PgClientLike,
        e1,
        spec,
        () => targets,
        () => e1,
      );
      return connection;
    };
    try {
      const a = connect();
      const b = connect();
      // 57P02 (crash shutdown) is acted on at once; a 57P01 waits for a check of the host.
      a.emit('errorMessage', { code: '57P02' });
      b.emit('errorMessage', { code: '57P02' });
      const c = connect(); // after the failover: the write that closes its window
      const d = connect(); // opened during the window, still on the old server
      c.emit('commandComplete', { text: 'INSERT 0 1' });
      b.emit('errorMessage', { code: '25006' }); // b, checked out before, answers late
      d.emit('errorMessage', { code: '25006' }); // d, opened before writes were restored: an echo too
      connect().emit('errorMessage', { code: '25006' }); // a connection from after it: a new failover
      assert.deepEqual(
        events.map((e) => [e.kind, e.first]),
        [
          ['crash_shutdown', true],
          ['crash_shutdown', false],
          ['read_only', false],
          ['read_only', false],
          ['read_only', true],
        ],
      );
    } finally {
      stop();
      markHostStale(e1);
    }
  });
});

describe('a 57P01 is a failover only once a check of the host confirms it', () => {
  it('nothing is reported while pg hands the error on; a host that cannot be checked then counts', async () => {
    const spec = parseConfig({ host: 'f1,f2', port: '7021,7022', database: 'd' });
    assert.ok(spec);
    const f1 = { host: 'f1', port: 7021 };
    const targets = {
      registry: {
        forTarget: () => ({ settings: { failover: { evictOnFailover: true, roleCheckTimeoutMs: 50 } } }),
      },
      pools: () => [],
    } as unknown as Targets;
    const events: FailoverEvent[] = [];
    const stop = onFailoverDetected((e) => events.push(e));
    try {
      const connection = new EventEmitter();
      // A fake client: the check's own connection cannot be made, as with a server that went away.
      watchForFailover(
        { connection } as unknown as PgClientLike,
        f1,
        spec,
        () => targets,
        () => f1,
      );
      connection.emit('errorMessage', { code: '57P01' });
      assert.equal(events.length, 0, 'decided off the query path');
      for (let i = 0; i < 50 && events.length === 0; i++) await new Promise((r) => setImmediate(r));
      assert.deepEqual(
        events.map((e) => [e.host, e.kind]),
        [['f1:7021', 'admin_shutdown']],
      );
    } finally {
      stop();
      markHostStale(f1);
    }
  });
});
