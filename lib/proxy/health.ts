// health.ts -- active health checks: every `interval` ms each upstream is
// probed, with a TCP connect or an HTTP request (GET path, 2xx or 3xx is
// healthy); `fall` failed probes in a row take it out, `rise` good ones in a
// row bring it back. The probes run on the loop's own timers and sockets.
import { loop, type Timer } from '../loop';
import { connect, type Socket } from '../socket';
import { encodeV1, encodeV2 } from './protocol';
import { ResponseParser } from './response';
import type { Upstream } from './upstream';

export interface HealthCheckOptions {
  /** ms between probes of one upstream (default 5000). */
  interval?: number;
  /** ms a probe may take (default 2000, at most interval). */
  timeout?: number;
  /** 'tcp' (default): a connect is enough. 'http': GET `path` must answer 2xx or 3xx. */
  type?: 'tcp' | 'http';
  /** Path of the HTTP probe (default '/'). */
  path?: string;
  /** Host header of the HTTP probe (default the upstream's host:port). */
  host?: string;
  /** Failed probes in a row that take an upstream out (default 2). */
  fall?: number;
  /** Good probes in a row that bring it back (default 2). */
  rise?: number;
}

export type ResolvedHealthCheck = Required<Omit<HealthCheckOptions, 'host'>> & { host: string | undefined };

/** One probe: resolves to '' when healthy, else why not. Never rejects. */
export function probe(up: Upstream, opts: ResolvedHealthCheck): Promise<string> {
  return new Promise<string>((resolve) => {
    let done = false;
    let sock: Socket | null = null;
    const finish = (why: string): void => {
      if (done) return;
      done = true;
      loop.clearTimeout(timer);
      sock?.destroy();
      resolve(why);
    };
    const timer: Timer = loop.setTimeout(() => finish(`no answer within ${opts.timeout} ms`), opts.timeout);
    timer.unref();
    const s = connect({ host: up.host, port: up.port, allowHalfOpen: true });
    sock = s;
    s.unref();
    s.on('error', (err: Error & { code?: string }) => finish(`${opts.type} check: ${err.code ?? err.message}`));
    s.on('close', () => finish(`${opts.type} check: connection closed`));
    // An upstream that expects a PROXY header gets one saying "a check, not a client".
    if (up.sendProxy === 1) s.write(encodeV1({ family: 'unknown' }));
    else if (up.sendProxy === 2) s.write(encodeV2({ command: 'local' }));
    s.on('connect', () => {
      if (opts.type === 'tcp') return finish('');
      let status = 0;
      const parser = new ResponseParser({
        onHead: (h) => {
          if (h.status >= 200) status = h.status;
        },
        onBody: () => {},
        onEnd: () => finish(status >= 200 && status < 400 ? '' : `http check: status ${status}`),
      });
      parser.expect('GET');
      s.on('data', (chunk: Buffer) => {
        try {
          parser.execute(chunk);
          // The status is all that matters: no need to wait for the body.
          if (status !== 0) finish(status < 400 ? '' : `http check: status ${status}`);
        } catch (err) {
          finish(`http check: ${(err as Error).message}`);
        }
      });
      s.on('end', () => finish(status === 0 ? 'http check: connection closed before a response' : ''));
      const host = opts.host ?? up.name;
      s.write(`GET ${opts.path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: iomux-proxy-health\r\nConnection: close\r\n\r\n`, 'latin1');
    });
  });
}

/** Probes every upstream periodically until stop(). */
export class HealthChecker {
  private readonly timers = new Map<Upstream, Timer>();
  private stopped = false;
  private readonly streak = new Map<Upstream, { ok: boolean; n: number }>();

  constructor(private readonly upstreams: readonly Upstream[], private readonly opts: ResolvedHealthCheck) {}

  start(): void {
    for (const up of this.upstreams) {
      // One timer per upstream, re-armed after each probe, so that probes of
      // a slow upstream never pile up.
      const run = (): void => {
        if (this.stopped) return;
        void probe(up, this.opts).then((why) => {
          if (this.stopped) return;
          this.record(up, why);
          const t = loop.setTimeout(run, this.opts.interval);
          t.unref();
          this.timers.set(up, t);
        });
      };
      run();
    }
  }

  private record(up: Upstream, why: string): void {
    const ok = why === '';
    const s = this.streak.get(up);
    const n = s !== undefined && s.ok === ok ? s.n + 1 : 1;
    this.streak.set(up, { ok, n });
    if (!ok) up.counters.checks++;
    if (ok && n >= this.opts.rise) up._checkResult(true, `${n} good health check${n > 1 ? 's' : ''}`);
    else if (!ok && n >= this.opts.fall) up._checkResult(false, why);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) loop.clearTimeout(t);
    this.timers.clear();
  }
}
