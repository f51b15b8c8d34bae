// balancer.ts -- picks the upstream for the next connection or request.
//
// Both strategies honour weights and skip upstreams that are down or were
// already tried for this request (failover). When every upstream is down the
// healthy set is empty; then the balancer picks among all of them rather than
// refusing outright: a health verdict may be stale, and a refused connection
// costs little more than the 502 that refusing would give anyway.
import type { Upstream } from './upstream';

export type BalanceStrategy = 'round-robin' | 'least-connections';

export interface Balancer {
  /** The next upstream, not one of `exclude`; null when none is left. */
  pick(exclude?: ReadonlySet<Upstream>): Upstream | null;
}

function candidates(upstreams: readonly Upstream[], exclude: ReadonlySet<Upstream> | undefined): Upstream[] {
  const healthy: Upstream[] = [];
  const rest: Upstream[] = [];
  for (const u of upstreams) {
    if (exclude !== undefined && exclude.has(u)) continue;
    (u.healthy ? healthy : rest).push(u);
  }
  return healthy.length > 0 ? healthy : rest;
}

/**
 * Smooth weighted round-robin (as nginx does it): each pick adds every
 * candidate's weight to its score, takes the highest, and subtracts the total
 * from the winner. Weights 5,1,1 give a a b a c a a rather than a a a a a b c.
 */
class RoundRobin implements Balancer {
  constructor(private readonly upstreams: readonly Upstream[]) {}

  pick(exclude?: ReadonlySet<Upstream>): Upstream | null {
    const cands = candidates(this.upstreams, exclude);
    if (cands.length === 0) return null;
    let best: Upstream | null = null;
    let total = 0;
    for (const u of cands) {
      u.current += u.weight;
      total += u.weight;
      if (best === null || u.current > best.current) best = u;
    }
    best!.current -= total;
    return best;
  }
}

/**
 * Least connections, weighted: the lowest load per unit of weight; ties go
 * round-robin so that an idle pool is not all sent to the first upstream.
 */
class LeastConnections implements Balancer {
  private next = 0;
  constructor(private readonly upstreams: readonly Upstream[]) {}

  pick(exclude?: ReadonlySet<Upstream>): Upstream | null {
    const cands = candidates(this.upstreams, exclude);
    const n = cands.length;
    if (n === 0) return null;
    const start = this.next++ % n;
    let best: Upstream | null = null;
    let bestScore = Infinity;
    for (let i = 0; i < n; i++) {
      const u = cands[(start + i) % n]!;
      const score = u.load / u.weight;
      if (score < bestScore) {
        best = u;
        bestScore = score;
      }
    }
    return best;
  }
}

export function createBalancer(strategy: BalanceStrategy, upstreams: readonly Upstream[]): Balancer {
  return strategy === 'least-connections' ? new LeastConnections(upstreams) : new RoundRobin(upstreams);
}
