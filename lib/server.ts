// server.ts -- a listening socket with node:net's face.
import { EventEmitter } from 'node:events';
import { chmodSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { AF_INET6, AF_UNIX, binding, LISTEN_DEFER_ACCEPT, LISTEN_REUSEPORT, LISTEN_V6ONLY } from './binding';
import { lookupHost, normalizeListenArgs, type ListenOptions, type NormalizedListen } from './address';
import { errnoException, invalidArgType, serverAlreadyListening, serverNotRunning, type SystemError } from './errors';
import { loop, type ListenerHandle } from './loop';
import { peerAddressInfo, SocketClassImpl, type Socket, type AddressInfo, type SocketOptions, type SocketOwner } from './socket';

export interface ServerOptions extends SocketOptions {
  /** Accepted sockets start paused: call socket.resume() to read. */
  pauseOnConnect?: boolean;
  /** TCP_NODELAY on accepted sockets (default true, at no per-connection cost). */
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
}

const EAFNOSUPPORT = 97;

function emitError(server: Server, err: Error): void {
  server.emit('error', err);
}

function emitListening(server: Server, gen: number): void {
  // A close() right after listen() means no 'listening', as in node.
  if ((server as unknown as { generation: number }).generation === gen) server.emit('listening');
}

function emitClose(server: Server): void {
  server.emit('close');
}

class ServerImpl extends EventEmitter implements ListenerHandle, SocketOwner {
  /** @internal */ _id = -1;
  private readonly socketOptions: SocketOptions;
  private readonly pauseOnConnect: boolean;
  private readonly noDelay: boolean;
  private readonly keepAlive: [boolean, number] | null;
  private connections = 0;
  private closing = false;
  private starting = false;
  private refed = true;
  private addressInfo: AddressInfo | string | null = null;
  private warnedAcceptError = false;
  /** Bumped by close(): a listen() under way (hostname lookup) is then abandoned. */
  private generation = 0;
  private requested: { host: string | undefined; port: number | undefined } | null = null;
  /** Stop accepting once this many connections are open (like node's). */
  maxConnections = Infinity;

  constructor(options?: ServerOptions | ((socket: Socket) => void), onConnection?: (socket: Socket) => void) {
    super(options !== null && typeof options === 'object' && 'captureRejections' in options
      ? { captureRejections: Boolean((options as { captureRejections?: boolean }).captureRejections) } : undefined);
    if (typeof options === 'function') {
      onConnection = options;
      options = undefined;
    }
    if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw invalidArgType('options', 'of type object', options);
    }
    this.socketOptions = {
      allowHalfOpen: options?.allowHalfOpen === true,
      writableHighWaterMark: options?.writableHighWaterMark ?? 16384,
    };
    this.pauseOnConnect = options?.pauseOnConnect === true;
    this.noDelay = options?.noDelay !== false;
    this.keepAlive = options?.keepAlive ? [true, options.keepAliveInitialDelay ?? 0] : null;
    if (onConnection !== undefined) {
      if (typeof onConnection !== 'function') throw invalidArgType('connectionListener', 'of type function', onConnection);
      this.on('connection', onConnection);
    }
  }

  get listening(): boolean {
    return this._id >= 0;
  }

  listen(port?: number | string, host?: string, backlog?: number, cb?: () => void): this;
  listen(port?: number | string, host?: string, cb?: () => void): this;
  listen(port?: number | string, cb?: () => void): this;
  listen(path: string, backlog?: number, cb?: () => void): this;
  listen(options: ListenOptions, cb?: () => void): this;
  listen(cb?: () => void): this;
  listen(...args: unknown[]): this {
    if (this._id >= 0 || this.starting) throw serverAlreadyListening();
    const [opts, cb] = normalizeListenArgs(args);
    if (opts.fd !== undefined) return this.listenFd(opts, cb);
    if (cb) this.once('listening', cb);
    this.closing = false;
    if (opts.signal !== undefined) this.addSignal(opts.signal);
    this.requested = { host: opts.host ?? opts.path, port: opts.port };
    if (opts.path !== undefined) {
      this.open(binding.listenUnix(opts.path, opts.backlog), opts.path, undefined);
      if (this._id >= 0 && (opts.readableAll || opts.writableAll)) {
        const mode = (opts.readableAll ? 0o444 : 0) | (opts.writableAll ? 0o222 : 0);
        try {
          chmodSync(opts.path, statSync(opts.path).mode | mode);
        } catch (e) {
          this.close();
          throw e;
        }
      }
      return this;
    }
    const host = opts.host;
    if (host === undefined) {
      // Dual-stack by default, as node does; IPv4 only where IPv6 is absent.
      let id = binding.listen('::', opts.port!, 6, opts.backlog, this.flags(opts));
      if (id === -EAFNOSUPPORT) id = binding.listen('0.0.0.0', opts.port!, 4, opts.backlog, this.flags(opts));
      this.open(id, '::', opts.port);
      return this;
    }
    const fam = isIP(host);
    if (fam !== 0) {
      this.open(binding.listen(host, opts.port!, fam, opts.backlog, this.flags(opts)), host, opts.port);
      return this;
    }
    this.starting = true;
    const gen = this.generation;
    lookupHost(host, 0, (err, address, family) => {
      this.starting = false;
      if (this.closing || gen !== this.generation) return;
      if (err) {
        this.emit('error', err);
        return;
      }
      this.open(binding.listen(address, opts.port!, family, opts.backlog, this.flags(opts)), address, opts.port);
    });
    return this;
  }

  /** listen({ fd }): adopting a listening descriptor is not supported here. */
  /** listen({ fd }): a listening socket made elsewhere (inherited), adopted. */
  private listenFd(opts: NormalizedListen, cb: (() => void) | undefined): this {
    if (cb) this.once('listening', cb);
    this.closing = false;
    if (opts.signal !== undefined) this.addSignal(opts.signal);
    this.requested = null;
    // Adopted as it is: the core checks that it is a listening stream
    // socket (EINVAL, ENOTSOCK, EBADF otherwise, as node reports them).
    this.open(binding.listenFd(opts.fd as number), undefined, undefined);
    return this;
  }

  private addSignal(signal: AbortSignal): void {
    if (signal.aborted) {
      process.nextTick(() => this.close());
      return;
    }
    const onAbort = (): void => { this.close(); };
    signal.addEventListener('abort', onAbort, { once: true });
    this.once('close', () => signal.removeEventListener('abort', onAbort));
  }

  /** node's key for a listener: family digit, address and the port asked for. */
  get _connectionKey(): string | undefined {
    const a = this.addressInfo;
    if (a === null || typeof a === 'string' || this.requested === null) return undefined;
    return `${a.family.slice(-1)}:${a.address}:${this.requested.port ?? 0}`;
  }

  private flags(opts: NormalizedListen): number {
    return (opts.reusePort ? LISTEN_REUSEPORT : 0) | (opts.ipv6Only ? LISTEN_V6ONLY : 0) |
      (opts.deferAccept ? LISTEN_DEFER_ACCEPT : 0);
  }

  private open(id: number, address: string | undefined, port: number | undefined): void {
    if (id < 0) {
      process.nextTick(emitError, this, errnoException(-id, 'listen', address, port, true));
      return;
    }
    this._id = id;
    loop._listeners[id] = this;
    if (this.refed) loop._ref();
    const gen = this.generation;
    const local = binding.localAddress(id);
    if (typeof local === 'number') this.addressInfo = null;
    else if (local[2] === AF_UNIX) this.addressInfo = local[0];
    else this.addressInfo = { address: local[0], family: local[2] === AF_INET6 ? 'IPv6' : 'IPv4', port: local[1] };
    process.nextTick(emitListening, this, gen);
  }

  /** The bound address: { address, family, port }, or the path of a unix server; null when not listening. */
  address(): AddressInfo | string | null {
    return this._id >= 0 ? this.addressInfo : null;
  }

  /**
   * Stops accepting. 'close' follows once every connection is gone.
   * cb gets ERR_SERVER_NOT_RUNNING when the server was not listening.
   */
  close(cb?: (err?: Error) => void): this {
    this.generation++;
    if (typeof cb === 'function') {
      if (this._id < 0 && !this.starting) {
        process.nextTick(cb, serverNotRunning());
        return this;
      }
      this.once('close', cb);
    }
    this.closing = true;
    const id = this._id;
    if (id < 0) return this;
    this._id = -1;
    loop._listeners[id] = undefined;
    binding.close(id);
    if (this.refed) loop._unref();
    this.maybeEmitClose();
    return this;
  }

  private maybeEmitClose(): void {
    if (this.closing && this._id < 0 && this.connections === 0) {
      this.closing = false;
      process.nextTick(emitClose, this);
    }
  }

  getConnections(cb: (err: Error | null, count: number) => void): this {
    process.nextTick(cb, null, this.connections);
    return this;
  }

  ref(): this {
    if (!this.refed) {
      this.refed = true;
      if (this._id >= 0) loop._ref();
    }
    return this;
  }

  unref(): this {
    if (this.refed) {
      this.refed = false;
      if (this._id >= 0) loop._unref();
    }
    return this;
  }

  /** @internal */
  _onAccept(id: number, familyPort: number, w0: number, w1: number, w2: number, w3: number): void {
    if (this.connections >= this.maxConnections) {
      // node's payload: both ends' addresses (one getsockname, on a path taken only when full)
      const local = binding.localAddress(id);
      const peer = peerAddressInfo(familyPort, w0, w1, w2, w3);
      binding.close(id);
      this.emit('drop', typeof local === 'number' ? { remoteAddress: peer.address, remotePort: peer.port, remoteFamily: peer.family } : {
        localAddress: local[0], localPort: local[1], localFamily: local[2] === AF_INET6 ? 'IPv6' : 'IPv4',
        remoteAddress: peer.address, remotePort: peer.port, remoteFamily: peer.family,
      });
      return;
    }
    const s = SocketClassImpl._accepted(id, familyPort, w0, w1, w2, w3, this.socketOptions, this);
    this.connections++;
    if (!this.noDelay) s.setNoDelay(false);
    if (this.keepAlive) s.setKeepAlive(true, this.keepAlive[1]);
    if (this.pauseOnConnect) s.pause();
    this.emit('connection', s);
  }

  /** @internal */
  _onSocketClosed(): void {
    this.connections--;
    this.maybeEmitClose();
  }

  /**
   * @internal Out of fds (EMFILE, ENFILE) or memory: the core pauses
   * accepting and retries when fds free up. Reported to 'error' listeners;
   * without one, a warning, once.
   */
  _onAcceptError(errno: number): void {
    const err: SystemError = errnoException(errno, 'accept');
    if (this.listenerCount('error') > 0) {
      this.emit('error', err);
    } else if (!this.warnedAcceptError) {
      this.warnedAcceptError = true;
      process.emitWarning(`iomux server: ${err.message}; accepting resumes when descriptors free up`, 'IomuxWarning');
    }
  }

  override [EventEmitter.captureRejectionSymbol](err: Error, event: string, sock?: Socket): void {
    if (event === 'connection' && sock !== undefined) sock.destroy(err);
    else this.emit('error', err);
  }
}

/** node:net's Server: callable with or without `new`. */
export type Server = ServerImpl;
type ServerClass = typeof ServerImpl & ((options?: ServerOptions | ((socket: Socket) => void),
  onConnection?: (socket: Socket) => void) => ServerImpl);
export const Server: ServerClass = new Proxy(ServerImpl, {
  apply(target, _this, args: [ServerOptions?, ((socket: Socket) => void)?]) {
    return new target(...args);
  },
}) as ServerClass;

export function createServer(options?: ServerOptions | ((socket: Socket) => void),
  onConnection?: (socket: Socket) => void): Server {
  return new ServerImpl(options, onConnection);
}
