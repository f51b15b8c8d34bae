// serveNode(): a response ended with one res.end(body) is written straight to
// the iomux socket (lib/http/node-response.ts). The bytes on the wire must be
// exactly node's (the same handler on node:http, Date aside), the events
// node's ('prefinish', 'finish', 'close', the end() callback, in that order),
// and anything off the common path node's own end().
import t, { type Test } from 'tap';
import { once } from 'node:events';
import * as http from 'node:http';
import * as net from 'node:net';
import { NodeSocket, serveNode } from '../dist/http/node';
import { closeServer, iomux, openFds, settleFds, sleep } from './helpers';

const fdsAtStart = openFds();

// Counts the responses that took the fast path.
let fastEnds = 0;
const proto = NodeSocket.prototype as unknown as { _endResponse: (...a: unknown[]) => void };
const endResponse = proto._endResponse;
proto._endResponse = function (this: unknown, ...a: unknown[]) {
  fastEnds++;
  return endResponse.apply(this, a);
};

async function nodeServer(t: Test, handler: http.RequestListener, options: http.ServerOptions): Promise<number> {
  const server = http.createServer(options, handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

async function iomuxServer(t: Test, handler: http.RequestListener, options: http.ServerOptions): Promise<number> {
  const node = http.createServer(options, handler);
  const server = serveNode(node);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    node.closeAllConnections();
    await closeServer(server);
  });
  return (server.address() as iomux.AddressInfo).port;
}

/** Sends raw bytes, reads until the server closes (the last request says Connection: close). */
async function exchange(port: number, bytes: string): Promise<string> {
  const sock = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  sock.on('data', (c: Buffer) => chunks.push(c));
  sock.write(bytes);
  await Promise.race([once(sock, 'close'), sleep(5000).then(() => sock.destroy())]);
  return Buffer.concat(chunks).toString('latin1').replace(/\r\nDate: [^\r]*\r\n/g, '\r\nDate: -\r\n');
}

const GET = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;
const LAST = (path: string) => GET(path, 'Connection: close\r\n');

interface Case {
  name: string;
  handler: http.RequestListener;
  requests: string;
  options?: http.ServerOptions;
  /** Whether the responses are expected to take the fast path. */
  fast: boolean;
}

