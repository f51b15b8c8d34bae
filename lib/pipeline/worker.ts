// The worker runtime: a DEALER to its stage's proxy, a PUSH to the next stage's
// intake (none for the last stage) and a PUSH to the front end's loopback.
import { Dealer, Push, Request } from '../zmq';
import { CANCEL, READY, DONE, FLAG_NONE, FLAG_ERROR, jobFrames, decodeJob, jobIdEnd, isJobType, replyMeta, replyFrames as encodeReply } from './codec';

export type Headers = Record<string, string | number | string[]>;

/** What a worker function returns: made by ctx.next() or ctx.reply(). */
export type Outcome =
  | { readonly kind: 'next'; readonly data: unknown }
  | { readonly kind: 'reply'; readonly status: number; readonly headers: Headers; readonly body: unknown };

export interface JobContext {
  /** The request's id (unique within one front end). */
  readonly id: string;
  /** This stage's name. */
  readonly stage: string;
  /** Aborted when the client hung up or the request timed out. */
  readonly signal: AbortSignal;
  /** True once the job's request is dead: stop and return anything. */
  readonly interrupted: boolean;
  /** Pass data to the next stage (from the last stage: a 200 reply with it as body). */
  next(data: unknown): Outcome;
  /** Answer the client now, through the loopback. */
  reply(status: number, headers?: Headers, body?: unknown): Outcome;
}

export type WorkerFunction = (job: any, ctx: JobContext) => Outcome | Promise<Outcome>;

export interface WorkerEndpoints {
  /** The stage proxy's backend (ROUTER). */
  proxy: string;
  /** The next stage's intake (PULL); none for the last stage. */
  next?: string;
  /** The front end's loopback (PULL). */
  loopback: string;
}

export interface WorkerOptions {
  stage: string;
  stageIndex: number;
  fn: WorkerFunction;
  endpoints: WorkerEndpoints;
  /** Jobs this worker runs at once (1). */
  concurrency?: number;
  /** Where a thrown error is logged (console.error). */
  log?: (line: string) => void;
}

export interface WorkerHandle {
  close(): Promise<void>;
  /** Drop the connections at once, as a crashed worker would (tests). */
  kill(): Promise<void>;
}

const nextOutcome = (data: unknown): Outcome => ({ kind: 'next', data });
const replyOutcome = (status: number, headers: Headers = {}, body?: unknown): Outcome => {
  if (!Number.isInteger(status) || status < 100 || status > 599) throw new RangeError(`ctx.reply: status must be an integer from 100 to 599, got ${String(status)}`);
  return { kind: 'reply', status, headers, body };
};

/** Headers whose values are all strings or numbers: names and values in order. */
interface FlatHeaders {
  names: string[];
  values: Array<string | number>;
}

/** A copy of `h` if it is a plain object of string and number values (what a reply mostly has), else null. */
function flatCopy(h: unknown): FlatHeaders | null {
  if (h === null || typeof h !== 'object' || Object.getPrototypeOf(h) !== Object.prototype) return null;
  const names: string[] = [];
  const values: Array<string | number> = [];
  for (const k in h) {
    const v = (h as Record<string, unknown>)[k];
    if (typeof v !== 'string' && typeof v !== 'number') return null;
    names.push(k);
    values.push(v);
  }
  return { names, values };
}

/** Does `h` hold the names of `last`, in its order, with its values? (JSON.stringify would give the same text.) */
function sameHeaders(h: unknown, last: FlatHeaders): boolean {
  if (h === null || typeof h !== 'object' || Object.getPrototypeOf(h) !== Object.prototype) return false;
  const { names, values } = last;
  let n = 0;
  for (const k in h) {
    if (n >= names.length || names[n] !== k || (h as Record<string, unknown>)[k] !== values[n]) return false;
    n++;
  }
  return n === names.length;
}

/**
 * A job on a worker: its ctx. Its id stays in the job's frame (bytes 3 to
 * idEnd), whence the frames it sends copy it; the AbortController is made
 * only when ctx.signal is asked for.
 */
class Job implements JobContext {
  private ac: AbortController | null = null;
  private aborted = false;
  /** Its index in the worker's list of running jobs (-1: ended). */
  slot = -1;
  constructor(readonly frame: Buffer, readonly idEnd: number, readonly stage: string) {}
  get id(): string {
    return this.frame.toString('latin1', 3, this.idEnd);
  }
  /** The id's bytes, for the rare messages that carry it alone (DONE). */
  get idFrame(): Buffer {
    return this.frame.subarray(3, this.idEnd);
  }
  /** Is `id` this job's id? */
  is(id: Buffer): boolean {
    return id.length === this.idEnd - 3 && this.frame.compare(id, 0, id.length, 3, this.idEnd) === 0;
  }
  get signal(): AbortSignal {
    if (this.ac === null) {
      this.ac = new AbortController();
      if (this.aborted) this.ac.abort();
    }
    return this.ac.signal;
  }
  get interrupted(): boolean {
    return this.aborted;
  }
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.ac?.abort();
  }
  next(data: unknown): Outcome {
    return nextOutcome(data);
  }
  reply(status: number, headers?: Headers, body?: unknown): Outcome {
    return replyOutcome(status, headers, body);
  }
}

