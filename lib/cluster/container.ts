// container.ts -- the worker side: one Container per worker process, talking
// to the master over the inherited control channel.
import { EventEmitter } from 'node:events';
import { loop, type Timer } from '../loop';
import { Channel, adoptSocket } from './channel';
import { FrameType, type Frame } from './protocol';
import { LocalWaits, SyncClient, SyncRegion, bellRinger, holdLife, openBell, type Config, type Counter, type Mutex, type Semaphore, type SharedVar } from '../shared/sync';

/** What the master puts in the worker's environment (IOMUX_CLUSTER, JSON). */
export interface WorkerSpec {
  v: 1;
  id: string;
  service: string;
  module: string;
  args: string[];
  /** fd of the control channel's end. */
  ctl: number;
  listeners: { fd: number; address: string }[];
  /** Shared caches handed down (service option caches), by name. */
  caches?: { fd: number; name: string }[];
  /** The sync region's fd, this container's id in it and the doorbells' directory (lib/shared/sync.ts). */
  sync?: { fd: number; id: number; bells?: string };
}

/** Sender of a message: a container, or the master. */
export interface MessageFrom {
  id: string;
  service: string;
}

/** The hooks a worker module may export (any of them may return a promise). */
export interface WorkerHooks {
  postStart?(container: Container): unknown;
  preFinish?(container: Container): unknown;
  receiveMessage?(container: Container, name: string, args: unknown[]): unknown;
  receiveAdminMessage?(container: Container, name: string, args: unknown[]): unknown;
  shutdown?(): unknown;
  /** true keeps the worker alive after an uncaught exception; false lets it die (and be restarted). */
  globalExceptionHandler?(err: unknown): boolean;
}

/** Something the container stops at shutdown: an iomux or node server, an http server. */
interface Closable {
  close(cb?: (err?: Error) => void): unknown;
  /** iomux.http's graceful close (HttpServer.drain), used instead of close() where there is one. */
  drain?(options: { idleGrace?: number; timeout?: number }): Promise<void>;
  listen(options: { fd: number }, cb?: () => void): unknown;
  once(event: string, cb: (...a: any[]) => void): unknown;
}

/**
 * Events: 'message' (name, args, from), 'adminMessage' (name, args),
 * 'shutdown' when the graceful stop begins.
 */
export class Container extends EventEmitter {
  readonly id: string;
  readonly service: string;
  readonly args: readonly string[];
  /** The listening sockets the master handed down: adopt them with listen(server, i). */
  readonly inherited: readonly { fd: number; address: string }[];
  /** The shared caches the master handed down, by name (attach with cache(name)). */
  readonly inheritedCaches: readonly { fd: number; name: string }[];
  private readonly attachedCaches = new Map<string, import('../shared').SharedCache>();
  /** @internal */ readonly _channel: Channel;
  /** @internal */ _hooks: WorkerHooks = {};
  private readonly timers = new Set<Timer>();
  private readonly servers: Closable[] = [];
  private stopping = false;
  private readonly syncSpec: { fd: number; id: number; bells?: string } | undefined;
  private syncClient: SyncClient | null = null;

  /** @internal */
  constructor(spec: WorkerSpec) {
    super();
    this.syncSpec = spec.sync;
    this.id = spec.id;
    this.service = spec.service;
    this.args = spec.args;
    this.inherited = spec.listeners;
    this.inheritedCaches = spec.caches ?? [];
    this._channel = new Channel(adoptSocket(spec.ctl));
    this._channel.on('frame', (f: Frame) => this.onFrame(f));
    this._channel.on('request', (op: string, body: Record<string, unknown>, reply: (r: unknown) => void) => {
      if (op === 'stats') {
        reply({ pid: process.pid, rss: process.memoryUsage.rss(), connections: this.connections() });
      } else {
        reply(new Error(`unknown request op ${op}`));
      }
    });
    // The master is gone: nothing supervises this worker any more.
    this._channel.on('close', () => {
      if (!this.stopping) void this.stop(0, true);
    });
  }

