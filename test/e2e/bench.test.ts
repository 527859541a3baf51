/**
 * `npm run bench -- --quick` produces a well-formed report: every section, the machine and versions,
 * the targets table, and results.json with each section's data. It never asserts timings (the numbers
 * of a quick run are not meant to be read; `npm run bench` measures).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

const root = path.join(import.meta.dirname, '..', '..');
const SECTIONS = ['overhead', 'faults', 'recovery', 'rate-limit', 'memory', 'scaling', 'new-paths', 'fleet'];

describe('npm run bench -- --quick', () => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'pg-resilience-bench-'));
  after(() => rmSync(out, { recursive: true, force: true }));

  it('writes results.md and results.json with every section', { timeout: 600_000 }, async () => {
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn('npm', ['run', 'bench', '--', '--quick', '--out', out], { cwd: root });
      let output = '';
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      child.on('exit', (c) => resolve({ code: c, output }));
    });
    assert.equal(code, 0, output.slice(-4000));
    const md = readFileSync(path.join(out, 'results.md'), 'utf8');
    const json = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as {
      meta: Record<string, string>;
      sections: {
        id: string;
        title: string;
        markdown: string;
        targets: { target: string; met: boolean | null }[];
      }[];
    };
    assert.deepEqual(
      json.sections.map((s) => s.id),
      SECTIONS,
    );
    for (const key of ['machine', 'node', 'postgres', 'pg', 'pgResilience', 'date']) {
      assert.ok(json.meta[key] && json.meta[key] !== 'undefined', `meta.${key}: ${json.meta[key]}`);
    }
    assert.match(md, /^# pg-resilience benchmarks/m);
    assert.match(md, /^## Targets$/m);
    assert.match(md, /Quick mode/);
    for (const s of json.sections) {
      assert.ok(md.includes(`## ${s.title}`), `results.md has section ${s.title}`);
      assert.ok(s.markdown.includes('|'), `${s.id}: a table`);
    }
    const targets = json.sections.flatMap((s) => s.targets);
    assert.ok(targets.length >= 6, `${targets.length} targets reported`);
    assert.ok(targets.every((t) => t.target && (t.met === null || typeof t.met === 'boolean')));
  });
});
