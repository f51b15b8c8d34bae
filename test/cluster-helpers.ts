// Helpers for the cluster tests: a supervisor on a fresh run directory with
// the fixture worker, and reading its hook log.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fixturesDir, iomux, tempDir } from './helpers';
import type { ServiceConfig, Supervisor, SupervisorOptions } from '../dist/cluster';

export const WORKER = join(fixturesDir, 'cluster-worker.js');

export interface Harness {
  dir: string;
  logFile: string;
  sup: Supervisor;
  lines: string[];
  port(service?: string): number;
  events(): any[];
}

export function makeSupervisor(services: Partial<ServiceConfig>[], extra: Partial<SupervisorOptions> = {}): Harness {
  const dir = tempDir('iomux-cluster-');
  const logFile = join(dir, 'hooks.log');
  const lines: string[] = [];
  const sup = iomux.cluster.createSupervisor({
    runDir: join(dir, 'run'),
    signals: false,
    grace: 3000,
    log: (l) => lines.push(l),
    ...extra,
    services: services.map((s) => ({
      name: 'web', worker: WORKER, count: 2, listen: [{ port: 0 }],
      ...s,
      env: { CLUSTER_LOG: logFile, ...(s.env ?? {}) },
    })) as ServiceConfig[],
  });
  return {
    dir, logFile, sup, lines,
    port(service = 'web') {
      return Number(sup.addresses(service)[0]!.split(':').pop());
    },
    events() {
      if (!existsSync(logFile)) return [];
      return readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    },
  };
}

/** Child processes of this process (pid, state), from /proc. */
export function children(): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let stat: string;
    try { stat = readFileSync(`/proc/${d}/stat`, 'utf8'); } catch { continue; }
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(rest[1]) === process.pid) out.push({ pid: Number(d), state: rest[0]! });
  }
  return out;
}

export async function httpGet(port: number): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: 'close' } });
  return { status: r.status, body: await r.text() };
}