  /** True once the graceful stop began. */
  get isStopping(): boolean {
    return this.stopping;
  }

  /**
   * Sends a message to target: a service name (each of its containers), a
   * container id, '*' (every container) or 'master'. Delivered in order
   * per sender.
   */
  send(target: string, name: string, ...args: unknown[]): void {
    if (typeof target !== 'string' || target === '') throw new TypeError('target must be a service name, a container id, \'*\' or \'master\'');
    if (typeof name !== 'string') throw new TypeError('name must be a string');
    this._channel.send(FrameType.MESSAGE, { target, name, args });
  }

  /** A request to the master (the channel that later shared-state operations use). */
  request(op: string, args: Record<string, unknown> = {}): Promise<unknown> {
    return this._channel.request(op, args);
  }

  /**
   * The service's shared cache of that name (or index), attached on first
   * use: one hashtable for every worker, kept by the master across restarts.
   */
  cache(name: string | number = 0): import('../shared').SharedCache {
    const c = typeof name === 'number' ? this.inheritedCaches[name] : this.inheritedCaches.find((x) => x.name === name);
    if (!c) {
      throw new RangeError(`no shared cache ${JSON.stringify(name)} (this service has ${this.inheritedCaches.map((x) => x.name).join(', ') || 'none'})`);
    }
    let cache = this.attachedCaches.get(c.name);
    if (!cache) {
      const { SharedCache } = require('../shared') as typeof import('../shared');
      cache = SharedCache.fromFd(c.fd);
      this.attachedCaches.set(c.name, cache);
    }
    return cache;
  }

  /** The semaphores, mutexes, shared variables and config shared with the master and the other containers. */
  get sync(): SyncClient {
    if (!this.syncClient) {
      const spec = this.syncSpec;
      if (!spec) throw new Error('this master gave no sync region');
      const region = SyncRegion.attach(spec.fd);
      const channel = this._channel;
      // the master watches this lock to learn of this process's death early
      if (holdLife(region, spec.id)) channel.send(FrameType.SYNC, { life: 1 });
      const call = (op: string, args: Record<string, unknown>): Promise<unknown> => channel.request(op, args);
      // the doorbell: a release in another process wakes this one directly
      let waits: LocalWaits | undefined;
      if (spec.bells) {
        const w = new LocalWaits(call, (slot, t) => { channel.send(FrameType.SYNC, { s: slot, t }); });
        if (openBell(spec.bells, spec.id, w)) waits = w;
      }
      this.syncClient = new SyncClient({
        region,
        id: spec.id,
        call,
        kick: (slot) => { channel.send(FrameType.SYNC, { s: slot }); },
        ring: spec.bells ? bellRinger(spec.bells) : undefined,
        waits,
      });
    }
    return this.syncClient;
  }

  /** A named semaphore (docs/sync.md). */
  semaphore(name: string): Promise<Semaphore> {
    return this.sync.semaphore(name);
  }

  /** A named mutex (docs/sync.md). */
  mutex(name: string): Promise<Mutex> {
    return this.sync.mutex(name);
  }

  /** A named, versioned shared variable (docs/sync.md). */
  sharedVar(name: string): Promise<SharedVar> {
    return this.sync.sharedVar(name);
  }

  /** An atomic counter (docs/sync.md). */
  counter(name: string): Promise<Counter> {
    return this.sync.counter(name);
  }

  /** The shared config object: put/get and counter(name).next(). */
  get config(): Config {
    return this.sync.config;
  }

  /** Adopts the index-th inherited listener with server (iomux Server, http server, or node's). */
  listen<S extends Closable>(server: S, index = 0, cb?: () => void): S {
    const l = this.inherited[index];
    if (!l) throw new RangeError(`no inherited listener ${index} (this service has ${this.inherited.length})`);
    this.servers.push(server);
    server.listen({ fd: l.fd }, cb);
    return server;
  }

