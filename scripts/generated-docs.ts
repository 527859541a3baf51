// What the docs generators share (scripts/gen-config-docs.ts, scripts/gen-telemetry-docs.ts): Markdown
// tables, a generated region inside a hand-written file, Prettier formatting, and the write-or-check run.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as prettier from 'prettier';

export const root = join(import.meta.dirname, '..');

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** A Markdown table (cells escaped). */
export function table(head: string[], rows: string[][]): string {
  return [
    `| ${head.join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ].join('\n');
}

/** `text` with the part between the `start` and `end` markers (included) replaced by `region`. */
export function replaceRegion(
  text: string,
  start: string,
  end: string,
  region: string,
  file: string,
): string {
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  if (from < 0 || to < from) throw new Error(`${file} has no ${start} … ${end} region`);
  return text.slice(0, from) + region + text.slice(to + end.length);
}

/** The text as the repository's Prettier settings format it (the files are checked by `prettier --check`). */
export async function formatted(path: string, text: string): Promise<string> {
  const options = (await prettier.resolveConfig(path)) ?? {};
  return prettier.format(text, { ...options, filepath: path });
}

/**
 * Writes each `[path, text]` that differs (or, with `--check` on the command line, only reports it).
 * Returns the exit code: 1 when checking found a stale file.
 */
export function writeOrCheck(name: string, wanted: ReadonlyArray<[path: string, text: string]>): number {
  const check = process.argv.includes('--check');
  const stale: string[] = [];
  for (const [path, text] of wanted) {
    let current: string | undefined;
    try {
      current = readFileSync(path, 'utf8');
    } catch {
      current = undefined;
    }
    if (current === text) continue;
    stale.push(path.slice(root.length + 1));
    if (!check) writeFileSync(path, text);
  }
  if (check && stale.length) {
    console.error(
      `${name}: ${stale.join(' and ')} ${stale.length > 1 ? 'are' : 'is'} out of date: run \`node scripts/${name}.ts\``,
    );
    return 1;
  }
  console.log(stale.length ? `${name}: wrote ${stale.join(', ')}` : `${name}: docs are up to date`);
  return 0;
}