const cases: Case[] = [
  {
    name: 'a string body with headers (UTF-8), keep-alive then close',
    handler: (_req, res) => {
      res.setHeader('Content-Type', 'application/json; charset=utf-8');
      res.setHeader('X-Count', 42);
      res.end(JSON.stringify({ name: 'grüße ✓' }));
    },
    requests: GET('/a') + GET('/b') + LAST('/c'),
    fast: true,
  },
  {
    name: 'a Buffer body, a status and a status message',
    handler: (_req, res) => {
      res.statusCode = 404;
      res.statusMessage = 'Nowhere';
      res.end(Buffer.from('not here\n'));
    },
    requests: GET('/x') + LAST('/y'),
    fast: true,
  },
  {
    name: 'latin1 encoding and a callback',
    handler: (_req, res) => {
      res.end('caf\xe9', 'latin1', () => {});
    },
    requests: GET('/') + LAST('/'),
    fast: true,
  },
  {
    name: 'HTTP/1.0 (no keep-alive)',
    handler: (_req, res) => res.end('old'),
    requests: 'GET / HTTP/1.0\r\n\r\n',
    fast: true,
  },
  {
    name: 'keepAliveTimeout 0 and maxRequestsPerSocket 2',
    handler: (_req, res) => res.end('k'),
    requests: GET('/1') + GET('/2') + GET('/3'),
    options: { keepAliveTimeout: 0, maxRequestsPerSocket: 2 } as http.ServerOptions,
    fast: true,
  },
  {
    name: 'sendDate off, removed Connection header',
    handler: (_req, res) => {
      res.sendDate = false;
      res.removeHeader('Connection');
      res.end('no date');
    },
    requests: GET('/') + LAST('/'),
    fast: true,
  },
  {
    name: 'Connection: close set by the handler (node\'s head)',
    handler: (_req, res) => {
      res.setHeader('Connection', 'close');
      res.end('bye');
    },
    requests: GET('/'),
    fast: true,
  },
  {
    name: 'Content-Length set by the handler (node\'s head)',
    handler: (_req, res) => {
      res.setHeader('Content-Length', 2);
      res.end('ok');
    },
    requests: GET('/') + LAST('/'),
    fast: true,
  },
  {
    name: 'as Express: Content-Type, then Content-Length, then more headers',
    handler: (_req, res) => {
      const body = JSON.stringify({ id: '42', name: 'user 42' });
      res.setHeader('Content-Type', 'application/json; charset=utf-8');
      res.setHeader('Content-Length', Buffer.byteLength(body));
      res.setHeader('X-After', 'a');
      res.setHeader('Set-Cookie', ['s=1', 't=2']);
      res.setHeader('X-Last', 7);
      res.end(body, 'utf8');
    },
    requests: GET('/users/42') + GET('/users/42') + LAST('/users/42'),
    fast: true,
  },
  {
    name: 'a Content-Length that is not the body\'s length, HTTP/1.0 keep-alive',
    handler: (_req, res) => {
      res.setHeader('X-First', 'f');
      res.setHeader('Content-Length', 3);
      res.end('abc');
    },
    requests: 'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n',
    fast: true,
  },
  {
    name: 'Date and Keep-Alive set by the handler',
    handler: (_req, res) => {
      res.setHeader('X-A', '1');
      res.setHeader('Date', 'Thu, 01 Jan 1970 00:00:00 GMT');
      res.setHeader('Keep-Alive', 'timeout=9');
      res.end('d');
    },
    requests: GET('/') + LAST('/'),
    fast: true,
  },
  {
    name: 'Transfer-Encoding: chunked set by the handler (node\'s end)',
    handler: (_req, res) => {
      res.setHeader('Transfer-Encoding', 'chunked');
      res.end('chunky');
    },
    requests: GET('/') + LAST('/'),
    fast: false,
  },
  {
    name: 'Set-Cookie with two values, Content-Disposition (node\'s head)',
    handler: (_req, res) => {
      res.setHeader('Set-Cookie', ['a=1', 'b=2']);
      res.setHeader('Content-Disposition', 'attachment; filename="\xe9.txt"');
      res.end('cookies');
    },
    requests: GET('/') + LAST('/'),
    fast: true,
  },
  {
    name: '204 and 304 (no body: node\'s end)',
    handler: (req, res) => {
      res.statusCode = req.url === '/204' ? 204 : 304;
      res.end('ignored');
    },
    requests: GET('/204') + LAST('/304'),
    fast: false,
  },
  {
    name: 'HEAD (no body: node\'s end)',
    handler: (_req, res) => res.end('body of a HEAD'),
    requests: `HEAD / HTTP/1.1\r\nHost: x\r\n\r\n` + LAST('/'),
    fast: false, // the GET after it waits for the HEAD's response: node's end() too
  },
  {
    name: 'writeHead() with headers, then end(body) (node\'s end)',
    handler: (_req, res) => {
      res.writeHead(201, { 'X-A': 'b' });
      res.end('made');
    },
    requests: GET('/') + LAST('/'),
    fast: false,
  },
  {
    name: 'writeHead replaced on the response (its call, then the fast end)',
    handler: (_req, res) => {
      const writeHead = res.writeHead;
      res.writeHead = function (this: http.ServerResponse, ...a: any[]) {
        this.setHeader('X-Hooked', 'yes');
        return (writeHead as (...x: unknown[]) => http.ServerResponse).apply(this, a);
      } as typeof res.writeHead;
      res.end('hooked');
    },
    requests: GET('/') + LAST('/'),
    fast: true,
  },
  {
    name: 'write() then end() (node\'s end)',
    handler: (_req, res) => {
      res.write('a');
      res.end('b');
    },
    requests: GET('/') + LAST('/'),
    fast: false,
  },
  {
    name: 'a pipelined slow response ahead of a fast one keeps the order',
    handler: (req, res) => {
      if (req.url === '/slow') setTimeout(() => res.end('slow'), 30);
      else res.end('fast');
    },
    requests: GET('/slow') + GET('/fast') + LAST('/fast'),
    fast: true,
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const stock = await exchange(await nodeServer(t, c.handler, c.options ?? {}), c.requests);
    const before = fastEnds;
    const ours = await exchange(await iomuxServer(t, c.handler, c.options ?? {}), c.requests);
    t.ok(stock.startsWith('HTTP/1.'), 'node:http answered');
    t.equal(ours, stock, 'the same bytes as node:http');
    const n = fastEnds - before;
    if (c.fast) t.ok(n > 0, `fast path taken (${n})`);
    else t.equal(n, 0, 'node\'s own end()');
  });
}

