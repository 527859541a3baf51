// What the ORM apps need before they run: the packed package where `pg-resilience/register` resolves
// (a directory inside the repo, so that the package's own dependencies resolve from the repo's
// node_modules, as pg and the ORMs do), and the Prisma client, generated offline.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packedTarball, repoRoot } from '../../support/package.ts';

export const ORMS_TMP = join(repoRoot, '.tmp', 'orms');

/** Unpacks the packed tarball into .tmp/orms/hook/node_modules/pg-resilience; returns .tmp/orms/hook. */
export function installPackedHook(): string {
  const hookDir = join(ORMS_TMP, 'hook');
  const pkgDir = join(hookDir, 'node_modules', 'pg-resilience');
  rmSync(hookDir, { recursive: true, force: true });
  mkdirSync(pkgDir, { recursive: true });
  execFileSync('tar', ['-xzf', packedTarball(), '-C', pkgDir, '--strip-components=1']);
  // A package.json of its own: without it the repo's (name "pg-resilience") would be the nearest, and
  // `pg-resilience/register` would self-resolve to the repo's dist instead of the packed package.
  writeFileSync(join(hookDir, 'package.json'), JSON.stringify({ name: 'orm-matrix-hook', private: true }));
  return hookDir;
}

/**
 * `prisma generate` of test/orms/prisma/schema.prisma into .tmp/orms/prisma/client; returns the path
 * of its client.mts. Offline: PRISMA_SCHEMA_ENGINE_BINARY=/bin/false stops the CLI from downloading the
 * schema engine (generate never runs it).
 */
export function generatePrismaClient(): string {
  const out = join(ORMS_TMP, 'prisma', 'client');
  rmSync(out, { recursive: true, force: true });
  execFileSync(
    process.execPath,
    [
      join(repoRoot, 'node_modules', 'prisma', 'build', 'index.js'),
      'generate',
      '--schema',
      join(repoRoot, 'test', 'orms', 'prisma', 'schema.prisma'),
    ],
    {
      cwd: repoRoot,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: {
        ...process.env,
        PRISMA_SCHEMA_ENGINE_BINARY: '/bin/false',
        CHECKPOINT_DISABLE: '1',
        PRISMA_HIDE_UPDATE_MESSAGE: '1',
      },
    },
  );
  return join(out, 'client.mts');
}
