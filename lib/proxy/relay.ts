// relay.ts -- moves bytes both ways between two connected iomux sockets until
// both directions are done, and says how it ended.
//
// This is the proxy's one place that shuttles TCP bytes, behind one function,
// so that it can hand the work to the core's native forwarding (splice(2), no
// crossing into JavaScript per chunk) with a one-line change once that exists.
// The JavaScript relay keeps the same contract:
//   - backpressure: a side whose peer's write() returned false is paused until
//     that peer's 'drain';
//   - half-close: one side's FIN becomes end() of the other, and the other
//     direction keeps flowing (both sockets must be allowHalfOpen);
//   - a reset, an error or a destroy() of one side destroys the other;
//   - idleMs without a byte moved either way destroys both.
// Limitation of the JavaScript relay: the binding has no SO_LINGER {1, 0}, so
// "destroys the other" is an abrupt close (FIN; RST only when unread bytes
// remain), not a guaranteed reset as the native forwarding makes.
import type { Socket } from '../socket';

// The reasons and the result have the shape of the core's forward() (lib/forward.ts),
// so that switching to it is the one line in relay() below.
export type RelayEndReason =
  /** Both directions delivered their FIN. */
  | 'done'
  /** Side a failed (reset, refused write) or was destroyed with an error. */
  | 'resetA'
  /** Side b failed. */
  | 'resetB'
  /** A local failure (the native forwarding only). */
  | 'error'
  /** idleMs passed without a byte moved. */
  | 'timeout'
  /** One side was destroyed (without an error) by its owner, e.g. a drain deadline. */
  | 'closed';

export interface RelayOptions {
  /** Destroy both sides after this many ms without a byte moved either way; 0 (default): never. */
  idleMs?: number;
}

export interface RelayResult {
  bytesAtoB: number;
  bytesBtoA: number;
  reason: RelayEndReason;
  /** The error that ended it, for 'resetA' and 'resetB'. */
  error?: Error;
}

/**
 * Relays between a and b (both connected, both allowHalfOpen) until both are
 * closed. Resolves, never rejects. Bytes a already received and did not emit
 * (it was paused) are relayed first.
 */
export function relay(a: Socket, b: Socket, opts: RelayOptions = {}): Promise<RelayResult> {
  // When the core's forward() is ready (its tests passing on every backend),
  // this line becomes: return forward(a, b, { idleTimeout: opts.idleMs });
  return jsRelay(a, b, opts);
}

function jsRelay(a: Socket, b: Socket, opts: RelayOptions): Promise<RelayResult> {
  return new Promise<RelayResult>((resolve) => {
    const result: RelayResult = { bytesAtoB: 0, bytesBtoA: 0, reason: 'done' };
    let ended = false;
    let closed = 0;

    /** The first abnormal end decides the reason; the rest follows from it. */
    const abort = (reason: RelayEndReason, error?: Error): void => {
      if (ended) return;
      ended = true;
      result.reason = reason;
      if (error !== undefined) result.error = error;
      a.destroy();
      b.destroy();
    };

    const pipe = (from: Socket, to: Socket, aToB: boolean): void => {
      from.on('data', (chunk: Buffer) => {
        if (aToB) result.bytesAtoB += chunk.length;
        else result.bytesBtoA += chunk.length;
        if (!to.write(chunk)) from.pause();
      });
      to.on('drain', () => {
        if (!from.destroyed) from.resume();
      });
      from.on('end', () => {
        if (!to.destroyed) to.end();
      });
      // 'error' precedes 'close' and keeps the reason; the listener also
      // keeps a local error from being thrown.
      from.on('error', (err: Error) => abort(aToB ? 'resetA' : 'resetB', err));
      from.on('close', () => {
        // A clean close has seen the peer's FIN and sent its own.
        const clean = from.readableEnded && from.writableFinished;
        if (!clean) {
          const err = from.errored;
          if (err !== null) abort(aToB ? 'resetA' : 'resetB', err);
          else abort('closed');
        }
        if (++closed === 2) resolve(result);
      });
    };
    pipe(a, b, true);
    pipe(b, a, false);
    // A side may have seen its peer's FIN before the relay began (a client
    // that sent a PROXY header, its bytes and FIN at once): pass it on now.
    if (a.readableEnded) b.end();
    if (b.readableEnded) a.end();

    const idle = opts.idleMs ?? 0;
    if (idle > 0) {
      // Both sockets' idle timers are refreshed by the core on every read
      // and write, and a moving byte touches both: only a relay idle both
      // ways lets one of them fire.
      const onTimeout = (): void => abort('timeout');
      a.setTimeout(idle, onTimeout);
      b.setTimeout(idle, onTimeout);
    }
    // The caller hands over two open sockets; one already gone ends it at once.
    if (a.destroyed || b.destroyed) {
      const gone = a.destroyed ? a : b;
      const err = gone.errored ?? undefined;
      result.reason = err !== undefined ? (gone === a ? 'resetA' : 'resetB') : 'closed';
      if (err !== undefined) result.error = err;
      ended = true;
      a.destroy();
      b.destroy();
      process.nextTick(resolve, result);
      return;
    }
    a.resume();
    b.resume();
  });
}
