// address.ts -- argument checking for listen() and connect(), and hostname
// resolution. IP literals never reach the resolver.
import { lookup } from 'node:dns';
import { isIP } from 'node:net';
import { badPort, invalidArgType, invalidArgValue, outOfRange } from './errors';

export interface ConnectOptions {
  port?: number | string;
  host?: string;
  /** A unix socket path; port and host are then ignored. */
  path?: string;
  /** 4 or 6 to restrict the hostname lookup; 0 (default) takes the resolver's first answer. */
  family?: number;
  /** TCP_NODELAY (default true). */
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
  /** Idle timeout in ms, as socket.setTimeout(). */
  timeout?: number;
}

export interface ListenOptions {
  /**
   * Adopt this already listening socket (one inherited from a parent
   * process) instead of binding: port, host and path are then ignored.
   * The server owns the fd from then on; close() closes it.
   */
  fd?: number;
  port?: number | string;
  host?: string;
  path?: string;
  backlog?: number;
  /** SO_REUSEPORT: several servers (processes or threads) share the port. */
  reusePort?: boolean;
  /** Only IPv6 on a '::' listener (no IPv4-mapped clients). */
  ipv6Only?: boolean;
  /**
   * The client speaks first (HTTP, TLS): a connection is accepted once its
   * first bytes came, and they are read at once (TCP_DEFER_ACCEPT, Linux;
   * ignored elsewhere and on unix sockets). A silent client is accepted
   * about a second late.
   */
  deferAccept?: boolean;
}

/** ConnectOptions once checked: the port is a number. */
export type NormalizedConnect = Omit<ConnectOptions, 'port'> & { port?: number };

/** A port as node accepts it: an integer (or integer string) in 0..65535. */
export function validatePort(value: unknown, name: string, allowZero = true): number {
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && value.trim() !== '' && /^\d+$/.test(value.trim())) n = Number(value);
  else throw badPort(name, value);
  if (!Number.isInteger(n) || n < 0 || n > 65535 || (!allowZero && n === 0)) throw badPort(name, value);
  return n;
}

export function validateHost(value: unknown, name: string): string {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value);
  if (value.length === 0 || value.length > 255 || /[\s/\\]/.test(value)) throw invalidArgValue(name, value, 'must be a hostname or an IP address');
  return value;
}

export function validatePath(value: unknown, name: string): string {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value);
  if (value.length === 0) throw invalidArgValue(name, value, 'must be a non-empty path');
  if (Buffer.byteLength(value) > 107) throw invalidArgValue(name, value, 'is longer than a unix socket path can be (107 bytes)');
  if (value.includes('\0')) throw invalidArgValue(name, value, 'must not contain NUL');
  return value;
}

export function validateTimeout(value: unknown, name: string): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!(value >= 0) || !Number.isFinite(value) || value > 2 ** 32 - 1) throw outOfRange(name, '>= 0 and <= 4294967295', value);
  return value;
}

function validateFamily(value: unknown, name: string): number {
  if (value === undefined || value === null) return 0;
  if (value === 0 || value === 4 || value === 6) return value;
  if (value === 'IPv4') return 4;
  if (value === 'IPv6') return 6;
  throw invalidArgValue(name, value, 'must be one of: 0, 4, 6');
}

function isPortLike(value: unknown): boolean {
  return typeof value === 'number' || (typeof value === 'string' && /^\s*\d+\s*$/.test(value));
}

/** connect(port[, host][, cb]) | connect(path[, cb]) | connect(options[, cb]) */
export function normalizeConnectArgs(args: unknown[]): [NormalizedConnect, (() => void) | undefined] {
  let cb: (() => void) | undefined;
  if (args.length && typeof args[args.length - 1] === 'function') cb = args.pop() as () => void;
  const first = args[0];
  const out: NormalizedConnect = {};
  if (first !== null && typeof first === 'object') {
    const o = first as ConnectOptions;
    if (o.path !== undefined) {
      out.path = validatePath(o.path, 'options.path');
    } else {
      if (o.port === undefined) throw invalidArgType('options.port', 'of type number or string', o.port);
      out.port = validatePort(o.port, 'options.port', false);
      if (o.host !== undefined) out.host = validateHost(o.host, 'options.host');
    }
    out.family = validateFamily(o.family, 'options.family');
    if (o.noDelay !== undefined) out.noDelay = Boolean(o.noDelay);
    if (o.keepAlive !== undefined) out.keepAlive = Boolean(o.keepAlive);
    if (o.keepAliveInitialDelay !== undefined) out.keepAliveInitialDelay = validateTimeout(o.keepAliveInitialDelay, 'options.keepAliveInitialDelay');
    if (o.timeout !== undefined) out.timeout = validateTimeout(o.timeout, 'options.timeout');
  } else if (typeof first === 'string' && !isPortLike(first)) {
    out.path = validatePath(first, 'path');
  } else {
    out.port = validatePort(first, 'port', false);
    if (args[1] !== undefined && args[1] !== null) out.host = validateHost(args[1], 'host');
  }
  return [out, cb];
}

