// The Prometheus text exposition format, read: samples with their labels, sums over matching samples,
// metric families. Used by the tests and the demo (it watches its app's /metrics).

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1');
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The sum of the samples named `name` whose labels include `labels`. */
export function sum(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) total += s.value;
  }
  return total;
}

/** The distinct metric names in an exposition. */
export function names(samples: readonly Sample[]): Set<string> {
  return new Set(samples.map((s) => s.name));
}

/** The metric families of an exposition whose names satisfy `keep` (HELP, TYPE and samples). */
export function familiesOf(text: string, keep: (family: string) => boolean): string {
  const out: string[] = [];
  let current = '';
  for (const line of text.split('\n')) {
    const meta = /^# (?:HELP|TYPE|UNIT) (\S+)/.exec(line);
    if (meta) current = meta[1]!;
    else if (line !== '' && !line.startsWith('#')) {
      const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0] ?? '';
      if (!name.startsWith(current)) current = name;
    }
    if (line !== '' && keep(current)) out.push(line);
  }
  return `${out.join('\n')}\n`;
}
