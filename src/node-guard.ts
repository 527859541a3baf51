// Imported first by every entry point: on a Node.js older than the package supports, loading fails here,
// with one clear message, before any dependency that needs a newer Node is evaluated.
export const MIN_NODE_VERSION = '22.15.0';

function isAtLeast(version: string, min: string): boolean {
  const a = version.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x > y;
  }
  return true;
}

if (!isAtLeast(process.versions.node, MIN_NODE_VERSION)) {
  throw new Error(
    `pg-resilience requires Node.js >= ${MIN_NODE_VERSION}; this is Node.js ${process.versions.node}. ` +
      'Upgrade Node.js (22 LTS or 24 LTS), or remove pg-resilience from this process.',
  );
}
