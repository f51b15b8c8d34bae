// iomux's HTTP server: headersTimeout, requestTimeout and keepAliveTimeout
// fire at their deadlines (never before, and within a margin for a noisy
// machine), and keeping them up to date costs no syscall.
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { sleep, statsDelta } from './helpers';
import { parseResponses, rawClient, serve } from './http-helpers';

/** How late a timeout may fire on a shared 2-core machine. Early is never allowed (beyond 1 ms of clock rounding). */
const LATE = 150;
const EARLY = 1;

const HEAD = 'GET / HTTP/1.1\r\nHost: x\r\n';

t.test('headersTimeout: a partial head gets 408 and the close at the deadline, counted from its first byte', async (t) => {
  const HT = 300;
  const { port } = await serve(t, (req, res) => res.end('never'), { headersTimeout: HT, keepAliveTimeout: 5000 });
  const c = rawClient(port);
  await once(c.sock, 'connect');
  await sleep(100); // the clock starts at the first byte, not at the accept
  const sentAt = performance.now();
  c.sock.write(HEAD);
  const endAt = await c.waitEnd(3000);
  const at = c.firstByteAt() - sentAt;
  t.match(c.text(), /^HTTP\/1\.1 408 Request Timeout\r\n/, '408');
  t.match(c.text(), /\r\nConnection: close\r\n/);
  t.ok(at >= HT - EARLY, `not before the deadline (${at.toFixed(1)} ms)`);
  t.ok(at <= HT + LATE, `close to it (${at.toFixed(1)} ms)`);
  t.ok(endAt - sentAt <= HT + LATE, 'and the connection ended with it');
});

t.test('headersTimeout: a connection that sends nothing is closed at the deadline, silently', async (t) => {
  const HT = 250;
  const { port, acceptedAt } = await serve(t, (req, res) => res.end('never'), { headersTimeout: HT });
  const c = rawClient(port);
  const endAt = await c.waitEnd(3000);
  const after = endAt - acceptedAt[0]!;
  t.equal(c.data().length, 0, 'no bytes: there was no request to answer');
  t.ok(after >= HT - EARLY, `not before the deadline (${after.toFixed(1)} ms after accept)`);
  t.ok(after <= HT + LATE, 'close to it');
});

t.test('headersTimeout is absolute: a byte every 100 ms does not keep a head alive (slowloris)', async (t) => {
  const HT = 500;
  const { port } = await serve(t, (req, res) => res.end('never'), { headersTimeout: HT });
  const c = rawClient(port);
  await once(c.sock, 'connect');
  const head = `${HEAD}X-Padding: ${'p'.repeat(100)}`;
  let sent = 0;
  const sentAt = performance.now();
  c.sock.write(head[sent++]!);
  const drip = setInterval(() => {
    if (!c.sock.destroyed && c.firstByteAt() < 0) c.sock.write(head[sent++]!);
  }, 100);
  t.teardown(() => clearInterval(drip));
  await c.until((s) => s.includes('\r\n\r\n'), 3000);
  clearInterval(drip);
  const at = c.firstByteAt() - sentAt;
  t.match(c.text(), /^HTTP\/1\.1 408 /);
  t.ok(at >= HT - EARLY, `not before the deadline (${at.toFixed(1)} ms)`);
  t.ok(at <= HT + LATE, `close to it, though bytes kept coming (${at.toFixed(1)} ms, ${sent} bytes sent)`);
  t.ok(sent >= 4, 'bytes kept coming until then');
  await c.waitEnd(1000);
});

t.test('requestTimeout: a body that comes too slowly gets 408; the handler sees the abort', async (t) => {
  const RT = 400;
  let bodyError: (Error & { status?: number; code?: string }) | null = null;
  let handled = 0;
  const { port } = await serve(t, async (req, res) => {
    handled++;
    try {
      await req.body();
    } catch (err) {
      bodyError = err as Error;
      return;
    }
    res.end('complete?');
  }, { headersTimeout: 1000, requestTimeout: RT });
  const c = rawClient(port);
  await once(c.sock, 'connect');
  const sentAt = performance.now();
  c.sock.write(`POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n${'b'.repeat(10)}`);
  const drip = setInterval(() => {
    if (!c.sock.destroyed && c.firstByteAt() < 0) c.sock.write('b'.repeat(10));
  }, 50);
  t.teardown(() => clearInterval(drip));
  await c.until((s) => s.includes('\r\n\r\n'), 3000);
  clearInterval(drip);
  const at = c.firstByteAt() - sentAt;
  t.match(c.text(), /^HTTP\/1\.1 408 /);
  t.ok(at >= RT - EARLY, `not before the deadline (${at.toFixed(1)} ms)`);
  t.ok(at <= RT + LATE, `close to it (${at.toFixed(1)} ms)`);
  t.equal(handled, 1, 'the handler had the request');
  t.ok(bodyError !== null, 'body() rejected');
  t.equal(bodyError!.code, 'HTTP_REQUEST_TIMEOUT');
  t.equal(bodyError!.status, 408);
  await c.waitEnd(1000);
});

