// relay.ts -- moves bytes both ways between two connected iomux sockets until
// both directions are done, and says how it ended: the proxy's one place that
// shuttles TCP bytes. It hands the work to the core (forward(): splice(2)
// through a pipe on Linux, no crossing into JavaScript per chunk):
//   - backpressure: at most a high-water mark of bytes waits per direction;
//   - half-close: one side's FIN becomes a shutdown of the other, and the
//     other direction keeps flowing;
//   - a reset or error of one side resets the other;
//   - idleMs without a byte moved either way resets both.
import { forward, type ForwardResult } from '../forward';
import type { Socket } from '../socket';

export type RelayEndReason = ForwardResult['reason'];

export interface RelayOptions {
  /** Reset both sides after this many ms without a byte moved either way; 0 (default): never. */
  idleMs?: number;
}

export type RelayResult = ForwardResult;

/**
 * Relays between a and b (both connected) until both are closed. Resolves,
 * never rejects: a side already gone ends it at once, as 'closed'. Bytes a
 * already received and did not emit (it was paused) are relayed first.
 */
export function relay(a: Socket, b: Socket, opts: RelayOptions = {}): Promise<RelayResult> {
  return forward(a, b, { idleTimeout: opts.idleMs ?? 0 }).catch((err: Error) => {
    a.destroy();
    b.destroy();
    return { bytesAtoB: 0, bytesBtoA: 0, reason: 'closed' as const, error: err };
  });
}
