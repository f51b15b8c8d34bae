// node.ts -- node's own http.Server (and so any application written for
// node:http, frameworks included) served from iomux sockets:
//
//   iomux.http.serveNode(http.createServer(app)).listen(3000);
//
// Each accepted iomux socket is wrapped in a NodeSocket, a stream.Duplex with
// the parts of net.Socket's surface that node's http server and applications
// use, and handed to the node server as a 'connection'. Node's HTTP parser,
// keep-alive, pipelining, timeouts and backpressure then run unchanged.
//
// Node's http.Server is a net.Server: whether it is listening, its address(),
// close() and its 'close' event all derive from two fields of net.Server,
// _handle (the listener) and _connections (the count of live connections).
// While an iomux server feeds it, the node server gets a stand-in listener in
// _handle and the count of the connections it was given, so that node's own
// code does the right thing: listening is true, address() is the iomux
// listener's, close() stops the iomux listeners, closes idle keep-alive
// connections and emits 'close' once every connection is gone. Emitting
// 'listening' on the node server starts node's connection tracking, which is
// what headersTimeout, requestTimeout, closeIdleConnections() and
// closeAllConnections() work from.
import { Duplex } from 'node:stream';
import { Server as NetServer } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import { invalidArgType, outOfRange } from '../errors';
import { Server, type ServerOptions } from '../server';
import type { AddressInfo, Socket } from '../socket';

// Node's own limit for socket timeouts; larger values are clamped, as node does.
const TIMEOUT_MAX = 2 ** 31 - 1;
// Node 20's default stream high-water mark, for a node server that names none.
const DEFAULT_HWM = 16 * 1024;

/** What the node server sees of a local address when the listener is bound to a specific one. */
interface LocalInfo {
  address: string | undefined;
  family: string | undefined;
  port: number | undefined;
}

/**
 * A stream.Duplex over an accepted iomux socket, with net.Socket's surface as
 * node's http server and applications use it: remote and local addresses
 * (kept by iomux, no syscall), setTimeout, setNoDelay, setKeepAlive, ref,
 * unref, destroySoon, bytesRead, bytesWritten. It is what req.socket is.
 */
export class NodeSocket extends Duplex {
  /** The iomux socket underneath. */
  readonly iomuxSocket: Socket;
  /** The idle timeout in ms set with setTimeout(), as net.Socket's. */
  timeout: number | undefined = undefined;
  readonly connecting = false;
  readonly pending = false;
  private readonly local: LocalInfo | null;
  // The last values asked for: node's http and applications call these per
  // request; only a change costs a setsockopt, as with net.Socket.
  private noDelay: boolean;
  private keepAliveOn: boolean;
  private keepAliveDelay: number;
  /** A write the iomux socket's queue could not take yet: released by 'drain' or by destroy. */
  private blockedWrite: ((err?: Error | null) => void) | null = null;

  /** @internal */
  constructor(sock: Socket, local: LocalInfo | null, highWaterMark: number, noDelay: boolean, keepAlive: [boolean, number]) {
    // allowHalfOpen: node's http server decides when to end its side (as it
    // does on node's own sockets), not the peer's FIN.
    super({ allowHalfOpen: true, highWaterMark });
    this.iomuxSocket = sock;
    this.local = local;
    this.noDelay = noDelay;
    this.keepAliveOn = keepAlive[0];
    this.keepAliveDelay = keepAlive[1];
    sock.on('data', (chunk: Buffer) => {
      // The stream's buffer is full: stop reading from the kernel (TCP
      // backpressure) until _read() asks for more.
      if (!this.push(chunk)) sock.pause();
    });
    sock.on('end', () => this.push(null));
    sock.on('drain', () => this.releaseWrite());
    sock.on('timeout', () => this.emit('timeout'));
    sock.on('error', (err: Error) => {
      if (this.destroyed) return;
      // As with iomux sockets, a peer's reset reaches 'error' listeners only:
      // it can never crash the process. Node's http server listens while it
      // owns the socket, and reports it as 'clientError'.
      this.destroy(this.listenerCount('error') > 0 || !sock._peerError ? err : undefined);
    });
    sock.on('close', () => {
      if (!this.destroyed) this.destroy();
    });
  }

