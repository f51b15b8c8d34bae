// Express and Fastify apps moved to iomux without changing their code:
// takeOverListen() routes the framework's own listen() through serveNode().
// Each runs under load (autocannon, IOMUX_FRAMEWORK_LOAD_SECONDS, default 2)
// with GETs on a route with a parameter and JSON POSTs, every response checked.
import t from 'tap';
import autocannon from 'autocannon';
import express from 'express';
import fastifyFactory from 'fastify';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { NodeSocket, serveNode, takeOverListen } from '../dist/http/node';

const SECONDS = Number(process.env.IOMUX_FRAMEWORK_LOAD_SECONDS ?? 2);

interface Checked { total: number; checked: number; wrong: number; firstWrong: string | null; errors: number; non2xx: number }

/** autocannon against port: GET /users/<id> and POST /echo in turn, each response compared with what it must be. */
async function load(port: number): Promise<Checked> {
  let checked = 0, wrong = 0;
  let firstWrong: string | null = null;
  const check = (want: string) => (status: number, body: string) => {
    checked++;
    if (status !== 200 || body !== want) {
      wrong++;
      firstWrong ??= `${status} ${body} (want ${want})`;
    }
  };
  const requests: Record<string, unknown>[] = [];
  for (let i = 0; i < 8; i++) {
    const id = String(100 + i * 13);
    requests.push({ method: 'GET', path: `/users/${id}`, onResponse: check(`{"id":"${id}","via":"iomux"}`) });
    const payload = JSON.stringify({ n: i, text: 'x'.repeat(i * 300) });
    requests.push({
      method: 'POST', path: '/echo', headers: { 'content-type': 'application/json' }, body: payload,
      onResponse: check(`{"got":${payload}}`),
    });
  }
  const result = await autocannon({ url: `http://127.0.0.1:${port}`, connections: 20, duration: SECONDS, requests });
  return { total: result.requests.total, checked, wrong, firstWrong, errors: result.errors, non2xx: result.non2xx };
}

const via = (req: http.IncomingMessage) => (req.socket instanceof NodeSocket ? 'iomux' : 'node');

t.test('takeOverListen(): Express app.listen() serves from iomux under load, every response right', async (t) => {
  const restore = takeOverListen();
  t.teardown(restore);
  const app = express();
  app.use(express.json());
  app.get('/users/:id', (req, res) => { res.json({ id: req.params.id, via: via(req) }); });
  app.post('/echo', (req, res) => { res.json({ got: req.body }); });
  const server = await new Promise<http.Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  restore();
  const r = await load((server.address() as AddressInfo).port);
  t.ok(r.total > 0, `${r.total} responses`);
  t.equal(r.checked, r.total, 'every response was checked');
  t.equal(r.wrong, 0, r.firstWrong ?? 'no wrong response');
  t.equal(r.errors, 0, 'no errors');
  t.equal(r.non2xx, 0, 'no non-2xx');
  await new Promise<void>((resolve) => server.close(() => resolve()));
  t.pass('server.close() completed');
});

t.test('serveNode(server, { takeOverListen }): Fastify listen() serves from iomux under load, every response right', async (t) => {
  const fastify = fastifyFactory({
    logger: false,
    serverFactory: (handler) => {
      const s = http.createServer(handler);
      serveNode(s, { takeOverListen: true });
      return s;
    },
  });
  fastify.get<{ Params: { id: string } }>('/users/:id', async (req) => ({ id: req.params.id, via: via(req.raw) }));
  fastify.post('/echo', async (req) => ({ got: req.body }));
  const address = await fastify.listen({ port: 0, host: '127.0.0.1' });
  t.match(address, /^http:\/\/127\.0\.0\.1:\d+$/);
  const r = await load((fastify.server.address() as AddressInfo).port);
  t.ok(r.total > 0, `${r.total} responses`);
  t.equal(r.checked, r.total, 'every response was checked');
  t.equal(r.wrong, 0, r.firstWrong ?? 'no wrong response');
  t.equal(r.errors, 0, 'no errors');
  t.equal(r.non2xx, 0, 'no non-2xx');
  await fastify.close();
  t.equal(fastify.server.listening, false, 'fastify.close() stopped the iomux listener');
});
