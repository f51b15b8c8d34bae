// forward.ts -- forward(a, b): the core moves the bytes between two sockets,
// both ways, until both directions are done, and JavaScript never sees them
// (on Linux they go socket -> pipe -> socket with splice(2) and never enter
// user memory). The Promise settles once, with the byte counts and why it
// ended; both sockets are closed by then and emit 'close'.
import { once } from 'node:events';
import { binding, FORWARD_COPY, FORWARD_REASONS } from './binding';
import { errnoException, invalidArgType, invalidArgValue, outOfRange, streamDestroyed } from './errors';
import { loop, type ForwardHandle } from './loop';
import { Socket, type ForwardLink } from './socket';

/**
 * Why a forwarding ended: 'done' (both sides sent FIN and everything was
 * delivered), 'resetA' / 'resetB' (that side failed: reset, timed out...; the
 * other was reset), 'error' (a local failure), 'timeout' (idleTimeout passed
 * without a byte either way; both were reset), 'closed' (one of the sockets
 * was destroyed from JavaScript; the other was reset).
 */
export type ForwardReason = (typeof FORWARD_REASONS)[number];

export interface ForwardOptions {
  /** End the forwarding after this many ms without a byte either way; 0 (the default) never. */
  idleTimeout?: number;
  /** Bytes read from one side that may wait for the other to take them (default 64 KiB). */
  highWaterMark?: number;
  /** Move the bytes with read/send through a buffer even where splice(2) is available. */
  copy?: boolean;
}

export interface ForwardResult {
  /** Bytes delivered from a to b (including those a had read but not consumed when forward() was called). */
  bytesAtoB: number;
  bytesBtoA: number;
  reason: ForwardReason;
  /** Set unless reason is 'done'. */
  error?: Error;
}

const U32_MAX = 2 ** 32 - 1;

class Forwarding implements ForwardHandle, ForwardLink {
  /** Bytes relayed from JavaScript: read before the core took over. */
  private relayedAtoB = 0;
  private relayedBtoA = 0;

  constructor(private readonly a: Socket, private readonly b: Socket,
    private readonly resolve: (r: ForwardResult) => void) {}

  // Chunks read before the hand-over (pending in the socket, or DATA records
  // of the batch in which forward() was called) go on to the other side. The
  // core accepts these writes until its forwarder first reads, and that never
  // happens before the batch has been dispatched.
  _relay(from: Socket, chunk: Buffer): void {
    const to = from === this.a ? this.b : this.a;
    if (from === this.a) this.relayedAtoB += chunk.length;
    else this.relayedBtoA += chunk.length;
    if (to._id < 0) return; // destroyed: the forwarding is ending anyway
    const q = binding.write(to._id, chunk, false);
    if (q < 0) to.destroy(errnoException(-q, 'write')); // ends the forwarding ('closed')
  }

  _onForwardEnd(word: number, bytesAtoB: number, bytesBtoA: number): void {
    const reason: ForwardReason = FORWARD_REASONS[word & 0xff] ?? 'error';
    const errno = word >>> 8;
    let error: Error | undefined;
    if (reason === 'closed') {
      error = Object.assign(new Error('forward: a forwarded socket was destroyed'), { code: 'ERR_IOMUX_FORWARD_CLOSED' });
    } else if (reason !== 'done') {
      error = errnoException(errno || 5 /* EIO */, 'forward');
    }
    this.a._forwardEnded(error);
    this.b._forwardEnded(error);
    const r: ForwardResult = {
      bytesAtoB: bytesAtoB + this.relayedAtoB,
      bytesBtoA: bytesBtoA + this.relayedBtoA,
      reason,
    };
    if (error !== undefined) r.error = error;
    this.resolve(r);
  }
}

function u32Option(name: string, value: unknown, dflt: number): number {
  if (value === undefined) return dflt;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw invalidArgType(name, 'of type number', value);
  if (value < 0 || value > U32_MAX) throw outOfRange(name, `>= 0 and <= ${U32_MAX}`, value);
  return Math.ceil(value);
}

async function whenConnected(s: Socket): Promise<void> {
  if (s.connecting) await once(s, 'connect');
}

/**
 * Joins two connected iomux sockets: from now on the core moves every byte
 * a -> b and b -> a, relays each side's FIN as a shutdown of the other, and
 * resets one side when the other fails. Bytes already written to either
 * socket go first, then the chunks it had read and not handed out. The
 * sockets belong to the core until the Promise settles: write() and end()
 * throw ERR_IOMUX_FORWARDING, pause()/resume() do nothing, no 'data' is
 * emitted; destroy() aborts the forwarding (reason 'closed'). At the end both
 * sockets are closed and emit 'close'.
 */
export function forward(a: Socket, b: Socket, options: ForwardOptions = {}): Promise<ForwardResult> {
  // Not an async function: a forwarding of connected sockets (a proxy's,
  // after its upstream connected) starts at once and its Promise is the only
  // one, which an idle forwarded pair keeps for its life. Errors still come
  // as a rejection.
  try {
    if (!(a instanceof Socket)) throw invalidArgType('a', 'an instance of Socket', a);
    if (!(b instanceof Socket)) throw invalidArgType('b', 'an instance of Socket', b);
    if (a === b) throw invalidArgValue('b', b, 'must not be the same socket as a');
    if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
    const idle = u32Option('options.idleTimeout', options.idleTimeout, 0);
    const hwm = u32Option('options.highWaterMark', options.highWaterMark, 0);
    const flags = options.copy === true ? FORWARD_COPY : 0;
    if (a.connecting || b.connecting) {
      return Promise.all([whenConnected(a), whenConnected(b)]).then(() => start(a, b, idle, hwm, flags));
    }
    return start(a, b, idle, hwm, flags);
  } catch (err) {
    return Promise.reject(err);
  }
}

/** Hands two connected sockets to the core; throws when it cannot. */
function start(a: Socket, b: Socket, idle: number, hwm: number, flags: number): Promise<ForwardResult> {
  if (a.destroyed || b.destroyed || a._id < 0 || b._id < 0) throw streamDestroyed('forward');
  if (a.forwarding || b.forwarding) {
    throw Object.assign(new Error('forward: the socket is already being forwarded'), { code: 'ERR_IOMUX_FORWARDING' });
  }
  const rc = binding.forward(a._id, b._id, idle, hwm, flags);
  if (rc < 0) throw errnoException(-rc, 'forward');
  return new Promise<ForwardResult>((resolve) => {
    const f = new Forwarding(a, b, resolve);
    loop._forwards[a._id] = f;
    const fromA = a._handOver(f), fromB = b._handOver(f);
    for (const chunk of fromA) f._relay(a, chunk);
    for (const chunk of fromB) f._relay(b, chunk);
  });
}
