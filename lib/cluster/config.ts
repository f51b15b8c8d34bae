// config.ts -- the supervisor's options, checked field by field: a bad one
// is a ConfigError naming the field and the reason.
import * as path from 'node:path';

export type ListenAddress = { port: number; host?: string; backlog?: number } | { path: string; backlog?: number };

export interface RestartPolicy {
  /** First delay after a crash, ms (100). Doubles with each crash in a row. */
  initialDelay?: number;
  /** Upper bound of the delay, ms (30000). */
  maxDelay?: number;
  /** A worker that ran this long (ms, 10000) resets the doubling. */
  resetAfter?: number;
  /** More crashes than this within `window` mark the service failed (10). */
  maxCrashes?: number;
  /** The window of maxCrashes, ms (60000). */
  window?: number;
}

export interface ServiceConfig {
  name: string;
  /** Module run in each worker process (absolute, or relative to the config's directory / cwd). */
  worker: string;
  /** Workers of this service (1). */
  count?: number;
  /** Bound once by the master, inherited by every worker. */
  listen?: ListenAddress[];
  env?: Record<string, string>;
  args?: string[];
  /** node options for the worker processes (e.g. --max-old-space-size=64). */
  execArgv?: string[];
  restart?: RestartPolicy;
  /** ms a worker has to report ready (30000). */
  startTimeout?: number;
  /**
   * Shared-memory caches handed to every worker (container.cache(name)):
   * a SharedCache the caller made, or { name, size, maxEntries, defaultTtl,
   * evict } for one the master makes at start and holds until stop, so its
   * contents outlive any worker (rolling restarts included).
   */
  caches?: (CacheHandle | CacheSpec)[];
}

/** What the supervisor needs of a SharedCache that the caller made. */
export interface CacheHandle {
  readonly fd: number;
  readonly name: string | null;
}

export interface CacheSpec {
  name: string;
  size?: number;
  maxEntries?: number;
  defaultTtl?: number;
  evict?: boolean;
}

export interface MasterHooks {
  postAdd?(service: string): unknown;
  preStart?(service: string, containerId: string): unknown;
  postFinish?(service: string, containerId: string, status: { code: number | null; signal: NodeJS.Signals | null }): unknown;
  systemShutdown?(): unknown;
}

export interface SupervisorOptions {
  services: ServiceConfig[];
  /** Directory of the admin socket (created 0700). Default: $IOMUX_RUN_DIR or <tmpdir>/iomux-cluster-<uid>. */
  runDir?: string;
  /** Grace period of a graceful stop, ms (10000). */
  grace?: number;
  /**
   * ms a stopping worker's HTTP server keeps a connection with no request
   * under way for its next request (500; HttpServer.drain's idleGrace).
   */
  idleGrace?: number;
  hooks?: MasterHooks;
  /** Where the master's log lines go (default: console.error). */
  log?: (line: string) => void;
  /** false: no admin socket. */
  admin?: boolean;
  /** SIGTERM/SIGINT stop, SIGHUP restarts every service (true). */
  signals?: boolean;
  /** Size of the region of semaphores, mutexes and shared variables (docs/sync.md). */
  sync?: { slots?: number; containers?: number; valueSize?: number; doorbells?: boolean };
}

export interface ResolvedService {
  name: string;
  worker: string;
  count: number;
  listen: ListenAddress[];
  env: Record<string, string>;
  args: string[];
  execArgv: string[];
  restart: Required<RestartPolicy>;
  startTimeout: number;
  /** Each cache's name (for container.cache(name)) and either the caller's handle or the spec to create. */
  caches: { name: string; handle?: CacheHandle; spec?: CacheSpec }[];
}

