// What the connections of one iomux HTTP server share: one deadline sweep
// for all their timeouts (each connection still times out at its own
// deadline, never before it, whatever phase the others are in) and a free
// list of parsers (a parser given back between requests, or after an error,
// starts clean for the next connection).
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { sleep } from './helpers';
import { parseResponses, rawClient, serve, type RawClient } from './http-helpers';

/** How late a timeout may fire on a shared 2-core machine; early is never allowed (1 ms of clock rounding). */
const LATE = 150;
const EARLY = 1;

t.test('one server, connections in every phase at once: each closes at its own deadline', async (t) => {
  const HT = 400;
  const RT = 650;
  const KA = 250;
  const endingAt = new Map<string, number>();
  const { port, acceptedAt } = await serve(t, (req, res) => {
    if (req.url === '/body') return; // never answered: its body times out first
    endingAt.set(req.url, performance.now());
    res.end(req.url);
  }, { headersTimeout: HT, requestTimeout: RT, keepAliveTimeout: KA });

  const check = (what: string, at: number, due: number) => {
    t.ok(at >= due - EARLY, `${what}: not before its deadline (${(at - due).toFixed(1)} ms after it)`);
    t.ok(at <= due + LATE, `${what}: close to it`);
  };

  // Three keep-alive connections, 60 ms apart: their deadlines interleave
  // with the others'.
  const ka: RawClient[] = [];
  for (let i = 0; i < 3; i++) {
    const c = rawClient(port);
    c.sock.write(`GET /ka${i} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await c.responses(1);
    ka.push(c);
    await sleep(60);
  }
  // A silent connection, a partial head, a body under way.
  const silent = rawClient(port);
  await once(silent.sock, 'connect');
  await sleep(20);
  const silentAccept = acceptedAt[acceptedAt.length - 1]!;
  const head = rawClient(port);
  await once(head.sock, 'connect');
  const headAt = performance.now();
  head.sock.write('GET /head HTTP/1.1\r\nHost: x\r\n');
  const body = rawClient(port);
  await once(body.sock, 'connect');
  const bodyAt = performance.now();
  body.sock.write('POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab');
  // And one that keeps making requests, 100 ms apart, for longer than every timeout.
  const busy = rawClient(port);
  let n = 0;
  const busyDone = (async () => {
    while (n < 9) {
      busy.sock.write(`GET /busy${n} HTTP/1.1\r\nHost: x\r\n\r\n`);
      await busy.responses(++n);
      await sleep(100);
    }
  })();

  const ends = await Promise.all([...ka, silent, head, body].map((c) => c.waitEnd(3000)));
  await busyDone;
  for (let i = 0; i < 3; i++) check(`keep-alive ${i}`, ends[i]!, endingAt.get(`/ka${i}`)! + KA);
  check('silent', ends[3]!, silentAccept + HT);
  t.equal(silent.data().length, 0, 'the silent connection is closed without a response');
  check('partial head', ends[4]!, headAt + HT);
  t.match(head.text(), /^HTTP\/1\.1 408 /, 'the partial head gets 408');
  check('body under way', ends[5]!, bodyAt + RT);
  t.match(body.text(), /^HTTP\/1\.1 408 /, 'the slow body gets 408');
  t.equal(parseResponses(busy.data()).length, 9, 'the busy connection was served throughout');
  t.notOk(busy.sock.readableEnded, 'and is still open');
  busy.sock.destroy();
});

t.test('requestTimeout counts from the head\'s first byte: a body whose head began first times out first', async (t) => {
  const RT = 700;
  const { port } = await serve(t, () => { /* never answers: the bodies time out */ }, { headersTimeout: 500, requestTimeout: RT });
  const [x, y] = [rawClient(port), rawClient(port)];
  await Promise.all([once(x.sock, 'connect'), once(y.sock, 'connect')]);
  // x's head begins first, y's whole head and part of its body next, then
  // x's head ends: x joins the body deadlines after y, due before it.
  const xAt = performance.now();
  x.sock.write('POST /x HTTP/1.1\r\nHost: x\r\n');
  await sleep(250); // (more than a timeout may be late)
  const yAt = performance.now();
  y.sock.write('POST /y HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab');
  await sleep(100);
  x.sock.write('Content-Length: 10\r\n\r\nab');
  const [xEnd, yEnd] = await Promise.all([x.waitEnd(3000), y.waitEnd(3000)]);
  for (const [what, end, due] of [['x', xEnd, xAt + RT], ['y', yEnd, yAt + RT]] as const) {
    t.ok(end >= due - EARLY, `${what}: not before its deadline (${(end - due).toFixed(1)} ms after it)`);
    t.ok(end <= due + LATE, `${what}: close to it`);
  }
  t.match(x.text(), /^HTTP\/1\.1 408 /);
  t.match(y.text(), /^HTTP\/1\.1 408 /);
});

t.test('parsers are shared: heads and bodies in pieces on many connections at once, and after errors', async (t) => {
  const CONNS = 24;
  const { port } = await serve(t, (req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => res.end(`${req.url} ${req.headers['x-n']} ${Buffer.concat(parts).toString()}`));
  });
  const clients = Array.from({ length: CONNS }, () => rawClient(port));
  await Promise.all(clients.map((c) => once(c.sock, 'connect')));
  const texts = clients.map((_, i) => {
    // Every third one sends a malformed request: 400, and its parser goes
    // back to the free list dead.
    if (i % 3 === 2) return `GET /bad${i} HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n`;
    const chunked = i % 2 === 0;
    const payload = `body-${i}-${'z'.repeat(i)}`;
    const framing = chunked
      ? `Transfer-Encoding: chunked\r\n\r\n${payload.length.toString(16)}\r\n${payload}\r\n0\r\n\r\n`
      : `Content-Length: ${payload.length}\r\n\r\n${payload}`;
    return `POST /p${i} HTTP/1.1\r\nHost: x\r\nX-N: ${i}\r\n${framing}` + `GET /g${i} HTTP/1.1\r\nHost: x\r\nX-N: ${i}\r\n\r\n`;
  });
  // Round-robin, 5 bytes at a time: each connection's request is mid-head or
  // mid-body while the others' parsers come and go.
  for (let off = 0; texts.some((s) => off < s.length); off += 5) {
    clients.forEach((c, i) => {
      if (off < texts[i]!.length && !c.sock.destroyed) c.sock.write(texts[i]!.slice(off, off + 5));
    });
    await sleep(1);
  }
  for (let i = 0; i < CONNS; i++) {
    const c = clients[i]!;
    if (i % 3 === 2) {
      await c.waitEnd(3000);
      t.match(c.text(), /^HTTP\/1\.1 400 /, `connection ${i}: 400 for its malformed head`);
      continue;
    }
    const rs = await c.responses(2);
    t.same(rs.map((r) => r.body.toString()), [`/p${i} ${i} body-${i}-${'z'.repeat(i)}`, `/g${i} ${i} `],
      `connection ${i}: both requests parsed as sent`);
    c.sock.destroy();
  }
  // Afterwards, one more connection is served by a recycled parser.
  const c = rawClient(port);
  c.sock.write('GET /last HTTP/1.1\r\nHost: x\r\nX-N: 0\r\n\r\n');
  const [r] = await c.responses(1);
  t.equal(r!.body.toString(), '/last 0 ', 'a recycled parser starts clean');
  c.sock.destroy();
});
