/**
 * The JSON file named by PG_RESILIENCE_CONFIG: any part of the configuration, per-target overrides
 * included (everything but `classify`, which only code can pass). Read and parsed here; validated in
 * resolve.ts with the other layers.
 */
import { readFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import type { ConfigIssue } from './config-error.ts';

export type ReadFile = (path: string) => string;

export const readFileUtf8: ReadFile = (path) => readFileSync(path, 'utf8');

export interface FileLayer {
  /** The absolute path that was read. */
  path: string;
  /** `file /abs/path`: the source named in errors. */
  source: string;
  /** The parsed JSON, if the file could be read and parsed. */
  content?: unknown;
  issues: ConfigIssue[];
}

const reason = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** Reads and parses the file at `rawPath` (as given in PG_RESILIENCE_CONFIG, relative to the working directory). */
export function readConfigFile(rawPath: string, readFile: ReadFile = readFileUtf8): FileLayer {
  if (rawPath.trim() === '') {
    return {
      path: '',
      source: 'file (none)',
      issues: [
        {
          field: 'PG_RESILIENCE_CONFIG',
          value: rawPath,
          source: 'env PG_RESILIENCE_CONFIG',
          allowed: 'must name a readable JSON file, but it is blank; unset it to use no file',
        },
      ],
    };
  }
  const path = resolvePath(rawPath.trim());
  const source = `file ${path}`;
  const unusable = (allowed: string): FileLayer => ({
    path,
    source,
    issues: [{ field: 'PG_RESILIENCE_CONFIG', value: rawPath, source: 'env PG_RESILIENCE_CONFIG', allowed }],
  });
  let text: string;
  try {
    text = readFile(path);
  } catch (e) {
    return unusable(`must name a readable JSON file; reading ${path} failed: ${reason(e)}`);
  }
  try {
    // A byte-order mark is not JSON, but editors write one: tolerate it.
    return { path, source, content: JSON.parse(text.replace(/^\uFEFF/, '')), issues: [] };
  } catch (e) {
    return unusable(`must name a file of valid JSON; ${path} is not: ${reason(e)}`);
  }
}
