// The front end: an iomux.http server, one load-balancing proxy per stage, and
// the loopback PULL on which every worker can answer a request.
//
//   client <-> front end -> proxy 1 <-> workers 1 -> proxy 2 <-> workers 2 ...
//                 ^                        |                       |
//                 |________________________|_______________________|  loopback (PULL)
//
// The proxies live in the front end's process: each is a PULL intake (from the
// front end or the previous stage's workers) and a ROUTER backend whose DEALER
// workers announce free slots; jobs wait in a FIFO until a slot is free, so a
// slow job holds up only its own worker. Because a proxy knows which worker
// holds which job, a worker that disconnects fails its jobs with 502 at once.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as hdr from 'hdr-histogram-js';
import { createServer as createHttpServer, type HttpServer, type IncomingRequest, type ServerResponse } from '../http';
import { Pull, Reply as Rep, Router } from '../zmq';
import { performance } from 'node:perf_hooks';
import { CANCEL, READY, DONE, FLAG_ERROR, httpJobFrame, jobIdEnd, replyStatus, replyStage, replyIdStart, replyHeadersEnd } from './codec';

const NO_BODY = Buffer.alloc(0);
import { runWorker, type WorkerFunction, type WorkerHandle } from './worker';
import { loadStageFunction } from './worker-main';

export interface StageConfig {
  name: string;
  /** The worker function, for workers run in this process. */
  fn?: WorkerFunction;
  /** Or a module (absolute path) and its export ('default': the module itself, or its default). */
  module?: string;
  export?: string;
  /** Workers of this stage (1); in-process workers, or supervisor service `count`. */
  workers?: number;
  /** Jobs each worker runs at once (1). */
  concurrency?: number;
  /** A job whose worker went away is run again on another worker (up to 2 retries), instead of a 502. */
  idempotent?: boolean;
}

export interface PipelineOptions {
  stages: StageConfig[];
  http?: { port?: number; host?: string };
  /** ms before a request is answered 504 (30000; 0: none). */
  timeout?: number;
  /** Jobs that may wait for a worker over all stages before new requests get 503 (1000). */
  maxQueued?: number;
  /** Seconds sent in Retry-After with a 503 (1). */
  retryAfter?: number;
  /** 'inprocess' (default): workers in this process; 'cluster': a supervisor service per stage; 'none': workers connect on their own. */
  workers?: 'inprocess' | 'cluster' | 'none';
  /** 'ipc' (default): unix sockets in a 0700 run dir; 'tcp': on `host` (127.0.0.1), ephemeral ports. */
  transport?: 'ipc' | 'tcp';
  host?: string;
  log?: (line: string) => void;
}

export interface StageStats {
  name: string;
  workers: number;
  idle: number;
  queued: number;
  inFlight: number;
  completed: number;
  errors: number;
  timeouts: number;
  interrupts: number;
  failed: number;
  retried: number;
}

export interface PipelineStats {
  requests: number;
  inFlight: number;
  responses: Record<string, number>;
  rejected: number;
  unknownReplies: number;
  latencyMs: { count: number; p50: number; p90: number; p99: number; max: number };
  stages: StageStats[];
}

interface Pending {
  id: string;
  /** null once answered (see finish()). */
  res: ServerResponse | null;
  /** performance.now() at arrival, and when it times out (Infinity: never). */
  start: number;
  deadline: number;
  socket: HookedSocket | null;
  /** The other waiting requests of its connection: a list through the requests, no set per connection. */
  prevOnSocket: Pending | null;
  nextOnSocket: Pending | null;
  /** Its place in the pending table, and its neighbours in arrival order. */
  slot: number;
  prevAll: Pending | null;
  nextAll: Pending | null;
}

/**
 * The slot number at the end of a request id: the base-36 digits after the
 * last '.', read in place (this runs several times per job: no slice, no
 * parseInt). -1 when there are none, or when it is not below `limit`.
 */
export function idSlot(id: string, limit: number): number {
  let slot = 0;
  let scale = 1;
  for (let i = id.length - 1; ; i--) {
    const c = i >= 0 ? id.charCodeAt(i) : 46;
    if (c === 46) break; // '.'
    const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 122 ? c - 87 : -1;
    if (d < 0 || scale > limit) return -1;
    slot += d * scale;
    scale *= 36;
  }
  return scale === 1 || slot >= limit ? -1 : slot;
}

/** idSlot() of the id in `b` from `start` to `end` (the id as it came in a frame; no string made). */
export function idSlotAt(b: Buffer, start: number, limit: number, end = b.length): number {
  let slot = 0;
  let scale = 1;
  for (let i = end - 1; ; i--) {
    const c = i >= start ? b[i]! : 46;
    if (c === 46) break; // '.'
    const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 122 ? c - 87 : -1;
    if (d < 0 || scale > limit) return -1;
    slot += d * scale;
    scale *= 36;
  }
  return scale === 1 || slot >= limit ? -1 : slot;
}

