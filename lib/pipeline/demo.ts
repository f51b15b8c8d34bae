// prime_server's demo as an iomux pipeline: GET /is_prime?possible_prime=N.
// Stage 1 parses and validates (bad input is answered at once through the
// loopback); stage 2 decides by trial division, whose cost varies hugely with N.
import * as http from 'node:http';
import type { JobContext, Outcome } from './worker';
import { createServer, type PipelineServer } from './server';

interface HttpJob {
  path: string;
  query: Record<string, string>;
}

export function parse(job: HttpJob, ctx: JobContext): Outcome {
  if (job.path !== '/is_prime') return ctx.reply(404, { 'content-type': 'text/plain' }, 'try /is_prime?possible_prime=N\n');
  const s = job.query.possible_prime;
  if (s === undefined || !/^[0-9]{1,16}$/.test(s) || !Number.isSafeInteger(Number(s))) {
    return ctx.reply(400, { 'content-type': 'text/plain' }, 'possible_prime must be a non-negative integer below 2^53\n');
  }
  return ctx.next({ n: Number(s) });
}

export function isPrime(n: number, interrupted?: () => boolean): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  if (n % 3 === 0) return n === 3;
  const limit = Math.floor(Math.sqrt(n));
  for (let d = 5, i = 0; d <= limit; d += 6, i++) {
    if (n % d === 0 || n % (d + 2) === 0) return false;
    // A long check looks at its interrupt now and then (it cannot be preempted).
    if ((i & 0xfffff) === 0xfffff && interrupted !== undefined && interrupted()) return false;
  }
  return true;
}

export function compute(job: { n: number }, ctx: JobContext): Outcome {
  const prime = isPrime(job.n, () => ctx.interrupted);
  return ctx.reply(200, { 'content-type': 'text/plain' }, `${prime ? 'true' : 'false'}\n`);
}

export interface DemoOptions {
  port?: number;
  workers?: number;
  /** 'cluster' (processes under the supervisor, the default) or 'inprocess'. */
  mode?: 'cluster' | 'inprocess';
  timeout?: number;
  log?: (line: string) => void;
}

export async function startDemo(o: DemoOptions = {}): Promise<PipelineServer> {
  const mode = o.mode ?? 'cluster';
  const k = o.workers ?? 1;
  const srv = createServer({
    stages: [
      { name: 'parse', module: __filename, export: 'parse', fn: mode === 'inprocess' ? parse as never : undefined, workers: k },
      { name: 'compute', module: __filename, export: 'compute', fn: mode === 'inprocess' ? compute as never : undefined, workers: k },
    ],
    workers: mode,
    http: { port: o.port ?? 8002 },
    timeout: o.timeout ?? 30000,
    ...(o.log !== undefined ? { log: o.log } : {}),
  });
  await srv.listen();
  return srv;
}

/** Sends `count` requests for pseudo-random N (seeded) with `concurrency` in flight; returns primes found and ms. */
export async function simulate(port: number, count: number, concurrency = 64, seed = 1): Promise<{ primes: number; errors: number; ms: number }> {
  let x = seed >>> 0 || 1;
  const rnd = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  let sent = 0;
  let primes = 0;
  let errors = 0;
  const t0 = process.hrtime.bigint();
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const n = rnd() % 1_000_000_000;
      const req = http.get({ host: '127.0.0.1', port, path: `/is_prime?possible_prime=${n}`, agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          if (res.statusCode !== 200) errors++;
          else if (body === 'true\n') primes++;
          resolve();
        });
      });
      req.on('error', () => {
        errors++;
        resolve();
      });
    });
  const lane = async (): Promise<void> => {
    while (sent < count) {
      sent++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  agent.destroy();
  return { primes, errors, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
}
