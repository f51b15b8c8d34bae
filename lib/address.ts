// address.ts -- argument checking for listen() and connect(), and hostname
// resolution. IP literals never reach the resolver.
import type { EventEmitter } from 'node:events';
import { ADDRCONFIG, lookup, type LookupOptions } from 'node:dns';
import { getDefaultAutoSelectFamily, getDefaultAutoSelectFamilyAttemptTimeout, isIP } from 'node:net';
import { badPort, invalidArgType, invalidArgValue, missingArgs, outOfRange } from './errors';

export interface ConnectOptions {
  port?: number | string;
  host?: string;
  /** A unix socket path; port and host are then ignored. */
  path?: string;
  /** 4 or 6 to restrict the hostname lookup; 0 (default) takes the resolver's first answer. */
  family?: number | string;
  /** TCP_NODELAY (default true). */
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
  /** Idle timeout in ms, as socket.setTimeout(). */
  timeout?: number;
  /** dns.lookup() flags. */
  hints?: number;
  /** A dns.lookup()-like resolver used instead of dns.lookup. */
  lookup?: (hostname: string, options: LookupOptions,
    cb: (err: Error | null, address: string | ResolvedAddress[], family?: number) => void) => void;
  /** Bind the connecting socket to this local address / port first. */
  localAddress?: string;
  localPort?: number;
  /** Happy eyeballs: try the resolved addresses in turn, families alternating (default: net.getDefaultAutoSelectFamily()). */
  autoSelectFamily?: boolean;
  /** ms an attempt has before the next address is tried (default 250, at least 10). */
  autoSelectFamilyAttemptTimeout?: number;
  /** As node's onread: reads go into this buffer and to callback. */
  onread?: { buffer: Uint8Array | (() => Uint8Array); callback: (bytes: number, buffer: Uint8Array) => boolean | void };
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
  /** Closes the server when aborted. */
  signal?: AbortSignal;
  /** A unix listener's socket file readable / writable by every user (default: owner only). */
  readableAll?: boolean;
  writableAll?: boolean;
  /** Ignored, as node ignores it outside cluster. */
  exclusive?: boolean;
}

/** ConnectOptions once checked: the port is a number. */
export type NormalizedConnect = Omit<ConnectOptions, 'port' | 'family'> & { port?: number; family?: number };

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

/** A port as node's net checks it for connect(): a number or a numeric string (0x.. too) in 0..65535. */
function validateConnectPort(value: unknown, name: string): number {
  if (typeof value !== 'number' && typeof value !== 'string') {
    throw invalidArgType(name, 'of type number or string', value);
  }
  if ((typeof value === 'string' && value.trim().length === 0) || +value !== (+value >>> 0) || +value > 0xffff) {
    throw badPort('Port', value);
  }
  return +value | 0;
}

function isPipeName(s: unknown): boolean {
  return typeof s === 'string' && !(Number(s) >= 0);
}

