// listen({ deferAccept: true }): the kernel holds a connection back until its
// first bytes arrive (TCP_DEFER_ACCEPT), and the core reads them as it
// accepts, so 'connection' and the first 'data' come in one loop iteration.
import t from 'tap';
import { once } from 'node:events';
import * as http from 'node:http';
import * as net from 'node:net';
import { join } from 'node:path';
import { closeServer, iomux, sleep, tempDir } from './helpers';

const LINUX = process.platform === 'linux';

async function listenWith(server: iomux.Server, deferAccept: boolean): Promise<number> {
  server.listen({ port: 0, host: '127.0.0.1', deferAccept });
  await once(server, 'listening');
  return (server.address() as iomux.AddressInfo).port;
}

/** The loop iteration in which 'connection' and the first 'data' came. */
async function iterationsOfFirstBytes(deferAccept: boolean): Promise<{ accepted: number; data: number; text: string }> {
  const seen = { accepted: -1, data: -1, text: '' };
  const server = iomux.createServer((s) => {
    seen.accepted = iomux.loop.stats().iterations;
    s.once('data', (chunk: Buffer) => {
      seen.data = iomux.loop.stats().iterations;
      seen.text = chunk.toString();
      s.end('ok');
    });
  });
  const port = await listenWith(server, deferAccept);
  const client = net.connect(port, '127.0.0.1');
  client.write('GET / HTTP/1.1\r\n\r\n');
  client.resume();
  await once(client, 'end');
  client.destroy();
  await closeServer(server);
  return seen;
}

t.test('the first bytes come in the iteration that accepts', { skip: !LINUX && 'TCP_DEFER_ACCEPT is Linux' }, async (t) => {
  const deferred = await iterationsOfFirstBytes(true);
  t.equal(deferred.text, 'GET / HTTP/1.1\r\n\r\n');
  t.equal(deferred.data, deferred.accepted, 'deferAccept: same iteration');
  const plain = await iterationsOfFirstBytes(false);
  t.equal(plain.text, 'GET / HTTP/1.1\r\n\r\n');
  t.ok(plain.data > plain.accepted, 'without it: a later iteration (the registration\'s first event)');
});

t.test('a silent client is held back, then accepted all the same', { skip: !LINUX && 'TCP_DEFER_ACCEPT is Linux' }, async (t) => {
  let accepted: iomux.Socket | null = null;
  const server = iomux.createServer((s) => {
    accepted = s;
    s.on('data', (chunk: Buffer) => s.write(chunk));
  });
  const port = await listenWith(server, true);
  const client = net.connect(port, '127.0.0.1');
  await once(client, 'connect');
  await sleep(300);
  t.equal(accepted, null, 'connected, silent: not accepted yet');
  const end = Date.now() + 5000;
  while (accepted === null && Date.now() < end) await sleep(20);
  t.not(accepted, null, 'accepted once the deferral ran out');
  client.write('late');
  const [echo] = await once(client, 'data');
  t.equal(echo.toString(), 'late');
  client.destroy();
  await closeServer(server);
});

t.test('pauseOnConnect holds the bytes read at accept until resume()', async (t) => {
  let sock: iomux.Socket | null = null;
  const server = iomux.createServer({ pauseOnConnect: true }, (s) => {
    sock = s;
  });
  const port = await listenWith(server, true);
  const client = net.connect(port, '127.0.0.1');
  client.write('held');
  const end = Date.now() + 5000;
  while (sock === null && Date.now() < end) await sleep(5);
  const s = sock as iomux.Socket | null;
  if (s === null) throw new Error('no connection');
  await sleep(50);
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  t.same(chunks, [], 'nothing while paused');
  s.resume();
  while (Buffer.concat(chunks).length < 4 && Date.now() < end) await sleep(5);
  t.equal(Buffer.concat(chunks).toString(), 'held');
  client.destroy();
  s.destroy();
  await closeServer(server);
});

t.test('a client that closes without a byte: accepted, ended, closed', async (t) => {
  // With deferAccept the FIN comes with the connection: 'connection', 'end'
  // and 'close' can all happen in one batch.
  const events: string[] = [];
  const server = iomux.createServer((s) => {
    events.push('connection');
    s.resume();
    s.on('end', () => {
      events.push('end');
      s.end();
    });
    s.on('close', () => events.push('close'));
  });
  const port = await listenWith(server, true);
  const client = net.connect(port, '127.0.0.1', () => client.end());
  client.resume();
  await once(client, 'close');
  const end = Date.now() + 5000;
  while (events.length < 3 && Date.now() < end) await sleep(5);
  t.same(events, ['connection', 'end', 'close']);
  let count = -1;
  server.getConnections((_e, n) => (count = n));
  await sleep(1);
  t.equal(count, 0);
  await closeServer(server);
});

t.test('ignored on a unix socket, and by the HTTP server it is passed to', async (t) => {
  const path = join(tempDir(), 's');
  const server = iomux.createServer((s) => s.end('unix'));
  server.listen({ path, deferAccept: true });
  await once(server, 'listening');
  const c = net.connect(path);
  c.resume();
  const got: Buffer[] = [];
  c.on('data', (b: Buffer) => got.push(b));
  await once(c, 'end');
  t.equal(Buffer.concat(got).toString(), 'unix');
  await closeServer(server);

  const web = iomux.http.createServer((_req, res) => res.end('hello'));
  web.listen({ port: 0, host: '127.0.0.1', deferAccept: true });
  await once(web, 'listening');
  const port = (web.address() as iomux.AddressInfo).port;
  const body = await new Promise<string>((resolve, reject) => {
    http.get({ port, host: '127.0.0.1', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve(text));
    }).on('error', reject);
  });
  t.equal(body, 'hello');
  await web.close();
});

t.test('a deferAccept that is not a boolean is a TypeError naming it', async (t) => {
  const server = iomux.createServer();
  t.throws(() => server.listen({ port: 0, deferAccept: 'yes' as unknown as boolean }), {
    name: 'TypeError',
    code: 'ERR_INVALID_ARG_TYPE',
    message: /options\.deferAccept/,
  });
  t.equal(server.listening, false);
});