/** Are the bytes of `b` from `start` to `end` those of `a`? (In JavaScript: shorter than a native compare for a few dozen bytes.) */
function sameBytes(a: Buffer, b: Buffer, start: number, end: number): boolean {
  const n = a.length;
  if (end - start !== n) return false;
  if (n > 256) return b.compare(a, 0, n, start, end) === 0;
  for (let i = 0; i < n; i++) if (a[i] !== b[start + i]) return false;
  return true;
}

/** Are the bytes of `b` from `start` to `end` the id `id` (ASCII)? */
function idIs(id: string, b: Buffer, start: number, end: number): boolean {
  const n = id.length;
  if (end - start !== n) return false;
  for (let i = 0; i < n; i++) if (b[start + i] !== id.charCodeAt(i)) return false;
  return true;
}

/**
 * The requests waiting for a response: a slot each, found from the request's
 * id (which ends with the slot's number), and a list in arrival order (also
 * their deadlines' order, as the timeout is the same for all).
 *
 * Not a Map: under load a Map with entries coming and going replaces its
 * hash table every few dozen requests, and V8 keeps each replaced table
 * linked to the next one with the entries it had; once one of them reaches
 * the old generation, every scavenge keeps (and promotes) the tables after
 * it and the requests in them until the next full GC. Here a request leaves
 * no reference behind: its slot and its neighbours' links are cleared.
 */
/** @internal exported for its test */
export class PendingTable {
  private readonly slots: Array<Pending | null> = [];
  private readonly free: number[] = [];
  size = 0;
  oldest: Pending | null = null;
  private newest: Pending | null = null;

  /** A slot for the next request (its number goes at the end of the id). */
  reserve(): number {
    return this.free.length > 0 ? this.free.pop()! : this.slots.push(null) - 1;
  }

  /** Adds the request, in its reserved slot, as the newest. */
  add(p: Pending): void {
    this.slots[p.slot] = p;
    this.size++;
    p.prevAll = this.newest;
    if (this.newest !== null) this.newest.nextAll = p;
    else this.oldest = p;
    this.newest = p;
  }

  get(id: string): Pending | undefined {
    const slot = idSlot(id, this.slots.length);
    if (slot < 0) return undefined;
    const p = this.slots[slot]!;
    return p !== null && p.id === id ? p : undefined;
  }

  /** get() of the id in `b` from `start` to `end`, read in place. */
  getAt(b: Buffer, start: number, end = b.length): Pending | undefined {
    const slot = idSlotAt(b, start, this.slots.length, end);
    if (slot < 0) return undefined;
    const p = this.slots[slot]!;
    return p !== null && idIs(p.id, b, start, end) ? p : undefined;
  }

  delete(p: Pending): void {
    if (this.slots[p.slot] !== p) return;
    this.slots[p.slot] = null;
    this.free.push(p.slot);
    this.size--;
    const prev = p.prevAll;
    const next = p.nextAll;
    if (prev !== null) prev.nextAll = next;
    else this.oldest = next;
    if (next !== null) next.prevAll = prev;
    else this.newest = prev;
    p.prevAll = p.nextAll = null;
  }
}

/** A client connection, with the first of its requests that wait (hooked once per connection). */
interface HookedSocket {
  destroy(): void;
  [kWaiting]?: Pending | null;
}
const kWaiting = Symbol('iomux.pipeline.waiting');

/** A job's frame, its data's frame if the data did not fit in it, its request's id. */
type QueuedJob = [job: Buffer, data: Buffer | undefined, id: string];

interface WorkerSlot {
  key: string;
  identity: Buffer;
  /** Jobs it holds (their ids are in the proxy's holder table). */
  jobs: number;
  alive: boolean;
}

/**
 * A proxy's jobs in flight and the worker holding each, found from the job's
 * request id: at the request's slot (the number its id ends with), checked
 * against the full id. Not a Map: no hashing of a freshly decoded id string
 * per job, and no hash tables replaced under load (see PendingTable).
 *
 * A job may stay on its worker after its request was answered (a worker
 * that does not stop at once when interrupted), and the request's slot may
 * then go to a new request whose job comes here too: the newer job then
 * waits in `spill`, a Map that is empty unless that happens.
 */
/** @internal exported for its test */
export class HolderTable {
  private readonly ids: Array<string | null> = [];
  private readonly holders: Array<WorkerSlot | null> = [];
  private readonly spill = new Map<string, WorkerSlot>();
  size = 0;

