// Slowloris: 2,000 clients each send a byte of a never-ending request head
// every second. headersTimeout counts from a head's first byte, not from the
// last one, so each is answered 408 and closed at its deadline; meanwhile
// fast clients on the same server keep their usual latency.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { childEnv, fixturesDir, iomux } from './helpers';

const SLOW = 2_000;
const HEADERS_TIMEOUT = 3_000;

interface Msg { type: string; [k: string]: any }

function nextMessage(child: ChildProcess, type: string): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: Msg) => {
      if (m.type === 'error') reject(new Error(`client: ${m.message}`));
      else if (m.type === type) {
        child.off('message', onMsg);
        resolve(m);
      }
    };
    child.on('message', onMsg);
  });
}

/** A keep-alive client timing one request at a time. */
class FastClient {
  private buf = '';
  private waiting: (() => void) | null = null;
  readonly sock: net.Socket;
  constructor(port: number) {
    this.sock = net.connect(port, '127.0.0.1');
    this.sock.setEncoding('latin1');
    this.sock.on('data', (d: string) => {
      this.buf += d;
      const end = this.buf.indexOf('\r\n\r\n');
      if (end >= 0 && this.buf.length >= end + 4 + 2 && this.waiting) {
        this.buf = this.buf.slice(end + 6);
        const w = this.waiting;
        this.waiting = null;
        w();
      }
    });
  }
  async time(): Promise<number> {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      this.waiting = resolve;
      this.sock.write('GET /fast HTTP/1.1\r\nHost: localhost\r\n\r\n');
    });
    return performance.now() - t0;
  }
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}

/** 4 fast clients, each timing requests back to back for ms. */
async function measure(port: number, ms: number): Promise<number[]> {
  const clients = Array.from({ length: 4 }, () => new FastClient(port));
  await Promise.all(clients.map((c) => once(c.sock, 'connect')));
  const out: number[] = [];
  const until = performance.now() + ms;
  await Promise.all(clients.map(async (c) => {
    while (performance.now() < until) {
      out.push(await c.time());
      await new Promise((r) => setTimeout(r, 2));
    }
  }));
  for (const c of clients) c.sock.destroy();
  return out;
}

t.test(`${SLOW.toLocaleString('en-US')} slowloris clients are cut off at headersTimeout; fast clients are not slowed`, async (t) => {
  const server = iomux.http.createServer({ headersTimeout: HEADERS_TIMEOUT }, (_req, res) => res.end('ok'));
  server.listen(0, '127.0.0.1', 4096);
  await once(server, 'listening');
  const port = (server.address() as iomux.AddressInfo).port;

  const before = await measure(port, 1000);

  const child = fork(join(fixturesDir, 'http-slowloris.js'), [String(port), String(SLOW), '1000'], {
    env: childEnv(), stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  t.teardown(() => { child.kill(); });
  const done = nextMessage(child, 'done');
  const opened = await nextMessage(child, 'opened');
  t.equal(opened.count, SLOW, 'every slow connection is open and dribbling');

  const during = await measure(port, 1500);
  const p50b = percentile(before, 0.5);
  const p50d = percentile(during, 0.5);
  const p99d = percentile(during, 0.99);
  t.comment(`fast requests: before ${before.length} (p50 ${p50b.toFixed(2)} ms, p99 ${percentile(before, 0.99).toFixed(2)} ms), ` +
    `during ${during.length} (p50 ${p50d.toFixed(2)} ms, p99 ${p99d.toFixed(2)} ms)`);
  t.ok(during.length > 100, 'fast clients kept being answered during the attack');
  // Not a speed target: a bound wide enough for a noisy machine, which a
  // server stalled by its slow clients (seconds per answer) would still cross.
  t.ok(p50d < Math.max(10 * p50b, p50b + 20), `median latency stayed near its usual value (${p50d.toFixed(2)} ms)`);
  t.ok(p99d < 250, `p99 latency under 250 ms (${p99d.toFixed(2)} ms)`);

  const result = await done;
  t.equal(result.closed, SLOW, 'the server closed every slow connection');
  t.equal(result.got408, SLOW, 'each got a 408 first');
  const lifetimes = result.lifetimes as number[];
  const min = Math.min(...lifetimes);
  const max = Math.max(...lifetimes);
  t.comment(`slow connections lived ${min}–${max} ms (headersTimeout ${HEADERS_TIMEOUT} ms)`);
  // The client's clock starts after its first write, the server's at the first
  // byte it reads: a few ms apart at most.
  t.ok(min >= HEADERS_TIMEOUT - 20, 'none was cut off before headersTimeout');
  t.ok(max <= HEADERS_TIMEOUT + 1000, 'all were cut off soon after it');
  await server.close();
});
