// proxy.ts -- the load-balancing reverse proxy: a listener, the sessions of
// its clients (TCP relays or HTTP exchanges), the upstreams with their
// health, and a drain that lets what is under way finish before a deadline.
import { EventEmitter } from 'node:events';
import type { ListenOptions } from '../address';
import { Server } from '../server';
import type { AddressInfo, Socket } from '../socket';
import { createBalancer, type Balancer } from './balancer';
import { resolveOptions, type LogEntry, type ProxyMode, type ProxyOptions, type ResolvedOptions } from './config';
import type { ProxyCore, Session } from './core';
import { HealthChecker } from './health';
import { HttpSession } from './http';
import { TcpSession } from './tcp';
import { Upstream, type UpstreamStats } from './upstream';

export interface ProxyStats {
  mode: ProxyMode;
  /** The listening address, null when not listening. */
  address: AddressInfo | string | null;
  draining: boolean;
  clients: { active: number; total: number };
  /** HTTP requests received (0 in TCP mode). */
  requests: number;
  /** Client connections closed for a malformed PROXY header, requests refused as malformed, clients turned away with no upstream. */
  errors: { proxyHeader: number; badRequest: number; noUpstream: number };
  upstreams: UpstreamStats[];
}

export interface CloseOptions {
  /**
   * ms to let connections and requests under way finish; those still open
   * then are closed. Default 30000; 0 closes everything at once.
   */
  deadline?: number;
}

/**
 * Events: 'listening'; 'log' (LogEntry); 'upstream-down' (upstream, reason)
 * and 'upstream-up' (upstream, reason) as health changes; 'error' (a listen
 * error); 'close' once closed.
 */
export class Proxy extends EventEmitter implements ProxyCore {
  readonly options: ResolvedOptions;
  readonly upstreams: readonly Upstream[];
  readonly balancer: Balancer;
  /** @internal */ readonly _counters = { badRequests: 0, proxyHeaderErrors: 0, noUpstream: 0, requests: 0 };
  private readonly server: Server;
  private readonly sessions = new Set<Session>();
  private readonly health: HealthChecker | null;
  private clientsTotal = 0;
  private closing: Promise<void> | null = null;
  private drainTimer: NodeJS.Timeout | null = null;
  private allClosed: (() => void) | null = null;

  constructor(options: ProxyOptions) {
    super();
    this.options = resolveOptions(options);
    this.upstreams = this.options.upstreams.map((u) => new Upstream({ ...u }));
    this.balancer = createBalancer(this.options.balance, this.upstreams);
    for (const up of this.upstreams) {
      up.on('down', (why: string) => {
        this._log({ level: 'warn', event: 'upstream-down', upstream: up.name, message: `upstream ${up.name} is down: ${why}` });
        this.emit('upstream-down', up, why);
      });
      up.on('up', (why: string) => {
        this._log({ level: 'info', event: 'upstream-up', upstream: up.name, message: `upstream ${up.name} is up: ${why}` });
        this.emit('upstream-up', up, why);
      });
    }
    this.health = this.options.health === null ? null : new HealthChecker(this.upstreams, this.options.health);
    // Clients stay paused until their upstream is connected (TCP) or their
    // PROXY header is read; the proxy forwards FINs itself.
    this.server = new Server({ allowHalfOpen: true, pauseOnConnect: true }, (s) => this.onConnection(s));
    this.server.on('error', (err: Error) => this.emit('error', err));
    this.server.on('listening', () => {
      this.health?.start();
      this.emit('listening');
    });
  }

  get draining(): boolean {
    return this.closing !== null;
  }

  /** Listens as a server does: (port[, host][, cb]) or (options[, cb]). */
  listen(port: number, host?: string, cb?: () => void): this;
  listen(port: number, cb?: () => void): this;
  listen(options: ListenOptions, cb?: () => void): this;
  listen(...args: unknown[]): this {
    (this.server.listen as (...a: unknown[]) => Server)(...args);
    return this;
  }

  get listening(): boolean {
    return this.server.listening;
  }

  address(): AddressInfo | string | null {
    return this.server.address();
  }

  private onConnection(socket: Socket): void {
    if (this.closing !== null) {
      socket.destroy();
      return;
    }
    this.clientsTotal++;
    const session = this.options.mode === 'http' ? new HttpSession(this, socket) : new TcpSession(this, socket);
    this.sessions.add(session);
  }

  /** @internal */
  _sessionClosed(s: Session): void {
    this.sessions.delete(s);
    if (this.sessions.size === 0 && this.allClosed !== null) this.allClosed();
  }

  /** @internal */
  _log(entry: LogEntry): void {
    this.emit('log', entry);
  }

  /**
   * Drains: stops accepting, closes idle client connections, lets requests
   * and relays under way finish (HTTP responses then say Connection: close),
   * and at the deadline closes whatever is left. Resolves once every client
   * connection is gone; stops the health checks and empties the pools.
   */
  close(opts: CloseOptions = {}): Promise<void> {
    if (this.closing !== null) return this.closing;
    const deadline = opts.deadline ?? 30000;
    if (typeof deadline !== 'number' || !(deadline >= 0)) throw new RangeError(`deadline must be a number of ms >= 0, got ${String(deadline)}`);
    this.closing = new Promise<void>((resolve) => {
      const finish = (): void => {
        this.allClosed = null;
        if (this.drainTimer !== null) clearTimeout(this.drainTimer);
        this.drainTimer = null;
        this.health?.stop();
        for (const up of this.upstreams) up._stop();
        resolve();
        process.nextTick(() => this.emit('close'));
      };
      this.allClosed = finish;
      if (this.server.listening) this.server.close();
      this._log({
        level: 'info', event: 'drain',
        message: `draining: ${this.sessions.size} client connection(s) open, deadline ${deadline} ms`,
      });
      for (const s of [...this.sessions]) {
        if (s.idle) s.destroy();
        else s.drain();
      }
      if (this.sessions.size === 0) {
        finish();
        return;
      }
      // A Node timer, not a loop timer: it must hold the process open until
      // the deadline even when every socket is unref'd.
      this.drainTimer = setTimeout(() => {
        this.drainTimer = null;
        if (this.sessions.size > 0) {
          this._log({ level: 'warn', event: 'drain-deadline', message: `drain deadline: closing ${this.sessions.size} connection(s) still open` });
        }
        for (const s of [...this.sessions]) s.destroy();
      }, deadline);
    });
    return this.closing;
  }

  stats(): ProxyStats {
    const c = this._counters;
    return {
      mode: this.options.mode,
      address: this.server.address(),
      draining: this.draining,
      clients: { active: this.sessions.size, total: this.clientsTotal },
      requests: c.requests,
      errors: { proxyHeader: c.proxyHeaderErrors, badRequest: c.badRequests, noUpstream: c.noUpstream },
      upstreams: this.upstreams.map((u) => u.stats()),
    };
  }
}

/** Creates a proxy; call listen() to start it. */
export function createProxy(options: ProxyOptions): Proxy {
  return new Proxy(options);
}