  /** As Map.set: a job handed out again (a peer that sent it twice) gets the new holder. */
  set(id: string, w: WorkerSlot): void {
    // Only ids of live requests come here: their slot is valid.
    const slot = idSlot(id, 0x7fffffff);
    if (slot >= 0) {
      while (this.ids.length <= slot) {
        this.ids.push(null);
        this.holders.push(null);
      }
      if (this.ids[slot] === null) {
        this.ids[slot] = id;
        this.holders[slot] = w;
        this.size++;
        return;
      }
      if (this.ids[slot] === id) {
        this.holders[slot] = w;
        return;
      }
    }
    if (!this.spill.has(id)) this.size++;
    this.spill.set(id, w);
  }

  get(id: string): WorkerSlot | undefined {
    const slot = idSlot(id, this.ids.length);
    if (slot >= 0 && this.ids[slot] === id) return this.holders[slot]!;
    return this.spill.size > 0 ? this.spill.get(id) : undefined;
  }

  /** Removes the job `id` if `from` (when given) holds it; returns its holder. */
  take(id: string, from?: WorkerSlot): WorkerSlot | undefined {
    const slot = idSlot(id, this.ids.length);
    if (slot >= 0 && this.ids[slot] === id) {
      const w = this.holders[slot]!;
      if (from !== undefined && w !== from) return undefined;
      this.ids[slot] = null;
      this.holders[slot] = null;
      this.size--;
      return w;
    }
    if (this.spill.size === 0) return undefined;
    const w = this.spill.get(id);
    if (w === undefined || (from !== undefined && w !== from)) return undefined;
    this.spill.delete(id);
    this.size--;
    return w;
  }

  /** take() of the id in `b` from `start` to `end`, read in place. */
  takeAt(b: Buffer, start: number, from?: WorkerSlot, end = b.length): WorkerSlot | undefined {
    const slot = idSlotAt(b, start, this.ids.length, end);
    if (slot >= 0) {
      const id = this.ids[slot];
      if (id !== null && id !== undefined && idIs(id, b, start, end)) {
        const w = this.holders[slot]!;
        if (from !== undefined && w !== from) return undefined;
        this.ids[slot] = null;
        this.holders[slot] = null;
        this.size--;
        return w;
      }
    }
    return this.spill.size > 0 ? this.take(b.toString('latin1', start, end), from) : undefined;
  }

  /** Every job in flight with its holder (a scan: for rare events). */
  entries(): Array<[id: string, w: WorkerSlot]> {
    const all: Array<[string, WorkerSlot]> = [];
    for (let i = 0; i < this.ids.length; i++) {
      const id = this.ids[i];
      if (id !== null && id !== undefined) all.push([id, this.holders[i]!]);
    }
    for (const e of this.spill) all.push(e);
    return all;
  }
}

class StageProxy {
  readonly intake = new Pull({ receiveHighWaterMark: 0 });
  readonly backend = new Router();
  readonly workers = new Map<string, WorkerSlot>();
  /** One entry per free slot, oldest first. */
  private idle: WorkerSlot[] = [];
  /** Jobs waiting for a slot. */
  private queue: QueuedJob[] = [];
  private qHead = 0;
  readonly holder = new HolderTable();
  /** Idempotent stages: the data of each job in flight, and its retries so far. */
  private readonly held = new Map<string, { job: QueuedJob; retries: number }>();
  retried = 0;
  completed = 0;
  errors = 0;
  timeouts = 0;
  interrupts = 0;
  failed = 0;

