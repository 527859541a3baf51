// The fault schedule: which faults, in which order, when, for how long, all chosen by the seed.
//
// Two lanes run side by side, so faults follow one another within a lane and overlap across lanes:
// - the proxy lane (network faults between the app and the server): latency + jitter, resets of new
//   connections, resets of open connections, blackhole, refusal, close after N bytes, connections cut
//   at COMMIT (before it is forwarded, then after);
// - the server lane (faults of the server itself, one at a time since they need it up to be applied
//   or undone): stop/start, kill -9 + restart, pg_terminate_backend on every backend, the role's
//   CONNECTION LIMIT exhausted, a slow-query storm against statement_timeout, statements that outlast
//   the package's timeout.queryMs (cancelled on the server).
// Each lane takes every one of its kinds once per cycle, in a seeded order, with seeded durations,
// parameters and gaps. CI mode runs one cycle (every kind at least once); long mode repeats cycles
// (each freshly drawn from the same PRNG) until the duration is spent.

export const PROXY_FAULTS = [
  'latency',
  'reset_new',
  'reset_open',
  'blackhole',
  'refuse',
  'close_after_bytes',
  'cut_commit',
] as const;
export const SERVER_FAULTS = [
  'stop_start',
  'kill_restart',
  'terminate_backends',
  'connection_limit',
  'slow_storm',
  'statement_cancel',
] as const;
export type FaultKind = (typeof PROXY_FAULTS)[number] | (typeof SERVER_FAULTS)[number];
export const ALL_FAULTS: readonly FaultKind[] = [...PROXY_FAULTS, ...SERVER_FAULTS];

export interface PlannedFault {
  kind: FaultKind;
  lane: 'proxy' | 'server';
  /** ms after the start of the fault phase (the lane waits for the previous fault to end first) */
  at: number;
  /** how long the fault stays on, ms (0 for instant faults, which may repeat within it, see params) */
  durationMs: number;
  params: Record<string, number | string>;
}

export type Mode = 'ci' | 'long';

export interface ModeSettings {
  mode: Mode;
  /** long mode: how long the fault phase of the pg-resilience arm runs, ms */
  durationMs: number;
  /** scale of fault durations (CI mode keeps them short) */
  scale: number;
}

export function modeFromEnv(env: NodeJS.ProcessEnv = process.env): ModeSettings {
  const raw = (env.PG_RESILIENCE_TEST_CHAOS_MODE ?? '').trim().toLowerCase();
  if (raw !== '' && raw !== 'ci' && raw !== 'long') {
    throw new Error(`PG_RESILIENCE_TEST_CHAOS_MODE must be "ci" or "long", got ${JSON.stringify(raw)}`);
  }
  if (raw === 'long') {
    const s = Number(env.PG_RESILIENCE_TEST_CHAOS_DURATION_S ?? '600');
    if (!Number.isFinite(s) || s < 30) {
      throw new Error(
        `PG_RESILIENCE_TEST_CHAOS_DURATION_S must be a number of seconds >= 30, got ${env.PG_RESILIENCE_TEST_CHAOS_DURATION_S}`,
      );
    }
    return { mode: 'long', durationMs: s * 1000, scale: 1.5 };
  }
  return { mode: 'ci', durationMs: 0, scale: 1 };
}

export function seedFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.PG_RESILIENCE_TEST_CHAOS_SEED;
  if (raw !== undefined && raw.trim() !== '') {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
      throw new Error(
        `PG_RESILIENCE_TEST_CHAOS_SEED must be an integer from 0 to 4294967295, got ${JSON.stringify(raw)}`,
      );
    }
    return n;
  }
  return Math.floor(Math.random() * 0x100000000) >>> 0;
}

function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const between = (random: () => number, min: number, max: number): number =>
  Math.round(min + random() * (max - min));

function plan(kind: FaultKind, random: () => number, scale: number): Omit<PlannedFault, 'at' | 'lane'> {
  const d = (min: number, max: number) => Math.round(between(random, min, max) * scale);
  switch (kind) {
    case 'latency': {
      const ms = between(random, 20, 120);
      return { kind, durationMs: d(3000, 5000), params: { ms, jitterMs: between(random, 5, ms) } };
    }
    case 'reset_new':
      return { kind, durationMs: d(3000, 5000), params: { share: between(random, 20, 60) / 100 } };
    case 'reset_open':
      // resetOpenConnections() every everyMs while it lasts
      return { kind, durationMs: d(1500, 3000), params: { everyMs: between(random, 300, 900) } };
    case 'blackhole':
      return { kind, durationMs: d(2000, 4000), params: {} };
    case 'refuse':
      return { kind, durationMs: d(2000, 4000), params: {} };
    case 'close_after_bytes': {
      const direction = random() < 0.5 ? 'downstream' : 'both';
      // beyond the handshake (~250 B up, ~620 B down): a few statements in, or mid-result
      return { kind, durationMs: d(3000, 5000), params: { bytes: between(random, 1500, 24_000), direction } };
    }
    case 'cut_commit':
      // cutOnMessage on a `share` of COMMITs: not forwarded for the first half, forwarded then cut after
      return { kind, durationMs: d(3000, 5000), params: { share: between(random, 30, 60) / 100 } };
    case 'stop_start':
      return { kind, durationMs: d(1500, 3500), params: {} };
    case 'kill_restart':
      return { kind, durationMs: d(1000, 3000), params: {} };
    case 'terminate_backends':
      // pg_terminate_backend on every backend, `times` times, spread over the duration
      return { kind, durationMs: d(1000, 3000), params: { times: between(random, 1, 3) } };
    case 'connection_limit':
      // ALTER ROLE … CONNECTION LIMIT = the app's backends now - `below` (never below 0)
      return { kind, durationMs: d(3000, 5000), params: { below: between(random, 0, 2) } };
    case 'slow_storm':
      return { kind, durationMs: d(3000, 5000), params: {} };
    case 'statement_cancel':
      // `statements` concurrent SELECT pg_sleep() that outlast timeout.queryMs; the fault lasts until
      // each caller has its answer (the planned duration is the timeout's, for the plan only)
      return { kind, durationMs: 6000, params: { statements: between(random, 2, 4) } };
  }
}

/** One cycle of both lanes, starting at `start` ms; returns the faults and when the cycle ends. */
function cycle(random: () => number, start: number, scale: number): { faults: PlannedFault[]; end: number } {
  const faults: PlannedFault[] = [];
  let end = start;
  for (const [lane, kinds] of [
    ['proxy', PROXY_FAULTS],
    ['server', SERVER_FAULTS],
  ] as const) {
    let at = start + between(random, 0, 1500);
    for (const kind of shuffle(kinds, random)) {
      const p = plan(kind, random, scale);
      faults.push({ ...p, lane, at });
      // server faults take time to apply and undo (a restart is ~1 s): room for them in the plan
      at += p.durationMs + (lane === 'server' ? 1500 : 0) + between(random, 300, 2500);
    }
    end = Math.max(end, at);
  }
  return { faults: faults.sort((a, b) => a.at - b.at), end };
}

/** The schedule for a run: one cycle (CI), or cycles until `durationMs` (long). */
export function buildSchedule(random: () => number, settings: ModeSettings, cycles?: number): PlannedFault[] {
  const faults: PlannedFault[] = [];
  let start = 0;
  let n = 0;
  for (;;) {
    const c = cycle(random, start, settings.scale);
    faults.push(...c.faults);
    start = c.end;
    n++;
    if (cycles !== undefined ? n >= cycles : settings.mode === 'ci' || start >= settings.durationMs) break;
  }
  return faults;
}