t.test('events: prefinish, the end() callback and finish, close; state as node\'s', async (t) => {
  const run = async (start: (t: Test, h: http.RequestListener, o: http.ServerOptions) => Promise<number>) => {
    const seen: string[] = [];
    const handler: http.RequestListener = (_req, res) => {
      res.on('prefinish', () => seen.push('prefinish'));
      res.on('finish', () => seen.push(`finish writableFinished=${res.writableFinished}`));
      res.on('close', () => seen.push('close'));
      const r = res.end('x', () => seen.push('callback'));
      seen.push(`returned ${r === res} headersSent=${res.headersSent} writableEnded=${res.writableEnded}`);
      try {
        res.setHeader('X-Late', '1');
      } catch (err) {
        seen.push((err as NodeJS.ErrnoException).code!);
      }
      res.end('again', () => seen.push('second end'));
      res.write('more', (err) => seen.push(`write after end: ${err && (err as NodeJS.ErrnoException).code}`));
      res.on('error', (err) => seen.push(`error ${(err as NodeJS.ErrnoException).code}`));
    };
    const out = await exchange(await start(t, handler, {}), LAST('/'));
    return { out, seen };
  };
  const stock = await run(nodeServer);
  const before = fastEnds;
  const ours = await run(iomuxServer);
  t.equal(fastEnds - before, 1, 'fast path taken');
  t.ok(ours.out.endsWith('\r\n\r\nx'), 'one body');
  t.equal(ours.out, stock.out, 'the same bytes as node:http');
  t.same(ours.seen, stock.seen, 'the same events in the same order as node:http');
  t.ok(stock.seen.includes('prefinish') && stock.seen.includes('callback') && stock.seen.includes('close'), 'events seen');
});

t.test('a body past the socket\'s high-water mark: finish once it is taken', async (t) => {
  const body = Buffer.alloc(8 << 20, 0x61);
  let finished = false;
  const port = await iomuxServer(t, (_req, res) => {
    res.on('finish', () => { finished = true; });
    res.end(body);
  }, {});
  const before = fastEnds;
  const sock = net.connect(port, '127.0.0.1');
  sock.pause();
  sock.write(LAST('/'));
  await sleep(200);
  t.equal(fastEnds - before, 1, 'fast path taken');
  t.notOk(finished, 'no finish while the client reads nothing');
  let got = 0;
  sock.on('data', (c: Buffer) => { got += c.length; });
  sock.resume();
  await once(sock, 'close');
  t.ok(finished, 'finish after the bytes went out');
  t.ok(got > body.length, 'every byte arrived');
});

t.test('no fd left open', async (t) => {
  t.equal(await settleFds(fdsAtStart), fdsAtStart, `back to ${fdsAtStart} fds`);
});
