// A fault-injecting TCP proxy (pure node:net) to put between a pg client and a PostgreSQL server:
// latency with jitter, resets on accept, reset of open connections, blackhole, refused connects,
// connections cut (FIN or RST) after n bytes, connections reset right after a whole server message, and
// connections cut at a client message matching a pattern (before or after forwarding it). The proxy
// never throws an unhandled 'error'.
// Part of the harness shared by the tests, the demo and the benchmarks (test/support/README.md).
import net from 'node:net';

/** A server the proxy can stand in front of (the test harness's TestServer, the demo's server). */
export interface ProxiedServer<C = unknown> {
  readonly host: string;
  readonly port: number;
  readonly connectionString: string;
  /** Connection settings with the overrides applied (host and port, here). */
  clientConfig(overrides?: object): C;
}

export interface ProxyOptions {
  targetHost: string;
  targetPort: number;
  /** default '127.0.0.1' */
  listenHost?: string;
  /** for seeded runs; default Math.random */
  random?: () => number;
}

export type ByteDirection = 'upstream' | 'downstream' | 'both';

export interface ProxyStats {
  /** connections accepted (including those reset on accept) */
  accepted: number;
  /** proxied connections open now */
  active: number;
  /** connections reset at once by resetNewConnections() */
  resetOnAccept: number;
  /** connections reset by resetOpenConnections() or refuse(true) */
  resetOpen: number;
  /** connections closed (FIN) by closeAfterBytes() */
  closedAfterBytes: number;
  /** connections reset by resetAfterBytes() */
  resetAfterBytes: number;
  /** connections reset by cutAfterServerMessage() */
  cutAfterMessage: number;
  /** bytes forwarded client → server */
  bytesUp: number;
  /** bytes forwarded server → client */
  bytesDown: number;
  /** bytes dropped by blackhole() */
  bytesSwallowed: number;
  /** connections whose upstream connect failed (the client was reset) */
  upstreamFailed: number;
  /** connections cut by cutOnMessage() */
  cutOnMessage: number;
}

/** cutOnMessage(): which client message cuts the connection, and how. */
export interface MessageCut {
  /** Tested against the SQL text of each Query ('Q') and Parse ('P') message the client sends. */
  match: RegExp;
  /**
   * 'before': the message is not forwarded; 'after': it is forwarded, then the connection is cut (after a
   * Parse: once the rest of its extended-query batch, up to its Sync, is forwarded too, so it runs).
   */
  when: 'before' | 'after';
  /**
   * 'fin' (default): FIN both ways ("Connection terminated unexpectedly"); 'rst': ECONNRESET;
   * 'partition': the client gets a FIN, the server side stays open and hears nothing more (a network
   * partition the server does not notice: its backend waits, e.g. idle in transaction).
   */
  mode?: Exclude<Cut, 'msg'>;
  /** Share (0..1) of matching messages that cut; default 1. Drawn with the proxy's `random`. */
  share?: number;
  /** Most cuts this rule makes; default unlimited. */
  limit?: number;
  /** Called right after each cut (e.g. to make the server unreachable from then on). */
  onCut?: () => void;
}

type Dir = 'upstream' | 'downstream';
/**
 * How a connection is cut: FIN or RST both ways, `partition`: only the client is closed (FIN), or `msg`:
 * RST both ways right after a server message (cutAfterServerMessage).
 */
export type Cut = 'fin' | 'rst' | 'partition' | 'msg';

interface Limit {
  n: number;
  direction: ByteDirection;
}

interface Item {
  due: number;
  data?: Buffer;
  end?: boolean;
  cut?: Cut;
}

const MAX_QUEUED_BYTES = 1 << 20;
const CUT_GRACE_MS = 2000;

function noop(): void {}

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;

/**
 * Splits the client → server byte stream into protocol messages: first the untyped startup messages
 * (Int32 length, Int32 code; an SSL or GSSAPI request is followed by another one), then typed messages
 * (Byte1 type, Int32 length including itself). Keeps an incomplete message until the rest arrives.
 */
class FrontendFramer {
  #tail: Buffer = Buffer.alloc(0);
  #startup = true;