/** connect(port[, host][, cb]) | connect(path[, cb]) | connect(options[, cb]), as node's normalizeArgs() and connect() check them. */
export function normalizeConnectArgs(args: unknown[]): [NormalizedConnect, (() => void) | undefined] {
  const last = args[args.length - 1];
  const cb = typeof last === 'function' ? last as () => void : undefined;
  const first = args[0];
  let o: ConnectOptions;
  if (args.length === 0) o = {};
  else if (first !== null && typeof first === 'object') o = first as ConnectOptions;
  else if (isPipeName(first)) o = { path: first as string };
  else {
    o = { port: first as number };
    if (args.length > 1 && typeof args[1] === 'string') o.host = args[1];
  }
  if (o.port === undefined && (o.path === undefined || o.path === null)) throw missingArgs('"options" or "port" or "path"');
  const out: NormalizedConnect = {};
  if (o.path !== undefined && o.path !== null && (o.path as unknown) !== '') {
    out.path = validatePath(o.path, first === o.path ? 'path' : 'options.path');
  } else {
    out.port = validateConnectPort(o.port, 'options.port');
    if (o.host !== undefined && o.host !== null && o.host !== '') {
      if (typeof o.host !== 'string') throw invalidArgType('options.host', 'of type string', o.host);
      out.host = o.host;
    }
    if (o.localAddress) {
      if (typeof o.localAddress !== 'string' || isIP(o.localAddress) === 0) {
        throw Object.assign(new TypeError(`Invalid IP address: ${String(o.localAddress)}`), { code: 'ERR_INVALID_IP_ADDRESS' });
      }
      out.localAddress = o.localAddress;
    }
    if (o.localPort) {
      if (typeof o.localPort !== 'number') throw invalidArgType('options.localPort', 'of type number', o.localPort);
      out.localPort = validatePort(o.localPort, 'options.localPort');
    }
    if (o.autoSelectFamily !== undefined && o.autoSelectFamily !== null) {
      if (typeof o.autoSelectFamily !== 'boolean') throw invalidArgType('options.autoSelectFamily', 'of type boolean', o.autoSelectFamily);
      out.autoSelectFamily = o.autoSelectFamily;
    } else {
      out.autoSelectFamily = getDefaultAutoSelectFamily();
    }
    const t = o.autoSelectFamilyAttemptTimeout;
    if (t !== undefined && t !== null) {
      if (typeof t !== 'number') throw invalidArgType('options.autoSelectFamilyAttemptTimeout', 'of type number', t);
      if (!Number.isInteger(t)) throw outOfRange('options.autoSelectFamilyAttemptTimeout', 'an integer', t);
      if (t < 1 || t > 2 ** 31 - 1) throw outOfRange('options.autoSelectFamilyAttemptTimeout', '>= 1 && <= 2147483647', t);
      out.autoSelectFamilyAttemptTimeout = Math.max(t, 10);
    } else {
      out.autoSelectFamilyAttemptTimeout = getDefaultAutoSelectFamilyAttemptTimeout();
    }
    if (o.lookup !== undefined && o.lookup !== null) {
      if (typeof o.lookup !== 'function') throw invalidArgType('options.lookup', 'of type function', o.lookup);
      out.lookup = o.lookup;
    }
    out.family = o.family === 'IPv4' ? 4 : o.family === 'IPv6' ? 6 : o.family as number | undefined;
    if (o.hints !== undefined) out.hints = o.hints;
  }
  if (o.noDelay !== undefined) out.noDelay = Boolean(o.noDelay);
  if (o.keepAlive !== undefined) out.keepAlive = Boolean(o.keepAlive);
  if (o.keepAliveInitialDelay !== undefined) out.keepAliveInitialDelay = validateTimeout(o.keepAliveInitialDelay, 'options.keepAliveInitialDelay');
  if (o.timeout) out.timeout = validateTimeout(o.timeout, 'options.timeout');
  if (o.onread) out.onread = o.onread;
  return [out, cb];
}

type LookupFn = NonNullable<ConnectOptions['lookup']>;

/**
 * The addresses to try for a connect, as node's lookupAndConnect() finds
 * them: an IP literal as it is (no 'lookup' event); otherwise options.lookup
 * or dns.lookup, with a 'lookup' event per address. With autoSelectFamily
 * (and no family or localAddress) every address, the families alternating.
 * A lookup that throws (bad hints or family) throws from connect().
 */
export function resolveForConnect(socket: EventEmitter & { connecting: boolean }, opts: NormalizedConnect,
  cb: (err: Error | null, addresses: ResolvedAddress[]) => void): void {
  const host = opts.host || 'localhost';
  const fam = isIP(host);
  if (fam !== 0) {
    process.nextTick(cb, null, [{ address: host, family: fam }]);
    return;
  }
  const lookupFn: LookupFn = opts.lookup ?? (lookup as unknown as LookupFn);
  const dnsopts: { family?: number; hints: number; all?: boolean } = { family: opts.family, hints: opts.hints ?? 0 };
  if (dnsopts.family !== 4 && dnsopts.family !== 6 && dnsopts.hints === 0) dnsopts.hints = ADDRCONFIG;
  if (dnsopts.family !== 4 && dnsopts.family !== 6 && !opts.localAddress && opts.autoSelectFamily) {
    dnsopts.all = true;
    lookupFn(host, dnsopts as LookupOptions, ((err: Error | null, addresses: ResolvedAddress[]) => {
      if (!socket.connecting) return;
      if (err) {
        socket.emit('lookup', err, undefined, undefined, host);
        return void process.nextTick(cb, err, []);
      }
      const valid: [ResolvedAddress[], ResolvedAddress[]] = [[], []];
      let order: Record<number, number> | undefined;
      for (const a of addresses) {
        socket.emit('lookup', err, a.address, a.family, host);
        if (!socket.connecting) return;
        if (isIP(a.address) !== 0 && (a.family === 4 || a.family === 6)) {
          order ??= a.family === 6 ? { 6: 0, 4: 1 } : { 4: 0, 6: 1 };
          const d = valid[order[a.family]!]!;
          if (!d.some((x) => x.address === a.address)) d.push(a);
        }
      }
      if (valid[0].length === 0 && valid[1].length === 0) {
        const first = addresses[0];
        const e = first === undefined
          ? Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname: host })
          : badAddress(first.address, first.family, host, opts.port);
        return void process.nextTick(cb, e, []);
      }
      const toAttempt: ResolvedAddress[] = [];
      for (let i = 0; i < Math.max(valid[0].length, valid[1].length); i++) {
        if (i < valid[0].length) toAttempt.push(valid[0][i]!);
        if (i < valid[1].length) toAttempt.push(valid[1][i]!);
      }
      cb(null, toAttempt);
    }) as never);
    return;
  }
  lookupFn(host, dnsopts as LookupOptions, ((err: Error | null, ip: string, family: number) => {
    socket.emit('lookup', err, ip, family, host);
    if (!socket.connecting) return;
    if (err) return void process.nextTick(cb, err, []);
    if (isIP(ip) === 0 || (family !== 4 && family !== 6)) return void process.nextTick(cb, badAddress(ip, family, host, opts.port), []);
    cb(null, [{ address: ip, family }]);
  }) as never);
}