  constructor(readonly name: string, readonly index: number, private readonly front: PipelineServer, private readonly idempotent = false) {
    this.intake.on('error', () => {});
    this.backend.on('error', () => {});
    const onJob = (f: Buffer, data: Buffer | undefined): void => {
      const idEnd = jobIdEnd(f);
      if (idEnd < 0) return;
      // Only the previous stage's workers feed this intake: the job's arrival
      // here ends it there, and gives its slot back (no separate DONE).
      // The id is read in the frame, not decoded to a string.
      if (this.index > 0) this.front.stages[this.index - 1]!.releaseAt(f, 3, idEnd);
      const p = this.front._pendingAt(f, 3, idEnd);
      if (p !== undefined) this.enqueueLive(f, data, p.id);
    };
    // Named parameters, not a rest array: one array less per job.
    this.intake.on('message', function onIntake(f: Buffer, data?: Buffer) {
      if (arguments.length <= 2) onJob(f, data);
    });
    this.backend.on('message', (identity: Buffer, type?: Buffer, arg?: Buffer) => {
      if (type === undefined || arg === undefined) return;
      const key = identity.toString('latin1');
      let w = this.workers.get(key);
      if (type.equals(READY)) {
        // Once per connection: a worker that reconnects is a new peer.
        if (w !== undefined) return;
        w = { key, identity, jobs: 0, alive: true };
        this.workers.set(key, w);
        const n = Math.min(1024, Number.parseInt(arg.toString('latin1'), 10) || 0);
        for (let i = 0; i < n; i++) this.idle.push(w);
        this.dispatch();
      } else if (type.equals(DONE) && w !== undefined) {
        // A job that ended with nothing to pass on (its request is dead).
        // Only a job it holds gives a slot back: a stray DONE cannot add slots.
        this.releaseAt(arg, 0, arg.length, w);
      }
    });
    this.backend.on('peerdisconnect', (identity: Buffer) => {
      const key = identity.toString('latin1');
      const w = this.workers.get(key);
      if (w === undefined) return;
      w.alive = false;
      this.workers.delete(key);
      this.idle = this.idle.filter((s) => s !== w);
      // Its jobs: a scan of the jobs in flight, on this rare event, spares a
      // set per worker on every job.
      const lost: string[] = [];
      for (const [id, h] of this.holder.entries()) if (h === w) lost.push(id);
      for (const id of lost) {
        this.holder.take(id);
        const h = this.held.get(id);
        this.held.delete(id);
        if (h !== undefined && h.retries < 2 && this.front._live(id)) {
          // An idempotent stage runs the job again, first in line.
          this.retried++;
          this.requeue(h.job, h.retries + 1);
          continue;
        }
        this.failed++;
        this.front._fail(id, 502, `stage ${this.name}: the worker holding the job went away`);
      }
      w.jobs = 0;
      this.dispatch();
    });
  }

  private send(frames: Buffer[]): void {
    try {
      const p = this.backend.send(frames);
      if (p !== undefined) p.catch(() => {});
    } catch {
      // closed: the pipeline is stopping
    }
  }

  /**
   * The job `id` ended on its worker: its result reached the next stage or the
   * loopback, or the worker said DONE. Its slot goes back to the FIFO.
   */
  releaseAt(b: Buffer, start: number, end: number, from?: WorkerSlot): void {
    const w = this.holder.takeAt(b, start, from, end);
    if (w === undefined) return;
    w.jobs--;
    if (this.idempotent) this.held.delete(b.toString('latin1', start, end));
    this.completed++;
    if (!w.alive) return;
    this.idle.push(w);
    this.dispatch();
  }

  get queued(): number {
    return this.queue.length - this.qHead;
  }
  get idleCount(): number {
    return this.idle.length;
  }

  /** Queues the job of the live request `id` (its Pending's id), or hands it to a free slot. */
  enqueueLive(job: Buffer, data: Buffer | undefined, id: string): void {
    if (this.qHead === this.queue.length && this.idle.length > 0 && !this.idempotent) {
      // Nothing waits and a slot is free: straight to its worker.
      this.hand(this.idle.shift()!, job, data, id);
      return;
    }
    this.queue.push([job, data, id]);
    this.dispatch();
  }

  private hand(w: WorkerSlot, job: Buffer, data: Buffer | undefined, id: string): void {
    w.jobs++;
    this.holder.set(id, w);
    // The job's frames as they came: handed on, not decoded and made again.
    this.send(data === undefined ? [w.identity, job] : [w.identity, job, data]);
  }

  private readonly retries = new Map<string, number>();

  private requeue(job: QueuedJob, retries: number): void {
    this.retries.set(job[2], retries);
    if (this.qHead > 0) this.queue[--this.qHead] = job;
    else this.queue.unshift(job);
  }

  private dispatch(): void {
    while (this.qHead < this.queue.length && this.idle.length > 0) {
      const job = this.queue[this.qHead]!;
      this.queue[this.qHead++] = undefined as never;
      const id = job[2];
      if (!this.front._live(id)) {
        this.retries.delete(id);
        continue; // a dead request's job is dropped here
      }
      const w = this.idle.shift()!;
      if (this.idempotent) {
        this.held.set(id, { job, retries: this.retries.get(id) ?? 0 });
        this.retries.delete(id);
      }
      this.hand(w, job[0], job[1], id);
    }
    if (this.qHead > 1024 && this.qHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.qHead);
      this.qHead = 0;
    }
  }

  /** The request is dead: drop its queued job, interrupt the worker running it. Returns whether this stage held it. */
  cancel(id: string): boolean {
    const w = this.holder.get(id);
    if (w !== undefined) {
      this.send([w.identity, CANCEL, Buffer.from(id, 'latin1')]);
      return true;
    }
    for (let i = this.qHead; i < this.queue.length; i++) if (this.queue[i]![2] === id) return true;
    return false;
  }

  stats(): StageStats {
    let inFlight = 0;
    for (const w of this.workers.values()) inFlight += w.jobs;
    return {
      name: this.name, workers: this.workers.size, idle: this.idle.length, queued: this.queued, inFlight,
      completed: this.completed, errors: this.errors, timeouts: this.timeouts, interrupts: this.interrupts, failed: this.failed, retried: this.retried,
    };
  }
}

