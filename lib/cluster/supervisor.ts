// supervisor.ts -- the master: binds each service's listeners once, runs its
// workers, restarts the ones that die (with backoff, up to a failure limit),
// routes messages, rolls restarts, stops gracefully, serves the admin socket.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { chmodSync, closeSync, readFileSync, unlinkSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { binding } from '../binding';
import { errnoException } from '../errors';
import { createServer, type Server } from '../server';
import type { Socket } from '../socket';
import { Channel, adoptSocket } from './channel';
import { ConfigError, resolveConfig, type MasterHooks, type ResolvedService, type SupervisorOptions } from './config';
import type { WorkerSpec } from './container';
import { encodeFrame, FrameType, type Frame } from './protocol';
import { adminPath, defaultRunDir, ensureRunDir } from './rundir';
import { SyncMaster, type SyncClient } from '../shared/sync';

const WORKER_MAIN = path.join(__dirname, 'worker-main.js');
const FIRST_LISTENER_FD = 4; // 3 is the control channel

export type WorkerState = 'starting' | 'ready' | 'stopping' | 'exited';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ContainerInfo {
  id: string;
  service: string;
  pid: number;
  state: WorkerState;
  /** ms since it was started. */
  uptime: number;
  /** Restarts of its service so far. */
  restarts: number;
  connections: number | null;
  rss: number | null;
}

export interface ServiceInfo {
  name: string;
  count: number;
  failed: boolean;
  restarts: number;
  listen: string[];
  containers: ContainerInfo[];
}

/** A master-side request handler (Supervisor.handle). */
export type RequestHandler = (args: Record<string, unknown>, from: { id: string; service: string }) => unknown;

interface Listener {
  fd: number;
  address: string;
  path?: string;
}

class Worker {
  state: WorkerState = 'starting';
  retiring = false;
  readonly started = Date.now();
  readyAt = 0;
  readonly ready: Promise<void>;
  readonly exited: Promise<ExitStatus>;
  status: ExitStatus | null = null;
  resolveReady!: () => void;
  rejectReady!: (e: Error) => void;
  killTimer: NodeJS.Timeout | null = null;
  /** Its sync region state was recovered (life lock released, or exit). */
  syncGone = false;

  constructor(readonly id: string, readonly svc: Service, readonly proc: ChildProcess, readonly channel: Channel, readonly syncId: number) {
    this.ready = new Promise((res, rej) => { this.resolveReady = res; this.rejectReady = rej; });
    this.ready.catch(() => {});
    this.exited = new Promise((res) => {
      let done = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (done) return;
        done = true;
        this.state = 'exited';
        this.status = { code, signal };
        if (this.killTimer) clearTimeout(this.killTimer);
        this.rejectReady(new Error(`worker ${id} exited (${signal ?? `code ${code}`}) before it was ready`));
        channel.destroy();
        res(this.status);
      };
      proc.once('exit', finish);
      proc.once('error', () => finish(null, null));
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }
}

class Service {
  seq = 0;
  restarts = 0;
  consecutive = 0;
  crashTimes: number[] = [];
  failed = false;
  readonly workers = new Set<Worker>();
  readonly timers = new Set<NodeJS.Timeout>();
  rolling: Promise<void> = Promise.resolve();
  /** Workers a rolling restart is replacing: a crash of one is not restarted twice. */
  readonly replacing = new Set<Worker>();
  /** The service's shared caches: fds handed to every worker after the listeners. */
  readonly caches: { name: string; fd: number; owned: { close(): void } | null }[] = [];
  constructor(readonly cfg: ResolvedService, readonly listeners: Listener[]) {}
}

/**
 * The service's caches: the caller's SharedCache as it is, or one made now
 * (anonymous, held by the master until stop, so it outlives every worker).
 */
function openCaches(svc: Service): void {
  for (const c of svc.cfg.caches) {
    if (c.handle) {
      svc.caches.push({ name: c.name, fd: c.handle.fd, owned: null });
      continue;
    }
    // Loaded here: a supervisor without caches does not load the shared-memory binding.
    const { SharedCache } = require('../shared') as typeof import('../shared');
    const { name: _name, ...options } = c.spec!;
    let cache;
    try {
      cache = SharedCache.create(options);
    } catch (err) {
      throw new ConfigError(`services[${svc.cfg.name}].caches[${c.name}]`, (err as Error).message);
    }
    svc.caches.push({ name: c.name, fd: cache.fd, owned: cache });
  }
}

/**
 * Events: 'message' (name, args, from) for messages sent to 'master';
 * 'exit' (containerId, service, status); 'failed' (service); 'ready'
 * (containerId, service).
 */
export class Supervisor extends EventEmitter {
  readonly runDir: string;
  private readonly opts: SupervisorOptions;
  private readonly config: ReturnType<typeof resolveConfig>;
  private readonly hooks: MasterHooks;
  private readonly log: (line: string) => void;
  private readonly services = new Map<string, Service>();
  private admin: Server | null = null;
  private adminConns = new Set<Socket>();
  private started: Promise<void> | null = null;
  private stopped: Promise<void> | null = null;
  private signalHandlers: [string, () => void][] = [];
  private readonly handlers = new Map<string, RequestHandler>();
  private syncMaster: SyncMaster | null = null;

