// A free loopback port, in a module of its own: it loads no pg, so a test can take one before its
// instrumentation patches pg.
import net from 'node:net';

/** A port that was free on `host` (127.0.0.1) a moment ago (found by binding port 0). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
