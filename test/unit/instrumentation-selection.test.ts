import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { selectInstrumentations } from '../../src/register/instrumentation-selection.ts';

const PG = '@opentelemetry/instrumentation-pg';

describe('register hook: OTEL_NODE_ENABLED/DISABLED_INSTRUMENTATIONS (src/register/instrumentation-selection.ts)', () => {
  it('loads instrumentation-pg when neither variable is set, or both are empty', () => {
    assert.deepEqual(selectInstrumentations({}), { pg: true, unknown: [] });
    assert.deepEqual(
      selectInstrumentations({
        OTEL_NODE_ENABLED_INSTRUMENTATIONS: '',
        OTEL_NODE_DISABLED_INSTRUMENTATIONS: '',
      }),
      { pg: true, unknown: [] },
    );
  });
  it('DISABLED=pg (trimmed, among other names) removes it', () => {
    assert.equal(selectInstrumentations({ OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'pg' }).pg, false);
    assert.equal(selectInstrumentations({ OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'http, pg ,fs' }).pg, false);
  });
  it('ENABLED lists what loads: pg only when listed', () => {
    assert.equal(selectInstrumentations({ OTEL_NODE_ENABLED_INSTRUMENTATIONS: 'http,pg' }).pg, true);
    assert.equal(selectInstrumentations({ OTEL_NODE_ENABLED_INSTRUMENTATIONS: 'http' }).pg, false);
  });
  it('ENABLED applies first, then DISABLED removes', () => {
    const env = { OTEL_NODE_ENABLED_INSTRUMENTATIONS: 'pg', OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'pg' };
    assert.equal(selectInstrumentations(env).pg, false);
  });
  it('reports names this hook does not load, as full package names, once each; pg is not among them', () => {
    const env = {
      OTEL_NODE_ENABLED_INSTRUMENTATIONS: 'pg,http,pg-resilience',
      OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'http',
    };
    assert.deepEqual(selectInstrumentations(env).unknown, [
      '@opentelemetry/instrumentation-http',
      '@opentelemetry/instrumentation-pg-resilience',
    ]);
    assert.ok(!selectInstrumentations(env).unknown.includes(PG));
  });
});
