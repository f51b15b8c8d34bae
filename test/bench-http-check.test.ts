// The checking client of the bench's Express and Fastify rows
// (benchmarks/clients/http_check.c): it must count every response, report a
// wrong status or body as a mismatch, and fail (exit 1) on a missing
// response, a closed connection or bytes nobody asked for. Run against a
// node:http server that misbehaves once, on its 40th request.
import t from 'tap';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

const SOURCE = path.join(__dirname, '..', 'benchmarks', 'clients', 'http_check.c');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-http-check-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const exe = path.join(dir, 'http_check');
execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', exe, SOURCE], { stdio: 'inherit' });

type Mode = 'ok' | 'wrong-body' | 'status-500' | 'no-answer' | 'destroy' | 'extra-bytes';

/** A server answering GET /users/<n> with {"id":"<n>","name":"user <n>"}, except as `mode` says on request 40. */
async function serve(mode: Mode): Promise<{ port: number; served: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => {
    n++;
    const id = /^\/users\/(\d+)$/.exec(req.url ?? '')?.[1] ?? 'none';
    let body = JSON.stringify({ id, name: `user ${id}` });
    if (n === 40) {
      if (mode === 'no-answer') return;
      if (mode === 'destroy') return void req.socket.destroy();
      if (mode === 'wrong-body') body = JSON.stringify({ id: '1', name: 'user 1' });
      if (mode === 'status-500') res.statusCode = 500;
      if (mode === 'extra-bytes') {
        res.end(body, () => req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
        return;
      }
    }
    res.setHeader('Content-Type', 'application/json');
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    served: () => n,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

interface Run { code: number; stdout: string; stderr: string; json: Record<string, unknown> | null }

function check(port: number, seconds: string, wait = '1'): Promise<Run> {
  return new Promise((resolve) => {
    execFile(exe, ['127.0.0.1', String(port), '4', seconds, wait], { encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      let json: Record<string, unknown> | null = null;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : null;
      } catch {
        json = null;
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

t.test('every response is counted and checked', async (t) => {
  const s = await serve('ok');
  const r = await check(s.port, '0.5');
  await s.close();
  t.equal(r.code, 0, r.stderr);
  t.ok(r.json, 'one JSON line');
  const j = r.json as { requests: { total: number }; checked: number; mismatches: number; non2xx: number; firstMismatch: unknown };
  t.ok(j.requests.total >= 40, `${j.requests.total} responses`);
  t.equal(j.checked, j.requests.total);
  t.equal(j.requests.total, s.served(), 'as many responses as the server answered');
  t.equal(j.mismatches, 0);
  t.equal(j.non2xx, 0);
  t.equal(j.firstMismatch, null);
});

t.test('a wrong body is a mismatch, reported with the body its request asked for', async (t) => {
  const s = await serve('wrong-body');
  const r = await check(s.port, '0.5');
  await s.close();
  t.equal(r.code, 0, r.stderr);
  const j = r.json as { mismatches: number; firstMismatch: { status: number; body: string; want: string } };
  t.equal(j.mismatches, 1);
  t.equal(j.firstMismatch.status, 200);
  t.equal(j.firstMismatch.body, '{"id":"1","name":"user 1"}');
  t.match(j.firstMismatch.want, /^\{"id":"(\d+)","name":"user \1"\}$/);
});

t.test('a status other than 200 is a mismatch', async (t) => {
  const s = await serve('status-500');
  const r = await check(s.port, '0.5');
  await s.close();
  t.equal(r.code, 0, r.stderr);
  const j = r.json as { mismatches: number; non2xx: number; firstMismatch: { status: number } };
  t.equal(j.mismatches, 1);
  t.equal(j.non2xx, 1);
  t.equal(j.firstMismatch.status, 500);
});

t.test('a response that never comes fails the run', async (t) => {
  const s = await serve('no-answer');
  const r = await check(s.port, '0.3', '0.3');
  await s.close();
  t.equal(r.code, 1);
  t.equal(r.json, null, 'no result line');
  t.match(r.stderr, /1 responses missing/);
});

t.test('a connection the server closes fails the run', async (t) => {
  const s = await serve('destroy');
  const r = await check(s.port, '0.5');
  await s.close();
  t.equal(r.code, 1);
  t.match(r.stderr, /closed a connection with a request in flight|Connection reset/);
});

t.test('bytes after a response fail the run', async (t) => {
  const s = await serve('extra-bytes');
  const r = await check(s.port, '0.5');
  await s.close();
  t.equal(r.code, 1);
  t.match(r.stderr, /bytes (after a response|from the server with no request in flight)/);
});

t.test('bad arguments are a usage error', async (t) => {
  const r = await check(0, '1');
  t.equal(r.code, 2);
  t.match(r.stderr, /usage: http_check/);
});