  constructor(options: SupervisorOptions, baseDir?: string) {
    super();
    this.config = resolveConfig(options, baseDir);
    this.opts = options;
    this.hooks = options.hooks ?? {};
    this.log = options.log ?? ((line) => console.error(line));
    this.runDir = this.config.runDir ?? defaultRunDir();
  }

  get stopping(): boolean {
    return this.stopped !== null;
  }

  /** The master's semaphores, mutexes, shared variables and config (docs/sync.md). */
  get sync(): SyncClient {
    this.syncMaster ??= new SyncMaster(this.opts.sync);
    return this.syncMaster.client;
  }

  /** Binds the listeners, starts every worker; resolves once each first worker is ready (or has died). */
  start(): Promise<void> {
    this.started ??= this.doStart();
    return this.started;
  }

  private async doStart(): Promise<void> {
    if (this.opts.admin !== false) {
      ensureRunDir(this.runDir);
    }
    try {
      for (const cfg of this.config.services) {
        const svc = new Service(cfg, cfg.listen.map((l) => bindListener(l)));
        this.services.set(cfg.name, svc);
        openCaches(svc);
        await this.hooks.postAdd?.(cfg.name);
      }
      if (this.opts.admin !== false) await this.startAdmin();
    } catch (err) {
      this.releaseListeners();
      throw err;
    }
    if (this.opts.signals !== false) this.installSignals();
    const first: Promise<unknown>[] = [];
    for (const svc of this.services.values()) {
      for (let i = 0; i < svc.cfg.count; i++) {
        const w = await this.spawnWorker(svc);
        first.push(Promise.race([w.ready, w.exited]).catch(() => {}));
      }
    }
    await Promise.all(first);
  }

  private installSignals(): void {
    const on = (sig: NodeJS.Signals, fn: () => void): void => {
      process.on(sig, fn);
      this.signalHandlers.push([sig, fn]);
    };
    const stop = (): void => { void this.stop(); };
    on('SIGTERM', stop);
    on('SIGINT', stop);
    on('SIGHUP', () => {
      this.log('iomux-cluster: SIGHUP: rolling restart of every service');
      for (const name of this.services.keys()) this.restart(name).catch((e) => this.log(`iomux-cluster: restart of ${name} failed: ${e.message}`));
    });
  }