function loadFunction(stage: StageConfig): WorkerFunction {
  if (typeof stage.fn === 'function') return stage.fn;
  if (typeof stage.module !== 'string') throw new TypeError(`pipeline stage ${stage.name}: give fn, or module (and export)`);
  return loadStageFunction(stage.module, stage.export ?? 'default');
}

export class PipelineServer {
  readonly http: HttpServer;
  readonly stages: StageProxy[];
  readonly loopback = new Pull({ receiveHighWaterMark: 0 });
  /** Answers a worker's request for its stage's endpoints (see connectWorker). */
  readonly directory = new Rep();
  runDir: string | null = null;
  /** Per stage: the proxy backend and the intake endpoints (after listen()). */
  endpoints: { loopback: string; directory: string; stages: Array<{ name: string; proxy: string; intake: string }> } = { loopback: '', directory: '', stages: [] };
  /** The requests waiting for a response, in arrival order: also their deadlines' order, as the timeout is the same for all. */
  private readonly pending = new PendingTable();
  /** One timer for all the deadlines: armed for the oldest request's. */
  private expiry: NodeJS.Timeout | null = null;
  private readonly workerHandles: WorkerHandle[] = [];
  /** The supervisor running the stages' workers ('cluster' mode). */
  supervisor: import('../cluster').Supervisor | null = null;
  private seq = 0;
  private readonly prefix = `${process.pid.toString(36)}.${Date.now().toString(36)}.`;
  private readonly histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });
  private readonly responses: Record<string, number> = {};
  private requests = 0;
  private rejected = 0;
  private unknownReplies = 0;
  // The last reply's headers frame and its parse: workers mostly send the
  // same headers, and writeHead() renders them without keeping the object.
  private lastHeadersFrame: Buffer | null = null;
  private lastHeaders: Record<string, string | number | string[]> = {};
  private draining = false;
  private readonly timeout: number;
  private readonly maxQueued: number;
  private readonly retryAfter: number;
  private readonly log: (line: string) => void;

  constructor(readonly options: PipelineOptions) {
    if (options === null || typeof options !== 'object') throw new TypeError('pipeline.createServer: options must be an object');
    if (!Array.isArray(options.stages) || options.stages.length === 0) throw new TypeError('pipeline.createServer: options.stages must be a non-empty array');
    const names = new Set<string>();
    options.stages.forEach((s, i) => {
      if (s === null || typeof s !== 'object' || typeof s.name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(s.name)) throw new TypeError(`pipeline.createServer: stages[${i}].name must be 1-64 of A-Z a-z 0-9 _ . -`);
      if (names.has(s.name)) throw new TypeError(`pipeline.createServer: stages[${i}].name ${s.name} is used twice`);
      names.add(s.name);
      if (s.workers !== undefined && (!Number.isInteger(s.workers) || s.workers < 0 || s.workers > 1024)) throw new RangeError(`pipeline.createServer: stages[${i}].workers must be an integer from 0 to 1024`);
    });
    const num = (v: unknown, name: string, dflt: number): number => {
      if (v === undefined) return dflt;
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new RangeError(`pipeline.createServer: options.${name} must be a non-negative number, got ${String(v)}`);
      return v;
    };
    this.timeout = num(options.timeout, 'timeout', 30000);
    this.maxQueued = num(options.maxQueued, 'maxQueued', 1000);
    this.retryAfter = num(options.retryAfter, 'retryAfter', 1);
    this.log = options.log ?? ((l) => console.error(l));
    this.stages = options.stages.map((s, i) => new StageProxy(s.name, i, this, s.idempotent === true));
    this.loopback.on('error', () => {});
    const onReply = (f: Buffer, body: Buffer | undefined): void => this.onReply(f, body);
    // Named parameters, not a rest array: one array less per reply.
    this.loopback.on('message', function onLoopback(f: Buffer, body?: Buffer) {
      if (arguments.length <= 2) onReply(f, body);
    });
    this.http = createHttpServer((req, res) => this.onRequest(req, res));
  }

  /** Binds the proxies and the loopback, starts the workers, then listens for HTTP. */
  async listen(port?: number, host?: string): Promise<void> {
    const transport = this.options.transport ?? 'ipc';
    const ep = (name: string): string => {
      if (transport === 'tcp') return `tcp://${this.options.host ?? '127.0.0.1'}:0`;
      return `ipc://${path.join(this.runDir!, `${name}.sock`)}`;
    };
    if (transport === 'ipc') {
      this.runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-pipeline-'));
      fs.chmodSync(this.runDir, 0o700);
    }
    await this.loopback.bind(ep('loopback'));
    this.endpoints.loopback = this.loopback.lastEndpoint!;
    for (const s of this.stages) {
      await s.backend.bind(ep(`${s.index}-proxy`));
      await s.intake.bind(ep(`${s.index}-intake`));
      this.endpoints.stages.push({ name: s.name, proxy: s.backend.lastEndpoint!, intake: s.intake.lastEndpoint! });
    }
    await this.directory.bind(ep('directory'));
    this.endpoints.directory = this.directory.lastEndpoint!;
    this.directory.on('error', () => {});
    this.directory.on('message', (name?: Buffer) => {
      const i = name === undefined ? -1 : this.stages.findIndex((s) => s.name === name.toString());
      const answer = i < 0 ? { error: `no stage ${String(name)}` } : { index: i, ...this.workerEndpoints(i) };
      try {
        const r = this.directory.send(JSON.stringify(answer));
        if (r !== undefined) r.catch(() => {});
      } catch {
        // closed
      }
    });
    await this.startWorkers();
    const p = port ?? this.options.http?.port ?? 0;
    const h = host ?? this.options.http?.host ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(p, h, () => {
        this.http.removeListener('error', reject);
        resolve();
      });
    });
  }

  /** The endpoints a worker of stage `index` connects to. */
  workerEndpoints(index: number): { proxy: string; next?: string; loopback: string } {
    const s = this.endpoints.stages[index]!;
    const next = this.endpoints.stages[index + 1];
    return { proxy: s.proxy, loopback: this.endpoints.loopback, ...(next !== undefined ? { next: next.intake } : {}) };
  }

  private async startWorkers(): Promise<void> {
    const mode = this.options.workers ?? 'inprocess';
    if (mode === 'none') return;
    if (mode === 'inprocess') {
      this.options.stages.forEach((s, i) => {
        const fn = loadFunction(s);
        for (let k = 0; k < (s.workers ?? 1); k++) {
          this.workerHandles.push(runWorker({ stage: s.name, stageIndex: i, fn, endpoints: this.workerEndpoints(i), concurrency: s.concurrency ?? 1, log: this.log }));
        }
      });
      return;
    }
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const cluster = require('../cluster') as typeof import('../cluster');
    const sup = cluster.createSupervisor({
      services: this.options.stages.map((s, i) => {
        if (typeof s.module !== 'string') throw new TypeError(`pipeline stage ${s.name}: cluster workers need module (and export)`);
        return {
          name: s.name,
          worker: path.join(__dirname, 'worker-main.js'),
          count: Math.max(1, s.workers ?? 1),
          env: {
            IOMUX_PIPELINE_WORKER: JSON.stringify({
              stage: s.name, stageIndex: i, module: s.module, export: s.export ?? 'default', concurrency: s.concurrency ?? 1, endpoints: this.workerEndpoints(i),
            }),
          },
        };
      }),
      runDir: path.join(this.runDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-pipeline-')), 'cluster'),
      admin: false,
      signals: false,
      log: this.log,
    });
    await sup.start();
    this.supervisor = sup;
  }

  address(): { port: number; address: string } {
    return this.http.address() as { port: number; address: string };
  }

  /** @internal Is the request still waiting for its response? */
  _live(id: string): boolean {
    return this.pending.get(id) !== undefined;
  }

  /** @internal The waiting request whose id is in `b` from `start` to `end`. */
  _pendingAt(b: Buffer, start: number, end: number): Pending | undefined {
    return this.pending.getAt(b, start, end);
  }

  /** @internal A proxy lost the worker holding the job. */
  _fail(id: string, status: number, why: string): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.log(`iomux-pipeline: ${why}`);
    this.respond(p, status, { 'content-type': 'text/plain' }, Buffer.from(`${status === 502 ? 'Bad Gateway' : 'Error'}\n`));
  }

  private queuedTotal(): number {
    let n = 0;
    for (const s of this.stages) n += s.queued;
    return n;
  }

  private onRequest(req: IncomingRequest, res: ServerResponse): void {
    const url = req.url ?? '/';
    if (req.method === 'GET' && url === '/health') {
      const stages = this.stages.map((s) => ({ name: s.name, workers: s.workers.size }));
      const ok = stages.every((s) => s.workers > 0) && !this.draining;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: ok ? 'ok' : this.draining ? 'draining' : 'degraded', stages }));
      return;
    }
    if (req.method === 'GET' && url === '/stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(this.stats()));
      return;
    }
    this.requests++;
    if (this.draining) {
      this.count(503);
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': String(this.retryAfter), connection: 'close' });
      res.end('Service Unavailable: draining\n');
      return;
    }
    const first = this.stages[0]!;
    if (this.queuedTotal() >= this.maxQueued && !(first.idleCount > 0 && first.queued === 0)) {
      this.rejected++;
      this.count(503);
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': String(this.retryAfter) });
      res.end('Service Unavailable: too many queued requests\n');
      return;
    }
    const slot = this.pending.reserve();
    const id = this.prefix + (this.seq++).toString(36) + '.' + slot.toString(36);
    const start = performance.now();
    const socket = this.hook(req.socket as unknown as HookedSocket & NodeJS.EventEmitter);
    const p: Pending = {
      id, res, start, deadline: this.timeout > 0 ? start + this.timeout : Infinity,
      socket, prevOnSocket: null, nextOnSocket: null, slot, prevAll: null, nextAll: null,
    };
    this.pending.add(p);
    const head = socket[kWaiting] ?? null;
    if (head !== null) {
      head.prevOnSocket = p;
      p.nextOnSocket = head;
    }
    socket[kWaiting] = p;
    if (this.expiry === null && this.timeout > 0) this.expiry = setTimeout(this.onExpiry, this.timeout);
    // The raw header lines, not req.headers: the object is made only if a
    // worker reads job.headers.
    const { method, rawHeaders } = req;
    if (req.complete) {
      // No body (complete at its head: a GET): the job goes now, without
      // body()'s promise and turn.
      first.enqueueLive(httpJobFrame(id, method, url, rawHeaders, NO_BODY), undefined, id);
      return;
    }
    req.body().then(
      (body) => {
        if (this.pending.get(id) !== p) return;
        first.enqueueLive(httpJobFrame(id, method, url, rawHeaders, body), undefined, id);
      },
      () => {
        if (this.pending.get(id) === p) this.interrupt(p);
      },
    );
  }

  /**
   * A client that hangs up (a reset, or a FIN while its request waits, as
   * node:http treats it by default) interrupts its jobs: the listeners go on
   * each connection once, not on every request.
   */
  private hook(sock: HookedSocket & NodeJS.EventEmitter): HookedSocket {
    if (sock[kWaiting] === undefined) {
      sock[kWaiting] = null;
      const hangup = (): void => {
        const waiting: Pending[] = [];
        for (let p = sock[kWaiting] ?? null; p !== null; p = p.nextOnSocket) waiting.push(p);
        for (const p of waiting) if (this.pending.get(p.id) === p) this.interrupt(p);
      };
      sock.on('end', hangup);
      sock.on('close', hangup);
    }
    return sock;
  }

  /** The expiry timer: answers 504 to every request past its deadline, then waits for the next one. */
  private readonly onExpiry = (): void => {
    this.expiry = null;
    const now = performance.now();
    let next = Infinity;
    // Answering a request may end others (its connection closing): the
    // oldest is looked up again each time.
    for (let p = this.pending.oldest; p !== null; p = this.pending.oldest) {
      if (p.deadline > now) {
        next = p.deadline;
        break;
      }
      this.expire(p); // (removes it)
    }
    if (next !== Infinity && this.expiry === null) this.expiry = setTimeout(this.onExpiry, Math.max(1, Math.ceil(next - now)));
  };

  private cancelEverywhere(p: Pending, what: 'timeouts' | 'interrupts'): void {
    for (const s of this.stages) {
      if (s.cancel(p.id)) {
        s[what]++;
        break;
      }
    }
  }

  private expire(p: Pending): void {
    if (this.pending.get(p.id) !== p) return;
    this.respond(p, 504, { 'content-type': 'text/plain' }, Buffer.from('Gateway Timeout\n'));
    this.cancelEverywhere(p, 'timeouts');
  }

  private interrupt(p: Pending): void {
    const socket = p.socket!;
    this.finish(p);
    // Nobody reads a response any more: the half-open connection goes too.
    socket.destroy();
    this.count('interrupted');
    this.cancelEverywhere(p, 'interrupts');
  }

  /** A reply: its frame, and its body's frame if the body did not fit in it. */
  private onReply(f: Buffer, bodyFrame: Buffer | undefined): void {
    let status = replyStatus(f);
    if (status < 0) return;
    // The id is read in the frame, not decoded to a string.
    const at = replyIdStart(f);
    const hEnd = replyHeadersEnd(f, at);
    if (hEnd < 0) return;
    const idEnd = at + 1 + f[at]!;
    const p = this.pending.getAt(f, at + 1, idEnd);
    const stage = this.stages[replyStage(f)];
    // The reply ends the job on its worker: the slot goes back.
    stage?.releaseAt(f, at + 1, idEnd);
    if (stage !== undefined && f[1] === FLAG_ERROR) stage.errors++;
    if (p === undefined) {
      this.unknownReplies++;
      return;
    }
    let headers: Record<string, string | number | string[]> = {};
    const hStart = idEnd + 4;
    const last = this.lastHeadersFrame;
    if (last !== null && sameBytes(last, f, hStart, hEnd)) {
      headers = this.lastHeaders;
    } else {
      try {
        headers = JSON.parse(f.toString('utf8', hStart, hEnd)) as typeof headers;
        this.lastHeadersFrame = Buffer.from(f.subarray(hStart, hEnd)); // a copy: a frame may be a view of a read buffer
        this.lastHeaders = headers;
      } catch {
        /* a worker's bad headers: none */
      }
    }
    if (status < 100 || status > 599) status = 500;
    this.respond(p, status, headers, bodyFrame ?? f.subarray(hEnd));
  }

  private finish(p: Pending): void {
    this.pending.delete(p);
    const prev = p.prevOnSocket;
    const next = p.nextOnSocket;
    const socket = p.socket!;
    if (prev !== null) prev.nextOnSocket = next;
    else if (socket[kWaiting] === p) socket[kWaiting] = next;
    if (next !== null) next.prevOnSocket = prev;
    p.prevOnSocket = p.nextOnSocket = null;
    // An answered request keeps nothing alive: dead objects already in the
    // old generation may still point here, and a scavenge keeps whatever
    // they reach until the next full GC.
    p.res = null;
    p.socket = null;
    // The expiry timer stays armed when nothing waits (it then finds nothing
    // and stops): arming and clearing it on every burst would cost more.
    if (this.draining && this.pending.size === 0) this.emitDrained?.();
  }

  private count(key: number | string): void {
    const k = String(key);
    this.responses[k] = (this.responses[k] ?? 0) + 1;
  }

  private respond(p: Pending, status: number, headers: Record<string, string | number | string[]>, body: Buffer): void {
    const res = p.res!;
    this.finish(p);
    this.count(status);
    this.histogram.recordValue(Math.max(1, Math.round((performance.now() - p.start) * 1000)));
    try {
      res.writeHead(status, headers);
      res.end(body);
    } catch (e) {
      this.log(`iomux-pipeline: response for ${p.id} failed: ${(e as Error).message}`);
      if (!res.headersSent) {
        res.writeHead(500);
        res.end();
      }
    }
  }

  stats(): PipelineStats {
    const h = this.histogram;
    const ms = (us: number): number => Math.round(us) / 1000;
    return {
      requests: this.requests,
      inFlight: this.pending.size,
      responses: { ...this.responses },
      rejected: this.rejected,
      unknownReplies: this.unknownReplies,
      latencyMs: {
        count: h.totalCount,
        p50: ms(h.getValueAtPercentile(50)), p90: ms(h.getValueAtPercentile(90)), p99: ms(h.getValueAtPercentile(99)), max: ms(h.maxValue),
      },
      stages: this.stages.map((s) => s.stats()),
    };
  }

  /** stats() as a few lines of text (what iomux-pipeline prints on SIGUSR2). */
  summary(): string {
    const s = this.stats();
    const l = s.latencyMs;
    const lines = [
      `requests ${s.requests}, in flight ${s.inFlight}, responses ${JSON.stringify(s.responses)}, rejected ${s.rejected}, unknown replies ${s.unknownReplies}`,
      `latency ms p50 ${l.p50} p90 ${l.p90} p99 ${l.p99} max ${l.max} (${l.count})`,
    ];
    for (const st of s.stages) {
      lines.push(`  ${st.name}: workers ${st.workers} idle ${st.idle} queued ${st.queued} in flight ${st.inFlight} completed ${st.completed} errors ${st.errors} timeouts ${st.timeouts} interrupts ${st.interrupts} failed ${st.failed} retried ${st.retried}`);
    }
    return lines.join('\n');
  }

  private emitDrained: (() => void) | null = null;

  /** Drains: new requests get 503, those in flight finish (or time out); then everything closes. */
  async close(): Promise<void> {
    if (!this.draining) {
      this.draining = true;
      if (this.pending.size > 0) await new Promise<void>((resolve) => (this.emitDrained = resolve));
    }
    if (this.expiry !== null) {
      clearTimeout(this.expiry);
      this.expiry = null;
    }
    const httpClosed = this.http.close();
    for (const w of this.workerHandles) await w.close();
    if (this.supervisor !== null) await this.supervisor.stop();
    await Promise.all([this.loopback.close(), this.directory.close(), ...this.stages.flatMap((s) => [s.intake.close(), s.backend.close()])]);
    await httpClosed;
    if (this.runDir !== null) fs.rmSync(this.runDir, { recursive: true, force: true });
  }

  /** @internal tests: the in-process workers. */
  get _workers(): WorkerHandle[] {
    return this.workerHandles;
  }
}

export function createServer(options: PipelineOptions): PipelineServer {
  return new PipelineServer(options);
}
