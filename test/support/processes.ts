// The processes alive now, read from /proc: for tests that check nothing is left running after a run.
import { readdirSync, readFileSync } from 'node:fs';

/** Command lines of the processes alive now that mention `text` (pid first). */
export function processesMentioning(text: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(text)) out.push(`${pid}: ${cmd}`);
    } catch {
      // gone
    }
  }
  return out;
}