  private async spawnWorker(svc: Service): Promise<Worker> {
    const id = `${svc.cfg.name}.${++svc.seq}`;
    await this.hooks.preStart?.(svc.cfg.name, id);
    void this.sync;
    const sync = this.syncMaster!;
    const syncId = sync.allocId();
    if (syncId === null) throw new Error(`no free row in the sync region (sync.containers is ${sync.region.rows})`);
    const pair = binding.socketpair();
    if (typeof pair === 'number') {
      sync.containerExited(syncId, svc.cfg.name, svc.workers.size || 1);
      throw errnoException(-pair, 'socketpair');
    }
    const [mine, theirs] = pair;
    const spec: WorkerSpec = {
      v: 1, id, service: svc.cfg.name, module: svc.cfg.worker, args: svc.cfg.args, ctl: 3,
      listeners: svc.listeners.map((l, i) => ({ fd: FIRST_LISTENER_FD + i, address: l.address })),
      sync: { fd: FIRST_LISTENER_FD + svc.listeners.length, id: syncId, bells: sync.bellDir() ?? undefined },
      caches: svc.caches.map((c, i) => ({ fd: FIRST_LISTENER_FD + svc.listeners.length + 1 + i, name: c.name })),
    };
    let proc: ChildProcess;
    try {
      proc = spawn(process.execPath, [...svc.cfg.execArgv, WORKER_MAIN, ...svc.cfg.args], {
        stdio: ['ignore', 'inherit', 'inherit', theirs, ...svc.listeners.map((l) => l.fd), sync.fd, ...svc.caches.map((c) => c.fd)],
        env: { ...process.env, ...svc.cfg.env, IOMUX_CLUSTER: JSON.stringify(spec) },
      });
    } catch (err) {
      closeSync(mine);
      sync.containerExited(syncId, svc.cfg.name, svc.workers.size || 1); // gives the row back
      throw err;
    } finally {
      closeSync(theirs);
    }
    let channel: Channel;
    try {
      channel = new Channel(adoptSocket(mine));
    } catch (err) {
      closeSync(mine);
      proc.kill('SIGKILL');
      throw err;
    }
    const w = new Worker(id, svc, proc, channel, syncId);
    svc.workers.add(w);
    channel.on('frame', (f: Frame) => this.onFrame(w, f));
    channel.on('request', (op: string, body: Record<string, unknown>, reply: (r: unknown) => void) => {
      if (op.startsWith('sync.')) {
        Promise.resolve()
          .then(() => sync.request(op, body, syncId, svc.cfg.name))
          .then(reply, (e: unknown) => reply(e instanceof Error ? e : new Error(String(e))));
        return;
      }
      const handler = this.handlers.get(op);
      if (!handler) {
        reply(new Error(`unknown request op ${op}`));
        return;
      }
      const { op: _op, ...args } = body;
      void _op;
      Promise.resolve()
        .then(() => handler(args, { id, service: svc.cfg.name }))
        .then(reply, (e: unknown) => reply(e instanceof Error ? e : new Error(String(e))));
    });
    void w.exited.then((status) => this.onExit(w, status));
    const timer = setTimeout(() => {
      if (w.state === 'starting') {
        this.log(`iomux-cluster: ${svc.cfg.name} worker ${id} (pid ${w.pid}) not ready after ${svc.cfg.startTimeout} ms: killed`);
        proc.kill('SIGKILL');
      }
    }, svc.cfg.startTimeout);
    void w.exited.finally(() => clearTimeout(timer));
    void w.ready.then(() => clearTimeout(timer), () => {});
    return w;
  }

  private onFrame(w: Worker, f: Frame): void {
    const b = (f.body ?? {}) as Record<string, unknown>;
    switch (f.type) {
      case FrameType.READY:
        if (w.state === 'starting') {
          w.state = 'ready';
          w.readyAt = Date.now();
          w.resolveReady();
          this.emit('ready', w.id, w.svc.cfg.name);
        }
        break;
      case FrameType.STOPPING:
        w.state = 'stopping';
        break;
      case FrameType.SYNC:
        // a dead worker's last frames: its row may belong to another one now
        if (w.syncGone) break;
        if (b.life === 1) {
          this.syncMaster?.watchLife(w.syncId, () => this.syncGone(w));
          break;
        }
        if (typeof b.s !== 'number') break;
        // after the requests before it, which reach the queue one microtask later
        if (typeof b.t === 'number') {
          const { s: slot, t } = b;
          queueMicrotask(() => { if (!w.syncGone) this.syncMaster?.took(w.syncId, slot as number, t as number); });
        }
        else this.syncMaster?.kick(b.s);
        break;
      case FrameType.MESSAGE:
        this.route(String(b.target), String(b.name), Array.isArray(b.args) ? b.args : [], { id: w.id, service: w.svc.cfg.name });
        break;
      default:
        break;
    }
  }

  private live(): Worker[] {
    const out: Worker[] = [];
    for (const svc of this.services.values()) for (const w of svc.workers) if (w.state !== 'exited') out.push(w);
    return out;
  }

  private targets(target: string): Worker[] {
    if (target === '*') return this.live();
    const svc = this.services.get(target);
    if (svc) return [...svc.workers].filter((w) => w.state !== 'exited');
    return this.live().filter((w) => w.id === target);
  }

