// Runs each program in examples/ briefly, as a user would, so that none rots:
// start it on port 0, talk to it, stop it with SIGINT, expect exit code 0.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';

const EXAMPLES = join(__dirname, '..', 'examples');

interface Running { child: ChildProcess; port: number; output: () => string }

/** Starts examples/name with args; resolves once it prints "listening on ...:PORT". */
function start(t: Test, name: string, args: string[] = ['0']): Promise<Running> {
  const child = spawn(process.execPath, [join(EXAMPLES, name), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start in 20 s: ${out}`)), 20000);
    const check = () => {
      const m = /listening on (?:http:\/\/)?127\.0\.0\.1:(\d+)/.exec(out);
      if (m) { clearTimeout(timer); child.stdout!.off('data', check); resolve({ child, port: Number(m[1]), output: () => out }); }
    };
    child.stdout!.on('data', check);
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${name} exited (${code}) before listening: ${out}`)); });
  });
}

async function stop(t: Test, r: Running) {
  r.child.removeAllListeners('exit');
  const exited = once(r.child, 'exit');
  r.child.kill('SIGINT');
  const [code, signal] = await exited;
  t.equal(code, 0, `exits 0 on SIGINT (signal ${signal}; output: ${r.output().slice(-300)})`);
}

function exchange(port: number, payload: Buffer, until: (got: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect(port, '127.0.0.1', () => s.write(payload));
    s.on('data', (d) => {
      chunks.push(d);
      if (until(Buffer.concat(chunks))) s.end();
    });
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

async function get(port: number, path: string) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text() };
}

t.test('echo.js echoes what a client sends', async (t) => {
  const r = await start(t, 'echo.js');
  const msg = Buffer.from('hello, echo\n'.repeat(1000));
  const got = await exchange(r.port, msg, (b) => b.length >= msg.length);
  t.ok(got.equals(msg), `${got.length} bytes echoed intact`);
  t.match(r.output(), /client 127\.0\.0\.1:\d+/, 'it logs the client address');
  await stop(t, r);
});

t.test('length-prefixed.js: frames answered in upper case, its client, and an oversized frame refused', async (t) => {
  const r = await start(t, 'length-prefixed.js');
  const frame = (s: string) => { const b = Buffer.from(s); const h = Buffer.alloc(4); h.writeUInt32BE(b.length); return Buffer.concat([h, b]); };
  // Two frames in one write, the second split by the TCP stream as it likes.
  const got = await exchange(r.port, Buffer.concat([frame('abc'), frame('x'.repeat(70000))]), (b) => b.length >= 4 + 3 + 4 + 70000);
  t.same(got.subarray(0, 7), frame('ABC'), 'first answer');
  t.ok(got.subarray(7).equals(frame('X'.repeat(70000))), 'second answer, 70000 bytes');

  const client = spawn(process.execPath, [join(EXAMPLES, 'length-prefixed.js'), 'client', String(r.port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  client.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const [code] = await once(client, 'exit');
  t.equal(code, 0, 'the example client exits 0');
  t.equal(out, 'answer: HELLO\nanswer: LENGTH-PREFIXED\nanswer: WORLD\n', 'the example client prints the three answers');

  const big = Buffer.alloc(4); big.writeUInt32BE(2 * 1024 * 1024);
  const refused = await exchange(r.port, big, () => false);
  t.equal(refused.length, 0, 'a 2 MiB frame header: the connection is closed with no answer');
  await stop(t, r);
});

t.test('http.js answers its routes', async (t) => {
  const r = await start(t, 'http.js');
  t.match(await get(r.port, '/hello'), { status: 200, type: /text\/plain/, body: 'hello from iomux\n' });
  const info = await get(r.port, '/info');
  t.equal(info.status, 200);
  t.match(JSON.parse(info.body), { node: process.version, backend: /^(epoll|io_uring|kqueue)$/ });
  t.match(await get(r.port, '/nope'), { status: 404, body: 'not found\n' });
  await stop(t, r);
});

t.test('proxy.js balances requests over its two upstreams', async (t) => {
  const r = await start(t, 'proxy.js');
  const answers = [];
  for (let i = 0; i < 4; i++) answers.push(await get(r.port, `/r${i}`));
  for (const a of answers) t.equal(a.status, 200);
  const by = answers.map((a) => /^(upstream-[ab]) answered GET \/r\d for 127\.0\.0\.1$/.exec(a.body.trim())?.[1]);
  t.same(by.slice().sort(), ['upstream-a', 'upstream-a', 'upstream-b', 'upstream-b'], `round-robin: ${by.join(', ')}`);
  await stop(t, r);
});
