// The workload every ORM app runs (CommonJS, so both the CommonJS and the ES module apps load it).
// An app builds an adapter { insert, read, transfer, insertAccount, balance, close } on its ORM and
// calls run(adapter). The settings come from the ORM_MATRIX environment variable (JSON):
//   { mode: 'script' | 'load', durationMs, concurrency, runId, opTimeoutMs, waitGo }
// (waitGo: after READY, wait for a line on stdin before starting)
// Every outcome is one stdout line, written as it happens, so the parent keeps what the app acknowledged
// even when the app crashes mid-run:
//   READY                                       the ORM is set up, the workload starts
//   OP <kind> ok|fail|timeout <id> <json>       kind: insert, read, transfer (load mode); the error
//                                               (SQLSTATE or Node code, else its message's start)
//   STEP <json>                                 one step of the fixed script (script mode)
//   PG <json>                                   each loaded copy of pg and how many wrappers its
//                                               Client.prototype.query carries (0 bare)
//   DONE <json>                                 the app finished (closing included)
'use strict';

const settings = JSON.parse(process.env.ORM_MATRIX ?? '{}');
const mode = settings.mode ?? 'script';
const opTimeoutMs = settings.opTimeoutMs ?? 3000;

/** What identifies an error across arms: the SQLSTATE (or Node code), else the start of its message. */
function errorCode(err) {
  for (let e = err, depth = 0; e && depth < 5; depth++, e = e.cause) {
    if (typeof e.code === 'string' && e.code) return e.code;
    if (typeof e.meta?.code === 'string') return e.meta.code;
    if (typeof e.original?.code === 'string') return e.original.code;
    if (typeof e.parent?.code === 'string') return e.parent.code;
  }
  const message = err && typeof err.message === 'string' ? err.message : String(err);
  return message.replace(/\s+/g, ' ').slice(0, 60);
}

/** Settles within opTimeoutMs: some ORMs hang forever once their pool has drained. */
function bounded(promise) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ timeout: true }), opTimeoutMs);
  });
  return Promise.race([
    promise.then(
      (value) => ({ value }),
      (error) => ({ error }),
    ),
    timeout,
  ]).finally(() => clearTimeout(timer));
}

async function op(kind, id, fn) {
  const res = await bounded(Promise.resolve().then(fn));
  const say = (outcome, detail) => console.log(`OP ${kind} ${outcome} ${id} ${JSON.stringify(detail)}`);
  if (res.timeout) say('timeout', 'timeout');
  else if (res.error) say('fail', errorCode(res.error));
  else if (kind === 'read' && res.value == null) say('fail', 'acknowledged row not found');
  else say('ok', '');
  return res;
}

// The fixed script of the transparency scenario: each step's observable result.
async function script(a) {
  const step = async (name, fn) => {
    const res = await bounded(Promise.resolve().then(fn));
    const out = res.timeout
      ? { step: name, timeout: true }
      : res.error
        ? { step: name, error: errorCode(res.error) }
        : { step: name, value: res.value ?? null };
    console.log(`STEP ${JSON.stringify(out)}`);
  };
  for (let i = 1; i <= 3; i++) await step(`insert s${i}`, () => a.insert(`s${i}`, i).then(() => 'ok'));
  for (let i = 1; i <= 3; i++) await step(`read s${i}`, () => a.read(`s${i}`));
  await step('read missing', () => a.read('missing'));
  await step('transfer 1→2 10', () => a.transfer('t1', 1, 2, 10).then(() => 'ok'));
  await step('transfer 2→3 5', () => a.transfer('t2', 2, 3, 5).then(() => 'ok'));
  await step('transfer rolled back', () => a.transfer('t3', 1, 3, 7, { fail: true }).then(() => 'ok'));
  await step('duplicate account', () => a.insertAccount(1).then(() => 'ok'));
  for (const id of [1, 2, 3]) await step(`balance ${id}`, () => a.balance(id));
}

// The load: `concurrency` workers for durationMs, each cycling insert → read of its last acknowledged
// key → transfer between two accounts (ids 1..10).
async function load(a) {
  const deadline = Date.now() + (settings.durationMs ?? 5000);
  const runId = settings.runId ?? 'r';
  const worker = async (w) => {
    let lastAck;
    const open = () => Date.now() < deadline;
    for (let i = 0; open(); i++) {
      const key = `${runId}-${w}-${i}`;
      const ins = await op('insert', key, () => a.insert(key, i));
      if (!ins.error && !ins.timeout) lastAck = key;
      if (lastAck && open()) await op('read', lastAck, () => a.read(lastAck));
      const src = 1 + ((w + i) % 10);
      const dst = 1 + ((w + 3 * i + 1) % 10);
      if (src !== dst && open())
        await op('transfer', `${key}-t`, () => a.transfer(`${key}-t`, src, dst, 1 + (i % 5)));
      // A worker whose ops fail at once must not spin: the next round after a breath.
      if (ins.error) await new Promise((r) => setTimeout(r, 20));
    }
  };
  await Promise.all(Array.from({ length: settings.concurrency ?? 4 }, (_, w) => worker(w)));
}

function reportPg() {
  for (const path of Object.keys(require.cache)) {
    if (!/[\\/]node_modules[\\/]pg[\\/]lib[\\/]client\.js$/.test(path)) continue;
    let depth = 0;
    const Client = require.cache[path].exports;
    for (let f = Client?.prototype?.query; f?.__original && depth < 10; f = f.__original) depth++;
    console.log(`PG ${JSON.stringify({ path, wrappers: depth })}`);
  }
}

/** Resolves on the first line on stdin: the parent starts every app of a scenario at once. */
function goSignal() {
  return new Promise((resolve) => {
    process.stdin.once('data', () => {
      process.stdin.pause();
      resolve();
    });
  });
}

async function run(adapter) {
  const t0 = Date.now();
  console.log('READY');
  if (settings.waitGo) await goSignal();
  if (mode === 'script') await script(adapter);
  else await load(adapter);
  reportPg();
  // Closing can hang too (a drained pool never ends): bounded, then the process exits anyway.
  const closed = await bounded(Promise.resolve().then(() => adapter.close()));
  console.log(
    `DONE ${JSON.stringify({ ms: Date.now() - t0, close: closed.timeout ? 'timeout' : closed.error ? 'error' : 'ok' })}`,
  );
  process.exit(0);
}

/** A transfer's two balance updates, in account id order (concurrent transfers never deadlock). */
function legs(src, dst, amount) {
  const both = [
    [src, -amount],
    [dst, amount],
  ];
  return src < dst ? both : both.reverse();
}

/** Thrown inside a transaction by the script's rolled-back transfer. */
function abort() {
  throw new Error('transfer aborted by the app');
}

module.exports = { run, settings, legs, abort };