  /** The bytes not yet part of a complete message. */
  get tailLength(): number {
    return this.#tail.length;
  }

  /** The complete messages that `chunk` completes, each whole (its bytes from earlier chunks included). */
  push(chunk: Buffer): Buffer[] {
    let buf = this.#tail.length === 0 ? chunk : Buffer.concat([this.#tail, chunk]);
    const messages: Buffer[] = [];
    for (;;) {
      const headerLength = this.#startup ? 4 : 5;
      if (buf.length < headerLength) break;
      const length = this.#startup ? buf.readInt32BE(0) : 1 + buf.readInt32BE(1);
      if (length < headerLength - 1 || buf.length < length) break;
      const message = buf.subarray(0, length);
      if (this.#startup) {
        const code = length >= 8 ? message.readInt32BE(4) : 0;
        if (code !== SSL_REQUEST && code !== GSSENC_REQUEST) this.#startup = false;
      }
      messages.push(message);
      buf = buf.subarray(length);
    }
    this.#tail = Buffer.from(buf);
    return messages;
  }
}

/** The SQL text of a Query or Parse message, else undefined. */
function sqlOf(message: Buffer): string | undefined {
  const type = String.fromCharCode(message[0]!);
  if (type === 'Q') return message.toString('utf8', 5, message.length - 1);
  if (type === 'P') {
    const nameEnd = message.indexOf(0, 5);
    if (nameEnd < 0) return undefined;
    const textEnd = message.indexOf(0, nameEnd + 1);
    return message.toString('utf8', nameEnd + 1, textEnd < 0 ? message.length : textEnd);
  }
  return undefined;
}

/**
 * Follows the server → client byte stream message by message (a type byte, then an int32 length that
 * counts itself) and picks, with probability `share` per message, the ones after which the connection is
 * cut. Only messages after the first ReadyForQuery count (the startup handshake is never cut), and
 * DataRows do not (the odds per statement do not grow with its number of rows).
 */
class MessageCutter {
  readonly #share: number;
  readonly #random: () => number;
  #ready = false;
  #header: number[] = [];
  #type = 0;
  #remaining = 0;

  constructor(share: number, random: () => number) {
    this.#share = share;
    this.#random = random;
  }