/** Runs one worker of a stage until close(). */
export function runWorker(options: WorkerOptions): WorkerHandle {
  const { stage, stageIndex, fn, endpoints } = options;
  if (typeof fn !== 'function') throw new TypeError(`pipeline stage ${stage}: the worker function is not a function`);
  const concurrency = options.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`pipeline stage ${stage}: concurrency must be a positive integer, got ${String(concurrency)}`);
  const log = options.log ?? ((l: string) => console.error(l));
  if (!Number.isInteger(stageIndex) || stageIndex < 0 || stageIndex > 9999999) throw new RangeError(`pipeline stage ${stage}: stageIndex must be an integer from 0 to 9999999, got ${String(stageIndex)}`);
  // The reply meta frames made so far, by flag and status: a few in practice.
  const metas = new Map<number, Buffer>();
  const meta = (flag: number, status: number): Buffer => {
    if (!Number.isInteger(status) || status < 100 || status > 599) throw new RangeError(`a reply's status must be an integer from 100 to 599, got ${String(status)}`);
    const key = flag * 1000 + status;
    let m = metas.get(key);
    if (m === undefined) metas.set(key, (m = replyMeta(flag, status, stageIndex)));
    return m;
  };

  const dealer = new Dealer({ reconnectInterval: 50 });
  const loopback = new Push({ reconnectInterval: 50 });
  const next = endpoints.next !== undefined ? new Push({ reconnectInterval: 50 }) : null;
  // The jobs running: at most `concurrency`, a list rather than a map (a
  // CANCEL, rare, looks for its id in it).
  const running: Job[] = [];
  const started = (job: Job): void => {
    job.slot = running.length;
    running.push(job);
  };
  const removed = (job: Job): void => {
    if (job.slot < 0) return;
    const last = running.pop()!;
    if (last !== job) {
      running[job.slot] = last;
      last.slot = job.slot;
    }
    job.slot = -1;
  };
  let closed = false;

  dealer.on('error', () => {});
  loopback.on('error', () => {});
  next?.on('error', () => {});
  // On every (re)connection, announce the free slots.
  dealer.on('connect', () => {
    const free = concurrency - running.length;
    if (free > 0) send(dealer, [READY, Buffer.from(String(free))]);
  });

  // After close() nothing is sent: a job that ends then has nobody to tell.
  const send = (sock: Dealer | Push, frames: Buffer[]): void => {
    if (closed) return;
    const p = sock.send(frames);
    if (p !== undefined) p.catch(() => {});
  };
  // The last reply's headers (a copy) and their JSON: a stage mostly answers
  // with the same few headers, which then cost a comparison, not a stringify.
  let lastHeaders: FlatHeaders | null = null;
  let lastHeadersFrame = Buffer.alloc(0);
  const headersFrame = (h: Headers): Buffer => {
    if (lastHeaders !== null && sameHeaders(h, lastHeaders)) return lastHeadersFrame;
    const f = Buffer.from(JSON.stringify(h));
    lastHeaders = flatCopy(h);
    lastHeadersFrame = f;
    return f;
  };
  const replyFrames = (job: Job, flag: number, status: number, headers: Headers, body: unknown): Buffer[] =>
    encodeReply(meta(flag, status), job.frame, headersFrame(headers), body, 3, job.idEnd);
  const reply = (job: Job, flag: number, status: number, headers: Headers, body: unknown): void => {
    send(loopback, replyFrames(job, flag, status, headers, body));
  };

  // A job's end: its result goes to the next stage's intake or to the
  // loopback, and its arrival there gives the slot back to the proxy (both
  // live in the front end's process). Only a job that ends with nothing to
  // send (its request is dead) tells the proxy DONE.
  const failed = (job: Job, e: unknown): void => {
    removed(job);
    const err = e as Error;
    log(`iomux-pipeline: stage ${stage}: job ${job.id} failed: ${err && err.stack ? err.stack : String(err)}`);
    if (!job.interrupted) reply(job, FLAG_ERROR, 500, { 'content-type': 'text/plain' }, `Internal Server Error (stage ${stage})\n`);
    else send(dealer, [DONE, job.idFrame]);
  };
  const ended = (job: Job, out: Outcome): void => {
    if (job.interrupted) {
      // Its request is gone: nobody waits for a result.
      removed(job);
      send(dealer, [DONE, job.idFrame]);
    } else if (out === null || typeof out !== 'object' || (out.kind !== 'next' && out.kind !== 'reply')) {
      failed(job, new TypeError('the worker function must return ctx.next(data) or ctx.reply(status, headers, body)'));
    } else {
      let frames: Buffer[];
      let sock: Push = loopback;
      try {
        if (out.kind === 'reply') {
          frames = replyFrames(job, FLAG_NONE, out.status, out.headers, out.body);
        } else if (next !== null) {
          sock = next;
          frames = jobFrames(job.frame, out.data, 3, job.idEnd);
        } else {
          const buf = Buffer.isBuffer(out.data) || typeof out.data === 'string';
          frames = replyFrames(job, FLAG_NONE, 200, { 'content-type': buf ? 'application/octet-stream' : 'application/json' }, out.data);
        }
      } catch (e) {
        failed(job, e); // data v8 cannot serialize, headers JSON cannot hold
        return;
      }
      removed(job);
      send(sock, frames);
    }
  };

  /** A job: its frame, and its data's frame if the data did not fit in it. */
  function run(f: Buffer, data: Buffer | undefined): void {
    const idEnd = jobIdEnd(f);
    if (idEnd < 0) return; // the proxy sends none such
    const job = new Job(f, idEnd, stage);
    started(job);
    let out: Outcome | Promise<Outcome>;
    try {
      out = fn(decodeJob(f, data), job);
    } catch (e) {
      failed(job, e);
      return;
    }
    if (out !== null && out !== undefined && typeof (out as Promise<Outcome>).then === 'function') {
      Promise.resolve(out).then((o) => ended(job, o), (e: unknown) => failed(job, e));
    } else {
      ended(job, out as Outcome);
    }
  }

  // Named parameters, not a rest array: one array less per job.
  dealer.on('message', function onJob(head?: Buffer, second?: Buffer) {
    if (head === undefined || closed) return;
    const n = arguments.length;
    if (isJobType(head)) {
      if (n <= 2) run(head, second);
    } else if (n === 2 && second !== undefined && head.equals(CANCEL)) {
      const id = second;
      for (const job of running) if (job.is(id)) job.abort();
    }
  });

  dealer.connect(endpoints.proxy);
  loopback.connect(endpoints.loopback);
  if (next !== null && endpoints.next !== undefined) next.connect(endpoints.next);

  const shut = async (lingerMs: number): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const job of running.slice()) job.abort();
    dealer.linger = 0;
    loopback.linger = lingerMs;
    if (next !== null) next.linger = lingerMs;
    await Promise.all([dealer.close(), loopback.close(), next?.close()]);
  };
  return { close: () => shut(1000), kill: () => shut(0) };
}

