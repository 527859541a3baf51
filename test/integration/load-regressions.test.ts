/**
 * Regressions found by the load run (test/chaos/load.test.ts).
 *
 * The fault proxy resetting a connection whose FIN it had just forwarded: the test file passed, then its
 * process never exited (100% CPU in Node's exit cleanup, node::Environment::CleanupHandles). Cause:
 * `socket.resetAndDestroy()` while the socket's shutdown (FIN) is pending fails in libuv with EINVAL
 * (uv_tcp_close_reset), and Node marks the handle closing without closing it, so the exit cleanup waits
 * for it forever. The load run hit it when a refused-connections outage (refuse(true) resets every open
 * connection) met a connection that pg_terminate_backend had just ended. Here it is made deterministic
 * with the blackhole: a FIN held back while blackholed is forwarded the moment it is lifted, and
 * resetOpenConnections() in the same tick resets that socket. The child process must end by itself.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { it } from 'node:test';

const PROXY = new URL('../support/fault-proxy.ts', import.meta.url).href;

const SCRIPT = `
import net from 'node:net';
import { FaultProxy } from ${JSON.stringify(PROXY)};
const upstreamSockets = [];
const server = net.createServer((s) => { s.on('error', () => {}); s.resume(); upstreamSockets.push(s); });
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: server.address().port });
const client = net.connect(proxy.port, '127.0.0.1');
client.on('error', () => {});
await new Promise((r) => client.once('connect', r));
while (upstreamSockets.length === 0) await new Promise((r) => setTimeout(r, 5));
proxy.blackhole(true);
client.end(); // the client's FIN: held by the proxy while blackholed
await new Promise((r) => setTimeout(r, 100));
proxy.blackhole(false); // forwards the FIN to the upstream socket (end(): a shutdown is pending)...
const reset = proxy.resetOpenConnections(); // ...and resets that socket in the same tick
const closed = await new Promise((r) => {
  upstreamSockets[0].once('close', () => r(true));
  setTimeout(() => r(false), 3000);
});
await proxy.close();
server.close();
client.destroy();
console.log('RESULT ' + JSON.stringify({ reset, closed, active: proxy.stats.active }));
`;

it('the fault proxy resetting a connection whose FIN is still being sent leaves a process that exits', () => {
  const res = spawnSync(
    process.execPath,
    ['--disable-warning=ExperimentalWarning', '--input-type=module', '--eval', SCRIPT],
    { encoding: 'utf8', timeout: 20_000 },
  );
  assert.equal(
    res.signal,
    null,
    `the process did not exit by itself (killed by ${res.signal}): ${res.stderr}`,
  );
  assert.equal(res.status, 0, res.stderr);
  const line = res.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  assert.ok(line, res.stdout + res.stderr);
  assert.deepEqual(JSON.parse(line.slice('RESULT '.length)), { reset: 1, closed: true, active: 0 });
});
