// The load run's app (test/chaos/load.test.ts): a plain pg app, copied into a scratch app that has the
// packed pg-resilience and pg installed, and started the way users start theirs:
//   node --expose-gc --import pg-resilience/register app.mjs
// It has no pool 'error' listener and no unhandledRejection handler: absorbing pg's errors is the
// package's job, and anything that escapes crashes this process, which the test reports.
//
// The test drives it over the IPC channel (load.test.ts / harness.ts):
//   → { type: 'phase', name, mode: 'idle' | 'paced' | 'full', rate }  what the workers do from now on
//   → { type: 'window', index }   a new measurement window starts: the lag histogram of the one that ends
//                                 is reported ({ type: 'window' }) and reset
//   → { type: 'stop' }            workers finish their call in flight and stop: { type: 'final' }
//   → { type: 'exit' }            pool.end(), IPC closed: the process ends by itself (exit code 0)
//   ← { type: 'ready' } once the pool answered; { type: 'sample' } every LOAD_SAMPLE_MS (heap after gc(),
//     RSS, breaker state and rate-limit tokens from getResilienceState()).
//
// Workers: LOAD_WORKERS loops, each picking (seeded) a read (2/3: a primary-key lookup) or a
// non-idempotent insert (1/3: a row keyed by worker and sequence number) and calling pool.query. Every
// call's outcome is counted per phase, per operation and per error type (classifyError(e).errorType,
// the label pg-resilience's metrics use), with the rate limiter's reason and whether the error is
// transient. `paced`: the workers together start `rate` calls per second; `full`: as fast as they can.
// A refused call (PGR_RATE_LIMITED, PGR_CIRCUIT_OPEN) is followed by a short pause, as a well-behaved
// client would do (without it the loops would spin on refusals that never leave the microtask queue).
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import {
  classifyError,
  getResilienceState,
  isCircuitOpenError,
  isRateLimitedError,
  isResilienceError,
} from 'pg-resilience';

const WORKERS = Number(process.env.LOAD_WORKERS ?? 32);
const POOL_MAX = Number(process.env.LOAD_POOL_MAX ?? 16);
const SAMPLE_MS = Number(process.env.LOAD_SAMPLE_MS ?? 2000);
const STATE_POLL_MS = 100;
const SEED = Number(process.env.LOAD_SEED ?? 1);
const KV_ROWS = Number(process.env.LOAD_KV_ROWS ?? 1000);
const READ = 'SELECT v FROM load_kv WHERE k = $1';
const INSERT = 'INSERT INTO load_rows (worker, seq) VALUES ($1, $2)';

if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc');
if (typeof process.send !== 'function') throw new Error('run with an IPC channel (fork / stdio ipc)');

/** mulberry32: a small seeded PRNG, so every run issues the same sequence of operations per worker. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: POOL_MAX });

let phase = { name: 'setup', mode: 'idle', rate: 0 };
let stopping = false;
/** Calls finished so far, and how many of them succeeded (for per-window throughput). */
let finishedCalls = 0;
let succeededCalls = 0;

/** `${phase}\t${op}\t${kind}\t${errorType}\t${detail}` → count. kind: success | error. */
const counts = new Map();
/** errorType → one raw code/message seen for it (for the report). */
const errorSamples = new Map();
/** Breaker states seen by polling getResilienceState(), with how many polls saw each. */
const statesSeen = {};
let minTokens = Infinity;

function count(phaseName, op, kind, errorType = '', detail = '') {
  const key = `${phaseName}\t${op}\t${kind}\t${errorType}\t${detail}`;
  counts.set(key, (counts.get(key) ?? 0) + 1);
  finishedCalls++;
  if (kind === 'success') succeededCalls++;
}

/** Counts a failed call; returns the pause (ms) a well-behaved client takes before its next call. */
function failed(phaseName, op, error) {
  const c = classifyError(error);
  let detail = c.transient ? 'transient' : 'final';
  if (isRateLimitedError(error)) detail = `rate_limited:${error.reason}`;
  count(phaseName, op, 'error', c.errorType, detail);
  if (!errorSamples.has(c.errorType)) {
    errorSamples.set(c.errorType, String(error?.code ?? error?.message ?? error).slice(0, 120));
  }
  if (isRateLimitedError(error)) return Math.max(5, Math.min(error.retryAfterMs, 50));
  if (isCircuitOpenError(error)) return 20;
  return 0;
}