function badAddress(ip: unknown, family: unknown, host: string, port: unknown): Error {
  if (typeof ip !== 'string' || isIP(ip) === 0) {
    return Object.assign(new TypeError(`Invalid IP address: ${String(ip)}`), { code: 'ERR_INVALID_IP_ADDRESS' });
  }
  return Object.assign(new RangeError(`Invalid address family: ${String(family)} ${host}:${String(port)}`),
    { code: 'ERR_INVALID_ADDRESS_FAMILY', host, port });
}

export interface NormalizedListen {
  /** listen({ fd }): adopting a listening descriptor (handled by the server). */
  fd?: number;
  signal?: AbortSignal;
  readableAll?: boolean;
  writableAll?: boolean;
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

function toNumber(x: unknown): number | false {
  const n = Number(x);
  return n >= 0 ? n : false;
}

/**
 * listen([port[, host[, backlog]]][, cb]) | listen(path[, backlog][, cb]) |
 * listen(options[, cb]), read as node's Server.listen() reads them.
 */
export function normalizeListenArgs(args: unknown[]): [NormalizedListen, (() => void) | undefined] {
  const last = args[args.length - 1];
  const cb = typeof last === 'function' ? last as () => void : undefined;
  const first = args[0];
  let o: ListenOptions & Record<string, unknown>;
  if (first !== null && typeof first === 'object') o = first as ListenOptions & Record<string, unknown>;
  else if (isPipeName(first)) o = { path: first as string };
  else {
    o = { port: first as number };
    if (args.length > 1 && typeof args[1] === 'string') o.host = args[1];
  }
  const backlogFromArgs = toNumber(args.length > 1 && args[1]) || toNumber(args.length > 2 && args[2]);
  const out: NormalizedListen = { backlog: 511, reusePort: false, ipv6Only: false, deferAccept: false };
  if (o.signal !== undefined) {
    const sig = o.signal as unknown;
    if (sig === null || typeof sig !== 'object' || !('aborted' in (sig as object))) {
      throw invalidArgType('options.signal', 'an instance of AbortSignal', sig);
    }
    out.signal = o.signal;
  }
  if (o.handle !== undefined || o._handle !== undefined) {
    throw Object.assign(new TypeError('iomux servers cannot listen on a handle (options.handle)'), { code: 'ERR_IOMUX_UNSUPPORTED' });
  }
  // (As node: a non-negative numeric fd takes the descriptor path; anything else is ignored.)
  if (typeof o.fd === 'number' && o.fd >= 0) {
    if (!Number.isInteger(o.fd) || o.fd > 0x7fffffff) throw outOfRange('options.fd', 'an integer >= 0 and <= 2147483647', o.fd);
    out.fd = o.fd;
    return [out, cb];
  }
  if (args.length === 0 || typeof first === 'function' || (o.port === undefined && 'port' in o) || o.port === null) {
    o = { ...o, port: 0 };
  }
  const backlog = (o.backlog || backlogFromArgs) as number | undefined;
  if (backlog !== undefined && backlog !== false as unknown) out.backlog = validateBacklog(backlog, 'backlog');
  out.reusePort = Boolean(o.reusePort);
  out.ipv6Only = Boolean(o.ipv6Only);
  if (o.deferAccept !== undefined && typeof o.deferAccept !== 'boolean') {
    throw invalidArgType('options.deferAccept', 'of type boolean', o.deferAccept);
  }
  out.deferAccept = o.deferAccept === true;
  if (typeof o.port === 'number' || typeof o.port === 'string') {
    out.port = validateConnectLikePort(o.port, 'options.port');
    if (o.host) out.host = validateHost(o.host, 'options.host');
    return [out, cb];
  }
  if (o.path && isPipeName(o.path)) {
    out.path = validatePath(o.path, typeof first === 'string' ? 'path' : 'options.path');
    out.readableAll = o.readableAll === true;
    out.writableAll = o.writableAll === true;
    return [out, cb];
  }
  if (!('port' in o || 'path' in o)) {
    throw invalidArgValue('options', o, 'must have the property "port" or "path"');
  }
  throw invalidArgValue('options', o);
}

function validateConnectLikePort(value: number | string, name: string): number {
  if ((typeof value === 'string' && value.trim().length === 0) || +value !== (+value >>> 0) || +value > 0xffff) {
    throw badPort(name, value);
  }
  return +value | 0;
}

export interface ResolvedAddress {
  address: string;
  family: number;
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
