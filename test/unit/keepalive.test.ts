// applyDefaultKeepAlive (src/instrumentation/keepalive.ts) on pg-shaped objects: what it sets on the
// Connection pg reads at socket connect, and the cases it must leave alone. The real pg, at every
// supported version, is covered by test/integration/dead-connections.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyDefaultKeepAlive } from '../../src/instrumentation/keepalive.ts';
import type { PgClientLike } from '../../src/instrumentation/types.ts';

interface Fake {
  connection?: { _keepAlive?: unknown; _keepAliveInitialDelayMillis?: unknown; stream?: object };
  connectionParameters?: { keepalives?: number; keepalives_idle?: number };
}

/** A client as pg builds it from `config` (pg's Client constructor and ConnectionParameters). */
function client(
  config: { keepAlive?: boolean; keepAliveInitialDelayMillis?: number } = {},
  stream: object = { setKeepAlive() {} },
): Fake {
  const params: Fake['connectionParameters'] = {};
  if (config.keepAlive === false) params.keepalives = 0;
  else if (config.keepAlive === true) params.keepalives = 1;
  if (typeof config.keepAliveInitialDelayMillis === 'number') {
    params.keepalives_idle = Math.floor(config.keepAliveInitialDelayMillis / 1000);
  }
  return {
    connection: {
      _keepAlive: config.keepAlive || false,
      _keepAliveInitialDelayMillis: config.keepAliveInitialDelayMillis || 0,
      stream,
    },
    connectionParameters: params,
  };
}

const apply = (c: Fake, delayMs = 10_000): Fake['connection'] => {
  applyDefaultKeepAlive(c as unknown as PgClientLike, delayMs);
  return c.connection;
};
const pick = (c: Fake['connection']) => [c?._keepAlive, c?._keepAliveInitialDelayMillis];

describe('applyDefaultKeepAlive', () => {
  it('no keepAlive in the config: on, with the configured delay', () => {
    assert.deepEqual(pick(apply(client())), [true, 10_000]);
  });
  it('keepAlive: false: left off', () => {
    assert.deepEqual(pick(apply(client({ keepAlive: false }))), [false, 0]);
  });
  it('keepAlive: true without a delay: the configured delay (pg would pass 0: the OS default)', () => {
    assert.deepEqual(pick(apply(client({ keepAlive: true }))), [true, 10_000]);
  });
  it("the app's own delay wins", () => {
    assert.deepEqual(pick(apply(client({ keepAlive: true, keepAliveInitialDelayMillis: 3000 }))), [
      true,
      3000,
    ]);
  });
  it('a delay of 0 (liveness.keepAliveInitialDelayMs off): nothing changes', () => {
    assert.deepEqual(pick(apply(client(), 0)), [false, 0]);
  });
  it('a custom stream without setKeepAlive: left alone (pg would throw calling it)', () => {
    assert.deepEqual(pick(apply(client({}, {}))), [false, 0]);
  });
  it('the native client (no Connection): nothing to do, no throw', () => {
    assert.equal(apply({}), undefined);
  });
});
