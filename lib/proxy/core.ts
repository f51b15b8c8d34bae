// core.ts -- what the TCP and HTTP sessions share: the view they have of the
// proxy, the client's address (from the socket or from its PROXY header), the
// reading of that header, and connecting to an upstream with failover.
import { isIP } from 'node:net';
import { loop } from '../loop';
import { connect, type Socket } from '../socket';
import type { Balancer } from './balancer';
import type { LogEntry, ResolvedOptions } from './config';
import { encodeV1, encodeV2, parseProxyHeader, ProxyProtocolError, type ProxyHeader } from './protocol';
import type { Upstream } from './upstream';

/** A client connection the proxy tracks, for drain and close. */
export interface Session {
  /** Nothing under way: it can be closed without cutting anything short. */
  readonly idle: boolean;
  /** Finish what is under way, take nothing new. */
  drain(): void;
  /** Close now. */
  destroy(): void;
}

/** What a session needs of its proxy. */
export interface ProxyCore {
  readonly options: ResolvedOptions;
  readonly balancer: Balancer;
  readonly upstreams: readonly Upstream[];
  readonly draining: boolean;
  _log(entry: LogEntry): void;
  _sessionClosed(s: Session): void;
  /** Counters of client-side events. */
  readonly _counters: { badRequests: number; proxyHeaderErrors: number; noUpstream: number; requests: number };
}

/** Who the client is: the socket's peer, or what its PROXY header said. */
export interface ClientInfo {
  address: string;
  port: number;
  /** Where the client connected to (this proxy's address, or the header's destination). */
  localAddress: string;
  localPort: number;
}

export function clientOf(socket: Socket): ClientInfo {
  return {
    address: socket.remoteAddress ?? '',
    port: socket.remotePort ?? 0,
    localAddress: socket.localAddress ?? '',
    localPort: socket.localPort ?? 0,
  };
}

export function describeClient(c: ClientInfo): string {
  return c.address.includes(':') ? `[${c.address}]:${c.port}` : `${c.address}:${c.port}`;
}

export interface ProxyHeaderRead {
  header: ProxyHeader;
  /** Bytes that came after the header: the connection's own first bytes. */
  rest: Buffer;
}

/**
 * Reads a PROXY protocol header from a socket that has just been accepted.
 * Resolves with it and the bytes after it (the socket is left paused);
 * rejects with a ProxyProtocolError for a malformed header, a timeout or a
 * close before the header was complete.
 */
