// config.ts -- the proxy's options: their types, defaults and checks, and the
// "host:port" strings the command line and config files use.
import { isIP } from 'node:net';
import { invalidArgType, invalidArgValue, type CodedError } from '../errors';
import { DEFAULT_LIMITS, type ParserLimits } from '../http/parser';
import type { BalanceStrategy } from './balancer';
import type { HealthCheckOptions, ResolvedHealthCheck } from './health';
import type { UpstreamOptions } from './upstream';

export type ProxyMode = 'tcp' | 'http';

/** One line of the proxy's log, as the 'log' event carries it. */
export interface LogEntry {
  level: 'info' | 'warn' | 'error';
  /** A short name for what happened: 'upstream-down', 'bad-request', 'proxy-header', ... */
  event: string;
  message: string;
  /** The client's address, when the line is about one connection. */
  client?: string;
  /** The upstream's name, when the line is about one. */
  upstream?: string;
}

export interface ProxyOptions {
  /** 'tcp' (default) relays bytes; 'http' parses requests and responses and pools upstream connections. */
  mode?: ProxyMode;
  /** The upstreams: objects, or "host:port" / "host:port@weight" strings ("[v6]:port" for IPv6). */
  upstreams: readonly (UpstreamOptions | string)[];
  /** Default 'round-robin'. */
  balance?: BalanceStrategy;
  /**
   * Expect a PROXY protocol header from every client (true: either version,
   * 1 or 2: only that one). Its source address becomes the client's address.
   * Default false.
   */
  acceptProxy?: boolean | 1 | 2;
  /** Default PROXY protocol version sent to upstreams that do not set sendProxy (default none). */
  sendProxy?: 1 | 2 | false;
  /** ms to receive a client's PROXY header (default 5000). */
  proxyHeaderTimeout?: number;
  /** ms for a connect to an upstream before the next is tried (default 5000). */
  connectTimeout?: number;
  /** TCP, and HTTP connections after an Upgrade: ms without a byte either way before a relay is cut (default 0: never). */
  idleTimeout?: number;
  /** HTTP: ms an upstream may stay silent while a response is awaited or under way; 504 after (default 30000). */
  responseTimeout?: number;
  /** HTTP: ms an idle client keep-alive connection is kept (default 5000). */
  keepAliveTimeout?: number;
  /** HTTP: ms to receive a request head (default 30000); 408 after. */
  headersTimeout?: number;
  /** HTTP: request limits for the parser; maxBodySize defaults to none (bodies are streamed). */
  limits?: Partial<ParserLimits>;
  /** HTTP: idle keep-alive connections kept per upstream (default 32), and for how long in ms (default 30000). */
  pool?: { maxIdle?: number; idleTimeout?: number };
  /** Passive health: `failures` connect failures or resets in a row take an upstream out for `cooldown` ms (defaults 3, 10000; 0 failures: off). */
  passive?: { failures?: number; cooldown?: number };
  /** Active health checks (default off). */
  health?: HealthCheckOptions | false;
  /** HTTP: add X-Forwarded-For and X-Forwarded-Proto (default true). */
  xForwardedFor?: boolean;
  /** HTTP: add a Forwarded header (RFC 7239) (default false). */
  forwarded?: boolean;
}

/** The options once checked, defaults filled in. */
export interface ResolvedOptions {
  mode: ProxyMode;
  upstreams: UpstreamOptions[];
  balance: BalanceStrategy;
  acceptProxy: false | { allowV1: boolean; allowV2: boolean };
  proxyHeaderTimeout: number;
  connectTimeout: number;
  idleTimeout: number;
  responseTimeout: number;
  keepAliveTimeout: number;
  headersTimeout: number;
  limits: ParserLimits;
  poolMaxIdle: number;
  poolIdleTimeout: number;
  passiveFailures: number;
  passiveCooldown: number;
  health: ResolvedHealthCheck | null;
  xForwardedFor: boolean;
  forwarded: boolean;
}

export class ProxyConfigError extends Error implements CodedError {
  readonly code = 'ERR_PROXY_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'ProxyConfigError';
  }
}

/**
 * "host:port", "[v6]:port", optionally "@weight": { host, port, weight? }.
 * Throws ProxyConfigError naming `what`.
 */
export function parseHostPort(text: string, what: string): { host: string; port: number; weight?: number } {
  let s = text.trim();
  let weight: number | undefined;
  const at = s.lastIndexOf('@');
  if (at >= 0) {
    const w = s.slice(at + 1);
    if (!/^[1-9][0-9]{0,5}$/.test(w)) throw new ProxyConfigError(`${what}: bad weight in ${JSON.stringify(text)}`);
    weight = Number(w);
    s = s.slice(0, at);
  }
  let host: string;
  let portText: string;
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s);
  if (m !== null) {
    host = m[1]!;
    portText = m[2]!;
    if (isIP(host) !== 6) throw new ProxyConfigError(`${what}: bad IPv6 address in ${JSON.stringify(text)}`);
  } else {
    const colon = s.lastIndexOf(':');
    if (colon <= 0 || s.indexOf(':') !== colon) throw new ProxyConfigError(`${what}: expected host:port, got ${JSON.stringify(text)}`);
    host = s.slice(0, colon);
    portText = s.slice(colon + 1);
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    throw new ProxyConfigError(`${what}: bad port in ${JSON.stringify(text)}`);
  }
  return weight === undefined ? { host, port: Number(portText) } : { host, port: Number(portText), weight };
}

function ms(v: unknown, name: string, dflt: number, allowZero = true): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
    throw invalidArgValue(`options.${name}`, v, allowZero ? 'must be a number of ms >= 0' : 'must be a number of ms > 0');
  }
  return v;
}