export interface NormalizedListen {
  fd?: number;
  port?: number;
  host?: string;
  path?: string;
  backlog: number;
  reusePort: boolean;
  ipv6Only: boolean;
  deferAccept: boolean;
}

function validateBacklog(value: unknown, name: string): number {
  if (value === undefined || value === null) return 511;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 2 ** 31 - 1) {
    throw outOfRange(name, 'an integer >= 0', value);
  }
  return value;
}

/** listen([port[, host[, backlog]]][, cb]) | listen(path[, backlog][, cb]) | listen(options[, cb]) */
export function normalizeListenArgs(args: unknown[]): [NormalizedListen, (() => void) | undefined] {
  let cb: (() => void) | undefined;
  if (args.length && typeof args[args.length - 1] === 'function') cb = args.pop() as () => void;
  const first = args[0];
  const out: NormalizedListen = { backlog: 511, reusePort: false, ipv6Only: false, deferAccept: false };
  if (first !== null && typeof first === 'object') {
    const o = first as ListenOptions;
    if (o.fd !== undefined) {
      if (typeof o.fd !== 'number') throw invalidArgType('options.fd', 'of type number', o.fd);
      if (!Number.isInteger(o.fd) || o.fd < 0 || o.fd > 0x7fffffff) {
        throw outOfRange('options.fd', '>= 0 and <= 2147483647', o.fd);
      }
      out.fd = o.fd;
    } else if (o.path !== undefined) {
      out.path = validatePath(o.path, 'options.path');
    } else {
      out.port = o.port === undefined ? 0 : validatePort(o.port, 'options.port');
      if (o.host !== undefined) out.host = validateHost(o.host, 'options.host');
    }
    out.backlog = validateBacklog(o.backlog, 'options.backlog');
    out.reusePort = Boolean(o.reusePort);
    out.ipv6Only = Boolean(o.ipv6Only);
    if (o.deferAccept !== undefined && typeof o.deferAccept !== 'boolean') {
      throw invalidArgType('options.deferAccept', 'of type boolean', o.deferAccept);
    }
    out.deferAccept = o.deferAccept === true;
  } else if (typeof first === 'string' && !isPortLike(first)) {
    out.path = validatePath(first, 'path');
    out.backlog = validateBacklog(args[1], 'backlog');
  } else {
    out.port = first === undefined || first === null ? 0 : validatePort(first, 'port');
    let i = 1;
    if (typeof args[1] === 'string' || args[1] === null) {
      if (args[1] !== null) out.host = validateHost(args[1], 'host');
      i = 2;
    }
    out.backlog = validateBacklog(args[i], 'backlog');
  }
  return [out, cb];
}

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Every address of a hostname, in the resolver's order (connect tries them in turn). */
export function lookupAll(host: string, family: number,
  cb: (err: Error | null, addresses: ResolvedAddress[]) => void): void {
  lookup(host, { family: family as 0 | 4 | 6, all: true }, (err, addresses) => {
    if (err) cb(err, []);
    else if (addresses.length === 0) cb(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname: host }), []);
    else cb(null, addresses);
  });
}

/** Resolves a hostname; IP literals come back as they are, with no lookup. */
export function lookupHost(host: string, family: number,
  cb: (err: Error | null, address: string, family: number) => void): void {
  const fam = isIP(host);
  if (fam !== 0) {
    process.nextTick(cb, null, host, fam);
    return;
  }
  lookup(host, { family: family as 0 | 4 | 6 }, (err, address, f) => {
    if (err) cb(err, '', 0);
    else cb(null, address, f);
  });
}
