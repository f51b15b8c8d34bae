// protocol.ts -- the frames of the control channel (master <-> worker) and of
// the admin socket (iomux-ctl <-> master).
//
// A frame is a fixed header and a payload:
//
//   offset  size  field
//   0       4     payload length, bytes, big-endian (the length prefix)
//   4       1     version of the framing (1)
//   5       1     header length, bytes (12 in version 1; a later header may
//                 grow: readers skip what lies past the fields they know)
//   6       1     type (FrameType)
//   7       1     flags (FLAG_*; unknown bits are ignored)
//   8       4     id: correlates a REQUEST with its REPLY or ERROR, 0 else
//   12      ...   payload: v8.serialize() of one value (empty: undefined)
//
// Growth: new frame types are new numbers (a receiver answers a REQUEST
// whose op it does not know with an ERROR, and ignores unknown one-way
// types); new header fields go after offset 12 with a larger header length;
// an incompatible change bumps the version, which a peer refuses. The
// shared-state operations (semaphores, mutexes, shared variables) are to be
// REQUESTs with their own op names: request/reply with ids is already here.
import { deserialize, serialize } from 'node:v8';

export const VERSION = 1;
export const HEADER_SIZE = 12;
/** A larger frame is a protocol violation: the channel is closed. */
export const MAX_PAYLOAD = 64 * 1024 * 1024;

export enum FrameType {
  /** worker -> master: the worker runtime is up (payload: { id, pid }). */
  HELLO = 1,
  /** worker -> master: postStart done, accepting. */
  READY = 2,
  /** worker -> master: shutting down (preFinish runs). */
  STOPPING = 3,
  /** worker -> master: done, about to exit. */
  STOPPED = 4,
  /** either way: { target, name, args, from } (worker -> master: routed by target). */
  MESSAGE = 5,
  /** master -> worker: an admin message { name, args }. */
  ADMIN = 6,
  /** master -> worker: stop gracefully ({ grace, idleGrace } ms; see Container.stop). */
  SHUTDOWN = 7,
  /** either way: { op, ...args }, answered by REPLY or ERROR with the same id. */
  REQUEST = 8,
  REPLY = 9,
  ERROR = 10,
  /**
   * worker -> master: { s: slot }: a primitive changed while it had waiters;
   * { s: slot, t: ticket }: the worker completed its wait t itself after a
   * doorbell ring; { life: 1 }: the worker's main thread holds its life
   * lock, which the master may now watch (lib/shared/sync.ts).
   */
  SYNC = 11,
}

export const FLAG_NONE = 0;

export interface Frame {
  type: number;
  flags: number;
  id: number;
  body: unknown;
}

/** A violation of the framing by the peer: the channel is closed with it. */
export class ProtocolError extends Error {
  readonly code = 'ERR_IOMUX_CLUSTER_PROTOCOL';
}

export function encodeFrame(type: number, body: unknown, id = 0, flags = 0): Buffer {
  const payload = body === undefined ? null : serialize(body);
  const len = payload ? payload.length : 0;
  if (len > MAX_PAYLOAD) throw new RangeError(`frame payload of ${len} bytes exceeds ${MAX_PAYLOAD}`);
  const out = Buffer.allocUnsafe(HEADER_SIZE + len);
  out.writeUInt32BE(len, 0);
  out[4] = VERSION;
  out[5] = HEADER_SIZE;
  out[6] = type;
  out[7] = flags;
  out.writeUInt32BE(id >>> 0, 8);
  if (payload) payload.copy(out, HEADER_SIZE);
  return out;
}

/**
 * Incremental decoder: push() the bytes as they come, get the whole frames.
 * Throws ProtocolError on a bad version, header length, size or payload.
 */
export class FrameDecoder {
  // Chunks are kept as they come and joined only once a whole frame is
  // there: a large frame in many chunks is copied once, not once per chunk.
  private chunks: Buffer[] = [];
  private length = 0;
  private need = 6; // bytes before anything can be parsed

  push(chunk: Buffer): Frame[] {
    if (chunk.length === 0) return [];
    this.chunks.push(chunk);
    this.length += chunk.length;
    if (this.length < this.need) return [];
    const buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.length);
    const out: Frame[] = [];
    let off = 0;
    this.need = 6;
    while (buf.length - off >= 6) {
      const len = buf.readUInt32BE(off);
      const version = buf[off + 4]!;
      const hlen = buf[off + 5]!;
      if (version !== VERSION) throw new ProtocolError(`frame version ${version}, expected ${VERSION}`);
      if (hlen < HEADER_SIZE) throw new ProtocolError(`frame header length ${hlen} is below ${HEADER_SIZE}`);
      if (len > MAX_PAYLOAD) throw new ProtocolError(`frame payload of ${len} bytes exceeds ${MAX_PAYLOAD}`);
      if (buf.length - off < hlen + len) {
        this.need = hlen + len;
        break;
      }
      const type = buf[off + 6]!;
      const flags = buf[off + 7]!;
      const id = buf.readUInt32BE(off + 8);
      let body: unknown;
      if (len > 0) {
        try {
          body = deserialize(buf.subarray(off + hlen, off + hlen + len));
        } catch (err) {
          throw new ProtocolError(`frame payload does not deserialize: ${(err as Error).message}`);
        }
      }
      out.push({ type, flags, id, body });
      off += hlen + len;
    }
    const rest = buf.subarray(off);
    this.chunks = rest.length ? [rest] : [];
    this.length = rest.length;
    return out;
  }

  /** Bytes held of a frame not yet complete. */
  get buffered(): number {
    return this.length;
  }
}