  /** Timers that are cleared when the worker shuts down. */
  setInterval(cb: () => void, ms: number): Timer {
    const t = loop.setInterval(cb, ms);
    this.timers.add(t);
    return t;
  }

  setTimeout(cb: () => void, ms: number): Timer {
    const t = loop.setTimeout(() => {
      this.timers.delete(t);
      cb();
    }, ms);
    this.timers.add(t);
    return t;
  }

  clearTimer(t: Timer): void {
    this.timers.delete(t);
    loop.clearTimeout(t);
  }

  private connections(): number {
    let n = 0;
    for (const s of this.servers) {
      const c = (s as { connectionCount?: number; _connections?: number }).connectionCount
        ?? (s as unknown as { connections?: number }).connections;
      if (typeof c === 'number') n += c;
    }
    return n;
  }

  private onFrame(f: Frame): void {
    const b = (f.body ?? {}) as Record<string, unknown>;
    switch (f.type) {
      case FrameType.MESSAGE: {
        const name = String(b.name);
        const args = Array.isArray(b.args) ? b.args : [];
        const from = (b.from ?? { id: 'master', service: 'master' }) as MessageFrom;
        this.emit('message', name, args, from);
        if (this._hooks.receiveMessage) void guard(() => this._hooks.receiveMessage!(this, name, args));
        break;
      }
      case FrameType.ADMIN: {
        const name = String(b.name);
        const args = Array.isArray(b.args) ? b.args : [];
        this.emit('adminMessage', name, args);
        if (this._hooks.receiveAdminMessage) void guard(() => this._hooks.receiveAdminMessage!(this, name, args));
        break;
      }
      case FrameType.SHUTDOWN:
        void this.stop(typeof b.grace === 'number' ? b.grace : 10000, false,
          typeof b.idleGrace === 'number' && b.idleGrace > 0 ? b.idleGrace : undefined);
        break;
      default:
        break; // a later master's one-way frame: ignored
    }
  }

  /** @internal The graceful stop: preFinish, stop accepting, drain, shutdown, exit. */
  async stop(grace: number, orphaned: boolean, idleGrace?: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this._channel.send(FrameType.STOPPING);
    this.emit('shutdown');
    for (const t of this.timers) loop.clearTimeout(t);
    this.timers.clear();
    if (this._hooks.preFinish) await guard(() => this._hooks.preFinish!(this));
    // Stop accepting and let the open connections finish; their close
    // resolves each server's close(). An iomux HTTP server drains: each
    // keep-alive connection's next request is still answered (with
    // Connection: close), so a client that sends it as the worker retires
    // sees a response, not a closed connection. The master kills us after
    // the grace.
    const closes = this.servers.map((s) => new Promise<void>((resolve) => {
      try {
        if (typeof s.drain === 'function') {
          s.drain({ idleGrace, timeout: grace }).then(() => resolve(), () => resolve());
          return;
        }
        const r = s.close(() => resolve());
        if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(() => resolve(), () => resolve());
      } catch {
        resolve();
      }
    }));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(closes),
      new Promise<void>((r) => { timer = setTimeout(r, orphaned ? Math.min(grace, 1000) : grace); }),
    ]);
    if (timer) clearTimeout(timer);
    if (this._hooks.shutdown) await guard(() => this._hooks.shutdown!());
    this._channel.send(FrameType.STOPPED);
    this._channel.end();
    // Whatever the module left open (timers, sockets) must not keep us.
    setImmediate(() => process.exit(0));
  }
}

/** Runs a hook; what it throws (or rejects with) is an uncaught exception of the worker. */
async function guard(fn: () => unknown): Promise<void> {
  try {
    await fn();
  } catch (err) {
    setImmediate(() => { throw err; });
  }
}

let current: Container | null = null;

/** @internal */
export function _setContainer(c: Container): void {
  current = c;
}

/** The container of this worker process, or null outside a supervised worker. */
export function getContainer(): Container | null {
  return current;
}