  override _read(): void {
    this.iomuxSocket.resume();
  }

  // Writes go to the iomux socket while its queue is below the high-water
  // mark (so consecutive writes reach the kernel together); past it, the next
  // write waits for 'drain'.
  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.iomuxSocket.write(chunk)) cb();
    else this.blockedWrite = cb;
  }

  // Corked writes (node's http corks the head and the first body chunk)
  // leave as one write/writev.
  override _writev(chunks: { chunk: Buffer; encoding: BufferEncoding }[], cb: (err?: Error | null) => void): void {
    const sock = this.iomuxSocket;
    let ok = true;
    sock.cork();
    for (const c of chunks) ok = sock.write(c.chunk);
    sock.uncork();
    if (ok) cb();
    else this.blockedWrite = cb;
  }

  override _final(cb: (err?: Error | null) => void): void {
    const sock = this.iomuxSocket;
    if (sock.writableFinished) return cb();
    // 'finish' of the iomux socket: every byte and the FIN reached the kernel.
    sock.once('finish', () => cb());
    sock.end();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.iomuxSocket.destroy();
    // A write left waiting for a drain that will never come completes
    // without error, as net.Socket's do when the handle closes under them.
    this.releaseWrite();
    cb(err);
  }

  private releaseWrite(): void {
    const cb = this.blockedWrite;
    if (cb !== null) {
      this.blockedWrite = null;
      cb();
    }
  }

  // ---- addresses: kept by iomux at accept time, or the listener's ----------------

  get remoteAddress(): string | undefined {
    return this.iomuxSocket.remoteAddress;
  }

  get remotePort(): number | undefined {
    return this.iomuxSocket.remotePort;
  }

  get remoteFamily(): string | undefined {
    return this.iomuxSocket.remoteFamily;
  }

  // An accepted connection's local address is its listener's unless the
  // listener is bound to a wildcard; only then does iomux ask the kernel (once).
  get localAddress(): string | undefined {
    return this.local !== null ? this.local.address : this.iomuxSocket.localAddress;
  }

  get localPort(): number | undefined {
    return this.local !== null ? this.local.port : this.iomuxSocket.localPort;
  }

  get localFamily(): string | undefined {
    return this.local !== null ? this.local.family : this.iomuxSocket.localFamily;
  }

  address(): AddressInfo | Record<string, never> {
    const l = this.local;
    if (l !== null && l.address !== undefined && l.family !== undefined && l.port !== undefined) {
      return { address: l.address, family: l.family, port: l.port };
    }
    return this.iomuxSocket.address();
  }

  get bytesRead(): number {
    return this.iomuxSocket.bytesRead;
  }

  get bytesWritten(): number {
    return this.iomuxSocket.bytesWritten ?? 0;
  }

  /** As net.Socket's: 'open', 'readOnly', 'writeOnly' or 'closed'. */
  get readyState(): string {
    if (this.readable && this.writable) return 'open';
    if (this.readable) return 'readOnly';
    if (this.writable) return 'writeOnly';
    return 'closed';
  }

  // ---- net.Socket's options ---------------------------------------------------------

  /**
   * 'timeout' after ms without reads or writes; 0 disables. As net.Socket's,
   * cb is a once-listener for 'timeout'. iomux re-arms it on activity with no
   * syscall.
   */
  setTimeout(ms: number, cb?: () => void): this {
    if (this.destroyed) return this;
    if (typeof ms !== 'number') throw invalidArgType('msecs', 'of type number', ms);
    if (!(ms >= 0)) throw outOfRange('msecs', '>= 0', ms);
    if (cb !== undefined && typeof cb !== 'function') throw invalidArgType('callback', 'of type function', cb);
    this.timeout = ms;
    this.iomuxSocket.setTimeout(Math.min(ms, TIMEOUT_MAX));
    if (cb !== undefined) {
      if (ms === 0) this.removeListener('timeout', cb);
      else this.once('timeout', cb);
    }
    return this;
  }

  /** Node's streams call this on consumed sockets to refresh the timeout; iomux does that natively on every read and write. */
  _unrefTimer(): void {}

  setNoDelay(noDelay?: boolean): this {
    const on = noDelay === undefined ? true : Boolean(noDelay);
    if (on !== this.noDelay && !this.destroyed) {
      this.noDelay = on;
      this.iomuxSocket.setNoDelay(on);
    }
    return this;
  }

  setKeepAlive(enable?: boolean, initialDelayMs?: number): this {
    const on = Boolean(enable);
    const delay = Math.max(0, Math.trunc(Number(initialDelayMs) / 1000) || 0);
    if ((on !== this.keepAliveOn || (on && delay !== this.keepAliveDelay)) && !this.destroyed) {
      this.keepAliveOn = on;
      this.keepAliveDelay = delay;
      this.iomuxSocket.setKeepAlive(on, delay * 1000);
    }
    return this;
  }

  ref(): this {
    this.iomuxSocket.ref();
    return this;
  }

  unref(): this {
    this.iomuxSocket.unref();
    return this;
  }

  /** Ends the writable side, then destroys once everything was flushed (as net.Socket's). */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }
}

