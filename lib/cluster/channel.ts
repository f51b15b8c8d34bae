// channel.ts -- a control channel: frames (protocol.ts) over an iomux socket,
// with one-way sends and requests answered by id.
import { EventEmitter } from 'node:events';
import { AF_UNIX, binding } from '../binding';
import { errnoException } from '../errors';
import { Socket } from '../socket';
import { encodeFrame, FrameDecoder, FrameType, ProtocolError, type Frame } from './protocol';

const NO_OWNER = { _onSocketClosed(): void { /* not a server's */ } };

/** Adopts fd, a connected unix stream socket (a socketpair end), as an iomux Socket. */
export function adoptSocket(fd: number): Socket {
  const id = binding.adopt(fd);
  if (id < 0) throw errnoException(-id, 'adopt');
  return Socket._accepted(id, AF_UNIX << 16, 0, 0, 0, 0, { allowHalfOpen: false }, NO_OWNER);
}

export class RemoteError extends Error {
  code?: string;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/**
 * Events: 'frame' (Frame) for every frame that is not a REPLY or ERROR to one
 * of our requests, 'request' (op, body, reply(result | Error)) for REQUESTs,
 * 'close' (err?) once, when the peer hangs up or breaks the protocol.
 */
export class Channel extends EventEmitter {
  readonly socket: Socket;
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closedErr: Error | null | undefined;

  constructor(socket: Socket) {
    super();
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: Error) => this.onClose(err));
    socket.on('close', () => this.onClose(null));
  }

  get closed(): boolean {
    return this.closedErr !== undefined;
  }

  /** Sends one frame; false when the channel is closed. */
  send(type: FrameType, body?: unknown, id = 0): boolean {
    if (this.closed) return false;
    this.socket.write(encodeFrame(type, body, id));
    return true;
  }

  /** Sends a frame already encoded (encodeFrame): one encoding for many channels. */
  sendEncoded(frame: Buffer): boolean {
    if (this.closed) return false;
    this.socket.write(frame);
    return true;
  }

  /** A REQUEST { op, ...args }; resolves with the REPLY, rejects with the ERROR or the close. */
  request(op: string, args: Record<string, unknown> = {}, timeoutMs = 0): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('control channel closed'));
    const id = this.nextId;
    this.nextId = this.nextId >= 0x7fffffff ? 1 : this.nextId + 1;
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new Error(`request ${op} timed out after ${timeoutMs} ms`));
        }, timeoutMs);
        timer.unref();
      }
      this.pending.set(id, {
        resolve: (v) => { if (timer) clearTimeout(timer); resolve(v); },
        reject: (e) => { if (timer) clearTimeout(timer); reject(e); },
      });
      this.send(FrameType.REQUEST, { ...args, op }, id);
    });
  }

  /** Flushes what is queued, then closes. */
  end(): void {
    if (!this.closed) this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.onClose(err as ProtocolError);
      this.socket.destroy();
      return;
    }
    for (const f of frames) {
      if (this.closed) return;
      if (f.type === FrameType.REPLY || f.type === FrameType.ERROR) {
        const p = f.id === 0 ? undefined : this.pending.get(f.id);
        if (!p) {
          // Not an answer to a request of ours: an ERROR with id 0 is the
          // peer's word on the channel itself (the admin socket's refusal).
          if (f.id === 0) this.emit('frame', f);
          continue; // else: a request that timed out meanwhile
        }
        this.pending.delete(f.id);
        if (f.type === FrameType.REPLY) p.resolve(f.body);
        else p.reject(toError(f.body));
      } else if (f.type === FrameType.REQUEST) {
        const body = (f.body ?? {}) as { op?: unknown };
        const reply = (result: unknown): void => {
          if (result instanceof Error) {
            this.send(FrameType.ERROR, { message: result.message, code: (result as RemoteError).code }, f.id);
          } else {
            this.send(FrameType.REPLY, result, f.id);
          }
        };
        if (typeof body.op !== 'string') reply(new Error('request without an op'));
        else if (this.listenerCount('request') === 0) reply(new Error(`unknown request op ${body.op}`));
        else this.emit('request', body.op, body, reply);
      } else {
        this.emit('frame', f);
      }
    }
  }

  private onClose(err: Error | null): void {
    if (this.closed) return;
    this.closedErr = err;
    const e = err ?? new Error('control channel closed');
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    this.emit('close', err ?? undefined);
  }
}

function toError(body: unknown): Error {
  const b = (body ?? {}) as { message?: unknown; code?: unknown };
  const e = new RemoteError(typeof b.message === 'string' ? b.message : 'remote error');
  if (typeof b.code === 'string') e.code = b.code;
  return e;
}
