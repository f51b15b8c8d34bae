// Helpers for the sync tests: a supervisor running test/fixtures/sync-worker.js
// and a way to run code in one of its workers.
import { join } from 'node:path';
import { fixturesDir } from './helpers';
import { makeSupervisor, type Harness } from './cluster-helpers';
import type { ServiceConfig, SupervisorOptions } from '../dist/cluster';

export const SYNC_WORKER = join(fixturesDir, 'sync-worker.js');

export interface Outcome { ok: boolean; v?: any; code?: string; message?: string }

export interface SyncHarness extends Harness {
  /** Runs code (an async function body: c, st, log) in container id. */
  run(id: string, code: string): Promise<Outcome>;
  pid(id: string): Promise<number>;
}

export function makeSync(services: Partial<ServiceConfig>[], extra: Partial<SupervisorOptions> = {}): SyncHarness {
  const h = makeSupervisor(services.map((s) => ({ name: 'w', worker: SYNC_WORKER, count: 2, listen: [], ...s })), extra);
  let n = 0;
  const pending = new Map<number, (o: Outcome) => void>();
  h.sup.on('message', (name: string, args: any[]) => {
    if (name !== 'result') return;
    const fn = pending.get(args[0]);
    pending.delete(args[0]);
    fn?.(args[1]);
  });
  const run = (id: string, code: string): Promise<Outcome> => new Promise((resolve) => {
    const tag = ++n;
    pending.set(tag, resolve);
    if (h.sup.send(id, 'do', tag, code) === 0) resolve({ ok: false, message: `no container ${id}` });
  });
  return {
    ...h,
    run,
    async pid(id: string) {
      const r = await run(id, 'return process.pid');
      return r.v as number;
    },
  };
}