  private route(target: string, name: string, args: unknown[], from: { id: string; service: string }): number {
    if (target === 'master') {
      this.emit('message', name, args, from);
      return 1;
    }
    const ws = this.targets(target);
    if (ws.length === 0) return 0;
    const frame = encodeFrame(FrameType.MESSAGE, { name, args, from }); // once for all of them
    for (const w of ws) w.channel.sendEncoded(frame);
    return ws.length;
  }

  /**
   * Answers the workers' container.request(op, args): handler(args, from)
   * returns the reply (or a promise of it); what it throws goes back as the
   * request's error. The way for master-side state (the shared-state
   * operations: semaphores, mutexes, shared variables) to ride on the
   * control channel; 'exit' tells a handler's owner that a container ended.
   */
  handle(op: string, handler: RequestHandler): this {
    if (typeof op !== 'string' || op === '') throw new TypeError('op must be a non-empty string');
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    if (this.handlers.has(op)) throw new Error(`a handler for ${op} exists already`);
    this.handlers.set(op, handler);
    return this;
  }

  /** Sends a message to target (service name, container id or '*'); returns how many containers it went to. */
  send(target: string, name: string, ...args: unknown[]): number {
    if (typeof target !== 'string' || target === '') throw new TypeError('target must be a service name, a container id or \'*\'');
    if (typeof name !== 'string') throw new TypeError('name must be a string');
    return this.route(target, name, args, { id: 'master', service: 'master' });
  }

  /** An admin message (receiveAdminMessage in the workers); returns how many containers it went to. */
  sendAdmin(target: string, name: string, ...args: unknown[]): number {
    const ws = this.targets(target);
    for (const w of ws) w.channel.send(FrameType.ADMIN, { name, args });
    return ws.length;
  }

  /**
   * A container's recovery in the sync region: at the death of its main
   * thread (its life lock) or at its exit, whichever comes first.
   */
  private syncGone(w: Worker): void {
    if (w.syncGone) return;
    w.syncGone = true;
    let left = 0;
    for (const x of w.svc.workers) if (x !== w && !x.syncGone) left++;
    this.syncMaster?.containerExited(w.syncId, w.svc.cfg.name, left);
  }

  private onExit(w: Worker, status: ExitStatus): void {
    const svc = w.svc;
    svc.workers.delete(w);
    // before anyone hears of the exit: its semaphores, mutexes and writer locks
    this.syncGone(w);
    this.emit('exit', w.id, svc.cfg.name, status);
    void Promise.resolve()
      .then(() => this.hooks.postFinish?.(svc.cfg.name, w.id, status))
      .catch((e) => this.log(`iomux-cluster: postFinish hook failed: ${(e as Error).message}`));
    if (w.retiring || this.stopping) return;
    // A crash. One that a rolling restart is about to replace gets no
    // replacement of its own: the count stays what it was.
    if (svc.replacing.has(w)) {
      svc.replacing.delete(w);
      this.log(`iomux-cluster: ${svc.cfg.name} worker ${w.id} (pid ${w.pid}) exited with ` +
        `${status.signal ? `signal ${status.signal}` : `code ${status.code}`} during a rolling restart`);
      return;
    }
    const now = Date.now();
    const ran = now - w.started;
    svc.crashTimes = svc.crashTimes.filter((t) => now - t < svc.cfg.restart.window);
    svc.crashTimes.push(now);
    const how = status.signal ? `signal ${status.signal}` : `code ${status.code}`;
    if (svc.crashTimes.length > svc.cfg.restart.maxCrashes) {
      if (!svc.failed) {
        svc.failed = true;
        this.log(`iomux-cluster: ${svc.cfg.name} worker ${w.id} (pid ${w.pid}) exited with ${how}; ` +
          `${svc.crashTimes.length} crashes within ${svc.cfg.restart.window} ms: service ${svc.cfg.name} FAILED, not restarted`);
        this.emit('failed', svc.cfg.name);
      }
      return;
    }
    if (ran >= svc.cfg.restart.resetAfter) svc.consecutive = 0;
    const r = svc.cfg.restart;
    const delay = Math.min(r.maxDelay, r.initialDelay * 2 ** Math.min(svc.consecutive, 30));
    svc.consecutive++;
    svc.restarts++;
    this.log(`iomux-cluster: ${svc.cfg.name} worker ${w.id} (pid ${w.pid}) exited with ${how}; ` +
      `restart ${svc.restarts} in ${delay} ms`);
    const t = setTimeout(() => {
      svc.timers.delete(t);
      if (this.stopping || svc.failed) return;
      this.spawnWorker(svc).catch((e) => this.log(`iomux-cluster: ${svc.cfg.name}: start failed: ${(e as Error).message}`));
    }, delay);
    svc.timers.add(t);
  }

