// Multi-host targets as libpq reads them (src/instrumentation/multi-host.ts): connection strings,
// host/port lists, PGHOST/PGPORT, target_session_attrs, load_balance_hosts, and what pg gets instead.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import {
  parseConfig,
  parseConnectionString,
  singleHostOptions,
} from '../../src/instrumentation/multi-host.ts';

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
});