async function worker(w) {
  const rand = prng(SEED * 7919 + w);
  const ledger = [];
  let nextAt = performance.now();
  while (!stopping) {
    if (phase.mode === 'idle') {
      await sleep(20);
      nextAt = performance.now();
      continue;
    }
    if (phase.mode === 'paced') {
      // The workers together start `rate` calls per second: each one every WORKERS / rate seconds.
      const interval = (1000 * WORKERS) / phase.rate;
      const now = performance.now();
      if (nextAt < now - interval) nextAt = now; // fell behind: no catch-up burst
      if (nextAt > now) await sleep(nextAt - now);
      nextAt += interval;
      if (stopping) break;
    } else {
      nextAt = performance.now();
    }
    const phaseName = phase.name;
    const op = rand() < 2 / 3 ? 'read' : 'insert';
    let pause = 0;
    if (op === 'read') {
      try {
        await pool.query(READ, [1 + Math.floor(rand() * KV_ROWS)]);
        count(phaseName, op, 'success');
      } catch (error) {
        pause = failed(phaseName, op, error);
      }
    } else {
      const seq = ledger.length;
      ledger.push('?');
      try {
        await pool.query(INSERT, [w, seq]);
        ledger[seq] = 'a'; // acknowledged: must be in the table exactly once
        count(phaseName, op, 'success');
      } catch (error) {
        // Refused before any attempt reached the server (rate limit), or refused by the breaker after
        // attempts that were proved unsent: must be absent. Any other failure: at most once.
        ledger[seq] =
          isResilienceError(error) && (isRateLimitedError(error) || isCircuitOpenError(error)) ? 'r' : 'f';
        pause = failed(phaseName, op, error);
      }
    }
    if (pause > 0) await sleep(pause);
  }
  return ledger.join('');
}

// Event-loop lag, per window.
const lag = monitorEventLoopDelay({ resolution: 10 });
lag.enable();
let windowIndex = -1;
let windowStartedAt = Date.now();
const ms = (ns) => Math.round((ns / 1e6) * 100) / 100;

function closeWindow() {
  const summary = {
    type: 'window',
    index: windowIndex,
    startedAt: windowStartedAt,
    endedAt: Date.now(),
    finishedCalls,
    succeededCalls,
    lag: {
      p50: ms(lag.percentile(50)),
      p99: ms(lag.percentile(99)),
      max: ms(lag.max),
      mean: ms(lag.mean),
      samples: lag.count,
    },
  };
  lag.reset();
  return summary;
}

function memory() {
  globalThis.gc();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, rss: m.rss };
}

function targetState() {
  return getResilienceState().targets[0];
}

const poller = setInterval(() => {
  const t = targetState();
  if (!t) return;
  statesSeen[t.circuit.state] = (statesSeen[t.circuit.state] ?? 0) + 1;
  if (t.rateLimit) minTokens = Math.min(minTokens, t.rateLimit.tokens);
}, STATE_POLL_MS);

const sampler = setInterval(() => {
  const m = memory();
  const t = targetState();
  process.send({
    type: 'sample',
    at: Date.now(),
    phase: phase.name,
    window: windowIndex,
    finishedCalls,
    succeededCalls,
    ...m,
    circuit: t?.circuit.state ?? null,
    tokens: t?.rateLimit?.tokens ?? null,
  });
}, SAMPLE_MS);

let workers = [];

process.on('message', (msg) => {
  if (msg.type === 'phase') {
    phase = { name: msg.name, mode: msg.mode, rate: msg.rate ?? 0 };
  } else if (msg.type === 'window') {
    if (windowIndex >= 0) process.send(closeWindow());
    else lag.reset();
    windowIndex = msg.index;
    windowStartedAt = Date.now();
  } else if (msg.type === 'stop') {
    stopping = true;
    void Promise.all(workers).then((ledgers) => {
      const last = windowIndex >= 0 ? closeWindow() : null;
      clearInterval(sampler);
      clearInterval(poller);
      const m = memory();
      process.send({
        type: 'final',
        lastWindow: last,
        counts: [...counts],
        errorSamples: [...errorSamples],
        ledgers,
        state: getResilienceState(),
        statesSeen,
        minTokens: Number.isFinite(minTokens) ? minTokens : null,
        afterStop: m,
      });
    });
  } else if (msg.type === 'exit') {
    lag.disable();
    void pool.end().then(() => process.disconnect());
  }
});

try {
  await pool.query('SELECT 1');
  count('setup', 'setup', 'success');
} catch (error) {
  failed('setup', 'setup', error);
  throw error;
}
workers = Array.from({ length: WORKERS }, (_, w) => worker(w));
process.send({ type: 'ready', pid: process.pid, workers: WORKERS, poolMax: POOL_MAX });