export function readProxyHeader(socket: Socket, opts: { allowV1: boolean; allowV2: boolean }, timeoutMs: number): Promise<ProxyHeaderRead> {
  return new Promise<ProxyHeaderRead>((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | null, value?: ProxyHeaderRead): void => {
      if (done) return;
      done = true;
      loop.clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.removeListener('close', onEnd);
      socket.pause();
      if (err !== null) reject(err);
      else resolve(value!);
    };
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      try {
        const r = parseProxyHeader(buf, opts);
        if (r.done) finish(null, { header: r.header, rest: buf.subarray(r.consumed) });
      } catch (err) {
        finish(err as Error);
      }
    };
    const onEnd = (): void => finish(new ProxyProtocolError('ERR_PROXY_PROTOCOL_INCOMPLETE', 'the connection ended before a complete PROXY protocol header'));
    const timer = loop.setTimeout(() => finish(new ProxyProtocolError('ERR_PROXY_PROTOCOL_TIMEOUT', `no complete PROXY protocol header within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.resume();
  });
}

/** The client as a received header describes it (a LOCAL or UNKNOWN header: the socket's own). */
export function clientFromHeader(socket: Socket, h: ProxyHeader): ClientInfo {
  const own = clientOf(socket);
  if (h.command !== 'proxy' || (h.family !== 'tcp4' && h.family !== 'tcp6')) return own;
  return {
    address: h.sourceAddress!,
    port: h.sourcePort!,
    localAddress: h.destinationAddress!,
    localPort: h.destinationPort!,
  };
}

/** '::ffff:1.2.3.4' → '1.2.3.4': how a dual-stack listener sees an IPv4 client. */
function unmapped(a: string): string {
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
}

/** The PROXY header to send ahead of a connection made for this client. */
export function proxyHeaderFor(version: 1 | 2, c: ClientInfo): Buffer {
  const src = unmapped(c.address);
  let dst = unmapped(c.localAddress);
  const fs = isIP(src);
  let fd = isIP(dst);
  if (fs !== 0 && fd !== fs) {
    // The two ends of one header share a family; an IPv4 client of an IPv6
    // listener (or the reverse) gets a destination of that family's "any".
    dst = fs === 4 ? '0.0.0.0' : '::';
    fd = fs;
  }
  if (fs === 0) {
    // A unix-socket client: nothing to tell the upstream about.
    return version === 1 ? encodeV1({ family: 'unknown' }) : encodeV2({ command: 'proxy', family: 'unknown' });
  }
  const info = {
    family: fs === 4 ? 'tcp4' as const : 'tcp6' as const,
    sourceAddress: src,
    sourcePort: c.port,
    destinationAddress: dst,
    destinationPort: c.localPort,
  };
  return version === 1 ? encodeV1(info) : encodeV2(info);
}

/** A connection to an upstream that could not be made. */
export class UpstreamConnectError extends Error {
  readonly code: string;
  constructor(readonly upstream: Upstream, cause: Error & { code?: string }) {
    super(`connect to ${upstream.name}: ${cause.code ?? cause.message}`);
    this.name = 'UpstreamConnectError';
    this.code = cause.code ?? 'ERR_PROXY_CONNECT';
  }
}

/** The upstream's count of active connections goes down when one closes: a
 * closure of its own, so that it keeps nothing of connectUpstream's. */
function countClose(up: Upstream): () => void {
  return () => {
    up.counters.active--;
  };
}

/**
 * Opens a connection to up (allowHalfOpen: the proxy forwards FINs itself).
 * Resolves once connected; rejects with an UpstreamConnectError (counted,
 * and a passive health failure) when refused or not connected within
 * connectTimeout. `first` is written ahead of everything (a PROXY header).
 */
export function connectUpstream(core: ProxyCore, up: Upstream, first: Buffer | null): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const o = core.options;
    const s = connect({ host: up.host, port: up.port, allowHalfOpen: true });
    up.counters.total++;
    up.counters.active++;
    s.on('close', countClose(up));
    if (first !== null) {
      s.write(first);
      up.counters.bytesOut += first.length;
    }
    let settled = false;
    const fail = (err: Error & { code?: string }): void => {
      if (settled) return;
      settled = true;
      s.removeListener('error', fail);
      s.on('error', () => {});
      s.destroy();
      up.counters.connectFailures++;
      const e = new UpstreamConnectError(up, err);
      up._passiveFailure(o.passiveFailures, o.passiveCooldown, e.code);
      reject(e);
    };
    const onClose = (): void => fail(Object.assign(new Error('closed while connecting'), { code: 'ECONNRESET' }));
    const onTimeout = (): void => {
      if (s.connecting) fail(Object.assign(new Error(`no connection within ${o.connectTimeout} ms`), { code: 'ETIMEDOUT' }));
    };
    s.on('error', fail);
    s.on('close', onClose);
    s.setTimeout(o.connectTimeout, onTimeout);
    s.once('connect', () => {
      if (settled) return;
      settled = true;
      // The connecting listeners go: left on an idle connection they would
      // keep this closure's context (and the promise's functions) for its life.
      s.setTimeout(0, onTimeout);
      s.removeListener('close', onClose);
      s.removeListener('error', fail);
      up._passiveSuccess();
      resolve(s);
    });
  });
}

/**
 * Connects to the balancer's choice, failing over to the next upstream on
 * each failure until one works or all were tried. Rejects with the last
 * UpstreamConnectError (or a coded error when there is no upstream). The
 * chosen upstream's load is counted from the pick (so that concurrent picks
 * spread out); the caller takes it back when its relay or request is over.
 */
export async function connectWithFailover(core: ProxyCore, client: ClientInfo,
  tried: Set<Upstream>): Promise<{ socket: Socket; upstream: Upstream }> {
  let last: Error | null = null;
  for (;;) {
    const up = core.balancer.pick(tried);
    if (up === null) {
      throw last ?? Object.assign(new Error('no upstream available'), { code: 'ERR_PROXY_NO_UPSTREAM' });
    }
    tried.add(up);
    up.load++;
    const header = up.sendProxy === false ? null : proxyHeaderFor(up.sendProxy, client);
    try {
      const socket = await connectUpstream(core, up, header);
      return { socket, upstream: up };
    } catch (err) {
      up.load--;
      last = err as Error;
      core._log({
        level: 'warn', event: 'connect-failed', upstream: up.name, client: describeClient(client),
        message: `${(err as Error).message}; trying the next upstream`,
      });
    }
  }
}