// ---- the node server's side ------------------------------------------------------------

/** The fields of net.Server that its listening state, address(), close() and 'close' derive from. */
interface NetServerFields {
  _handle: unknown;
  _connections: number;
  _pipeName?: string;
  _unref?: boolean;
  _emitCloseIfDrained(): void;
  // net.Server's options as http.createServer() stored them.
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number; // seconds
  highWaterMark?: number;
}

type NodeServer = NetServer & NetServerFields;

/** The stand-in for a node server's listener while iomux servers listen for it. */
interface ListenerStandIn {
  close(): void;
  ref(): void;
  unref(): void;
  getsockname?(out: Partial<AddressInfo>): number;
}

/** The iomux servers feeding one node server. */
class Bridge {
  readonly servers = new Set<NodeHttpBridge>();
  handle: ListenerStandIn | null = null;
  /** The stand-in is in place and the node server's 'listening' is still to come. */
  announce = false;
  constructor(readonly node: NodeServer) {}

  /** The node server is listening as long as one of them is. */
  attach(first: NodeHttpBridge): void {
    const servers = this.servers;
    const handle: ListenerStandIn = {
      // node's close(): every iomux listener stops (their own 'close' follows
      // once their connections are gone).
      close: () => {
        this.handle = null;
        this.announce = false;
        const all = [...servers];
        servers.clear();
        for (const s of all) Server.prototype.close.call(s);
      },
      ref: () => {
        for (const s of servers) s.ref();
      },
      unref: () => {
        for (const s of servers) s.unref();
      },
    };
    const addr = first.address();
    if (typeof addr === 'string') {
      // Without getsockname, net's address() answers with the path, as for a unix server.
      this.node._pipeName = addr;
    } else {
      handle.getsockname = (out) => {
        for (const s of servers) {
          const a = s.address();
          if (a !== null && typeof a === 'object') {
            out.address = a.address;
            out.family = a.family;
            out.port = a.port;
            break;
          }
        }
        return 0;
      };
    }
    this.handle = handle;
    this.announce = true;
    this.node._handle = handle;
  }
}

const bridges = new WeakMap<NetServer, Bridge>();

function isWildcard(address: string): boolean {
  return address === '::' || address === '0.0.0.0';
}

/** An iomux server whose connections go to a node server. */
class NodeHttpBridge extends Server {
  private readonly bridge: Bridge;
  private readonly highWaterMark: number;
  private readonly noDelayDefault: boolean;
  private readonly keepAliveDefault: [boolean, number];
  private local: LocalInfo | null = null;

  constructor(bridge: Bridge, options: ServerOptions, highWaterMark: number) {
    super(options);
    this.bridge = bridge;
    this.highWaterMark = highWaterMark;
    this.noDelayDefault = options.noDelay !== false;
    this.keepAliveDefault = options.keepAlive ? [true, Math.trunc((options.keepAliveInitialDelay ?? 0) / 1000)] : [false, 0];
    this.on('listening', () => this.onListening());
    this.on('connection', (sock: Socket) => this.onConnection(sock));
  }

  // The node server listens as soon as this one does (synchronously for an IP
  // or a path, as node's listen()), so that its listening, address() and
  // close() are right from the next line on.
  override listen(...args: any[]): this {
    (super.listen as (...a: unknown[]) => this)(...args);
    if (this.listening) this.join();
    return this;
  }