/**
 * Runs a worker of the stage named `stage` of the pipeline whose directory
 * endpoint is `connect` (the front end's `endpoints.directory`): it asks the
 * front end for the stage's endpoints, then runs as runWorker() does. An
 * endpoint bound to every interface (0.0.0.0) is reached at the directory's host.
 */
export async function connectWorker(options: Omit<WorkerOptions, 'endpoints' | 'stageIndex'> & { connect: string; timeout?: number }): Promise<WorkerHandle> {
  const req = new Request({ linger: 0 });
  req.on('error', () => {});
  req.connect(options.connect);
  try {
    const timeout = options.timeout ?? 10000;
    let timer: NodeJS.Timeout | undefined;
    await req.send(options.stage);
    const [answer] = await Promise.race([
      req.receive(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`pipeline worker: no answer from ${options.connect} within ${timeout} ms`)), timeout);
      }),
    ]);
    clearTimeout(timer);
    const a = JSON.parse(String(answer)) as { error?: string; index: number; proxy: string; next?: string; loopback: string };
    if (a.error !== undefined) throw new Error(`pipeline worker: ${a.error}`);
    const host = /^tcp:\/\/(.*):\d+$/.exec(options.connect)?.[1];
    const fix = (ep: string): string => (host !== undefined ? ep.replace(/^tcp:\/\/(0\.0\.0\.0|\*|\[::\]):/, `tcp://${host}:`) : ep);
    return runWorker({
      ...options,
      stageIndex: a.index,
      endpoints: { proxy: fix(a.proxy), loopback: fix(a.loopback), ...(a.next !== undefined ? { next: fix(a.next) } : {}) },
    });
  } finally {
    await req.close();
  }
}