function count(v: unknown, name: string, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw invalidArgValue(`options.${name}`, v, `must be an integer >= ${min}`);
  return v;
}

function proxyVersion(v: unknown, name: string): 1 | 2 | false {
  if (v === undefined || v === false || v === null) return false;
  if (v === 1 || v === 2) return v;
  if (v === 'v1' || v === '1') return 1;
  if (v === 'v2' || v === '2') return 2;
  throw invalidArgValue(name, v, 'must be 1, 2 or false');
}

function upstreamOf(spec: UpstreamOptions | string, i: number, dfltProxy: 1 | 2 | false): UpstreamOptions {
  const name = `options.upstreams[${i}]`;
  if (typeof spec === 'string') {
    return { ...parseHostPort(spec, name), sendProxy: dfltProxy };
  }
  if (spec === null || typeof spec !== 'object') throw invalidArgType(name, 'an object or a "host:port" string', spec);
  const { host, port, weight, name: label } = spec;
  if (typeof host !== 'string' || host === '') throw invalidArgType(`${name}.host`, 'a non-empty string', host);
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalidArgValue(`${name}.port`, port, 'must be an integer in 1..65535');
  }
  if (weight !== undefined && (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 1)) {
    throw invalidArgValue(`${name}.weight`, weight, 'must be an integer >= 1');
  }
  if (label !== undefined && typeof label !== 'string') throw invalidArgType(`${name}.name`, 'a string', label);
  const sendProxy = spec.sendProxy === undefined ? dfltProxy : proxyVersion(spec.sendProxy, `${name}.sendProxy`);
  const out: UpstreamOptions = { host, port, weight: weight ?? 1, sendProxy };
  if (label !== undefined) out.name = label;
  return out;
}

/** Checks the options and fills in the defaults; throws TypeError/RangeError-style coded errors. */
export function resolveOptions(options: ProxyOptions): ResolvedOptions {
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
  const mode = options.mode ?? 'tcp';
  if (mode !== 'tcp' && mode !== 'http') throw invalidArgValue('options.mode', mode, "must be 'tcp' or 'http'");
  const balance = options.balance ?? 'round-robin';
  if (balance !== 'round-robin' && balance !== 'least-connections') {
    throw invalidArgValue('options.balance', balance, "must be 'round-robin' or 'least-connections'");
  }
  if (!Array.isArray(options.upstreams) || options.upstreams.length === 0) {
    throw invalidArgValue('options.upstreams', options.upstreams, 'must be a non-empty array');
  }
  const dfltProxy = proxyVersion(options.sendProxy, 'options.sendProxy');
  const upstreams = options.upstreams.map((u, i) => upstreamOf(u, i, dfltProxy));
  const ap = options.acceptProxy ?? false;
  let acceptProxy: ResolvedOptions['acceptProxy'];
  if (ap === false) acceptProxy = false;
  else if (ap === true) acceptProxy = { allowV1: true, allowV2: true };
  else if (ap === 1 || ap === 2) acceptProxy = { allowV1: ap === 1, allowV2: ap === 2 };
  else throw invalidArgValue('options.acceptProxy', ap, 'must be a boolean, 1 or 2');

  const limits: ParserLimits = { ...DEFAULT_LIMITS, maxBodySize: Infinity, ...options.limits };
  const h = options.health;
  let health: ResolvedHealthCheck | null = null;
  if (h !== undefined && h !== false) {
    if (h === null || typeof h !== 'object') throw invalidArgType('options.health', 'an object or false', h);
    const interval = ms(h.interval, 'health.interval', 5000, false);
    const type = h.type ?? (h.path !== undefined ? 'http' : 'tcp');
    if (type !== 'tcp' && type !== 'http') throw invalidArgValue('options.health.type', type, "must be 'tcp' or 'http'");
    const path = h.path ?? '/';
    if (typeof path !== 'string' || !/^\/[\x21-\x7e]*$/.test(path)) throw invalidArgValue('options.health.path', path, 'must be a path starting with /');
    if (h.host !== undefined && (typeof h.host !== 'string' || !/^[\x21-\x7e]+$/.test(h.host))) {
      throw invalidArgValue('options.health.host', h.host, 'must be a host name');
    }
    health = {
      interval,
      timeout: Math.min(ms(h.timeout, 'health.timeout', 2000, false), interval),
      type,
      path,
      host: h.host,
      fall: count(h.fall, 'health.fall', 2, 1),
      rise: count(h.rise, 'health.rise', 2, 1),
    };
  }
  return {
    mode,
    upstreams,
    balance,
    acceptProxy,
    proxyHeaderTimeout: ms(options.proxyHeaderTimeout, 'proxyHeaderTimeout', 5000, false),
    connectTimeout: ms(options.connectTimeout, 'connectTimeout', 5000, false),
    idleTimeout: ms(options.idleTimeout, 'idleTimeout', 0),
    responseTimeout: ms(options.responseTimeout, 'responseTimeout', 30000, false),
    keepAliveTimeout: ms(options.keepAliveTimeout, 'keepAliveTimeout', 5000, false),
    headersTimeout: ms(options.headersTimeout, 'headersTimeout', 30000, false),
    limits,
    poolMaxIdle: count(options.pool?.maxIdle, 'pool.maxIdle', 32, 0),
    poolIdleTimeout: ms(options.pool?.idleTimeout, 'pool.idleTimeout', 30000, false),
    passiveFailures: count(options.passive?.failures, 'passive.failures', 3, 0),
    passiveCooldown: ms(options.passive?.cooldown, 'passive.cooldown', 10000, false),
    health,
    xForwardedFor: options.xForwardedFor !== false,
    forwarded: options.forwarded === true,
  };
}