  private onListening(): void {
    if (!this.listening) return; // closed before 'listening' was delivered
    this.join(); // after a hostname lookup, this is the first news of it
    const b = this.bridge;
    if (b.announce && b.node._handle === b.handle) {
      b.announce = false;
      // Starts node's connection tracking (headersTimeout, requestTimeout,
      // closeIdleConnections), and tells the application, as node's listen() would.
      b.node.emit('listening');
    }
  }

  private join(): void {
    const b = this.bridge;
    if (b.servers.has(this)) return;
    const a = this.address();
    // Accepted sockets share the listener's port, and its address unless it is a wildcard.
    if (a !== null && typeof a === 'object') {
      this.local = isWildcard(a.address) ? { address: undefined, family: undefined, port: a.port } : a;
    } else {
      this.local = null;
    }
    b.servers.add(this);
    const node = b.node;
    // A node server listening on its own (node's listen()) keeps its own state;
    // the connections still go to it.
    if (node._handle !== null && node._handle !== undefined) return;
    b.attach(this);
    // node.unref() before listening applies once listening, as in net.
    if (node._unref) this.unref();
  }

  private onConnection(sock: Socket): void {
    const node = this.bridge.node;
    const local = this.local;
    const d = new NodeSocket(sock, local !== null && local.address !== undefined ? local : null,
      this.highWaterMark, this.noDelayDefault, this.keepAliveDefault);
    // maxConnections of the node server, as net applies it.
    const max = node.maxConnections;
    if (max && node._connections >= max) {
      node.emit('drop', {
        localAddress: d.localAddress, localPort: d.localPort, localFamily: d.localFamily,
        remoteAddress: d.remoteAddress, remotePort: d.remotePort, remoteFamily: d.remoteFamily,
      });
      d.destroy();
      return;
    }
    node._connections++;
    d.once('close', () => {
      node._connections--;
      node._emitCloseIfDrained();
    });
    node.emit('connection', d);
  }

  /**
   * Stops accepting. Closing the last iomux server of a node server closes the
   * node server, as its own close() would: idle keep-alive connections are
   * closed, and its 'close' follows once every connection is gone.
   */
  override close(cb?: (err?: Error) => void): this {
    const b = this.bridge;
    const wasListening = this.listening;
    b.servers.delete(this);
    super.close(cb);
    if (wasListening && b.servers.size === 0 && b.handle !== null && b.node._handle === b.handle) b.node.close();
    return this;
  }
}

/**
 * Serves a node http.Server from iomux sockets: returns an iomux Server (not
 * yet listening) whose connections go to nodeServer, as if node had accepted
 * them. options are the iomux server's; noDelay, keepAlive,
 * keepAliveInitialDelay and the high-water mark default to those the node
 * server was created with.
 *
 *   iomux.http.serveNode(http.createServer(app)).listen(3000);
 */
export function serveNode(nodeServer: HttpServer, options?: ServerOptions): Server {
  if (!(nodeServer instanceof NetServer)) throw invalidArgType('nodeServer', 'an instance of http.Server', nodeServer);
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw invalidArgType('options', 'of type object', options);
  }
  const node = nodeServer as unknown as NodeServer;
  let bridge = bridges.get(nodeServer);
  if (bridge === undefined) {
    bridge = new Bridge(node);
    bridges.set(nodeServer, bridge);
  }
  const hwm = options?.writableHighWaterMark ?? node.highWaterMark ?? DEFAULT_HWM;
  const keepAlive = options?.keepAlive ?? node.keepAlive === true;
  const opts: ServerOptions = {
    ...options,
    // The node server decides when to end its side, and starts reading itself.
    allowHalfOpen: true,
    pauseOnConnect: false,
    noDelay: options?.noDelay ?? node.noDelay !== false,
    keepAlive,
    keepAliveInitialDelay: options?.keepAliveInitialDelay ?? (node.keepAliveInitialDelay ?? 0) * 1000,
    writableHighWaterMark: hwm,
  };
  return new NodeHttpBridge(bridge, opts, hwm);
}
