// C10K: 10,000 concurrent keep-alive connections to one iomux HTTP server,
// every one answered, twice (the second round reuses each connection), with
// the server's memory per connection reported. The clients run in a child
// process, so the 20,000-descriptor limit is the server's alone.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { childEnv, fixturesDir, iomux } from './helpers';

const CONNECTIONS = 10_000;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

interface Msg { type: string; [k: string]: any }

function nextMessage(child: ChildProcess, type: string): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: Msg) => {
      if (m.type === 'error') return done(reject, new Error(`client: ${m.message}`));
      if (m.type === type) done(resolve, m);
    };
    const onExit = (code: number) => done(reject, new Error(`client exited with ${code}`));
    const done = <T>(f: (v: T) => void, v: T) => {
      child.off('message', onMsg);
      child.off('exit', onExit);
      f(v);
    };
    child.on('message', onMsg);
    child.on('exit', onExit);
  });
}

function memory(): { rss: number; heap: number } {
  gc();
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed + m.external };
}

t.test(`${CONNECTIONS.toLocaleString('en-US')} concurrent keep-alive connections, all answered`, async (t) => {
  let requests = 0;
  const server = iomux.http.createServer({ keepAliveTimeout: 120_000, headersTimeout: 120_000 }, (req, res) => {
    requests++;
    res.end(`ok ${req.url}`);
  });
  server.listen(0, '127.0.0.1', 4096);
  await once(server, 'listening');
  const port = (server.address() as iomux.AddressInfo).port;
  const before = memory();

  const child = fork(join(fixturesDir, 'http-many-clients.js'), [String(port), String(CONNECTIONS)], {
    env: childEnv(), stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  t.teardown(() => { child.kill(); });
  const connected = await nextMessage(child, 'connected');
  t.equal(connected.count, CONNECTIONS, `the client opened ${CONNECTIONS} connections in ${connected.ms} ms`);

  child.send({ type: 'round', round: 1 });
  const r1 = await nextMessage(child, 'round');
  t.equal(r1.answered, CONNECTIONS, `round 1: every connection answered (${r1.ms} ms)`);
  t.equal(r1.bad, 0, 'round 1: no wrong or missing response');
  t.equal(server.connectionCount, CONNECTIONS, 'the server holds every connection');

  const held = memory();
  const rssPer = (held.rss - before.rss) / CONNECTIONS;
  const heapPer = (held.heap - before.heap) / CONNECTIONS;
  t.comment(`server memory per open connection: ${(rssPer / 1024).toFixed(2)} KiB RSS, ` +
    `${(heapPer / 1024).toFixed(2)} KiB JS heap and external`);
  // A sanity bound (an HTTP connection object, its socket, parser and timer),
  // far above the measured figure, that a leak per connection would cross.
  t.ok(rssPer < 64 * 1024, `RSS per connection under 64 KiB (${(rssPer / 1024).toFixed(2)} KiB)`);

  child.send({ type: 'round', round: 2 });
  const r2 = await nextMessage(child, 'round');
  t.equal(r2.answered, CONNECTIONS, `round 2 on the same connections: every one answered (${r2.ms} ms)`);
  t.equal(r2.closed, 0, 'no connection was closed');
  t.equal(requests, 2 * CONNECTIONS, 'the handler saw each request once');

  child.send({ type: 'exit' });
  await once(child, 'exit');
  await server.close();
  t.equal(server.connectionCount, 0, 'close() resolved once every connection was gone');
});