t.test('requestTimeout shorter than headersTimeout bounds the head too', async (t) => {
  const RT = 300;
  const { port } = await serve(t, (req, res) => res.end('never'), { headersTimeout: 2000, requestTimeout: RT });
  const c = rawClient(port);
  await once(c.sock, 'connect');
  const sentAt = performance.now();
  c.sock.write(HEAD);
  await c.until((s) => s.includes('\r\n\r\n'), 3000);
  const at = c.firstByteAt() - sentAt;
  t.match(c.text(), /^HTTP\/1\.1 408 /);
  t.ok(at >= RT - EARLY && at <= RT + LATE, `at the requestTimeout (${at.toFixed(1)} ms)`);
});

t.test("no timeout runs while the handler works; keepAliveTimeout starts from the response", async (t) => {
  const KA = 200;
  let endingAt = 0;
  const { port } = await serve(t, async (req, res) => {
    await sleep(600); // longer than every timeout
    endingAt = performance.now();
    res.end('slow but fine');
  }, { headersTimeout: 200, requestTimeout: 300, keepAliveTimeout: KA });
  const c = rawClient(port);
  c.sock.write(`${HEAD}\r\n`);
  const [r] = await c.responses(1, undefined, 3000);
  t.equal(r!.status, 200);
  t.equal(r!.body.toString(), 'slow but fine');
  const endAt = await c.waitEnd(3000);
  const idle = endAt - endingAt;
  t.ok(idle >= KA - EARLY && idle <= KA + LATE, `closed keepAliveTimeout after the response (${idle.toFixed(1)} ms)`);
});

t.test('keepAliveTimeout: an idle connection is closed after it, not before; each request restarts it', async (t) => {
  const KA = 300;
  const endingAt: number[] = [];
  const { port } = await serve(t, (req, res) => {
    endingAt.push(performance.now());
    res.end(req.url);
  }, { keepAliveTimeout: KA, headersTimeout: 5000 });
  const c = rawClient(port);
  c.sock.write(`GET /1 HTTP/1.1\r\nHost: x\r\n\r\n`);
  await c.responses(1);
  await sleep(KA - 100);
  t.notOk(c.sock.readableEnded, 'still open before the deadline');
  c.sock.write(`GET /2 HTTP/1.1\r\nHost: x\r\n\r\n`);
  const rs = await c.responses(2);
  t.equal(rs[1]!.body.toString(), '/2', 'the second request is served');
  const endAt = await c.waitEnd(3000);
  const idle = endAt - endingAt[1]!;
  t.ok(idle >= KA - EARLY, `not before the deadline, counted from the last response (${idle.toFixed(1)} ms)`);
  t.ok(idle <= KA + LATE, 'close to it');
  t.ok(endAt - endingAt[0]! > KA + 100, 'the first deadline did not close it');
  t.equal(parseResponses(c.data()).length, 2, 'closed silently: no response of its own');
});

t.test('keep-alive requests cost a read and a write each: the timers are refreshed without a syscall', async (t) => {
  const { port } = await serve(t, (req, res) => res.end('k'), { headersTimeout: 100, keepAliveTimeout: 100 });
  const c = rawClient(port);
  t.teardown(() => c.sock.destroy());
  let n = 0;
  const roundTrip = async () => {
    c.sock.write(`GET /${n} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await c.responses(++n);
  };
  await roundTrip(); // the connection is up and has served once
  const QUIET = new Set(['iterations', 'events', 'wait', 'changes', 'submit', 'batch']);
  const IO = new Set(['read', 'write', 'writev', 'batch_read', 'batch_write']);
  const check = (d: Record<string, number>, requests: number, what: string) => {
    const reads = d.read! + d.batch_read!;
    t.ok(reads >= requests && reads <= requests + 2, `${what}: reads ${reads} for ${requests} requests`);
    const writes = d.write! + d.writev! + d.batch_write!;
    t.ok(writes >= requests && writes <= requests + 2, `${what}: writes ${writes} for ${requests} requests`);
    const other = Object.entries(d).filter(([k, v]) => !QUIET.has(k) && !IO.has(k) && v !== 0);
    t.same(other, [], `${what}: no other syscall`);
  };

  // Back to back: every deadline moves later, only stored.
  let delta = statsDelta();
  for (let i = 0; i < 200; i++) await roundTrip();
  check(delta(), 200, 'back to back');

  // Spaced over 4 keep-alive periods: the timer fires early, re-arms for the
  // rest, and never closes the connection.
  delta = statsDelta();
  const t0 = performance.now();
  for (let i = 0; i < 40; i++) {
    await sleep(10);
    await roundTrip();
  }
  t.ok(performance.now() - t0 > 400, 'the requests spanned several keepAliveTimeouts');
  t.notOk(c.sock.readableEnded, 'the connection stayed open');
  check(delta(), 40, 'spaced');
});