  /** Asks w to stop (SHUTDOWN with the grace), kills it after the grace; resolves at its exit. */
  private retire(w: Worker, grace: number): Promise<ExitStatus> {
    if (w.state === 'exited') return w.exited;
    w.retiring = true;
    if (!w.channel.send(FrameType.SHUTDOWN, { grace, idleGrace: this.config.idleGrace })) w.proc.kill('SIGTERM');
    if (!w.killTimer) {
      w.killTimer = setTimeout(() => {
        if (w.state !== 'exited') {
          this.log(`iomux-cluster: ${w.svc.cfg.name} worker ${w.id} (pid ${w.pid}) still running after the ${grace} ms grace: killed`);
          w.proc.kill('SIGKILL');
        }
      }, grace + 250);
    }
    return w.exited;
  }

  /**
   * Rolling restart: for each worker of the service, a new one is started
   * and reported ready before the old one is retired. Restarts of one
   * service run one after another.
   */
  restart(service: string): Promise<void> {
    const svc = this.services.get(service);
    if (!svc) return Promise.reject(new Error(`no service ${JSON.stringify(service)}`));
    const run = svc.rolling.then(async () => {
      if (this.stopping) return;
      if (svc.failed) {
        svc.failed = false; // an operator's restart gives a failed service another chance
        svc.crashTimes = [];
        svc.consecutive = 0;
      }
      const old = [...svc.workers].filter((w) => w.state !== 'exited' && !w.retiring);
      for (const w of old) svc.replacing.add(w);
      try {
        for (let i = 0; i < Math.max(old.length, svc.cfg.count); i++) {
          if (this.stopping) return;
          const fresh = await this.spawnWorker(svc);
          try {
            await fresh.ready;
          } catch (err) {
            throw new Error(`rolling restart of ${service} stopped: ${(err as Error).message}`);
          }
          if (old[i]) await this.retire(old[i]!, this.config.grace);
        }
      } finally {
        for (const w of old) svc.replacing.delete(w);
      }
    });
    svc.rolling = run.catch(() => {});
    return run;
  }

  /** Graceful stop: systemShutdown, then every worker stops within the grace; resolves once all are gone. */
  stop(): Promise<void> {
    this.stopped ??= this.doStop();
    return this.stopped;
  }

  private async doStop(): Promise<void> {
    await this.started?.catch(() => {});
    for (const svc of this.services.values()) {
      for (const t of svc.timers) clearTimeout(t);
      svc.timers.clear();
    }
    try {
      await this.hooks.systemShutdown?.();
    } catch (e) {
      this.log(`iomux-cluster: systemShutdown hook failed: ${(e as Error).message}`);
    }
    await Promise.all(this.live().map((w) => this.retire(w, this.config.grace)));
    this.releaseListeners();
    if (this.admin) {
      const a = this.admin;
      this.admin = null;
      for (const c of this.adminConns) c.end();
      await new Promise<void>((r) => a.close(() => r()));
    }
    for (const [sig, fn] of this.signalHandlers) process.removeListener(sig, fn);
    this.signalHandlers = [];
    // the mapping stays valid for the master's own handles; the workers are gone
    if (this.syncMaster) {
      try { closeSync(this.syncMaster.fd); } catch { /* closed already */ }
      this.syncMaster.close();
    }
    this.emit('stopped');
  }

  private releaseListeners(): void {
    for (const svc of this.services.values()) {
      for (const l of svc.listeners.splice(0)) {
        try { closeSync(l.fd); } catch { /* closed */ }
        if (l.path) try { unlinkSync(l.path); } catch { /* gone */ }
      }
      for (const c of svc.caches.splice(0)) c.owned?.close();
    }
  }