  /** The offset just after the first message of `chunk` picked for a cut, or -1. */
  scan(chunk: Buffer): number {
    let i = 0;
    while (i < chunk.length) {
      if (this.#header.length < 5) {
        this.#header.push(chunk[i++]!);
        if (this.#header.length < 5) continue;
        this.#type = this.#header[0]!;
        this.#remaining = Buffer.from(this.#header).readUInt32BE(1) - 4;
      } else {
        const take = Math.min(this.#remaining, chunk.length - i);
        i += take;
        this.#remaining -= take;
      }
      if (this.#remaining === 0 && this.#messageEnds()) return i;
    }
    return -1;
  }

  #messageEnds(): boolean {
    this.#header = [];
    if (!this.#ready) {
      if (this.#type === 0x5a) this.#ready = true; // 'Z' ReadyForQuery
      return false;
    }
    if (this.#type === 0x44) return false; // 'D' DataRow: a long result must not multiply the odds
    return this.#random() < this.#share;
  }
}

/** One direction of one connection: src → (faults, delay queue) → dst. */
class Pipe {
  readonly dir: Dir;
  readonly src: net.Socket;
  readonly dst: net.Socket;
  readonly conn: Connection;
  queue: Item[] = [];
  queuedBytes = 0;
  lastDue = 0;
  timer: NodeJS.Timeout | undefined;
  waitingDrain = false;
  pausedForQueue = false;

  constructor(conn: Connection, dir: Dir, src: net.Socket, dst: net.Socket) {
    this.conn = conn;
    this.dir = dir;
    this.src = src;
    this.dst = dst;
  }

  push(item: Omit<Item, 'due'>): void {
    const proxy = this.conn.proxy;
    const delay = proxy.nextDelay();
    if (delay === 0 && this.queue.length === 0) {
      this.deliver({ ...item, due: 0 });
      return;
    }
    const due = Math.max(Date.now() + delay, this.lastDue);
    this.lastDue = due;
    this.queue.push({ ...item, due });
    if (item.data) {
      this.queuedBytes += item.data.length;
      if (this.queuedBytes > MAX_QUEUED_BYTES && !this.pausedForQueue) {
        this.pausedForQueue = true;
        this.src.pause();
      }
    }
    this.schedule();
  }

  schedule(): void {
    if (this.timer || this.queue.length === 0) return;
    const head = this.queue[0]!;
    this.timer = setTimeout(() => this.flush(), Math.max(0, head.due - Date.now()));
  }

  flush(): void {
    this.timer = undefined;
    const now = Date.now();
    while (this.queue.length > 0 && this.queue[0]!.due <= now + 1) {
      const item = this.queue.shift()!;
      if (item.data) this.queuedBytes -= item.data.length;
      this.deliver(item);
      if (this.conn.closed) return;
    }
    if (this.pausedForQueue && this.queuedBytes < MAX_QUEUED_BYTES / 4) {
      this.pausedForQueue = false;
      this.maybeResume();
    }
    this.schedule();
  }

  deliver(item: Item): void {
    const conn = this.conn;
    if (conn.closed) return;
    if (item.data) {
      if (this.dst.destroyed || this.dst.writableEnded) return;
      const ok = this.dst.write(item.data);
      conn.proxy.countForwarded(this.dir, item.data.length);
      if (!ok && !this.waitingDrain) {
        this.waitingDrain = true;
        this.src.pause();
        this.dst.once('drain', () => {
          this.waitingDrain = false;
          this.maybeResume();
        });
      }
    } else if (item.end) {
      if (!this.dst.destroyed && !this.dst.writableEnded) this.dst.end();
    } else if (item.cut) {
      conn.cut(item.cut);
    }
  }

  maybeResume(): void {
    if (!this.waitingDrain && !this.pausedForQueue && !this.conn.closed) this.src.resume();
  }

  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
    this.queuedBytes = 0;
  }
}

/** A client socket paired with its upstream socket. */
class Connection {
  readonly proxy: FaultProxy;
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  readonly up: Pipe;
  readonly down: Pipe;
  readonly closeLimit: Limit | undefined;
  readonly resetLimit: Limit | undefined;
  readonly messageCutter: MessageCutter | undefined;
  readonly forwarded = { upstream: 0, downstream: 0 };
  /** closeAfterBytes/resetAfterBytes fired: everything else is dropped */
  cutting = false;
  /** the cut comes from cutOnMessage() (counted there, not as closedAfterBytes/resetAfterBytes) */
  cutByMessage = false;
  /** cut with 'partition': the server side is left open */
  partitioned = false;
  closed = false;
  /** terminal events held back while blackholed: FIN per direction, or a reset */
  heldEnd = { upstream: false, downstream: false };
  heldReset = false;
  /** strandOpenConnections(): the server side is gone; the client side hears nothing more, ever */
  stranded = false;
  upstreamConnected = false;
  #closedSockets = 0;
  readonly #framer = new FrontendFramer();
  /** Bytes of the framer's incomplete message already forwarded (while no message cut was set). */
  #tailForwarded = 0;
  /** A Parse matched with when 'after': cut once its batch's Sync is forwarded. */
  #cutAtSync: Cut | undefined;

  constructor(proxy: FaultProxy, client: net.Socket, upstream: net.Socket) {
    this.proxy = proxy;
    this.client = client;
    this.upstream = upstream;
    this.closeLimit = proxy.closeLimit;
    this.resetLimit = proxy.resetLimit;
    this.messageCutter = proxy.messageCut
      ? new MessageCutter(proxy.messageCut.share, proxy.messageCut.random)
      : undefined;
    this.up = new Pipe(this, 'upstream', client, upstream);
    this.down = new Pipe(this, 'downstream', upstream, client);
    for (const pipe of [this.up, this.down]) {
      pipe.src.on('data', (chunk: Buffer) => this.onData(pipe, chunk));
      pipe.src.on('end', () => this.onEnd(pipe));
    }
    upstream.once('connect', () => {
      this.upstreamConnected = true;
    });
    for (const socket of [client, upstream]) {
      socket.on('error', () => this.onAbort(socket));
      socket.on('close', () => this.onSocketClose());
    }
    if (this.closeLimit?.n === 0) this.cut('fin');
    else if (this.resetLimit?.n === 0) this.cut('rst');
  }

  onData(pipe: Pipe, chunk: Buffer): void {
    if (this.closed || this.cutting) return;
    if (this.proxy.isBlackholed || this.stranded) {
      this.proxy.stats.bytesSwallowed += chunk.length;
      return;
    }
    const startup = this.proxy.startupReset;
    if (pipe.dir === 'upstream' && this.forwarded.upstream === 0 && startup?.test(chunk.toString('latin1'))) {
      // resetStartupMatching(): this client's connections fail during connect.
      this.cutting = true;
      pipe.push({ cut: 'rst' });
      return;
    }
    let data = chunk;
    let cut: Cut | undefined;
    if (pipe.dir === 'upstream') [data, cut] = this.frameUpstream(chunk);
    for (const [limit, mode] of [
      [this.closeLimit, 'fin'],
      [this.resetLimit, 'rst'],
    ] as const) {
      if (!limit || (limit.direction !== 'both' && limit.direction !== pipe.dir)) continue;
      const counted =
        limit.direction === 'both'
          ? this.forwarded.upstream + this.forwarded.downstream
          : this.forwarded[pipe.dir];
      const remaining = Math.max(0, limit.n - counted);
      if (data.length >= remaining) {
        data = data.subarray(0, remaining);
        cut = mode;
      }
    }
    if (this.messageCutter && pipe.dir === 'downstream') {
      const end = this.messageCutter.scan(data);
      if (end >= 0) {
        data = data.subarray(0, end);
        cut = 'msg';
      }
    }
    // Counted on receipt (the bytes this connection will forward), so later chunks see the total.
    this.forwarded[pipe.dir] += data.length;
    if (data.length > 0) pipe.push({ data });
    if (cut) {
      this.cutting = true;
      pipe.push({ cut });
    }
  }

  /**
   * Client → server: what to forward of `chunk`, and whether a cutOnMessage() rule fires. While a rule is
   * set, only complete messages are forwarded (an incomplete one waits for its rest), so a matching
   * message can be held back whole.
   */
  frameUpstream(chunk: Buffer): [Buffer, Cut | undefined] {
    const messages = this.#framer.push(chunk);
    const rule = this.proxy.clientMessageCut;
    if (!rule && this.#cutAtSync === undefined) {
      this.#tailForwarded = this.#framer.tailLength;
      return [chunk, undefined];
    }
    const out: Buffer[] = [];
    let skip = this.#tailForwarded;
    for (const message of messages) {
      const unsent = message.subarray(skip);
      skip = 0;
      if (this.#cutAtSync !== undefined) {
        this.cutByMessage = true;
        out.push(unsent);
        if (message[0] === 0x53 /* 'S' Sync */) return [Buffer.concat(out), this.#cutAtSync];
        continue;
      }
      const sql = rule ? sqlOf(message) : undefined;
      if (rule && sql !== undefined && rule.match.test(sql) && this.proxy.takeMessageCut(rule)) {
        this.proxy.stats.cutOnMessage++;
        this.cutByMessage = true;
        if (rule.onCut) queueMicrotask(rule.onCut); // once the cut below is done
        const mode = rule.mode ?? 'fin';
        // A message already partly forwarded (the rule came mid-message) can only be cut after it.
        if (rule.when === 'after' || unsent.length < message.length) out.push(unsent);
        if (rule.when === 'after' && message[0] === 0x50 /* 'P' Parse */) {
          this.#cutAtSync = mode;
          continue;
        }
        return [Buffer.concat(out), mode];
      }
      out.push(unsent);
    }
    if (messages.length > 0) this.#tailForwarded = 0;
    return [Buffer.concat(out), undefined];
  }

  onEnd(pipe: Pipe): void {
    // Partitioned: the server finally closed its side (e.g. its backend was terminated).
    if (this.partitioned && pipe.dir === 'downstream') this.upstream.destroy();
    if (this.closed || this.cutting || this.stranded) return;
    if (this.proxy.isBlackholed) this.heldEnd[pipe.dir] = true;
    else pipe.push({ end: true });
  }

  /** One side failed (ECONNRESET, upstream connect refused…): reset the other side. */
  onAbort(socket: net.Socket): void {
    if (this.closed) return;
    if (socket === this.upstream && !this.upstreamConnected) this.proxy.stats.upstreamFailed++;
    if (this.stranded) return;
    if (this.proxy.isBlackholed) this.heldReset = true;
    else this.reset();
  }

  onSocketClose(): void {
    // A FIN arrives as 'end' and an RST as 'error' (both handled above); here only the bookkeeping.
    this.#closedSockets++;
    if (this.#closedSockets >= 2) this.finish();
  }

  /** Called when the blackhole is lifted: deliver the closes and resets that were held back. */
  releaseHeld(): void {
    if (this.closed || this.stranded) return;
    if (this.heldReset) {
      this.reset();
      return;
    }
    for (const pipe of [this.up, this.down]) {
      if (this.heldEnd[pipe.dir]) {
        this.heldEnd[pipe.dir] = false;
        pipe.push({ end: true });
      }
    }
  }

  /** The path to the server is gone for good: close the server side; the client is told nothing. */
  strand(): void {
    if (this.closed || this.stranded) return;
    this.stranded = true;
    this.up.clear();
    this.down.clear();
    this.upstream.destroy();
  }

  cut(mode: Cut): void {
    if (this.closed) return;
    this.cutting = true;
    this.up.clear();
    this.down.clear();
    if (mode === 'msg') {
      this.proxy.stats.cutAfterMessage++;
      this.reset();
      return;
    }
    if (mode === 'rst') {
      if (!this.cutByMessage) this.proxy.stats.resetAfterBytes++;
      this.reset();
      return;
    }
    if (mode === 'partition') {
      // The client's side only: FIN to it; the server side stays open, its bytes are dropped (onData).
      this.partitioned = true;
      this.client.resume();
      if (!this.client.destroyed && !this.client.writableEnded) this.client.end();
      this.upstream.resume();
      return;
    }
    if (!this.cutByMessage) this.proxy.stats.closedAfterBytes++;
    // FIN both ways (after what was already written); keep reading (and dropping) until the peers close.
    for (const s of [this.client, this.upstream]) {
      s.resume();
      if (!s.destroyed && !s.writableEnded) s.end();
    }
    setTimeout(() => this.destroy(), CUT_GRACE_MS).unref();
  }

  /** TCP RST on both sides. */
  reset(): void {
    if (this.closed) return;
    this.closed = true;
    this.up.clear();
    this.down.clear();
    for (const s of [this.client, this.upstream]) {
      if (s.destroyed) continue;
      if (s.connecting || s.pending) s.destroy();
      else resetWhenFlushed(s);
    }
    this.finish();
  }

  destroy(): void {
    this.closed = true;
    this.up.clear();
    this.down.clear();
    this.client.destroy();
    this.upstream.destroy();
    this.finish();
  }

  finish(): void {
    this.closed = true;
    this.up.clear();
    this.down.clear();
    this.proxy.forget(this);
  }
}

export class FaultProxy {
  readonly host: string;
  #port = 0;
  readonly targetHost: string;
  readonly targetPort: number;
  readonly stats: ProxyStats = {
    accepted: 0,
    active: 0,
    resetOnAccept: 0,
    resetOpen: 0,
    closedAfterBytes: 0,
    resetAfterBytes: 0,
    cutAfterMessage: 0,
    bytesUp: 0,
    bytesDown: 0,
    bytesSwallowed: 0,
    upstreamFailed: 0,
    cutOnMessage: 0,
  };
  /** @internal the limits new connections take (see closeAfterBytes / resetAfterBytes) */
  closeLimit: Limit | undefined;
  /** @internal */
  resetLimit: Limit | undefined;
  /** @internal the message cut new connections take (see cutAfterServerMessage) */
  messageCut: { share: number; random: () => number } | undefined;
  /** @internal the rule set by cutOnMessage() */
  clientMessageCut: MessageCut | undefined;
  #messageCutsLeft = Infinity;
  readonly #random: () => number;
  #server: net.Server | undefined;
  #connections = new Set<Connection>();
  #latency = 0;
  #jitter = 0;
  #resetShare = 0;
  #resetsLeft = 0;
  #blackhole = false;
  #closing: Promise<void> | undefined;

  private constructor(options: ProxyOptions) {
    this.host = options.listenHost ?? '127.0.0.1';
    this.targetHost = options.targetHost;
    this.targetPort = options.targetPort;
    this.#random = options.random ?? Math.random;
  }

  static async start(options: ProxyOptions): Promise<FaultProxy> {
    const proxy = new FaultProxy(options);
    await proxy.#listen(0);
    return proxy;
  }

  /** Extra: a proxy in front of a server. */
  static forServer(server: ProxiedServer, options: Omit<ProxyOptions, 'targetHost' | 'targetPort'> = {}) {
    return FaultProxy.start({ ...options, targetHost: server.host, targetPort: server.port });
  }

  /** The listening port (kept across refuse(true) / refuse(false)). */
  get port(): number {
    return this.#port;
  }

  get isBlackholed(): boolean {
    return this.#blackhole;
  }

  /** Extra: true while listening (false after refuse(true) or close()). */
  get listening(): boolean {
    return this.#server !== undefined;
  }

  #listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ allowHalfOpen: true }, (socket) => this.#onConnection(socket));
      const onError = (err: Error) => reject(err);
      server.once('error', onError);
      server.listen(port, this.host, () => {
        server.off('error', onError);
        server.on('error', noop); // e.g. EMFILE on accept: never crash the test process
        const addr = server.address();
        if (typeof addr === 'object' && addr) this.#port = addr.port;
        this.#server = server;
        resolve();
      });
    });
  }

  #onConnection(client: net.Socket): void {
    client.on('error', noop);
    this.stats.accepted++;
    if (this.#closing || !this.#server) {
      client.destroy();
      return;
    }
    const counted = this.#resetsLeft > 0;
    if (counted) this.#resetsLeft--;
    if (counted || (this.#resetShare > 0 && this.#random() < this.#resetShare)) {
      this.stats.resetOnAccept++;
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    const upstream = net.connect({ host: this.targetHost, port: this.targetPort, allowHalfOpen: true });
    upstream.on('error', noop);
    upstream.setNoDelay(true);
    const conn = new Connection(this, client, upstream);
    if (!conn.closed) {
      this.#connections.add(conn);
      this.stats.active = this.#connections.size;
    }
  }

  /** @internal */
  forget(conn: Connection): void {
    if (this.#connections.delete(conn)) this.stats.active = this.#connections.size;
  }

  /** @internal */
  countForwarded(dir: Dir, n: number): void {
    if (dir === 'upstream') this.stats.bytesUp += n;
    else this.stats.bytesDown += n;
  }

  /** @internal the delay for the next chunk: latency ± jitter (uniform), never negative */
  nextDelay(): number {
    if (this.#latency === 0 && this.#jitter === 0) return 0;
    const j = this.#jitter > 0 ? (this.#random() * 2 - 1) * this.#jitter : 0;
    return Math.max(0, this.#latency + j);
  }

  /** Delay every chunk in both directions by ms ± jitterMs (uniform), keeping byte order per direction. */
  setLatency(ms: number, jitterMs = 0): void {
    if (!(ms >= 0) || !(jitterMs >= 0)) throw new RangeError('setLatency: ms and jitterMs must be >= 0');
    this.#latency = ms;
    this.#jitter = jitterMs;
  }

  /** This share (0..1) of newly accepted connections is reset (RST) at once, before any byte is forwarded. */
  resetNewConnections(share: number): void {
    if (!(share >= 0 && share <= 1)) throw new RangeError('resetNewConnections: share must be within 0..1');
    this.#resetShare = share;
  }

  /** Extra: the next n newly accepted connections are reset (RST) at once, as resetNewConnections() resets a share. */
  resetNextConnections(n: number): void {
    if (!Number.isInteger(n) || n < 0)
      throw new RangeError('resetNextConnections: n must be an integer >= 0');
    this.#resetsLeft = n;
  }

  /** @internal resetStartupMatching()'s pattern. */
  startupReset: RegExp | undefined;

  /**
   * Extra: a new connection whose startup message (its first bytes: user, database, application_name…)
   * matches is reset (RST) before any byte is forwarded: one client's connections fail, not the others'
   * (e.g. `/app-0/` against `application_name`). null: off.
   */
  resetStartupMatching(match: RegExp | null): void {
    this.startupReset = match ?? undefined;
  }

  /** RST every connection open now (both the client and the server side); returns how many. */
  resetOpenConnections(): number {
    const conns = [...this.#connections];
    for (const c of conns) c.reset();
    this.stats.resetOpen += conns.length;
    return conns.length;
  }

  /**
   * Every connection open now loses its path for good, as when the server's host failed over or a
   * network path dropped the flows: the server side is closed, while the client side stays open and
   * hears nothing more, no data, no FIN, no RST (what it sends is dropped), even after a blackhole is
   * lifted. Returns how many. New connections are not affected.
   */
  strandOpenConnections(): number {
    const conns = [...this.#connections].filter((c) => !c.closed && !c.stranded);
    for (const c of conns) c.strand();
    return conns.length;
  }

  /** New and existing connections: accepted, then every byte in both directions is dropped; nothing is
   * forwarded and nothing is closed (closes and resets seen meanwhile are delivered when it is lifted). */
  blackhole(on: boolean): void {
    const was = this.#blackhole;
    this.#blackhole = on;
    if (was && !on) for (const c of [...this.#connections]) c.releaseHeld();
  }

  /** on: stop listening (connects get ECONNREFUSED) and reset the open connections.
   * off: listen again on the same port. */
  async refuse(on: boolean): Promise<void> {
    if (this.#closing) throw new Error('FaultProxy: refuse() after close()');
    if (on) {
      const server = this.#server;
      if (!server) return;
      this.#server = undefined;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      this.resetOpenConnections();
      await closed;
    } else if (!this.#server) {
      await this.#listen(this.#port);
    }
  }

  /** Each connection opened from now on is closed (FIN both ways) once n bytes were forwarded in that
   * direction ('both': counted over both directions together; default 'both'). null turns it off. */
  closeAfterBytes(n: number | null, direction: ByteDirection = 'both'): void {
    this.closeLimit = FaultProxy.#limit('closeAfterBytes', n, direction);
  }

  /** Like closeAfterBytes() but the connection is reset (RST both ways). null turns it off. */
  resetAfterBytes(n: number | null, direction: ByteDirection = 'both'): void {
    this.resetLimit = FaultProxy.#limit('resetAfterBytes', n, direction);
  }

  /**
   * Each connection opened from now on: after each whole server message (once the connection is ready;
   * DataRows excepted), with probability `share`, the message is forwarded and then the connection is reset (RST both ways),
   * e.g. after an INSERT's CommandComplete but before its ReadyForQuery. `seed` makes the choice
   * reproducible (default: the proxy's `random`). null turns it off.
   */
  cutAfterServerMessage(share: number | null, seed?: number): void {
    if (share === null) {
      this.messageCut = undefined;
      return;
    }
    if (!(share >= 0 && share <= 1)) throw new RangeError('cutAfterServerMessage: share must be within 0..1');
    this.messageCut = { share, random: seed === undefined ? this.#random : seededRandom(seed) };
  }

  static #limit(name: string, n: number | null, direction: ByteDirection): Limit | undefined {
    if (n === null) return undefined;
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`${name}: n must be an integer >= 0 or null`);
    if (!['upstream', 'downstream', 'both'].includes(direction))
      throw new RangeError(`${name}: bad direction`);
    return { n, direction };
  }

  /**
   * Existing and new connections: cut (FIN or RST both ways) at the first client message whose SQL text
   * (Query or Parse) matches `rule.match`, before or after forwarding it. null turns it off.
   */
  cutOnMessage(rule: MessageCut | null): void {
    if (rule !== null) {
      if (!(rule.match instanceof RegExp)) throw new TypeError('cutOnMessage: match must be a RegExp');
      if (rule.when !== 'before' && rule.when !== 'after') throw new RangeError('cutOnMessage: bad when');
      if (rule.mode !== undefined && !['fin', 'rst', 'partition'].includes(rule.mode))
        throw new RangeError('cutOnMessage: bad mode');
      const share = rule.share ?? 1;
      if (!(share >= 0 && share <= 1)) throw new RangeError('cutOnMessage: share must be within 0..1');
      const limit = rule.limit ?? Infinity;
      if (!(limit >= 0)) throw new RangeError('cutOnMessage: limit must be >= 0');
      this.#messageCutsLeft = limit;
    }
    this.clientMessageCut = rule ?? undefined;
  }

  /** @internal a matching message: does it cut (share, limit)? */
  takeMessageCut(rule: MessageCut): boolean {
    if (this.#messageCutsLeft <= 0) return false;
    const share = rule.share ?? 1;
    if (share < 1 && this.#random() >= share) return false;
    this.#messageCutsLeft--;
    return true;
  }

  /** Remove every fault (does not reopen a refused listener: call refuse(false)). */
  clear(): void {
    this.cutOnMessage(null);
    this.setLatency(0, 0);
    this.resetNewConnections(0);
    this.resetNextConnections(0);
    this.closeAfterBytes(null);
    this.resetAfterBytes(null);
    this.cutAfterServerMessage(null);
    this.blackhole(false);
  }

  /** Extra: zero every counter (active stays the number of open connections). */
  resetStats(): void {
    for (const key of Object.keys(this.stats) as (keyof ProxyStats)[]) this.stats[key] = 0;
    this.stats.active = this.#connections.size;
  }

  /** The base connection string with host and port replaced by the proxy's. */
  connectionString(base: ProxiedServer | string): string {
    const url = new URL(typeof base === 'string' ? base : base.connectionString);
    url.hostname = this.host.includes(':') ? `[${this.host}]` : this.host;
    url.port = String(this.port);
    return url.toString();
  }

  /** Extra: server.clientConfig(overrides) with host and port replaced by the proxy's. */
  clientConfig<C>(server: ProxiedServer<C>, overrides: object = {}): C {
    return server.clientConfig({ ...overrides, host: this.host, port: this.port });
  }

  /** Destroy every connection and stop listening; idempotent. */
  close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = (async () => {
        this.#blackhole = false;
        for (const c of [...this.#connections]) c.destroy();
        const server = this.#server;
        this.#server = undefined;
        if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
      })();
    }
    return this.#closing;
  }
}

/** How long a reset waits for already-forwarded bytes to leave Node's buffer before it resets anyway. */
const RESET_DRAIN_MS = 1000;

/**
 * TCP RST. Node 22's `resetAndDestroy()` closes with a FIN instead while writes are still queued (in the
 * stream or in libuv: seen on 22.23; Node 24 sends the RST), so let the bytes already forwarded leave
 * first. A peer that never reads gets the reset after RESET_DRAIN_MS anyway.
 *
 * Not while a FIN we forwarded is still being sent (`end()` called, 'finish' not yet emitted): libuv
 * refuses to reset a socket with a pending shutdown (EINVAL) and Node (22, 24) then marks the handle
 * closing without closing it, so the process spins at 100% CPU at exit, never ending (seen as a test
 * file that passed and never exited). Wait for the FIN to leave; at the deadline, close instead.
 */
function resetWhenFlushed(s: net.Socket): void {
  const deadline = Date.now() + RESET_DRAIN_MS;
  const queued = () =>
    s.writableLength +
    ((s as unknown as { _handle?: { writeQueueSize?: number } })._handle?.writeQueueSize ?? 0);
  const attempt = () => {
    if (s.destroyed) return;
    const finSending = s.writableEnded && !s.writableFinished;
    if (!finSending && queued() === 0) s.resetAndDestroy();
    else if (Date.now() >= deadline) {
      if (finSending) s.destroy();
      else s.resetAndDestroy();
    } else setTimeout(attempt, 1).unref();
  };
  attempt();
}

/** mulberry32: a small seeded PRNG for the proxy's `random` option, so a fault schedule can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
