// Helpers for the cluster tests: a supervisor on a fresh run directory with
// the fixture worker, and reading its hook log.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { fixturesDir, iomux, tempDir } from './helpers';
import { nextResponse } from './http-helpers';
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

export interface WrkLikeResult {
  requests: number;
  non2xx: number;
  connects: number;
  /** What wrk counts as socket errors: connect errors, a reset, an end with a request unanswered. */
  errors: string[];
}

/**
 * A load generator that behaves like wrk: `connections` keep-alive
 * connections, each sending its next request the moment a response is
 * complete, reconnecting after a response with Connection: close, until
 * stop() is called. A connection that ends (FIN or reset) while its request
 * waits for the response, or fails to connect, is an error, as wrk counts
 * read and connect errors.
 */
export function wrkLike(port: number, connections: number): { stop(): Promise<WrkLikeResult> } {
  const r: WrkLikeResult = { requests: 0, non2xx: 0, connects: 0, errors: [] };
  let stopping = false;
  const running = new Set<Promise<void>>();
  const one = (): void => {
    if (stopping) return;
    const p = new Promise<void>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      sock.setNoDelay(true);
      let buf = Buffer.alloc(0);
      let waiting = false;
      const send = (): void => {
        if (stopping) {
          sock.end();
          return;
        }
        waiting = true;
        sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      };
      sock.on('connect', () => {
        r.connects++;
        send();
      });
      sock.on('data', (chunk: Buffer) => {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        for (;;) {
          const next = nextResponse(buf);
          if (next === null) return;
          const head = next.head;
          if (next.rest === null) {
            r.errors.push(`response without a length: ${JSON.stringify(head.slice(0, 200))}`);
            sock.destroy();
            return;
          }
          buf = next.rest;
          waiting = false;
          r.requests++;
          if (!/^HTTP\/1\.1 2\d\d /.test(head)) r.non2xx++;
          if (/\r\nconnection: *close/i.test(head)) {
            sock.end();
            return;
          }
          send();
        }
      });
      sock.on('end', () => {
        if (waiting) r.errors.push(`the connection ended with a request unanswered`);
      });
      sock.on('error', (e: NodeJS.ErrnoException) => r.errors.push(`${e.syscall ?? ''} ${e.code ?? e.message}`));
      sock.on('close', () => {
        resolve();
        // wrk reconnects after any close; so do we, until stopped.
        one();
      });
    });
    running.add(p);
    void p.then(() => running.delete(p));
  };
  for (let i = 0; i < connections; i++) one();
  return {
    async stop() {
      stopping = true;
      while (running.size) await Promise.all([...running]);
      return r;
    },
  };
}
