/**
 * The package as users get it: a tarball from `npm pack`, installed into scratch apps.
 * `npm test` packs once and passes the tarball in PG_RESILIENCE_TEST_TARBALL; run alone, a suite packs
 * it itself.
 */
import { execFileSync, type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';

export const repoRoot = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');

let packed: string | undefined;

/** Path of the packed tarball (packs the package on first use when npm test did not). */
export function packedTarball(): string {
  if (process.env.PG_RESILIENCE_TEST_TARBALL) return process.env.PG_RESILIENCE_TEST_TARBALL;
  if (packed) return packed;
  const dir = mkdtempSync(join(tmpdir(), 'pgr-pack-'));
  execFileSync('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: repoRoot, stdio: 'ignore' });
  const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error(`npm pack wrote no tarball into ${dir}`);
  packed = join(dir, tgz);
  return packed;
}

export interface ScratchApp {
  readonly dir: string;
  write(file: string, content: string): string;
  /** Runs a command in the app's directory with the given Node first on PATH. */
  run(
    cmd: string,
    args: string[],
    opts?: { node?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number },
  ): SpawnSyncReturns<string>;
  /** Runs `node ...args` with the given node binary (default: this test's Node). */
  node(
    args: string[],
    opts?: { node?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number },
  ): SpawnSyncReturns<string>;
  remove(): void;
}

/**
 * A fresh directory with its own package.json, the packed pg-resilience and `pg` installed from the
 * npm registry, the way a user installs them.
 */
export function scratchApp(name: string, extraDeps: string[] = []): ScratchApp {
  const dir = mkdtempSync(join(tmpdir(), `pgr-${name}-`));
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: `scratch-${name}`, private: true }, null, 2),
  );
  execFileSync(
    'npm',
    [
      'install',
      '--no-audit',
      '--no-fund',
      '--prefer-offline',
      '--loglevel=error',
      packedTarball(),
      'pg@^8',
      ...extraDeps,
    ],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const run: ScratchApp['run'] = (cmd, args, opts = {}) => {
    const node = opts.node ?? process.execPath;
    return spawnSync(cmd, args, {
      cwd: dir,
      encoding: 'utf8',
      timeout: opts.timeoutMs ?? 120_000,
      env: { ...process.env, ...opts.env, PATH: `${dirname(node)}${delimiter}${process.env.PATH ?? ''}` },
    });
  };
  return {
    dir,
    write(file, content) {
      const path = join(dir, file);
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, content);
      return path;
    },
    run,
    node: (args, opts = {}) => run(opts.node ?? process.execPath, args, opts),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