  /** Services and their containers: pid, state, uptime, restarts, connections and RSS (asked of each worker). */
  async list(): Promise<ServiceInfo[]> {
    const out: ServiceInfo[] = [];
    for (const svc of this.services.values()) {
      const containers = await Promise.all([...svc.workers].filter((w) => w.state !== 'exited').map(async (w) => {
        let stats: { connections?: number; rss?: number } = {};
        try {
          stats = (await w.channel.request('stats', {}, 1000)) as typeof stats;
        } catch { /* starting, or busy: from /proc below */ }
        return {
          id: w.id, service: svc.cfg.name, pid: w.pid, state: w.state, uptime: Date.now() - w.started,
          restarts: svc.restarts, connections: stats.connections ?? null, rss: stats.rss ?? procRss(w.pid),
        };
      }));
      out.push({
        name: svc.cfg.name, count: svc.cfg.count, failed: svc.failed, restarts: svc.restarts,
        listen: svc.listeners.map((l) => l.address), containers,
      });
    }
    return out;
  }

  /** The addresses each service's listeners were bound to (port 0 resolved). */
  addresses(service: string): string[] {
    return this.services.get(service)?.listeners.map((l) => l.address) ?? [];
  }

  // ---- admin socket ------------------------------------------------------------

  private async startAdmin(): Promise<void> {
    const p = adminPath(this.runDir);
    await removeStaleSocket(p);
    const server = createServer((socket) => this.onAdmin(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, () => resolve());
    });
    chmodSync(p, 0o600);
    server.on('error', (e) => this.log(`iomux-cluster: admin socket: ${e.message}`));
    this.admin = server;
  }

  private onAdmin(socket: Socket): void {
    const cred = binding.peerCred(socket._id);
    const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
    const channel = new Channel(socket);
    if (typeof cred === 'number' || cred[1] !== uid) {
      channel.send(FrameType.ERROR, { message: 'permission denied: not the supervisor\'s user', code: 'EACCES' });
      socket.end();
      return;
    }
    this.adminConns.add(socket);
    socket.on('close', () => this.adminConns.delete(socket));
    channel.on('request', (op: string, body: Record<string, unknown>, reply: (r: unknown) => void) => {
      this.adminRequest(op, body).then(reply, (e: Error) => reply(e));
    });
  }

  private async adminRequest(op: string, body: Record<string, unknown>): Promise<unknown> {
    switch (op) {
      case 'list':
        return { pid: process.pid, runDir: this.runDir, services: await this.list() };
      case 'restart': {
        const service = String(body.service);
        if (!this.services.has(service)) throw new Error(`no service ${JSON.stringify(service)}`);
        await this.restart(service);
        return { restarted: service };
      }
      case 'send': {
        const target = String(body.target);
        const n = this.sendAdmin(target, String(body.name), ...(Array.isArray(body.args) ? body.args : []));
        if (n === 0) throw new Error(`no container matches ${JSON.stringify(target)}`);
        return { delivered: n };
      }
      case 'shutdown':
        setImmediate(() => void this.stop());
        return { stopping: true };
      default:
        throw new Error(`unknown admin command ${op}`);
    }
  }
}

function bindListener(l: { port?: number; host?: string; path?: string; backlog?: number }): Listener {
  if (l.path !== undefined) {
    const fd = binding.listenSocketUnix(l.path, l.backlog ?? 511);
    if (fd < 0) throw errnoException(-fd, 'listen', l.path);
    return { fd, address: l.path, path: l.path };
  }
  const host = l.host ?? '127.0.0.1';
  const fam = net.isIP(host);
  if (fam === 0) throw new Error(`listen host ${host} must be an IP address`);
  const fd = binding.listenSocket(host, l.port ?? 0, fam, l.backlog ?? 511, 0);
  if (fd < 0) throw errnoException(-fd, 'listen', host, l.port);
  return { fd, address: boundAddress(fd, host, l.port ?? 0) };
}

function boundAddress(fd: number, host: string, port: number): string {
  const a = binding.fdLocalAddress(fd);
  const p = typeof a === 'number' ? port : a[1];
  return net.isIPv6(host) ? `[${host}]:${p}` : `${host}:${p}`;
}

function procRss(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** A socket file left by a supervisor that died is removed; a live one is an error. */
async function removeStaleSocket(p: string): Promise<void> {
  const alive = await new Promise<boolean>((resolve) => {
    const c = net.connect(p);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`another supervisor is running on ${p}`);
  try { unlinkSync(p); } catch { /* none */ }
}

export function createSupervisor(options: SupervisorOptions): Supervisor {
  return new Supervisor(options);
}
