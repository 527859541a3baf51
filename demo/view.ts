/**
 * The demo's live view: on a terminal, a block of lines redrawn in place (progress through the
 * scenarios, ops/s, success rate, retries, breaker state per target, rate-limit waits, recovery
 * probes, the latest events); elsewhere (CI logs, a pipe), one plain line per interval.
 */

export interface LiveState {
  readonly scenarioIndex: number;
  readonly scenarioCount: number;
  readonly scenario: string;
  readonly purpose: string;
  readonly elapsedMs: number;
  readonly durationMs: number;
  readonly opsPerSecond: number;
  readonly successPct: number | null;
  readonly retries: number;
  readonly suppressed: number;
  /** target → breaker state. */
  readonly breakers: ReadonlyArray<readonly [string, string]>;
  readonly rateLimitWaits: number;
  readonly rateLimitRejections: number;
  readonly recoveryAttempts: number;
  readonly events: readonly string[];
}

const bar = (fraction: number, width = 24): string => {
  const n = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `[${'#'.repeat(n)}${'.'.repeat(width - n)}]`;
};
const pct = (v: number | null): string => (v === null ? '—' : `${v.toFixed(1)} %`);

export class LiveView {
  readonly #out: NodeJS.WriteStream;
  readonly #tty: boolean;
  readonly #plainEveryMs: number;
  #drawn = 0;
  #lastPlain = 0;

  constructor(out: NodeJS.WriteStream = process.stdout, plainEveryMs = 2_000) {
    this.#out = out;
    this.#tty = out.isTTY === true && process.env.TERM !== 'dumb';
    this.#plainEveryMs = plainEveryMs;
  }

  get interactive(): boolean {
    return this.#tty;
  }

  update(s: LiveState): void {
    if (this.#tty) this.#redraw(this.#block(s));
    else if (Date.now() - this.#lastPlain >= this.#plainEveryMs) {
      this.#lastPlain = Date.now();
      this.#out.write(`${this.#plain(s)}\n`);
    }
  }

  /** Prints a line above the live block (or plainly). */
  log(line: string): void {
    if (this.#tty) {
      this.#clear();
      this.#out.write(`${line}\n`);
    } else {
      this.#out.write(`${line}\n`);
    }
  }

  /** Leaves the last block on screen and stops redrawing over it. */
  done(): void {
    this.#drawn = 0;
  }

  #block(s: LiveState): string[] {
    const breakers = s.breakers.map(
      ([t, state]) => `${t} ${state === 'closed' ? 'closed' : state.toUpperCase()}`,
    );
    return [
      `scenario ${s.scenarioIndex + 1}/${s.scenarioCount}: ${s.scenario} ${bar(s.elapsedMs / s.durationMs)} ${(s.elapsedMs / 1000).toFixed(0)}/${(s.durationMs / 1000).toFixed(0)} s`,
      `  ${s.purpose}`,
      `  ops/s ${s.opsPerSecond.toFixed(0).padStart(5)}   success ${pct(s.successPct).padStart(8)}   retries ${String(s.retries).padStart(5)}   suppressed ${String(s.suppressed).padStart(4)}`,
      `  rate limit: waits ${s.rateLimitWaits}, rejected ${s.rateLimitRejections}   recovery probes ${s.recoveryAttempts}`,
      `  breakers: ${breakers.join(' | ') || '—'}`,
      ...s.events.slice(-4).map((e) => `  · ${e}`),
    ];
  }

  #plain(s: LiveState): string {
    const open = s.breakers.filter(([, state]) => state !== 'closed').map(([t, state]) => `${t}=${state}`);
    return (
      `[${s.scenario} ${(s.elapsedMs / 1000).toFixed(0)}/${(s.durationMs / 1000).toFixed(0)}s] ` +
      `ops/s ${s.opsPerSecond.toFixed(0)}, success ${pct(s.successPct)}, retries ${s.retries}, ` +
      `suppressed ${s.suppressed}, rl waits ${s.rateLimitWaits}/rejected ${s.rateLimitRejections}, ` +
      `probes ${s.recoveryAttempts}, breakers ${open.length ? open.join(' ') : 'all closed'}`
    );
  }

  #clear(): void {
    if (this.#drawn > 0) this.#out.write(`\x1b[${this.#drawn}F\x1b[0J`);
    this.#drawn = 0;
  }

  #redraw(lines: string[]): void {
    const width = this.#out.columns || 120;
    this.#clear();
    this.#out.write(`${lines.map((l) => (l.length > width ? `${l.slice(0, width - 1)}…` : l)).join('\n')}\n`);
    this.#drawn = lines.length;
  }
}
