// upstream.ts -- one backend the proxy sends connections or requests to: its
// address and weight, its health (passive and active), its counters, and the
// pool of idle keep-alive connections it has in HTTP mode.
import { EventEmitter } from 'node:events';
import { loop, type Timer } from '../loop';
import type { Socket } from '../socket';

export type ProxyProtocolVersion = 1 | 2;

/** An idle keep-alive connection in a pool (HTTP mode). */
export interface IdleConnection {
  readonly socket: Socket;
}

/** One upstream, as given to createProxy(). */
export interface UpstreamOptions {
  host: string;
  port: number;
  /** Share of the traffic relative to the others (default 1). */
  weight?: number;
  /** Send a PROXY protocol header of this version on each connection to it (default: none). */
  sendProxy?: ProxyProtocolVersion | false;
  /** Name in logs and statistics (default "host:port"). */
  name?: string;
}

export type HealthState = 'up' | 'down';

/** An upstream's counters and state, as proxy.stats() reports them. */
export interface UpstreamStats {
  name: string;
  host: string;
  port: number;
  weight: number;
  state: HealthState;
  /** Why it is down ('' when up). */
  reason: string;
  connections: {
    /** Open connections to it (busy and idle in the pool). */
    active: number;
    /** Connections opened to it so far. */
    total: number;
    /** Of `active`, idle keep-alive connections in the pool (HTTP mode). */
    idle: number;
  };
  /** HTTP requests forwarded to it: under way, in all, and those it answered with 101 Switching Protocols (then relayed as bytes). */
  requests: { active: number; total: number; upgraded: number };
  /** Bytes received from it. */
  bytesIn: number;
  /** Bytes sent to it. */
  bytesOut: number;
  failures: {
    /** Connection attempts that failed (refused, unreachable, timed out). */
    connect: number;
    /** Connections reset or closed in the middle of an exchange. */
    reset: number;
    /** Responses that did not come in time (HTTP 504) or idle relays cut. */
    timeout: number;
    /** Malformed responses (HTTP 502). */
    protocol: number;
    /** Active health checks that failed. */
    check: number;
  };
  /** Consecutive connect failures or resets (passive health). */
  consecutiveFailures: number;
  /** ms since the epoch of the last change of `state`. */
  since: number;
}

export class Upstream extends EventEmitter {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly sendProxy: ProxyProtocolVersion | false;

  /** @internal what the balancers count: relays (TCP) or requests (HTTP) under way */
  load = 0;
  /** @internal smooth weighted round-robin's running score */
  current = 0;
  /** @internal idle keep-alive connections, most recently used last */
  readonly idle: IdleConnection[] = [];

  private passiveDownUntil = 0;
  private activeUp = true;
  private up = true;
  private downReason = '';
  private cooldownTimer: Timer | null = null;

  readonly counters = {
    active: 0,
    total: 0,
    requestsActive: 0,
    requests: 0,
    upgraded: 0,
    bytesIn: 0,
    bytesOut: 0,
    connectFailures: 0,
    resets: 0,
    timeouts: 0,
    protocol: 0,
    checks: 0,
    consecutive: 0,
  };
  private since = Date.now();

  constructor(opts: Required<Pick<UpstreamOptions, 'host' | 'port'>> & UpstreamOptions) {
    super();
    this.host = opts.host;
    this.port = opts.port;
    this.weight = opts.weight ?? 1;
    this.sendProxy = opts.sendProxy ?? false;
    this.name = opts.name ?? (opts.host.includes(':') ? `[${opts.host}]:${opts.port}` : `${opts.host}:${opts.port}`);
  }

  /** Whether the balancer may pick it. */
  get healthy(): boolean {
    return this.up;
  }

  get state(): HealthState {
    return this.up ? 'up' : 'down';
  }

  /** @internal A connect failure or a reset: `threshold` in a row take it out for `cooldownMs`. */
  _passiveFailure(threshold: number, cooldownMs: number, what: string): void {
    const n = ++this.counters.consecutive;
    if (threshold <= 0 || n < threshold || !this.up) return;
    this.passiveDownUntil = Date.now() + cooldownMs;
    if (this.cooldownTimer !== null) loop.clearTimeout(this.cooldownTimer);
    // When the cool-down is over it gets traffic again; one more failure
    // (the count is not reset) takes it out again at once.
    this.cooldownTimer = loop.setTimeout(() => {
      this.cooldownTimer = null;
      this.passiveDownUntil = 0;
      this.counters.consecutive = threshold - 1;
      this.update('cool-down over');
    }, cooldownMs);
    this.cooldownTimer.unref();
    this.update(`${n} consecutive failures (last: ${what})`);
  }

  /** @internal A connection or an exchange that worked. */
  _passiveSuccess(): void {
    this.counters.consecutive = 0;
  }

  /** @internal The outcome of an active check. */
  _checkResult(ok: boolean, why: string): void {
    if (ok === this.activeUp) return;
    this.activeUp = ok;
    if (ok) this.counters.consecutive = 0;
    this.update(why);
  }

  private update(why: string): void {
    const up = this.activeUp && Date.now() >= this.passiveDownUntil;
    if (up === this.up) return;
    this.up = up;
    this.since = Date.now();
    this.downReason = up ? '' : why;
    this.emit(up ? 'up' : 'down', why);
  }

  /** @internal Stops the cool-down timer (the proxy is closing). */
  _stop(): void {
    if (this.cooldownTimer !== null) loop.clearTimeout(this.cooldownTimer);
    this.cooldownTimer = null;
    for (const c of this.idle.splice(0)) c.socket.destroy();
  }

  stats(): UpstreamStats {
    const c = this.counters;
    return {
      name: this.name,
      host: this.host,
      port: this.port,
      weight: this.weight,
      state: this.state,
      reason: this.downReason,
      connections: { active: c.active, total: c.total, idle: this.idle.length },
      requests: { active: c.requestsActive, total: c.requests, upgraded: c.upgraded },
      bytesIn: c.bytesIn,
      bytesOut: c.bytesOut,
      failures: {
        connect: c.connectFailures, reset: c.resets, timeout: c.timeouts, protocol: c.protocol, check: c.checks,
      },
      consecutiveFailures: c.consecutive,
      since: this.since,
    };
  }
}