export class ConfigError extends Error {
  readonly code = 'ERR_IOMUX_CLUSTER_CONFIG';
  constructor(readonly field: string, readonly reason: string) {
    super(`${field}: ${reason}`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function int(v: unknown, field: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new ConfigError(field, `must be an integer, got ${JSON.stringify(v)}`);
  if (v < min || v > max) throw new ConfigError(field, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

function strings(v: unknown, field: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new ConfigError(field, 'must be an array of strings');
  return v as string[];
}

const SERVICE_KEYS = new Set(['name', 'worker', 'count', 'listen', 'env', 'args', 'execArgv', 'restart', 'startTimeout', 'caches']);
const CACHE_KEYS = new Set(['name', 'size', 'maxEntries', 'defaultTtl', 'evict']);
const RESTART_KEYS = new Set(['initialDelay', 'maxDelay', 'resetAfter', 'maxCrashes', 'window']);
const TOP_KEYS = new Set(['sync', 'services', 'runDir', 'grace', 'idleGrace', 'hooks', 'log', 'admin', 'signals']);

/** Checks options; relative worker paths resolve against baseDir. Throws ConfigError. */
export function resolveConfig(options: unknown, baseDir = process.cwd()): { services: ResolvedService[]; runDir?: string; grace: number; idleGrace: number } {
  if (!isObject(options)) throw new ConfigError('config', 'must be an object');
  for (const k of Object.keys(options)) if (!TOP_KEYS.has(k)) throw new ConfigError(k, 'is not a known option');
  if (!Array.isArray(options.services) || options.services.length === 0) {
    throw new ConfigError('services', 'must be a non-empty array');
  }
  const names = new Set<string>();
  const services = options.services.map((raw: unknown, i: number): ResolvedService => {
    const at = `services[${i}]`;
    if (!isObject(raw)) throw new ConfigError(at, 'must be an object');
    for (const k of Object.keys(raw)) if (!SERVICE_KEYS.has(k)) throw new ConfigError(`${at}.${k}`, 'is not a known option');
    if (typeof raw.name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(raw.name)) {
      throw new ConfigError(`${at}.name`, 'must be 1-64 characters of A-Z a-z 0-9 _ . -');
    }
    if (raw.name === '*' || names.has(raw.name)) throw new ConfigError(`${at}.name`, `${JSON.stringify(raw.name)} is used twice`);
    names.add(raw.name);
    if (typeof raw.worker !== 'string' || raw.worker === '') throw new ConfigError(`${at}.worker`, 'must be a module path');
    const listen: ListenAddress[] = [];
    if (raw.listen !== undefined) {
      if (!Array.isArray(raw.listen)) throw new ConfigError(`${at}.listen`, 'must be an array of { port, host } or { path }');
      raw.listen.forEach((l: unknown, j: number) => {
        const lat = `${at}.listen[${j}]`;
        if (!isObject(l)) throw new ConfigError(lat, 'must be { port, host } or { path }');
        const backlog = int(l.backlog, `${lat}.backlog`, 1, 65535, 511);
        if (l.path !== undefined) {
          if (typeof l.path !== 'string' || l.path === '') throw new ConfigError(`${lat}.path`, 'must be a non-empty string');
          if (l.port !== undefined) throw new ConfigError(lat, 'has both path and port');
          listen.push({ path: path.resolve(baseDir, l.path), backlog });
        } else {
          const port = int(l.port, `${lat}.port`, 0, 65535, -1);
          if (port < 0) throw new ConfigError(`${lat}.port`, 'is required (or path)');
          if (l.host !== undefined && typeof l.host !== 'string') throw new ConfigError(`${lat}.host`, 'must be a string');
          listen.push({ port, host: (l.host as string | undefined) ?? '127.0.0.1', backlog });
        }
      });
    }
    let env: Record<string, string> = {};
    if (raw.env !== undefined) {
      if (!isObject(raw.env) || !Object.values(raw.env).every((v) => typeof v === 'string')) {
        throw new ConfigError(`${at}.env`, 'must be an object of strings');
      }
      env = raw.env as Record<string, string>;
    }
    const r = raw.restart === undefined ? {} : raw.restart;
    if (!isObject(r)) throw new ConfigError(`${at}.restart`, 'must be an object');
    for (const k of Object.keys(r)) if (!RESTART_KEYS.has(k)) throw new ConfigError(`${at}.restart.${k}`, 'is not a known option');
    const restart = {
      initialDelay: int(r.initialDelay, `${at}.restart.initialDelay`, 0, 3600000, 100),
      maxDelay: int(r.maxDelay, `${at}.restart.maxDelay`, 0, 3600000, 30000),
      resetAfter: int(r.resetAfter, `${at}.restart.resetAfter`, 0, 86400000, 10000),
      maxCrashes: int(r.maxCrashes, `${at}.restart.maxCrashes`, 1, 1000000, 10),
      window: int(r.window, `${at}.restart.window`, 1, 86400000, 60000),
    };
    if (restart.maxDelay < restart.initialDelay) throw new ConfigError(`${at}.restart.maxDelay`, 'must not be below initialDelay');
    const caches: ResolvedService['caches'] = [];
    if (raw.caches !== undefined) {
      if (!Array.isArray(raw.caches)) throw new ConfigError(`${at}.caches`, 'must be an array of SharedCache or { name, size, ... }');
      raw.caches.forEach((c: unknown, j: number) => {
        const cat = `${at}.caches[${j}]`;
        if (!isObject(c)) throw new ConfigError(cat, 'must be a SharedCache or { name, size, maxEntries, defaultTtl, evict }');
        const name = c.name === null || c.name === undefined ? `${j}` : c.name;
        if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
          throw new ConfigError(`${cat}.name`, 'must be 1-64 characters of A-Z a-z 0-9 _ . -');
        }
        if (caches.some((x) => x.name === name)) throw new ConfigError(`${cat}.name`, `${JSON.stringify(name)} is used twice`);
        if (typeof c.fd === 'number') {
          if (c.fd < 0) throw new ConfigError(cat, 'is a closed SharedCache');
          caches.push({ name, handle: c as unknown as CacheHandle });
          return;
        }
        for (const k of Object.keys(c)) if (!CACHE_KEYS.has(k)) throw new ConfigError(`${cat}.${k}`, 'is not a known option');
        caches.push({ name, spec: c as unknown as CacheSpec });
      });
    }
    return {
      name: raw.name,
      worker: path.resolve(baseDir, raw.worker),
      caches,
      count: int(raw.count, `${at}.count`, 1, 1024, 1),
      listen,
      env,
      args: strings(raw.args, `${at}.args`),
      execArgv: strings(raw.execArgv, `${at}.execArgv`),
      restart,
      startTimeout: int(raw.startTimeout, `${at}.startTimeout`, 1, 3600000, 30000),
    };
  });
  if (options.runDir !== undefined && (typeof options.runDir !== 'string' || options.runDir === '')) {
    throw new ConfigError('runDir', 'must be a directory path');
  }
  if (options.hooks !== undefined && !isObject(options.hooks)) throw new ConfigError('hooks', 'must be an object of functions');
  if (options.log !== undefined && typeof options.log !== 'function') throw new ConfigError('log', 'must be a function');
  return {
    services,
    runDir: options.runDir === undefined ? undefined : path.resolve(baseDir, options.runDir as string),
    grace: int(options.grace, 'grace', 0, 3600000, 10000),
    idleGrace: int(options.idleGrace, 'idleGrace', 1, 3600000, 500),
  };
}
