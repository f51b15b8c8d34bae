// serveNode() makes the requests and responses of an Express-style
// application (one 'request' listener with app.request and app.response)
// with the application's prototypes from the start, so that Express's own
// Object.setPrototypeOf finds them in place. A server created with its own
// classes, or with other listeners, keeps node's behaviour.
import t from 'tap';
import express from 'express';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { serveNode } from '../dist/http/node';

interface Reply { status: number; body: string }

/** Requests on one keep-alive connection, in turn. */
async function getAll(port: number, paths: string[]): Promise<Reply[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const out: Reply[] = [];
  try {
    for (const path of paths) {
      out.push(await new Promise<Reply>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d) => { body += d; });
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        }).on('error', reject);
      }));
    }
  } finally {
    agent.destroy();
  }
  return out;
}

async function listen(node: http.Server): Promise<{ port: number; close: () => Promise<void> }> {
  const srv = serveNode(node);
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as AddressInfo).port;
  return { port, close: () => new Promise<void>((resolve) => node.close(() => resolve())) };
}

/** An Express app that records the prototypes its requests and responses had when it got them. */
function recordingApp() {
  const app = express();
  const seen: { req: boolean; res: boolean }[] = [];
  const handle = app.handle;
  app.handle = function (this: typeof app, req: http.IncomingMessage, res: http.ServerResponse, next?: unknown) {
    seen.push({ req: Object.getPrototypeOf(req) === app.request, res: Object.getPrototypeOf(res) === app.response });
    return (handle as (...a: unknown[]) => unknown).call(this, req, res, next);
  } as typeof app.handle;
  app.get('/users/:id', (req, res) => {
    res.json({ id: req.params.id, proto: Object.getPrototypeOf(req) === app.request, instance: req instanceof http.IncomingMessage });
  });
  const sub = express();
  sub.get('/who', (req, res) => { res.send(req.app === sub ? 'sub' : 'other'); });
  app.use('/sub', sub);
  app.get('/after', (req, res) => { res.send(req.app === app && Object.getPrototypeOf(req) === app.request ? 'app' : 'other'); });
  return { app, seen };
}

t.test('an Express app gets requests and responses made with its own prototypes', async (t) => {
  const { app, seen } = recordingApp();
  const node = http.createServer(app);
  const { port, close } = await listen(node);
  const replies = await getAll(port, ['/users/7', '/users/8', '/sub/who', '/after', '/nope']);
  t.same(replies.slice(0, 2).map((r) => [r.status, JSON.parse(r.body)]), [
    [200, { id: '7', proto: true, instance: true }],
    [200, { id: '8', proto: true, instance: true }],
  ]);
  t.same(replies.slice(2, 4).map((r) => [r.status, r.body]), [[200, 'sub'], [200, 'app']], 'a mounted app and its parent');
  t.equal(replies[4].status, 404, "Express's own 404");
  t.same(seen, Array(5).fill({ req: true, res: true }), 'each request and response had the app\'s prototype before Express touched it');
  await close();
});

t.test('the same Express app on node:http answers the same bytes', async (t) => {
  const paths = ['/users/7', '/sub/who', '/after', '/nope'];
  const a = recordingApp();
  const plain = http.createServer(a.app);
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
  const onNode = await getAll((plain.address() as AddressInfo).port, paths);
  await new Promise<void>((resolve) => plain.close(() => resolve()));
  t.same(a.seen, Array(4).fill({ req: false, res: false }), 'node:http makes them with node\'s prototypes');
  const b = recordingApp();
  const { port, close } = await listen(http.createServer(b.app));
  t.same(await getAll(port, paths), onNode);
  await close();
});

t.test("a server created with its own request and response classes keeps them", async (t) => {
  class MyRequest extends http.IncomingMessage {}
  class MyResponse extends http.ServerResponse {}
  const { app, seen } = recordingApp();
  const node = http.createServer({ IncomingMessage: MyRequest, ServerResponse: MyResponse }, (req, res) => {
    t.ok(req instanceof MyRequest, 'the request is the server\'s class');
    t.ok(res instanceof MyResponse, 'the response is the server\'s class');
    app(req, res);
  });
  // The listener is not the app itself: nothing to adopt either way. Make the app the listener too.
  const { port, close } = await listen(node);
  t.equal((await getAll(port, ['/users/1']))[0].status, 200);
  node.removeAllListeners('request');
  node.on('request', app);
  const [r] = await getAll(port, ['/users/2']);
  t.same(JSON.parse(r.body), { id: '2', proto: true, instance: true });
  t.same(seen, [{ req: false, res: false }, { req: false, res: false }], 'made by the server\'s own classes, then moved by Express');
  await close();
});

t.test('with a second request listener, or none that is an app, node\'s classes come back', async (t) => {
  const { app, seen } = recordingApp();
  const node = http.createServer(app);
  const { port, close } = await listen(node);
  await getAll(port, ['/users/1']);
  let other = 0;
  const count = (): void => { other++; };
  node.on('request', count);
  await getAll(port, ['/users/2']);
  node.removeListener('request', count);
  await getAll(port, ['/users/3']);
  t.equal(other, 1, 'the second listener ran');
  t.same(seen.map((s) => s.req && s.res), [true, false, true], 'the app\'s prototypes only while it is the only listener');
  node.removeListener('request', app);
  node.on('request', (req, res) => {
    res.end(Object.getPrototypeOf(req) === http.IncomingMessage.prototype && Object.getPrototypeOf(res) === http.ServerResponse.prototype ? 'node' : 'other');
  });
  t.same(await getAll(port, ['/']), [{ status: 200, body: 'node' }], 'a plain listener gets node\'s own objects');
  await close();
});
