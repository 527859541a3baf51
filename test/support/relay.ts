// A plain TCP relay to a port given later. In-process suites create the instrumentation before pg
// loads, and configure per-target settings keyed by proxy ports; but a FaultProxy needs its server's
// port, and the server (test/support/postgres.ts loads pg) can only start after the instrumentation.
// So the proxies forward to a relay started first, and the relay forwards to the server once its port
// is known (`relay.to(server.port)`). Loads no pg.
import net from 'node:net';

export interface Relay {
  readonly port: number;
  /** Forward new connections to this port on 127.0.0.1. */
  to(port: number): void;
  close(): Promise<void>;
}

export async function startRelay(): Promise<Relay> {
  let targetPort = 0;
  const open = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (down) => {
    const up = net.connect({ host: '127.0.0.1', port: targetPort, allowHalfOpen: true });
    for (const [a, b] of [
      [down, up],
      [up, down],
    ] as const) {
      open.add(a);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        open.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    to(p) {
      targetPort = p;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}
