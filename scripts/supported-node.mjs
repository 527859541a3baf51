// Finds or provisions a Node.js that this project supports, from the npm registry's
// node-<platform>-<arch> package (the same binary as nodejs.org, shipped as an npm package).
// Plain JavaScript that parses on old Node versions: it is what runs when the default Node is too old.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The oldest Node.js the library and its scripts support (keep in step with package.json engines). */
export const MIN_NODE = [22, 15, 0];
/** The major provisioned when the default Node is too old: the active LTS. */
export const PROVISIONED_MAJOR = 24;

export function parseVersion(v) {
  return String(v)
    .replace(/^v/, '')
    .split('.')
    .map((n) => Number.parseInt(n, 10) || 0);
}

export function isSupported(version, min = MIN_NODE) {
  const v = parseVersion(version);
  for (let i = 0; i < 3; i++) {
    if (v[i] !== min[i]) return v[i] > min[i];
  }
  return true;
}

function platformPackage(major) {
  const os = process.platform === 'win32' ? 'win' : process.platform;
  return `node-${os}-${process.arch}@${major}`;
}

/**
 * Returns the path of a `node` binary of the given major, installing it from the npm registry into a
 * per-user cache on first use. Throws with one clear message when that fails.
 */
export function provisionNode(major = PROVISIONED_MAJOR) {
  const base = process.env.PG_RESILIENCE_NODE_CACHE || join(homedir(), '.cache', 'pg-resilience', 'node');
  const dir = join(base, String(major));
  const pkg = platformPackage(major);
  const name = pkg.slice(0, pkg.lastIndexOf('@'));
  const bin = join(dir, 'node_modules', name, 'bin', process.platform === 'win32' ? 'node.exe' : 'node');
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const res = spawnSync(
    npm,
    ['install', '--no-audit', '--no-fund', '--no-save', '--loglevel=error', '--prefix', dir, pkg],
    { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' },
  );
  if (res.status !== 0 || !existsSync(bin)) {
    const why = (res.stderr || res.error?.message || '').trim().split('\n').slice(-3).join(' ');
    throw new Error(`could not install ${pkg} from the npm registry into ${dir}: ${why || 'unknown error'}`);
  }
  return bin;
}

/** The version string a node binary reports, e.g. "v24.11.0". */
export function nodeVersionOf(bin) {
  const res = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  return (res.stdout || '').trim();
}
